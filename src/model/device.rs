//! The device path of the model: the op sequence of [`super::gpt::Gpt`] over a
//! [`Device`](crate::device::Device), with the kernels of `kernels/gpt.cu` and the GEMMs of
//! [`Device::gemm`]. Written once: the emulator runs exactly the launches a GPU runs.
//!
//! Storage follows the CPU path (`Gpt<f16>`): parameters and saved activations f16, gradients
//! and logits f32, AdamW masters f32. Forward GEMMs take f16 operands and write f32 (then a
//! kernel adds the bias and rounds to f16, as the CPU path rounds its f32 sgemm output); backward
//! GEMMs run in f32 on f32 copies of the f16 operands (the CPU path widens them the same way), so
//! activation gradients never pass through f16.
//!
//! GEMM orientation: a row-major `(r, c)` matrix is column-major `c×r` with `ld = c`, so
//! `Y (N, M) = X (N, K) · W (K, M)` is the column-major `Yᵀ = Wᵀ · Xᵀ`:
//! `gemm(N, N, m = M, n = N, k = K, A = W, lda = M, B = X, ldb = K, C = Y, ldc = M)`.

use half::f16;
use rand_chacha::ChaCha8Rng;

use super::adamw::{AdamW, AdamWConfig};
use super::gpt::check_tokens;
use super::params::{ParamId, ParamLayout};
use super::sample::{sample_with, MaskFn, SampleParams, Samples};
use super::{Gpt, GptConfig, ModelError};
use crate::device::{Arg, DevBuf, Device, Gemm, LaunchCfg, Trans, View, ViewMut};
use crate::error::{Error, Result};
use crate::head::launch::{loss_head_resident, GradDst, HeadStats, Plan};
use crate::head::{HeadConfig, HeadInputs};

/// Threads per block of every model kernel (all are thread-per-item).
const BLOCK: u32 = 256;

fn ci(what: &'static str, n: usize) -> Result<i32> {
    i32::try_from(n).map_err(|_| Error::shape(what, "a count below 2^31", n))
}

/// Launches a thread-per-item kernel over `items` threads.
fn launch(dev: &Device, kernel: &'static str, items: usize, args: &[Arg]) -> Result<()> {
    let grid = u32::try_from(items.div_ceil(BLOCK as usize))
        .map_err(|_| Error::shape(kernel, "< 2^32 blocks", items))?;
    dev.launch(
        kernel,
        LaunchCfg {
            grid,
            block: BLOCK,
            smem: 0,
        },
        args,
    )
}

/// Layer `l`'s slice of a stacked (L, n) buffer.
fn at<T: crate::device::Elem>(buf: &DevBuf<T>, l: usize, n: usize) -> Result<View<'_, T>> {
    buf.view(l * n..(l + 1) * n)
}

/// Forward activations on the device for (B, T); per-layer buffers stacked over L (as `Acts`).
struct DevActs {
    b: usize,
    t: usize,
    /// (N) u32
    tokens: DevBuf<u32>,
    /// (N, C) f16
    encoded: DevBuf<f16>,
    /// (L, N, C) f16 each
    ln1: DevBuf<f16>,
    atty: DevBuf<f16>,
    residual2: DevBuf<f16>,
    ln2: DevBuf<f16>,
    residual3: DevBuf<f16>,
    /// (L, N) f32 each
    ln1_mean: DevBuf<f32>,
    ln1_rstd: DevBuf<f32>,
    ln2_mean: DevBuf<f32>,
    ln2_rstd: DevBuf<f32>,
    /// (L, N, 3C) f16
    qkv: DevBuf<f16>,
    /// (L, B, NH, T, T) f16
    att: DevBuf<f16>,
    /// (L, N, 4C) f16 each
    fch: DevBuf<f16>,
    fch_gelu: DevBuf<f16>,
    /// (N, C) f16: a projection's output before the residual add.
    proj: DevBuf<f16>,
    /// (N, C) f16, (N) f32, (N) f32
    lnf: DevBuf<f16>,
    lnf_mean: DevBuf<f32>,
    lnf_rstd: DevBuf<f32>,
    /// (N, V) f32 and its f16 rounding (the loss head's input).
    logits: DevBuf<f32>,
    logits16: DevBuf<f16>,
    /// (N, V) f32: the gradient flowing into the logits.
    dlogits: DevBuf<f32>,
    /// Scratch: (N, max(4C, V)) f32 GEMM output; (B, NH, T, T) f32 probabilities / dS.
    acc: DevBuf<f32>,
    scores: DevBuf<f32>,
    /// Backward scratch, f32: (N, C) ×3, (N, 3C), (N, 4C) ×2.
    dresidual: DevBuf<f32>,
    dln: DevBuf<f32>,
    datty: DevBuf<f32>,
    dqkv: DevBuf<f32>,
    dfch: DevBuf<f32>,
    dfch_gelu: DevBuf<f32>,
    /// Backward scratch: f32 copies of a weight (max(V, 4C)·C) and of an input (N·4C).
    w32: DevBuf<f32>,
    x32: DevBuf<f32>,
}

