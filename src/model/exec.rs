//! The executor interface: the model's op list as one trait, [`Exec`], over preallocated storage
//! ([`Store`]), so that the op sequence ([`super::seq`]) is written once for the CPU
//! (`host::CpuExec`) and for a [`Device`](crate::device::Device) (`device::DevExec`).
//!
//! An op names the activation slots it reads and writes as [`Rd`] / [`Wr`] windows (one layer's
//! slice of a [`Stack`]) and its parameters as a [`Weights`] pair plus a layer index. Parameters
//! and their gradients belong to the executor: backward ops accumulate into the gradients of the
//! weights they name. Nothing is allocated per op; every output window is preallocated.

use std::ops::Range;

use super::params::ParamId;
use super::ModelError;

/// The buffer types of one executor and how to allocate them, so that activations and KV caches
/// ([`super::acts`]) are written once for every executor.
pub trait Store {
    /// A tensor of storage elements (`E` on the CPU, `f16` on a device).
    type Act: Len;
    /// An `f32` tensor.
    type F32: Len;
    /// A `u32` tensor (token ids).
    type Tok: Len;
    /// The executor's error.
    type Error: From<ModelError>;
    /// What allocates buffers: `()` on the host, the device otherwise.
    type Alloc: ?Sized;
    /// `n` zeroed storage elements.
    fn act(a: &Self::Alloc, n: usize) -> Result<Self::Act, Self::Error>;
    /// `n` zeroed `f32`.
    fn f32(a: &Self::Alloc, n: usize) -> Result<Self::F32, Self::Error>;
    /// `n` zeroed `u32`.
    fn tok(a: &Self::Alloc, n: usize) -> Result<Self::Tok, Self::Error>;
}

/// A buffer's element count.
pub trait Len {
    /// Number of elements.
    fn len(&self) -> usize;
    /// Whether the buffer holds no element.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<T> Len for Vec<T> {
    fn len(&self) -> usize {
        Vec::len(self)
    }
}

/// Equal slices of `n` elements in one buffer: a per-layer activation (L, …) indexed by layer, or
/// a single tensor (slice 0).
#[derive(Debug, Clone)]
pub struct Stack<B> {
    buf: B,
    /// Elements per slice.
    n: usize,
}

impl<B: Len> Stack<B> {
    /// `buf` seen as slices of `n` elements.
    pub fn new(buf: B, n: usize) -> Self {
        Self { buf, n }
    }

    /// The whole buffer.
    pub fn buf(&self) -> &B {
        &self.buf
    }

    /// The whole buffer, writable (the crate's own paths fill inputs through it).
    pub(crate) fn buf_mut(&mut self) -> &mut B {
        &mut self.buf
    }

    /// Slice `i` (layer `i`; 0 for a single tensor), to read.
    pub fn at(&self, i: usize) -> Rd<'_, B> {
        Rd {
            buf: &self.buf,
            off: i.saturating_mul(self.n),
            len: self.n,
        }
    }

    /// Slice `i`, to write.
    pub fn at_mut(&mut self, i: usize) -> Wr<'_, B> {
        Wr {
            off: i.saturating_mul(self.n),
            len: self.n,
            buf: &mut self.buf,
        }
    }
}

/// Elements `off..off + len` of a buffer, read by an op. An executor resolves it to a slice or a
/// device view, with an error (never a panic) if it lies outside the buffer.
pub struct Rd<'a, B> {
    /// The buffer.
    pub buf: &'a B,
    /// First element.
    pub off: usize,
    /// Element count.
    pub len: usize,
}

impl<B> Clone for Rd<'_, B> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<B> Copy for Rd<'_, B> {}

impl<B> Rd<'_, B> {
    /// The window's range in the buffer.
    pub fn range(&self) -> Range<usize> {
        self.off..self.off.saturating_add(self.len)
    }
}

/// Elements `off..off + len` of a buffer, written (or accumulated into) by an op.
pub struct Wr<'a, B> {
    /// The buffer.
    pub buf: &'a mut B,
    /// First element.
    pub off: usize,
    /// Element count.
    pub len: usize,
}

impl<B> Wr<'_, B> {
    /// The window's range in the buffer.
    pub fn range(&self) -> Range<usize> {
        self.off..self.off.saturating_add(self.len)
    }
}

