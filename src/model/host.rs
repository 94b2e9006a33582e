//! The CPU executor: the op list of [`super::cpu`] behind [`Exec`], over host vectors, timing
//! each op into a [`Profile`] when given one.

use std::marker::PhantomData;
use std::ops::Range;
use std::time::Instant;

use super::cpu::{self, AttnShape, Op, Pass, Profile};
use super::exec::{Act, Exec, Heads, Rd, Res, Step, Store, Tok, Weights, Wr, F32};
use super::params::{ParamId, ParamLayout};
use super::{Elem, ModelError, Result};

/// The host store: storage elements `E`, `f32` and `u32` in `Vec`s.
#[derive(Debug, Clone, Copy, Default)]
pub struct Host<E>(PhantomData<E>);

/// A zeroed vector of `n` elements, if its bytes fit in `isize` (what `Vec` requires).
fn zeros<T: Copy + Default>(n: usize) -> Result<Vec<T>> {
    n.checked_mul(std::mem::size_of::<T>())
        .filter(|&by| isize::try_from(by).is_ok())
        .ok_or(ModelError::Overflow {
            what: "host buffer",
        })?;
    Ok(vec![T::default(); n])
}

impl<E: Elem> Store for Host<E> {
    type Act = Vec<E>;
    type F32 = Vec<f32>;
    type Tok = Vec<u32>;
    type Error = ModelError;
    type Alloc = ();
    fn act(_: &(), n: usize) -> Result<Vec<E>> {
        zeros(n)
    }
    fn f32(_: &(), n: usize) -> Result<Vec<f32>> {
        zeros(n)
    }
    fn tok(_: &(), n: usize) -> Result<Vec<u32>> {
        zeros(n)
    }
}

/// The window's elements, or a shape error if it lies outside the vector.
fn get<'a, T>(r: Rd<'a, Vec<T>>) -> Result<&'a [T]> {
    let len = r.buf.len();
    r.buf.get(r.range()).ok_or(ModelError::Shape {
        op: "activation window",
        expected: r.off.saturating_add(r.len),
        got: len,
    })
}

/// The window's elements, writable, or a shape error if it lies outside the vector.
fn get_mut<'a, T>(w: Wr<'a, Vec<T>>) -> Result<&'a mut [T]> {
    let (range, len) = (w.range(), w.buf.len());
    w.buf.get_mut(range).ok_or(ModelError::Shape {
        op: "activation window",
        expected: w.off.saturating_add(w.len),
        got: len,
    })
}

/// dst = src, or a shape error (`op`) if their lengths differ.
pub(crate) fn copy<T: Copy>(op: &'static str, dst: &mut [T], src: &[T]) -> Result<()> {
    if dst.len() != src.len() {
        return Err(ModelError::Shape {
            op,
            expected: dst.len(),
            got: src.len(),
        });
    }
    dst.copy_from_slice(src);
    Ok(())
}

/// Splits two disjoint ranges of `buf` into two mutable slices (`a` must end before `b` starts).
fn two_mut(buf: &mut [f32], a: Range<usize>, b: Range<usize>) -> Result<(&mut [f32], &mut [f32])> {
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

/// The CPU executor over a model's parameters (P) E; backward ops accumulate into `grads`.
pub(crate) struct CpuExec<'a, E> {
    /// (P) E, laid out by `layout`.
    pub params: &'a [E],
    /// The parameter layout.
    pub layout: &'a ParamLayout,
    /// (P) f32: the parameter gradients; `None` where only forward ops run (decoding).
    pub grads: Option<&'a mut [f32]>,
    /// Where op times go, if anywhere.
    pub profile: Option<&'a mut Profile>,
}

impl<'a, E: Elem> CpuExec<'a, E> {
    /// Layer `l`'s slice of a parameter tensor.
    fn p(&self, id: ParamId, l: usize) -> Result<&'a [E]> {
        let r = self.layout.layer_range(id, l);
        self.params.get(r.clone()).ok_or(ModelError::Shape {
            op: "parameters",
            expected: r.end,
            got: self.params.len(),
        })
    }

    /// The gradients, or an error where this executor has none.
    fn grads(&mut self) -> Result<&mut [f32]> {
        self.grads.as_deref_mut().ok_or(ModelError::NoForward)
    }

    /// The gradient slices of `(w, b)` at layer `l`.
    fn grads2(&mut self, wb: Weights, l: usize) -> Result<(&mut [f32], &mut [f32])> {
        let (rw, rb) = (
            self.layout.layer_range(wb.w, l),
            self.layout.layer_range(wb.b, l),
        );
        two_mut(self.grads()?, rw, rb)
    }

    /// Runs `f`, adding its wall time to `(op, pass)` of the profile.
    fn timed(&mut self, op: Op, pass: Pass, f: impl FnOnce(&mut Self) -> Result<()>) -> Result<()> {
        let t0 = Instant::now();
        let r = f(self);
        if let Some(p) = self.profile.as_deref_mut() {
            p.add(op, pass, t0);
        }
        r
    }
}