impl DevActs {
    fn new(dev: &Device, cfg: &GptConfig, b: usize, t: usize) -> Result<Self> {
        let (c, l, nh, v) = (cfg.d_model, cfg.layers, cfg.heads, cfg.vocab);
        let n = b * t; // check_tokens proved N·max(V, 4C, NH·T)·(L+1)·4 fits in usize
                       // Kernels count elements in i32: the largest buffers must fit.
        ci("activations", l * n * 4 * c)?;
        ci("attention", l * b * nh * t * t)?;
        ci("logits", n * v)?;
        ci("wte", v * c)?;
        let h = |k: usize| dev.zeros::<f16>(k);
        let f = |k: usize| dev.zeros::<f32>(k);
        Ok(Self {
            b,
            t,
            tokens: dev.zeros::<u32>(n)?,
            encoded: h(n * c)?,
            ln1: h(l * n * c)?,
            atty: h(l * n * c)?,
            residual2: h(l * n * c)?,
            ln2: h(l * n * c)?,
            residual3: h(l * n * c)?,
            ln1_mean: f(l * n)?,
            ln1_rstd: f(l * n)?,
            ln2_mean: f(l * n)?,
            ln2_rstd: f(l * n)?,
            qkv: h(l * n * 3 * c)?,
            att: h(l * b * nh * t * t)?,
            fch: h(l * n * 4 * c)?,
            fch_gelu: h(l * n * 4 * c)?,
            proj: h(n * c)?,
            lnf: h(n * c)?,
            lnf_mean: f(n)?,
            lnf_rstd: f(n)?,
            logits: f(n * v)?,
            logits16: h(n * v)?,
            dlogits: f(n * v)?,
            acc: f(n * (4 * c).max(v))?,
            scores: f(b * nh * t * t)?,
            dresidual: f(n * c)?,
            dln: f(n * c)?,
            datty: f(n * c)?,
            dqkv: f(n * 3 * c)?,
            dfch: f(n * 4 * c)?,
            dfch_gelu: f(n * 4 * c)?,
            w32: f(v.max(4 * c) * c)?,
            x32: f(n * 4 * c)?,
        })
    }
}

// ----------------------------------------------------------------------------------------------
// ops (one function per op of src/model/cpu.rs)

/// out (N, M) f16 = inp (N, K) · w (K, M) + bias (M); `acc` is f32 scratch of ≥ N·M.
#[allow(clippy::too_many_arguments)]
fn matmul_forward(
    dev: &Device,
    out: View<f16>,
    inp: View<f16>,
    w: View<f16>,
    bias: Option<View<f16>>,
    acc: &mut DevBuf<f32>,
    (n, k, m): (usize, usize, usize),
) -> Result<()> {
    let g = Gemm {
        transa: Trans::N,
        transb: Trans::N,
        m,
        n,
        k,
        alpha: 1.0,
        lda: m,
        ldb: k,
        beta: 0.0,
        ldc: m,
    };
    dev.gemm(&g, w, inp, acc.view_mut(0..n * m)?)?;
    launch(
        dev,
        "bias_add_cast_v1",
        n * m,
        &[
            out.arg(),
            acc.arg(),
            bias.map_or(Arg::Null, |b| b.arg()),
            Arg::I32(ci("N", n)?),
            Arg::I32(ci("OC", m)?),
        ],
    )
}

/// dst (n) f32 = src (n) f16.
fn widen(dev: &Device, dst: &DevBuf<f32>, src: View<f16>) -> Result<()> {
    let n = src.len();
    if dst.len() < n {
        return Err(Error::shape("widen", format!(">= {n} elements"), dst.len()));
    }
    launch(
        dev,
        "cast_f16_f32_v1",
        n,
        &[dst.arg(), src.arg(), Arg::I32(ci("widen", n)?)],
    )
}

/// Scratch f32 copies for a backward GEMM.
struct Scratch<'a> {
    w32: &'a mut DevBuf<f32>,
    x32: &'a mut DevBuf<f32>,
}

/// out (N, C) f16, mean/rstd (N) f32 = layernorm(inp) with w, b (C).
#[allow(clippy::too_many_arguments)]
fn layernorm_forward(
    dev: &Device,
    out: View<f16>,
    mean: View<f32>,
    rstd: View<f32>,
    inp: View<f16>,
    w: View<f16>,
    b: View<f16>,
    (n, c): (usize, usize),
) -> Result<()> {
    launch(
        dev,
        "layernorm_fwd_v1",
        n,
        &[
            out.arg(),
            mean.arg(),
            rstd.arg(),
            inp.arg(),
            w.arg(),
            b.arg(),
            Arg::I32(ci("N", n)?),
            Arg::I32(ci("C", c)?),
        ],
    )
}

/// dinp (N, C) += layernorm backward; dw, db (C) += their sums over rows.
#[allow(clippy::too_many_arguments)]
fn layernorm_backward(
    dev: &Device,
    dinp: View<f32>,
    dw: View<f32>,
    db: View<f32>,
    dout: View<f32>,
    inp: View<f16>,
    w: View<f16>,
    (mean, rstd): (View<f32>, View<f32>),
    (n, c): (usize, usize),
) -> Result<()> {
    let (ni, cc) = (Arg::I32(ci("N", n)?), Arg::I32(ci("C", c)?));
    launch(
        dev,
        "layernorm_bwd_v1",
        n,
        &[
            dinp.arg(),
            dout.arg(),
            inp.arg(),
            w.arg(),
            mean.arg(),
            rstd.arg(),
            ni,
            cc,
        ],
    )?;
    launch(
        dev,
        "layernorm_bwd_params_v1",
        c,
        &[
            dw.arg(),
            db.arg(),
            dout.arg(),
            inp.arg(),
            mean.arg(),
            rstd.arg(),
            ni,
            cc,
        ],
    )
}

/// out = a + b (n elements, f16).
fn residual_forward(dev: &Device, out: View<f16>, a: View<f16>, b: View<f16>) -> Result<()> {
    let n = out.len();
    launch(
        dev,
        "residual_fwd_v1",
        n,
        &[out.arg(), a.arg(), b.arg(), Arg::I32(ci("residual", n)?)],
    )
}

// ----------------------------------------------------------------------------------------------
// the model

/// AdamW state on the device (the CPU [`AdamW`]'s fields as buffers).
pub struct DevAdamW {
    /// Hyperparameters.
    pub cfg: AdamWConfig,
    /// Steps taken.
    pub t: u64,
    /// (P) f32 each
    master: DevBuf<f32>,
    m: DevBuf<f32>,
    v: DevBuf<f32>,
}

