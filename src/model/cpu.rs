//! The op list of the model, CPU reference: one function per op, forward and backward.
//!
//! Every op reads storage elements ([`Elem`]) and computes in `f32`. Rows (tokens) or sequences
//! are split across rayon; every reduction runs in a fixed order, so results are deterministic
//! for a given thread count. Matrix products go through `matrixmultiply::sgemm` on `f32`
//! (inputs are widened from `E` once per call).
//!
//! Shapes: `N = B·T` rows; `C`, `NH`, `hs = C/NH`, `V`, `maxT` as in the module docs.

use std::time::{Duration, Instant};

use rayon::prelude::*;

use super::{Elem, ModelError, Result};

/// LayerNorm epsilon (GPT-2).
pub const LN_EPS: f32 = 1e-5;
/// sqrt(2/π), the tanh-GELU constant.
const GELU_SCALE: f32 = 0.797_884_6;

/// The ops a backend provides (each has a forward and a backward).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `encoder_*`: token + position embedding.
    Encoder,
    /// `layernorm_*`
    LayerNorm,
    /// `matmul_*`: `x · W + b` with `W: (in, out)`.
    Matmul,
    /// `attention_*`: causal multi-head softmax attention (also `attention_decode`).
    Attention,
    /// `gelu_*`: tanh-GELU.
    Gelu,
    /// `residual_*`: residual add (its backward is a pass-through folded into the others).
    Residual,
    /// `logits_*`: `x · wteᵀ` (tied output embedding).
    Logits,
    /// AdamW update (outside the model's forward/backward, timed by the optimizer's caller).
    AdamW,
}

impl Op {
    /// All ops, in profile order.
    pub const ALL: [Op; 8] = [
        Op::Encoder,
        Op::LayerNorm,
        Op::Matmul,
        Op::Attention,
        Op::Gelu,
        Op::Residual,
        Op::Logits,
        Op::AdamW,
    ];
}

/// Direction of an op.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pass {
    /// Forward.
    Forward = 0,
    /// Backward.
    Backward = 1,
}

/// Wall time spent per op and pass.
#[derive(Debug, Clone, Default)]
pub struct Profile {
    /// `time[op as usize][pass as usize]`
    pub time: [[Duration; 2]; 8],
}

impl Profile {
    /// Adds the time since `t0` to `(op, pass)`.
    pub fn add(&mut self, op: Op, pass: Pass, t0: Instant) {
        self.time[op as usize][pass as usize] += t0.elapsed();
    }

    /// Total time recorded.
    pub fn total(&self) -> Duration {
        self.time.iter().flatten().sum()
    }
}

// ----------------------------------------------------------------------------------------------
// matrix products

/// Checks that a strided (rows, cols) matrix fits in a buffer of `len` elements.
fn check_strided(
    op: &'static str,
    rows: usize,
    cols: usize,
    rs: usize,
    cs: usize,
    len: usize,
) -> Result<()> {
    if rows == 0 || cols == 0 {
        return Ok(());
    }
    let last = (rows - 1)
        .checked_mul(rs)
        .and_then(|r| r.checked_add((cols - 1).checked_mul(cs)?))
        .ok_or(ModelError::Overflow { what: op })?;
    if last >= len {
        return Err(ModelError::Shape {
            op,
            expected: last + 1,
            got: len,
        });
    }
    Ok(())
}

/// A strided, read-only `f32` matrix operand: `(row stride, column stride)` in elements.
#[derive(Clone, Copy)]
pub struct Mat<'a> {
    /// Backing buffer.
    pub data: &'a [f32],
    /// Row stride.
    pub rs: usize,
    /// Column stride.
    pub cs: usize,
}

impl<'a> Mat<'a> {
    /// Row-major matrix with `cols` columns.
    pub fn rows(data: &'a [f32], cols: usize) -> Self {
        Self {
            data,
            rs: cols,
            cs: 1,
        }
    }
    /// The transpose of a row-major matrix with `cols` columns.
    pub fn trans(data: &'a [f32], cols: usize) -> Self {
        Self {
            data,
            rs: 1,
            cs: cols,
        }
    }
}

