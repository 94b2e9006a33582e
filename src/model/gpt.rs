//! The model on the CPU: parameters, gradients and saved activations; forward and backward run
//! the op sequence of [`super::seq`] with the CPU executor (`host::CpuExec`).

use half::f16;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::acts::{Acts, GradActs};
use super::cpu::Profile;
use super::host::{self, CpuExec, Host};
use super::params::{ParamId, ParamLayout};
use super::seq;
use super::{Elem, GptConfig, ModelError, Result};

/// The activations a forward saves and the backward's scratch, on the host.
type Saved<E> = (Acts<Host<E>>, GradActs<Host<E>>);

/// A GPT-2 model with storage type `E` (`f16` by default; `f32` is the exact mode for tests).
#[derive(Debug, Clone)]
pub struct Gpt<E: Elem = f16> {
    cfg: GptConfig,
    layout: ParamLayout,
    /// (P) E: all parameters, laid out by `layout`.
    params: Vec<E>,
    /// (P) f32: parameter gradients, accumulated by `backward`, cleared by `zero_grad`.
    grads: Vec<f32>,
    /// Saved activations of the last forward and the backward's scratch, sized for its (B, T).
    acts: Option<Saved<E>>,
    /// Wall time per op, accumulated over calls (reset with `profile_mut`).
    profile: Profile,
}

/// A standard normal sample (Box–Muller).
fn normal(rng: &mut ChaCha8Rng) -> f32 {
    let u1: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
    let u2: f64 = rng.random::<f64>();
    ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
}

impl<E: Elem> Gpt<E> {
    /// GPT-2 init: weights normal(0, 0.02), residual projections normal(0, 0.02/sqrt(2L)), biases 0,
    /// layernorm weights 1. Deterministic in `seed`.
    pub fn new(cfg: GptConfig, seed: u64) -> Result<Self> {
        cfg.validate()?;
        let layout = ParamLayout::new(&cfg);
        let mut params = vec![E::default(); layout.total()];
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let proj_std = 0.02 / (2.0 * cfg.layers as f32).sqrt();
        for id in ParamId::ALL {
            let r = layout.range(id);
            let init: &mut dyn FnMut(&mut ChaCha8Rng) -> f32 = match id {
                ParamId::Ln1W | ParamId::Ln2W | ParamId::LnfW => &mut |_| 1.0,
                ParamId::Ln1B
                | ParamId::Ln2B
                | ParamId::LnfB
                | ParamId::QkvB
                | ParamId::AttProjB
                | ParamId::FcB
                | ParamId::FcProjB => &mut |_| 0.0,
                _ if id.residual_proj() => &mut |r| proj_std * normal(r),
                _ => &mut |r| 0.02 * normal(r),
            };
            for p in &mut params[r] {
                *p = E::from_f32(init(&mut rng));
            }
        }
        Self::from_params(cfg, params)
    }

    /// A model holding `params` (P) laid out by [`ParamLayout`] (a checkpoint's, a device's).
    pub fn from_params(cfg: GptConfig, params: Vec<E>) -> Result<Self> {
        cfg.validate()?;
        let layout = ParamLayout::new(&cfg);
        if params.len() != layout.total() {
            return Err(ModelError::Shape {
                op: "from_params",
                expected: layout.total(),
                got: params.len(),
            });
        }
        let grads = vec![0.0; layout.total()];
        Ok(Self {
            cfg,
            layout,
            params,
            grads,
            acts: None,
            profile: Profile::default(),
        })
    }

    /// The config.
    pub fn config(&self) -> &GptConfig {
        &self.cfg
    }

    /// The parameter layout.
    pub fn layout(&self) -> &ParamLayout {
        &self.layout
    }

    /// Number of parameters.
    pub fn num_params(&self) -> usize {
        self.layout.total()
    }

    /// (P) E: all parameters.
    pub fn params(&self) -> &[E] {
        &self.params
    }

    /// (P) E: all parameters, mutable (optimizer, checkpoint loading, tests).
    pub fn params_mut(&mut self) -> &mut [E] {
        &mut self.params
    }

    /// (P) f32: accumulated gradients.
    pub fn grads(&self) -> &[f32] {
        &self.grads
    }

