//! The model: parameters, gradients, saved activations, and the forward/backward op sequence.

use std::time::Instant;

use half::f16;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::acts::{Acts, GradActs};
use super::cpu::{self, AttnShape, Op, Pass, Profile};
use super::params::{ParamId, ParamLayout};
use super::{Elem, GptConfig, ModelError, Result};

/// A GPT-2 model with storage type `E` (`f16` by default; `f32` is the exact mode for tests).
#[derive(Debug, Clone)]
pub struct Gpt<E: Elem = f16> {
    cfg: GptConfig,
    layout: ParamLayout,
    /// (P) E: all parameters, laid out by `layout`.
    params: Vec<E>,
    /// (P) f32: parameter gradients, accumulated by `backward`, cleared by `zero_grad`.
    grads: Vec<f32>,
    /// Saved activations of the last forward (sized for its (B, T)).
    acts: Option<Acts<E>>,
    /// Activation-gradient scratch of the backward pass.
    gacts: GradActs,
    /// Wall time per op, accumulated over calls (reset with `profile_mut`).
    profile: Profile,
}

/// A standard normal sample (Box–Muller).
fn normal(rng: &mut ChaCha8Rng) -> f32 {
    let u1: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
    let u2: f64 = rng.random::<f64>();
    ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
}

/// Splits two disjoint ranges of `buf` into two mutable slices (`a` must end before `b` starts).
fn two_mut(
    buf: &mut [f32],
    a: std::ops::Range<usize>,
    b: std::ops::Range<usize>,
) -> Result<(&mut [f32], &mut [f32])> {
    if a.end > b.start || b.end > buf.len() {
        return Err(ModelError::Shape {
            op: "two_mut",
            expected: b.end,
            got: buf.len(),
        });
    }
    let (lo, hi) = buf.split_at_mut(b.start);
    Ok((&mut lo[a], &mut hi[..b.end - b.start]))
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
        let grads = vec![0.0; layout.total()];
        Ok(Self {
            cfg,
            layout,
            params,
            grads,
            acts: None,
            gacts: GradActs::default(),
            profile: Profile::default(),
        })
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
            gacts: GradActs::default(),
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
        check_tokens(&self.cfg, op, tokens, b, t)
    }

    /// Forward pass over tokens (B, T); saves activations; returns logits (B, T, V) f32.
    pub fn forward(&mut self, tokens: &[u32], b: usize, t: usize) -> Result<&[f32]> {
        let bt = self.check_tokens("forward", tokens, b, t)?;
        let GptConfig {
            vocab: v,
            d_model: c,
            layers: nl,
            heads: nh,
            ..
        } = self.cfg;
        if !self.acts.as_ref().is_some_and(|a| a.b == b && a.t == t) {
            self.acts = Some(Acts::new(&self.cfg, b, t));
            self.gacts = GradActs::new(&self.cfg, b, t);
        }
        let Some(a) = self.acts.as_mut() else {
            return Err(ModelError::NoForward);
        };
        let (params, lay, prof) = (&self.params, &self.layout, &mut self.profile);
        let p = |id: ParamId, l: usize| &params[lay.layer_range(id, l)];
        let shape = AttnShape { t, c, nh };
        a.tokens.copy_from_slice(tokens);

        let t0 = Instant::now();
        cpu::encoder_forward(
            &mut a.encoded,
            tokens,
            p(ParamId::Wte, 0),
            p(ParamId::Wpe, 0),
            t,
            0,
            c,
        );
        prof.add(Op::Encoder, Pass::Forward, t0);

        let n = bt * c; // elements of one (B, T, C) slice
        for l in 0..nl {
            let (res_prev, res3) = a.residual3.split_at_mut(l * n);
            let residual: &[E] = if l == 0 {
                &a.encoded
            } else {
                &res_prev[(l - 1) * n..]
            };
            let residual = &residual[..n];
            let res3 = &mut res3[..n];
            let ln1 = &mut a.ln1[l * n..][..n];
            let qkv = &mut a.qkv[l * 3 * n..][..3 * n];
            let atty = &mut a.atty[l * n..][..n];
            let att = &mut a.att[l * b * nh * t * t..][..b * nh * t * t];
            let res2 = &mut a.residual2[l * n..][..n];
            let ln2 = &mut a.ln2[l * n..][..n];
            let fch = &mut a.fch[l * 4 * n..][..4 * n];
            let fch_gelu = &mut a.fch_gelu[l * 4 * n..][..4 * n];
            let stats = l * bt..(l + 1) * bt;

            let t0 = Instant::now();
            cpu::layernorm_forward(
                ln1,
                &mut a.ln1_mean[stats.clone()],
                &mut a.ln1_rstd[stats.clone()],
                residual,
                p(ParamId::Ln1W, l),
                p(ParamId::Ln1B, l),
                c,
            );
            prof.add(Op::LayerNorm, Pass::Forward, t0);
            let t0 = Instant::now();
            cpu::matmul_forward(
                qkv,
                ln1,
                p(ParamId::QkvW, l),
                Some(p(ParamId::QkvB, l)),
                (bt, c, 3 * c),
            )?;
            prof.add(Op::Matmul, Pass::Forward, t0);
            let t0 = Instant::now();
            cpu::attention_forward(atty, att, qkv, shape)?;
            prof.add(Op::Attention, Pass::Forward, t0);
            let t0 = Instant::now();
            cpu::matmul_forward(
                &mut a.proj,
                atty,
                p(ParamId::AttProjW, l),
                Some(p(ParamId::AttProjB, l)),
                (bt, c, c),
            )?;
            prof.add(Op::Matmul, Pass::Forward, t0);
            let t0 = Instant::now();
            cpu::residual_forward(res2, residual, &a.proj);
            prof.add(Op::Residual, Pass::Forward, t0);
            let t0 = Instant::now();
            cpu::layernorm_forward(
                ln2,
                &mut a.ln2_mean[stats.clone()],
                &mut a.ln2_rstd[stats],
                res2,
                p(ParamId::Ln2W, l),
                p(ParamId::Ln2B, l),
                c,
            );
            prof.add(Op::LayerNorm, Pass::Forward, t0);
            let t0 = Instant::now();
            cpu::matmul_forward(
                fch,
                ln2,
                p(ParamId::FcW, l),
                Some(p(ParamId::FcB, l)),
                (bt, c, 4 * c),
            )?;
            prof.add(Op::Matmul, Pass::Forward, t0);
            let t0 = Instant::now();
            cpu::gelu_forward(fch_gelu, fch);
            prof.add(Op::Gelu, Pass::Forward, t0);
            let t0 = Instant::now();
            cpu::matmul_forward(
                &mut a.proj,
                fch_gelu,
                p(ParamId::FcProjW, l),
                Some(p(ParamId::FcProjB, l)),
                (bt, 4 * c, c),
            )?;
            prof.add(Op::Matmul, Pass::Forward, t0);
            let t0 = Instant::now();
            cpu::residual_forward(res3, res2, &a.proj);
            prof.add(Op::Residual, Pass::Forward, t0);
        }

        let t0 = Instant::now();
        let last = &a.residual3[(nl - 1) * n..][..n];
        cpu::layernorm_forward(
            &mut a.lnf,
            &mut a.lnf_mean,
            &mut a.lnf_rstd,
            last,
            p(ParamId::LnfW, 0),
            p(ParamId::LnfB, 0),
            c,
        );
        prof.add(Op::LayerNorm, Pass::Forward, t0);
        let t0 = Instant::now();
        cpu::logits_forward(&mut a.logits, &a.lnf, p(ParamId::Wte, 0), (bt, c, v))?;
        prof.add(Op::Logits, Pass::Forward, t0);
        Ok(&a.logits)
    }

    /// Backward pass from dlogits (B, T, V) f32 of the last forward; accumulates into the gradients.
    pub fn backward(&mut self, dlogits: &[f32]) -> Result<()> {
        let a = self.acts.as_ref().ok_or(ModelError::NoForward)?;
        let GptConfig {
            vocab: v,
            d_model: c,
            layers: nl,
            heads: nh,
            ..
        } = self.cfg;
        let (b, t) = (a.b, a.t);
        let bt = b * t;
        if dlogits.len() != bt * v {
            return Err(ModelError::Shape {
                op: "backward",
                expected: bt * v,
                got: dlogits.len(),
            });
        }
        let (params, lay, grads, g, prof) = (
            &self.params,
            &self.layout,
            &mut self.grads,
            &mut self.gacts,
            &mut self.profile,
        );
        let p = |id: ParamId, l: usize| &params[lay.layer_range(id, l)];
        let shape = AttnShape { t, c, nh };
        let n = bt * c;

        let t0 = Instant::now();
        cpu::logits_backward(
            &mut g.dln,
            &mut grads[lay.range(ParamId::Wte)],
            dlogits,
            &a.lnf,
            p(ParamId::Wte, 0),
            (bt, c, v),
        )?;
        prof.add(Op::Logits, Pass::Backward, t0);
        let t0 = Instant::now();
        g.dresidual.iter_mut().for_each(|x| *x = 0.0);
        let (dw, db) = two_mut(grads, lay.range(ParamId::LnfW), lay.range(ParamId::LnfB))?;
        let last = &a.residual3[(nl - 1) * n..][..n];
        cpu::layernorm_backward(
            &mut g.dresidual,
            dw,
            db,
            &g.dln,
            last,
            p(ParamId::LnfW, 0),
            &a.lnf_mean,
            &a.lnf_rstd,
            c,
        );
        prof.add(Op::LayerNorm, Pass::Backward, t0);

        for l in (0..nl).rev() {
            let residual: &[E] = if l == 0 {
                &a.encoded
            } else {
                &a.residual3[(l - 1) * n..][..n]
            };
            let ln1 = &a.ln1[l * n..][..n];
            let qkv = &a.qkv[l * 3 * n..][..3 * n];
            let atty = &a.atty[l * n..][..n];
            let att = &a.att[l * b * nh * t * t..][..b * nh * t * t];
            let res2 = &a.residual2[l * n..][..n];
            let ln2 = &a.ln2[l * n..][..n];
            let fch = &a.fch[l * 4 * n..][..4 * n];
            let fch_gelu = &a.fch_gelu[l * 4 * n..][..4 * n];
            let stats = l * bt..(l + 1) * bt;

            // dresidual holds d residual3[l]; the residual add passes it to both branches.
            let t0 = Instant::now();
            let (dw, db) = two_mut(
                grads,
                lay.layer_range(ParamId::FcProjW, l),
                lay.layer_range(ParamId::FcProjB, l),
            )?;
            cpu::matmul_backward(
                &mut g.dfch_gelu,
                dw,
                Some(db),
                &g.dresidual,
                fch_gelu,
                p(ParamId::FcProjW, l),
                (bt, 4 * c, c),
            )?;
            prof.add(Op::Matmul, Pass::Backward, t0);
            let t0 = Instant::now();
            cpu::gelu_backward(&mut g.dfch, fch, &g.dfch_gelu);
            prof.add(Op::Gelu, Pass::Backward, t0);
            let t0 = Instant::now();
            let (dw, db) = two_mut(
                grads,
                lay.layer_range(ParamId::FcW, l),
                lay.layer_range(ParamId::FcB, l),
            )?;
            cpu::matmul_backward(
                &mut g.dln,
                dw,
                Some(db),
                &g.dfch,
                ln2,
                p(ParamId::FcW, l),
                (bt, c, 4 * c),
            )?;
            prof.add(Op::Matmul, Pass::Backward, t0);
            let t0 = Instant::now();
            let (dw, db) = two_mut(
                grads,
                lay.layer_range(ParamId::Ln2W, l),
                lay.layer_range(ParamId::Ln2B, l),
            )?;
            cpu::layernorm_backward(
                &mut g.dresidual,
                dw,
                db,
                &g.dln,
                res2,
                p(ParamId::Ln2W, l),
                &a.ln2_mean[stats.clone()],
                &a.ln2_rstd[stats.clone()],
                c,
            );
            prof.add(Op::LayerNorm, Pass::Backward, t0);
            // dresidual now holds d residual2[l].
            let t0 = Instant::now();
            let (dw, db) = two_mut(
                grads,
                lay.layer_range(ParamId::AttProjW, l),
                lay.layer_range(ParamId::AttProjB, l),
            )?;
            cpu::matmul_backward(
                &mut g.datty,
                dw,
                Some(db),
                &g.dresidual,
                atty,
                p(ParamId::AttProjW, l),
                (bt, c, c),
            )?;
            prof.add(Op::Matmul, Pass::Backward, t0);
            let t0 = Instant::now();
            cpu::attention_backward(&mut g.dqkv, &g.datty, qkv, att, shape)?;
            prof.add(Op::Attention, Pass::Backward, t0);
            let t0 = Instant::now();
            let (dw, db) = two_mut(
                grads,
                lay.layer_range(ParamId::QkvW, l),
                lay.layer_range(ParamId::QkvB, l),
            )?;
            cpu::matmul_backward(
                &mut g.dln,
                dw,
                Some(db),
                &g.dqkv,
                ln1,
                p(ParamId::QkvW, l),
                (bt, c, 3 * c),
            )?;
            prof.add(Op::Matmul, Pass::Backward, t0);
            let t0 = Instant::now();
            let (dw, db) = two_mut(
                grads,
                lay.layer_range(ParamId::Ln1W, l),
                lay.layer_range(ParamId::Ln1B, l),
            )?;
            cpu::layernorm_backward(
                &mut g.dresidual,
                dw,
                db,
                &g.dln,
                residual,
                p(ParamId::Ln1W, l),
                &a.ln1_mean[stats.clone()],
                &a.ln1_rstd[stats],
                c,
            );
            prof.add(Op::LayerNorm, Pass::Backward, t0);
            // dresidual now holds d residual3[l-1] (or d encoded).
        }

        let t0 = Instant::now();
        let (dwte, dwpe) = two_mut(grads, lay.range(ParamId::Wte), lay.range(ParamId::Wpe))?;
        cpu::encoder_backward(dwte, dwpe, &g.dresidual, &a.tokens, t, c);
        prof.add(Op::Encoder, Pass::Backward, t0);
        Ok(())
    }
}