/// out (m, n) = beta·out + a (m, k) · b (k, n) on the calling thread; `out` is row-major.
fn gemm_seq(
    m: usize,
    k: usize,
    n: usize,
    a: Mat,
    b: Mat,
    beta: f32,
    out: &mut [f32],
) -> Result<()> {
    const OP: &str = "gemm";
    check_strided(OP, m, k, a.rs, a.cs, a.data.len())?;
    check_strided(OP, k, n, b.rs, b.cs, b.data.len())?;
    let need = m.checked_mul(n).ok_or(ModelError::Overflow { what: OP })?;
    if out.len() < need {
        return Err(ModelError::Shape {
            op: OP,
            expected: need,
            got: out.len(),
        });
    }
    if m == 0 || n == 0 {
        return Ok(());
    }
    if k == 0 {
        out[..need].iter_mut().for_each(|o| *o *= beta);
        return Ok(());
    }
    let isz = |x: usize| isize::try_from(x).map_err(|_| ModelError::Overflow { what: OP });
    let (rsa, csa, rsb, csb, rsc) = (isz(a.rs)?, isz(a.cs)?, isz(b.rs)?, isz(b.cs)?, isz(n)?);
    // SAFETY: check_strided proved every element a[i·rsa + p·csa] (i < m, p < k) and
    // b[p·rsb + j·csb] (p < k, j < n) lies inside `a.data` / `b.data`, and `out` holds m·n
    // elements at row stride n, column stride 1; `out` is a unique borrow so C aliases nothing.
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            1.0,
            a.data.as_ptr(),
            rsa,
            csa,
            b.data.as_ptr(),
            rsb,
            csb,
            beta,
            out.as_mut_ptr(),
            rsc,
            1,
        );
    }
    Ok(())
}

/// Rows per parallel chunk for `m` rows: a few chunks per thread, at least 64 rows each (below
/// that, rayon's wake-ups cost more than the rows: measured on the decode path, B = 128).
fn rows_per_chunk(m: usize) -> usize {
    let chunks = 4 * rayon::current_num_threads().max(1);
    m.div_ceil(chunks).max(MIN_ROWS)
}

/// Fewest rows (tokens) per rayon task in the row-parallel ops.
const MIN_ROWS: usize = 64;

/// out (m, n) = beta·out + a (m, k) · b (k, n), rows of `out` split across rayon.
pub fn gemm(
    m: usize,
    k: usize,
    n: usize,
    a: Mat,
    b: Mat,
    beta: f32,
    out: &mut [f32],
) -> Result<()> {
    const OP: &str = "gemm";
    check_strided(OP, m, k, a.rs, a.cs, a.data.len())?;
    let need = m.checked_mul(n).ok_or(ModelError::Overflow { what: OP })?;
    if out.len() < need {
        return Err(ModelError::Shape {
            op: OP,
            expected: need,
            got: out.len(),
        });
    }
    if m == 0 || n == 0 {
        return Ok(());
    }
    let rows = rows_per_chunk(m);
    out[..need]
        .par_chunks_mut(rows * n)
        .enumerate()
        .try_for_each(|(i, oc)| {
            let r0 = i * rows;
            let mr = oc.len() / n;
            let a_sub = Mat {
                data: &a.data[r0 * a.rs..],
                rs: a.rs,
                cs: a.cs,
            };
            gemm_seq(mr, k, n, a_sub, b, beta, oc)
        })
}

/// Widens a storage slice to a new `f32` vector.
pub fn widen<E: Elem>(x: &[E]) -> Vec<f32> {
    let mut out = vec![0.0; x.len()];
    widen_into(x, &mut out);
    out
}

/// `E::widen`, with f16 converted 8 at a time inline where the CPU has F16C (half's slice
/// conversion makes a call per 8 elements, ~8% of a training step). Exact either way.
fn widen_into<E: Elem>(src: &[E], dst: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if E::DTYPE == safetensors::Dtype::F16 && std::arch::is_x86_feature_detected!("f16c") {
        if let Ok(bits) = bytemuck::try_cast_slice::<E, u16>(src) {
            // SAFETY: the CPU supports F16C and AVX (F16C implies AVX), checked just above.
            unsafe { f16c::widen(bits, dst) };
            return;
        }
    }
    E::widen(src, dst)
}

/// `E::narrow`, with f16 converted 8 at a time inline where the CPU has F16C; the same
/// round-to-nearest-even conversion (half uses this instruction too), so the same bits.
fn narrow_into<E: Elem>(src: &[f32], dst: &mut [E]) {
    #[cfg(target_arch = "x86_64")]
    if E::DTYPE == safetensors::Dtype::F16 && std::arch::is_x86_feature_detected!("f16c") {
        if let Ok(bits) = bytemuck::try_cast_slice_mut::<E, u16>(dst) {
            // SAFETY: the CPU supports F16C and AVX, checked just above.
            unsafe { f16c::narrow(src, bits) };
            return;
        }
    }
    E::narrow(src, dst)
}

/// f16 ⇄ f32 slice conversion with the F16C instructions, on f16 bit patterns.
#[cfg(target_arch = "x86_64")]
mod f16c {
    use half::f16;
    use std::arch::x86_64::{
        _mm256_cvtph_ps, _mm256_cvtps_ph, _mm256_loadu_ps, _mm256_storeu_ps, _mm_loadu_si128,
        _mm_storeu_si128, _MM_FROUND_TO_NEAREST_INT,
    };

