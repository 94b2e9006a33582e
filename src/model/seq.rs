//! The model's architecture: the GPT-2 op sequence, written once over an executor ([`Exec`]).
//!
//! Forward over tokens (B, T), N = B·T rows, residual stream `x` (N, C):
//!
//! ```text
//! x = encoded   = wte[tokens] + wpe[t]
//! for l in 0..L:
//!     ln1       = layernorm(x; ln_1)
//!     qkv       = ln1 · W_attn + b_attn                      (N, 3C)
//!     atty      = causal softmax attention(qkv), NH heads    (N, C); probabilities att saved
//!     residual2 = x + (atty · W_attnproj + b_attnproj)
//!     ln2       = layernorm(residual2; ln_2)
//!     fch       = ln2 · W_fc + b_fc                          (N, 4C)
//!     residual3 = residual2 + (gelu(fch) · W_fcproj + b_fcproj)
//!     x = residual3
//! lnf    = layernorm(x; ln_f)
//! logits = lnf · wteᵀ                                        (N, V) f32, tied embedding
//! ```
//!
//! Every intermediate is saved in [`Acts`] for the backward, which runs the same ops in reverse
//! order from dlogits ([`GradActs::dlogits`]) and accumulates the parameter gradients in the
//! executor. Decoding (`decode_step`) runs the forward for one new token per sequence, with the
//! keys and values of earlier positions read from a KV cache ([`Cache`]) instead of recomputed.
//!
//! Each path ([`super::Gpt`] on the CPU, [`super::DeviceGpt`] on a device) checks its inputs,
//! allocates its buffers and calls these functions; the arithmetic of every op is the
//! executor's.

use super::acts::{Acts, Cache, GradActs};
use super::config::check_tokens;
use super::exec::{Exec, Heads, Res, Step, Store, Weights};
use super::params::ParamId;
use super::{GptConfig, ModelError};

/// `ln_1`: the layernorm before attention.
pub const LN1: Weights = Weights::new(ParamId::Ln1W, ParamId::Ln1B);
/// `attn.c_attn`: the q, k, v projection (C → 3C).
pub const QKV: Weights = Weights::new(ParamId::QkvW, ParamId::QkvB);
/// `attn.c_proj`: the attention output projection (C → C).
pub const ATT_PROJ: Weights = Weights::new(ParamId::AttProjW, ParamId::AttProjB);
/// `ln_2`: the layernorm before the MLP.
pub const LN2: Weights = Weights::new(ParamId::Ln2W, ParamId::Ln2B);
/// `mlp.c_fc`: the MLP up projection (C → 4C).
pub const FC: Weights = Weights::new(ParamId::FcW, ParamId::FcB);
/// `mlp.c_proj`: the MLP down projection (4C → C).
pub const FC_PROJ: Weights = Weights::new(ParamId::FcProjW, ParamId::FcProjB);
/// `ln_f`: the final layernorm.
pub const LNF: Weights = Weights::new(ParamId::LnfW, ParamId::LnfB);

/// The forward pass over tokens (B, T) u32 (checked by the caller against the config and
/// `a`'s (B, T)); fills every activation of `a`, the logits (B, T, V) f32 last.
pub(crate) fn forward<X: Exec>(
    x: &mut X,
    cfg: &GptConfig,
    a: &mut Acts<X::S>,
    tokens: &[u32],
) -> Res<X> {
    let GptConfig {
        vocab: v,
        d_model: c,
        layers: nl,
        heads: nh,
        ..
    } = *cfg;
    let (b, t) = (a.b, a.t);
    let n = b * t;
    x.write_tokens(a.tokens.at_mut(0), tokens)?;
    x.encoder_fwd(a.encoded.at_mut(0), a.tokens.at(0), (n, t, 0, c))?;
    for l in 0..nl {
        // The residual stream entering layer l.
        let res = if l == 0 {
            a.encoded.at(0)
        } else {
            a.residual3.at(l - 1)
        };
        x.layernorm_fwd(
            a.ln1.at_mut(l),
            a.ln1_mean.at_mut(l),
            a.ln1_rstd.at_mut(l),
            res,
            LN1,
            l,
            (n, c),
        )?;
        x.matmul_fwd(a.qkv.at_mut(l), a.ln1.at(l), QKV, l, (n, c, 3 * c))?;
        x.attention_fwd(
            a.atty.at_mut(l),
            a.att.at_mut(l),
            a.qkv.at(l),
            Heads { b, t, c, nh },
        )?;
        x.matmul_fwd(a.proj.at_mut(0), a.atty.at(l), ATT_PROJ, l, (n, c, c))?;
        x.residual_fwd(a.residual2.at_mut(l), res, a.proj.at(0))?;
        x.layernorm_fwd(
            a.ln2.at_mut(l),
            a.ln2_mean.at_mut(l),
            a.ln2_rstd.at_mut(l),
            a.residual2.at(l),
            LN2,
            l,
            (n, c),
        )?;
        x.matmul_fwd(a.fch.at_mut(l), a.ln2.at(l), FC, l, (n, c, 4 * c))?;
        x.gelu_fwd(a.fch_gelu.at_mut(l), a.fch.at(l))?;
        x.matmul_fwd(
            a.proj.at_mut(0),
            a.fch_gelu.at(l),
            FC_PROJ,
            l,
            (n, 4 * c, c),
        )?;
        x.residual_fwd(a.residual3.at_mut(l), a.residual2.at(l), a.proj.at(0))?;
    }
    x.layernorm_fwd(
        a.lnf.at_mut(0),
        a.lnf_mean.at_mut(0),
        a.lnf_rstd.at_mut(0),
        a.residual3.at(nl - 1),
        LNF,
        0,
        (n, c),
    )?;
    x.logits_fwd(a.logits.at_mut(0), a.lnf.at(0), (n, c, v))
}

