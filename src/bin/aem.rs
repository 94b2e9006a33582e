//! The `aem` command line.

use aem::device::Backend;
use aem::head::file::{self, GradDtype};
use aem::head::{Aggregation, HeadConfig};
use aem::train::config::{
    Advantage, AemMap, AemOnly, AemProxy, AemScope, LevelName, MaskMode, Schedule,
};
use aem::train::policy::open_backend;
use aem::train::run::requested_backend;
use aem::train::{train_with, RunOptions, TrainConfig, TrainError};
use clap::{Args, Parser, Subcommand};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

/// A count flag: a whole number >= 0. Negative and fractional values are domain errors naming the
/// value (not clap's "unexpected argument" or "invalid digit").
fn count(s: &str) -> Result<usize, String> {
    let t = s.trim();
    if let Ok(n) = t.parse::<usize>() {
        return Ok(n);
    }
    match t.parse::<f64>() {
        Ok(x) if x < 0.0 => Err(format!("{t} must be >= 0")),
        Ok(x) if x.fract() == 0.0 && x.is_finite() => usize::try_from(x as u128)
            .map_err(|_| format!("{t} is too large (at most {})", usize::MAX)),
        Ok(_) => Err(format!("{t} must be a whole number")),
        Err(_) => Err(format!("{t} is not a number")),
    }
}

/// A u64 flag (seeds, iteration counts), with the same domain messages as [`count`].
fn count64(s: &str) -> Result<u64, String> {
    count(s).and_then(|n| u64::try_from(n).map_err(|_| format!("{s} is too large")))
}

#[derive(Parser)]
#[command(
    name = "aem",
    version,
    about = "AEM loss head: CUDA kernels, CPU emulator, CPU reference"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the loss head over a safetensors file of inputs and write its outputs.
    Head(HeadArgs),
    /// Write a synthetic loss-head input file (to try `aem head`).
    DemoInput(DemoArgs),
    /// The small f16 GPT: initialise a checkpoint, run a forward pass.
    #[command(subcommand)]
    Model(ModelCmd),
    /// Train a policy with RL (default: KeyRooms, GiGPO + AEM; GPU if found, else CPU); see README
    /// "Training an agent".
    Train(Box<TrainArgs>),
    /// Evaluate a checkpoint on held-out tasks and the OOD level (greedy, sampled, random valid).
    Eval(EvalArgs),
    /// Does AEM's α track the relative surprisal S − H_resp(s) for this policy? (README "Is AEM
    /// worth turning on?").
    Probe(ProbeArgs),
    /// What this machine offers the kernels: driver, GPU and its limits, embedded module images
    /// and which one loads, NVRTC (README "Running on a GPU").
    Doctor(DoctorArgs),
}

#[derive(Args)]
struct DoctorArgs {
    /// Skip compiling the kernel sources with NVRTC (it takes a few seconds).
    #[arg(long)]
    no_compile: bool,
    /// Also write the report as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
}

fn doctor_cmd(a: DoctorArgs) -> Result<(), aem::Error> {
    let rep = aem::device::doctor::report(!a.no_compile);
    print!("{rep}");
    if let Some(p) = &a.json {
        let text = serde_json::to_string_pretty(&rep).map_err(|e| aem::Error::Device {
            backend: "doctor",
            message: format!("serialise the report: {e}"),
        })?;
        aem::io::write_atomic(p, text.as_bytes())?;
    }
    Ok(())
}