    /// dst[i] = src[i] widened, for i < min(len).
    #[target_feature(enable = "avx,f16c")]
    pub(super) fn widen(src: &[u16], dst: &mut [f32]) {
        let n = src.len().min(dst.len());
        let (src, dst) = (&src[..n], &mut dst[..n]);
        let mut d8 = dst.chunks_exact_mut(8);
        let mut s8 = src.chunks_exact(8);
        for (s, d) in (&mut s8).zip(&mut d8) {
            // SAFETY: `s` holds 8 u16 (16 bytes) and `d` 8 f32 (32 bytes); both intrinsics
            // are unaligned accesses.
            unsafe {
                let h = _mm_loadu_si128(s.as_ptr().cast());
                _mm256_storeu_ps(d.as_mut_ptr(), _mm256_cvtph_ps(h));
            }
        }
        for (d, &s) in d8.into_remainder().iter_mut().zip(s8.remainder()) {
            *d = f16::from_bits(s).to_f32();
        }
    }

    /// dst[i] = src[i] rounded to nearest even, for i < min(len).
    #[target_feature(enable = "avx,f16c")]
    pub(super) fn narrow(src: &[f32], dst: &mut [u16]) {
        let n = src.len().min(dst.len());
        let (src, dst) = (&src[..n], &mut dst[..n]);
        let mut d8 = dst.chunks_exact_mut(8);
        let mut s8 = src.chunks_exact(8);
        for (s, d) in (&mut s8).zip(&mut d8) {
            // SAFETY: `s` holds 8 f32 (32 bytes) and `d` 8 u16 (16 bytes); both intrinsics
            // are unaligned accesses.
            unsafe {
                let h = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(_mm256_loadu_ps(s.as_ptr()));
                _mm_storeu_si128(d.as_mut_ptr().cast(), h);
            }
        }
        for (d, &s) in d8.into_remainder().iter_mut().zip(s8.remainder()) {
            *d = f16::from_f32(s).to_bits();
        }
    }
}

/// out (N, M) = inp (N, K) · w (K, M) + bias (M).
pub fn matmul_forward<E: Elem>(
    out: &mut [E],
    inp: &[E],
    w: &[E],
    bias: Option<&[E]>,
    (n, k, m): (usize, usize, usize),
) -> Result<()> {
    let wf = widen(w);
    let bf = bias.map(widen);
    if out.len() < n * m || inp.len() < n * k || wf.len() < k * m {
        return Err(ModelError::Shape {
            op: "matmul_forward",
            expected: n * m,
            got: out.len(),
        });
    }
    let rows = rows_per_chunk(n);
    out[..n * m]
        .par_chunks_mut(rows * m)
        .zip(inp[..n * k].par_chunks(rows * k))
        .try_for_each(|(oc, ic)| {
            let mr = oc.len() / m;
            let a = widen(ic);
            let mut o = vec![0.0f32; mr * m];
            if let Some(bf) = &bf {
                o.chunks_mut(m)
                    .for_each(|row| row.copy_from_slice(&bf[..m]));
            }
            gemm_seq(mr, k, m, Mat::rows(&a, k), Mat::rows(&wf, m), 1.0, &mut o)?;
            narrow_into(&o, oc);
            Ok(())
        })
}

/// dinp (N, K) = dout · wᵀ (overwritten); dw (K, M) += inpᵀ · dout; dbias (M) += Σ_rows dout.
///
/// The weight gradient has only K rows, too few to split, so it runs beside the row-parallel
/// dinp product (the two are equal work) instead of after it.
#[allow(clippy::too_many_arguments)]
pub fn matmul_backward<E: Elem>(
    dinp: &mut [f32],
    dw: &mut [f32],
    dbias: Option<&mut [f32]>,
    dout: &[f32],
    inp: &[E],
    w: &[E],
    (n, k, m): (usize, usize, usize),
) -> Result<()> {
    let (rd, rw) = rayon::join(
        || {
            let wf = widen(w);
            gemm(n, m, k, Mat::rows(dout, m), Mat::trans(&wf, m), 0.0, dinp)
        },
        || {
            let inpf = widen(inp);
            gemm(k, n, m, Mat::trans(&inpf, k), Mat::rows(dout, m), 1.0, dw)?;
            if let Some(db) = dbias {
                for row in dout.chunks_exact(m).take(n) {
                    db.iter_mut().zip(row).for_each(|(d, g)| *d += g);
                }
            }
            Ok(())
        },
    );
    rd.and(rw)
}

/// logits (N, V) f32 = inp (N, C) · wteᵀ.
pub fn logits_forward<E: Elem>(
    logits: &mut [f32],
    inp: &[E],
    wte: &[E],
    (n, c, v): (usize, usize, usize),
) -> Result<()> {
    let wf = widen(wte);
    let xf = widen(inp);
    gemm(n, c, v, Mat::rows(&xf, c), Mat::trans(&wf, c), 0.0, logits)
}

