//! The trainer's configuration: every knob of a run, with defaults, a TOML file form, `--set`
//! overrides and validation. The resolved config is written to the run directory as
//! `config.toml` and is what `--resume` and `aem eval` read back.
//!
//! A TOML file may set any subset of the fields; unknown keys are errors (a typo must not be
//! silently ignored). Every error is one line naming the key.
//!
//! Options with a fixed set of values are enums deriving serde (the TOML value) and
//! `clap::ValueEnum` (the flag, its `--help` list): one definition gives the accepted values,
//! the help and the check. Level names are [`LevelName`]s, checked against the env registry.

use serde::{Deserialize, Serialize};

use super::TrainError;
use crate::advantage::Outcome;
pub use crate::device::Backend;
pub use crate::env::{LevelName, MaskMode};
pub use crate::head::Aggregation;

/// A whole run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    pub env: EnvConfig,
    pub model: ModelConfig,
    pub rollout: RolloutConfig,
    pub algo: AlgoConfig,
    pub optim: OptimConfig,
    pub warmup: WarmupConfig,
    pub run: RunConfig,
}

/// Environment and prompt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EnvConfig {
    /// Training level (held-out tasks come from its test split), e.g. `foglake-proto`.
    pub level: LevelName,
    /// Out-of-distribution level reported by evaluation (of the same env).
    pub ood_level: LevelName,
    /// Past turns shown in the prompt (k).
    pub history: usize,
    /// Validity mask for decoding and the loss.
    pub mask: MaskMode,
}

impl Default for EnvConfig {
    fn default() -> Self {
        Self {
            level: LevelName::builtin("keyrooms-train"),
            ood_level: LevelName::builtin("keyrooms-hard"),
            history: 0,
            mask: MaskMode::Admissible,
        }
    }
}

/// The policy network (a GPT-2; the vocabulary is the env's).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    pub d_model: usize,
    pub layers: usize,
    pub heads: usize,
    /// Context (maxT): prompt plus response must fit.
    pub context: usize,
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            d_model: 64,
            layers: 2,
            heads: 4,
            context: 64,
        }
    }
}

/// Rollout collection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RolloutConfig {
    /// Tasks per iteration (B); each task is one group.
    pub tasks: usize,
    /// Rollouts per task (N).
    pub rollouts: usize,
    /// Sampling temperature τ (also the loss head's).
    pub temperature: f32,
}

impl Default for RolloutConfig {
    fn default() -> Self {
        Self {
            tasks: 16,
            rollouts: 8,
            temperature: 1.0,
        }
    }
}

/// Advantage estimator, AEM and the PPO loss.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlgoConfig {
    /// The base advantage estimator.
    pub advantage: Advantage,
    /// Rescale advantages by AEM's α.
    pub aem: bool,
    /// AEM λ.
    pub lambda: f32,
    /// AEM range guard δ.
    pub delta: f32,
    /// The response statistic AEM ranks (experiment variants; `mean` is the paper's).
    pub aem_proxy: AemProxy,
    /// The group within which responses are ranked (`task` is the paper's).
    pub aem_scope: AemScope,
    /// The map from the ranked statistic to α (`paper`, or a control).
    pub aem_map: AemMap,
    /// Which responses are trained (the mechanism check; `all` is the paper's).
    pub aem_only: AemOnly,
    pub clip_low: f32,
    pub clip_high: f32,
    /// Dual-clip constant c > 1 (absent = off).
    pub dual_clip: Option<f32>,
    /// Entropy bonus β_H.
    pub entropy_coef: f32,
    /// How token losses are weighted into the loss.
    pub agg: Aggregation,
    /// C of `seq-mean-token-sum-norm` (absent = the longest response of the minibatch).
    pub norm_const: Option<f64>,
    /// GiGPO ω (weight of the step-level advantage).
    pub gigpo_omega: f64,
    /// GiGPO γ (discount of step returns).
    pub gigpo_gamma: f64,
    /// GiGPO: divide the step advantage by its anchor group's std.
    pub gigpo_step_std: bool,
    /// GiGPO's episode-level estimator.
    pub gigpo_episode: GigpoEpisode,
}