impl<E: Elem> Exec for CpuExec<'_, E> {
    type S = Host<E>;

    fn write_tokens(&mut self, dst: Wr<'_, Tok<Self>>, src: &[u32]) -> Res<Self> {
        copy("tokens", get_mut(dst)?, src)
    }

    fn read_f32(&mut self, dst: &mut [f32], src: Rd<'_, F32<Self>>) -> Res<Self> {
        copy("read", dst, get(src)?)
    }

    fn encoder_fwd(
        &mut self,
        out: Wr<'_, Act<Self>>,
        tokens: Rd<'_, Tok<Self>>,
        (_, t, pos0, c): (usize, usize, usize, usize),
    ) -> Res<Self> {
        self.timed(Op::Encoder, Pass::Forward, |x| {
            let (wte, wpe) = (x.p(ParamId::Wte, 0)?, x.p(ParamId::Wpe, 0)?);
            cpu::encoder_forward(get_mut(out)?, get(tokens)?, wte, wpe, t, pos0, c);
            Ok(())
        })
    }

    fn layernorm_fwd(
        &mut self,
        out: Wr<'_, Act<Self>>,
        mean: Wr<'_, F32<Self>>,
        rstd: Wr<'_, F32<Self>>,
        inp: Rd<'_, Act<Self>>,
        ln: Weights,
        l: usize,
        (_, c): (usize, usize),
    ) -> Res<Self> {
        self.timed(Op::LayerNorm, Pass::Forward, |x| {
            let (w, b) = (x.p(ln.w, l)?, x.p(ln.b, l)?);
            let (mean, rstd) = (get_mut(mean)?, get_mut(rstd)?);
            cpu::layernorm_forward(get_mut(out)?, mean, rstd, get(inp)?, w, b, c);
            Ok(())
        })
    }

    fn matmul_fwd(
        &mut self,
        out: Wr<'_, Act<Self>>,
        inp: Rd<'_, Act<Self>>,
        lin: Weights,
        l: usize,
        dims: (usize, usize, usize),
    ) -> Res<Self> {
        self.timed(Op::Matmul, Pass::Forward, |x| {
            let (w, b) = (x.p(lin.w, l)?, x.p(lin.b, l)?);
            cpu::matmul_forward(get_mut(out)?, get(inp)?, w, Some(b), dims)
        })
    }

    fn attention_fwd(
        &mut self,
        atty: Wr<'_, Act<Self>>,
        att: Wr<'_, Act<Self>>,
        qkv: Rd<'_, Act<Self>>,
        Heads { t, c, nh, .. }: Heads,
    ) -> Res<Self> {
        self.timed(Op::Attention, Pass::Forward, |_| {
            let shape = AttnShape { t, c, nh };
            cpu::attention_forward(get_mut(atty)?, get_mut(att)?, get(qkv)?, shape)
        })
    }

    fn residual_fwd(
        &mut self,
        out: Wr<'_, Act<Self>>,
        a: Rd<'_, Act<Self>>,
        b: Rd<'_, Act<Self>>,
    ) -> Res<Self> {
        self.timed(Op::Residual, Pass::Forward, |_| {
            cpu::residual_forward(get_mut(out)?, get(a)?, get(b)?);
            Ok(())
        })
    }

    fn gelu_fwd(&mut self, out: Wr<'_, Act<Self>>, inp: Rd<'_, Act<Self>>) -> Res<Self> {
        self.timed(Op::Gelu, Pass::Forward, |_| {
            cpu::gelu_forward(get_mut(out)?, get(inp)?);
            Ok(())
        })
    }

    fn logits_fwd(
        &mut self,
        logits: Wr<'_, F32<Self>>,
        inp: Rd<'_, Act<Self>>,
        dims: (usize, usize, usize),
    ) -> Res<Self> {
        self.timed(Op::Logits, Pass::Forward, |x| {
            let wte = x.p(ParamId::Wte, 0)?;
            cpu::logits_forward(get_mut(logits)?, get(inp)?, wte, dims)
        })
    }

    fn kv_append(
        &mut self,
        k: Wr<'_, Act<Self>>,
        v: Wr<'_, Act<Self>>,
        qkv: Rd<'_, Act<Self>>,
        Step {
            b, pos, max_t, c, ..
        }: Step,
    ) -> Res<Self> {
        let (k, v, qkv) = (get_mut(k)?, get_mut(v)?, get(qkv)?);
        let need = b * max_t * c;
        if k.len() < need || v.len() < need || qkv.len() < b * 3 * c || pos >= max_t {
            return Err(ModelError::Shape {
                op: "kv_append",
                expected: need,
                got: k.len().min(v.len()),
            });
        }
        for (bi, row) in qkv.chunks_exact(3 * c).take(b).enumerate() {
            k[(bi * max_t + pos) * c..][..c].copy_from_slice(&row[c..2 * c]);
            v[(bi * max_t + pos) * c..][..c].copy_from_slice(&row[2 * c..]);
        }
        Ok(())
    }

    fn attention_decode(
        &mut self,
        out: Wr<'_, Act<Self>>,
        qkv: Rd<'_, Act<Self>>,
        k: Rd<'_, Act<Self>>,
        v: Rd<'_, Act<Self>>,
        Step {
            pos, max_t, c, nh, ..
        }: Step,
    ) -> Res<Self> {
        let shape = AttnShape { t: 1, c, nh };
        cpu::attention_decode(
            get_mut(out)?,
            get(qkv)?,
            get(k)?,
            get(v)?,
            pos,
            max_t,
            shape,
        );
        Ok(())
    }

    fn fill_zero(&mut self, out: Wr<'_, F32<Self>>) -> Res<Self> {
        get_mut(out)?.iter_mut().for_each(|x| *x = 0.0);
        Ok(())
    }

    fn logits_bwd(
        &mut self,
        dinp: Wr<'_, F32<Self>>,
        dlogits: Rd<'_, F32<Self>>,
        inp: Rd<'_, Act<Self>>,
        dims: (usize, usize, usize),
    ) -> Res<Self> {
        self.timed(Op::Logits, Pass::Backward, |x| {
            let wte = x.p(ParamId::Wte, 0)?;
            let r = x.layout.range(ParamId::Wte);
            let (dwte, _) = two_mut(x.grads()?, r.clone(), r.end..r.end)?;
            cpu::logits_backward(get_mut(dinp)?, dwte, get(dlogits)?, get(inp)?, wte, dims)
        })
    }

    fn layernorm_bwd(
        &mut self,
        dinp: Wr<'_, F32<Self>>,
        dout: Rd<'_, F32<Self>>,
        inp: Rd<'_, Act<Self>>,
        (mean, rstd): (Rd<'_, F32<Self>>, Rd<'_, F32<Self>>),
        ln: Weights,
        l: usize,
        (_, c): (usize, usize),
    ) -> Res<Self> {
        self.timed(Op::LayerNorm, Pass::Backward, |x| {
            let w = x.p(ln.w, l)?;
            let (dw, db) = x.grads2(ln, l)?;
            let (mean, rstd) = (get(mean)?, get(rstd)?);
            cpu::layernorm_backward(
                get_mut(dinp)?,
                dw,
                db,
                get(dout)?,
                get(inp)?,
                w,
                mean,
                rstd,
                c,
            );
            Ok(())
        })
    }

    fn matmul_bwd(
        &mut self,
        dinp: Wr<'_, F32<Self>>,
        dout: Rd<'_, F32<Self>>,
        inp: Rd<'_, Act<Self>>,
        lin: Weights,
        l: usize,
        dims: (usize, usize, usize),
    ) -> Res<Self> {
        self.timed(Op::Matmul, Pass::Backward, |x| {
            let w = x.p(lin.w, l)?;
            let (dw, db) = x.grads2(lin, l)?;
            cpu::matmul_backward(get_mut(dinp)?, dw, Some(db), get(dout)?, get(inp)?, w, dims)
        })
    }

    fn gelu_bwd(
        &mut self,
        dinp: Wr<'_, F32<Self>>,
        inp: Rd<'_, Act<Self>>,
        dout: Rd<'_, F32<Self>>,
    ) -> Res<Self> {
        self.timed(Op::Gelu, Pass::Backward, |_| {
            cpu::gelu_backward(get_mut(dinp)?, get(inp)?, get(dout)?);
            Ok(())
        })
    }

    fn attention_bwd(
        &mut self,
        dqkv: Wr<'_, F32<Self>>,
        datty: Rd<'_, F32<Self>>,
        qkv: Rd<'_, Act<Self>>,
        att: Rd<'_, Act<Self>>,
        Heads { t, c, nh, .. }: Heads,
    ) -> Res<Self> {
        self.timed(Op::Attention, Pass::Backward, |_| {
            let shape = AttnShape { t, c, nh };
            cpu::attention_backward(get_mut(dqkv)?, get(datty)?, get(qkv)?, get(att)?, shape)
        })
    }

    fn encoder_bwd(
        &mut self,
        dout: Rd<'_, F32<Self>>,
        tokens: Rd<'_, Tok<Self>>,
        (_, t, c, _): (usize, usize, usize, usize),
    ) -> Res<Self> {
        self.timed(Op::Encoder, Pass::Backward, |x| {
            let (rte, rpe) = (x.layout.range(ParamId::Wte), x.layout.range(ParamId::Wpe));
            let (dwte, dwpe) = two_mut(x.grads()?, rte, rpe)?;
            cpu::encoder_backward(dwte, dwpe, get(dout)?, get(tokens)?, t, c);
            Ok(())
        })
    }
}