/// dinp (N, C) = dlogits · wte (overwritten); dwte (V, C) += dlogitsᵀ · inp (side by side, as in
/// [`matmul_backward`]).
pub fn logits_backward<E: Elem>(
    dinp: &mut [f32],
    dwte: &mut [f32],
    dlogits: &[f32],
    inp: &[E],
    wte: &[E],
    (n, c, v): (usize, usize, usize),
) -> Result<()> {
    let (rd, rw) = rayon::join(
        || {
            let wf = widen(wte);
            gemm(n, v, c, Mat::rows(dlogits, v), Mat::rows(&wf, c), 0.0, dinp)
        },
        || {
            let xf = widen(inp);
            gemm(
                v,
                n,
                c,
                Mat::trans(dlogits, v),
                Mat::rows(&xf, c),
                1.0,
                dwte,
            )
        },
    );
    rd.and(rw)
}

// ----------------------------------------------------------------------------------------------
// elementwise and row ops

/// out (N, C) = wte[tokens] + wpe[pos0 + i mod T]; tokens (N) already checked `< V`.
pub fn encoder_forward<E: Elem>(
    out: &mut [E],
    tokens: &[u32],
    wte: &[E],
    wpe: &[E],
    t: usize,
    pos0: usize,
    c: usize,
) {
    out.par_chunks_mut(c)
        .zip(tokens.par_iter())
        .enumerate()
        .for_each(|(i, (o, &tok))| {
            let tok = tok as usize; // u32 → usize is lossless on the 32/64-bit targets we build for
            let pos = pos0 + i % t;
            let mut we = widen(&wte[tok * c..(tok + 1) * c]);
            let pe = widen(&wpe[pos * c..(pos + 1) * c]);
            we.iter_mut().zip(&pe).for_each(|(a, b)| *a += b);
            narrow_into(&we, o);
        });
}

/// dwte (V, C) += scatter(dout); dwpe (maxT, C) += dout summed over B.
pub fn encoder_backward(
    dwte: &mut [f32],
    dwpe: &mut [f32],
    dout: &[f32],
    tokens: &[u32],
    t: usize,
    c: usize,
) {
    for (i, (d, &tok)) in dout.chunks_exact(c).zip(tokens).enumerate() {
        let tok = tok as usize;
        let pos = i % t;
        dwte[tok * c..(tok + 1) * c]
            .iter_mut()
            .zip(d)
            .for_each(|(w, g)| *w += g);
        dwpe[pos * c..(pos + 1) * c]
            .iter_mut()
            .zip(d)
            .for_each(|(w, g)| *w += g);
    }
}

/// out (N, C) = (inp − mean) · rstd · w + b; saves mean (N) and rstd (N).
pub fn layernorm_forward<E: Elem>(
    out: &mut [E],
    mean: &mut [f32],
    rstd: &mut [f32],
    inp: &[E],
    w: &[E],
    b: &[E],
    c: usize,
) {
    let (wf, bf) = (widen(w), widen(b));
    out.par_chunks_mut(c)
        .zip(inp.par_chunks(c))
        .zip(mean.par_iter_mut().zip(rstd.par_iter_mut()))
        .with_min_len(MIN_ROWS)
        .for_each_init(
            || vec![0.0f32; c],
            |xf, ((o, x), (mu, rs))| {
                widen_into(x, xf);
                let m = sum8(xf) / c as f32;
                let var = sqdev8(xf, m) / c as f32;
                let s = 1.0 / (var + LN_EPS).sqrt();
                for ((x, &w), &b) in xf.iter_mut().zip(&wf).zip(&bf) {
                    *x = (*x - m) * s * w + b;
                }
                narrow_into(xf, o);
                *mu = m;
                *rs = s;
            },
        );
}

/// dinp (N, C) += layernorm backward; dw (C) += Σ norm·dout; db (C) += Σ dout.
#[allow(clippy::too_many_arguments)]
pub fn layernorm_backward<E: Elem>(
    dinp: &mut [f32],
    dw: &mut [f32],
    db: &mut [f32],
    dout: &[f32],
    inp: &[E],
    w: &[E],
    mean: &[f32],
    rstd: &[f32],
    c: usize,
) {
    let wf = widen(w);
    let dx = || {
        dinp.par_chunks_mut(c)
            .zip(dout.par_chunks(c))
            .zip(inp.par_chunks(c))
            .zip(mean.par_iter().zip(rstd.par_iter()))
            .with_min_len(MIN_ROWS)
            .for_each_init(
                || vec![0.0f32; c],
                |norm, (((di, g), x), (&mu, &rs))| {
                    widen_into(x, norm);
                    norm.iter_mut().for_each(|x| *x = (*x - mu) * rs);
                    let (dmean, dnmean) = ln_sums8(&wf, g, norm);
                    let (dmean, dnmean) = (dmean / c as f32, dnmean / c as f32);
                    for (((d, &g), &n), &w) in di.iter_mut().zip(g).zip(norm.iter()).zip(&wf) {
                        *d += (w * g - dmean - n * dnmean) * rs;
                    }
                },
            )
    };
    // The parameter gradients sum over rows in row order on one thread, beside the rows above.
    let dparams = || {
        let mut norm = vec![0.0f32; c];
        for ((g, x), (&mu, &rs)) in dout
            .chunks_exact(c)
            .zip(inp.chunks_exact(c))
            .zip(mean.iter().zip(rstd))
        {
            widen_into(x, &mut norm);
            for (((dw, db), &g), &x) in dw.iter_mut().zip(db.iter_mut()).zip(g).zip(&norm) {
                *dw += (x - mu) * rs * g;
                *db += g;
            }
        }
    };
    rayon::join(dx, dparams);
}