impl Default for AlgoConfig {
    fn default() -> Self {
        Self {
            advantage: Advantage::Gigpo,
            aem: true,
            lambda: 1.0,
            delta: 0.1,
            aem_proxy: AemProxy::Mean,
            aem_scope: AemScope::Task,
            aem_map: AemMap::Paper,
            aem_only: AemOnly::All,
            clip_low: 0.2,
            clip_high: 0.2,
            dual_clip: None,
            entropy_coef: 0.0,
            agg: Aggregation::TokenMean,
            norm_const: None,
            gigpo_omega: 1.0,
            gigpo_gamma: 0.95,
            gigpo_step_std: false,
            gigpo_episode: GigpoEpisode::DrGrpo,
        }
    }
}

/// The base advantage estimator (`algo.advantage`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Advantage {
    /// (R − mean) / (std + 1e-6) over the task's rollouts.
    Grpo,
    /// R − mean (Dr. GRPO).
    DrGrpo,
    /// R − the mean of the task's other rollouts (leave-one-out).
    Rloo,
    /// Episode advantage plus ω × a step advantage within groups of equal observations.
    #[default]
    Gigpo,
}

impl Advantage {
    /// The outcome-level estimator; `None` for GiGPO (which also needs the steps).
    pub fn outcome(self) -> Option<Outcome> {
        match self {
            Advantage::Grpo => Some(Outcome::Grpo),
            Advantage::DrGrpo => Some(Outcome::DrGrpo),
            Advantage::Rloo => Some(Outcome::Rloo),
            Advantage::Gigpo => None,
        }
    }
}

/// The value in configs and flags (also in default run directory names): clap's name, which
/// is serde's (both kebab-case of the variant; `tests/train_run.rs` holds them equal).
impl std::fmt::Display for Advantage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use clap::ValueEnum;
        match self.to_possible_value() {
            Some(v) => f.write_str(v.get_name()),
            None => Ok(()),
        }
    }
}

/// GiGPO's episode-level estimator (`algo.gigpo_episode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum GigpoEpisode {
    /// R − mean.
    #[default]
    DrGrpo,
    /// (R − mean) / (std + 1e-6).
    Grpo,
}

impl GigpoEpisode {
    /// The outcome-level estimator GiGPO's episode term uses.
    pub fn outcome(self) -> Outcome {
        match self {
            GigpoEpisode::DrGrpo => Outcome::DrGrpo,
            GigpoEpisode::Grpo => Outcome::Grpo,
        }
    }
}

/// The response statistic AEM's min–max rank is taken of (`algo.aem_proxy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum AemProxy {
    /// Mean token entropy over all response tokens (the paper's; forced tokens count as 0).
    #[default]
    Mean,
    /// Mean token entropy over free tokens (≥ 2 valid choices); 0 for a response without one.
    FreeMean,
    /// Sum of token entropies (forced tokens add 0, so it is also the free-token sum).
    Sum,
    /// Structural control: the response's fraction of free tokens, no entropy at all.
    FreeFraction,
}

/// The group within which responses are ranked (`algo.aem_scope`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum AemScope {
    /// All turns of all rollouts of one task (the paper's group).
    #[default]
    Task,
    /// The responses of one task at the same turn index.
    Turn,
    /// The responses of one task taken from the same observation (GiGPO's anchor state).
    Anchor,
}

/// The map from the ranked statistic to α (`algo.aem_map`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum AemMap {
    /// α = exp(−λH̃)/mean(exp(−λH̃)): confident responses weigh more.
    #[default]
    Paper,
    /// Control: the statistic negated, so α = exp(+λH̃)/mean (uncertain responses weigh more).
    Reversed,
    /// Control: the paper's α, permuted at random within each group (same spread, no link).
    Shuffled,
}

/// Which responses the PPO step trains on (`algo.aem_only`, the mechanism check).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum AemOnly {
    /// Every response.
    #[default]
    All,
    /// Only responses with A_base·(α − 1) > 0 (AEM's sharpening direction).
    Pos,
    /// Only responses with A_base·(α − 1) < 0 (AEM's exploring direction).
    Neg,
}

