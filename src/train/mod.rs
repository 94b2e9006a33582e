//! The RL trainer (`aem train`, `aem eval`) on the CPU path: the f16 GPT samples B tasks × N
//! rollouts under the env's validity mask, base advantages (GRPO, Dr.GRPO, RLOO, GiGPO) are
//! optionally rescaled by AEM's α, and the loss head's CPU reference gives the gradient with
//! respect to the logits that the model back-propagates.
//!
//! Read in this order: [`config`] (every knob, TOML, validation), [`rollout`] (lockstep
//! episodes, KV-cache sampling, recorded masks), [`update`] (advantages, α, masked logits, PPO
//! steps), [`warmup`] (imitation of the uniformly random valid policy), [`eval`] (held-out and
//! OOD success), [`metrics`] (`metrics.jsonl`, plots), [`run`] (the loop, run directory,
//! checkpoints, resume).

pub mod config;
pub mod eval;
pub mod metrics;
pub mod rollout;
pub mod run;
pub mod update;
pub mod warmup;

pub use config::TrainConfig;
pub use run::{train, RunOptions, RunSummary};

use std::path::PathBuf;

/// Errors of the trainer; each displays as one line.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// A bad option, config key or value.
    #[error("config: {0}")]
    Config(String),
    /// A backend that is not wired to the trainer.
    #[error("backend {0}: the device model path is not available yet (use --backend cpu)")]
    Backend(&'static str),
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
    /// Plotting failed.
    #[error("plot {}: {why}", path.display())]
    Plot { path: PathBuf, why: String },
}