/// Elements per conversion block of the elementwise ops (stack buffers, SIMD widen/narrow).
const BLOCK: usize = 256;

/// out = a + b (elementwise).
pub fn residual_forward<E: Elem>(out: &mut [E], a: &[E], b: &[E]) {
    out.par_chunks_mut(4096)
        .zip(a.par_chunks(4096))
        .zip(b.par_chunks(4096))
        .for_each(|((o, a), b)| {
            let (mut x, mut y) = ([0.0f32; BLOCK], [0.0f32; BLOCK]);
            for ((o, a), b) in o
                .chunks_mut(BLOCK)
                .zip(a.chunks(BLOCK))
                .zip(b.chunks(BLOCK))
            {
                let n = o.len();
                widen_into(a, &mut x[..n]);
                widen_into(b, &mut y[..n]);
                x[..n].iter_mut().zip(&y[..n]).for_each(|(x, y)| *x += y);
                narrow_into(&x[..n], o);
            }
        });
}

// ----------------------------------------------------------------------------------------------
// vector math

/// Defines `fn $name(args)` from a body written once: compiled for AVX2 too and dispatched at
/// run time where the CPU has it (8 lanes instead of SSE2's 4). The body uses no fused
/// multiply-add and Rust never contracts, so both versions give bit-identical results.
macro_rules! simd_fn {
    ($(#[$m:meta])* fn $name:ident($($a:ident: $t:ty),* $(,)?) $(-> $r:ty)? $body:block) => {
        $(#[$m])*
        fn $name($($a: $t),*) $(-> $r)? {
            #[inline(always)]
            fn generic($($a: $t),*) $(-> $r)? $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2")]
                fn avx2($($a: $t),*) $(-> $r)? {
                    generic($($a),*)
                }
                if std::arch::is_x86_feature_detected!("avx2") {
                    // SAFETY: the CPU supports AVX2 (checked just above), the only
                    // requirement of calling a `target_feature(enable = "avx2")` function.
                    return unsafe { avx2($($a),*) };
                }
            }
            generic($($a),*)
        }
    };
}

/// Combines 8 lane sums pairwise, in a fixed order.
#[inline(always)]
fn combine8(a: [f32; 8]) -> f32 {
    ((a[0] + a[4]) + (a[2] + a[6])) + ((a[1] + a[5]) + (a[3] + a[7]))
}

// The row sums below add element i into lane i mod 8 and combine the lanes with `combine8`:
// a fixed order (deterministic), but 8 independent chains instead of one latency-bound chain
// (the rows here are 16–256 long).

simd_fn! {
    /// Σ x.
    fn sum8(x: &[f32]) -> f32 {
        let mut acc = [0.0f32; 8];
        let mut it = x.chunks_exact(8);
        for c in &mut it {
            acc.iter_mut().zip(c).for_each(|(a, &v)| *a += v);
        }
        acc.iter_mut().zip(it.remainder()).for_each(|(a, &v)| *a += v);
        combine8(acc)
    }
}

simd_fn! {
    /// Σ a·b.
    fn dot8(a: &[f32], b: &[f32]) -> f32 {
        let mut acc = [0.0f32; 8];
        let (mut ia, mut ib) = (a.chunks_exact(8), b.chunks_exact(8));
        for (ca, cb) in (&mut ia).zip(&mut ib) {
            for ((s, &x), &y) in acc.iter_mut().zip(ca).zip(cb) {
                *s += x * y;
            }
        }
        for ((s, &x), &y) in acc.iter_mut().zip(ia.remainder()).zip(ib.remainder()) {
            *s += x * y;
        }
        combine8(acc)
    }
}

simd_fn! {
    /// Σ (x − m)².
    fn sqdev8(x: &[f32], m: f32) -> f32 {
        let mut acc = [0.0f32; 8];
        let mut it = x.chunks_exact(8);
        for c in &mut it {
            acc.iter_mut().zip(c).for_each(|(a, &v)| *a += (v - m) * (v - m));
        }
        acc.iter_mut()
            .zip(it.remainder())
            .for_each(|(a, &v)| *a += (v - m) * (v - m));
        combine8(acc)
    }
}

simd_fn! {
    /// (Σ w·g, Σ w·g·n): LayerNorm backward's two row sums.
    fn ln_sums8(w: &[f32], g: &[f32], n: &[f32]) -> (f32, f32) {
        let (mut a, mut b) = ([0.0f32; 8], [0.0f32; 8]);
        let (mut iw, mut ig, mut inn) = (w.chunks_exact(8), g.chunks_exact(8), n.chunks_exact(8));
        for ((cw, cg), cn) in (&mut iw).zip(&mut ig).zip(&mut inn) {
            for l in 0..8 {
                let wg = cw[l] * cg[l];
                a[l] += wg;
                b[l] += wg * cn[l];
            }
        }
        let tail = iw.remainder().iter().zip(ig.remainder()).zip(inn.remainder());
        for (l, ((&w, &g), &n)) in tail.enumerate() {
            a[l] += w * g;
            b[l] += w * g * n;
        }
        (combine8(a), combine8(b))
    }
}

simd_fn! {
    /// max(x·scale) (exact in any order; NaN ignored as by `f32::max`).
    fn max_scaled8(x: &[f32], scale: f32) -> f32 {
        let mut acc = [f32::NEG_INFINITY; 8];
        let mut it = x.chunks_exact(8);
        for c in &mut it {
            acc.iter_mut().zip(c).for_each(|(a, &v)| *a = a.max(v * scale));
        }
        acc.iter_mut()
            .zip(it.remainder())
            .for_each(|(a, &v)| *a = a.max(v * scale));
        acc.iter().fold(f32::NEG_INFINITY, |m, &a| m.max(a))
    }
}

/// e^x, branch-free so that loops over slices vectorize (libm's `expf` is a call per element):
/// Cody–Waite reduction x = n·ln2 + r, |r| ≤ ln2/2, Cephes' degree-7 polynomial for e^r
/// (≈ 1 ulp), 2^n built in the exponent bits. x is clamped to [−87.3, 88.3] so 2^n stays
/// normal and the result finite (below that e^x is < 2⁻¹²⁶, at which every caller's sum or
/// `1 + e` no longer sees it); NaN passes through.
#[inline(always)]
fn exp_fast(x: f32) -> f32 {
    const HI: f32 = 88.3;
    const LO: f32 = -87.3;
    // Adding 1.5·2²³ rounds to an integer and leaves it in the low mantissa bits.
    const SHIFT: f32 = 12_582_912.0;
    let x = x.clamp(LO, HI); // NaN stays NaN
    let t = x * std::f32::consts::LOG2_E + SHIFT;
    let n = t - SHIFT;
    let r = x - n * 0.693_359_4 - n * -2.121_944_4e-4;
    let p = ((((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2)
        * r
        + 0.166_666_65)
        * r
        + 0.5)
        * r)
        * r
        + r
        + 1.0;
    // t's bits are SHIFT's plus n (|n| ≤ 127); n + 127 is 2ⁿ's biased exponent.
    let e = (t.to_bits() as i32 - SHIFT.to_bits() as i32 + 127) << 23;
    p * f32::from_bits(e as u32)
}

/// tanh via exp: exact to a few f32 ulps in absolute terms, which is what `1 + tanh` needs.
/// Saturates correctly (e^2u clamps to 2¹²⁷ → 1, to ≈ 0 → −1).
#[inline(always)]
fn tanh_fast(u: f32) -> f32 {
    1.0 - 2.0 / (exp_fast(2.0 * u) + 1.0)
}

/// tanh-GELU of one value.
#[inline(always)]
fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + tanh_fast(GELU_SCALE * (x + 0.044715 * x * x * x)))
}