/// The GPT on a device: parameters (f16), gradients (f32), optimizer state and activations as
/// device buffers, with the same [`ParamLayout`] as the CPU [`Gpt`] (so checkpoints are shared
/// through [`DeviceGpt::from_cpu`] / [`DeviceGpt::to_cpu`]).
pub struct DeviceGpt<'d> {
    dev: &'d Device,
    cfg: GptConfig,
    layout: ParamLayout,
    /// (P) f16
    params: DevBuf<f16>,
    /// (P) f32, accumulated by the backward, cleared by `zero_grad`.
    grads: DevBuf<f32>,
    optim: Option<DevAdamW>,
    acts: Option<DevActs>,
    /// Whether `acts` holds a forward whose backward has not run on stale parameters.
    forwarded: bool,
}

/// A KV cache on the device for B sequences, plus decoding scratch (as `sample::KvCache`).
pub struct DevKvCache {
    b: usize,
    /// (L, B, maxT, C) f16 each
    k: DevBuf<f16>,
    v: DevBuf<f16>,
    /// (B) u32
    tokens: DevBuf<u32>,
    /// (B, C) f16: residual stream, after attention, layernorm output, attention output, projection.
    x: DevBuf<f16>,
    x2: DevBuf<f16>,
    ln: DevBuf<f16>,
    atty: DevBuf<f16>,
    proj: DevBuf<f16>,
    /// (B) f32
    mean: DevBuf<f32>,
    rstd: DevBuf<f32>,
    /// (B, 3C) f16, (B, 4C) f16 ×2
    qkv: DevBuf<f16>,
    fch: DevBuf<f16>,
    fch_gelu: DevBuf<f16>,
    /// Scratch: (B, max(4C, V)) f32 GEMM output, (B, NH, maxT) f32 probabilities.
    acc: DevBuf<f32>,
    probs: DevBuf<f32>,
    /// (B, V) f32
    logits: DevBuf<f32>,
}

impl<'d> DeviceGpt<'d> {
    /// Uploads a CPU model's parameters (gradients start at zero, no optimizer state).
    pub fn from_cpu(dev: &'d Device, model: &Gpt<f16>) -> Result<Self> {
        let cfg = *model.config();
        cfg.validate()?;
        let layout = ParamLayout::new(&cfg);
        ci("parameters", layout.total())?;
        Ok(Self {
            dev,
            cfg,
            params: dev.htod(model.params())?,
            grads: dev.zeros(layout.total())?,
            layout,
            optim: None,
            acts: None,
            forwarded: false,
        })
    }

    /// Downloads the parameters into a CPU model (gradients zero).
    pub fn to_cpu(&self) -> Result<Gpt<f16>> {
        Ok(Gpt::from_params(self.cfg, self.dev.dtoh(&self.params)?)?)
    }

    /// The config.
    pub fn config(&self) -> &GptConfig {
        &self.cfg
    }

    /// The parameter layout (the CPU model's).
    pub fn layout(&self) -> &ParamLayout {
        &self.layout
    }

    /// (P) f16: the parameters, downloaded.
    pub fn params(&self) -> Result<Vec<f16>> {
        self.dev.dtoh(&self.params)
    }

    /// (P) f32: the accumulated gradients, downloaded.
    pub fn grads(&self) -> Result<Vec<f32>> {
        self.dev.dtoh(&self.grads)
    }

    /// Sets all gradients to zero.
    pub fn zero_grad(&mut self) -> Result<()> {
        let p = self.layout.total();
        launch(
            self.dev,
            "fill_f32_v1",
            p,
            &[self.grads.arg(), Arg::F32(0.0), Arg::I32(ci("P", p)?)],
        )
    }

