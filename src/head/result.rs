//! What one loss-head computation returns to the host, whichever executor ran it.

use super::{check_outputs, HeadConfig, HeadInputs, Outputs};
use crate::error::Result;
use half::{bf16, f16};

/// The dtype of the gradient output (`aem head --grad-dtype`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum GradDtype {
    F16,
    Bf16,
    #[default]
    F32,
}

impl GradDtype {
    /// Every dtype, once (the parity tests iterate it).
    pub const ALL: [GradDtype; 3] = [GradDtype::F16, GradDtype::Bf16, GradDtype::F32];

    /// The name used in kernel names and messages (`f16`, `bf16`, `f32`).
    pub fn name(self) -> &'static str {
        match self {
            GradDtype::F16 => "f16",
            GradDtype::Bf16 => "bf16",
            GradDtype::F32 => "f32",
        }
    }

    /// Bytes per element.
    pub fn bytes(self) -> u64 {
        match self {
            GradDtype::F16 | GradDtype::Bf16 => 2,
            GradDtype::F32 => 4,
        }
    }
}

impl From<super::LogitDtype> for GradDtype {
    /// The logits' own dtype as a gradient dtype (what an in-place update writes).
    fn from(d: super::LogitDtype) -> Self {
        match d {
            super::LogitDtype::F16 => GradDtype::F16,
            super::LogitDtype::Bf16 => GradDtype::Bf16,
        }
    }
}

/// The per-row outputs and the loss: what every plan computes, and all that the policy-update
/// plan ([`super::launch::DeviceHead::update`]) computes besides the gradient.
#[derive(Debug, Clone, PartialEq)]
pub struct UpdateStats {
    /// logp, entropy, lse, token_loss: (T) f32
    pub logp: Vec<f32>,
    pub entropy: Vec<f32>,
    pub lse: Vec<f32>,
    pub token_loss: Vec<f32>,
    /// The scalar loss.
    pub loss: f32,
    /// Non-finite dlogits entries written (count mod 2^32, first row), if any.
    pub grad_bad: Option<(u64, usize)>,
    /// The gradient's dtype.
    pub grad_dtype: GradDtype,
}

impl UpdateStats {
    /// The finiteness check of AEM.md §7 ([`check_outputs`]) with the responses' `alpha` and
    /// rescaled `adv` (R) f32 — for the update plan, `&[]` and the given `inp.adv_base`.
    pub fn check_with(
        &self,
        alpha: &[f32],
        adv: &[f32],
        inp: &HeadInputs,
        cfg: &HeadConfig,
    ) -> Result<()> {
        let o = Outputs {
            logp: &self.logp,
            entropy: &self.entropy,
            lse: &self.lse,
            token_loss: &self.token_loss,
            alpha,
            adv,
            loss: self.loss,
            grad_bad: self.grad_bad,
            grad_dtype: self.grad_dtype,
        };
        check_outputs(&o, inp, cfg)
    }

    /// [`Self::check_with`] for the update plan (the advantage is the given `inp.adv_base`).
    pub fn check(&self, inp: &HeadInputs, cfg: &HeadConfig) -> Result<()> {
        self.check_with(&[], inp.adv_base, inp, cfg)
    }
}

/// Everything the full head computes but the gradient: the per-row outputs and the loss
/// ([`UpdateStats`], also reachable as fields through `Deref`) and the per-response ones.
#[derive(Debug, Clone, PartialEq)]
pub struct HeadStats {
    pub rows: UpdateStats,
    /// resp_surprisal, resp_mean_entropy, alpha, adv: (R) f32
    pub resp_surprisal: Vec<f32>,
    pub resp_mean_entropy: Vec<f32>,
    pub alpha: Vec<f32>,
    pub adv: Vec<f32>,
}

impl std::ops::Deref for HeadStats {
    type Target = UpdateStats;
    fn deref(&self) -> &UpdateStats {
        &self.rows
    }
}

impl HeadStats {
    /// The finiteness check of AEM.md §7 over every output ([`check_outputs`]).
    pub fn check(&self, inp: &HeadInputs, cfg: &HeadConfig) -> Result<()> {
        self.rows.check_with(&self.alpha, &self.adv, inp, cfg)
    }
}

/// The head's results in the file's dtypes: the statistics (fields reachable through `Deref`)
/// and the gradient.
#[derive(Debug, Clone, PartialEq)]
pub struct HeadResult {
    pub stats: HeadStats,
    /// dlogits: (T, V) in the requested dtype.
    pub dlogits: GradOut,
}

impl std::ops::Deref for HeadResult {
    type Target = HeadStats;
    fn deref(&self) -> &HeadStats {
        &self.stats
    }
}

/// The gradient in its output dtype.
#[derive(Debug, Clone, PartialEq)]
pub enum GradOut {
    F16(Vec<f16>),
    Bf16(Vec<bf16>),
    F32(Vec<f32>),
}

impl GradOut {
    /// The gradient widened to f32 (exact), for comparisons.
    pub fn to_f32(&self) -> Vec<f32> {
        match self {
            GradOut::F16(g) => g.iter().map(|x| x.to_f32()).collect(),
            GradOut::Bf16(g) => g.iter().map(|x| x.to_f32()).collect(),
            GradOut::F32(g) => g.clone(),
        }
    }
    pub fn dtype(&self) -> GradDtype {
        match self {
            GradOut::F16(_) => GradDtype::F16,
            GradOut::Bf16(_) => GradDtype::Bf16,
            GradOut::F32(_) => GradDtype::F32,
        }
    }
}