simd_fn! {
    /// x = gelu(x), elementwise.
    fn gelu_slice(x: &mut [f32]) {
        x.iter_mut().for_each(|v| *v = gelu(*v));
    }
}

simd_fn! {
    /// d = gelu'(x) · g, elementwise.
    fn gelu_grad_slice(d: &mut [f32], x: &[f32], g: &[f32]) {
        for ((d, &x), &g) in d.iter_mut().zip(x).zip(g) {
            let th = tanh_fast(GELU_SCALE * (x + 0.044715 * x * x * x));
            let sech2 = 1.0 - th * th;
            let local = 0.5 * (1.0 + th)
                + x * 0.5 * sech2 * GELU_SCALE * (1.0 + 3.0 * 0.044715 * x * x);
            *d = local * g;
        }
    }
}

simd_fn! {
    /// x = e^(x·scale − max), elementwise (the softmax numerators).
    fn exp_shifted(x: &mut [f32], scale: f32, max: f32) {
        x.iter_mut().for_each(|v| *v = exp_fast(*v * scale - max));
    }
}

/// out = gelu(inp) (elementwise).
pub fn gelu_forward<E: Elem>(out: &mut [E], inp: &[E]) {
    out.par_chunks_mut(4096)
        .zip(inp.par_chunks(4096))
        .for_each(|(o, x)| {
            let mut buf = [0.0f32; BLOCK];
            for (o, x) in o.chunks_mut(BLOCK).zip(x.chunks(BLOCK)) {
                let n = o.len();
                widen_into(x, &mut buf[..n]);
                gelu_slice(&mut buf[..n]);
                narrow_into(&buf[..n], o);
            }
        });
}

