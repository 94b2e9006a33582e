//! Rollouts: B tasks × N episodes run in lockstep, one turn at a time, sampled from the policy
//! with a KV cache under the env's validity mask.
//!
//! Each turn, the live episodes are bucketed by prompt length (the sampler takes prompts of one
//! length; right-padding a prompt would put padding inside the sequence) and each bucket is
//! decoded as one batch. The validity mask of every sampled token is recorded: under
//! [`MaskMode::Admissible`](crate::env::MaskMode) it depends on hidden state, so the loss cannot
//! recompute it from the tokens. Log-probs and entropies are those of the distribution actually
//! sampled from (after the mask, at the sampling temperature).

use std::collections::BTreeMap;

use rand_chacha::ChaCha8Rng;

use super::sampler::Sampler;
use super::TrainError;
use crate::env::vocab::{END, PAD};
use crate::env::{Episode, PromptConfig, Status, Task};
use crate::model::SampleParams;

/// One turn: one response of the loss head.
#[derive(Debug, Clone, PartialEq)]
pub struct Turn {
    /// Index of the trajectory (episode) in [`Rollouts::trajs`].
    pub traj: usize,
    /// prompt: (P) u32, the tokens the policy read.
    pub prompt: Vec<u32>,
    /// response: (L) u32, the sampled tokens up to and including `end`.
    pub response: Vec<u32>,
    /// masks: (L) u64, the validity mask each response token was sampled under (bit v = token v).
    pub masks: Vec<u64>,
    /// logp: (L) f32, log-prob of each token under the sampled (masked) distribution.
    pub logp: Vec<f32>,
    /// entropy: (L) f32, entropy of that distribution.
    pub entropy: Vec<f32>,
    /// The canonical observation the turn acted on (GiGPO anchor key).
    pub obs: Vec<u8>,
    /// Immediate reward of the turn (1 on the winning turn, else 0).
    pub reward: f32,
    /// Whether the response parsed (always true under a mask).
    pub parsed: bool,
}

/// One episode.
#[derive(Debug, Clone, PartialEq)]
pub struct Trajectory {
    /// Its task's group (index into the iteration's tasks).
    pub group: usize,
    /// Indices of its turns in [`Rollouts::turns`], in time order.
    pub turns: Vec<usize>,
    /// Outcome reward: 1 if solved, else 0.
    pub reward: f32,
}

/// Everything one collection produced.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Rollouts {
    /// All turns, in collection order (turn by turn across episodes).
    pub turns: Vec<Turn>,
    /// All episodes, `group·N + n`.
    pub trajs: Vec<Trajectory>,
    /// G, the number of tasks.
    pub n_groups: usize,
    /// Decoder positions run while sampling (rows × positions), for throughput.
    pub decoded_positions: usize,
}

impl Rollouts {
    /// Fraction of episodes solved.
    pub fn success(&self) -> f64 {
        if self.trajs.is_empty() {
            return 0.0;
        }
        self.trajs.iter().map(|t| f64::from(t.reward)).sum::<f64>() / self.trajs.len() as f64
    }

    /// Mean turns per episode.
    pub fn mean_turns(&self) -> f64 {
        if self.trajs.is_empty() {
            return 0.0;
        }
        self.turns.len() as f64 / self.trajs.len() as f64
    }
}

/// Runs `n` episodes of each task in lockstep with the policy (either model path) at
/// `temperature` (0 = greedy), drawing from `rng` in a fixed order (bucket by bucket, row by row).
pub fn collect(
    model: &dyn Sampler,
    tasks: &[Task],
    n: usize,
    prompt_cfg: PromptConfig,
    temperature: f32,
    rng: &mut ChaCha8Rng,
    on_turn: impl FnMut(usize, usize),
) -> Result<Rollouts, TrainError> {
    collect_with_alternatives(model, tasks, n, prompt_cfg, temperature, 0, rng, on_turn)
        .map(|(ro, _)| ro)
}