/// The weight and bias of one layer op: a layernorm's (C) scale and shift, or a linear layer's
/// `W (K, M)` and `b (M)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Weights {
    /// The weight (scale) tensor.
    pub w: ParamId,
    /// The bias (shift) tensor.
    pub b: ParamId,
}

impl Weights {
    /// The pair `(w, b)`.
    pub const fn new(w: ParamId, b: ParamId) -> Self {
        Self { w, b }
    }
}

/// Shape of an attention op: B sequences of T positions, C channels in NH heads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heads {
    /// B
    pub b: usize,
    /// T
    pub t: usize,
    /// C
    pub c: usize,
    /// NH
    pub nh: usize,
}

/// Shape of a decoding step: B sequences, one token each at position `pos`, C channels in NH
/// heads, against a KV cache of maxT rows per sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    /// B
    pub b: usize,
    /// The position being decoded (`< maxT`); rows `0..=pos` of the cache are read.
    pub pos: usize,
    /// maxT
    pub max_t: usize,
    /// C
    pub c: usize,
    /// NH
    pub nh: usize,
}

/// The storage-element buffer of executor `X`.
pub type Act<X> = <<X as Exec>::S as Store>::Act;
/// The `f32` buffer of executor `X`.
pub type F32<X> = <<X as Exec>::S as Store>::F32;
/// The `u32` buffer of executor `X`.
pub type Tok<X> = <<X as Exec>::S as Store>::Tok;
/// The result of an op of executor `X`.
pub type Res<X> = Result<(), <<X as Exec>::S as Store>::Error>;

/// The op list. `E` below is the executor's storage element ([`Store::Act`]); `N` is the rows an
/// op runs over (B·T, or B when decoding). Parameters are read, and their gradients accumulated,
/// at layer `l` of the tensors a [`Weights`] names (layer 0 of a tensor not stacked over L).
pub trait Exec {
    /// The executor's buffers.
    type S: Store;