/// AdamW, the learning-rate schedule, epochs and minibatches.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OptimConfig {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
    /// Global gradient-norm clip (absent = off).
    pub grad_clip: Option<f32>,
    /// The learning-rate schedule after the warm-up.
    pub schedule: Schedule,
    /// Linear learning-rate warm-up over this many RL steps.
    pub lr_warmup_steps: u64,
    pub min_lr_ratio: f32,
    /// Passes over each iteration's rollouts (PPO epochs); α stays fixed across them.
    pub epochs: usize,
    /// Minibatches per epoch (one optimizer step each).
    pub minibatches: usize,
}

impl Default for OptimConfig {
    fn default() -> Self {
        Self {
            lr: 3e-4,
            beta1: 0.9,
            beta2: 0.99,
            eps: 1e-8,
            weight_decay: 0.0,
            grad_clip: Some(1.0),
            schedule: Schedule::Constant,
            lr_warmup_steps: 0,
            min_lr_ratio: 0.1,
            epochs: 1,
            minibatches: 1,
        }
    }
}

/// Optional imitation warm-up of the uniformly random valid policy (grammar only, no task
/// knowledge), run as the first `steps` iterations before RL.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WarmupConfig {
    /// Imitation iterations (0 = off, the default).
    pub steps: u64,
    /// Episodes of the random valid policy per imitation iteration.
    pub episodes: usize,
    pub lr: f32,
}

impl Default for WarmupConfig {
    fn default() -> Self {
        Self {
            steps: 0,
            episodes: 64,
            lr: 1e-3,
        }
    }
}

/// Length, seeds, evaluation, checkpoints, backend.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RunConfig {
    /// RL iterations (after the imitation warm-up).
    pub steps: u64,
    /// Seeds the model's initialisation, the task stream and sampling.
    pub seed: u64,
    /// Evaluate on held-out tasks every this many RL steps (0 = only at the end).
    pub eval_every: u64,
    /// Held-out tasks per evaluation during training.
    pub eval_tasks: usize,
    /// Write the checkpoint every this many iterations (and always at the end).
    pub checkpoint_every: u64,
    /// Every this many RL iterations, append each response's statistics (H̄, H̄_free, S,
    /// A_base, α) to `responses.tsv` in the run directory (0 = off, the default).
    pub responses_every: u64,
    /// Where the run computes. A run's `config.toml` records the backend `auto` resolved to.
    pub backend: Backend,
}

impl Default for RunConfig {
    fn default() -> Self {
        Self {
            steps: 450,
            seed: 0,
            eval_every: 25,
            eval_tasks: 256,
            checkpoint_every: 25,
            responses_every: 0,
            backend: Backend::Auto,
        }
    }
}

/// Learning-rate schedule shapes (`optim.schedule`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Schedule {
    /// `optim.lr` throughout.
    #[default]
    Constant,
    /// Cosine decay to `min_lr_ratio · lr` at the last RL step.
    Cosine,
    /// Linear decay to `min_lr_ratio · lr` at the last RL step.
    Linear,
}

fn bad(key: &str, value: impl std::fmt::Display, why: &str) -> TrainError {
    TrainError::Config(format!("{key} = {value}: {why}"))
}

impl TrainConfig {
    /// Reads a TOML file (any subset of the fields; the rest keep their defaults).
    pub fn from_toml_file(path: &std::path::Path) -> Result<Self, TrainError> {
        let text = crate::io::read_input_text(path)?;
        Self::from_toml_str(&text).map_err(|e| match e {
            TrainError::Config(m) => TrainError::Config(format!("{}: {m}", path.display())),
            other => other,
        })
    }

    /// Parses TOML text; errors are one line with the line and column.
    pub fn from_toml_str(text: &str) -> Result<Self, TrainError> {
        toml::from_str(text).map_err(|e| TrainError::Config(toml_error_line(text, &e)))
    }

    /// The config as TOML text (what `config.toml` holds).
    pub fn to_toml(&self) -> Result<String, TrainError> {
        toml::to_string(self).map_err(|e| TrainError::Config(format!("serialise config: {e}")))
    }

