//! # aem — the AEM loss head for multi-turn agentic RL
//!
//! Adaptive Entropy Modulation (arXiv 2605.00425) rescales each response's advantage by a
//! response-level uncertainty proxy (its mean token entropy, min–max ranked within its group).
//! The contract is `shared/design/AEM.md`; this crate computes it.
//!
//! Shape letters, defined once: `T` rows of the packed batch, `V` vocabulary, `R` responses,
//! `G` groups.
//!
//! Reading order:
//! 1. [`head`] — configuration, inputs, validation into a [`head::Layout`].
//! 2. [`cpu`] — the reference: every number the kernels must reproduce.
//! 3. [`advantage`] — GRPO, Dr.GRPO, RLOO, GiGPO base advantages.
//! 4. [`io`] — safetensors files for `aem head`.
//! 5. [`model`] — the small f16 GPT: forward, backward, AdamW, KV-cache sampling, GPT-2-layout
//!    safetensors checkpoints; the CPU path and the device path (`kernels/gpt.cu` + GEMMs over
//!    [`device::Device`], with the loss-head kernels in the loop).
//! 6. [`env`] — multi-turn text environments (FogLake, KeyRooms, TinyShop) for the trainer.
//! 7. [`train`] — the RL trainer: rollouts, advantages, AEM, PPO updates, evaluation, runs.

pub mod advantage;
#[cfg(feature = "candle")]
pub mod candle;
pub mod cpu;
pub mod device;
pub mod env;
pub mod error;
pub mod head;
pub mod io;
pub mod mem;
pub mod model;
pub mod train;

pub use error::{Error, Result};

/// The cudarc this crate launches through (0.19, as candle-core 0.11 uses): a trainer that holds
/// its own context, stream and `CudaSlice`s names these types, and [`device::Device::cuda_on_stream`],
/// [`device::Slice::cuda`] and [`device::SliceMut::cuda`] take them without a copy.
#[cfg(feature = "cuda")]
pub use cudarc;
