//! The training loop, the run directory, checkpoints and `--resume`.
//!
//! A run directory holds `config.toml` (the resolved config, with the backend that ran),
//! `metrics.jsonl`,
//! `checkpoint.safetensors` (the latest, written atomically: model, AdamW state, sampling RNG
//! and iteration count), `success.png`, `entropy.png`, `aem.png` and, once finished,
//! `summary.json`.
//!
//! Iterations are numbered from 1: the first `warmup.steps` imitate the uniformly random valid
//! policy, the next `run.steps` are RL. Everything an iteration draws comes from the RNG in the
//! checkpoint or from seeds derived from (run seed, iteration), so a resumed run continues
//! bit-identically (`tests/train_resume.rs`).

use std::path::{Path, PathBuf};
use std::time::Instant;

use half::f16;
use indicatif::{ProgressBar, ProgressStyle};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use super::config::{AemOnly, AemProxy, Backend, TrainConfig};
use super::eval::{self, Mode};
use super::metrics::{self, ResponseRow, StepRecord};
use super::policy::{open_backend, Opened, Policy};
use super::rollout::Rollouts;
use super::update::{self, alpha_of, base_advantages, AlphaStats};
use super::{rollout, warmup, TrainError};
use crate::env::{self, Level, PromptConfig, Task};
use crate::model::{self, AdamWConfig, GptConfig};

/// The checkpoint's file name inside a run directory.
pub const CHECKPOINT: &str = "checkpoint.safetensors";
/// The resolved config's file name inside a run directory.
pub const CONFIG: &str = "config.toml";
/// The metrics' file name inside a run directory.
pub const METRICS: &str = "metrics.jsonl";
/// Per-response rows (`run.responses_every`), appended before each iteration's metrics record.
pub const RESPONSES: &str = "responses.tsv";

pub use super::derive_seed;

/// The model config of a run (the vocabulary is the env's).
pub fn gpt_config(cfg: &TrainConfig, level: &Level) -> GptConfig {
    GptConfig {
        vocab: level.vocab().len(),
        context: cfg.model.context,
        d_model: cfg.model.d_model,
        layers: cfg.model.layers,
        heads: cfg.model.heads,
    }
}

fn adamw_config(cfg: &TrainConfig) -> AdamWConfig {
    AdamWConfig {
        lr: cfg.optim.lr,
        beta1: cfg.optim.beta1,
        beta2: cfg.optim.beta2,
        eps: cfg.optim.eps,
        weight_decay: cfg.optim.weight_decay,
        grad_clip: cfg.optim.grad_clip,
    }
}

/// The backend a run asks for: `opts.backend` if given, else the resumed run's recorded one
/// (`--resume`), else `cfg`'s.
pub fn requested_backend(cfg: &TrainConfig, opts: &RunOptions) -> Result<Backend, TrainError> {
    if let Some(b) = opts.backend {
        return Ok(b);
    }
    match &opts.resume {
        Some(dir) => {
            let cpath = dir.join(CONFIG);
            if !cpath.exists() {
                return Err(nothing_to_resume(dir));
            }
            Ok(TrainConfig::from_toml_file(&cpath)?.run.backend)
        }
        None => {
            cfg.validate()?;
            Ok(cfg.run.backend)
        }
    }
}

fn nothing_to_resume(dir: &Path) -> TrainError {
    TrainError::RunDir {
        path: dir.to_path_buf(),
        why: format!("nothing to resume: needs {CONFIG} and {CHECKPOINT}"),
    }
}

/// The trainer's state.
pub struct Trainer<'d> {
    /// The run's config; `run.backend` is the resolved backend (never `auto`).
    pub cfg: TrainConfig,
    pub level: Level,
    pub prompt: PromptConfig,
    /// The model and its optimizer on the chosen backend.
    pub policy: Policy<'d>,
    /// Sampling RNG (saved in the checkpoint).
    pub rng: ChaCha8Rng,
    /// Iterations done.
    pub step: u64,
    /// The held-out tasks evaluated during training.
    pub heldout: Vec<Task>,
    /// The last iteration's per-response rows when `run.responses_every` asked for them.
    pub responses: Vec<ResponseRow>,
}