/// Checks (B, T) and tokens against a config; returns B·T. Shared by every backend.
pub(crate) fn check_tokens(
    cfg: &GptConfig,
    op: &'static str,
    tokens: &[u32],
    b: usize,
    t: usize,
) -> Result<usize> {
    if b == 0 {
        return Err(ModelError::ZeroDim { field: "batch" });
    }
    if t == 0 {
        return Err(ModelError::ZeroDim {
            field: "sequence length",
        });
    }
    if t > cfg.context {
        return Err(ModelError::TooLong {
            op,
            t,
            context: cfg.context,
        });
    }
    let bt = b.checked_mul(t).ok_or(ModelError::Overflow { what: op })?;
    // The largest activation: max(V, 4C, NH·T) per token, times L (+1 spare).
    let widest = cfg.vocab.max(4 * cfg.d_model).max(cfg.heads * t);
    bt.checked_mul(widest)
        .and_then(|n| n.checked_mul(cfg.layers + 1))
        .and_then(|n| n.checked_mul(4))
        .ok_or(ModelError::Overflow { what: op })?;
    if tokens.len() != bt {
        return Err(ModelError::Shape {
            op,
            expected: bt,
            got: tokens.len(),
        });
    }
    if let Some(&bad) = tokens
        .iter()
        .find(|&&x| usize::try_from(x).map_or(true, |x| x >= cfg.vocab))
    {
        return Err(ModelError::Token {
            token: bad,
            vocab: cfg.vocab,
        });
    }
    Ok(bt)
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