    /// dst (N) u32 = src (N), from the host.
    fn write_tokens(&mut self, dst: Wr<'_, Tok<Self>>, src: &[u32]) -> Res<Self>;
    /// dst (n) f32 = src (n), to the host.
    fn read_f32(&mut self, dst: &mut [f32], src: Rd<'_, F32<Self>>) -> Res<Self>;

    /// out (N, C) E = wte\[tokens\] + wpe\[pos0 + i mod T\] for tokens (N) u32 (`< V`), with
    /// `dims = (N, T, pos0, C)`.
    fn encoder_fwd(
        &mut self,
        out: Wr<'_, Act<Self>>,
        tokens: Rd<'_, Tok<Self>>,
        dims: (usize, usize, usize, usize),
    ) -> Res<Self>;
    /// out (N, C) E = (inp − mean) · rstd · w + b over inp (N, C) E; saves mean, rstd (N) f32.
    /// `dims = (N, C)`.
    #[allow(clippy::too_many_arguments)]
    fn layernorm_fwd(
        &mut self,
        out: Wr<'_, Act<Self>>,
        mean: Wr<'_, F32<Self>>,
        rstd: Wr<'_, F32<Self>>,
        inp: Rd<'_, Act<Self>>,
        ln: Weights,
        l: usize,
        dims: (usize, usize),
    ) -> Res<Self>;
    /// out (N, M) E = inp (N, K) E · W (K, M) + b (M), `dims = (N, K, M)`.
    fn matmul_fwd(
        &mut self,
        out: Wr<'_, Act<Self>>,
        inp: Rd<'_, Act<Self>>,
        lin: Weights,
        l: usize,
        dims: (usize, usize, usize),
    ) -> Res<Self>;
    /// Causal softmax attention: atty (B, T, C) E and the probabilities att (B, NH, T, T) E
    /// (zero above the diagonal) from qkv (B, T, 3C) E.
    fn attention_fwd(
        &mut self,
        atty: Wr<'_, Act<Self>>,
        att: Wr<'_, Act<Self>>,
        qkv: Rd<'_, Act<Self>>,
        s: Heads,
    ) -> Res<Self>;
    /// out = a + b, all (n) E.
    fn residual_fwd(
        &mut self,
        out: Wr<'_, Act<Self>>,
        a: Rd<'_, Act<Self>>,
        b: Rd<'_, Act<Self>>,
    ) -> Res<Self>;
    /// out = tanh-GELU(inp), both (n) E.
    fn gelu_fwd(&mut self, out: Wr<'_, Act<Self>>, inp: Rd<'_, Act<Self>>) -> Res<Self>;
    /// logits (N, V) f32 = inp (N, C) E · wteᵀ (the tied embedding), `dims = (N, C, V)`.
    fn logits_fwd(
        &mut self,
        logits: Wr<'_, F32<Self>>,
        inp: Rd<'_, Act<Self>>,
        dims: (usize, usize, usize),
    ) -> Res<Self>;

    /// Appends the keys and values of qkv (B, 3C) E at row `pos` of one layer's caches
    /// k, v (B, maxT, C) E.
    fn kv_append(
        &mut self,
        k: Wr<'_, Act<Self>>,
        v: Wr<'_, Act<Self>>,
        qkv: Rd<'_, Act<Self>>,
        s: Step,
    ) -> Res<Self>;
    /// out (B, C) E: attention of the queries in qkv (B, 3C) E over rows `0..=pos` of the caches
    /// k, v (B, maxT, C) E.
    fn attention_decode(
        &mut self,
        out: Wr<'_, Act<Self>>,
        qkv: Rd<'_, Act<Self>>,
        k: Rd<'_, Act<Self>>,
        v: Rd<'_, Act<Self>>,
        s: Step,
    ) -> Res<Self>;

    /// out (n) f32 = 0.
    fn fill_zero(&mut self, out: Wr<'_, F32<Self>>) -> Res<Self>;
    /// dinp (N, C) f32 = dlogits (N, V) f32 · wte (overwritten); dwte += dlogitsᵀ · inp (N, C) E.
    /// `dims = (N, C, V)`.
    fn logits_bwd(
        &mut self,
        dinp: Wr<'_, F32<Self>>,
        dlogits: Rd<'_, F32<Self>>,
        inp: Rd<'_, Act<Self>>,
        dims: (usize, usize, usize),
    ) -> Res<Self>;
    /// dinp (N, C) f32 += the layernorm backward of dout (N, C) f32 at inp (N, C) E with the saved
    /// mean, rstd (N) f32; dw, db (C) += their sums over rows. `dims = (N, C)`.
    #[allow(clippy::too_many_arguments)]
    fn layernorm_bwd(
        &mut self,
        dinp: Wr<'_, F32<Self>>,
        dout: Rd<'_, F32<Self>>,
        inp: Rd<'_, Act<Self>>,
        stats: (Rd<'_, F32<Self>>, Rd<'_, F32<Self>>),
        ln: Weights,
        l: usize,
        dims: (usize, usize),
    ) -> Res<Self>;
    /// dinp (N, K) f32 = dout (N, M) f32 · Wᵀ (overwritten); dW (K, M) += inpᵀ · dout with
    /// inp (N, K) E; db (M) += Σ_rows dout. `dims = (N, K, M)`.
    fn matmul_bwd(
        &mut self,
        dinp: Wr<'_, F32<Self>>,
        dout: Rd<'_, F32<Self>>,
        inp: Rd<'_, Act<Self>>,
        lin: Weights,
        l: usize,
        dims: (usize, usize, usize),
    ) -> Res<Self>;
    /// dinp = gelu'(inp) · dout (overwritten): dinp, dout (n) f32, inp (n) E.
    fn gelu_bwd(
        &mut self,
        dinp: Wr<'_, F32<Self>>,
        inp: Rd<'_, Act<Self>>,
        dout: Rd<'_, F32<Self>>,
    ) -> Res<Self>;
    /// dqkv (B, T, 3C) f32 (overwritten) from datty (B, T, C) f32, qkv (B, T, 3C) E and the saved
    /// probabilities att (B, NH, T, T) E.
    fn attention_bwd(
        &mut self,
        dqkv: Wr<'_, F32<Self>>,
        datty: Rd<'_, F32<Self>>,
        qkv: Rd<'_, Act<Self>>,
        att: Rd<'_, Act<Self>>,
        s: Heads,
    ) -> Res<Self>;
    /// dwte (V, C) += dout (N, C) f32 scattered by tokens (N) u32; dwpe (maxT, C) += dout summed
    /// over the B sequences. `dims = (N, T, C, V)`.
    fn encoder_bwd(
        &mut self,
        dout: Rd<'_, F32<Self>>,
        tokens: Rd<'_, Tok<Self>>,
        dims: (usize, usize, usize, usize),
    ) -> Res<Self>;
}