    /// Per-layer view of a parameter tensor.
    fn p(&self, id: ParamId, l: usize) -> Result<View<'_, f16>> {
        self.params.view(self.layout.layer_range(id, l))
    }

    /// Forward pass over tokens (B, T); saves activations; returns logits (B, T, V) f32
    /// (downloaded; they also stay on the device for [`DeviceGpt::loss_head`]).
    pub fn forward(&mut self, tokens: &[u32], b: usize, t: usize) -> Result<Vec<f32>> {
        self.forward_resident(tokens, b, t)?;
        let a = self.acts.as_ref().ok_or(ModelError::NoForward)?;
        self.dev.dtoh(&a.logits)
    }

    /// The forward pass, leaving the logits on the device.
    pub fn forward_resident(&mut self, tokens: &[u32], b: usize, t: usize) -> Result<()> {
        let n = check_tokens(&self.cfg, "forward", tokens, b, t)?;
        let GptConfig {
            vocab: v,
            d_model: c,
            layers: nl,
            heads: nh,
            ..
        } = self.cfg;
        if !self.acts.as_ref().is_some_and(|a| a.b == b && a.t == t) {
            self.acts = None; // free the old buffers first
            self.acts = Some(DevActs::new(self.dev, &self.cfg, b, t)?);
        }
        self.forwarded = false;
        let mut a = self.acts.take().ok_or(ModelError::NoForward)?;
        let r = self.forward_ops(&mut a, tokens, (b, t, n, v, c, nl, nh));
        self.acts = Some(a);
        r?;
        self.forwarded = true;
        Ok(())
    }

    #[allow(clippy::type_complexity)]
    fn forward_ops(
        &self,
        a: &mut DevActs,
        tokens: &[u32],
        (b, t, n, v, c, nl, nh): (usize, usize, usize, usize, usize, usize, usize),
    ) -> Result<()> {
        let dev = self.dev;
        dev.write(&mut a.tokens, tokens)?;
        let nc = n * c;
        launch(
            dev,
            "encoder_fwd_v1",
            nc,
            &[
                a.encoded.arg(),
                a.tokens.arg(),
                self.p(ParamId::Wte, 0)?.arg(),
                self.p(ParamId::Wpe, 0)?.arg(),
                Arg::I32(ci("N", n)?),
                Arg::I32(ci("T", t)?),
                Arg::I32(0),
                Arg::I32(ci("C", c)?),
            ],
        )?;
        let att_n = b * nh * t * t;
        for l in 0..nl {
            let residual = if l == 0 {
                a.encoded.all()
            } else {
                at(&a.residual3, l - 1, nc)?
            };
            let (ln1, qkv, atty) = (
                at(&a.ln1, l, nc)?,
                at(&a.qkv, l, 3 * nc)?,
                at(&a.atty, l, nc)?,
            );
            let (res2, ln2, res3) = (
                at(&a.residual2, l, nc)?,
                at(&a.ln2, l, nc)?,
                at(&a.residual3, l, nc)?,
            );
            let (fch, fch_gelu) = (at(&a.fch, l, 4 * nc)?, at(&a.fch_gelu, l, 4 * nc)?);
            layernorm_forward(
                dev,
                ln1,
                at(&a.ln1_mean, l, n)?,
                at(&a.ln1_rstd, l, n)?,
                residual,
                self.p(ParamId::Ln1W, l)?,
                self.p(ParamId::Ln1B, l)?,
                (n, c),
            )?;
            matmul_forward(
                dev,
                qkv,
                ln1,
                self.p(ParamId::QkvW, l)?,
                Some(self.p(ParamId::QkvB, l)?),
                &mut a.acc,
                (n, c, 3 * c),
            )?;
            launch(
                dev,
                "attention_fwd_v1",
                b * nh * t,
                &[
                    atty.arg(),
                    at(&a.att, l, att_n)?.arg(),
                    a.scores.arg(),
                    qkv.arg(),
                    Arg::I32(ci("B", b)?),
                    Arg::I32(ci("T", t)?),
                    Arg::I32(ci("C", c)?),
                    Arg::I32(ci("NH", nh)?),
                ],
            )?;
            matmul_forward(
                dev,
                a.proj.all(),
                atty,
                self.p(ParamId::AttProjW, l)?,
                Some(self.p(ParamId::AttProjB, l)?),
                &mut a.acc,
                (n, c, c),
            )?;
            residual_forward(dev, res2, residual, a.proj.all())?;
            layernorm_forward(
                dev,
                ln2,
                at(&a.ln2_mean, l, n)?,
                at(&a.ln2_rstd, l, n)?,
                res2,
                self.p(ParamId::Ln2W, l)?,
                self.p(ParamId::Ln2B, l)?,
                (n, c),
            )?;
            matmul_forward(
                dev,
                fch,
                ln2,
                self.p(ParamId::FcW, l)?,
                Some(self.p(ParamId::FcB, l)?),
                &mut a.acc,
                (n, c, 4 * c),
            )?;
            launch(
                dev,
                "gelu_fwd_v1",
                4 * nc,
                &[fch_gelu.arg(), fch.arg(), Arg::I32(ci("N·4C", 4 * nc)?)],
            )?;
            matmul_forward(
                dev,
                a.proj.all(),
                fch_gelu,
                self.p(ParamId::FcProjW, l)?,
                Some(self.p(ParamId::FcProjB, l)?),
                &mut a.acc,
                (n, 4 * c, c),
            )?;
            residual_forward(dev, res3, res2, a.proj.all())?;
        }
        layernorm_forward(
            dev,
            a.lnf.all(),
            a.lnf_mean.all(),
            a.lnf_rstd.all(),
            at(&a.residual3, nl - 1, nc)?,
            self.p(ParamId::LnfW, 0)?,
            self.p(ParamId::LnfB, 0)?,
            (n, c),
        )?;
        logits_forward(
            dev,
            &mut a.logits,
            a.lnf.all(),
            self.p(ParamId::Wte, 0)?,
            (n, c, v),
        )?;
        launch(
            dev,
            "cast_f32_f16_v1",
            n * v,
            &[
                a.logits16.arg(),
                a.logits.arg(),
                Arg::I32(ci("N·V", n * v)?),
            ],
        )
    }

    /// The loss head on the last forward's logits (rounded to f16, as the head takes them):
    /// `inp` describes the batch's rows (T = B·T of the forward; `inp.logits` is not read, pass
    /// `&[]`); the head's dlogits (f32) stay on the device for [`DeviceGpt::backward_resident`].
    pub fn loss_head(
        &mut self,
        inp: &HeadInputs,
        cfg: &HeadConfig,
        plan: &Plan,
    ) -> Result<HeadStats> {
        if !self.forwarded {
            return Err(ModelError::NoForward.into());
        }
        if inp.vocab != self.cfg.vocab {
            return Err(Error::shape("vocab", self.cfg.vocab, inp.vocab));
        }
        let a = self.acts.as_mut().ok_or(ModelError::NoForward)?;
        loss_head_resident(
            self.dev,
            &mut a.logits16,
            inp,
            cfg,
            GradDst::F32(&mut a.dlogits),
            plan,
        )
    }

    /// Applies a validity mask to the last forward's f16 logits (the loss head's input) in place,
    /// with `mask_logits_v1`: mask (B·T, W) u32, `W = ceil(V/32)` words per row, bit `v mod 32`
    /// of word `v/32` set = token `v` valid. Invalid entries become −65504 (the most negative
    /// finite f16) and ±inf entries ±65504, as the CPU trainer's masked logits; rows that need
    /// no mask pass all-ones words. The f32 logits are not touched.
    pub fn mask_logits(&mut self, mask: &[u32]) -> Result<()> {
        if !self.forwarded {
            return Err(ModelError::NoForward.into());
        }
        let a = self.acts.as_mut().ok_or(ModelError::NoForward)?;
        let v = self.cfg.vocab;
        let n = a.b * a.t;
        let w = v.div_ceil(32);
        if mask.len() != n * w {
            return Err(ModelError::Shape {
                op: "mask_logits",
                expected: n * w,
                got: mask.len(),
            }
            .into());
        }
        let m = self.dev.htod(mask)?;
        launch(
            self.dev,
            "mask_logits_v1",
            n * v,
            &[
                a.logits16.arg(),
                m.arg(),
                Arg::I32(ci("N", n)?),
                Arg::I32(ci("V", v)?),
                Arg::I32(ci("W", w)?),
            ],
        )
    }

    /// (B·T, V) f16: the loss head's input from the last forward (after
    /// [`DeviceGpt::mask_logits`], if called), downloaded.
    pub fn head_logits(&self) -> Result<Vec<f16>> {
        let a = self.acts.as_ref().ok_or(ModelError::NoForward)?;
        self.dev.dtoh(&a.logits16)
    }

    /// Backward pass from dlogits (B, T, V) f32 on the host; accumulates into the gradients.
    pub fn backward(&mut self, dlogits: &[f32]) -> Result<()> {
        let a = self.acts.as_mut().ok_or(ModelError::NoForward)?;
        if !self.forwarded {
            return Err(ModelError::NoForward.into());
        }
        if dlogits.len() != a.dlogits.len() {
            return Err(ModelError::Shape {
                op: "backward",
                expected: a.dlogits.len(),
                got: dlogits.len(),
            }
            .into());
        }
        self.dev.write(&mut a.dlogits, dlogits)?;
        self.backward_resident()
    }

    /// Backward pass from the dlogits on the device (written by [`DeviceGpt::loss_head`]).
    pub fn backward_resident(&mut self) -> Result<()> {
        if !self.forwarded {
            return Err(ModelError::NoForward.into());
        }
        let mut a = self.acts.take().ok_or(ModelError::NoForward)?;
        let mut grads = std::mem::replace(&mut self.grads, self.dev.zeros(0)?);
        let r = self.backward_ops(&mut a, &mut grads);
        self.acts = Some(a);
        self.grads = grads;
        r
    }

    fn backward_ops(&self, a: &mut DevActs, grads: &mut DevBuf<f32>) -> Result<()> {
        let dev = self.dev;
        let GptConfig {
            vocab: v,
            d_model: c,
            layers: nl,
            heads: nh,
            ..
        } = self.cfg;
        let (b, t) = (a.b, a.t);
        let n = b * t;
        let nc = n * c;
        let lay = &self.layout;
        let p = |id: ParamId, l: usize| self.p(id, l);
        let att_n = b * nh * t * t;

        // logits = lnf · wteᵀ: dlnf = dlogits · wte, dwte += dlogitsᵀ · lnf.
        widen(dev, &a.w32, p(ParamId::Wte, 0)?)?;
        widen(dev, &a.x32, a.lnf.all())?;
        let g = Gemm {
            transa: Trans::N,
            transb: Trans::N,
            m: c,
            n,
            k: v,
            alpha: 1.0,
            lda: c,
            ldb: v,
            beta: 0.0,
            ldc: c,
        };
        dev.gemm(&g, a.w32.view(0..v * c)?, a.dlogits.all(), a.dln.all_mut())?;
        let g = Gemm {
            transa: Trans::N,
            transb: Trans::T,
            m: c,
            n: v,
            k: n,
            alpha: 1.0,
            lda: c,
            ldb: v,
            beta: 1.0,
            ldc: c,
        };
        dev.gemm(
            &g,
            a.x32.view(0..nc)?,
            a.dlogits.all(),
            grads.view_mut(lay.range(ParamId::Wte))?,
        )?;

        launch(
            dev,
            "fill_f32_v1",
            nc,
            &[a.dresidual.arg(), Arg::F32(0.0), Arg::I32(ci("N·C", nc)?)],
        )?;
        layernorm_backward(
            dev,
            a.dresidual.all(),
            grads.view(lay.range(ParamId::LnfW))?,
            grads.view(lay.range(ParamId::LnfB))?,
            a.dln.all(),
            at(&a.residual3, nl - 1, nc)?,
            p(ParamId::LnfW, 0)?,
            (a.lnf_mean.all(), a.lnf_rstd.all()),
            (n, c),
        )?;

        for l in (0..nl).rev() {
            let residual = if l == 0 {
                a.encoded.all()
            } else {
                at(&a.residual3, l - 1, nc)?
            };
            let (ln1, qkv, atty) = (
                at(&a.ln1, l, nc)?,
                at(&a.qkv, l, 3 * nc)?,
                at(&a.atty, l, nc)?,
            );
            let (res2, ln2) = (at(&a.residual2, l, nc)?, at(&a.ln2, l, nc)?);
            let (fch, fch_gelu) = (at(&a.fch, l, 4 * nc)?, at(&a.fch_gelu, l, 4 * nc)?);
            let lr = |id: ParamId| lay.layer_range(id, l);

            // dresidual holds d residual3[l]; the residual add passes it to both branches.
            matmul_backward(
                dev,
                a.dfch_gelu.all_mut(),
                grads,
                (lr(ParamId::FcProjW), lr(ParamId::FcProjB)),
                a.dresidual.all(),
                fch_gelu,
                p(ParamId::FcProjW, l)?,
                Scratch {
                    w32: &mut a.w32,
                    x32: &mut a.x32,
                },
                (n, 4 * c, c),
            )?;
            launch(
                dev,
                "gelu_bwd_v1",
                4 * nc,
                &[
                    a.dfch.arg(),
                    fch.arg(),
                    a.dfch_gelu.arg(),
                    Arg::I32(ci("N·4C", 4 * nc)?),
                ],
            )?;
            matmul_backward(
                dev,
                a.dln.all_mut(),
                grads,
                (lr(ParamId::FcW), lr(ParamId::FcB)),
                a.dfch.all(),
                ln2,
                p(ParamId::FcW, l)?,
                Scratch {
                    w32: &mut a.w32,
                    x32: &mut a.x32,
                },
                (n, c, 4 * c),
            )?;
            layernorm_backward(
                dev,
                a.dresidual.all(),
                grads.view(lr(ParamId::Ln2W))?,
                grads.view(lr(ParamId::Ln2B))?,
                a.dln.all(),
                res2,
                p(ParamId::Ln2W, l)?,
                (at(&a.ln2_mean, l, n)?, at(&a.ln2_rstd, l, n)?),
                (n, c),
            )?;
            // dresidual now holds d residual2[l].
            matmul_backward(
                dev,
                a.datty.all_mut(),
                grads,
                (lr(ParamId::AttProjW), lr(ParamId::AttProjB)),
                a.dresidual.all(),
                atty,
                p(ParamId::AttProjW, l)?,
                Scratch {
                    w32: &mut a.w32,
                    x32: &mut a.x32,
                },
                (n, c, c),
            )?;
            let dims = [
                Arg::I32(ci("B", b)?),
                Arg::I32(ci("T", t)?),
                Arg::I32(ci("C", c)?),
                Arg::I32(ci("NH", nh)?),
            ];
            let att = at(&a.att, l, att_n)?;
            let common = [
                a.dqkv.arg(),
                a.scores.arg(),
                a.datty.arg(),
                qkv.arg(),
                att.arg(),
            ];
            let args: Vec<Arg> = common.iter().chain(&dims).copied().collect();
            launch(dev, "attention_bwd_q_v1", b * nh * t, &args)?;
            launch(dev, "attention_bwd_kv_v1", b * nh * t, &args)?;
            matmul_backward(
                dev,
                a.dln.all_mut(),
                grads,
                (lr(ParamId::QkvW), lr(ParamId::QkvB)),
                a.dqkv.all(),
                ln1,
                p(ParamId::QkvW, l)?,
                Scratch {
                    w32: &mut a.w32,
                    x32: &mut a.x32,
                },
                (n, c, 3 * c),
            )?;
            layernorm_backward(
                dev,
                a.dresidual.all(),
                grads.view(lr(ParamId::Ln1W))?,
                grads.view(lr(ParamId::Ln1B))?,
                a.dln.all(),
                residual,
                p(ParamId::Ln1W, l)?,
                (at(&a.ln1_mean, l, n)?, at(&a.ln1_rstd, l, n)?),
                (n, c),
            )?;
            // dresidual now holds d residual3[l-1] (or d encoded).
        }

        launch(
            dev,
            "encoder_bwd_wte_v1",
            v * c,
            &[
                grads.view(lay.range(ParamId::Wte))?.arg(),
                a.dresidual.arg(),
                a.tokens.arg(),
                Arg::I32(ci("N", n)?),
                Arg::I32(ci("C", c)?),
                Arg::I32(ci("V", v)?),
            ],
        )?;
        launch(
            dev,
            "encoder_bwd_wpe_v1",
            t * c,
            &[
                grads.view(lay.range(ParamId::Wpe))?.arg(),
                a.dresidual.arg(),
                Arg::I32(ci("N", n)?),
                Arg::I32(ci("T", t)?),
                Arg::I32(ci("C", c)?),
            ],
        )
    }

    /// Creates the optimizer state on the device (masters = the parameters widened to f32).
    pub fn init_optim(&mut self, cfg: AdamWConfig) -> Result<()> {
        cfg.validate()?;
        let p = self.layout.total();
        let master = self.dev.zeros::<f32>(p)?;
        widen(self.dev, &master, self.params.all())?;
        self.optim = Some(DevAdamW {
            cfg,
            t: 0,
            master,
            m: self.dev.zeros(p)?,
            v: self.dev.zeros(p)?,
        });
        Ok(())
    }

    /// Uploads a CPU optimizer state (e.g. from a checkpoint).
    pub fn set_optim(&mut self, opt: &AdamW) -> Result<()> {
        opt.cfg.validate()?;
        let p = self.layout.total();
        for got in [opt.master.len(), opt.m.len(), opt.v.len()] {
            if got != p {
                return Err(ModelError::OptimMismatch { expected: p, got }.into());
            }
        }
        self.optim = Some(DevAdamW {
            cfg: opt.cfg,
            t: opt.t,
            master: self.dev.htod(&opt.master)?,
            m: self.dev.htod(&opt.m)?,
            v: self.dev.htod(&opt.v)?,
        });
        Ok(())
    }

    /// The optimizer's hyperparameters, to change between steps (e.g. the learning rate of a
    /// schedule); None before `init_optim`/`set_optim`.
    pub fn optim_config_mut(&mut self) -> Option<&mut AdamWConfig> {
        self.optim.as_mut().map(|o| &mut o.cfg)
    }

    /// Downloads the optimizer state (None before `init_optim`/`set_optim`).
    pub fn optim(&self) -> Result<Option<AdamW>> {
        let Some(o) = &self.optim else {
            return Ok(None);
        };
        Ok(Some(AdamW {
            cfg: o.cfg,
            t: o.t,
            master: self.dev.dtoh(&o.master)?,
            m: self.dev.dtoh(&o.m)?,
            v: self.dev.dtoh(&o.v)?,
        }))
    }

    /// One AdamW update from the accumulated gradients (as [`AdamW::step`]); returns the global
    /// gradient norm before clipping. The norm's per-block partial sums come back to the host
    /// and are added in f64.
    pub fn step(&mut self) -> Result<f32> {
        let dev = self.dev;
        let p = self.layout.total();
        let o = self.optim.as_mut().ok_or(ModelError::OptimMismatch {
            expected: p,
            got: 0,
        })?;
        o.cfg.validate()?;
        let blocks = p.div_ceil(BLOCK as usize).clamp(1, 1024);
        let partial = dev.zeros::<f32>(blocks)?;
        dev.launch(
            "sumsq_v1",
            LaunchCfg {
                grid: u32::try_from(blocks)
                    .map_err(|_| Error::shape("sumsq", "<= 1024", blocks))?,
                block: BLOCK,
                smem: 0,
            },
            &[partial.arg(), self.grads.arg(), Arg::I32(ci("P", p)?)],
        )?;
        let norm = dev
            .dtoh(&partial)?
            .iter()
            .map(|&x| f64::from(x))
            .sum::<f64>()
            .sqrt() as f32;
        let scale = match o.cfg.grad_clip {
            Some(c) if norm > c => c / (norm + 1e-6),
            _ => 1.0,
        };
        o.t += 1;
        let AdamWConfig {
            lr,
            beta1: b1,
            beta2: b2,
            eps,
            weight_decay,
            ..
        } = o.cfg;
        let t = i32::try_from(o.t).unwrap_or(i32::MAX);
        let (c1, c2) = (1.0 - b1.powi(t), 1.0 - b2.powi(t));
        for id in ParamId::ALL {
            let r = self.layout.range(id);
            let wd = if id.decays() { weight_decay } else { 0.0 };
            let len = r.len();
            launch(
                dev,
                "adamw_v1",
                len,
                &[
                    self.params.view(r.clone())?.arg(),
                    o.master.view(r.clone())?.arg(),
                    o.m.view(r.clone())?.arg(),
                    o.v.view(r.clone())?.arg(),
                    self.grads.view(r)?.arg(),
                    Arg::I32(ci("P", len)?),
                    Arg::F32(lr),
                    Arg::F32(b1),
                    Arg::F32(b2),
                    Arg::F32(c1),
                    Arg::F32(c2),
                    Arg::F32(eps),
                    Arg::F32(wd),
                    Arg::F32(scale),
                ],
            )?;
        }
        // The saved activations were computed with the old parameters.
        self.forwarded = false;
        Ok(norm)
    }

    // ------------------------------------------------------------------------------------------
    // decoding

    /// An empty KV cache for B sequences of up to maxT tokens.
    pub fn kv_cache(&self, b: usize) -> Result<DevKvCache> {
        let GptConfig {
            vocab: v,
            context: mt,
            d_model: c,
            layers: l,
            heads: nh,
        } = self.cfg;
        if b == 0 {
            return Err(ModelError::ZeroDim { field: "batch" }.into());
        }
        let n = l
            .checked_mul(b)
            .and_then(|x| x.checked_mul(mt))
            .and_then(|x| x.checked_mul(c))
            .ok_or(ModelError::Overflow { what: "kv cache" })?;
        ci("kv cache", n)?;
        let wide = b
            .checked_mul((4 * c).max(v).max(nh * mt))
            .ok_or(ModelError::Overflow { what: "kv cache" })?;
        ci("kv cache", wide)?;
        let dev = self.dev;
        Ok(DevKvCache {
            b,
            k: dev.zeros(n)?,
            v: dev.zeros(n)?,
            tokens: dev.zeros(b)?,
            x: dev.zeros(b * c)?,
            x2: dev.zeros(b * c)?,
            ln: dev.zeros(b * c)?,
            atty: dev.zeros(b * c)?,
            proj: dev.zeros(b * c)?,
            mean: dev.zeros(b)?,
            rstd: dev.zeros(b)?,
            qkv: dev.zeros(3 * b * c)?,
            fch: dev.zeros(4 * b * c)?,
            fch_gelu: dev.zeros(4 * b * c)?,
            acc: dev.zeros(b * (4 * c).max(v))?,
            probs: dev.zeros(b * nh * mt)?,
            logits: dev.zeros(b * v)?,
        })
    }

    /// Feeds one token per sequence, tokens (B), at position `pos` (positions `< pos` already
    /// in the cache); writes logits (B, V) f32 (downloaded).
    pub fn decode_step(
        &self,
        kc: &mut DevKvCache,
        tokens: &[u32],
        pos: usize,
        logits: &mut [f32],
    ) -> Result<()> {
        let GptConfig {
            vocab: v,
            context: mt,
            d_model: c,
            layers: nl,
            heads: nh,
        } = self.cfg;
        let b = kc.b;
        check_tokens(&self.cfg, "decode_step", tokens, b, 1)?;
        if pos >= mt {
            return Err(ModelError::TooLong {
                op: "decode_step",
                t: pos + 1,
                context: mt,
            }
            .into());
        }
        if logits.len() != b * v || kc.k.len() != nl * b * mt * c {
            return Err(ModelError::Shape {
                op: "decode_step",
                expected: b * v,
                got: logits.len(),
            }
            .into());
        }
        let dev = self.dev;
        let p = |id: ParamId, l: usize| self.p(id, l);
        let bc = b * c;
        dev.write(&mut kc.tokens, tokens)?;
        launch(
            dev,
            "encoder_fwd_v1",
            bc,
            &[
                kc.x.arg(),
                kc.tokens.arg(),
                p(ParamId::Wte, 0)?.arg(),
                p(ParamId::Wpe, 0)?.arg(),
                Arg::I32(ci("B", b)?),
                Arg::I32(1),
                Arg::I32(ci("pos", pos)?),
                Arg::I32(ci("C", c)?),
            ],
        )?;
        let cache_n = b * mt * c;
        for l in 0..nl {
            layernorm_forward(
                dev,
                kc.ln.all(),
                kc.mean.all(),
                kc.rstd.all(),
                kc.x.all(),
                p(ParamId::Ln1W, l)?,
                p(ParamId::Ln1B, l)?,
                (b, c),
            )?;
            matmul_forward(
                dev,
                kc.qkv.all(),
                kc.ln.all(),
                p(ParamId::QkvW, l)?,
                Some(p(ParamId::QkvB, l)?),
                &mut kc.acc,
                (b, c, 3 * c),
            )?;
            let (lk, lv) = (at(&kc.k, l, cache_n)?, at(&kc.v, l, cache_n)?);
            launch(
                dev,
                "kv_append_v1",
                bc,
                &[
                    lk.arg(),
                    lv.arg(),
                    kc.qkv.arg(),
                    Arg::I32(ci("B", b)?),
                    Arg::I32(ci("pos", pos)?),
                    Arg::I32(ci("maxT", mt)?),
                    Arg::I32(ci("C", c)?),
                ],
            )?;
            launch(
                dev,
                "attention_decode_v1",
                b * nh,
                &[
                    kc.atty.arg(),
                    kc.probs.arg(),
                    kc.qkv.arg(),
                    lk.arg(),
                    lv.arg(),
                    Arg::I32(ci("B", b)?),
                    Arg::I32(ci("pos", pos)?),
                    Arg::I32(ci("maxT", mt)?),
                    Arg::I32(ci("C", c)?),
                    Arg::I32(ci("NH", nh)?),
                ],
            )?;
            matmul_forward(
                dev,
                kc.proj.all(),
                kc.atty.all(),
                p(ParamId::AttProjW, l)?,
                Some(p(ParamId::AttProjB, l)?),
                &mut kc.acc,
                (b, c, c),
            )?;
            residual_forward(dev, kc.x2.all(), kc.x.all(), kc.proj.all())?;
            layernorm_forward(
                dev,
                kc.ln.all(),
                kc.mean.all(),
                kc.rstd.all(),
                kc.x2.all(),
                p(ParamId::Ln2W, l)?,
                p(ParamId::Ln2B, l)?,
                (b, c),
            )?;
            matmul_forward(
                dev,
                kc.fch.all(),
                kc.ln.all(),
                p(ParamId::FcW, l)?,
                Some(p(ParamId::FcB, l)?),
                &mut kc.acc,
                (b, c, 4 * c),
            )?;
            launch(
                dev,
                "gelu_fwd_v1",
                4 * bc,
                &[
                    kc.fch_gelu.arg(),
                    kc.fch.arg(),
                    Arg::I32(ci("B·4C", 4 * bc)?),
                ],
            )?;
            matmul_forward(
                dev,
                kc.proj.all(),
                kc.fch_gelu.all(),
                p(ParamId::FcProjW, l)?,
                Some(p(ParamId::FcProjB, l)?),
                &mut kc.acc,
                (b, 4 * c, c),
            )?;
            residual_forward(dev, kc.x.all(), kc.x2.all(), kc.proj.all())?;
        }
        layernorm_forward(
            dev,
            kc.ln.all(),
            kc.mean.all(),
            kc.rstd.all(),
            kc.x.all(),
            p(ParamId::LnfW, 0)?,
            p(ParamId::LnfB, 0)?,
            (b, c),
        )?;
        logits_forward(
            dev,
            &mut kc.logits,
            kc.ln.all(),
            p(ParamId::Wte, 0)?,
            (b, c, v),
        )?;
        logits.copy_from_slice(&dev.dtoh(&kc.logits)?);
        Ok(())
    }

    /// Samples `max_new` tokens after prompts (B, P) with a device KV cache; the draw happens
    /// on the host from each step's logits, with the CPU path's loop ([`Gpt::sample`]), so both
    /// paths give the same tokens for the same logits and RNG state.
    pub fn sample(
        &self,
        prompts: &[u32],
        b: usize,
        p: usize,
        params: &SampleParams,
        rng: &mut ChaCha8Rng,
        mask: Option<&mut MaskFn>,
    ) -> Result<Samples> {
        let mut cache: Option<DevKvCache> = None;
        sample_with(
            &self.cfg,
            prompts,
            b,
            p,
            params,
            rng,
            mask,
            |tokens, pos, logits| {
                let c = match cache.as_mut() {
                    Some(c) => c,
                    None => cache.insert(self.kv_cache(b)?),
                };
                self.decode_step(c, tokens, pos, logits)
            },
        )
    }
}

