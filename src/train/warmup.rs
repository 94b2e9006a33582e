//! Optional imitation warm-up: a few supervised steps towards the uniformly random *valid*
//! policy (the grammar, or the admissible actions, with no task knowledge), by cross-entropy of
//! the masked distribution on responses that policy sampled.

use rand_chacha::ChaCha8Rng;

use super::policy::Learner;
use super::rollout::{Rollouts, Trajectory, Turn};
use super::update::{masked_rows, UpdateStats};
use super::TrainError;
use crate::env::{Episode, PromptConfig, Task};

/// Episodes of the uniformly random valid policy on `tasks` (one each), recording every turn's
/// mask like [`super::rollout::collect`] (log-probs are those of the uniform policy).
pub fn random_valid_rollouts(
    tasks: &[Task],
    prompt_cfg: PromptConfig,
    rng: &mut ChaCha8Rng,
) -> Rollouts {
    let mut out = Rollouts {
        n_groups: tasks.len(),
        ..Rollouts::default()
    };
    for (g, task) in tasks.iter().enumerate() {
        let mut ep = Episode::new(task, prompt_cfg);
        let mut traj = Trajectory {
            group: g,
            turns: Vec::new(),
            reward: 0.0,
        };
        let ti = out.trajs.len();
        while !ep.done() {
            let prompt = ep.prompt();
            let obs = ep.observation_bytes();
            let response = ep.sample_uniform(rng);
            let mut masks = Vec::with_capacity(response.len());
            let mut logp = Vec::with_capacity(response.len());
            let mut entropy = Vec::with_capacity(response.len());
            for k in 0..response.len() {
                let m = ep.valid_next(&response[..k]);
                let n = m.count().max(1) as f32;
                masks.push(m.0);
                logp.push(-n.ln());
                entropy.push(n.ln());
            }
            let won_before = ep.reward();
            let res = ep.step(&response);
            if response.is_empty() {
                continue; // nothing to imitate (never happens: a mask is never empty at start)
            }
            traj.turns.push(out.turns.len());
            out.turns.push(Turn {
                traj: ti,
                prompt,
                response,
                masks,
                logp,
                entropy,
                obs,
                reward: res.reward - won_before,
                parsed: res.parsed,
            });
        }
        traj.reward = ep.reward();
        out.trajs.push(traj);
    }
    out
}

/// One imitation step: mean cross-entropy of the masked distribution against the tokens of
/// `ro`, one optimizer step at `lr`. Returns the loss in `UpdateStats::loss`. On either model
/// path the logits come back to the host for the cross-entropy and its gradient goes back.
pub fn imitation_step(
    learner: &mut dyn Learner,
    ro: &Rollouts,
    lr: f32,
) -> Result<UpdateStats, TrainError> {
    let vocab = learner.gpt_config().vocab;
    let b = ro.turns.len();
    if b == 0 {
        return Ok(UpdateStats::default());
    }
    let t = ro
        .turns
        .iter()
        .map(|x| x.prompt.len() + x.response.len() - 1)
        .max()
        .unwrap_or(1)
        .max(1);
    let mut tokens = vec![crate::env::vocab::PAD; b * t];
    let (mut rows, mut masks, mut targets) = (Vec::new(), Vec::new(), Vec::new());
    for (bi, turn) in ro.turns.iter().enumerate() {
        let (pl, rl) = (turn.prompt.len(), turn.response.len());
        tokens[bi * t..bi * t + pl].copy_from_slice(&turn.prompt);
        tokens[bi * t + pl..bi * t + pl + rl - 1].copy_from_slice(&turn.response[..rl - 1]);
        for k in 0..rl {
            rows.push(bi * t + pl - 1 + k);
            masks.push(turn.masks[k]);
            targets.push(turn.response[k]);
        }
    }
    let logits = learner.forward_logits(&tokens, b, t)?;
    let mut head = Vec::new();
    masked_rows(&logits, vocab, &rows, &masks, &mut head);
    let n = rows.len() as f64;
    let mut dlogits = vec![0.0f32; b * t * vocab];
    let mut loss = 0.0f64;
    for (k, (&r, &y)) in rows.iter().zip(&targets).enumerate() {
        let z: Vec<f64> = head[k * vocab..(k + 1) * vocab]
            .iter()
            .map(|x| f64::from(x.to_f32()))
            .collect();
        let m = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let s: f64 = z.iter().map(|&x| (x - m).exp()).sum();
        let lse = m + s.ln();
        let yi = y as usize;
        loss += lse - z[yi];
        for (v, d) in dlogits[r * vocab..(r + 1) * vocab].iter_mut().enumerate() {
            let p = (z[v] - lse).exp();
            let onehot = if v == yi { 1.0 } else { 0.0 };
            *d = ((p - onehot) / n) as f32;
        }
    }
    learner.set_lr(lr)?;
    let norm = learner.backward_step(&dlogits)?;
    let loss = loss / n;
    if !loss.is_finite() || !norm.is_finite() {
        return Err(TrainError::NonFinite(format!(
            "imitation loss {loss} grad norm {norm}"
        )));
    }
    Ok(UpdateStats {
        loss,
        grad_norm: f64::from(norm),
        opt_steps: 1,
        positions: b * t,
        ..UpdateStats::default()
    })
}
