//! The RL trainer (`aem train`, `aem eval`): the f16 GPT samples B tasks × N rollouts under the
//! env's validity mask, base advantages (GRPO, Dr.GRPO, RLOO, GiGPO) are optionally rescaled by
//! AEM's α, and the loss head gives the gradient with respect to the logits that the model
//! back-propagates. Two backends run the same trainer code: the CPU path (`Gpt<f16>` and the
//! loss head's CPU reference) and the device path (`DeviceGpt` with the fused loss-head kernels,
//! on the emulator or a GPU).
//!
//! Read in this order: [`config`] (every knob, TOML, validation), [`policy`] (the two model
//! paths behind one interface, backends), [`rollout`] (lockstep episodes, KV-cache sampling,
//! recorded masks), [`update`] (advantages, α, masked logits, PPO steps), [`warmup`] (imitation
//! of the uniformly random valid policy), [`eval`] (held-out and OOD success), [`probe`] (does α track the relative surprisal?), [`metrics`]
//! (`metrics.jsonl`, plots), [`run`] (the loop, run directory, checkpoints, resume).

pub mod batch;
pub mod config;
pub mod eval;
pub mod metrics;
pub mod policy;
pub mod probe;
pub mod rollout;
pub mod run;
pub mod sampler;
pub mod update;
pub mod warmup;

pub use config::TrainConfig;
pub use run::{train, train_with, RunOptions, RunSummary};

use std::path::PathBuf;

/// Errors of the trainer; each displays as one line.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// A bad option, config key or value.
    #[error("config: {0}")]
    Config(String),
    /// A backend that cannot be opened (`cuda` without a GPU).
    #[error("backend {backend}: {why}")]
    Backend { backend: &'static str, why: String },
    /// The device path (DeviceGpt, its kernels or the device) failed.
    #[error("device: {0}")]
    Device(crate::Error),
    /// An environment error (unknown level, no task found).
    #[error("env: {0}")]
    Env(#[from] crate::env::EnvError),
    /// A model, optimizer, sampler or checkpoint error.
    #[error("model: {0}")]
    Model(#[from] crate::model::ModelError),
    /// A loss-head error (validation of the packed batch).
    #[error("loss head: {0}")]
    Head(#[from] crate::Error),
    /// A file could not be read or written.
    #[error("{what} {}: {source}", path.display())]
    Io {
        path: PathBuf,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// A run directory that cannot be used as asked.
    #[error("run directory {}: {why}", path.display())]
    RunDir { path: PathBuf, why: String },
    /// A loss or gradient became NaN or infinite.
    #[error("non-finite training value: {0}")]
    NonFinite(String),
    /// Training diverged at an iteration: its loss, gradient norm or parameters are not finite.
    /// Nothing of that iteration was saved (the last checkpoint is the one before).
    #[error("training diverged at iteration {step}: {what} (the last checkpoint is from before; lower the learning rate)")]
    Diverged { step: u64, what: String },
    /// Plotting failed.
    #[error("plot {}: {why}", path.display())]
    Plot { path: PathBuf, why: String },
}

/// A seed derived from the run seed, a stream name and an index (stable across versions).
pub fn derive_seed(seed: u64, stream: &str, index: u64) -> u64 {
    let mut bytes = seed.to_le_bytes().to_vec();
    bytes.extend_from_slice(stream.as_bytes());
    bytes.extend_from_slice(&index.to_le_bytes());
    crate::env::fnv1a(&bytes)
}