impl<'d> Trainer<'d> {
    /// A fresh trainer on the opened backend (validates the config; records the resolved
    /// backend in `cfg.run.backend`).
    pub fn new(mut cfg: TrainConfig, opened: &'d Opened) -> Result<Self, TrainError> {
        cfg.run.backend = opened.backend;
        cfg.validate()?;
        let level = cfg.env.level.level()?;
        let policy = Policy::fresh(
            gpt_config(&cfg, &level),
            cfg.run.seed,
            adamw_config(&cfg),
            opened.device.as_ref(),
        )?;
        let rng = ChaCha8Rng::seed_from_u64(derive_seed(cfg.run.seed, "sample", 0));
        Self::assemble(cfg, level, policy, rng, 0)
    }

    /// The trainer around a policy at iteration `step` (the held-out tasks are the config's).
    fn assemble(
        cfg: TrainConfig,
        level: Level,
        policy: Policy<'d>,
        rng: ChaCha8Rng,
        step: u64,
    ) -> Result<Self, TrainError> {
        let heldout = env::test_tasks(&level, cfg.run.eval_tasks)?;
        Ok(Self {
            prompt: PromptConfig {
                history: cfg.env.history,
                mask: cfg.env.mask,
            },
            cfg,
            level,
            policy,
            rng,
            step,
            heldout,
            responses: Vec::new(),
        })
    }

    /// A trainer restored from a checkpoint of a run with this config (on any backend: the
    /// checkpoint is in the CPU format).
    pub fn from_checkpoint(
        mut cfg: TrainConfig,
        path: &Path,
        opened: &'d Opened,
    ) -> Result<Self, TrainError> {
        cfg.run.backend = opened.backend;
        cfg.validate()?;
        let level = cfg.env.level.level()?;
        let want = gpt_config(&cfg, &level);
        let mut ck = model::load_checkpoint::<f16>(path)?;
        if *ck.model.config() != want {
            return Err(TrainError::RunDir {
                path: path.to_path_buf(),
                why: format!(
                    "checkpoint model {:?} does not match the config's {want:?}",
                    ck.model.config(),
                ),
            });
        }
        ck.optim.cfg = adamw_config(&cfg);
        let (rng, step) = (ck.rng.clone(), ck.step);
        let policy = Policy::from_checkpoint(ck, opened.device.as_ref())?;
        Self::assemble(cfg, level, policy, rng, step)
    }

    /// Writes the checkpoint atomically (CPU format, whatever the backend).
    pub fn save(&self, path: &Path) -> Result<(), TrainError> {
        self.policy.save_checkpoint(path, &self.rng, self.step)
    }

    /// Imitation plus RL iterations.
    pub fn total_steps(&self) -> u64 {
        self.cfg.warmup.steps + self.cfg.run.steps
    }

    /// The training tasks of iteration `k`.
    pub fn tasks_for(&self, k: u64, n: usize) -> Result<Vec<Task>, TrainError> {
        (0..n as u64)
            .map(|j| {
                env::train_task(
                    &self.level,
                    derive_seed(self.cfg.run.seed, "task", k * 1_000_003 + j),
                )
                .map_err(TrainError::from)
            })
            .collect()
    }

    /// Whether held-out success is evaluated after iteration `k`.
    pub fn evaluates_at(&self, k: u64) -> bool {
        let w = self.cfg.warmup.steps;
        let every = self.cfg.run.eval_every;
        k == self.total_steps() || (k > w && every > 0 && (k - w).is_multiple_of(every))
    }

