//! AdamW with f32 master weights, bias correction, decoupled weight decay and global-norm clipping.

use rayon::prelude::*;

use super::params::ParamId;
use super::{Elem, Gpt, ModelError, Result};

/// AdamW hyperparameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWConfig {
    /// Learning rate.
    pub lr: f32,
    /// First-moment decay.
    pub beta1: f32,
    /// Second-moment decay.
    pub beta2: f32,
    /// Denominator epsilon.
    pub eps: f32,
    /// Decoupled weight decay, applied to matrices and embeddings only ([`ParamId::decays`]).
    pub weight_decay: f32,
    /// Clip gradients to this global L2 norm; `None` disables clipping.
    pub grad_clip: Option<f32>,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            weight_decay: 0.1,
            grad_clip: Some(1.0),
        }
    }
}

impl AdamWConfig {
    /// Checks every field is in its domain.
    pub fn validate(&self) -> Result<()> {
        let bad = |what: &'static str, value: f32| Err(ModelError::Invalid { what, value });
        if !(self.lr.is_finite() && self.lr >= 0.0) {
            return bad("lr", self.lr);
        }
        if !(0.0..1.0).contains(&self.beta1) {
            return bad("beta1", self.beta1);
        }
        if !(0.0..1.0).contains(&self.beta2) {
            return bad("beta2", self.beta2);
        }
        if !(self.eps.is_finite() && self.eps > 0.0) {
            return bad("eps", self.eps);
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return bad("weight_decay", self.weight_decay);
        }
        if let Some(c) = self.grad_clip {
            if !(c.is_finite() && c > 0.0) {
                return bad("grad_clip", c);
            }
        }
        Ok(())
    }
}

impl AdamWConfig {
    /// The weight decay of tensor `id`: `weight_decay` where [`ParamId::decays`], else 0.
    pub(crate) fn decay(&self, id: ParamId) -> f32 {
        if id.decays() {
            self.weight_decay
        } else {
            0.0
        }
    }
}

/// The scalars of one AdamW update, shared by the CPU step and the device kernel.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct StepConsts {
    /// Learning rate.
    pub lr: f32,
    /// First-moment decay β1.
    pub b1: f32,
    /// Second-moment decay β2.
    pub b2: f32,
    /// Denominator epsilon.
    pub eps: f32,
    /// Gradient scale of the global-norm clip (1 when not clipping).
    pub scale: f32,
    /// Bias correction of the first moment, `1 − β1ᵗ`.
    pub c1: f32,
    /// Bias correction of the second moment, `1 − β2ᵗ`.
    pub c2: f32,
}

/// Begins a step: advances the step count `t` and returns the step's scalars for the global
/// gradient norm `norm` (before clipping).
pub(crate) fn begin_step(cfg: &AdamWConfig, t: &mut u64, norm: f32) -> StepConsts {
    let scale = match cfg.grad_clip {
        Some(c) if norm > c => c / (norm + 1e-6),
        _ => 1.0,
    };
    *t += 1;
    // Past 2^31 steps β^t has long underflowed to 0; saturating keeps it there.
    let e = i32::try_from(*t).unwrap_or(i32::MAX);
    StepConsts {
        lr: cfg.lr,
        b1: cfg.beta1,
        b2: cfg.beta2,
        eps: cfg.eps,
        scale,
        c1: 1.0 - cfg.beta1.powi(e),
        c2: 1.0 - cfg.beta2.powi(e),
    }
}

/// AdamW state for one model.
#[derive(Debug, Clone, PartialEq)]
pub struct AdamW {
    /// Hyperparameters.
    pub cfg: AdamWConfig,
    /// Steps taken (the bias-correction exponent).
    pub t: u64,
    /// (P) f32: master weights.
    pub master: Vec<f32>,
    /// (P) f32: first moment.
    pub m: Vec<f32>,
    /// (P) f32: second moment.
    pub v: Vec<f32>,
}

impl AdamW {
    /// Fresh state whose master weights are the model's parameters widened to f32.
    pub fn new<E: Elem>(cfg: AdamWConfig, model: &Gpt<E>) -> Result<Self> {
        cfg.validate()?;
        let p = model.num_params();
        let mut master = vec![0.0; p];
        E::widen(model.params(), &mut master);
        Ok(Self {
            cfg,
            t: 0,
            master,
            m: vec![0.0; p],
            v: vec![0.0; p],
        })
    }

    /// Checks that the state holds `p` parameters (master weights and both moments).
    pub(crate) fn check_len(&self, p: usize) -> Result<()> {
        for got in [self.master.len(), self.m.len(), self.v.len()] {
            if got != p {
                return Err(ModelError::OptimMismatch { expected: p, got });
            }
        }
        Ok(())
    }

    /// One update from the model's accumulated gradients; writes the rounded master weights back
    /// into the model. Returns the global gradient norm before clipping.
    pub fn step<E: Elem>(&mut self, model: &mut Gpt<E>) -> Result<f32> {
        self.check_len(model.num_params())?;
        self.cfg.validate()?;
        let norm = model
            .grads()
            .iter()
            .map(|&g| f64::from(g) * f64::from(g))
            .sum::<f64>()
            .sqrt() as f32;
        let k = begin_step(&self.cfg, &mut self.t, norm);
        let layout = model.layout().clone();
        let grads = model.grads().to_vec();
        let params = model.params_mut();
        for id in ParamId::ALL {
            let r = layout.range(id);
            let wd = self.cfg.decay(id);
            params[r.clone()]
                .par_chunks_mut(1024)
                .zip(self.master[r.clone()].par_chunks_mut(1024))
                .zip(
                    self.m[r.clone()]
                        .par_chunks_mut(1024)
                        .zip(self.v[r.clone()].par_chunks_mut(1024)),
                )
                .zip(grads[r].par_chunks(1024))
                .for_each(|(((pc, wc), (mc, vc)), gc)| {
                    for ((((p, w), m), v), &g) in pc.iter_mut().zip(wc).zip(mc).zip(vc).zip(gc) {
                        let g = g * k.scale;
                        *m = k.b1 * *m + (1.0 - k.b1) * g;
                        *v = k.b2 * *v + (1.0 - k.b2) * g * g;
                        let (mh, vh) = (*m / k.c1, *v / k.c2);
                        *w -= k.lr * (mh / (vh.sqrt() + k.eps) + wd * *w);
                        *p = E::from_f32(*w);
                    }
                });
        }
        Ok(norm)
    }
}