    /// Applies one `section.key=value` override; `value` is a TOML value (a bare word that is
    /// not a number, boolean or array is taken as a string).
    pub fn set(&mut self, assignment: &str) -> Result<(), TrainError> {
        let (key, value) = assignment.split_once('=').ok_or_else(|| {
            TrainError::Config(format!(
                "--set {assignment:?}: expected section.key=value (e.g. optim.lr=1e-3)"
            ))
        })?;
        let key = key.trim();
        let value = value.trim();
        let (section, field) = key.split_once('.').ok_or_else(|| {
            TrainError::Config(format!(
                "--set {key}: expected section.key (sections: env, model, rollout, algo, optim, warmup, run)"
            ))
        })?;
        let parsed: toml::Value = match toml::from_str::<toml::Table>(&format!("v = {value}")) {
            Ok(mut t) => t.remove("v").unwrap_or(toml::Value::String(value.into())),
            Err(_) => toml::Value::String(value.into()),
        };
        let mut table = toml::Table::try_from(&*self)
            .map_err(|e| TrainError::Config(format!("serialise config: {e}")))?;
        let sec = table
            .get_mut(section)
            .and_then(toml::Value::as_table_mut)
            .ok_or_else(|| {
                TrainError::Config(format!("--set {key}: unknown section {section:?}"))
            })?;
        if !sec.contains_key(field) && !OPTIONAL_KEYS.contains(&key) {
            return Err(TrainError::Config(format!(
                "--set {key}: unknown key {field:?} in [{section}]"
            )));
        }
        // A string-valued key (an enum, a level) takes the bare value as written, so a value
        // that parses as a number is reported against the accepted names, not as a type error.
        let parsed = match (sec.get(field), parsed) {
            (Some(toml::Value::String(_)), p) if !p.is_str() => toml::Value::String(value.into()),
            (_, p) => p,
        };
        sec.insert(field.to_string(), parsed);
        *self = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| {
                TrainError::Config(format!("--set {key}={value}: {}", one_line(e.message())))
            })?;
        Ok(())
    }

    /// Checks every field's domain (the enums' values are checked when parsed).
    pub fn validate(&self) -> Result<(), TrainError> {
        let train_level = self
            .env
            .level
            .level()
            .map_err(|e| TrainError::Config(format!("env.level: {e}")))?;
        let ood = self
            .env
            .ood_level
            .level()
            .map_err(|e| TrainError::Config(format!("env.ood_level: {e}")))?;
        if ood.env_name() != train_level.env_name() {
            return Err(bad(
                "env.ood_level",
                &self.env.ood_level,
                &format!("must be a {} level like env.level", train_level.env_name()),
            ));
        }
        let pos = |key: &str, v: usize| {
            if v == 0 {
                Err(bad(key, v, "must be >= 1"))
            } else {
                Ok(())
            }
        };
        pos("model.d_model", self.model.d_model)?;
        pos("model.layers", self.model.layers)?;
        pos("model.heads", self.model.heads)?;
        pos("model.context", self.model.context)?;
        if !self.model.d_model.is_multiple_of(self.model.heads) {
            return Err(bad(
                "model.heads",
                self.model.heads,
                "must divide model.d_model",
            ));
        }
        pos("rollout.tasks", self.rollout.tasks)?;
        pos("rollout.rollouts", self.rollout.rollouts)?;
        pos("optim.epochs", self.optim.epochs)?;
        pos("optim.minibatches", self.optim.minibatches)?;
        pos("run.eval_tasks", self.run.eval_tasks)?;
        pos("warmup.episodes", self.warmup.episodes)?;
        if self.run.steps == 0 && self.warmup.steps == 0 {
            return Err(bad("run.steps", 0, "must be >= 1 (or set warmup.steps)"));
        }
        if self.run.checkpoint_every == 0 {
            return Err(bad("run.checkpoint_every", 0, "must be >= 1"));
        }
        let finite_pos = |key: &str, v: f32| {
            if v.is_finite() && v > 0.0 {
                Ok(())
            } else {
                Err(bad(key, v, "must be finite and > 0"))
            }
        };
        let finite_nonneg = |key: &str, v: f32| {
            if v.is_finite() && v >= 0.0 {
                Ok(())
            } else {
                Err(bad(key, v, "must be finite and >= 0"))
            }
        };
        finite_pos("rollout.temperature", self.rollout.temperature)?;
        finite_nonneg("algo.lambda", self.algo.lambda)?;
        finite_nonneg("algo.delta", self.algo.delta)?;
        if !self.algo.aem {
            let non_default = [
                ("algo.aem_proxy", self.algo.aem_proxy != AemProxy::Mean),
                ("algo.aem_scope", self.algo.aem_scope != AemScope::Task),
                ("algo.aem_map", self.algo.aem_map != AemMap::Paper),
                ("algo.aem_only", self.algo.aem_only != AemOnly::All),
            ];
            if let Some((key, _)) = non_default.iter().find(|(_, set)| *set) {
                return Err(TrainError::Config(format!(
                    "{key} is an AEM variant and needs algo.aem = true"
                )));
            }
        }
        finite_nonneg("algo.clip_low", self.algo.clip_low)?;
        finite_nonneg("algo.clip_high", self.algo.clip_high)?;
        if !self.algo.entropy_coef.is_finite() {
            return Err(bad(
                "algo.entropy_coef",
                self.algo.entropy_coef,
                "must be finite",
            ));
        }
        if let Some(c) = self.algo.dual_clip {
            if !(c.is_finite() && c > 1.0) {
                return Err(bad("algo.dual_clip", c, "must be > 1"));
            }
        }
        if let Some(c) = self.algo.norm_const {
            if !(c.is_finite() && c > 0.0) {
                return Err(bad("algo.norm_const", c, "must be finite and > 0"));
            }
        }
        if !(self.algo.gigpo_gamma.is_finite() && (0.0..=1.0).contains(&self.algo.gigpo_gamma)) {
            return Err(bad(
                "algo.gigpo_gamma",
                self.algo.gigpo_gamma,
                "must be in [0, 1]",
            ));
        }
        if !self.algo.gigpo_omega.is_finite() {
            return Err(bad(
                "algo.gigpo_omega",
                self.algo.gigpo_omega,
                "must be finite",
            ));
        }
        self.check_sizes(&train_level)?;
        finite_pos("optim.lr", self.optim.lr)?;
        finite_pos("warmup.lr", self.warmup.lr)?;
        finite_pos("optim.eps", self.optim.eps)?;
        finite_nonneg("optim.weight_decay", self.optim.weight_decay)?;
        for (key, b) in [
            ("optim.beta1", self.optim.beta1),
            ("optim.beta2", self.optim.beta2),
        ] {
            if !(0.0..1.0).contains(&b) {
                return Err(bad(key, b, "must be in [0, 1)"));
            }
        }
        if let Some(c) = self.optim.grad_clip {
            finite_pos("optim.grad_clip", c)?;
        }
        if !(self.optim.min_lr_ratio.is_finite() && (0.0..=1.0).contains(&self.optim.min_lr_ratio))
        {
            return Err(bad(
                "optim.min_lr_ratio",
                self.optim.min_lr_ratio,
                "must be in [0, 1]",
            ));
        }
        Ok(())
    }

    /// Every size a run allocates from, checked before anything is allocated or written: counts
    /// against their limits, the model and one update's activations against the memory budget,
    /// and the prompt plus response against `model.context` (by simulating random valid episodes
    /// of the level: a longer prompt that no simulated episode reached is still caught when it
    /// occurs, and the run directory can then be started again).
    fn check_sizes(&self, level: &crate::env::Level) -> Result<(), TrainError> {
        let max = |key: &str, v: usize, limit: usize| {
            if v > limit {
                Err(bad(key, v, &format!("at most {limit}")))
            } else {
                Ok(())
            }
        };
        let rollouts = self.rollout.tasks.saturating_mul(self.rollout.rollouts);
        if rollouts > MAX_ROLLOUTS {
            return Err(bad(
                "rollout.tasks",
                self.rollout.tasks,
                &format!(
                    "rollout.tasks × rollout.rollouts = {rollouts}: at most {MAX_ROLLOUTS} rollouts per iteration"
                ),
            ));
        }
        max("warmup.episodes", self.warmup.episodes, MAX_ROLLOUTS)?;
        max(
            "run.eval_tasks",
            self.run.eval_tasks,
            crate::env::MAX_TEST_TASKS,
        )?;
        let gpt = crate::model::GptConfig {
            vocab: level.vocab().len(),
            context: self.model.context,
            d_model: self.model.d_model,
            layers: self.model.layers,
            heads: self.model.heads,
        };
        gpt.validate()
            .map_err(|e| TrainError::Config(format!("model: {e}")))?;
        let task = crate::env::train_task(level, 0)?;
        let prompt_cfg = crate::env::PromptConfig {
            history: self.env.history,
            mask: self.env.mask,
        };
        let probe = crate::env::Episode::new(&task, prompt_cfg);
        let turns = probe.max_turns();
        let max_new = probe.grammar().max_response_len();
        let sequences = rollouts.max(self.warmup.episodes).saturating_mul(turns);
        gpt.check_activations(
            || {
                format!(
                    "one update over {sequences} sequences (rollout.tasks × rollout.rollouts × {turns} turns) of model.context = {}",
                    self.model.context
                )
            },
            sequences.saturating_mul(self.model.context),
            self.model.context,
        )
        .map_err(|e| TrainError::Config(format!("model: {e}")))?;
        use rand::SeedableRng;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
        for i in 0..CONTEXT_PROBE_EPISODES {
            let task = crate::env::train_task(level, i)?;
            let mut ep = crate::env::Episode::new(&task, prompt_cfg);
            while !ep.done() {
                let p = ep.prompt().len();
                if p + max_new > self.model.context {
                    return Err(bad(
                        "model.context",
                        self.model.context,
                        &format!(
                            "a prompt of {p} tokens (env.history = {}) plus a response of up to {max_new} does not fit; raise model.context or lower env.history",
                            self.env.history
                        ),
                    ));
                }
                let resp = ep.sample_uniform(&mut rng);
                ep.step(&resp);
            }
        }
        Ok(())
    }

    /// The learning rate of RL step `k` (0-based, counted after the imitation warm-up).
    pub fn lr_at(&self, k: u64) -> f32 {
        let o = &self.optim;
        let base = o.lr;
        if k < o.lr_warmup_steps {
            return base * (k + 1) as f32 / o.lr_warmup_steps as f32;
        }
        let span = self.run.steps.saturating_sub(o.lr_warmup_steps).max(1);
        let frac = ((k - o.lr_warmup_steps) as f32 / span as f32).clamp(0.0, 1.0);
        let min = base * o.min_lr_ratio;
        match o.schedule {
            Schedule::Constant => base,
            Schedule::Linear => base + (min - base) * frac,
            Schedule::Cosine => {
                min + (base - min) * 0.5 * (1.0 + (std::f32::consts::PI * frac).cos())
            }
        }
    }
}