    /// Held-out success (sampled, greedy) of the current policy; seeded by `k`.
    pub fn eval_heldout(
        &self,
        k: u64,
        mut progress: impl FnMut(usize, usize),
    ) -> Result<(f64, f64), TrainError> {
        let s = eval::evaluate(
            self.policy.sampler(),
            &self.heldout,
            self.prompt,
            Mode::Sampled,
            self.cfg.rollout.temperature,
            derive_seed(self.cfg.run.seed, "eval", k),
            &mut progress,
        )?;
        let g = eval::evaluate(
            self.policy.sampler(),
            &self.heldout,
            self.prompt,
            Mode::Greedy,
            1.0,
            0,
            &mut progress,
        )?;
        Ok((s.success, g.success))
    }

    /// Reports divergence at iteration `k` if any parameter became non-finite.
    fn check_finite(&self, k: u64) -> Result<(), TrainError> {
        match self.policy.first_non_finite()? {
            Some(what) => Err(TrainError::Diverged { step: k, what }),
            None => Ok(()),
        }
    }

    /// Runs iteration `step + 1` and returns its record (timing and held-out fields unset).
    pub fn iterate(&mut self) -> Result<StepRecord, TrainError> {
        let k = self.step + 1;
        let w = self.cfg.warmup.steps;
        let mut rec = StepRecord {
            step: k,
            ..StepRecord::default()
        };
        if k <= w {
            let tasks = self.tasks_for(k, self.cfg.warmup.episodes)?;
            let t0 = Instant::now();
            let ro = warmup::random_valid_rollouts(&tasks, self.prompt, &mut self.rng);
            let sample_s = t0.elapsed().as_secs_f64();
            let t1 = Instant::now();
            let us = warmup::imitation_step(self.policy.learner(), &ro, self.cfg.warmup.lr)
                .map_err(|e| diverged(k, e))?;
            self.check_finite(k)?;
            let update_s = t1.elapsed().as_secs_f64();
            rec.phase = "imitation".into();
            rec.loss = Some(us.loss);
            rec.grad_norm = Some(us.grad_norm);
            rec.lr = Some(f64::from(self.cfg.warmup.lr));
            rec.sample_s = Some(sample_s);
            rec.update_s = Some(update_s);
            rec.tokens_per_s = Some(us.positions as f64 / update_s.max(1e-9));
            self.step = k;
            return Ok(rec);
        }
        let tasks = self.tasks_for(k, self.cfg.rollout.tasks)?;
        let t0 = Instant::now();
        let ro = rollout::collect(
            self.policy.sampler(),
            &tasks,
            self.cfg.rollout.rollouts,
            self.prompt,
            self.cfg.rollout.temperature,
            &mut self.rng,
            |_, _| {},
        )?;
        let sample_s = t0.elapsed().as_secs_f64();
        let t1 = Instant::now();
        let base = base_advantages(&ro, &self.cfg)?;
        let al = alpha_of(&ro, &self.cfg, k)?;
        let adv: Vec<f64> = base.iter().zip(&al.alpha).map(|(b, a)| b * a).collect();
        let turns = update::trained_turns(self.cfg.algo.aem_only, &base, &al.alpha);
        let hcfg = update::head_config(&self.cfg);
        let lr = self.cfg.lr_at(k - w - 1);
        let us = update::ppo_update(
            self.policy.learner(),
            &ro,
            &turns,
            &adv,
            &hcfg,
            self.cfg.optim.epochs,
            self.cfg.optim.minibatches,
            lr,
            &mut self.rng,
        )
        .map_err(|e| diverged(k, e))?;
        self.check_finite(k)?;
        let update_s = t1.elapsed().as_secs_f64();

        let r = ro.turns.len().max(1) as f64;
        let (mut h_all, mut n_all, mut h_free, mut n_free) = (0.0f64, 0usize, 0.0f64, 0usize);
        for t in &ro.turns {
            for (&h, &m) in t.entropy.iter().zip(&t.masks) {
                h_all += f64::from(h);
                n_all += 1;
                if m.count_ones() >= 2 {
                    h_free += f64::from(h);
                    n_free += 1;
                }
            }
        }
        let fmin = al.alpha.iter().copied().fold(f64::INFINITY, f64::min);
        let fmax = al.alpha.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let count = |f: &dyn Fn(f64, f64) -> bool| {
            base.iter()
                .zip(&al.alpha)
                .filter(|(b, a)| f(**b, **a))
                .count() as f64
                / r
        };
        rec.phase = "rl".into();
        rec.train_success = Some(ro.success());
        rec.entropy = Some(h_all / n_all.max(1) as f64);
        rec.entropy_free = (n_free > 0).then(|| h_free / n_free as f64);
        rec.surprisal = Some(al.surprisal.iter().sum::<f64>() / r);
        rec.mean_turns = Some(ro.mean_turns());
        rec.alpha_mean = Some(al.alpha.iter().sum::<f64>() / r);
        rec.alpha_min = fmin.is_finite().then_some(fmin);
        rec.alpha_max = fmax.is_finite().then_some(fmax);
        rec.guard_frac = Some(al.guarded_groups as f64 / al.n_groups.max(1) as f64);
        if self.cfg.algo.aem_only != AemOnly::All {
            rec.trained_frac = Some(turns.len() as f64 / r);
        }
        self.responses.clear();
        let every = self.cfg.run.responses_every;
        if every > 0 && k.is_multiple_of(every) {
            self.responses = response_rows(k, &ro, &base, &al);
        }
        rec.frac_pos = Some(count(&|b, a| b * (a - 1.0) > 0.0));
        rec.frac_neg = Some(count(&|b, a| b * (a - 1.0) < 0.0));
        rec.adv_nonzero = Some(count(&|b, _| b != 0.0));
        rec.loss = Some(us.loss);
        rec.clip_frac = Some(us.clip_frac);
        rec.approx_kl = Some(us.approx_kl);
        rec.grad_norm = Some(us.grad_norm);
        rec.lr = Some(f64::from(lr));
        rec.sample_s = Some(sample_s);
        rec.update_s = Some(update_s);
        rec.tokens_per_s = Some(us.positions as f64 / update_s.max(1e-9));
        self.step = k;
        Ok(rec)
    }
}

