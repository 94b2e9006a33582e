//! The crate's one error type. Every variant names the offending argument, and where there is
//! one, the first offending index, so a bad batch can be found in the caller's data.

use std::path::PathBuf;

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A tensor or count has the wrong shape.
    #[error("{arg}: expected {expected}, got {got}")]
    Shape {
        arg: &'static str,
        expected: String,
        got: String,
    },
    /// An element is outside its allowed range (`targets[t] ≥ V`, `resp_group[r] ≥ G`, …).
    #[error("{arg}[{index}] = {value}: {reason}")]
    OutOfRange {
        arg: &'static str,
        index: usize,
        value: String,
        reason: String,
    },
    /// Two responses own the same row.
    #[error("resp_start: responses {index} and {other} overlap (both own row {row})")]
    Overlap {
        index: usize,
        other: usize,
        row: usize,
    },
    /// A NaN or ±inf value. For `logits`, `index` is the first bad row and `col` its first bad column.
    #[error("{arg}[{index}{}] is not finite ({value})", col.map(|c| format!(", {c}")).unwrap_or_default())]
    NonFinite {
        arg: &'static str,
        index: usize,
        col: Option<usize>,
        value: f64,
    },
    /// A configuration value outside its domain (`τ ≤ 0`, `λ < 0`, `c ≤ 1`, …).
    #[error("{arg} = {value}: {reason}")]
    Config {
        arg: &'static str,
        value: f64,
        reason: &'static str,
    },
    /// A required input is absent.
    #[error("{arg}: {reason}")]
    Missing {
        arg: &'static str,
        reason: &'static str,
    },
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A file was read but its content is not what was expected (bad safetensors, wrong dtype, …).
    #[error("{}: {reason}", path.display())]
    File { path: PathBuf, reason: String },
    /// No usable CUDA driver or device.
    #[error("no CUDA device: {0}")]
    NoDevice(String),
    /// A kernel is not in the loaded module.
    #[error("kernel {name} missing from module {module}")]
    KernelMissing { module: String, name: String },
    /// The model, its optimizer, sampler or checkpoints (`model::ModelError`).
    #[error("model: {0}")]
    Model(#[from] ModelError),
    /// A size decided by the inputs or the config does not fit in memory.
    #[error("{0}")]
    Memory(#[from] crate::mem::TooLarge),
    /// An output would be non-finite: `arg` is the output, `index` its first bad row, `count`
    /// the bad entries, `cause` what overflowed.
    #[error("{arg}[{index}] is not finite ({count} {}): {cause}", if *count == 1 { "entry" } else { "entries" })]
    NonFiniteOutput {
        arg: &'static str,
        index: usize,
        count: u64,
        cause: String,
    },
    /// A launch configuration exceeds a limit of the device (checked on the host before the
    /// launch, by `device::limits::Limits::check`).
    #[error("{kernel}: {limit} {requested} exceeds the limit {max} of {arch}")]
    LaunchLimit {
        kernel: String,
        limit: &'static str,
        requested: u64,
        max: u64,
        arch: String,
    },
    /// A device (CUDA or emulator) reported a failure.
    #[error("{backend}: {message}")]
    Device {
        backend: &'static str,
        message: String,
    },
}

impl Error {
    pub(crate) fn shape(arg: &'static str, expected: impl ToString, got: impl ToString) -> Self {
        Error::Shape {
            arg,
            expected: expected.to_string(),
            got: got.to_string(),
        }
    }

    pub(crate) fn range(
        arg: &'static str,
        index: usize,
        value: impl ToString,
        reason: impl ToString,
    ) -> Self {
        Error::OutOfRange {
            arg,
            index,
            value: value.to_string(),
            reason: reason.to_string(),
        }
    }

    pub(crate) fn config(arg: &'static str, value: f64, reason: &'static str) -> Self {
        Error::Config { arg, value, reason }
    }
}

/// Converts a size to `u32` for a kernel argument, naming it on overflow.
pub(crate) fn to_u32(arg: &'static str, n: usize) -> Result<u32> {
    u32::try_from(n).map_err(|_| Error::shape(arg, "a size below 2^32", n))
}

/// Errors of the model, its optimizer, sampler and checkpoints.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A config field that must be positive is zero.
    #[error("config: {field} must be > 0")]
    ZeroDim { field: &'static str },
    /// `d_model` is not a multiple of `heads`.
    #[error("config: heads ({heads}) must divide d_model ({d_model})")]
    HeadsDontDivide { d_model: usize, heads: usize },
    /// A size computed from the config or the inputs overflows `usize`/`u32`.
    #[error("size overflow in {what}")]
    Overflow { what: &'static str },
    /// A buffer has the wrong number of elements.
    #[error("{op}: expected {expected} elements, got {got}")]
    Shape {
        op: &'static str,
        expected: usize,
        got: usize,
    },
    /// A sequence is longer than the context.
    #[error("{op}: sequence length {t} exceeds context {context}")]
    TooLong {
        op: &'static str,
        t: usize,
        context: usize,
    },
    /// A token id is not below the vocabulary size.
    #[error("token {token} out of range for vocab {vocab}")]
    Token { token: u32, vocab: usize },
    /// `backward` was called without a preceding `forward`.
    #[error("backward called before forward")]
    NoForward,
    /// A hyperparameter is out of its domain (temperature < 0, lr NaN, …).
    #[error("invalid {what}: {value}")]
    Invalid { what: &'static str, value: f32 },
    /// The token mask left no valid token for a sequence.
    #[error("mask leaves no valid token for sequence {row} at position {t}")]
    EmptyMask { row: usize, t: usize },
    /// The optimizer state does not match the model.
    #[error("optimizer has {got} parameters, model has {expected}")]
    OptimMismatch { expected: usize, got: usize },
    /// A checkpoint is missing a tensor, has a wrong shape/dtype, or bad metadata.
    #[error("checkpoint: {0}")]
    Checkpoint(String),
    /// File system error while writing or reading a checkpoint.
    #[error("checkpoint io: {0}")]
    Io(#[from] std::io::Error),
    /// A size decided by the config or the inputs does not fit in memory.
    #[error("{0}")]
    Memory(#[from] crate::mem::TooLarge),
    /// The safetensors format rejected the data.
    #[error("safetensors: {0}")]
    SafeTensors(#[from] safetensors::SafeTensorError),
}