/// dinp = gelu'(inp) · dout (overwritten).
pub fn gelu_backward<E: Elem>(dinp: &mut [f32], inp: &[E], dout: &[f32]) {
    dinp.par_chunks_mut(4096)
        .zip(inp.par_chunks(4096))
        .zip(dout.par_chunks(4096))
        .for_each(|((d, x), g)| {
            let mut buf = [0.0f32; BLOCK];
            for ((d, x), g) in d
                .chunks_mut(BLOCK)
                .zip(x.chunks(BLOCK))
                .zip(g.chunks(BLOCK))
            {
                let n = d.len();
                widen_into(x, &mut buf[..n]);
                gelu_grad_slice(d, &buf[..n], g);
            }
        });
}

// ----------------------------------------------------------------------------------------------
// attention

/// Shape of an attention call.
#[derive(Debug, Clone, Copy)]
pub struct AttnShape {
    /// T
    pub t: usize,
    /// C
    pub c: usize,
    /// NH
    pub nh: usize,
}

/// Softmax attention of one query `q` (hs) over keys/values at rows `0..=last`;
/// `kv(t2)` gives (k, v) of row t2. Writes probabilities to `p` (last+1) and the output to `y` (hs).
#[inline]
fn attend_one<'a>(
    q: &[f32],
    last: usize,
    kv: impl Fn(usize) -> (&'a [f32], &'a [f32]),
    p: &mut [f32],
    y: &mut [f32],
) {
    let scale = 1.0 / (q.len() as f32).sqrt();
    let mut max = f32::NEG_INFINITY;
    for (t2, s) in p.iter_mut().enumerate().take(last + 1) {
        let (k, _) = kv(t2);
        let dot = dot8(q, k);
        *s = dot * scale;
        max = max.max(*s);
    }
    exp_shifted(&mut p[..=last], 1.0, max);
    let sum = sum8(&p[..=last]);
    let inv = 1.0 / sum;
    y.iter_mut().for_each(|v| *v = 0.0);
    for (t2, s) in p.iter_mut().enumerate().take(last + 1) {
        *s *= inv;
        let (_, v) = kv(t2);
        y.iter_mut().zip(v).for_each(|(y, v)| *y += *s * v);
    }
}

/// Adds a (T, hs) block into columns `off..off + hs` of a (T, stride) buffer.
fn add_cols(dst: &mut [f32], src: &[f32], stride: usize, off: usize, hs: usize) {
    for (d, s) in dst.chunks_mut(stride).zip(src.chunks_exact(hs)) {
        d[off..off + hs]
            .iter_mut()
            .zip(s)
            .for_each(|(d, s)| *d += s);
    }
}

/// atty (B, T, C) and att (B, NH, T, T) from qkv (B, T, 3C), causal.
///
/// Per (b, h): scores S = Q·Kᵀ (T, T) and Y = P·V (T, hs) are two small gemms on strided views
/// of qkv; the full T×T square is computed (twice the causal work) because sgemm is an order of
/// magnitude faster than the scalar triangle loop at hs = 16. The softmax reads only t2 ≤ t
/// and writes exact zeros above the diagonal, so P·V is causal.
pub fn attention_forward<E: Elem>(
    atty: &mut [E],
    att: &mut [E],
    qkv: &[E],
    s: AttnShape,
) -> Result<()> {
    let AttnShape { t, c, nh } = s;
    let hs = c / nh;
    let scale = 1.0 / (hs as f32).sqrt();
    atty.par_chunks_mut(t * c)
        .zip(att.par_chunks_mut(nh * t * t))
        .zip(qkv.par_chunks(t * 3 * c))
        .try_for_each(|((yb, ab), qb)| {
            let qf = widen(qb);
            let mut sc = vec![0.0f32; t * t];
            let mut yh = vec![0.0f32; t * hs];
            let mut y = vec![0.0f32; t * c];
            for h in 0..nh {
                let q = Mat {
                    data: &qf[h * hs..],
                    rs: 3 * c,
                    cs: 1,
                };
                let kt = Mat {
                    data: &qf[c + h * hs..],
                    rs: 1,
                    cs: 3 * c,
                };
                let v = Mat {
                    data: &qf[2 * c + h * hs..],
                    rs: 3 * c,
                    cs: 1,
                };
                gemm_seq(t, hs, t, q, kt, 0.0, &mut sc)?;
                for (ti, row) in sc.chunks_exact_mut(t).enumerate() {
                    let (live, dead) = row.split_at_mut(ti + 1);
                    let max = max_scaled8(live, scale);
                    exp_shifted(live, scale, max);
                    let sum = sum8(live);
                    let inv = 1.0 / sum;
                    live.iter_mut().for_each(|x| *x *= inv);
                    dead.iter_mut().for_each(|x| *x = 0.0);
                }
                narrow_into(&sc, &mut ab[h * t * t..][..t * t]);
                gemm_seq(t, t, hs, Mat::rows(&sc, t), v, 0.0, &mut yh)?;
                for (yr, hr) in y.chunks_exact_mut(c).zip(yh.chunks_exact(hs)) {
                    yr[h * hs..][..hs].copy_from_slice(hr);
                }
            }
            narrow_into(&y, yb);
            Ok(())
        })
}

