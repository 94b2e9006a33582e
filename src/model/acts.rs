//! Activation buffers, generic over an executor's [`Store`]: the activations the forward saves for
//! the backward (llm.c `ActivationTensors`), the backward's activation-gradient scratch, and the
//! KV cache of decoding. `E` is the store's element (`Store::Act`).

use super::exec::{Stack, Store};
use super::host::Host;
use super::{Elem, GptConfig};

/// Forward activations for a batch of shape (B, T); per-layer buffers are stacked over L.
pub struct Acts<S: Store> {
    /// B
    pub b: usize,
    /// T
    pub t: usize,
    /// (B, T) u32: the input tokens.
    pub tokens: Stack<S::Tok>,
    /// (B, T, C) E: wte[token] + wpe[t].
    pub encoded: Stack<S::Act>,
    /// (L, B, T, C) E
    pub ln1: Stack<S::Act>,
    /// (L, B, T) f32
    pub ln1_mean: Stack<S::F32>,
    /// (L, B, T) f32
    pub ln1_rstd: Stack<S::F32>,
    /// (L, B, T, 3C) E: q, k, v, heads interleaved as in HF (head h at channels h·hs..).
    pub qkv: Stack<S::Act>,
    /// (L, B, T, C) E: attention output before the projection.
    pub atty: Stack<S::Act>,
    /// (L, B, NH, T, T) E: softmax probabilities (zero above the diagonal).
    pub att: Stack<S::Act>,
    /// (L, B, T, C) E: residual after attention.
    pub residual2: Stack<S::Act>,
    /// (L, B, T, C) E
    pub ln2: Stack<S::Act>,
    /// (L, B, T) f32
    pub ln2_mean: Stack<S::F32>,
    /// (L, B, T) f32
    pub ln2_rstd: Stack<S::F32>,
    /// (L, B, T, 4C) E: MLP pre-activation.
    pub fch: Stack<S::Act>,
    /// (L, B, T, 4C) E: gelu(fch).
    pub fch_gelu: Stack<S::Act>,
    /// (L, B, T, C) E: residual after the MLP (block output).
    pub residual3: Stack<S::Act>,
    /// (B, T, C) E: scratch for a projection's output before the residual add.
    pub proj: Stack<S::Act>,
    /// (B, T, C) E
    pub lnf: Stack<S::Act>,
    /// (B, T) f32
    pub lnf_mean: Stack<S::F32>,
    /// (B, T) f32
    pub lnf_rstd: Stack<S::F32>,
    /// (B, T, V) f32
    pub logits: Stack<S::F32>,
}

/// `l` slices of `n` storage elements.
fn act<S: Store>(a: &S::Alloc, l: usize, n: usize) -> Result<Stack<S::Act>, S::Error> {
    Ok(Stack::new(S::act(a, l * n)?, n))
}

/// `l` slices of `n` f32.
fn f32s<S: Store>(a: &S::Alloc, l: usize, n: usize) -> Result<Stack<S::F32>, S::Error> {
    Ok(Stack::new(S::f32(a, l * n)?, n))
}

/// One slice of `n` u32.
fn toks<S: Store>(a: &S::Alloc, n: usize) -> Result<Stack<S::Tok>, S::Error> {
    Ok(Stack::new(S::tok(a, n)?, n))
}

impl<S: Store> Acts<S> {
    /// Buffers for (B, T). Sizes were checked by the caller (`B·T·max(V, 4C, NH·T)·(L+1)` fits).
    pub fn new(alloc: &S::Alloc, cfg: &GptConfig, b: usize, t: usize) -> Result<Self, S::Error> {
        let (c, l, nh, v) = (cfg.d_model, cfg.layers, cfg.heads, cfg.vocab);
        let n = b * t;
        let nc = n * c;
        Ok(Self {
            b,
            t,
            tokens: toks::<S>(alloc, n)?,
            encoded: act::<S>(alloc, 1, nc)?,
            ln1: act::<S>(alloc, l, nc)?,
            ln1_mean: f32s::<S>(alloc, l, n)?,
            ln1_rstd: f32s::<S>(alloc, l, n)?,
            qkv: act::<S>(alloc, l, 3 * nc)?,
            atty: act::<S>(alloc, l, nc)?,
            att: act::<S>(alloc, l, b * nh * t * t)?,
            residual2: act::<S>(alloc, l, nc)?,
            ln2: act::<S>(alloc, l, nc)?,
            ln2_mean: f32s::<S>(alloc, l, n)?,
            ln2_rstd: f32s::<S>(alloc, l, n)?,
            fch: act::<S>(alloc, l, 4 * nc)?,
            fch_gelu: act::<S>(alloc, l, 4 * nc)?,
            residual3: act::<S>(alloc, l, nc)?,
            proj: act::<S>(alloc, 1, nc)?,
            lnf: act::<S>(alloc, 1, nc)?,
            lnf_mean: f32s::<S>(alloc, 1, n)?,
            lnf_rstd: f32s::<S>(alloc, 1, n)?,
            logits: f32s::<S>(alloc, 1, n * v)?,
        })
    }
}