/// [`collect`], and at every turn `alts` further responses sampled from the same state (same
/// prompt, same mask; they are not acted on): returns the rollouts and, per turn, the
/// surprisals `Σ −logp` of its alternatives, ((R) × alts) f64. `alts = 0` is [`collect`],
/// draw for draw.
#[allow(clippy::too_many_arguments)]
pub fn collect_with_alternatives(
    model: &dyn Sampler,
    tasks: &[Task],
    n: usize,
    prompt_cfg: PromptConfig,
    temperature: f32,
    alts: usize,
    rng: &mut ChaCha8Rng,
    mut on_turn: impl FnMut(usize, usize),
) -> Result<(Rollouts, Vec<Vec<f64>>), TrainError> {
    let mut alt_surprisal: Vec<Vec<f64>> = Vec::new();
    let mut episodes: Vec<Episode> = Vec::with_capacity(tasks.len() * n);
    let mut out = Rollouts {
        n_groups: tasks.len(),
        ..Rollouts::default()
    };
    for (g, task) in tasks.iter().enumerate() {
        for _ in 0..n {
            episodes.push(Episode::new(task, prompt_cfg));
            out.trajs.push(Trajectory {
                group: g,
                turns: Vec::new(),
                reward: 0.0,
            });
        }
    }
    let Some(first) = episodes.first() else {
        return Ok((out, alt_surprisal));
    };
    let max_new = first.grammar().max_response_len();
    let context = model.gpt_config().context;
    let params = SampleParams {
        max_new,
        temperature,
    };
    loop {
        let live: Vec<usize> = (0..episodes.len())
            .filter(|&i| !episodes[i].done())
            .collect();
        if live.is_empty() {
            break;
        }
        on_turn(live.len(), episodes.len());
        // Bucket by prompt length; BTreeMap keeps a fixed order (determinism).
        // Each live episode is 1 + `alts` rows of its bucket: the alternatives, then its own.
        let mut buckets: BTreeMap<usize, Vec<(usize, Vec<u32>)>> = BTreeMap::new();
        for &i in &live {
            let p = episodes[i].prompt();
            let rows = buckets.entry(p.len()).or_default();
            for _ in 0..alts {
                rows.push((i, p.clone()));
            }
            rows.push((i, p));
        }
        for (p, rows) in buckets {
            if p + max_new > context {
                return Err(TrainError::Config(format!(
                    "a prompt of {p} tokens plus a response of up to {max_new} exceeds model.context = {context}; raise model.context or lower env.history"
                )));
            }
            let b = rows.len();
            let prompts: Vec<u32> = rows.iter().flat_map(|(_, pr)| pr.iter().copied()).collect();
            let mut masks = vec![0u64; b * max_new];
            {
                let eps = &episodes;
                let rows_ref = &rows;
                let masks_ref = &mut masks;
                let mut mask_fn = |row: usize, so_far: &[u32], valid: &mut [bool]| {
                    let prefix = so_far.get(p..).unwrap_or(&[]);
                    let m = if prefix.contains(&END) {
                        crate::env::TokenMask::of(&[PAD])
                    } else {
                        eps[rows_ref[row].0].valid_next(prefix)
                    };
                    for (v, ok) in valid.iter_mut().enumerate() {
                        *ok = u32::try_from(v).is_ok_and(|v| m.contains(v));
                    }
                    if let Some(slot) = masks_ref.get_mut(row * max_new + prefix.len()) {
                        *slot = m.0;
                    }
                };
                let s = model.sample_masked(&prompts, b, p, &params, rng, Some(&mut mask_fn))?;
                out.decoded_positions += b * (p + max_new - 1);
                let mut alt = Vec::with_capacity(alts);
                for (row, (ep_idx, prompt)) in rows.iter().enumerate() {
                    let toks = &s.tokens[row * s.len + p..(row + 1) * s.len];
                    let len = toks
                        .iter()
                        .position(|&t| t == END)
                        .map_or(toks.len(), |e| e + 1);
                    if alt.len() < alts {
                        let lp = &s.logprobs[row * max_new..row * max_new + len];
                        alt.push(lp.iter().map(|&l| -f64::from(l)).sum());
                        continue;
                    }
                    if alts > 0 {
                        alt_surprisal.push(std::mem::take(&mut alt));
                    }
                    let ep = &mut episodes[*ep_idx];
                    let obs = ep.observation_bytes();
                    let response = toks[..len].to_vec();
                    let before = ep.status();
                    let res = ep.step(&response);
                    let reward = if before == Status::Running && ep.status() == Status::Won {
                        1.0
                    } else {
                        0.0
                    };
                    let turn_idx = out.turns.len();
                    out.turns.push(Turn {
                        traj: *ep_idx,
                        prompt: prompt.clone(),
                        masks: masks[row * max_new..row * max_new + len].to_vec(),
                        logp: s.logprobs[row * max_new..row * max_new + len].to_vec(),
                        entropy: s.entropies[row * max_new..row * max_new + len].to_vec(),
                        response,
                        obs,
                        reward,
                        parsed: res.parsed,
                    });
                    out.trajs[*ep_idx].turns.push(turn_idx);
                }
            }
        }
    }
    for (t, ep) in out.trajs.iter_mut().zip(&episodes) {
        t.reward = ep.reward();
    }
    Ok((out, alt_surprisal))
}