/// The rows of `responses.tsv` for iteration `k`.
fn response_rows(k: u64, ro: &Rollouts, base: &[f64], al: &AlphaStats) -> Vec<ResponseRow> {
    let free_mean = update::proxy_values(ro, AemProxy::FreeMean, &al.mean_entropy);
    let mut turn_index = vec![0usize; ro.turns.len()];
    for tr in &ro.trajs {
        for (n, &i) in tr.turns.iter().enumerate() {
            turn_index[i] = n;
        }
    }
    ro.turns
        .iter()
        .enumerate()
        .map(|(i, t)| ResponseRow {
            step: k,
            task: ro.trajs[t.traj].group,
            episode: t.traj,
            turn: turn_index[i],
            len: t.response.len(),
            free: t.masks.iter().filter(|m| m.count_ones() >= 2).count(),
            entropy: al.mean_entropy[i],
            entropy_free: free_mean[i],
            surprisal: al.surprisal[i],
            adv_base: base[i],
            alpha: al.alpha[i],
        })
        .collect()
}

/// A non-finite loss or gradient norm of an update, as divergence at iteration `k`.
fn diverged(k: u64, e: TrainError) -> TrainError {
    match e {
        TrainError::NonFinite(what) => TrainError::Diverged { step: k, what },
        other => other,
    }
}

/// How `train` is driven (not part of the run's identity, so not in its config).
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Directory of a new run (default: `runs/<level>-<advantage>[-aem]-s<seed>`, made unique).
    pub out: Option<PathBuf>,
    /// Continue the run in this directory from its checkpoint, with its own config.
    pub resume: Option<PathBuf>,
    /// Stop after this iteration (checkpoint written), e.g. to split a run or test resume.
    pub until: Option<u64>,
    /// Show a progress bar (on a terminal).
    pub progress: bool,
    /// The backend, overriding the config's (for a new run) or the run's recorded one (with
    /// `resume`: the checkpoint format is the same on every backend; the run's `config.toml`
    /// then records the new one).
    pub backend: Option<Backend>,
}