/// The backward pass of the forward that filled `a`, from `g.dlogits` (B, T, V) f32; accumulates
/// into the executor's parameter gradients, with `g` as scratch.
pub(crate) fn backward<X: Exec>(
    x: &mut X,
    cfg: &GptConfig,
    a: &Acts<X::S>,
    g: &mut GradActs<X::S>,
) -> Res<X> {
    let GptConfig {
        vocab: v,
        d_model: c,
        layers: nl,
        heads: nh,
        ..
    } = *cfg;
    let (b, t) = (a.b, a.t);
    let n = b * t;
    x.logits_bwd(g.dln.at_mut(0), g.dlogits.at(0), a.lnf.at(0), (n, c, v))?;
    x.fill_zero(g.dresidual.at_mut(0))?;
    x.layernorm_bwd(
        g.dresidual.at_mut(0),
        g.dln.at(0),
        a.residual3.at(nl - 1),
        (a.lnf_mean.at(0), a.lnf_rstd.at(0)),
        LNF,
        0,
        (n, c),
    )?;
    for l in (0..nl).rev() {
        let res = if l == 0 {
            a.encoded.at(0)
        } else {
            a.residual3.at(l - 1)
        };
        // dresidual holds d residual3[l]; the residual add passes it to both branches.
        x.matmul_bwd(
            g.dfch_gelu.at_mut(0),
            g.dresidual.at(0),
            a.fch_gelu.at(l),
            FC_PROJ,
            l,
            (n, 4 * c, c),
        )?;
        x.gelu_bwd(g.dfch.at_mut(0), a.fch.at(l), g.dfch_gelu.at(0))?;
        x.matmul_bwd(
            g.dln.at_mut(0),
            g.dfch.at(0),
            a.ln2.at(l),
            FC,
            l,
            (n, c, 4 * c),
        )?;
        x.layernorm_bwd(
            g.dresidual.at_mut(0),
            g.dln.at(0),
            a.residual2.at(l),
            (a.ln2_mean.at(l), a.ln2_rstd.at(l)),
            LN2,
            l,
            (n, c),
        )?;
        // dresidual now holds d residual2[l].
        x.matmul_bwd(
            g.datty.at_mut(0),
            g.dresidual.at(0),
            a.atty.at(l),
            ATT_PROJ,
            l,
            (n, c, c),
        )?;
        x.attention_bwd(
            g.dqkv.at_mut(0),
            g.datty.at(0),
            a.qkv.at(l),
            a.att.at(l),
            Heads { b, t, c, nh },
        )?;
        x.matmul_bwd(
            g.dln.at_mut(0),
            g.dqkv.at(0),
            a.ln1.at(l),
            QKV,
            l,
            (n, c, 3 * c),
        )?;
        x.layernorm_bwd(
            g.dresidual.at_mut(0),
            g.dln.at(0),
            res,
            (a.ln1_mean.at(l), a.ln1_rstd.at(l)),
            LN1,
            l,
            (n, c),
        )?;
        // dresidual now holds d residual3[l-1] (or d encoded).
    }
    x.encoder_bwd(g.dresidual.at(0), a.tokens.at(0), (n, t, c, v))
}

