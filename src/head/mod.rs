//! The loss-head API shared by every executor: configuration, inputs, and the host-side
//! validation that turns user data into a [`Layout`] (row → response map, group lists, weights).
//!
//! Shape letters (defined once for the loss head): `T` rows of the packed batch, `V` vocabulary,
//! `R` responses, `G` groups.

use crate::error::{Error, Result};
use clap::ValueEnum;
use half::{bf16, f16};
use serde::{Deserialize, Serialize};

pub mod file;
pub mod launch;
pub mod result;

/// How per-token losses are weighted into the scalar loss (AEM.md §5); the value of
/// `aem head --agg`, `aem train --agg` and `algo.agg`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Aggregation {
    /// `w_t = 1 / N_tok`
    #[default]
    TokenMean,
    /// `w_t = 1 / (N_resp · len_r)`
    SeqMeanTokenMean,
    /// `w_t = 1 / N_resp`
    SeqMeanTokenSum,
    /// `w_t = 1 / C`
    SeqMeanTokenSumNorm,
}

impl Aggregation {
    /// The integer the kernels take (`AemHeadParams::agg_mode`).
    pub fn code(self) -> i32 {
        match self {
            Aggregation::TokenMean => 0,
            Aggregation::SeqMeanTokenMean => 1,
            Aggregation::SeqMeanTokenSum => 2,
            Aggregation::SeqMeanTokenSumNorm => 3,
        }
    }

    pub const ALL: [Aggregation; 4] = [
        Aggregation::TokenMean,
        Aggregation::SeqMeanTokenMean,
        Aggregation::SeqMeanTokenSum,
        Aggregation::SeqMeanTokenSumNorm,
    ];
}

/// Every knob of the loss head; `Default` is the contract's defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct HeadConfig {
    /// Sampling temperature `τ > 0`; `z = logits / τ`.
    pub temperature: f32,
    /// AEM strength `λ ≥ 0`; `0` gives `α ≡ 1` (the base algorithm).
    pub lambda: f32,
    /// AEM range guard `δ ≥ 0`: a group whose mean-entropy range is below it keeps `α = 1`.
    pub delta: f32,
    /// PPO clip `ε_low ≥ 0`.
    pub clip_low: f32,
    /// PPO clip `ε_high ≥ 0` (0.28 is DAPO's clip-higher).
    pub clip_high: f32,
    /// Dual clip `c > 1` for negative advantages; `None` is off.
    pub dual_clip: Option<f32>,
    /// Entropy bonus `β_H`.
    pub entropy_coef: f32,
    /// k3 KL coefficient `β_KL ≥ 0`; needs `ref_logp` when positive.
    pub kl_coef: f32,
    /// Aggregation mode.
    pub agg: Aggregation,
    /// Global token count `N_tok` (default: owned rows in this batch).
    pub n_tok: Option<f64>,
    /// Global response count `N_resp` (default: `R`).
    pub n_resp: Option<f64>,
    /// The constant `C` of `seq-mean-token-sum-norm` (default: the longest response here).
    pub norm_const: Option<f64>,
    /// Gradient (loss) scale `s > 0`.
    pub grad_scale: f32,
}

impl Default for HeadConfig {
    fn default() -> Self {
        HeadConfig {
            temperature: 1.0,
            lambda: 1.0,
            delta: 0.1,
            clip_low: 0.2,
            clip_high: 0.2,
            dual_clip: None,
            entropy_coef: 0.0,
            kl_coef: 0.0,
            agg: Aggregation::TokenMean,
            n_tok: None,
            n_resp: None,
            norm_const: None,
            grad_scale: 1.0,
        }
    }
}

/// A logit element the reference reads (`f16`, `bf16` in production; `f32`/`f64` for finite
/// differences).
pub trait Logit: Copy + Send + Sync {
    /// The largest finite magnitude of the type.
    const MAX_FINITE: f64;
    fn to_f64(self) -> f64;
    fn is_finite(self) -> bool {
        self.to_f64().is_finite()
    }
}
impl Logit for f16 {
    const MAX_FINITE: f64 = 65504.0;
    fn to_f64(self) -> f64 {
        f64::from(self.to_f32())
    }
}
impl Logit for bf16 {
    const MAX_FINITE: f64 = 3.3895313892515355e38;
    fn to_f64(self) -> f64 {
        f64::from(self.to_f32())
    }
}
impl Logit for f32 {
    const MAX_FINITE: f64 = f32::MAX as f64;
    fn to_f64(self) -> f64 {
        f64::from(self)
    }
}
impl Logit for f64 {
    const MAX_FINITE: f64 = f64::MAX;
    fn to_f64(self) -> f64 {
        self
    }
}