/// What a run reports when it stops.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunSummary {
    pub dir: PathBuf,
    /// The backend that ran (resolved: never `auto`).
    pub backend: Backend,
    pub steps_done: u64,
    pub total_steps: u64,
    pub random_valid_heldout: Option<f64>,
    pub initial_heldout_sampled: Option<f64>,
    pub initial_heldout_greedy: Option<f64>,
    pub final_heldout_sampled: Option<f64>,
    pub final_heldout_greedy: Option<f64>,
    pub wall_s: f64,
}

fn default_dir(cfg: &TrainConfig) -> PathBuf {
    let base = format!(
        "runs/{}-{}{}-s{}",
        cfg.env.level,
        cfg.algo.advantage,
        if cfg.algo.aem { "-aem" } else { "" },
        cfg.run.seed
    );
    let mut dir = PathBuf::from(&base);
    let mut i = 2;
    while dir.exists() {
        dir = PathBuf::from(format!("{base}-{i}"));
        i += 1;
    }
    dir
}

fn io<'a>(path: &'a Path, what: &'static str) -> impl FnOnce(std::io::Error) -> TrainError + 'a {
    move |source| TrainError::Io {
        path: path.to_path_buf(),
        what,
        source,
    }
}

fn progress_bar(show: bool, total: u64, pos: u64) -> ProgressBar {
    let pb = if show {
        ProgressBar::new(total)
    } else {
        ProgressBar::hidden()
    };
    if let Ok(style) = ProgressStyle::with_template(
        "{spinner} [{elapsed_precise}] {bar:24} {pos}/{len} (eta {eta}) {msg}",
    ) {
        pb.set_style(style);
    }
    pb.set_position(pos);
    pb
}

/// Trains a new run (`cfg`) or resumes one (`opts.resume`, whose own config is used) on the
/// backend [`requested_backend`] names, opened with [`open_backend`].
pub fn train(cfg: TrainConfig, opts: &RunOptions) -> Result<RunSummary, TrainError> {
    let opened = open_backend(requested_backend(&cfg, opts)?)?;
    train_with(cfg, opts, &opened)
}

