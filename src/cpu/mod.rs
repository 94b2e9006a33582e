//! The CPU reference of the loss head: AEM.md §1–6 as plain loops. This is the specification in
//! code; the kernels and the emulator are held against it.
//!
//! Every function is generic over the accumulation type `F`: `f64` is the reference proper, and
//! `f32` is "a plain implementation in the kernels' precision" whose error against `f64` earns
//! the tolerance of the parity tests (ARCHITECTURE.md: a kernel may be at most twice as far from
//! `f64` as the plain `f32` path, plus a small `atol`).
//!
//! Stems (shared with kernels, launchers, tests and benches): `token_stats`, `resp_stats`,
//! `aem_alpha`, `policy_loss`, `policy_grad`.

use crate::head::{HeadConfig, HeadInputs, Layout};
use half::{bf16, f16};
use rayon::prelude::*;

/// An accumulation type of the reference (`f32` or `f64`).
pub trait Real:
    num_traits::Float + Send + Sync + std::fmt::Debug + std::iter::Sum + 'static
{
    fn of(x: f64) -> Self;
    fn to_f64(self) -> f64;
}

impl Real for f32 {
    fn of(x: f64) -> Self {
        x as f32
    }
    fn to_f64(self) -> f64 {
        f64::from(self)
    }
}

impl Real for f64 {
    fn of(x: f64) -> Self {
        x
    }
    fn to_f64(self) -> f64 {
        self
    }
}

/// An element type the gradient can be written as.
pub trait GradElem: Copy + Send + Sync + Default {
    fn from_real<F: Real>(x: F) -> Self;
}

impl GradElem for f16 {
    fn from_real<F: Real>(x: F) -> Self {
        // Round once, from the accumulation type (f64 → f16 directly, no double rounding).
        f16::from_f64(x.to_f64())
    }
}
impl GradElem for f32 {
    fn from_real<F: Real>(x: F) -> Self {
        x.to_f64() as f32
    }
}
impl GradElem for f64 {
    fn from_real<F: Real>(x: F) -> Self {
        x.to_f64()
    }
}

impl GradElem for bf16 {
    fn from_real<F: Real>(x: F) -> Self {
        // Round once: `half`'s f64 → bf16 ignores the low 32 bits in its sticky bit, and
        // f64 → f32 → bf16 would round twice. f64 → f32 rounded to odd (truncate, then set the
        // last bit if inexact) keeps the sticky information, so the f32 → bf16 step rounds
        // correctly (24 ≥ 8 + 2 significand bits).
        let x = x.to_f64();
        let f = x as f32;
        if !f.is_finite() || f64::from(f) == x {
            return bf16::from_f32(f);
        }
        let toward_zero = if f64::from(f).abs() > x.abs() {
            f32::from_bits(f.to_bits() - 1) // f ≠ 0 here, so its magnitude bits are ≥ 1
        } else {
            f
        };
        bf16::from_f32(f32::from_bits(toward_zero.to_bits() | 1))
    }
}

/// A logit element the reference reads (defined with the inputs, in `head`).
pub use crate::head::Logit;

/// Per-row statistics (AEM.md §1).
#[derive(Debug, Clone, PartialEq)]
pub struct TokenStats<F> {
    /// logp: (T) — `z[y] − LSE`.
    pub logp: Vec<F>,
    /// entropy: (T) — `LSE − Σ p z`.
    pub entropy: Vec<F>,
    /// lse: (T) — `log Σ exp z`.
    pub lse: Vec<F>,
    /// shift: (T) — `m = max_v x_v`, in the logits' own units.
    pub shift: Vec<F>,
    /// log_sum: (T) — `log Σ_v exp((x_v − m)/τ)`, so `LSE = m/τ + log_sum` without its rounding.
    pub log_sum: Vec<F>,
}

/// Statistics of one row (AEM.md §1).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RowStats<F> {
    pub logp: F,
    pub entropy: F,
    pub lse: F,
    /// `m = max x` (logit units) and `log Σ exp((x − m)/τ)`: what the gradient needs.
    pub shift: F,
    pub log_sum: F,
}

/// Statistics of one row, `z = x / τ`. Shifted in the logits' own units first, then scaled:
/// `d = (x − m)·(1/τ)` with `m = max x`, so every exponent carries `F`'s rounding of its own
/// size whatever `|x|` (scaling first, `x/τ − max z`, would lose ulp(max|z|) in each). Entropy
/// is `H = log s − Σ e·d / s` with `e = exp d` (no cancellation of `LSE − E[z]`), and
/// `logp = (x_y − m)/τ − log s` (never the difference of two large numbers).
pub fn row_stats<F: Real, X: Logit>(row: &[X], target: usize, inv_t: F) -> RowStats<F> {
    let x = |v: &X| F::of(v.to_f64());
    let m = row.iter().map(x).fold(F::neg_infinity(), F::max);
    let (mut s, mut sz) = (F::zero(), F::zero());
    for v in row {
        let d = (x(v) - m) * inv_t;
        let e = d.exp();
        s = s + e;
        sz = sz + e * d;
    }
    let log_s = s.ln();
    RowStats {
        logp: (x(&row[target]) - m) * inv_t - log_s,
        entropy: log_s - sz / s,
        lse: m * inv_t + log_s,
        shift: m,
        log_sum: log_s,
    }
}