/// dqkv (B, T, 3C) (overwritten) from datty (B, T, C), qkv and att.
///
/// Per (b, h), with P the saved probabilities (zero above the diagonal):
/// dP = dY·Vᵀ, dV = Pᵀ·dY, dS = P ⊙ (dP − rowsum(P ⊙ dP)) · scale, dQ = dS·K, dK = dSᵀ·Q.
pub fn attention_backward<E: Elem>(
    dqkv: &mut [f32],
    datty: &[f32],
    qkv: &[E],
    att: &[E],
    s: AttnShape,
) -> Result<()> {
    let AttnShape { t, c, nh } = s;
    let hs = c / nh;
    let scale = 1.0 / (hs as f32).sqrt();
    dqkv.par_chunks_mut(t * 3 * c)
        .zip(datty.par_chunks(t * c))
        .zip(qkv.par_chunks(t * 3 * c).zip(att.par_chunks(nh * t * t)))
        .try_for_each(|((dq, dy), (qb, ab))| {
            let qf = widen(qb);
            let af = widen(ab);
            dq.iter_mut().for_each(|v| *v = 0.0);
            let mut ds = vec![0.0f32; t * t];
            let mut tmp = vec![0.0f32; t * hs];
            for h in 0..nh {
                let p = &af[h * t * t..][..t * t];
                let g = Mat {
                    data: &dy[h * hs..],
                    rs: c,
                    cs: 1,
                };
                let q = Mat {
                    data: &qf[h * hs..],
                    rs: 3 * c,
                    cs: 1,
                };
                let k = Mat {
                    data: &qf[c + h * hs..],
                    rs: 3 * c,
                    cs: 1,
                };
                let vt = Mat {
                    data: &qf[2 * c + h * hs..],
                    rs: 1,
                    cs: 3 * c,
                };
                gemm_seq(t, hs, t, g, vt, 0.0, &mut ds)?; // dP
                gemm_seq(t, t, hs, Mat::trans(p, t), g, 0.0, &mut tmp)?; // dV
                add_cols(dq, &tmp, 3 * c, 2 * c + h * hs, hs);
                for (dr, pr) in ds.chunks_exact_mut(t).zip(p.chunks_exact(t)) {
                    let dot = dot8(dr, pr);
                    dr.iter_mut()
                        .zip(pr)
                        .for_each(|(d, p)| *d = p * (*d - dot) * scale);
                }
                gemm_seq(t, t, hs, Mat::rows(&ds, t), k, 0.0, &mut tmp)?; // dQ
                add_cols(dq, &tmp, 3 * c, h * hs, hs);
                gemm_seq(t, t, hs, Mat::trans(&ds, t), q, 0.0, &mut tmp)?; // dK
                add_cols(dq, &tmp, 3 * c, c + h * hs, hs);
            }
            Ok(())
        })
}

/// One decoding step of attention for B sequences at position `pos`: out (B, C) from the query
/// part of qkv (B, 3C) and the caches k, v (B, maxT, C) holding rows `0..=pos`.
pub fn attention_decode<E: Elem>(
    out: &mut [E],
    qkv: &[E],
    kc: &[E],
    vc: &[E],
    pos: usize,
    max_t: usize,
    s: AttnShape,
) {
    let AttnShape { c, nh, .. } = s;
    let hs = c / nh;
    out.par_chunks_mut(c)
        .zip(qkv.par_chunks(3 * c))
        .zip(kc.par_chunks(max_t * c).zip(vc.par_chunks(max_t * c)))
        .with_min_len(16)
        .for_each(|((yb, qb), (kb, vb))| {
            let qf = widen(&qb[..c]);
            let kf = widen(&kb[..(pos + 1) * c]);
            let vf = widen(&vb[..(pos + 1) * c]);
            let mut p = vec![0.0f32; pos + 1];
            let mut y = vec![0.0f32; hs];
            for h in 0..nh {
                let q = &qf[h * hs..][..hs];
                let kv = |t2: usize| (&kf[t2 * c + h * hs..][..hs], &vf[t2 * c + h * hs..][..hs]);
                attend_one(q, pos, kv, &mut p, &mut y);
                narrow_into(&y, &mut yb[h * hs..][..hs]);
            }
        });
}