/// [`train`] on a backend already opened (so a caller can report what `auto` resolved to
/// before the run starts). `opts.backend` is not consulted: `opened` is the backend.
pub fn train_with(
    cfg: TrainConfig,
    opts: &RunOptions,
    opened: &Opened,
) -> Result<RunSummary, TrainError> {
    let started = Instant::now();
    let (dir, mut trainer, mut records, _lock) = if let Some(dir) = &opts.resume {
        let cpath = dir.join(CONFIG);
        let ckpt = dir.join(CHECKPOINT);
        if !cpath.is_file() {
            return Err(nothing_to_resume(dir));
        }
        let lock = RunLock::acquire(dir)?;
        let cfg = TrainConfig::from_toml_file(&cpath)?;
        let recorded = cfg.run.backend;
        // Read once: the trainer and the records kept must agree on whether there is one.
        let has_ckpt = ckpt.exists();
        let trainer = if has_ckpt {
            Trainer::from_checkpoint(cfg, &ckpt, opened)?
        } else {
            // A start that stopped before its first checkpoint: start again from the config.
            Trainer::new(cfg, opened)?
        };
        if trainer.cfg.run.backend != recorded {
            // Continued on another backend: the config records the one that runs now.
            metrics::write_atomic(&cpath, trainer.cfg.to_toml()?.as_bytes())?;
        }
        let kept = has_ckpt.then_some(trainer.step);
        let recs = metrics::resume_records(&dir.join(METRICS), kept)?;
        metrics::resume_responses(&dir.join(RESPONSES), kept)?;
        (dir.clone(), trainer, recs, lock)
    } else {
        let trainer = Trainer::new(cfg, opened)?;
        let dir = match &opts.out {
            Some(d) => d.clone(),
            None => default_dir(&trainer.cfg),
        };
        std::fs::create_dir_all(&dir).map_err(io(&dir, "create run directory"))?;
        let lock = RunLock::acquire(&dir)?;
        if dir.join(CHECKPOINT).exists() {
            return Err(TrainError::RunDir {
                path: dir.clone(),
                why: "already holds a run; continue it with --resume or choose another --out"
                    .into(),
            });
        }
        // No checkpoint: empty, or left by a start that failed before its first checkpoint
        // (its config and metrics are replaced: nothing in them was trained yet).
        metrics::write_atomic(&dir.join(METRICS), b"")?;
        if dir.join(RESPONSES).exists() {
            let p = dir.join(RESPONSES);
            std::fs::remove_file(&p).map_err(io(&p, "remove responses"))?;
        }
        metrics::write_atomic(&dir.join(CONFIG), trainer.cfg.to_toml()?.as_bytes())?;
        (dir, trainer, Vec::new(), lock)
    };
    let mpath = dir.join(METRICS);
    let wall0 = records.last().map_or(0.0, |r| r.wall_s);
    let wall = |started: &Instant| wall0 + started.elapsed().as_secs_f64();
    let total = trainer.total_steps();
    let stop = opts.until.unwrap_or(total).min(total);
    let pb = progress_bar(opts.progress, total, trainer.step);

    if records.is_empty() {
        // Step 0: the starting policy and the random valid policy on the held-out tasks.
        pb.set_message("evaluating the starting policy");
        let t0 = Instant::now();
        let rv = eval::evaluate(
            trainer.policy.sampler(),
            &trainer.heldout,
            trainer.prompt,
            Mode::RandomValid,
            1.0,
            derive_seed(trainer.cfg.run.seed, "random-valid", 0),
            |_, _| {},
        )?;
        let (s, g) = trainer.eval_heldout(0, |_, _| {})?;
        let rec = StepRecord {
            step: 0,
            phase: "init".into(),
            heldout_success: Some(s),
            heldout_greedy: Some(g),
            random_valid_heldout: Some(rv.success),
            eval_s: Some(t0.elapsed().as_secs_f64()),
            wall_s: wall(&started),
            ..StepRecord::default()
        };
        metrics::append_jsonl(&mpath, &rec)?;
        records.push(rec);
    }

    while trainer.step < stop {
        let mut rec = trainer.iterate()?;
        let k = rec.step;
        if trainer.evaluates_at(k) {
            pb.set_message(format!("iteration {k}: evaluating held-out"));
            let t0 = Instant::now();
            let (s, g) = trainer.eval_heldout(k, |_, _| {})?;
            rec.heldout_success = Some(s);
            rec.heldout_greedy = Some(g);
            rec.eval_s = Some(t0.elapsed().as_secs_f64());
        }
        rec.wall_s = wall(&started);
        // The record first, then the checkpoint: a kill between the two leaves a record past the
        // checkpoint, which a resume cuts and recomputes (bit-identically), never a lost one.
        if !trainer.responses.is_empty() {
            metrics::append_responses(&dir.join(RESPONSES), &trainer.responses)?;
        }
        metrics::append_jsonl(&mpath, &rec)?;
        fault_point("after-metrics", k);
        if k % trainer.cfg.run.checkpoint_every == 0 || k == stop {
            trainer.save(&dir.join(CHECKPOINT))?;
        }
        fault_point("after-checkpoint", k);
        records.push(rec);
        if trainer.evaluates_at(k) || k == stop {
            if let Err(e) = metrics::plot_run(&dir, &records) {
                pb.println(format!("aem train: warning: {e}"));
            }
        }
        pb.set_position(k);
        pb.set_message(status_line(&records));
    }
    if !dir.join(CHECKPOINT).exists() && (trainer.step == total || trainer.step == stop) {
        // `--until 0` (or a run of no iterations): the starting point is resumable.
        trainer.save(&dir.join(CHECKPOINT))?;
    }
    if let Err(e) = metrics::plot_run(&dir, &records) {
        pb.println(format!("aem train: warning: {e}"));
    }
    pb.finish_and_clear();
    let init = records.iter().find(|r| r.phase == "init");
    let last_eval = records
        .iter()
        .rev()
        .find(|r| r.step > 0 && r.heldout_success.is_some());
    let summary = RunSummary {
        dir: dir.clone(),
        backend: trainer.cfg.run.backend,
        steps_done: trainer.step,
        total_steps: total,
        random_valid_heldout: init.and_then(|r| r.random_valid_heldout),
        initial_heldout_sampled: init.and_then(|r| r.heldout_success),
        initial_heldout_greedy: init.and_then(|r| r.heldout_greedy),
        final_heldout_sampled: last_eval.and_then(|r| r.heldout_success),
        final_heldout_greedy: last_eval.and_then(|r| r.heldout_greedy),
        wall_s: records.last().map_or(0.0, |r| r.wall_s),
    };
    if trainer.step == total {
        let text = serde_json::to_string_pretty(&summary)
            .map_err(|e| TrainError::Config(format!("serialise summary: {e}")))?;
        metrics::write_atomic(&dir.join("summary.json"), text.as_bytes())?;
    }
    Ok(summary)
}

