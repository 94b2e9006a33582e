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
    Model(#[from] crate::model::ModelError),
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
