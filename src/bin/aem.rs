//! The `aem` command line.

use aem::head::file::{self, Backend, GradDtype};
use aem::head::{Aggregation, HeadConfig};
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::process::ExitCode;

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
struct ModelInitArgs {
    /// JSON config file.
    #[arg(long)]
    config: PathBuf,
    /// Output checkpoint (safetensors, written atomically).
    #[arg(long)]
    out: PathBuf,
    /// Initialisation seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

#[derive(Args)]
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
    #[arg(long, value_enum, default_value = "cpu")]
    backend: BackendArg,
}

fn model(cmd: ModelCmd) -> aem::Result<()> {
    use aem::model::file;
    match cmd {
        ModelCmd::Init(a) => {
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
            let backend = match a.backend {
                BackendArg::Cpu => file::Backend::Cpu,
                BackendArg::Emu => file::Backend::Emu,
                BackendArg::Cuda => file::Backend::Cuda,
            };
            let (b, t, v) = file::forward(&a.checkpoint, &a.input, &a.output, backend)?;
            eprintln!(
                "aem model forward: B={b} T={t} V={v} -> {}",
                a.output.display()
            );
        }
    }
    Ok(())
}

#[derive(Args)]
struct DemoArgs {
    #[arg(long)]
    output: PathBuf,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Number of responses R.
    #[arg(long, default_value_t = 64)]
    responses: usize,
    /// Responses per group.
    #[arg(long, default_value_t = 8)]
    group_size: usize,
    /// Longest response, in rows.
    #[arg(long, default_value_t = 12)]
    max_len: usize,
    /// Vocabulary size V.
    #[arg(long, default_value_t = 1024)]
    vocab: usize,
}

fn demo_input(a: DemoArgs) -> aem::Result<()> {
    let d = file::demo_batch(a.seed, a.responses, a.group_size, a.max_len, a.vocab)?;
    file::write_inputs(&a.output, &d)?;
    eprintln!(
        "aem demo-input: T={} V={} R={} G={} -> {}",
        d.targets.len(),
        d.vocab,
        d.resp_start.len(),
        d.n_groups,
        a.output.display()
    );
    Ok(())
}

#[derive(Clone, Copy, ValueEnum)]
enum BackendArg {
    /// The CPU reference (`aem head`: f64) or the CPU path (`aem model`).
    Cpu,
    /// The CUDA kernels on the CPU emulator.
    Emu,
    /// The CUDA kernels on GPU 0.
    Cuda,
}

#[derive(Clone, Copy, ValueEnum)]
enum DtypeArg {
    F16,
    F32,
}

#[derive(Args)]
struct HeadArgs {
    /// Input tensors: logits, targets, resp_start, resp_len, resp_group, adv_base [, old_logp, ref_logp].
    #[arg(long)]
    input: PathBuf,
    /// Output file (written atomically).
    #[arg(long)]
    output: PathBuf,
    #[arg(long, value_enum, default_value = "cpu")]
    backend: BackendArg,
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
    /// token-mean | seq-mean-token-mean | seq-mean-token-sum | seq-mean-token-sum-norm
    #[arg(long, default_value = "token-mean")]
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
    #[arg(long)]
    n_groups: Option<usize>,
    /// Gradient scale s (a loss scale for f16 gradients).
    #[arg(long, default_value_t = 1.0)]
    grad_scale: f32,
    #[arg(long, value_enum, default_value = "f32")]
    grad_dtype: DtypeArg,
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
    let backend = match a.backend {
        BackendArg::Cpu => Backend::Cpu,
        BackendArg::Emu => Backend::Emu,
        BackendArg::Cuda => Backend::Cuda,
    };
    let dtype = match a.grad_dtype {
        DtypeArg::F16 => GradDtype::F16,
        DtypeArg::F32 => GradDtype::F32,
    };
    let data = file::read_inputs(&a.input, a.n_groups)?;
    let res = file::compute(&data, &cfg, dtype, backend)?;
    file::write_result(&a.output, &res, data.vocab, &cfg)?;
    eprintln!(
        "aem head: T={} V={} R={} G={} loss={:.6} -> {}",
        data.targets.len(),
        data.vocab,
        data.resp_start.len(),
        data.n_groups,
        res.loss,
        a.output.display()
    );
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let r = match cli.cmd {
        Cmd::Head(a) => head(a),
        Cmd::DemoInput(a) => demo_input(a),
        Cmd::Model(c) => model(c),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("aem: error: {e}");
            ExitCode::FAILURE
        }
    }
}