/// token_stats: logits (T, V) f16 or bf16, targets (T) u32 → logp, entropy, lse, shift, log_sum (T).
/// Rows in parallel.
pub fn token_stats<F: Real>(inp: &HeadInputs, cfg: &HeadConfig) -> TokenStats<F> {
    crate::with_logits!(inp.logits, x => token_stats_of(x, inp.vocab, inp.targets, cfg.temperature))
}

/// token_stats over logits of any element type: logits (T, V), targets (T).
pub fn token_stats_of<F: Real, X: Logit>(
    logits: &[X],
    vocab: usize,
    targets: &[u32],
    temperature: f32,
) -> TokenStats<F> {
    let inv_t = F::one() / F::of(f64::from(temperature));
    let rows: Vec<RowStats<F>> = logits
        .par_chunks(vocab.max(1))
        .zip(targets.par_iter())
        .map(|(row, &y)| row_stats(row, y as usize, inv_t))
        .collect();
    TokenStats {
        logp: rows.iter().map(|r| r.logp).collect(),
        entropy: rows.iter().map(|r| r.entropy).collect(),
        lse: rows.iter().map(|r| r.lse).collect(),
        shift: rows.iter().map(|r| r.shift).collect(),
        log_sum: rows.iter().map(|r| r.log_sum).collect(),
    }
}

impl<F: Real> TokenStats<F> {
    /// Stats carrying only entropies (α from sampling-time entropies; the rest zero).
    pub fn from_entropy(entropy: Vec<F>) -> Self {
        let z = vec![F::zero(); entropy.len()];
        TokenStats {
            logp: z.clone(),
            lse: z.clone(),
            shift: z.clone(),
            log_sum: z,
            entropy,
        }
    }
}

/// Per-response statistics (AEM.md §2).
#[derive(Debug, Clone, PartialEq)]
pub struct RespStats<F> {
    /// resp_surprisal: (R) — `Σ_t −logp_t`.
    pub surprisal: Vec<F>,
    /// resp_mean_entropy: (R) — `(1/len) Σ_t H_t`.
    pub mean_entropy: Vec<F>,
}

/// resp_stats: logp, entropy (T) → surprisal, mean entropy (R), summed in row order.
pub fn resp_stats<F: Real>(inp: &HeadInputs, ts: &TokenStats<F>) -> RespStats<F> {
    let r = inp.responses();
    let mut surprisal = Vec::with_capacity(r);
    let mut mean_entropy = Vec::with_capacity(r);
    for i in 0..r {
        let (s, l) = (inp.resp_start[i] as usize, inp.resp_len[i] as usize);
        let (mut sp, mut h) = (F::zero(), F::zero());
        for t in s..s + l {
            sp = sp - ts.logp[t];
            h = h + ts.entropy[t];
        }
        surprisal.push(sp);
        mean_entropy.push(h / F::of(l as f64));
    }
    RespStats {
        surprisal,
        mean_entropy,
    }
}

/// AEM weights and rescaled advantages (AEM.md §3).
#[derive(Debug, Clone, PartialEq)]
pub struct AemAlpha<F> {
    /// alpha: (R) — group-mean-1 weights, decreasing in mean entropy.
    pub alpha: Vec<F>,
    /// adv: (R) — `α · adv_base`.
    pub adv: Vec<F>,
    /// Groups that kept `α = 1` because they had one response or a range below `δ`.
    pub guarded_groups: usize,
}

/// aem_alpha: mean entropy (R), groups → α and `A = α·adv_base` (R).
pub fn aem_alpha<F: Real>(
    inp: &HeadInputs,
    cfg: &HeadConfig,
    layout: &Layout,
    mean_entropy: &[F],
) -> AemAlpha<F> {
    let r = inp.responses();
    let mut alpha = vec![F::one(); r];
    let mut guarded_groups = 0;
    let lambda = F::of(f64::from(cfg.lambda));
    let delta = F::of(f64::from(cfg.delta));
    for g in 0..inp.n_groups {
        let members =
            &layout.grp_members[layout.grp_offsets[g] as usize..layout.grp_offsets[g + 1] as usize];
        if members.is_empty() {
            continue;
        }
        let h = |i: &u32| mean_entropy[*i as usize];
        let lo = members.iter().map(h).fold(F::infinity(), F::min);
        let hi = members.iter().map(h).fold(F::neg_infinity(), F::max);
        // `hi == lo` also guards δ = 0 with equal entropies (0/0 otherwise).
        if members.len() == 1 || hi - lo < delta || hi <= lo {
            guarded_groups += 1;
            continue;
        }
        let w: Vec<F> = members
            .iter()
            .map(|i| (-lambda * (h(i) - lo) / (hi - lo)).exp())
            .collect();
        let mean_w = w.iter().copied().sum::<F>() / F::of(members.len() as f64);
        for (i, wi) in members.iter().zip(&w) {
            alpha[*i as usize] = *wi / mean_w;
        }
    }
    let adv = alpha
        .iter()
        .zip(inp.adv_base)
        .map(|(a, b)| *a * F::of(f64::from(*b)))
        .collect();
    AemAlpha {
        alpha,
        adv,
        guarded_groups,
    }
}