/// The most rollouts (tasks × rollouts per task) of one iteration.
pub const MAX_ROLLOUTS: usize = 1 << 20;

/// Random valid episodes simulated by validation to check that prompts fit the context.
const CONTEXT_PROBE_EPISODES: u64 = 32;

/// Keys whose default is `None` (absent from the serialised table) but may be set.
const OPTIONAL_KEYS: [&str; 3] = ["algo.dual_clip", "algo.norm_const", "optim.grad_clip"];

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A TOML error as one line: `line L, column C: message`, or `line L, column C: key: message`
/// when the error is at a key's value (serde's message for a bad value, e.g. an unknown enum
/// variant with the accepted ones, does not name the key).
fn toml_error_line(text: &str, e: &toml::de::Error) -> String {
    let msg = one_line(e.message());
    match e.span() {
        Some(span) => {
            let before = text.get(..span.start).unwrap_or(text);
            let line = before.matches('\n').count() + 1;
            let col = before
                .rfind('\n')
                .map_or(before.len(), |i| before.len() - i - 1)
                + 1;
            match key_at(text, span.start) {
                Some(key) => format!("line {line}, column {col}: {key}: {msg}"),
                None => format!("line {line}, column {col}: {msg}"),
            }
        }
        None => msg,
    }
}

/// The dotted key (`algo.advantage`) whose value, other than a table, spans byte `at` of the
/// TOML `text`; `None` for text that does not parse or a position at no such value.
fn key_at(text: &str, at: usize) -> Option<String> {
    use toml::de::{DeTable, DeValue};
    fn walk(table: &DeTable<'_>, at: usize, path: &mut Vec<String>) -> bool {
        for (key, value) in table {
            path.push(key.get_ref().to_string());
            let found = match value.get_ref() {
                DeValue::Table(sub) => walk(sub, at, path),
                _ => value.span().contains(&at),
            };
            if found {
                return true;
            }
            path.pop();
        }
        false
    }
    let doc = DeTable::parse(text).ok()?;
    let mut path = Vec::new();
    walk(doc.get_ref(), at, &mut path).then(|| path.join("."))
}
