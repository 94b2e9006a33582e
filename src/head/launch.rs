//! The loss head on a [`Device`]: validation, uploads, launch configurations and argument lists,
//! written once for both executors. Argument order is the kernels' (`kernels/loss_head.cu`).

use super::file::{GradDtype, GradOut, HeadResult};
use super::{validate, validate_layout_for, HeadConfig, HeadInputs, Layout};
use crate::device::{Arg, DevBuf, Device, HeadParams, LaunchCfg};
use crate::error::{Error, Result};
use half::f16;

/// Which token-statistics kernel the unfused forward uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenStatsKernel {
    /// `token_stats_f16_v1`: one thread per row.
    V1,
    /// `token_stats_f16_v2`: one block per row.
    V2,
    /// `token_stats_f16_v3`: one warp per row.
    V3,
}

/// How the forward runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForwardPlan {
    /// token_stats → resp_stats_v1 → aem_alpha_v1 (three launches).
    Unfused(TokenStatsKernel),
    /// `loss_head_fwd_v1`: one launch.
    Fused,
}

/// How the backward runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackwardPlan {
    /// `policy_grad_*_v1` from the forward's statistics.
    Separate,
    /// `loss_head_fused_*_v1`: statistics, loss and gradient in one launch; `row_cache` keeps
    /// the row in dynamic shared memory when it fits.
    Fused { row_cache: bool },
}

/// A launch plan. `Default` is what production uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    pub forward: ForwardPlan,
    pub backward: BackwardPlan,
    /// Threads per block: a multiple of 32 in 32..=1024.
    pub block: u32,
    /// f16 gradient written over the logits buffer (ignored for f32).
    pub in_place: bool,
}

impl Default for Plan {
    fn default() -> Self {
        Plan {
            forward: ForwardPlan::Fused,
            backward: BackwardPlan::Fused { row_cache: true },
            block: 256,
            in_place: false,
        }
    }
}

/// The kernels' parameter block for this configuration and layout.
pub fn params(cfg: &HeadConfig, layout: &Layout, has_old_logp: bool) -> HeadParams {
    HeadParams {
        inv_temperature: 1.0 / cfg.temperature,
        lambda: cfg.lambda,
        delta: cfg.delta,
        clip_low: cfg.clip_low,
        clip_high: cfg.clip_high,
        dual_clip: cfg.dual_clip.unwrap_or(0.0),
        entropy_coef: cfg.entropy_coef,
        kl_coef: cfg.kl_coef,
        grad_scale: cfg.grad_scale,
        agg_mode: cfg.agg.code(),
        agg_norm: layout.agg_norm as f32,
        has_old_logp: i32::from(has_old_logp),
    }
}

fn blocks(n: usize, per_block: u32) -> Result<u32> {
    u32::try_from(n.div_ceil(per_block as usize))
        .map_err(|_| Error::shape("grid", "< 2^32 blocks", n))
}

/// An optional buffer as a kernel argument (NULL when absent).
fn opt(x: &Option<DevBuf<f32>>) -> Arg<'_> {
    x.as_ref().map_or(Arg::Null, DevBuf::arg)
}

fn i32_of(arg: &'static str, n: usize) -> Result<i32> {
    i32::try_from(n).map_err(|_| Error::shape(arg, "a count below 2^31", n))
}