/// The element type of the logits (`aem demo-input --logits-dtype`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum LogitDtype {
    #[default]
    F16,
    Bf16,
}

impl LogitDtype {
    /// The name used in kernel names, messages and files (`f16`, `bf16`).
    pub fn name(self) -> &'static str {
        match self {
            LogitDtype::F16 => "f16",
            LogitDtype::Bf16 => "bf16",
        }
    }
}

/// logits: (T, V) row-major, f16 or bf16, borrowed from the caller. Every executor reads both;
/// the arithmetic is f32 (kernels) or f64/f32 (reference) from the exact 16-bit values.
#[derive(Debug, Clone, Copy)]
pub enum Logits<'a> {
    F16(&'a [f16]),
    Bf16(&'a [bf16]),
}

/// Runs `$body` with `$x` bound to the logits' slice of its own element type.
#[macro_export]
#[doc(hidden)]
macro_rules! with_logits {
    ($logits:expr, $x:ident => $body:expr) => {
        match $logits {
            $crate::head::Logits::F16($x) => $body,
            $crate::head::Logits::Bf16($x) => $body,
        }
    };
}

impl Logits<'_> {
    /// T·V, the number of elements.
    pub fn len(&self) -> usize {
        with_logits!(self, x => x.len())
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn dtype(&self) -> LogitDtype {
        match self {
            Logits::F16(_) => LogitDtype::F16,
            Logits::Bf16(_) => LogitDtype::Bf16,
        }
    }
}

/// The data of one packed batch, borrowed from the caller.
#[derive(Debug, Clone, Copy)]
pub struct HeadInputs<'a> {
    /// logits: (T, V) f16 or bf16, row-major; row `t` predicts `targets[t]`.
    pub logits: Logits<'a>,
    /// V, the vocabulary size (row length of `logits`).
    pub vocab: usize,
    /// targets: (T) u32, each `< V`.
    pub targets: &'a [u32],
    /// resp_start: (R) u32, first row of each response.
    pub resp_start: &'a [u32],
    /// resp_len: (R) u32, rows of each response, `≥ 1`.
    pub resp_len: &'a [u32],
    /// resp_group: (R) u32, group of each response, `< G`.
    pub resp_group: &'a [u32],
    /// G, the number of groups.
    pub n_groups: usize,
    /// adv_base: (R) f32, the base advantage of each response.
    pub adv_base: &'a [f32],
    /// old_logp: (T) f32, log-prob under the sampling policy; `None` = on-policy (ratio 1).
    pub old_logp: Option<&'a [f32]>,
    /// ref_logp: (T) f32, log-prob under the reference policy; needed when `kl_coef > 0`.
    pub ref_logp: Option<&'a [f32]>,
}

impl HeadInputs<'_> {
    /// T, the number of rows.
    pub fn rows(&self) -> usize {
        self.targets.len()
    }
    /// R, the number of responses.
    pub fn responses(&self) -> usize {
        self.resp_start.len()
    }
}

/// What validation derives from the inputs, in the form both executors consume.
#[derive(Debug, Clone, PartialEq)]
pub struct Layout {
    /// row_resp: (T) i32, the response owning each row, or −1.
    pub row_resp: Vec<i32>,
    /// grp_offsets: (G+1) u32, CSR offsets into `grp_members`.
    pub grp_offsets: Vec<u32>,
    /// grp_members: (R) u32, responses of each group in increasing index order.
    pub grp_members: Vec<u32>,
    /// Owned rows in this batch.
    pub owned_rows: usize,
    /// The longest response.
    pub max_len: usize,
    /// The divisor of the aggregation weight (`N_tok`, `N_resp` or `C`); `w_t = 1/agg_norm`,
    /// further divided by `len_r` in `seq-mean-token-mean`.
    pub agg_norm: f64,
}