/// Feeds one token per sequence, tokens (B) u32, at position `pos` (positions `< pos` already in
/// the cache); writes logits (B, V) f32 to the host.
pub(crate) fn decode_step<X: Exec>(
    x: &mut X,
    cfg: &GptConfig,
    kc: &mut Cache<X::S>,
    tokens: &[u32],
    pos: usize,
    logits: &mut [f32],
) -> Res<X> {
    let GptConfig {
        vocab: v,
        context: max_t,
        d_model: c,
        layers: nl,
        heads: nh,
    } = *cfg;
    let b = kc.b;
    check_decode::<X::S>(cfg, kc, tokens, pos, logits.len())?;
    let step = Step {
        b,
        pos,
        max_t,
        c,
        nh,
    };
    x.write_tokens(kc.tokens.at_mut(0), tokens)?;
    x.encoder_fwd(kc.x.at_mut(0), kc.tokens.at(0), (b, 1, pos, c))?;
    for l in 0..nl {
        x.layernorm_fwd(
            kc.ln.at_mut(0),
            kc.mean.at_mut(0),
            kc.rstd.at_mut(0),
            kc.x.at(0),
            LN1,
            l,
            (b, c),
        )?;
        x.matmul_fwd(kc.qkv.at_mut(0), kc.ln.at(0), QKV, l, (b, c, 3 * c))?;
        x.kv_append(kc.k.at_mut(l), kc.v.at_mut(l), kc.qkv.at(0), step)?;
        x.attention_decode(
            kc.atty.at_mut(0),
            kc.qkv.at(0),
            kc.k.at(l),
            kc.v.at(l),
            step,
        )?;
        x.matmul_fwd(kc.proj.at_mut(0), kc.atty.at(0), ATT_PROJ, l, (b, c, c))?;
        x.residual_fwd(kc.x2.at_mut(0), kc.x.at(0), kc.proj.at(0))?;
        x.layernorm_fwd(
            kc.ln.at_mut(0),
            kc.mean.at_mut(0),
            kc.rstd.at_mut(0),
            kc.x2.at(0),
            LN2,
            l,
            (b, c),
        )?;
        x.matmul_fwd(kc.fch.at_mut(0), kc.ln.at(0), FC, l, (b, c, 4 * c))?;
        x.gelu_fwd(kc.fch_gelu.at_mut(0), kc.fch.at(0))?;
        x.matmul_fwd(
            kc.proj.at_mut(0),
            kc.fch_gelu.at(0),
            FC_PROJ,
            l,
            (b, 4 * c, c),
        )?;
        x.residual_fwd(kc.x.at_mut(0), kc.x2.at(0), kc.proj.at(0))?;
    }
    x.layernorm_fwd(
        kc.ln.at_mut(0),
        kc.mean.at_mut(0),
        kc.rstd.at_mut(0),
        kc.x.at(0),
        LNF,
        0,
        (b, c),
    )?;
    x.logits_fwd(kc.logits.at_mut(0), kc.ln.at(0), (b, c, v))?;
    x.read_f32(logits, kc.logits.at(0))
}

/// The checks of a decoding step: tokens (B) against the config, `pos < maxT`, the cache's sizes
/// against the config, and a logits buffer of `logits_len = B·V`.
fn check_decode<S: Store>(
    cfg: &GptConfig,
    kc: &Cache<S>,
    tokens: &[u32],
    pos: usize,
    logits_len: usize,
) -> Result<(), ModelError> {
    use super::exec::Len;
    let b = kc.b;
    check_tokens(cfg, "decode_step", tokens, b, 1)?;
    if pos >= cfg.context {
        return Err(ModelError::TooLong {
            op: "decode_step",
            t: pos + 1,
            context: cfg.context,
        });
    }
    let cache_len = cfg
        .layers
        .checked_mul(b)
        .and_then(|n| n.checked_mul(cfg.context))
        .and_then(|n| n.checked_mul(cfg.d_model))
        .ok_or(ModelError::Overflow { what: "kv cache" })?;
    let (k, v, x) = (kc.k.buf().len(), kc.v.buf().len(), kc.x.buf().len());
    if k != cache_len || v != cache_len || x != b * cfg.d_model {
        return Err(ModelError::Shape {
            op: "decode_step cache",
            expected: cache_len,
            got: k,
        });
    }
    if logits_len != b * cfg.vocab {
        return Err(ModelError::Shape {
            op: "decode_step",
            expected: b * cfg.vocab,
            got: logits_len,
        });
    }
    Ok(())
}
