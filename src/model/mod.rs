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

pub use crate::error::ModelError;

/// `Result` with a [`ModelError`].
pub type Result<T> = std::result::Result<T, ModelError>;