impl Layout {
    /// Weight `w_t` of a row owned by a response of `len` rows.
    pub fn weight(&self, agg: Aggregation, len: u32) -> f64 {
        match agg {
            Aggregation::SeqMeanTokenMean => 1.0 / (self.agg_norm * f64::from(len)),
            _ => 1.0 / self.agg_norm,
        }
    }
}

fn check_finite_cfg(arg: &'static str, x: f32) -> Result<()> {
    if x.is_finite() {
        Ok(())
    } else {
        Err(Error::config(arg, f64::from(x), "must be finite"))
    }
}

/// Checks the configuration's domains (AEM.md §7).
pub fn validate_config(cfg: &HeadConfig) -> Result<()> {
    let c = cfg;
    check_finite_cfg("temperature", c.temperature)?;
    if c.temperature <= 0.0 {
        return Err(Error::config(
            "temperature",
            c.temperature.into(),
            "must be > 0",
        ));
    }
    for (arg, x) in [
        ("lambda", c.lambda),
        ("delta", c.delta),
        ("clip_low", c.clip_low),
        ("clip_high", c.clip_high),
        ("kl_coef", c.kl_coef),
    ] {
        check_finite_cfg(arg, x)?;
        if x < 0.0 {
            return Err(Error::config(arg, x.into(), "must be >= 0"));
        }
    }
    if let Some(d) = c.dual_clip {
        check_finite_cfg("dual_clip", d)?;
        if d <= 1.0 {
            return Err(Error::config("dual_clip", d.into(), "must be > 1"));
        }
    }
    check_finite_cfg("entropy_coef", c.entropy_coef)?;
    check_finite_cfg("grad_scale", c.grad_scale)?;
    if c.grad_scale <= 0.0 {
        return Err(Error::config(
            "grad_scale",
            c.grad_scale.into(),
            "must be > 0",
        ));
    }
    for (arg, x) in [
        ("n_tok", c.n_tok),
        ("n_resp", c.n_resp),
        ("norm_const", c.norm_const),
    ] {
        if let Some(x) = x {
            if !(x.is_finite() && x > 0.0) {
                return Err(Error::config(arg, x, "must be finite and > 0"));
            }
        }
    }
    Ok(())
}

fn check_len(arg: &'static str, got: usize, want: usize, letter: &str) -> Result<()> {
    if got == want {
        Ok(())
    } else {
        Err(Error::shape(
            arg,
            format!("({letter}) = ({want})"),
            format!("({got})"),
        ))
    }
}

fn check_finite_slice(arg: &'static str, xs: &[f32]) -> Result<()> {
    match xs.iter().position(|x| !x.is_finite()) {
        Some(i) => Err(Error::NonFinite {
            arg,
            index: i,
            col: None,
            value: f64::from(xs[i]),
        }),
        None => Ok(()),
    }
}

/// Validates everything except the logits' values (shapes, ranges, overlaps, finiteness of the
/// per-row and per-response floats) and builds the [`Layout`]. O(T + R log R).
pub fn validate_layout(inp: &HeadInputs, cfg: &HeadConfig) -> Result<Layout> {
    validate_layout_for(inp, cfg, inp.logits.len())
}

