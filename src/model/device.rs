//! The device path of the model: the op sequence of [`super::seq`] over a
//! [`Device`](crate::device::Device) through the device executor (`DevExec`), with the kernels
//! of `kernels/gpt.cu` and the GEMMs of [`Device::gemm`]. Written once: the emulator runs
//! exactly the launches a GPU runs.
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

use super::acts::{Acts, Cache, GradActs};
use super::adamw::{begin_step, AdamW, AdamWConfig};
use super::config::check_tokens;
use super::exec::{Exec, Heads, Len, Rd, Step, Store, Weights, Wr};
use super::params::{ParamId, ParamLayout};
use super::sample::{sample_with, Decode, MaskFn, SampleParams, Samples};
use super::seq;
use super::{Gpt, GptConfig, ModelError};
use crate::device::{kernels, DevBuf, Device, Gemm, LaunchCfg, Trans, View, ViewMut};
use crate::error::{Error, Result};
use crate::head::launch::{
    loss_head_resident, loss_head_update_resident, GradDst, HeadStats, Plan, UpdateStats,
};
use crate::head::{HeadConfig, HeadInputs};

/// Threads per block of every model kernel (all are thread-per-item).
const BLOCK: u32 = 256;

fn ci(what: &'static str, n: usize) -> Result<i32> {
    i32::try_from(n).map_err(|_| Error::shape(what, "a count below 2^31", n))
}

/// The launch configuration of a thread-per-item kernel over `items` threads.
fn items(kernel: &'static str, items: usize) -> Result<LaunchCfg> {
    let grid = u32::try_from(items.div_ceil(BLOCK as usize))
        .map_err(|_| Error::shape(kernel, "< 2^32 blocks", items))?;
    Ok(LaunchCfg {
        grid,
        block: BLOCK,
        smem: 0,
    })
}

/// The device store: f16 storage, f32 and u32 tensors in [`DevBuf`]s.
pub struct Dev;

impl Store for Dev {
    type Act = DevBuf<f16>;
    type F32 = DevBuf<f32>;
    type Tok = DevBuf<u32>;
    type Error = Error;
    type Alloc = Device;
    fn act(dev: &Device, n: usize) -> Result<DevBuf<f16>> {
        dev.zeros(n)
    }
    fn f32(dev: &Device, n: usize) -> Result<DevBuf<f32>> {
        dev.zeros(n)
    }
    fn tok(dev: &Device, n: usize) -> Result<DevBuf<u32>> {
        dev.zeros(n)
    }
}

impl<T: crate::device::Elem> Len for DevBuf<T> {
    fn len(&self) -> usize {
        DevBuf::len(self)
    }
}

impl<'a, T: crate::device::Elem> Rd<'a, DevBuf<T>> {
    /// The window as a kernel argument or GEMM operand.
    fn view(self) -> Result<View<'a, T>> {
        self.buf.view(self.range())
    }
}

impl<'a, T: crate::device::Elem> Wr<'a, DevBuf<T>> {
    /// The window as a kernel argument (kernels write through device pointers).
    fn view(self) -> Result<View<'a, T>> {
        let range = self.range();
        let buf: &'a DevBuf<T> = self.buf;
        buf.view(range)
    }
    /// The window as a GEMM output.
    fn view_mut(self) -> Result<ViewMut<'a, T>> {
        let range = self.range();
        self.buf.view_mut(range)
    }
    /// The window, if it is the whole buffer (host transfers move whole buffers).
    fn whole(self) -> Result<&'a mut DevBuf<T>> {
        if self.off != 0 || self.len != self.buf.len() {
            return Err(Error::shape(
                "transfer",
                format!("the whole buffer 0..{}", self.buf.len()),
                format!("{:?}", self.range()),
            ));
        }
        Ok(self.buf)
    }
}

/// The ops' own device scratch (not activations).
struct Scratch {
    /// (rows, max(4C, V)) f32: a forward GEMM's output before the bias add and the f16 rounding.
    acc: DevBuf<f32>,
    /// f32 attention probabilities: (B, NH, T, T) in training (the backward's dS too),
    /// (B, NH, maxT) when decoding.
    probs: DevBuf<f32>,
    /// f32 copies of a backward GEMM's f16 weight (max(V, 4C)·C) and input (N·4C); empty when
    /// decoding.
    w32: DevBuf<f32>,
    x32: DevBuf<f32>,
}