/// Everything the forward pass produces.
#[derive(Debug, Clone, PartialEq)]
pub struct Forward<F> {
    pub tokens: TokenStats<F>,
    pub resp: RespStats<F>,
    pub aem: AemAlpha<F>,
}

/// The forward pass: token stats → response stats → α and rescaled advantages.
pub fn forward<F: Real>(inp: &HeadInputs, cfg: &HeadConfig, layout: &Layout) -> Forward<F> {
    let tokens = token_stats(inp, cfg);
    let resp = resp_stats(inp, &tokens);
    let aem = aem_alpha(inp, cfg, layout, &resp.mean_entropy);
    Forward { tokens, resp, aem }
}

/// The loss of one row and its derivative with respect to `logp` (AEM.md §5–6).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TokenLoss<F> {
    /// `ℓ_t`, unweighted.
    pub loss: F,
    /// `g_t = ∂ℓ_t/∂logp_t` (surrogate and KL parts; the entropy part is separate).
    pub dlogp: F,
    /// The unclipped surrogate is not the active one (PPO clip or dual clip took over).
    pub clipped: bool,
}

/// One row's loss from its advantage `a`, `logp`, entropy `h`, `old_logp` and `ref_logp`.
/// Decisions beyond the formulas: ties in the PPO max go to the unclipped term; wherever a clamp
/// (ratio, KL δ, k3 value) is strictly active the gradient through it is zero.
pub fn token_loss<F: Real>(
    cfg: &HeadConfig,
    a: F,
    logp: F,
    h: F,
    old_logp: F,
    ref_logp: Option<F>,
) -> TokenLoss<F> {
    let c = |x: f32| F::of(f64::from(x));
    let twenty = F::of(20.0);
    let d = logp - old_logp;
    let dc = d.max(-twenty).min(twenty);
    let rho = dc.exp();
    let unclipped = -a * rho;
    let clipped_val = -a
        * rho
            .max(F::one() - c(cfg.clip_low))
            .min(F::one() + c(cfg.clip_high));
    let (mut loss, mut g, mut clipped) = if unclipped >= clipped_val {
        let g = if d == dc { -a * rho } else { F::zero() };
        (unclipped, g, false)
    } else {
        (clipped_val, F::zero(), true)
    };
    if let Some(dual) = cfg.dual_clip {
        let cap = -a * c(dual);
        if a < F::zero() && cap < loss {
            loss = cap;
            g = F::zero();
            clipped = true;
        }
    }
    loss = loss - c(cfg.entropy_coef) * h;
    if cfg.kl_coef != 0.0 {
        if let Some(r) = ref_logp {
            let beta = c(cfg.kl_coef);
            let dd = r - logp;
            let ddc = dd.max(-twenty).min(twenty);
            let k3 = ddc.exp() - ddc - F::one();
            let ten = F::of(10.0);
            let k3c = k3.max(-ten).min(ten);
            loss = loss + beta * k3c;
            if dd == ddc && k3 == k3c {
                g = g + beta * (F::one() - ddc.exp());
            }
        }
    }
    TokenLoss {
        loss,
        dlogp: g,
        clipped,
    }
}

/// The policy loss of the batch.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyLoss<F> {
    /// token_loss: (T) — unweighted `ℓ_t`, 0 for unowned rows.
    pub token_loss: Vec<F>,
    /// dlogp: (T) — `g_t`, 0 for unowned rows.
    pub dlogp: Vec<F>,
    /// weight: (T) — `w_t`, 0 for unowned rows.
    pub weight: Vec<F>,
    /// `L = Σ_t w_t ℓ_t`, summed in row order.
    pub loss: F,
    /// Owned rows whose unclipped surrogate was not active.
    pub clipped_rows: usize,
}

