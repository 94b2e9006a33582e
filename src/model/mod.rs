//! A small GPT-2 (decoder-only transformer) with an explicit forward and backward, llm.c style.
//!
//! Shape letters, used in every `/// shape dtype` comment of this module:
//! - `B`: batch size (sequences), `T`: sequence length (≤ context), `C`: channels (d_model),
//! - `NH`: attention heads (`hs = C / NH` channels per head), `L`: layers, `V`: vocabulary,
//! - `maxT`: the configured context (the rows of `wpe` and of a KV cache).
//!
//! Storage: parameters and saved activations are [`Elem`] (`half::f16` in production, `f32` in the
//! "exact" mode used by the finite-difference test); every sum is accumulated in `f32`; parameter
//! gradients, activation gradients and logits are `f32`; AdamW keeps `f32` master weights.
//!
//! Read in this order: [`config`] (the config and its errors), [`params`] (the parameter layout,
//! Hugging Face GPT-2 names), [`seq`] (the architecture: forward, backward and decoding, written
//! once), [`exec`] (the op list those run on, as a trait, and the storage they write into),
//! [`acts`] (the activation layout), [`cpu`] (the CPU ops: one function per op, forward and
//! backward) and [`host`] (the CPU executor over them), [`gpt`] (the CPU model), [`adamw`],
//! [`sample`] (KV-cache sampling) and [`checkpoint`] (safetensors).
//!
//! The device path ([`device::DeviceGpt`]) reuses [`params::ParamLayout`] and the activation layout
//! unchanged and runs the same [`seq`] functions through its executor, with the kernels of
//! `kernels/gpt.cu` and [`crate::device::Device::gemm`] (cuBLAS on a GPU, an f32 CPU GEMM on the
//! emulator); its logits go through the fused loss-head kernels
//! ([`device::DeviceGpt::loss_head`]) and their gradient back through the model. [`file`] is
//! `aem model init` / `aem model forward`.
//!
pub mod acts;
pub mod adamw;
pub mod checkpoint;
pub mod config;
pub mod cpu;
pub mod device;
pub mod elem;
pub mod exec;
pub mod file;
pub mod gpt;
pub mod host;
pub mod params;
pub mod sample;
pub mod seq;

pub use adamw::{AdamW, AdamWConfig};
pub use checkpoint::{load_checkpoint, save_checkpoint, Checkpoint};
pub use config::GptConfig;
pub use cpu::{Op, Profile};
pub use device::{DevKvCache, DeviceGpt};
pub use elem::Elem;
pub use gpt::{cross_entropy, Gpt};
pub use sample::{SampleParams, Samples};

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
    /// The safetensors format rejected the data.
    #[error("safetensors: {0}")]
    SafeTensors(#[from] safetensors::SafeTensorError),
}

/// `Result` with a [`ModelError`].
pub type Result<T> = std::result::Result<T, ModelError>;
