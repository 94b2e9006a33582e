//! Batched incremental decoding with a KV cache.

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::acts::Cache;
use super::config::check_tokens;
use super::host::{CpuExec, Host};
use super::seq;
use super::{Elem, Gpt, GptConfig, ModelError, Result};

/// Sampling settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SampleParams {
    /// New tokens per sequence (N).
    pub max_new: usize,
    /// Softmax temperature; 0 picks the most likely valid token (log-prob and entropy 0).
    pub temperature: f32,
}

/// Sampled sequences.
#[derive(Debug, Clone, PartialEq)]
pub struct Samples {
    /// B
    pub b: usize,
    /// P + N: tokens per row of `tokens`.
    pub len: usize,
    /// (B, P + N) u32: prompt followed by sampled tokens.
    pub tokens: Vec<u32>,
    /// (B, N) f32: log-prob of each sampled token under the distribution sampled from
    /// (after mask and temperature).
    pub logprobs: Vec<f32>,
    /// (B, N) f32: entropy (nats) of that distribution.
    pub entropies: Vec<f32>,
}

/// A validity mask: called per sequence and step as `mask(row, so_far, valid)` with the row's
/// tokens so far (P + i) and `valid` (V) preset to all `true`; set forbidden tokens to `false`.
pub type MaskFn<'a> = dyn FnMut(usize, &[u32], &mut [bool]) + 'a;

/// Keys and values of every layer for B sequences, plus decoding scratch, on the host.
pub type KvCache<E> = Cache<Host<E>>;

impl<E: Elem> Cache<Host<E>> {
    /// An empty cache for B sequences of up to maxT tokens.
    pub fn new(cfg: &GptConfig, b: usize) -> Result<Self> {
        Cache::alloc(&(), cfg, b)
    }
}

impl<E: Elem> Gpt<E> {
    /// Feeds one token per sequence, tokens (B), at position `pos` (all positions `< pos` already
    /// in the cache); writes logits (B, V) f32.
    pub fn decode_step(
        &self,
        cache: &mut KvCache<E>,
        tokens: &[u32],
        pos: usize,
        logits: &mut [f32],
    ) -> Result<()> {
        let mut x = CpuExec {
            params: self.params(),
            layout: self.layout(),
            grads: None,
            profile: None,
        };
        seq::decode_step(&mut x, self.config(), cache, tokens, pos, logits)
    }