#[derive(Args)]
struct ProbeArgs {
    /// A checkpoint file, or a run directory (its checkpoint.safetensors).
    #[arg(long)]
    checkpoint: PathBuf,
    /// The run's config (default: config.toml next to the checkpoint).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Held-out tasks (each one group of --rollouts episodes).
    #[arg(long, value_parser = count, default_value_t = 32)]
    tasks: usize,
    /// Episodes per task.
    #[arg(long, value_parser = count, default_value_t = 8)]
    rollouts: usize,
    /// Alternative responses sampled per state to estimate H_resp(s) (K).
    #[arg(long, value_parser = count, default_value_t = 16)]
    alts: usize,
    /// Seed of the sampling.
    #[arg(long, value_parser = count64, default_value_t = 0)]
    seed: u64,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Where the policy samples.
    #[arg(long, value_enum, default_value_t = Backend::Auto)]
    backend: Backend,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

/// The checkpoint file and config path of `--checkpoint` / `--config`.
fn checkpoint_paths(
    checkpoint: &std::path::Path,
    config: Option<&PathBuf>,
) -> Result<(PathBuf, PathBuf), TrainError> {
    let ckpt = if checkpoint.is_dir() {
        checkpoint.join(aem::train::run::CHECKPOINT)
    } else {
        checkpoint.to_path_buf()
    };
    if !ckpt.is_file() {
        return Err(TrainError::RunDir {
            path: ckpt,
            why: "no such checkpoint file".into(),
        });
    }
    let cpath = match config {
        Some(p) => p.clone(),
        None => ckpt
            .parent()
            .unwrap_or(std::path::Path::new("."))
            .join(aem::train::run::CONFIG),
    };
    Ok((ckpt, cpath))
}

fn probe_cmd(a: ProbeArgs) -> Result<(), TrainError> {
    let (ckpt, cpath) = checkpoint_paths(&a.checkpoint, a.config.as_ref())?;
    if let Some(p) = &a.json {
        aem::io::check_output(p, &[&ckpt, &cpath])?;
    }
    let cfg = TrainConfig::from_toml_file(&cpath)?;
    let pb = progress(!a.quiet && std::io::stderr().is_terminal(), 1);
    let opened = open_backend(a.backend)?;
    let pc = aem::train::probe::ProbeConfig {
        tasks: a.tasks,
        rollouts: a.rollouts,
        alts: a.alts,
        seed: a.seed,
    };
    let rep =
        aem::train::probe::probe_checkpoint(&cfg, &ckpt, pc, opened.device.as_ref(), |d, t| {
            pb.set_length(t as u64);
            pb.set_position(d as u64);
        })?;
    pb.finish_and_clear();
    print!("{}", aem::train::probe::table(&rep));
    if let Some(p) = &a.json {
        let text = serde_json::to_string_pretty(&rep)
            .map_err(|e| TrainError::Config(format!("serialise probe report: {e}")))?;
        aem::train::metrics::write_atomic(p, text.as_bytes())?;
    }
    Ok(())
}

/// A progress bar on stderr (hidden when `show` is false).
fn progress(show: bool, len: u64) -> indicatif::ProgressBar {
    let pb = if show {
        indicatif::ProgressBar::new(len)
    } else {
        indicatif::ProgressBar::hidden()
    };
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("{spinner} {wide_bar} {pos}/{len} {msg}")
    {
        pb.set_style(style);
    }
    pb
}

/// Assigns a flag's value to its config field (a plain field, or an optional one: `Some(v)`).
trait Put<V> {
    fn put(&mut self, v: V);
}
impl<T> Put<T> for T {
    fn put(&mut self, v: T) {
        *self = v;
    }
}
impl<T> Put<T> for Option<T> {
    fn put(&mut self, v: T) {
        *self = Some(v);
    }
}

/// The config flags of `aem train`, written once: each line gives the flag's help, its field,
/// type and parser, and the config key it sets. The macro makes the clap fields, the list of
/// flags given (refused with `--resume`) and their application to the config.
macro_rules! train_flags {
    ($( $(#[doc = $doc:literal])* $field:ident: $ty:ty [$parser:expr] => $($key:ident).+; )*) => {
        #[derive(Args, Default)]
        #[command(allow_negative_numbers = true)]
        struct TrainArgs {
            /// TOML config file (any subset of the keys of a run's config.toml).
            #[arg(long)]
            config: Option<PathBuf>,
            $(
                $(#[doc = $doc])*
                #[arg(long, value_parser = $parser)]
                $field: Option<$ty>,
            )*
            /// Where the run computes (default auto). Allowed with --resume (continues the run
            /// on another backend).
            #[arg(long, value_enum)]
            backend: Option<Backend>,
            /// Any config key: --set section.key=value (repeatable), e.g. --set optim.beta2=0.999.
            #[arg(long = "set", value_name = "KEY=VALUE")]
            sets: Vec<String>,
            /// Run directory (default: runs/<level>-<advantage>[-aem]-s<seed>, made unique).
            #[arg(long)]
            out: Option<PathBuf>,
            /// Continue the run in this directory from its checkpoint, with its own config.
            #[arg(long)]
            resume: Option<PathBuf>,
            /// Stop after this iteration (checkpoint written; continue later with --resume).
            #[arg(long, value_parser = count64)]
            until: Option<u64>,
            /// No progress bar.
            #[arg(long)]
            quiet: bool,
        }

        impl TrainArgs {
            /// The config flags given, by name (refused with --resume).
            fn config_flags(&self) -> Vec<String> {
                let mut v = Vec::new();
                if self.config.is_some() {
                    v.push("--config".to_string());
                }
                $(
                    if self.$field.is_some() {
                        v.push(format!("--{}", stringify!($field).replace('_', "-")));
                    }
                )*
                if !self.sets.is_empty() {
                    v.push("--set".to_string());
                }
                if self.out.is_some() {
                    v.push("--out".to_string());
                }
                v
            }

            /// The run's config: defaults, then the file, then the flags, then each --set.
            fn resolve(&self) -> Result<TrainConfig, TrainError> {
                let mut c = match &self.config {
                    Some(p) => TrainConfig::from_toml_file(p)?,
                    None => TrainConfig::default(),
                };
                $(
                    if let Some(v) = self.$field.clone() {
                        c.$($key).+.put(v);
                    }
                )*
                if let Some(b) = self.backend {
                    c.run.backend = b;
                }
                for s in &self.sets {
                    c.set(s)?;
                }
                c.validate()?;
                Ok(c)
            }
        }
    };
}

train_flags! {
    /// Training level (held-out tasks come from its test split).
    level: LevelName [clap::value_parser!(LevelName)] => env.level;
    /// Out-of-distribution level for evaluation (same env as --level).
    ood_level: LevelName [clap::value_parser!(LevelName)] => env.ood_level;
    /// Base advantage estimator.
    advantage: Advantage [clap::value_parser!(Advantage)] => algo.advantage;
    /// Rescale advantages with AEM (true | false).
    aem: bool [clap::value_parser!(bool)] => algo.aem;
    /// AEM λ.
    lambda: f32 [clap::value_parser!(f32)] => algo.lambda;
    /// AEM range guard δ.
    delta: f32 [clap::value_parser!(f32)] => algo.delta;
    /// AEM's ranked statistic (mean is the paper's).
    aem_proxy: AemProxy [clap::value_parser!(AemProxy)] => algo.aem_proxy;
    /// AEM's ranking group (task is the paper's).
    aem_scope: AemScope [clap::value_parser!(AemScope)] => algo.aem_scope;
    /// AEM's map to α (paper, or a control).
    aem_map: AemMap [clap::value_parser!(AemMap)] => algo.aem_map;
    /// Which responses are trained (all, the default, or one side of AEM's push).
    aem_only: AemOnly [clap::value_parser!(AemOnly)] => algo.aem_only;
    /// Every this many iterations, write each response's H̄, S, A and α to responses.tsv (0 = off).
    responses_every: u64 [count64] => run.responses_every;
    /// RL iterations.
    steps: u64 [count64] => run.steps;
    /// Tasks per iteration (B).
    tasks: usize [count] => rollout.tasks;
    /// Rollouts per task (N).
    rollouts: usize [count] => rollout.rollouts;
    /// Past turns in the prompt (k).
    history: usize [count] => env.history;
    /// Validity mask for decoding and the loss.
    mask: MaskMode [clap::value_parser!(MaskMode)] => env.mask;
    /// Learning rate.
    lr: f32 [clap::value_parser!(f32)] => optim.lr;
    /// Learning-rate schedule.
    schedule: Schedule [clap::value_parser!(Schedule)] => optim.schedule;
    /// PPO epochs per iteration.
    epochs: usize [count] => optim.epochs;
    /// Minibatches per epoch.
    minibatches: usize [count] => optim.minibatches;
    /// PPO clip ε_low.
    clip_low: f32 [clap::value_parser!(f32)] => algo.clip_low;
    /// PPO clip ε_high.
    clip_high: f32 [clap::value_parser!(f32)] => algo.clip_high;
    /// Gradient-norm clip.
    grad_clip: f32 [clap::value_parser!(f32)] => optim.grad_clip;
    /// How token losses are weighted into the loss.
    agg: Aggregation [clap::value_parser!(Aggregation)] => algo.agg;
    /// Imitation warm-up iterations (uniformly random valid policy) before RL.
    warmup_steps: u64 [count64] => warmup.steps;
    /// Seed of the model's initialisation, the task stream and sampling.
    seed: u64 [count64] => run.seed;
    /// Evaluate held-out success every this many RL iterations (0 = only at the end).
    eval_every: u64 [count64] => run.eval_every;
    /// Held-out tasks per evaluation during training.
    eval_tasks: usize [count] => run.eval_tasks;
    /// Checkpoint every this many iterations (and at the end).
    checkpoint_every: u64 [count64] => run.checkpoint_every;
}

fn train_cmd(a: TrainArgs) -> Result<(), TrainError> {
    let progress = !a.quiet && std::io::stderr().is_terminal();
    let mut opts = RunOptions {
        out: a.out.clone(),
        resume: a.resume.clone(),
        until: a.until,
        progress,
        backend: None,
    };
    if a.resume.is_some() {
        // With --resume, --backend overrides the run's recorded backend.
        opts.backend = a.backend;
    }
    let cfg = if a.resume.is_some() {
        let given = a.config_flags();
        if !given.is_empty() {
            return Err(TrainError::Config(format!(
                "--resume continues a run with its own config.toml; {} cannot be combined with it",
                given.join(", ")
            )));
        }
        TrainConfig::default()
    } else {
        a.resolve()?
    };
    let opened = open_backend(requested_backend(&cfg, &opts)?)?;
    let backend = match &opened.note {
        Some(n) => format!("{} ({n})", opened.backend.name()),
        None => opened.backend.name().to_string(),
    };
    if a.resume.is_some() && !a.quiet {
        eprintln!("aem train: resuming | backend {backend}");
    }
    if a.resume.is_none() && !a.quiet {
        eprintln!(
            "aem train: {} | {}{} | {} tasks x {} rollouts | {} RL steps{} | backend {}",
            cfg.env.level,
            cfg.algo.advantage,
            if cfg.algo.aem { " + AEM" } else { "" },
            cfg.rollout.tasks,
            cfg.rollout.rollouts,
            cfg.run.steps,
            if cfg.warmup.steps > 0 {
                format!(" after {} imitation steps", cfg.warmup.steps)
            } else {
                String::new()
            },
            backend
        );
    }
    let s = train_with(cfg, &opts, &opened)?;
    let f = |x: Option<f64>| x.map_or("-".to_string(), |v| format!("{v:.3}"));
    eprintln!(
        "aem train: {} | backend {} | iterations {}/{} in {:.0} s | held-out success sampled {} -> {}, greedy {} -> {} (random valid policy {})",
        s.dir.display(),
        s.backend,
        s.steps_done,
        s.total_steps,
        s.wall_s,
        f(s.initial_heldout_sampled),
        f(s.final_heldout_sampled),
        f(s.initial_heldout_greedy),
        f(s.final_heldout_greedy),
        f(s.random_valid_heldout),
    );
    Ok(())
}

#[derive(Args)]
#[command(allow_negative_numbers = true)]
struct EvalArgs {
    /// A checkpoint file, or a run directory (its checkpoint.safetensors).
    #[arg(long)]
    checkpoint: PathBuf,
    /// The run's config (default: config.toml next to the checkpoint).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Held-out tasks per level.
    #[arg(long, value_parser = count, default_value_t = 512)]
    tasks: usize,
    /// Training level whose held-out split to use (default: the run's).
    #[arg(long)]
    level: Option<LevelName>,
    /// OOD level (default: the run's).
    #[arg(long)]
    ood_level: Option<LevelName>,
    /// Seed of the sampled evaluation.
    #[arg(long, value_parser = count64, default_value_t = 0)]
    seed: u64,
    /// Also write the rows as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Where the policy samples (any backend reads any run's checkpoint).
    #[arg(long, value_enum, default_value_t = Backend::Auto)]
    backend: Backend,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

fn eval_cmd(a: EvalArgs) -> Result<(), TrainError> {
    let (ckpt, cpath) = checkpoint_paths(&a.checkpoint, a.config.as_ref())?;
    if let Some(p) = &a.json {
        aem::io::check_output(p, &[&ckpt, &cpath])?;
    }
    let mut cfg = TrainConfig::from_toml_file(&cpath)?;
    if let Some(l) = &a.level {
        cfg.env.level = l.clone();
    }
    if let Some(l) = &a.ood_level {
        cfg.env.ood_level = l.clone();
    }
    if a.tasks == 0 {
        return Err(TrainError::Config("--tasks = 0: must be >= 1".into()));
    }
    let pb = progress(!a.quiet && std::io::stderr().is_terminal(), a.tasks as u64);
    let backend = a.backend;
    let opened = open_backend(backend)?;
    let rows = aem::train::eval::eval_checkpoint(
        &cfg,
        &ckpt,
        a.tasks,
        a.seed,
        opened.device.as_ref(),
        |label, d, t| {
            pb.set_length(t as u64);
            pb.set_position(d as u64);
            pb.set_message(label.to_string());
        },
    )?;
    pb.finish_and_clear();
    print!("{}", aem::train::eval::table(&rows));
    if let Some(p) = &a.json {
        let text = serde_json::to_string_pretty(&rows)
            .map_err(|e| TrainError::Config(format!("serialise: {e}")))?;
        aem::train::metrics::write_atomic(p, text.as_bytes())?;
    }
    Ok(())
}

#[derive(Subcommand)]
enum ModelCmd {
    /// Write a freshly initialised checkpoint from a JSON config
    /// (`{"vocab": 64, "context": 64, "d_model": 64, "layers": 2, "heads": 4}`; absent keys take
    /// these defaults, unknown keys are errors).
    Init(ModelInitArgs),
    /// Run a checkpoint's forward pass over `tokens` (B, T) and write `logits` (B, T, V) f32.
    Forward(ModelForwardArgs),
}

#[derive(Args)]
#[command(allow_negative_numbers = true)]
struct ModelInitArgs {
    /// JSON config file.
    #[arg(long)]
    config: PathBuf,
    /// Output checkpoint (safetensors, written atomically).
    #[arg(long)]
    out: PathBuf,
    /// Initialisation seed.
    #[arg(long, value_parser = count64, default_value_t = 0)]
    seed: u64,
}

#[derive(Args)]
#[command(allow_negative_numbers = true)]
struct ModelForwardArgs {
    /// Checkpoint written by `aem model init` (or training).
    #[arg(long)]
    checkpoint: PathBuf,
    /// safetensors file with `tokens` (B, T) as U32, I32 or I64.
    #[arg(long)]
    input: PathBuf,
    /// Output safetensors file with `logits` (B, T, V) F32 (written atomically).
    #[arg(long)]
    output: PathBuf,
    #[arg(long, value_enum, default_value_t = Backend::Cpu)]
    backend: Backend,
}

fn model(cmd: ModelCmd) -> aem::Result<()> {
    use aem::model::file;
    match cmd {
        ModelCmd::Init(a) => {
            aem::io::check_output(&a.out, &[&a.config])?;
            let (cfg, params) = file::init(&a.config, &a.out, a.seed)?;
            eprintln!(
                "aem model init: V={} maxT={} C={} L={} NH={} ({params} parameters) -> {}",
                cfg.vocab,
                cfg.context,
                cfg.d_model,
                cfg.layers,
                cfg.heads,
                a.out.display()
            );
        }
        ModelCmd::Forward(a) => {
            aem::io::check_output(&a.output, &[&a.checkpoint, &a.input])?;
            let (b, t, v) = file::forward(&a.checkpoint, &a.input, &a.output, a.backend)?;
            eprintln!(
                "aem model forward: B={b} T={t} V={v} -> {}",
                a.output.display()
            );
        }
    }
    Ok(())
}

#[derive(Args)]
#[command(allow_negative_numbers = true)]
struct DemoArgs {
    #[arg(long)]
    output: PathBuf,
    #[arg(long, value_parser = count64, default_value_t = 0)]
    seed: u64,
    /// Number of responses R.
    #[arg(long, value_parser = count, default_value_t = 64)]
    responses: usize,
    /// Responses per group.
    #[arg(long, value_parser = count, default_value_t = 8)]
    group_size: usize,
    /// Longest response, in rows.
    #[arg(long, value_parser = count, default_value_t = 12)]
    max_len: usize,
    /// Vocabulary size V.
    #[arg(long, value_parser = count, default_value_t = 1024)]
    vocab: usize,
    /// The logits' dtype in the file (bf16: the f16 values rounded to bf16).
    #[arg(long, value_enum, default_value = "f16")]
    logits_dtype: aem::head::LogitDtype,
}

fn demo_input(a: DemoArgs) -> aem::Result<()> {
    let mut d = file::demo_batch(a.seed, a.responses, a.group_size, a.max_len, a.vocab)?;
    if a.logits_dtype == aem::head::LogitDtype::Bf16 {
        d.logits = d.logits.to_bf16();
    }
    file::write_inputs(&a.output, &d)?;
    eprintln!("aem demo-input: {} -> {}", d.describe(), a.output.display());
    Ok(())
}

#[derive(Args)]
#[command(allow_negative_numbers = true)]
struct HeadArgs {
    /// Input tensors: logits, targets, resp_start, resp_len, resp_group, adv_base [, old_logp, ref_logp].
    #[arg(long)]
    input: PathBuf,
    /// Output file (written atomically).
    #[arg(long)]
    output: PathBuf,
    #[arg(long, value_enum, default_value_t = Backend::Cpu)]
    backend: Backend,
    /// Sampling temperature τ.
    #[arg(long, default_value_t = 1.0)]
    temperature: f32,
    /// AEM strength λ (0 = base algorithm).
    #[arg(long, default_value_t = 1.0)]
    lambda: f32,
    /// AEM range guard δ.
    #[arg(long, default_value_t = 0.1)]
    delta: f32,
    #[arg(long, default_value_t = 0.2)]
    clip_low: f32,
    #[arg(long, default_value_t = 0.2)]
    clip_high: f32,
    /// Dual-clip constant c > 1 (off when absent).
    #[arg(long)]
    dual_clip: Option<f32>,
    #[arg(long, default_value_t = 0.0)]
    entropy_coef: f32,
    #[arg(long, default_value_t = 0.0)]
    kl_coef: f32,
    /// How token losses are weighted into the loss.
    #[arg(long, value_enum, default_value_t = Aggregation::TokenMean)]
    agg: Aggregation,
    /// The constant C of seq-mean-token-sum-norm (default: the longest response).
    #[arg(long)]
    norm_const: Option<f64>,
    /// Global token count N_tok (default: owned rows in this batch).
    #[arg(long)]
    n_tok: Option<f64>,
    /// Global response count N_resp (default: R).
    #[arg(long)]
    n_resp: Option<f64>,
    /// Number of groups G (default: max(resp_group) + 1).
    #[arg(long, value_parser = count)]
    n_groups: Option<usize>,
    /// Gradient scale s (a loss scale for f16 gradients).
    #[arg(long, default_value_t = 1.0)]
    grad_scale: f32,
    #[arg(long, value_enum, default_value_t = GradDtype::F32)]
    grad_dtype: GradDtype,
}

fn head(a: HeadArgs) -> aem::Result<()> {
    let cfg = HeadConfig {
        temperature: a.temperature,
        lambda: a.lambda,
        delta: a.delta,
        clip_low: a.clip_low,
        clip_high: a.clip_high,
        dual_clip: a.dual_clip,
        entropy_coef: a.entropy_coef,
        kl_coef: a.kl_coef,
        agg: a.agg,
        n_tok: a.n_tok,
        n_resp: a.n_resp,
        norm_const: a.norm_const,
        grad_scale: a.grad_scale,
    };
    let backend = a.backend;
    let dtype = a.grad_dtype;
    aem::io::check_output(&a.output, &[&a.input])?;
    let data = file::read_inputs(&a.input, a.n_groups)?;
    let res = file::compute(&data, &cfg, dtype, backend)?;
    file::write_result(&a.output, &res, data.vocab, &cfg)?;
    eprintln!(
        "aem head: {} loss={:.6} -> {}",
        data.describe(),
        res.loss,
        a.output.display()
    );
    Ok(())
}

/// Parses the command line; usage errors are reported as one line (help and version as usual).
fn parse_cli() -> Result<Cli, ExitCode> {
    use clap::error::ErrorKind;
    Cli::try_parse().map_err(|e| match e.kind() {
        ErrorKind::DisplayHelp
        | ErrorKind::DisplayVersion
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = e.print();
            if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            }
        }
        _ => {
            // The message is the text before "Usage:", less clap's tips, joined into one line.
            let text = e.render().to_string();
            let msg: Vec<&str> = text
                .lines()
                .map(str::trim)
                .take_while(|l| !l.starts_with("Usage:") && !l.starts_with("For more information"))
                .filter(|l| !l.is_empty() && !l.starts_with("tip:"))
                .collect();
            let msg = msg.join(" ");
            let msg = msg.trim_start_matches("error: ");
            eprintln!("aem: error: {msg} (see --help)");
            ExitCode::from(2)
        }
    })
}

fn main() -> ExitCode {
    let cli = match parse_cli() {
        Ok(c) => c,
        Err(code) => return code,
    };
    let r = match cli.cmd {
        Cmd::Head(a) => head(a).map_err(|e| e.to_string()),
        Cmd::DemoInput(a) => demo_input(a).map_err(|e| e.to_string()),
        Cmd::Model(c) => model(c).map_err(|e| e.to_string()),
        Cmd::Train(a) => train_cmd(*a).map_err(|e| e.to_string()),
        Cmd::Eval(a) => eval_cmd(a).map_err(|e| e.to_string()),
        Cmd::Probe(a) => probe_cmd(a).map_err(|e| e.to_string()),
        Cmd::Doctor(a) => doctor_cmd(a).map_err(|e| e.to_string()),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("aem: error: {e}");
            ExitCode::FAILURE
        }
    }
}