/// [`validate_layout`] for logits held elsewhere (on a device): `logits_len` stands for
/// `inp.logits.len()`, which is not read.
pub fn validate_layout_for(
    inp: &HeadInputs,
    cfg: &HeadConfig,
    logits_len: usize,
) -> Result<Layout> {
    validate_config(cfg)?;
    let t = inp.rows();
    let v = inp.vocab;
    let r = inp.responses();
    if v == 0 {
        return Err(Error::shape("logits", "(T, V) with V >= 1", "V = 0"));
    }
    let tv = t
        .checked_mul(v)
        .ok_or_else(|| Error::shape("logits", "T*V below 2^64", format!("{t} x {v}")))?;
    if logits_len != tv {
        return Err(Error::shape(
            "logits",
            format!("(T, V) = ({t}, {v}), {tv} elements"),
            format!("{logits_len} elements"),
        ));
    }
    // Kernels take T, V, R, G as 32-bit counts and index T·V with 64 bits.
    crate::error::to_u32("targets", t)?;
    crate::error::to_u32("vocab", v)?;
    crate::error::to_u32("resp_start", r)?;
    crate::error::to_u32("n_groups", inp.n_groups)?;
    // What the executors allocate from these sizes (the gradient and the f64/f32 per-row,
    // per-response and per-group buffers), before any of it is allocated: G in particular is
    // the user's number (`--n-groups`, or max(resp_group) + 1), not backed by data.
    let needs = crate::mem::product(&[t, v, 8]).and_then(|x| {
        x.checked_add(crate::mem::product(&[
            t.checked_add(r)?.checked_add(inp.n_groups)?,
            64,
        ])?)
    });
    crate::mem::check(
        || {
            format!(
                "a loss head with T = {t}, V = {v}, R = {r}, G = {}",
                inp.n_groups
            )
        },
        needs,
    )?;
    check_len("resp_len", inp.resp_len.len(), r, "R")?;
    check_len("resp_group", inp.resp_group.len(), r, "R")?;
    check_len("adv_base", inp.adv_base.len(), r, "R")?;
    if let Some(o) = inp.old_logp {
        check_len("old_logp", o.len(), t, "T")?;
    }
    if let Some(o) = inp.ref_logp {
        check_len("ref_logp", o.len(), t, "T")?;
    }
    if cfg.kl_coef > 0.0 && inp.ref_logp.is_none() {
        return Err(Error::Missing {
            arg: "ref_logp",
            reason: "required when kl_coef > 0",
        });
    }
    if let Some(i) = inp.targets.iter().position(|&y| y as usize >= v) {
        return Err(Error::range(
            "targets",
            i,
            inp.targets[i],
            format!("must be < V = {v}"),
        ));
    }
    for i in 0..r {
        let (s, l) = (inp.resp_start[i] as usize, inp.resp_len[i] as usize);
        if l == 0 {
            return Err(Error::range("resp_len", i, 0, "must be >= 1"));
        }
        if s + l > t {
            return Err(Error::range(
                "resp_start",
                i,
                format!("{s} (len {l})"),
                format!("rows {s}..{} exceed T = {t}", s + l),
            ));
        }
        if inp.resp_group[i] as usize >= inp.n_groups {
            return Err(Error::range(
                "resp_group",
                i,
                inp.resp_group[i],
                format!("must be < G = {}", inp.n_groups),
            ));
        }
    }
    check_finite_slice("adv_base", inp.adv_base)?;
    if let Some(o) = inp.old_logp {
        check_finite_slice("old_logp", o)?;
    }
    if let Some(o) = inp.ref_logp {
        check_finite_slice("ref_logp", o)?;
    }

    // Overlaps: sort by start; the first overlap reported is the one with the smallest
    // response index among the offending pairs found in start order.
    let mut order: Vec<usize> = (0..r).collect();
    order.sort_by_key(|&i| (inp.resp_start[i], i));
    for w in order.windows(2) {
        let (a, b) = (w[0], w[1]);
        let a_end = inp.resp_start[a] as usize + inp.resp_len[a] as usize;
        if (inp.resp_start[b] as usize) < a_end {
            return Err(Error::Overlap {
                index: a.min(b),
                other: a.max(b),
                row: inp.resp_start[b] as usize,
            });
        }
    }

    let mut row_resp = crate::mem::try_vec("row_resp (T)", t, -1i32)?;
    let mut owned_rows = 0usize;
    let mut max_len = 0usize;
    for i in 0..r {
        let (s, l) = (inp.resp_start[i] as usize, inp.resp_len[i] as usize);
        // r < 2^32 was checked; responses beyond i32::MAX rows are rejected here.
        let tag = i32::try_from(i).map_err(|_| Error::shape("resp_start", "R < 2^31", r))?;
        row_resp[s..s + l].fill(tag);
        owned_rows += l;
        max_len = max_len.max(l);
    }

    let g = inp.n_groups;
    let mut counts = crate::mem::try_vec("group offsets (G + 1)", g + 1, 0u32)?;
    for &grp in inp.resp_group {
        counts[grp as usize + 1] += 1;
    }
    for k in 0..g {
        counts[k + 1] += counts[k];
    }
    let grp_offsets = counts.clone();
    let mut fill = counts;
    let mut grp_members = crate::mem::try_vec("group members (R)", r, 0u32)?;
    for (i, &grp) in inp.resp_group.iter().enumerate() {
        let slot = &mut fill[grp as usize];
        grp_members[*slot as usize] = i as u32; // i < R < 2^32 checked above
        *slot += 1;
    }

    let agg_norm = match cfg.agg {
        Aggregation::TokenMean => cfg.n_tok.unwrap_or(owned_rows as f64),
        Aggregation::SeqMeanTokenMean | Aggregation::SeqMeanTokenSum => {
            cfg.n_resp.unwrap_or(r as f64)
        }
        Aggregation::SeqMeanTokenSumNorm => cfg.norm_const.unwrap_or(max_len as f64),
    };
    // With no owned rows the weight is never used; keep it finite.
    let agg_norm = if agg_norm > 0.0 { agg_norm } else { 1.0 };
    check_weights(cfg, agg_norm, owned_rows, inp.resp_len)?;

    Ok(Layout {
        row_resp,
        grp_offsets,
        grp_members,
        owned_rows,
        max_len,
        agg_norm,
    })
}