/// logits (N, V) f32 = inp (N, C) · wteᵀ: `gemm(T, N, m = V, n = N, k = C)`.
fn logits_forward(
    dev: &Device,
    logits: &mut DevBuf<f32>,
    inp: View<f16>,
    wte: View<f16>,
    (n, c, v): (usize, usize, usize),
) -> Result<()> {
    let g = Gemm {
        transa: Trans::T,
        transb: Trans::N,
        m: v,
        n,
        k: c,
        alpha: 1.0,
        lda: c,
        ldb: c,
        beta: 0.0,
        ldc: v,
    };
    dev.gemm(&g, wte, inp, logits.view_mut(0..n * v)?)
}

/// dinp (N, K) = dout · wᵀ (overwritten); dw (K, M) += inpᵀ · dout; dbias (M) += Σ_rows dout,
/// with dw and dbias at ranges `rw`, `rb` of the gradient buffer.
///
/// Column-major: `dinpᵀ (K×N) = W (K×M) · doutᵀ`, i.e. `gemm(T, N, m = K, n = N, k = M)` on the
/// stored `Wᵀ`; `dWᵀ (M×K) = doutᵀ (M×N) · inp (N×K)`, i.e. `gemm(N, T, m = M, n = K, k = N)`.
#[allow(clippy::too_many_arguments)]
fn matmul_backward(
    dev: &Device,
    dinp: ViewMut<f32>,
    grads: &mut DevBuf<f32>,
    (rw, rb): (std::ops::Range<usize>, std::ops::Range<usize>),
    dout: View<f32>,
    inp: View<f16>,
    w: View<f16>,
    s: Scratch,
    dims: (usize, usize, usize),
) -> Result<()> {
    // dW (a GEMM output) needs the buffer mutably; dbias is written by a kernel through a
    // shared view afterwards, so the two borrows do not overlap.
    let dw = grads.view_mut(rw)?;
    let (n, k, m) = dims;
    widen(dev, s.w32, w)?;
    widen(dev, s.x32, inp)?;
    let g = Gemm {
        transa: Trans::T,
        transb: Trans::N,
        m: k,
        n,
        k: m,
        alpha: 1.0,
        lda: m,
        ldb: m,
        beta: 0.0,
        ldc: k,
    };
    dev.gemm(&g, s.w32.view(0..k * m)?, dout, dinp)?;
    let g = Gemm {
        transa: Trans::N,
        transb: Trans::T,
        m,
        n: k,
        k: n,
        alpha: 1.0,
        lda: m,
        ldb: k,
        beta: 1.0,
        ldc: m,
    };
    dev.gemm(&g, dout, s.x32.view(0..n * k)?, dw)?;
    launch(
        dev,
        "bias_grad_v1",
        m,
        &[
            grads.view(rb)?.arg(),
            dout.arg(),
            Arg::I32(ci("N", n)?),
            Arg::I32(ci("OC", m)?),
        ],
    )
}