/// policy_loss: per-row loss, derivative and weight, and the scalar loss.
pub fn policy_loss<F: Real>(
    inp: &HeadInputs,
    cfg: &HeadConfig,
    layout: &Layout,
    tokens: &TokenStats<F>,
    adv: &[F],
) -> PolicyLoss<F> {
    let t_rows = inp.rows();
    let mut out = PolicyLoss {
        token_loss: vec![F::zero(); t_rows],
        dlogp: vec![F::zero(); t_rows],
        weight: vec![F::zero(); t_rows],
        loss: F::zero(),
        clipped_rows: 0,
    };
    for t in 0..t_rows {
        let Ok(r) = usize::try_from(layout.row_resp[t]) else {
            continue; // unowned row: no loss, zero gradient
        };
        let logp = tokens.logp[t];
        let old = inp.old_logp.map_or(logp, |o| F::of(f64::from(o[t])));
        let rf = inp.ref_logp.map(|o| F::of(f64::from(o[t])));
        let tl = token_loss(cfg, adv[r], logp, tokens.entropy[t], old, rf);
        let w = F::of(layout.weight(cfg.agg, inp.resp_len[r]));
        out.token_loss[t] = tl.loss;
        out.dlogp[t] = tl.dlogp;
        out.weight[t] = w;
        out.loss = out.loss + w * tl.loss;
        out.clipped_rows += usize::from(tl.clipped);
    }
    out
}

/// policy_grad: writes `dlogits (T, V)` (AEM.md §6) into `out`, in the element type `E`.
///
/// `dlogits[t,v] = s·w_t/τ·( g_t (1[v=y] − p_v) + β_H p_v (z_v − E_z) )` for owned rows, 0 else;
/// `p_v = exp((x_v − m)/τ − log_sum)` (the row's shift, not the rounded LSE), `E_z = LSE − H`.
/// The target entry is computed in `F` and written once.
pub fn policy_grad<F: Real, E: GradElem>(
    inp: &HeadInputs,
    cfg: &HeadConfig,
    tokens: &TokenStats<F>,
    loss: &PolicyLoss<F>,
    out: &mut [E],
) {
    crate::with_logits!(inp.logits, x => {
        policy_grad_of(x, inp.vocab, inp.targets, cfg, tokens, loss, out)
    })
}

/// policy_grad over logits of any element type: logits (T, V), targets (T), out (T, V).
pub fn policy_grad_of<F: Real, X: Logit, E: GradElem>(
    logits: &[X],
    vocab: usize,
    targets: &[u32],
    cfg: &HeadConfig,
    tokens: &TokenStats<F>,
    loss: &PolicyLoss<F>,
    out: &mut [E],
) {
    let v = vocab.max(1);
    let inv_t = F::one() / F::of(f64::from(cfg.temperature));
    let s = F::of(f64::from(cfg.grad_scale));
    let beta_h = F::of(f64::from(cfg.entropy_coef));
    out.par_chunks_mut(v)
        .zip(logits.par_chunks(v))
        .enumerate()
        .for_each(|(t, (orow, lrow))| {
            let w = loss.weight[t];
            if w == F::zero() {
                orow.fill(E::default());
                return;
            }
            let (m, log_s) = (tokens.shift[t], tokens.log_sum[t]);
            let (h, g) = (tokens.entropy[t], loss.dlogp[t]);
            // In shifted units d = z − m/τ: p = exp(d − log_s), z − E_z = d − (log_s − H).
            let e_d = log_s - h;
            let scale = s * w * inv_t;
            let y = targets[t] as usize;
            for (j, (o, x)) in orow.iter_mut().zip(lrow).enumerate() {
                let d = (F::of(x.to_f64()) - m) * inv_t;
                let p = (d - log_s).exp();
                let onehot = if j == y { F::one() } else { F::zero() };
                *o = E::from_real(scale * (g * (onehot - p) + beta_h * p * (d - e_d)));
            }
        });
}

/// Everything the loss head computes, at accumulation precision `F`, with the gradient in `E`.
#[derive(Debug, Clone, PartialEq)]
pub struct HeadOutput<F, E> {
    pub fwd: Forward<F>,
    pub loss: PolicyLoss<F>,
    /// dlogits: (T, V).
    pub dlogits: Vec<E>,
}

/// The whole head on the CPU: validate, forward, loss, gradient.
pub fn loss_head<F: Real, E: GradElem>(
    inp: &HeadInputs,
    cfg: &HeadConfig,
) -> crate::Result<HeadOutput<F, E>> {
    let layout = crate::head::validate(inp, cfg)?;
    let fwd = forward::<F>(inp, cfg, &layout);
    let loss = policy_loss(inp, cfg, &layout, &fwd.tokens, &fwd.aem.adv);
    let mut dlogits = crate::mem::try_vec("dlogits (T, V)", inp.logits.len(), E::default())?;
    policy_grad(inp, cfg, &fwd.tokens, &loss, &mut dlogits);
    Ok(HeadOutput { fwd, loss, dlogits })
}