/// The argument that sets the aggregation divisor, for error messages.
fn agg_arg(cfg: &HeadConfig) -> &'static str {
    match cfg.agg {
        Aggregation::TokenMean => "n_tok",
        Aggregation::SeqMeanTokenMean | Aggregation::SeqMeanTokenSum => "n_resp",
        Aggregation::SeqMeanTokenSumNorm => "norm_const",
    }
}

/// Refuses weights that overflow where the kernels form them: `w_t = 1/agg_norm` (or
/// `1/(agg_norm·len_r)`) in f32, and the gradient coefficient `s·w_t/τ` in f32.
fn check_weights(cfg: &HeadConfig, agg_norm: f64, owned: usize, lens: &[u32]) -> Result<()> {
    if owned == 0 {
        return Ok(());
    }
    let min_len = match cfg.agg {
        Aggregation::SeqMeanTokenMean => f64::from(lens.iter().copied().min().unwrap_or(1)),
        _ => 1.0,
    };
    let norm32 = agg_norm as f32;
    let w = 1.0 / (agg_norm * min_len);
    let max = f64::from(f32::MAX);
    if !(norm32 > 0.0 && w.is_finite() && w <= max) {
        return Err(Error::config(
            agg_arg(cfg),
            agg_norm,
            "its token weight 1/value overflows f32 (a normaliser this small gives an infinite loss)",
        ));
    }
    let coef = f64::from(cfg.grad_scale) * w / f64::from(cfg.temperature);
    if coef > max {
        return Err(Error::config(
            "grad_scale",
            f64::from(cfg.grad_scale),
            "grad_scale·w_t/τ overflows f32 (the gradient would be infinite)",
        ));
    }
    Ok(())
}

/// The largest `|z| = |x|/τ` the kernels' f32 arithmetic takes without overflow: `LSE ≈ m/τ`
/// and the shifted exponents `(x − m)·log2e/τ` (with `|x − m| ≤ 2·max|x|`) stay below
/// `f32::MAX`. Below it, precision does not depend on `|z|`: rows are shifted in the logits'
/// own units before they are scaled (kernels/loss_head.cu, "Numerics").
const MAX_ABS_Z: f64 = f32::MAX as f64 / 4.0;

/// Refuses rows whose scaled logits `z = x/τ` overflow f32 (a tiny temperature): reported as the
/// first such row of `logp`, with how many rows overflow.
pub fn check_scaled_logits<X: Logit>(logits: &[X], vocab: usize, temperature: f32) -> Result<()> {
    if vocab == 0 {
        return Ok(());
    }
    let inv_t = 1.0 / f64::from(temperature);
    if X::MAX_FINITE * inv_t <= MAX_ABS_Z {
        return Ok(()); // no finite logit of this dtype can overflow at this τ: no second pass
    }
    let mut first: Option<(usize, f64)> = None;
    let mut count = 0u64;
    for (t, row) in logits.chunks_exact(vocab).enumerate() {
        let max_abs = row.iter().map(|x| x.to_f64().abs()).fold(0.0, f64::max);
        if max_abs * inv_t > MAX_ABS_Z {
            count += 1;
            first.get_or_insert((t, max_abs));
        }
    }
    match first {
        Some((t, x)) => Err(Error::NonFiniteOutput {
            arg: "logp",
            index: t,
            count,
            cause: format!(
                "z = x/τ overflows f32 (max |x| = {x} in row {t}, τ = {temperature}); raise the temperature"
            ),
        }),
        None => Ok(()),
    }
}