/// Forward activations, backward scratch and op scratch on the device for (B, T).
struct DevActs {
    fwd: Acts<Dev>,
    bwd: GradActs<Dev>,
    /// (N, V) f16: the logits rounded for the loss head (which writes `bwd.dlogits`).
    logits16: DevBuf<f16>,
    scratch: Scratch,
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
        Ok(Self {
            fwd: Acts::new(dev, cfg, b, t)?,
            bwd: GradActs::new(dev, cfg, b, t)?,
            logits16: dev.zeros(n * v)?,
            scratch: Scratch {
                acc: dev.zeros(n * (4 * c).max(v))?,
                probs: dev.zeros(b * nh * t * t)?,
                w32: dev.zeros(v.max(4 * c) * c)?,
                x32: dev.zeros(n * 4 * c)?,
            },
        })
    }
}

/// dst (n) f32 = src (n) f16.
fn widen(dev: &Device, dst: &DevBuf<f32>, src: View<f16>) -> Result<()> {
    let n = src.len();
    if dst.len() < n {
        return Err(Error::shape("widen", format!(">= {n} elements"), dst.len()));
    }
    kernels::CastF16F32V1 {
        out: dst.ptr(),
        inp: src.ptr(),
        n: ci("widen", n)?,
    }
    .launch(dev, items(kernels::CastF16F32V1::NAME, n)?)
}

// ----------------------------------------------------------------------------------------------
// the executor

/// The device executor: the kernels of `kernels/gpt.cu` and [`Device::gemm`] behind [`Exec`].
struct DevExec<'a> {
    dev: &'a Device,
    /// (P) f16, laid out by `layout`.
    params: &'a DevBuf<f16>,
    layout: &'a ParamLayout,
    /// (P) f32: the parameter gradients; `None` where only forward ops run (decoding).
    grads: Option<&'a mut DevBuf<f32>>,
    s: &'a mut Scratch,
}

impl<'a> DevExec<'a> {
    /// Layer `l`'s slice of a parameter tensor.
    fn p(&self, id: ParamId, l: usize) -> Result<View<'a, f16>> {
        self.params.view(self.layout.layer_range(id, l))
    }

    /// The gradients, or an error where this executor has none.
    fn grads(&mut self) -> Result<&mut DevBuf<f32>> {
        Ok(self.grads.as_deref_mut().ok_or(ModelError::NoForward)?)
    }
}

