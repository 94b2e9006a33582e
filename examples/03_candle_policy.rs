//! 03 — a small candle policy trained with the AEM head: a bag-of-tokens linear policy on
//! FogLake (`foglake-proto`), GRPO advantages, the loss from `aem::candle::loss_head`, and plain
//! SGD through candle's autograd. Under a minute on a CPU.
//!
//! `cargo run --release --features candle --example 03_candle_policy`
//!
//! Each iteration samples 4 rollouts of each of 8 tasks token by token under the environment's
//! validity mask, scores each rollout (1 if solved), gives every turn of a rollout its task-
//! normalised reward as advantage, runs the head on the (masked) logits of every sampled token
//! and takes one SGD step. The check: each step lowers the head's loss on its own batch (what a
//! correct gradient does for a small enough step), so a wrong sign or a lost gradient fails it.

use aem::candle::{loss_head, Batch, Exec};
use aem::env::{self, Episode, PromptConfig, TokenId};
use aem::head::HeadConfig;
use candle_core::{DType, Device, Tensor, Var};
use rand::{Rng, SeedableRng};

const TASKS: usize = 8;
const ROLLOUTS: usize = 4;
const ITERS: usize = 40;
const DIM: usize = 16;
const LR: f64 = 20.0;

/// One sampled token: its context (prompt + response prefix), the token and the valid set.
struct Row {
    context: Vec<TokenId>,
    target: TokenId,
    valid: u64,
}

/// The policy: logits = mean(E[context]) · W, invalid tokens pushed to −30.
struct Policy {
    e: Var,
    w: Var,
    vocab: usize,
}

impl Policy {
    fn logits(&self, rows: &[Row]) -> candle_core::Result<Tensor> {
        let n = rows.len();
        let mut bag = vec![0f32; n * self.vocab];
        let mut bias = vec![0f32; n * self.vocab];
        for (i, r) in rows.iter().enumerate() {
            for &t in &r.context {
                bag[i * self.vocab + t as usize] += 1.0 / r.context.len() as f32;
            }
            for v in 0..self.vocab {
                if r.valid & (1u64 << v) == 0 {
                    bias[i * self.vocab + v] = -30.0;
                }
            }
        }
        let bag = Tensor::from_vec(bag, (n, self.vocab), &Device::Cpu)?;
        let bias = Tensor::from_vec(bias, (n, self.vocab), &Device::Cpu)?;
        bag.matmul(self.e.as_tensor())?
            .matmul(self.w.as_tensor())?
            .add(&bias)
    }
}