/// Activation gradients of one layer, reused across layers (f32), and the loss gradient.
pub struct GradActs<S: Store> {
    /// (B, T, V) f32: the gradient flowing into the logits (the backward's input).
    pub dlogits: Stack<S::F32>,
    /// (B, T, C) f32: gradient of the residual stream at the current point.
    pub dresidual: Stack<S::F32>,
    /// (B, T, C) f32: gradient of a layernorm output (ln1, ln2 or lnf).
    pub dln: Stack<S::F32>,
    /// (B, T, C) f32
    pub datty: Stack<S::F32>,
    /// (B, T, 3C) f32
    pub dqkv: Stack<S::F32>,
    /// (B, T, 4C) f32
    pub dfch: Stack<S::F32>,
    /// (B, T, 4C) f32
    pub dfch_gelu: Stack<S::F32>,
}

impl<S: Store> GradActs<S> {
    /// Buffers for (B, T).
    pub fn new(alloc: &S::Alloc, cfg: &GptConfig, b: usize, t: usize) -> Result<Self, S::Error> {
        let n = b * t;
        let nc = n * cfg.d_model;
        Ok(Self {
            dlogits: f32s::<S>(alloc, 1, n * cfg.vocab)?,
            dresidual: f32s::<S>(alloc, 1, nc)?,
            dln: f32s::<S>(alloc, 1, nc)?,
            datty: f32s::<S>(alloc, 1, nc)?,
            dqkv: f32s::<S>(alloc, 1, 3 * nc)?,
            dfch: f32s::<S>(alloc, 1, 4 * nc)?,
            dfch_gelu: f32s::<S>(alloc, 1, 4 * nc)?,
        })
    }
}

/// Keys and values of every layer for B sequences, plus the activations of one decoding step.
pub struct Cache<S: Store> {
    /// B
    pub b: usize,
    /// (L, B, maxT, C) E
    pub k: Stack<S::Act>,
    /// (L, B, maxT, C) E
    pub v: Stack<S::Act>,
    /// (B) u32: the step's tokens.
    pub(crate) tokens: Stack<S::Tok>,
    /// (B, C) E: residual stream of the current position.
    pub(crate) x: Stack<S::Act>,
    /// (B, C) E: residual after attention.
    pub(crate) x2: Stack<S::Act>,
    /// (B, C) E: a layernorm output.
    pub(crate) ln: Stack<S::Act>,
    /// (B) f32
    pub(crate) mean: Stack<S::F32>,
    /// (B) f32
    pub(crate) rstd: Stack<S::F32>,
    /// (B, 3C) E
    pub(crate) qkv: Stack<S::Act>,
    /// (B, C) E: attention output.
    pub(crate) atty: Stack<S::Act>,
    /// (B, C) E: a projection's output before the residual add.
    pub(crate) proj: Stack<S::Act>,
    /// (B, 4C) E
    pub(crate) fch: Stack<S::Act>,
    /// (B, 4C) E
    pub(crate) fch_gelu: Stack<S::Act>,
    /// (B, V) f32
    pub(crate) logits: Stack<S::F32>,
}

impl<S: Store> Cache<S> {
    /// An empty cache for B sequences of up to maxT tokens.
    pub fn alloc(alloc: &S::Alloc, cfg: &GptConfig, b: usize) -> Result<Self, S::Error> {
        let (c, l, t) = (cfg.d_model, cfg.layers, cfg.context);
        let n = b
            .checked_mul(t)
            .and_then(|x| x.checked_mul(c))
            .filter(|n| n.checked_mul(l).is_some())
            .ok_or(super::ModelError::Overflow { what: "kv cache" })?;
        let bc = b * c; // ≤ n
        Ok(Self {
            b,
            k: act::<S>(alloc, l, n)?,
            v: act::<S>(alloc, l, n)?,
            tokens: toks::<S>(alloc, b)?,
            x: act::<S>(alloc, 1, bc)?,
            x2: act::<S>(alloc, 1, bc)?,
            ln: act::<S>(alloc, 1, bc)?,
            mean: f32s::<S>(alloc, 1, b)?,
            rstd: f32s::<S>(alloc, 1, b)?,
            qkv: act::<S>(alloc, 1, 3 * bc)?,
            atty: act::<S>(alloc, 1, bc)?,
            proj: act::<S>(alloc, 1, bc)?,
            fch: act::<S>(alloc, 1, 4 * bc)?,
            fch_gelu: act::<S>(alloc, 1, 4 * bc)?,
            logits: f32s::<S>(alloc, 1, b * cfg.vocab)?,
        })
    }
}

/// `Clone` and `Debug` of a host buffer set: derive would demand them of every store's buffers,
/// and device buffers have neither.
macro_rules! host_impls {
    ($ty:ident { $($f:ident),* $(,)? }) => {
        impl<E: Elem> Clone for $ty<Host<E>> {
            fn clone(&self) -> Self {
                Self { $($f: self.$f.clone()),* }
            }
        }
        impl<E: Elem> std::fmt::Debug for $ty<Host<E>> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($ty))$(.field(stringify!($f), &self.$f))*.finish()
            }
        }
    };
}

host_impls!(Acts {
    b,
    t,
    tokens,
    encoded,
    ln1,
    ln1_mean,
    ln1_rstd,
    qkv,
    atty,
    att,
    residual2,
    ln2,
    ln2_mean,
    ln2_rstd,
    fch,
    fch_gelu,
    residual3,
    proj,
    lnf,
    lnf_mean,
    lnf_rstd,
    logits,
});
host_impls!(GradActs {
    dlogits,
    dresidual,
    dln,
    datty,
    dqkv,
    dfch,
    dfch_gelu,
});
host_impls!(Cache {
    b,
    k,
    v,
    tokens,
    x,
    x2,
    ln,
    mean,
    rstd,
    qkv,
    atty,
    proj,
    fch,
    fch_gelu,
    logits,
});