impl Exec for DevExec<'_> {
    type S = Dev;

    fn write_tokens(&mut self, dst: Wr<'_, DevBuf<u32>>, src: &[u32]) -> Result<()> {
        self.dev.write(dst.whole()?, src)
    }

    fn read_f32(&mut self, dst: &mut [f32], src: Rd<'_, DevBuf<f32>>) -> Result<()> {
        let host = self.dev.dtoh(src.buf)?;
        let src = host
            .get(src.range())
            .ok_or_else(|| Error::shape("read", format!("{:?}", src.range()), host.len()))?;
        if dst.len() != src.len() {
            return Err(Error::shape("read", src.len(), dst.len()));
        }
        dst.copy_from_slice(src);
        Ok(())
    }

    fn encoder_fwd(
        &mut self,
        out: Wr<'_, DevBuf<f16>>,
        tokens: Rd<'_, DevBuf<u32>>,
        (n, t, pos0, c): (usize, usize, usize, usize),
    ) -> Result<()> {
        kernels::EncoderFwdV1 {
            out: out.view()?.ptr(),
            tokens: tokens.view()?.ptr(),
            wte: self.p(ParamId::Wte, 0)?.ptr(),
            wpe: self.p(ParamId::Wpe, 0)?.ptr(),
            n: ci("N", n)?,
            t: ci("T", t)?,
            pos0: ci("pos", pos0)?,
            c: ci("C", c)?,
        }
        .launch(self.dev, items(kernels::EncoderFwdV1::NAME, n * c)?)
    }

    fn layernorm_fwd(
        &mut self,
        out: Wr<'_, DevBuf<f16>>,
        mean: Wr<'_, DevBuf<f32>>,
        rstd: Wr<'_, DevBuf<f32>>,
        inp: Rd<'_, DevBuf<f16>>,
        ln: Weights,
        l: usize,
        (n, c): (usize, usize),
    ) -> Result<()> {
        kernels::LayernormFwdV1 {
            out: out.view()?.ptr(),
            mean: mean.view()?.ptr(),
            rstd: rstd.view()?.ptr(),
            inp: inp.view()?.ptr(),
            w: self.p(ln.w, l)?.ptr(),
            b: self.p(ln.b, l)?.ptr(),
            n: ci("N", n)?,
            c: ci("C", c)?,
        }
        .launch(self.dev, items(kernels::LayernormFwdV1::NAME, n)?)
    }

    /// A GEMM into the f32 scratch, then a kernel adds the bias and rounds to f16.
    fn matmul_fwd(
        &mut self,
        out: Wr<'_, DevBuf<f16>>,
        inp: Rd<'_, DevBuf<f16>>,
        lin: Weights,
        l: usize,
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
        let (w, b) = (self.p(lin.w, l)?, self.p(lin.b, l)?);
        let acc = &mut self.s.acc;
        self.dev.gemm(&g, w, inp.view()?, acc.view_mut(0..n * m)?)?;
        kernels::BiasAddCastV1 {
            out: out.view()?.ptr(),
            acc: acc.ptr(),
            bias: b.ptr(),
            n: ci("N", n)?,
            oc: ci("OC", m)?,
        }
        .launch(self.dev, items(kernels::BiasAddCastV1::NAME, n * m)?)
    }

    fn attention_fwd(
        &mut self,
        atty: Wr<'_, DevBuf<f16>>,
        att: Wr<'_, DevBuf<f16>>,
        qkv: Rd<'_, DevBuf<f16>>,
        Heads { b, t, c, nh }: Heads,
    ) -> Result<()> {
        kernels::AttentionFwdV1 {
            atty: atty.view()?.ptr(),
            att: att.view()?.ptr(),
            probs: self.s.probs.ptr(),
            qkv: qkv.view()?.ptr(),
            b: ci("B", b)?,
            t: ci("T", t)?,
            c: ci("C", c)?,
            nh: ci("NH", nh)?,
        }
        .launch(self.dev, items(kernels::AttentionFwdV1::NAME, b * nh * t)?)
    }

    fn residual_fwd(
        &mut self,
        out: Wr<'_, DevBuf<f16>>,
        a: Rd<'_, DevBuf<f16>>,
        b: Rd<'_, DevBuf<f16>>,
    ) -> Result<()> {
        let n = out.len;
        kernels::ResidualFwdV1 {
            out: out.view()?.ptr(),
            a: a.view()?.ptr(),
            b: b.view()?.ptr(),
            n: ci("residual", n)?,
        }
        .launch(self.dev, items(kernels::ResidualFwdV1::NAME, n)?)
    }

    fn gelu_fwd(&mut self, out: Wr<'_, DevBuf<f16>>, inp: Rd<'_, DevBuf<f16>>) -> Result<()> {
        let n = out.len;
        kernels::GeluFwdV1 {
            out: out.view()?.ptr(),
            inp: inp.view()?.ptr(),
            n: ci("gelu", n)?,
        }
        .launch(self.dev, items(kernels::GeluFwdV1::NAME, n)?)
    }

    /// `gemm(T, N, m = V, n = N, k = C)`.
    fn logits_fwd(
        &mut self,
        logits: Wr<'_, DevBuf<f32>>,
        inp: Rd<'_, DevBuf<f16>>,
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
        let wte = self.p(ParamId::Wte, 0)?;
        self.dev.gemm(&g, wte, inp.view()?, logits.view_mut()?)
    }

    fn kv_append(
        &mut self,
        k: Wr<'_, DevBuf<f16>>,
        v: Wr<'_, DevBuf<f16>>,
        qkv: Rd<'_, DevBuf<f16>>,
        Step {
            b, pos, max_t, c, ..
        }: Step,
    ) -> Result<()> {
        kernels::KvAppendV1 {
            kc: k.view()?.ptr(),
            vc: v.view()?.ptr(),
            qkv: qkv.view()?.ptr(),
            b: ci("B", b)?,
            pos: ci("pos", pos)?,
            maxt: ci("maxT", max_t)?,
            c: ci("C", c)?,
        }
        .launch(self.dev, items(kernels::KvAppendV1::NAME, b * c)?)
    }

    fn attention_decode(
        &mut self,
        out: Wr<'_, DevBuf<f16>>,
        qkv: Rd<'_, DevBuf<f16>>,
        k: Rd<'_, DevBuf<f16>>,
        v: Rd<'_, DevBuf<f16>>,
        Step {
            b,
            pos,
            max_t,
            c,
            nh,
        }: Step,
    ) -> Result<()> {
        kernels::AttentionDecodeV1 {
            out: out.view()?.ptr(),
            probs: self.s.probs.ptr(),
            qkv: qkv.view()?.ptr(),
            kc: k.view()?.ptr(),
            vc: v.view()?.ptr(),
            b: ci("B", b)?,
            pos: ci("pos", pos)?,
            maxt: ci("maxT", max_t)?,
            c: ci("C", c)?,
            nh: ci("NH", nh)?,
        }
        .launch(self.dev, items(kernels::AttentionDecodeV1::NAME, b * nh)?)
    }

    fn fill_zero(&mut self, out: Wr<'_, DevBuf<f32>>) -> Result<()> {
        let n = out.len;
        kernels::FillF32V1 {
            x: out.view()?.ptr(),
            value: 0.0,
            n: ci("fill", n)?,
        }
        .launch(self.dev, items(kernels::FillF32V1::NAME, n)?)
    }

    /// logits = lnf · wteᵀ: dlnf = dlogits · wte, dwte += dlogitsᵀ · lnf.
    fn logits_bwd(
        &mut self,
        dinp: Wr<'_, DevBuf<f32>>,
        dlogits: Rd<'_, DevBuf<f32>>,
        inp: Rd<'_, DevBuf<f16>>,
        (n, c, v): (usize, usize, usize),
    ) -> Result<()> {
        let dev = self.dev;
        let wte = self.p(ParamId::Wte, 0)?;
        let rte = self.layout.range(ParamId::Wte);
        widen(dev, &self.s.w32, wte)?;
        widen(dev, &self.s.x32, inp.view()?)?;
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
        let dlogits = dlogits.view()?;
        dev.gemm(&g, self.s.w32.view(0..v * c)?, dlogits, dinp.view_mut()?)?;
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
        let x32 = self.s.x32.view(0..n * c)?;
        dev.gemm(
            &g,
            x32,
            dlogits,
            self.grads
                .as_deref_mut()
                .ok_or(ModelError::NoForward)?
                .view_mut(rte)?,
        )
    }

    fn layernorm_bwd(
        &mut self,
        dinp: Wr<'_, DevBuf<f32>>,
        dout: Rd<'_, DevBuf<f32>>,
        inp: Rd<'_, DevBuf<f16>>,
        (mean, rstd): (Rd<'_, DevBuf<f32>>, Rd<'_, DevBuf<f32>>),
        ln: Weights,
        l: usize,
        (n, c): (usize, usize),
    ) -> Result<()> {
        let w = self.p(ln.w, l)?;
        let (rw, rb) = (
            self.layout.layer_range(ln.w, l),
            self.layout.layer_range(ln.b, l),
        );
        let dev = self.dev;
        let grads = self.grads()?;
        let (dout, inp, mean, rstd) = (dout.view()?, inp.view()?, mean.view()?, rstd.view()?);
        let (ni, cc) = (ci("N", n)?, ci("C", c)?);
        kernels::LayernormBwdV1 {
            dinp: dinp.view()?.ptr(),
            dout: dout.ptr(),
            inp: inp.ptr(),
            w: w.ptr(),
            mean: mean.ptr(),
            rstd: rstd.ptr(),
            n: ni,
            c: cc,
        }
        .launch(dev, items(kernels::LayernormBwdV1::NAME, n)?)?;
        kernels::LayernormBwdParamsV1 {
            dw: grads.view(rw)?.ptr(),
            db: grads.view(rb)?.ptr(),
            dout: dout.ptr(),
            inp: inp.ptr(),
            mean: mean.ptr(),
            rstd: rstd.ptr(),
            n: ni,
            c: cc,
        }
        .launch(dev, items(kernels::LayernormBwdParamsV1::NAME, c)?)
    }

    /// Column-major: `dinpᵀ (K×N) = W (K×M) · doutᵀ`, i.e. `gemm(T, N, m = K, n = N, k = M)` on
    /// the stored `Wᵀ`; `dWᵀ (M×K) = doutᵀ (M×N) · inp (N×K)`, i.e. `gemm(N, T, m = M, n = K,
    /// k = N)`; both in f32 on f32 copies of the f16 operands.
    fn matmul_bwd(
        &mut self,
        dinp: Wr<'_, DevBuf<f32>>,
        dout: Rd<'_, DevBuf<f32>>,
        inp: Rd<'_, DevBuf<f16>>,
        lin: Weights,
        l: usize,
        (n, k, m): (usize, usize, usize),
    ) -> Result<()> {
        let w = self.p(lin.w, l)?;
        let (rw, rb) = (
            self.layout.layer_range(lin.w, l),
            self.layout.layer_range(lin.b, l),
        );
        let dev = self.dev;
        let dout = dout.view()?;
        widen(dev, &self.s.w32, w)?;
        widen(dev, &self.s.x32, inp.view()?)?;
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
        dev.gemm(&g, self.s.w32.view(0..k * m)?, dout, dinp.view_mut()?)?;
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
        let x32 = self.s.x32.view(0..n * k)?;
        // dW (a GEMM output) needs the buffer mutably; dbias is written by a kernel through a
        // shared view afterwards, so the two borrows do not overlap.
        let grads = self.grads.as_deref_mut().ok_or(ModelError::NoForward)?;
        dev.gemm(&g, dout, x32, grads.view_mut(rw)?)?;
        kernels::BiasGradV1 {
            dbias: grads.view(rb)?.ptr(),
            dout: dout.ptr(),
            n: ci("N", n)?,
            oc: ci("OC", m)?,
        }
        .launch(dev, items(kernels::BiasGradV1::NAME, m)?)
    }

    fn gelu_bwd(
        &mut self,
        dinp: Wr<'_, DevBuf<f32>>,
        inp: Rd<'_, DevBuf<f16>>,
        dout: Rd<'_, DevBuf<f32>>,
    ) -> Result<()> {
        let n = dinp.len;
        kernels::GeluBwdV1 {
            dinp: dinp.view()?.ptr(),
            inp: inp.view()?.ptr(),
            dout: dout.view()?.ptr(),
            n: ci("gelu", n)?,
        }
        .launch(self.dev, items(kernels::GeluBwdV1::NAME, n)?)
    }

    fn attention_bwd(
        &mut self,
        dqkv: Wr<'_, DevBuf<f32>>,
        datty: Rd<'_, DevBuf<f32>>,
        qkv: Rd<'_, DevBuf<f16>>,
        att: Rd<'_, DevBuf<f16>>,
        Heads { b, t, c, nh }: Heads,
    ) -> Result<()> {
        let (dqkv, datty, qkv, att) = (dqkv.view()?, datty.view()?, qkv.view()?, att.view()?);
        let (bi, ti, ci_, nhi) = (ci("B", b)?, ci("T", t)?, ci("C", c)?, ci("NH", nh)?);
        // One signature, two kernels: the query half, then the key/value half.
        macro_rules! attention_bwd {
            ($k:ident) => {
                kernels::$k {
                    dqkv: dqkv.ptr(),
                    dscores: self.s.probs.ptr(),
                    datty: datty.ptr(),
                    qkv: qkv.ptr(),
                    att: att.ptr(),
                    b: bi,
                    t: ti,
                    c: ci_,
                    nh: nhi,
                }
                .launch(self.dev, items(kernels::$k::NAME, b * nh * t)?)
            };
        }
        attention_bwd!(AttentionBwdQV1)?;
        attention_bwd!(AttentionBwdKvV1)
    }

    fn encoder_bwd(
        &mut self,
        dout: Rd<'_, DevBuf<f32>>,
        tokens: Rd<'_, DevBuf<u32>>,
        (n, t, c, v): (usize, usize, usize, usize),
    ) -> Result<()> {
        let (rte, rpe) = (
            self.layout.range(ParamId::Wte),
            self.layout.range(ParamId::Wpe),
        );
        let dev = self.dev;
        let grads = self.grads()?;
        let dout = dout.view()?;
        kernels::EncoderBwdWteV1 {
            dwte: grads.view(rte)?.ptr(),
            dout: dout.ptr(),
            tokens: tokens.view()?.ptr(),
            n: ci("N", n)?,
            c: ci("C", c)?,
            v: ci("V", v)?,
        }
        .launch(dev, items(kernels::EncoderBwdWteV1::NAME, v * c)?)?;
        kernels::EncoderBwdWpeV1 {
            dwpe: grads.view(rpe)?.ptr(),
            dout: dout.ptr(),
            n: ci("N", n)?,
            t: ci("T", t)?,
            c: ci("C", c)?,
        }
        .launch(dev, items(kernels::EncoderBwdWpeV1::NAME, t * c)?)
    }
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
    cache: Cache<Dev>,
    scratch: Scratch,
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
        kernels::FillF32V1 {
            x: self.grads.ptr(),
            value: 0.0,
            n: ci("P", p)?,
        }
        .launch(self.dev, items(kernels::FillF32V1::NAME, p)?)
    }

    /// Forward pass over tokens (B, T); saves activations; returns logits (B, T, V) f32
    /// (downloaded; they also stay on the device for [`DeviceGpt::loss_head`]).
    pub fn forward(&mut self, tokens: &[u32], b: usize, t: usize) -> Result<Vec<f32>> {
        self.forward_resident(tokens, b, t)?;
        let a = self.acts.as_ref().ok_or(ModelError::NoForward)?;
        self.dev.dtoh(a.fwd.logits.buf())
    }

    /// The forward pass, leaving the logits on the device.
    pub fn forward_resident(&mut self, tokens: &[u32], b: usize, t: usize) -> Result<()> {
        let n = check_tokens(&self.cfg, "forward", tokens, b, t)?;
        if !self
            .acts
            .as_ref()
            .is_some_and(|a| a.fwd.b == b && a.fwd.t == t)
        {
            self.acts = None; // free the old buffers first
            self.acts = Some(DevActs::new(self.dev, &self.cfg, b, t)?);
        }
        self.forwarded = false;
        let a = self.acts.as_mut().ok_or(ModelError::NoForward)?;
        let mut x = DevExec {
            dev: self.dev,
            params: &self.params,
            layout: &self.layout,
            grads: None,
            s: &mut a.scratch,
        };
        seq::forward(&mut x, &self.cfg, &mut a.fwd, tokens)?;
        // The loss head reads f16 logits.
        let nv = n * self.cfg.vocab;
        kernels::CastF32F16V1 {
            out: a.logits16.ptr(),
            inp: a.fwd.logits.buf().ptr(),
            n: ci("N·V", nv)?,
        }
        .launch(self.dev, items(kernels::CastF32F16V1::NAME, nv)?)?;
        self.forwarded = true;
        Ok(())
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
            GradDst::F32(a.bwd.dlogits.buf_mut().into()),
            plan,
        )
    }

    /// The policy-update plan of the loss head on the last forward's resident f16 logits
    /// ([`crate::head::launch::DeviceHead::update`]): `inp.adv_base` is the given `α·A_base`,
    /// one fused launch writes the statistics, the loss and dlogits (left on the device for
    /// [`DeviceGpt::backward_resident`]). `inp.logits` is not read (pass `&[]`).
    pub fn loss_head_update(
        &mut self,
        inp: &HeadInputs,
        cfg: &HeadConfig,
        block: u32,
    ) -> Result<UpdateStats> {
        if !self.forwarded {
            return Err(ModelError::NoForward.into());
        }
        if inp.vocab != self.cfg.vocab {
            return Err(Error::shape("vocab", self.cfg.vocab, inp.vocab));
        }
        let a = self.acts.as_mut().ok_or(ModelError::NoForward)?;
        loss_head_update_resident(
            self.dev,
            &mut a.logits16,
            inp,
            cfg,
            GradDst::F32(a.bwd.dlogits.buf_mut().into()),
            block,
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
        let n = a.fwd.b * a.fwd.t;
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
        kernels::MaskLogitsV1 {
            logits: a.logits16.ptr(),
            mask: m.ptr(),
            n: ci("N", n)?,
            v: ci("V", v)?,
            w: ci("W", w)?,
        }
        .launch(self.dev, items(kernels::MaskLogitsV1::NAME, n * v)?)
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
        let dst = a.bwd.dlogits.buf_mut(); // (B, T, V) f32
        if dlogits.len() != dst.len() {
            return Err(ModelError::Shape {
                op: "backward",
                expected: dst.len(),
                got: dlogits.len(),
            }
            .into());
        }
        self.dev.write(dst, dlogits)?;
        self.backward_resident()
    }

    /// Backward pass from the dlogits on the device (written by [`DeviceGpt::loss_head`]).
    pub fn backward_resident(&mut self) -> Result<()> {
        if !self.forwarded {
            return Err(ModelError::NoForward.into());
        }
        let a = self.acts.as_mut().ok_or(ModelError::NoForward)?;
        let mut x = DevExec {
            dev: self.dev,
            params: &self.params,
            layout: &self.layout,
            grads: Some(&mut self.grads),
            s: &mut a.scratch,
        };
        seq::backward(&mut x, &self.cfg, &a.fwd, &mut a.bwd)
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
        opt.check_len(self.layout.total())?;
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
        kernels::SumsqV1 {
            partial: partial.ptr(),
            x: self.grads.ptr(),
            n: ci("P", p)?,
        }
        .launch(
            dev,
            LaunchCfg {
                grid: u32::try_from(blocks)
                    .map_err(|_| Error::shape("sumsq", "<= 1024", blocks))?,
                block: BLOCK,
                smem: 0,
            },
        )?;
        let norm = dev
            .dtoh(&partial)?
            .iter()
            .map(|&x| f64::from(x))
            .sum::<f64>()
            .sqrt() as f32;
        let k = begin_step(&o.cfg, &mut o.t, norm);
        for id in ParamId::ALL {
            let r = self.layout.range(id);
            let wd = o.cfg.decay(id);
            let len = r.len();
            kernels::AdamwV1 {
                params: self.params.view(r.clone())?.ptr(),
                master: o.master.view(r.clone())?.ptr(),
                m: o.m.view(r.clone())?.ptr(),
                v: o.v.view(r.clone())?.ptr(),
                grads: self.grads.view(r)?.ptr(),
                n: ci("P", len)?,
                lr: k.lr,
                beta1: k.b1,
                beta2: k.b2,
                c1: k.c1,
                c2: k.c2,
                eps: k.eps,
                wd,
                gscale: k.scale,
            }
            .launch(dev, items(kernels::AdamwV1::NAME, len)?)?;
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
            cache: Cache::alloc(dev, &self.cfg, b)?,
            scratch: Scratch {
                acc: dev.zeros(b * (4 * c).max(v))?,
                probs: dev.zeros(b * nh * mt)?,
                w32: dev.zeros(0)?,
                x32: dev.zeros(0)?,
            },
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
        let mut x = DevExec {
            dev: self.dev,
            params: &self.params,
            layout: &self.layout,
            grads: None,
            s: &mut kc.scratch,
        };
        seq::decode_step(&mut x, &self.cfg, &mut kc.cache, tokens, pos, logits)
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
        sample_with(self, prompts, b, p, params, rng, mask)
    }
}

impl Decode for DeviceGpt<'_> {
    type Cache = DevKvCache;
    type Error = Error;
    fn cfg(&self) -> &GptConfig {
        &self.cfg
    }
    fn cache(&self, b: usize) -> Result<DevKvCache> {
        self.kv_cache(b)
    }
    fn step(
        &self,
        c: &mut DevKvCache,
        tokens: &[u32],
        pos: usize,
        logits: &mut [f32],
    ) -> Result<()> {
        self.decode_step(c, tokens, pos, logits)
    }
}