    /// (P) f32: accumulated gradients, mutable (clipping).
    pub fn grads_mut(&mut self) -> &mut [f32] {
        &mut self.grads
    }

    /// Op timings accumulated so far.
    pub fn profile(&self) -> &Profile {
        &self.profile
    }

    /// Op timings, mutable (to reset: `*m.profile_mut() = Profile::default()`).
    pub fn profile_mut(&mut self) -> &mut Profile {
        &mut self.profile
    }

    /// Sets all gradients to zero.
    pub fn zero_grad(&mut self) {
        self.grads.iter_mut().for_each(|g| *g = 0.0);
    }

    /// Checks (B, T) and tokens against the config; returns B·T.
    pub(crate) fn check_tokens(
        &self,
        op: &'static str,
        tokens: &[u32],
        b: usize,
        t: usize,
    ) -> Result<usize> {
        super::config::check_tokens(&self.cfg, op, tokens, b, t)
    }

    /// Forward pass over tokens (B, T); saves activations; returns logits (B, T, V) f32.
    pub fn forward(&mut self, tokens: &[u32], b: usize, t: usize) -> Result<&[f32]> {
        self.check_tokens("forward", tokens, b, t)?;
        if !self
            .acts
            .as_ref()
            .is_some_and(|(a, _)| a.b == b && a.t == t)
        {
            self.acts = Some((
                Acts::new(&(), &self.cfg, b, t)?,
                GradActs::new(&(), &self.cfg, b, t)?,
            ));
        }
        let Some((a, _)) = self.acts.as_mut() else {
            return Err(ModelError::NoForward);
        };
        let mut x = CpuExec {
            params: &self.params,
            layout: &self.layout,
            grads: None,
            profile: Some(&mut self.profile),
        };
        seq::forward(&mut x, &self.cfg, a, tokens)?;
        Ok(a.logits.buf())
    }

    /// Backward pass from dlogits (B, T, V) f32 of the last forward; accumulates into the gradients.
    pub fn backward(&mut self, dlogits: &[f32]) -> Result<()> {
        let (a, g) = self.acts.as_mut().ok_or(ModelError::NoForward)?;
        host::copy("backward", g.dlogits.buf_mut(), dlogits)?;
        let mut x = CpuExec {
            params: &self.params,
            layout: &self.layout,
            grads: Some(&mut self.grads),
            profile: Some(&mut self.profile),
        };
        seq::backward(&mut x, &self.cfg, a, g)
    }
}

/// Mean cross-entropy of logits (N, V) f32 against targets (N); returns (loss, dlogits (N, V) f32)
/// with dlogits = (softmax − onehot) / N. A helper for tests and plain LM training.
pub fn cross_entropy(logits: &[f32], targets: &[u32], v: usize) -> Result<(f32, Vec<f32>)> {
    let n = targets.len();
    if n == 0 || v == 0 {
        return Err(ModelError::ZeroDim {
            field: "cross_entropy rows",
        });
    }
    let need = n.checked_mul(v).ok_or(ModelError::Overflow {
        what: "cross_entropy",
    })?;
    if logits.len() != need {
        return Err(ModelError::Shape {
            op: "cross_entropy",
            expected: need,
            got: logits.len(),
        });
    }
    let mut dlogits = vec![0.0f32; need];
    let mut total = 0.0f64;
    let inv_n = 1.0 / n as f32;
    for ((row, d), &tgt) in logits
        .chunks_exact(v)
        .zip(dlogits.chunks_exact_mut(v))
        .zip(targets)
    {
        let tgt = usize::try_from(tgt)
            .ok()
            .filter(|&x| x < v)
            .ok_or(ModelError::Token {
                token: tgt,
                vocab: v,
            })?;
        let max = row.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
        let sum: f32 = row.iter().map(|&x| (x - max).exp()).sum();
        let lse = max + sum.ln();
        total += f64::from(lse - row[tgt]);
        for (d, &x) in d.iter_mut().zip(row) {
            *d = (x - lse).exp() * inv_n;
        }
        d[tgt] -= inv_n;
    }
    Ok(((total / n as f64) as f32, dlogits))
}