/// The outputs of one head computation as returned to the caller (f32), for [`check_outputs`].
#[derive(Debug, Clone, Copy)]
pub struct Outputs<'a> {
    /// logp, entropy, lse, token_loss: (T) f32
    pub logp: &'a [f32],
    pub entropy: &'a [f32],
    pub lse: &'a [f32],
    pub token_loss: &'a [f32],
    /// alpha, adv: (R) f32
    pub alpha: &'a [f32],
    pub adv: &'a [f32],
    pub loss: f32,
    /// Non-finite dlogits entries (count, first row), if any.
    pub grad_bad: Option<(u64, usize)>,
    /// The gradient's dtype.
    pub grad_dtype: result::GradDtype,
}

fn first_bad(xs: &[f32]) -> Option<(usize, u64)> {
    let i = xs.iter().position(|x| !x.is_finite())?;
    Some((i, xs[i..].iter().filter(|x| !x.is_finite()).count() as u64))
}

/// AEM.md §7 for outputs: no NaN or ±inf is returned. Checks, in order, the row statistics, the
/// rescaled advantage, the token loss, the loss and the gradient, and names the first bad index
/// and what overflowed. Every executor calls it on what it returns, so the same input gives the
/// same error on the reference and on the kernels.
pub fn check_outputs(o: &Outputs, inp: &HeadInputs, cfg: &HeadConfig) -> Result<()> {
    for (arg, xs) in [("logp", o.logp), ("entropy", o.entropy), ("lse", o.lse)] {
        if let Some((t, count)) = first_bad(xs) {
            return Err(Error::NonFiniteOutput {
                arg,
                index: t,
                count,
                cause: format!(
                    "the row's log-softmax overflows f32 (logits / τ with τ = {})",
                    cfg.temperature
                ),
            });
        }
    }
    if let Some((r, count)) = first_bad(o.adv) {
        return Err(Error::NonFiniteOutput {
            arg: "adv",
            index: r,
            count,
            cause: format!(
                "α·adv_base overflows f32 (adv_base[{r}] = {:e}, α = {:.4})",
                inp.adv_base.get(r).copied().unwrap_or(f32::NAN),
                o.alpha.get(r).copied().unwrap_or(f32::NAN)
            ),
        });
    }
    if let Some((t, count)) = first_bad(o.token_loss) {
        return Err(Error::NonFiniteOutput {
            arg: "token_loss",
            index: t,
            count,
            cause: format!(
                "the token loss overflows f32 (kl_coef = {}, entropy_coef = {}, or |A|·ratio too large)",
                cfg.kl_coef, cfg.entropy_coef
            ),
        });
    }
    if !o.loss.is_finite() {
        return Err(Error::NonFiniteOutput {
            arg: "loss",
            index: 0,
            count: 1,
            cause:
                "Σ_t w_t·ℓ_t overflows f32 (the token losses are finite; their weighted sum is not)"
                    .into(),
        });
    }
    if let Some((count, t)) = o.grad_bad {
        return Err(Error::NonFiniteOutput {
            arg: "dlogits",
            index: t,
            count,
            cause: format!(
                "the gradient overflows {} (grad_scale = {}, τ = {}){}",
                o.grad_dtype.name(),
                cfg.grad_scale,
                cfg.temperature,
                if o.grad_dtype != result::GradDtype::F32 {
                    "; lower grad_scale or write f32 gradients"
                } else {
                    ""
                }
            ),
        });
    }
    Ok(())
}

/// Finds the first non-finite logit (row-major order), reported as its row and column.
pub fn check_logits<X: Logit>(logits: &[X], vocab: usize) -> Result<()> {
    if vocab == 0 {
        return Ok(());
    }
    match logits.iter().position(|x| !x.is_finite()) {
        Some(i) => Err(Error::NonFinite {
            arg: "logits",
            index: i / vocab,
            col: Some(i % vocab),
            value: logits[i].to_f64(),
        }),
        None => Ok(()),
    }
}

/// Full host validation (AEM.md §7): the layout checks plus a scan of the logits.
pub fn validate(inp: &HeadInputs, cfg: &HeadConfig) -> Result<Layout> {
    let layout = validate_layout(inp, cfg)?;
    with_logits!(inp.logits, x => {
        check_logits(x, inp.vocab)?;
        check_scaled_logits(x, inp.vocab, cfg.temperature)?;
    });
    Ok(layout)
}