/// Runs the head on `dev` and downloads every output.
pub fn loss_head(
    dev: &Device,
    inp: &HeadInputs,
    cfg: &HeadConfig,
    dtype: GradDtype,
    plan: &Plan,
) -> Result<HeadResult> {
    check_block(plan.block)?;
    let layout = validate(inp, cfg)?;
    let mut logits = dev.htod(inp.logits)?;
    let t = inp.rows();
    let v = inp.vocab;
    let in_place = plan.in_place && dtype == GradDtype::F16;
    let mut grad16 = if dtype == GradDtype::F16 && !in_place {
        Some(dev.zeros::<f16>(t * v)?)
    } else {
        None
    };
    let mut grad32 = if dtype == GradDtype::F32 {
        Some(dev.zeros::<f32>(t * v)?)
    } else {
        None
    };
    let dst = match (grad16.as_mut(), grad32.as_mut()) {
        (Some(g), _) => GradDst::F16(g),
        (_, Some(g)) => GradDst::F32(g),
        _ => GradDst::InPlace,
    };
    let s = run(dev, &mut logits, inp, &layout, cfg, dst, plan)?;
    let dlogits = match (grad16, grad32) {
        (Some(g), _) => GradOut::F16(dev.dtoh(&g)?),
        (_, Some(g)) => GradOut::F32(dev.dtoh(&g)?),
        _ => GradOut::F16(dev.dtoh(&logits)?),
    };
    Ok(HeadResult {
        logp: s.logp,
        entropy: s.entropy,
        lse: s.lse,
        token_loss: s.token_loss,
        resp_surprisal: s.resp_surprisal,
        resp_mean_entropy: s.resp_mean_entropy,
        alpha: s.alpha,
        adv: s.adv,
        loss: s.loss,
        dlogits,
    })
}