    /// Samples `max_new` tokens after prompts (B, P) with a KV cache. Rows draw from `rng` in
    /// order, so the result is a function of the prompts, the model and the RNG state.
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

/// A model that decodes with a KV cache: what the sampling loop of every backend needs.
pub(crate) trait Decode {
    /// The KV cache.
    type Cache;
    /// The backend's error.
    type Error: From<ModelError>;
    /// The config.
    fn cfg(&self) -> &GptConfig;
    /// An empty cache for B sequences.
    fn cache(&self, b: usize) -> std::result::Result<Self::Cache, Self::Error>;
    /// One decoding step: tokens (B) at `pos`, logits (B, V) f32 out.
    fn step(
        &self,
        cache: &mut Self::Cache,
        tokens: &[u32],
        pos: usize,
        logits: &mut [f32],
    ) -> std::result::Result<(), Self::Error>;
}

impl<E: Elem> Decode for Gpt<E> {
    type Cache = KvCache<E>;
    type Error = ModelError;
    fn cfg(&self) -> &GptConfig {
        self.config()
    }
    fn cache(&self, b: usize) -> Result<KvCache<E>> {
        KvCache::new(self.config(), b)
    }
    fn step(
        &self,
        c: &mut KvCache<E>,
        tokens: &[u32],
        pos: usize,
        logits: &mut [f32],
    ) -> Result<()> {
        self.decode_step(c, tokens, pos, logits)
    }
}

/// The sampling loop of every backend: checks the settings and prompts, then for each position
/// feeds one token per sequence through a decoding step of `model` (its KV cache made at the
/// first step) and draws the next tokens on the host with [`pick`]. Rows draw from `rng` in
/// order.
pub(crate) fn sample_with<D: Decode>(
    model: &D,
    prompts: &[u32],
    b: usize,
    p: usize,
    params: &SampleParams,
    rng: &mut ChaCha8Rng,
    mut mask: Option<&mut MaskFn>,
) -> std::result::Result<Samples, D::Error> {
    let cfg = model.cfg();
    let SampleParams {
        max_new,
        temperature,
    } = *params;
    if !(temperature.is_finite() && temperature >= 0.0) {
        return Err(ModelError::Invalid {
            what: "temperature",
            value: temperature,
        }
        .into());
    }
    check_tokens(cfg, "sample", prompts, b, p)?;
    let len = p
        .checked_add(max_new)
        .ok_or(ModelError::Overflow { what: "sample" })?;
    let ctx = cfg.context;
    if len > ctx {
        return Err(ModelError::TooLong {
            op: "sample",
            t: len,
            context: ctx,
        }
        .into());
    }
    let v = cfg.vocab;
    let mut tokens = vec![0u32; b * len];
    for (row, pr) in tokens.chunks_exact_mut(len).zip(prompts.chunks_exact(p)) {
        row[..p].copy_from_slice(pr);
    }
    let mut out = Samples {
        b,
        len,
        tokens,
        logprobs: vec![0.0; b * max_new],
        entropies: vec![0.0; b * max_new],
    };
    let mut logits = vec![0.0f32; b * v];
    let mut valid = vec![true; v];
    let mut z = vec![0.0f32; v];
    let mut step_tokens = vec![0u32; b];
    let mut cache = None;
    for pos in 0..len.saturating_sub(1) {
        for (st, row) in step_tokens.iter_mut().zip(out.tokens.chunks_exact(len)) {
            *st = row[pos];
        }
        let c = match cache.as_mut() {
            Some(c) => c,
            None => cache.insert(model.cache(b)?),
        };
        model.step(c, &step_tokens, pos, &mut logits)?;
        if pos + 1 < p {
            continue;
        }
        let i = pos + 1 - p; // index of the new token
        for (row, lrow) in logits.chunks_exact(v).enumerate() {
            valid.iter_mut().for_each(|x| *x = true);
            if let Some(f) = mask.as_mut() {
                f(row, &out.tokens[row * len..row * len + pos + 1], &mut valid);
            }
            let (tok, lp, ent) = pick(lrow, &valid, temperature, rng, &mut z)
                .ok_or(ModelError::EmptyMask { row, t: pos + 1 })?;
            out.tokens[row * len + pos + 1] = tok;
            out.logprobs[row * max_new + i] = lp;
            out.entropies[row * max_new + i] = ent;
        }
    }
    Ok(out)
}

/// Draws one token from logits (V) restricted to `valid` at `temperature`; returns
/// (token, log-prob, entropy), or `None` if no token is valid.
pub(crate) fn pick(
    logits: &[f32],
    valid: &[bool],
    temperature: f32,
    rng: &mut ChaCha8Rng,
    z: &mut [f32],
) -> Option<(u32, f32, f32)> {
    if temperature == 0.0 {
        let (best, _) = logits
            .iter()
            .zip(valid)
            .enumerate()
            .filter(|(_, (_, &ok))| ok)
            .fold(None, |acc: Option<(usize, f32)>, (i, (&x, _))| match acc {
                Some((_, bx)) if bx >= x => acc,
                _ => Some((i, x)),
            })?;
        return Some((u32::try_from(best).ok()?, 0.0, 0.0));
    }
    let inv_t = 1.0 / temperature;
    let mut max = f32::NEG_INFINITY;
    for ((z, &x), &ok) in z.iter_mut().zip(logits).zip(valid) {
        *z = if ok { x * inv_t } else { f32::NEG_INFINITY };
        max = max.max(*z);
    }
    if max == f32::NEG_INFINITY {
        return None;
    }
    let sum: f32 = z.iter().map(|&x| (x - max).exp()).sum();
    let lse = max + sum.ln();
    let mut ent = 0.0f32;
    for &x in z.iter().filter(|x| x.is_finite()) {
        let lp = x - lse;
        ent -= lp.exp() * lp;
    }
    // Inverse CDF; falls back to the last valid token against rounding at the top end.
    let u: f32 = rng.random::<f32>();
    let mut acc = 0.0f32;
    let mut chosen = None;
    for (i, &x) in z.iter().enumerate() {
        if !x.is_finite() {
            continue;
        }
        chosen = Some(i);
        acc += (x - lse).exp();
        if u < acc {
            break;
        }
    }
    let i = chosen?;
    Some((u32::try_from(i).ok()?, z[i] - lse, ent))
}