fn sample(logits: &[f32], rng: &mut impl Rng) -> usize {
    let m = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let p: Vec<f32> = logits.iter().map(|&x| (x - m).exp()).collect();
    let mut u = rng.random::<f32>() * p.iter().sum::<f32>();
    for (i, &q) in p.iter().enumerate() {
        u -= q;
        if u <= 0.0 {
            return i;
        }
    }
    p.len() - 1
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let level = env::level("foglake-proto")?;
    let vocab = level.vocab().len();
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let init = |rows, cols, rng: &mut rand::rngs::StdRng| -> candle_core::Result<Var> {
        let v: Vec<f32> = (0..rows * cols)
            .map(|_| rng.random_range(-0.1..0.1))
            .collect();
        Var::from_tensor(&Tensor::from_vec(v, (rows, cols), &Device::Cpu)?)
    };
    let policy = Policy {
        e: init(vocab, DIM, &mut rng)?,
        w: init(DIM, vocab, &mut rng)?,
        vocab,
    };
    let cfg = HeadConfig::default();
    let (mut descents, mut checked) = (0, 0);
    for it in 0..ITERS {
        let mut rows = Vec::new();
        let mut batch = Batch {
            n_groups: TASKS,
            ..Batch::default()
        };
        let mut wins = 0;
        for task_i in 0..TASKS {
            let task = env::train_task(&level, (it * TASKS + task_i) as u64)?;
            let mut rewards = Vec::new();
            let mut turns_of = Vec::new(); // response indices of each rollout
            for _ in 0..ROLLOUTS {
                let mut ep = Episode::new(&task, PromptConfig::default());
                let mut mine = Vec::new();
                while !ep.done() {
                    let prompt = ep.prompt();
                    let mut prefix: Vec<TokenId> = Vec::new();
                    let start = rows.len();
                    loop {
                        let valid = ep.valid_next(&prefix).0;
                        if valid == 0 || prefix.len() >= level.grammar().max_response_len() {
                            break;
                        }
                        let mut context = prompt.clone();
                        context.extend(&prefix);
                        let row = Row {
                            context,
                            target: 0,
                            valid,
                        };
                        let l = policy.logits(std::slice::from_ref(&row))?;
                        let t = sample(&l.flatten_all()?.to_vec1::<f32>()?, &mut rng) as TokenId;
                        rows.push(Row { target: t, ..row });
                        prefix.push(t);
                        if t == env::vocab::END {
                            break;
                        }
                    }
                    ep.step(&prefix);
                    if rows.len() > start {
                        mine.push(batch.resp_start.len());
                        batch.resp_start.push(start as u32);
                        batch.resp_len.push((rows.len() - start) as u32);
                        batch.resp_group.push(task_i as u32);
                    }
                }
                wins += usize::from(ep.reward() > 0.0);
                rewards.push(ep.reward());
                turns_of.push(mine);
            }
            // GRPO: the rollout's reward, normalised within the task (std + 1e-6).
            let mean = rewards.iter().sum::<f32>() / ROLLOUTS as f32;
            let var = rewards.iter().map(|r| (r - mean).powi(2)).sum::<f32>() / ROLLOUTS as f32;
            for (r, turns) in rewards.iter().zip(&turns_of) {
                for _ in turns {
                    batch.adv_base.push((r - mean) / (var.sqrt() + 1e-6));
                }
            }
        }
        batch.targets = rows.iter().map(|r| r.target).collect();
        // The head on the sampled tokens' logits (on-policy: the ratio is 1 at the start).
        let logits = policy.logits(&rows)?.to_dtype(DType::F16)?;
        let out = loss_head(&logits, &batch, &cfg, Exec::Reference)?;
        let before = out.loss.to_vec0::<f32>()?;
        batch.old_logp = Some(out.logp.to_vec1::<f32>()?);
        let grads = out.loss.backward()?;
        for v in [&policy.e, &policy.w] {
            let g = grads
                .get(v.as_tensor())
                .ok_or("no gradient for a parameter")?;
            v.set(&(v.as_tensor() - (g * LR)?)?)?;
        }
        // The same batch after the step, against the sampling-time log-probs.
        let logits = policy.logits(&rows)?.to_dtype(DType::F16)?;
        let after = loss_head(&logits, &batch, &cfg, Exec::Reference)?
            .loss
            .to_vec0::<f32>()?;
        // A batch whose tasks all ended alike has A = 0 everywhere: no gradient, nothing to lower.
        let informative = batch.adv_base.iter().any(|&a| a != 0.0);
        checked += usize::from(informative);
        descents += usize::from(informative && after < before);
        let alpha = out.alpha.to_vec1::<f32>()?;
        let spread = alpha.iter().fold(0f32, |m, a| m.max((a - 1.0).abs()));
        println!(
            "it {it:2}: {} tokens, {} responses, success {:.2}, loss {before:+.5} -> {after:+.5}, max|α−1| {spread:.3}",
            rows.len(),
            batch.resp_start.len(),
            wins as f32 / (TASKS * ROLLOUTS) as f32
        );
    }
    println!("{descents}/{checked} steps with a non-zero advantage lowered their batch's loss");
    if checked == 0 || descents < checked {
        eprintln!("check FAILED: a gradient step did not lower its batch's loss");
        std::process::exit(1);
    }
    println!("  check: every SGD step through candle's autograd lowered the head's loss — ok");
    Ok(())
}