/// Where the head writes dlogits (T, V).
pub enum GradDst<'a> {
    /// A separate f16 buffer of T·V elements.
    F16(&'a mut DevBuf<f16>),
    /// A separate f32 buffer of T·V elements.
    F32(&'a mut DevBuf<f32>),
    /// Over the logits (f16).
    InPlace,
}

/// Everything the head computes but the gradient, downloaded.
#[derive(Debug, Clone, PartialEq)]
pub struct HeadStats {
    /// logp, entropy, lse, token_loss: (T) f32
    pub logp: Vec<f32>,
    pub entropy: Vec<f32>,
    pub lse: Vec<f32>,
    pub token_loss: Vec<f32>,
    /// resp_surprisal, resp_mean_entropy, alpha, adv: (R) f32
    pub resp_surprisal: Vec<f32>,
    pub resp_mean_entropy: Vec<f32>,
    pub alpha: Vec<f32>,
    pub adv: Vec<f32>,
    /// The scalar loss.
    pub loss: f32,
}

/// The head on logits that already live on `dev` (a model's output): the same launches as
/// [`loss_head`], with dlogits left on the device in `grad`. `logits` (T, V) f16 stands for
/// `inp.logits`, which is not read (pass `&[]`). The logits are not scanned on the host: a
/// non-finite logit is reported by the kernels as `Error::NonFinite` for its row.
pub fn loss_head_resident(
    dev: &Device,
    logits: &mut DevBuf<f16>,
    inp: &HeadInputs,
    cfg: &HeadConfig,
    grad: GradDst<'_>,
    plan: &Plan,
) -> Result<HeadStats> {
    check_block(plan.block)?;
    let layout = validate_layout_for(inp, cfg, logits.len())?;
    let tv = inp.rows() * inp.vocab; // no overflow: validate_layout_for checked T·V
    let glen = match &grad {
        GradDst::F16(g) => g.len(),
        GradDst::F32(g) => g.len(),
        GradDst::InPlace => tv,
    };
    if glen != tv {
        return Err(Error::shape(
            "dlogits",
            format!("(T, V) = {tv} elements"),
            glen,
        ));
    }
    run(dev, logits, inp, &layout, cfg, grad, plan)
}

fn check_block(b: u32) -> Result<()> {
    if b == 0 || b % 32 != 0 || b > 1024 {
        return Err(Error::config(
            "block",
            f64::from(b),
            "must be a multiple of 32 in 32..=1024",
        ));
    }
    Ok(())
}

/// The launches of the head, forward then backward, on validated inputs.
fn run(
    dev: &Device,
    logits: &mut DevBuf<f16>,
    inp: &HeadInputs,
    layout: &Layout,
    cfg: &HeadConfig,
    grad: GradDst<'_>,
    plan: &Plan,
) -> Result<HeadStats> {
    let b = plan.block;
    let (t, v, r, g) = (inp.rows(), inp.vocab, inp.responses(), inp.n_groups);
    let (ti, vi, ri, gi) = (
        i32_of("T", t)?,
        i32_of("V", v)?,
        i32_of("R", r)?,
        i32_of("G", g)?,
    );
    let p = params(cfg, layout, inp.old_logp.is_some());
    let logits = &*logits;

    let targets = dev.htod(inp.targets)?;
    let row_resp = dev.htod(&layout.row_resp)?;
    let resp_start = dev.htod(inp.resp_start)?;
    let resp_len = dev.htod(inp.resp_len)?;
    let resp_group = dev.htod(inp.resp_group)?;
    let grp_offsets = dev.htod(&layout.grp_offsets)?;
    let grp_members = dev.htod(&layout.grp_members)?;
    let adv_base = dev.htod(inp.adv_base)?;
    let old_logp = inp.old_logp.map(|o| dev.htod(o)).transpose()?;
    let ref_logp = inp.ref_logp.map(|o| dev.htod(o)).transpose()?;

    let logp = dev.zeros::<f32>(t)?;
    let entropy = dev.zeros::<f32>(t)?;
    let lse = dev.zeros::<f32>(t)?;
    let surprisal = dev.zeros::<f32>(r)?;
    let mean_entropy = dev.zeros::<f32>(r)?;
    let alpha = dev.zeros::<f32>(r)?;
    let adv = dev.zeros::<f32>(r)?;
    let token_loss = dev.zeros::<f32>(t)?;
    let loss = dev.zeros::<f32>(1)?;
    let bad_count = dev.zeros::<u32>(1)?;
    let first_bad = dev.htod(&[u32::MAX])?;

    // ---- forward: token stats, response stats, α and the rescaled advantage
    let row_grid = LaunchCfg {
        grid: u32::try_from(t).map_err(|_| Error::shape("T", "< 2^32", t))?,
        block: b,
        smem: 0,
    };
    match plan.forward {
        ForwardPlan::Unfused(k) => {
            let (name, grid) = match k {
                TokenStatsKernel::V1 => ("token_stats_f16_v1", blocks(t, b)?),
                TokenStatsKernel::V2 => ("token_stats_f16_v2", row_grid.grid),
                TokenStatsKernel::V3 => ("token_stats_f16_v3", blocks(t, b / 32)?),
            };
            dev.launch(
                name,
                LaunchCfg {
                    grid,
                    block: b,
                    smem: 0,
                },
                &[
                    logits.arg(),
                    targets.arg(),
                    Arg::I32(ti),
                    Arg::I32(vi),
                    logp.arg(),
                    entropy.arg(),
                    lse.arg(),
                    bad_count.arg(),
                    first_bad.arg(),
                    Arg::Params(p),
                ],
            )?;
            dev.launch(
                "resp_stats_v1",
                LaunchCfg {
                    grid: blocks(r, b)?,
                    block: b,
                    smem: 0,
                },
                &[
                    logp.arg(),
                    entropy.arg(),
                    resp_start.arg(),
                    resp_len.arg(),
                    Arg::I32(ri),
                    surprisal.arg(),
                    mean_entropy.arg(),
                ],
            )?;
            dev.launch(
                "aem_alpha_v1",
                LaunchCfg {
                    grid: blocks(g, b)?,
                    block: b,
                    smem: 0,
                },
                &[
                    mean_entropy.arg(),
                    adv_base.arg(),
                    grp_offsets.arg(),
                    grp_members.arg(),
                    Arg::I32(gi),
                    alpha.arg(),
                    adv.arg(),
                    Arg::Params(p),
                ],
            )?;
        }
        ForwardPlan::Fused => {
            let resp_done = dev.zeros::<u32>(r)?;
            let grp_done = dev.zeros::<u32>(g)?;
            dev.launch(
                "loss_head_fwd_v1",
                row_grid,
                &[
                    logits.arg(),
                    targets.arg(),
                    row_resp.arg(),
                    resp_start.arg(),
                    resp_len.arg(),
                    resp_group.arg(),
                    grp_offsets.arg(),
                    grp_members.arg(),
                    adv_base.arg(),
                    Arg::I32(ti),
                    Arg::I32(vi),
                    logp.arg(),
                    entropy.arg(),
                    lse.arg(),
                    surprisal.arg(),
                    mean_entropy.arg(),
                    alpha.arg(),
                    adv.arg(),
                    resp_done.arg(),
                    grp_done.arg(),
                    bad_count.arg(),
                    first_bad.arg(),
                    Arg::Params(p),
                ],
            )?;
        }
    }
    check_bad(dev, &bad_count, &first_bad)?;

    // ---- backward: per-token loss and the gradient into the logits
    let dtype = match &grad {
        GradDst::F32(_) => GradDtype::F32,
        _ => GradDtype::F16,
    };
    let kname = |base: &str| -> &'static str {
        match (base, dtype) {
            ("grad", GradDtype::F16) => "policy_grad_f16_v1",
            ("grad", GradDtype::F32) => "policy_grad_f32_v1",
            (_, GradDtype::F16) => "loss_head_fused_f16_v1",
            (_, GradDtype::F32) => "loss_head_fused_f32_v1",
        }
    };
    {
        // The gradient's destination: a separate buffer, or the logits themselves (in place).
        let dst = match &grad {
            GradDst::F16(g16) => g16.arg(),
            GradDst::F32(g32) => g32.arg(),
            GradDst::InPlace => logits.arg(),
        };
        match plan.backward {
            BackwardPlan::Separate => dev.launch(
                kname("grad"),
                row_grid,
                &[
                    logits.arg(),
                    targets.arg(),
                    row_resp.arg(),
                    resp_len.arg(),
                    adv.arg(),
                    logp.arg(),
                    entropy.arg(),
                    lse.arg(),
                    opt(&old_logp),
                    opt(&ref_logp),
                    Arg::I32(ti),
                    Arg::I32(vi),
                    dst,
                    token_loss.arg(),
                    Arg::Params(p),
                ],
            )?,
            BackwardPlan::Fused { row_cache } => {
                // The cache holds the row plus 8 halves of alignment slack, rounded to 16 bytes.
                let need = (2 * (v as u64 + 8)).div_ceil(16) * 16;
                let cache = if row_cache && need <= u64::from(dev.max_dyn_smem()) {
                    need as u32
                } else {
                    0
                };
                dev.launch(
                    kname("fused"),
                    LaunchCfg {
                        smem: cache,
                        ..row_grid
                    },
                    &[
                        logits.arg(),
                        targets.arg(),
                        row_resp.arg(),
                        resp_len.arg(),
                        adv.arg(),
                        opt(&old_logp),
                        opt(&ref_logp),
                        Arg::I32(ti),
                        Arg::I32(vi),
                        Arg::U32(cache),
                        dst,
                        logp.arg(),
                        entropy.arg(),
                        lse.arg(),
                        token_loss.arg(),
                        bad_count.arg(),
                        first_bad.arg(),
                        Arg::Params(p),
                    ],
                )?;
            }
        }
    }
    if matches!(plan.backward, BackwardPlan::Fused { .. }) {
        check_bad(dev, &bad_count, &first_bad)?;
    }
    dev.launch(
        "loss_reduce_v1",
        LaunchCfg {
            grid: 1,
            block: b,
            smem: 0,
        },
        &[
            token_loss.arg(),
            row_resp.arg(),
            resp_len.arg(),
            Arg::I32(ti),
            loss.arg(),
            Arg::Params(p),
        ],
    )?;
    dev.synchronize()?;
    Ok(HeadStats {
        logp: dev.dtoh(&logp)?,
        entropy: dev.dtoh(&entropy)?,
        lse: dev.dtoh(&lse)?,
        token_loss: dev.dtoh(&token_loss)?,
        resp_surprisal: dev.dtoh(&surprisal)?,
        resp_mean_entropy: dev.dtoh(&mean_entropy)?,
        alpha: dev.dtoh(&alpha)?,
        adv: dev.dtoh(&adv)?,
        loss: dev.dtoh(&loss)?.first().copied().unwrap_or(0.0),
    })
}

/// Turns the kernels' count of non-finite rows into the error host validation would give.
fn check_bad(dev: &Device, bad_count: &DevBuf<u32>, first_bad: &DevBuf<u32>) -> Result<()> {
    let n = dev.dtoh(bad_count)?.first().copied().unwrap_or(0);
    if n == 0 {
        return Ok(());
    }
    let row = dev.dtoh(first_bad)?.first().copied().unwrap_or(u32::MAX);
    Err(Error::NonFinite {
        arg: "logits",
        index: row as usize,
        col: None,
        value: f64::NAN,
    })
}
