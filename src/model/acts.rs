//! Activation buffers saved by the forward pass for the backward pass (llm.c `ActivationTensors`),
//! and the per-layer activation-gradient scratch of the backward pass.

use super::{Elem, GptConfig};

/// Forward activations for a batch of shape (B, T); per-layer buffers are stacked over L.
#[derive(Debug, Clone, Default)]
pub struct Acts<E> {
    /// B
    pub b: usize,
    /// T
    pub t: usize,
    /// (B, T) u32: the input tokens.
    pub tokens: Vec<u32>,
    /// (B, T, C) E: wte[token] + wpe[t].
    pub encoded: Vec<E>,
    /// (L, B, T, C) E
    pub ln1: Vec<E>,
    /// (L, B, T) f32
    pub ln1_mean: Vec<f32>,
    /// (L, B, T) f32
    pub ln1_rstd: Vec<f32>,
    /// (L, B, T, 3C) E: q, k, v, heads interleaved as in HF (head h at channels h·hs..).
    pub qkv: Vec<E>,
    /// (L, B, T, C) E: attention output before the projection.
    pub atty: Vec<E>,
    /// (L, B, NH, T, T) E: softmax probabilities (zero above the diagonal).
    pub att: Vec<E>,
    /// (L, B, T, C) E: residual after attention.
    pub residual2: Vec<E>,
    /// (L, B, T, C) E
    pub ln2: Vec<E>,
    /// (L, B, T) f32
    pub ln2_mean: Vec<f32>,
    /// (L, B, T) f32
    pub ln2_rstd: Vec<f32>,
    /// (L, B, T, 4C) E: MLP pre-activation.
    pub fch: Vec<E>,
    /// (L, B, T, 4C) E: gelu(fch).
    pub fch_gelu: Vec<E>,
    /// (L, B, T, C) E: residual after the MLP (block output).
    pub residual3: Vec<E>,
    /// (B, T, C) E: scratch for a projection's output before the residual add.
    pub proj: Vec<E>,
    /// (B, T, C) E
    pub lnf: Vec<E>,
    /// (B, T) f32
    pub lnf_mean: Vec<f32>,
    /// (B, T) f32
    pub lnf_rstd: Vec<f32>,
    /// (B, T, V) f32
    pub logits: Vec<f32>,
}

impl<E: Elem> Acts<E> {
    /// Buffers for (B, T). Sizes were checked by the caller (`B·T·max(V, 4C, NH·T)` fits).
    pub fn new(cfg: &GptConfig, b: usize, t: usize) -> Self {
        let (c, l, nh, v) = (cfg.d_model, cfg.layers, cfg.heads, cfg.vocab);
        let bt = b * t;
        let z = |n: usize| vec![E::default(); n];
        Self {
            b,
            t,
            tokens: vec![0; bt],
            encoded: z(bt * c),
            ln1: z(l * bt * c),
            ln1_mean: vec![0.0; l * bt],
            ln1_rstd: vec![0.0; l * bt],
            qkv: z(l * bt * 3 * c),
            atty: z(l * bt * c),
            att: z(l * b * nh * t * t),
            residual2: z(l * bt * c),
            ln2: z(l * bt * c),
            ln2_mean: vec![0.0; l * bt],
            ln2_rstd: vec![0.0; l * bt],
            fch: z(l * bt * 4 * c),
            fch_gelu: z(l * bt * 4 * c),
            residual3: z(l * bt * c),
            proj: z(bt * c),
            lnf: z(bt * c),
            lnf_mean: vec![0.0; bt],
            lnf_rstd: vec![0.0; bt],
            logits: vec![0.0; bt * v],
        }
    }
}

/// Activation gradients of one layer, reused across layers (f32).
#[derive(Debug, Clone, Default)]
pub struct GradActs {
    /// (B, T, C) f32: gradient of the residual stream at the current point.
    pub dresidual: Vec<f32>,
    /// (B, T, C) f32: gradient of a layernorm output (ln1, ln2 or lnf).
    pub dln: Vec<f32>,
    /// (B, T, C) f32
    pub datty: Vec<f32>,
    /// (B, T, 3C) f32
    pub dqkv: Vec<f32>,
    /// (B, T, 4C) f32
    pub dfch: Vec<f32>,
    /// (B, T, 4C) f32
    pub dfch_gelu: Vec<f32>,
}

impl GradActs {
    /// Buffers for (B, T).
    pub fn new(cfg: &GptConfig, b: usize, t: usize) -> Self {
        let n = b * t * cfg.d_model;
        Self {
            dresidual: vec![0.0; n],
            dln: vec![0.0; n],
            datty: vec![0.0; n],
            dqkv: vec![0.0; 3 * n],
            dfch: vec![0.0; 4 * n],
            dfch_gelu: vec![0.0; 4 * n],
        }
    }
}
