//! Evaluation: success of a policy on a fixed set of tasks (held-out split or the OOD level),
//! greedy or sampled, and of the uniformly random valid policy on the same tasks.

use half::f16;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use super::rollout;
use super::sampler::{device_err, Sampler};
use super::warmup::random_valid_rollouts;
use super::TrainError;
use crate::device::Device;
use crate::env::{PromptConfig, Task};
use crate::model::DeviceGpt;

/// How actions are chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// The most likely valid token at every step.
    Greedy,
    /// Sampling at the training temperature.
    Sampled,
    /// The uniformly random valid policy (no model).
    RandomValid,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Greedy => "greedy",
            Mode::Sampled => "sampled",
            Mode::RandomValid => "random-valid",
        }
    }
}

/// One evaluation's result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EvalResult {
    pub mode: Mode,
    pub tasks: usize,
    /// Fraction solved.
    pub success: f64,
    /// Wilson 95% interval of the success rate.
    pub ci95: (f64, f64),
    /// Mean turns per episode.
    pub mean_turns: f64,
}

/// The Wilson score interval (95%) for `k` successes out of `n`.
pub fn wilson95(k: f64, n: f64) -> (f64, f64) {
    if n <= 0.0 {
        return (0.0, 1.0);
    }
    let z = 1.959_964f64;
    let p = k / n;
    let denom = 1.0 + z * z / n;
    let centre = (p + z * z / (2.0 * n)) / denom;
    let half = z * ((p * (1.0 - p) + z * z / (4.0 * n)) / n).sqrt() / denom;
    ((centre - half).max(0.0), (centre + half).min(1.0))
}

fn result(mode: Mode, ro: &rollout::Rollouts) -> EvalResult {
    let n = ro.trajs.len();
    let s = ro.success();
    EvalResult {
        mode,
        tasks: n,
        success: s,
        ci95: wilson95(s * n as f64, n as f64),
        mean_turns: ro.mean_turns(),
    }
}

/// Runs one episode per task with the policy (`Greedy` or `Sampled` at `temperature`) or the
/// random valid policy; `seed` seeds the sampling. `progress(done, total)` after each turn.
pub fn evaluate(
    model: &dyn Sampler,
    tasks: &[Task],
    prompt_cfg: PromptConfig,
    mode: Mode,
    temperature: f32,
    seed: u64,
    mut progress: impl FnMut(usize, usize),
) -> Result<EvalResult, TrainError> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let ro = match mode {
        Mode::RandomValid => random_valid_rollouts(tasks, prompt_cfg, &mut rng),
        Mode::Greedy | Mode::Sampled => {
            let t = if mode == Mode::Greedy {
                0.0
            } else {
                temperature
            };
            rollout::collect(model, tasks, 1, prompt_cfg, t, &mut rng, |live, total| {
                progress(total - live, total)
            })?
        }
    };
    progress(tasks.len(), tasks.len());
    Ok(result(mode, &ro))
}

/// One row of `aem eval`'s table.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EvalRow {
    pub level: String,
    /// `held-out` (the training level's test split) or `ood`.
    pub split: String,
    #[serde(flatten)]
    pub result: EvalResult,
}

/// Evaluates the checkpoint at `ckpt` (a run's, with its config `cfg`) on `tasks` held-out tasks
/// of the training level and of the OOD level: greedy, sampled, and the random valid policy.
/// The policy samples on `dev` (the device path) or, with None, on the CPU path; the checkpoint
/// format is the same for both. `progress(label, done, total)` reports each evaluation's
/// progress.
pub fn eval_checkpoint(
    cfg: &super::TrainConfig,
    ckpt: &std::path::Path,
    tasks: usize,
    seed: u64,
    dev: Option<&Device>,
    mut progress: impl FnMut(&str, usize, usize),
) -> Result<Vec<EvalRow>, TrainError> {
    cfg.validate()?;
    let ck = crate::model::load_checkpoint::<f16>(ckpt)?;
    let on_device = dev
        .map(|d| DeviceGpt::from_cpu(d, &ck.model))
        .transpose()
        .map_err(device_err)?;
    let model: &dyn Sampler = match &on_device {
        Some(m) => m,
        None => &ck.model,
    };
    let prompt_cfg = PromptConfig {
        history: cfg.env.history,
        mask: cfg.env.mask,
    };
    let mut rows = Vec::new();
    for (name, split) in [(&cfg.env.level, "held-out"), (&cfg.env.ood_level, "ood")] {
        let level = name.level()?;
        if level.vocab().len() != ck.model.config().vocab {
            return Err(TrainError::Config(format!(
                "level {name} has {} tokens but the checkpoint's model has vocab {}",
                level.vocab().len(),
                ck.model.config().vocab
            )));
        }
        let set = crate::env::test_tasks(&level, tasks)?;
        for mode in [Mode::Greedy, Mode::Sampled, Mode::RandomValid] {
            let label = format!("{name} {split} {}", mode.name());
            let r = evaluate(
                model,
                &set,
                prompt_cfg,
                mode,
                cfg.rollout.temperature,
                super::derive_seed(seed, mode.name(), 0),
                |d, t| progress(&label, d, t),
            )?;
            rows.push(EvalRow {
                level: name.to_string(),
                split: split.into(),
                result: r,
            });
        }
    }
    Ok(rows)
}

/// The rows as an aligned text table.
pub fn table(rows: &[EvalRow]) -> String {
    let mut s = format!(
        "{:<16} {:<9} {:<13} {:>6} {:>8}  {:<15} {:>6}\n",
        "level", "split", "policy", "tasks", "success", "95% CI", "turns"
    );
    for r in rows {
        let e = &r.result;
        let ci = format!("[{:.3}, {:.3}]", e.ci95.0, e.ci95.1);
        s.push_str(&format!(
            "{:<16} {:<9} {:<13} {:>6} {:>8.3}  {:<15} {:>6.2}\n",
            r.level,
            r.split,
            e.mode.name(),
            e.tasks,
            e.success,
            ci,
            e.mean_turns
        ));
    }
    s
}