/// An advisory lock on a run directory (`.lock`), held while a process trains it: a second
/// `aem train` of the same directory gets an error instead of interleaving records. The OS
/// releases it when the process ends, however it ends.
pub struct RunLock {
    _file: std::fs::File,
}

/// The lock file's name inside a run directory.
pub const LOCK: &str = ".lock";

impl RunLock {
    /// Takes the lock of `dir` or fails at once (never waits).
    pub fn acquire(dir: &Path) -> Result<Self, TrainError> {
        let path = dir.join(LOCK);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io(&path, "open lock"))?;
        match file.try_lock() {
            Ok(()) => Ok(Self { _file: file }),
            Err(std::fs::TryLockError::WouldBlock) => Err(TrainError::RunDir {
                path: dir.to_path_buf(),
                why: "in use by another aem train (it holds .lock); wait for it to finish or choose another directory".into(),
            }),
            Err(std::fs::TryLockError::Error(e)) => Err(io(&path, "lock")(e)),
        }
    }
}

/// A test hook: with `AEM_FAULT=<point>:<iteration>` (e.g. `after-metrics:3`) the process aborts
/// at that point of that iteration, as a kill -9 would stop it (no destructor, no flush), so the
/// tests can place a crash exactly between a record and its checkpoint.
fn fault_point(point: &str, k: u64) {
    if let Ok(spec) = std::env::var("AEM_FAULT") {
        if spec == format!("{point}:{k}") {
            std::process::abort();
        }
    }
}

/// The progress bar's message: the latest train success, held-out success and entropy.
fn status_line(recs: &[StepRecord]) -> String {
    let n = recs.len().min(10);
    let recent = &recs[recs.len() - n..];
    let train: Vec<f64> = recent.iter().filter_map(|r| r.train_success).collect();
    let mut s = String::new();
    if !train.is_empty() {
        s.push_str(&format!(
            "train {:.2}",
            train.iter().sum::<f64>() / train.len() as f64
        ));
    }
    if let Some(r) = recs.iter().rev().find(|r| r.heldout_success.is_some()) {
        s.push_str(&format!(
            " | held-out {:.2} (greedy {:.2})",
            r.heldout_success.unwrap_or(0.0),
            r.heldout_greedy.unwrap_or(0.0)
        ));
    }
    if let Some(h) = recs.last().and_then(|r| r.entropy) {
        s.push_str(&format!(" | H {h:.3}"));
    }
    if let Some(l) = recs.last().and_then(|r| r.loss) {
        if recs.last().is_some_and(|r| r.phase == "imitation") {
            s.push_str(&format!(" | imitation loss {l:.3}"));
        }
    }
    s
}
