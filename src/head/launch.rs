//! The loss head on a [`Device`]: validation, uploads, launch configurations and argument lists,
//! written once for both executors. Argument order is the kernels' (`kernels/loss_head.cu`).

use super::result::{GradDtype, GradOut, HeadResult};
pub use super::result::{HeadStats, UpdateStats};
use super::{validate, validate_layout_for, HeadConfig, HeadInputs, Layout};
use crate::device::{kernels, DevBuf, Device, Elem, HeadParams, LaunchCfg, Ptr, Slice, SliceMut};
use crate::error::{Error, Result};
use half::{bf16, f16};

/// Which token-statistics kernel the unfused forward uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenStatsKernel {
    /// `token_stats_{f16,bf16}_v1`: one thread per row.
    V1,
    /// `token_stats_{f16,bf16}_v2`: one block per row.
    V2,
    /// `token_stats_{f16,bf16}_v3`: one warp per row.
    V3,
}

/// How the forward runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForwardPlan {
    /// token_stats → resp_stats_v1 → aem_alpha_v1 (three launches).
    Unfused(TokenStatsKernel),
    /// `loss_head_fwd_{f16,bf16}_v1`: one launch.
    Fused,
}

/// How the backward runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackwardPlan {
    /// `policy_grad_{in}_{out}_v1` from the forward's statistics.
    Separate,
    /// `loss_head_fused_{in}_{out}_v1`: statistics, loss and gradient in one launch; `row_cache` keeps
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
    /// The gradient written over the logits buffer when it has the logits' dtype (ignored
    /// otherwise).
    pub in_place: bool,
}

impl TokenStatsKernel {
    /// Every version, once: the parity tests and the benches iterate this list, so a new
    /// version is tested and benched by adding it here (the match in [`Self::name`] does not
    /// compile until it is named).
    pub const ALL: [TokenStatsKernel; 3] = [Self::V1, Self::V2, Self::V3];

    /// The kernel's stem and version (`token_stats_v2`).
    pub fn name(self) -> &'static str {
        match self {
            Self::V1 => "token_stats_v1",
            Self::V2 => "token_stats_v2",
            Self::V3 => "token_stats_v3",
        }
    }
}

impl ForwardPlan {
    /// Every forward: each token-statistics version unfused, then the fused kernel.
    pub const ALL: [ForwardPlan; 4] = [
        Self::Unfused(TokenStatsKernel::V1),
        Self::Unfused(TokenStatsKernel::V2),
        Self::Unfused(TokenStatsKernel::V3),
        Self::Fused,
    ];

    /// A name for test and bench labels (`token_stats_v2`, `loss_head_fwd_v1`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Unfused(k) => k.name(),
            Self::Fused => "loss_head_fwd_v1",
        }
    }

    /// Bytes a forward moves: the logits read once (2 bytes each, f16 or bf16) and, per row,
    /// the target read and logp/entropy/LSE written.
    pub fn bytes(self, t: u64, v: u64) -> u64 {
        2 * t * v + 16 * t
    }
}

impl BackwardPlan {
    /// Every backward.
    pub const ALL: [BackwardPlan; 3] = [
        Self::Separate,
        Self::Fused { row_cache: false },
        Self::Fused { row_cache: true },
    ];

    /// A name for test and bench labels.
    pub fn name(self) -> &'static str {
        match self {
            Self::Separate => "policy_grad_v1",
            Self::Fused { row_cache: false } => "loss_head_fused_v1_reread",
            Self::Fused { row_cache: true } => "loss_head_fused_v1_cached",
        }
    }

    /// Bytes a backward moves for a gradient of `grad_bytes` per element: the logits read (twice
    /// when the fused kernel does not cache the row: statistics, then gradient) and the gradient
    /// written.
    pub fn bytes(self, t: u64, v: u64, grad_bytes: u64) -> u64 {
        let reads = match self {
            Self::Fused { row_cache: false } => 2,
            _ => 1,
        };
        reads * 2 * t * v + grad_bytes * t * v
    }
}

impl Plan {
    /// Every forward × backward plan at each block size in `blocks`, alternating the in-place
    /// gradient so both destinations are covered.
    pub fn all(blocks: &[u32]) -> Vec<Plan> {
        let mut plans = Vec::new();
        for &block in blocks {
            for (i, &forward) in ForwardPlan::ALL.iter().enumerate() {
                for (j, &backward) in BackwardPlan::ALL.iter().enumerate() {
                    plans.push(Plan {
                        forward,
                        backward,
                        block,
                        in_place: (i + j) % 2 == 0,
                    });
                }
            }
        }
        plans
    }
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

/// A logits element the kernels read: f16 or bf16. The head's entry points are generic over
/// it; each launch picks the kernel instantiated for it (`token_stats_bf16_v2`, …).
pub trait DeviceLogit: Elem + crate::cpu::Logit + crate::cpu::GradElem {
    /// The gradient dtype of an in-place update (the logits' own).
    const GRAD: GradDtype;
    /// The buffer's pointer, tagged with its dtype.
    fn logits_ptr(s: Slice<'_, Self>) -> LogitsPtr<'_>;
    /// A downloaded in-place gradient.
    fn grad_out(g: Vec<Self>) -> GradOut;
    /// A separate gradient buffer of this dtype as a destination.
    fn grad_dst(buf: SliceMut<'_, Self>) -> GradDst<'_>;
}

/// `impl DeviceLogit` for a 16-bit type and its variant name in the dtype enums.
macro_rules! device_logit {
    ($t:ty, $v:ident) => {
        impl DeviceLogit for $t {
            const GRAD: GradDtype = GradDtype::$v;
            fn logits_ptr(s: Slice<'_, Self>) -> LogitsPtr<'_> {
                LogitsPtr::$v(s.ptr())
            }
            fn grad_out(g: Vec<Self>) -> GradOut {
                GradOut::$v(g)
            }
            fn grad_dst(buf: SliceMut<'_, Self>) -> GradDst<'_> {
                GradDst::$v(buf)
            }
        }
    };
}
device_logit!(f16, F16);
device_logit!(bf16, Bf16);

/// The logits (T, V) on a device, typed by their element type.
#[derive(Clone, Copy)]
pub enum LogitsPtr<'a> {
    F16(Ptr<'a, f16>),
    Bf16(Ptr<'a, bf16>),
}

/// The gradient destination, typed by its element type.
#[derive(Clone, Copy)]
enum GradPtr<'a> {
    F16(Ptr<'a, f16>),
    Bf16(Ptr<'a, bf16>),
    F32(Ptr<'a, f32>),
}

impl GradPtr<'_> {
    fn dtype(self) -> GradDtype {
        match self {
            GradPtr::F16(_) => GradDtype::F16,
            GradPtr::Bf16(_) => GradDtype::Bf16,
            GradPtr::F32(_) => GradDtype::F32,
        }
    }
}

impl<'a> From<LogitsPtr<'a>> for GradPtr<'a> {
    /// In place: the gradient over the logits, in their dtype.
    fn from(x: LogitsPtr<'a>) -> Self {
        match x {
            LogitsPtr::F16(p) => GradPtr::F16(p),
            LogitsPtr::Bf16(p) => GradPtr::Bf16(p),
        }
    }
}

fn i32_of(arg: &'static str, n: usize) -> Result<i32> {
    i32::try_from(n).map_err(|_| Error::shape(arg, "a count below 2^31", n))
}

/// The loss head's buffers on a device for one batch layout: the per-row and per-response
/// inputs uploaded once, outputs kept on the device until [`DeviceHead::stats`]. The logits
/// (T, V) f16 or bf16 live with the caller (a model's output, or an upload). [`DeviceHead::forward`] and
/// [`DeviceHead::backward`] only launch kernels, so they are what a benchmark times and what a
/// trainer calls per step.
pub struct DeviceHead {
    /// (T, V, R, G) as the kernels take them.
    dims: (i32, i32, i32, i32),
    t: usize,
    v: usize,
    r: usize,
    g: usize,
    p: HeadParams,
    targets: DevBuf<u32>,
    row_resp: DevBuf<i32>,
    resp_start: DevBuf<u32>,
    resp_len: DevBuf<u32>,
    resp_group: DevBuf<u32>,
    grp_offsets: DevBuf<u32>,
    grp_members: DevBuf<u32>,
    adv_base: DevBuf<f32>,
    old_logp: Option<DevBuf<f32>>,
    ref_logp: Option<DevBuf<f32>>,
    /// logp, entropy, lse, token_loss: (T) f32
    pub logp: DevBuf<f32>,
    pub entropy: DevBuf<f32>,
    pub lse: DevBuf<f32>,
    pub token_loss: DevBuf<f32>,
    /// shift, log2_sum: (T) f32, the forward's row max and log2 of the shifted sum, which the
    /// separate backward reads (the rounded lse cannot give it p to f32 precision)
    shift: DevBuf<f32>,
    log2_sum: DevBuf<f32>,
    /// surprisal, mean_entropy, alpha, adv: (R) f32
    pub surprisal: DevBuf<f32>,
    pub mean_entropy: DevBuf<f32>,
    pub alpha: DevBuf<f32>,
    pub adv: DevBuf<f32>,
    /// loss: (1) f32
    pub loss: DevBuf<f32>,
    bad_count: DevBuf<u32>,
    first_bad: DevBuf<u32>,
    /// grad_bad: (2) u32, non-finite dlogits entries written and the first row with one.
    grad_bad: DevBuf<u32>,
    /// The last backward's gradient dtype (for the overflow message).
    grad_dtype: GradDtype,
    resp_done: DevBuf<u32>,
    grp_done: DevBuf<u32>,
}

/// Where the head writes dlogits (T, V).
/// A separate destination is any [`SliceMut`] of T·V elements: one of ours (`(&mut buf).into()`)
/// or the caller's (a cudarc `CudaSlice` on the GPU, host memory on the emulator).
pub enum GradDst<'a> {
    /// A separate f16 buffer of T·V elements.
    F16(SliceMut<'a, f16>),
    /// A separate bf16 buffer of T·V elements.
    Bf16(SliceMut<'a, bf16>),
    /// A separate f32 buffer of T·V elements.
    F32(SliceMut<'a, f32>),
    /// Over the logits, in their dtype (they must be writable: an owned buffer, or
    /// [`SliceMut::as_slice`]).
    InPlace,
}

impl<'a> From<&'a mut DevBuf<f16>> for GradDst<'a> {
    fn from(b: &'a mut DevBuf<f16>) -> Self {
        GradDst::F16(b.into())
    }
}
impl<'a> From<&'a mut DevBuf<bf16>> for GradDst<'a> {
    fn from(b: &'a mut DevBuf<bf16>) -> Self {
        GradDst::Bf16(b.into())
    }
}
impl<'a> From<&'a mut DevBuf<f32>> for GradDst<'a> {
    fn from(b: &'a mut DevBuf<f32>) -> Self {
        GradDst::F32(b.into())
    }
}

fn check_block(b: u32) -> Result<()> {
    if b == 0 || !b.is_multiple_of(32) || b > 1024 {
        return Err(Error::config(
            "block",
            f64::from(b),
            "must be a multiple of 32 in 32..=1024",
        ));
    }
    Ok(())
}

impl DeviceHead {
    /// Validates `inp` on the host (all but the logits' values, which the kernels check) and
    /// uploads it; allocates every output and workspace. `logits_len` is the length of the
    /// logits buffer the launches will be given (T·V).
    pub fn new(
        dev: &Device,
        inp: &HeadInputs,
        cfg: &HeadConfig,
        logits_len: usize,
    ) -> Result<Self> {
        let layout = validate_layout_for(inp, cfg, logits_len)?;
        Self::with_layout(dev, inp, cfg, &layout)
    }

    fn with_layout(
        dev: &Device,
        inp: &HeadInputs,
        cfg: &HeadConfig,
        layout: &Layout,
    ) -> Result<Self> {
        let (t, v, r, g) = (inp.rows(), inp.vocab, inp.responses(), inp.n_groups);
        let dims = (
            i32_of("T", t)?,
            i32_of("V", v)?,
            i32_of("R", r)?,
            i32_of("G", g)?,
        );
        Ok(DeviceHead {
            dims,
            t,
            v,
            r,
            g,
            p: params(cfg, layout, inp.old_logp.is_some()),
            targets: dev.htod(inp.targets)?,
            row_resp: dev.htod(&layout.row_resp)?,
            resp_start: dev.htod(inp.resp_start)?,
            resp_len: dev.htod(inp.resp_len)?,
            resp_group: dev.htod(inp.resp_group)?,
            grp_offsets: dev.htod(&layout.grp_offsets)?,
            grp_members: dev.htod(&layout.grp_members)?,
            adv_base: dev.htod(inp.adv_base)?,
            old_logp: inp.old_logp.map(|o| dev.htod(o)).transpose()?,
            ref_logp: inp.ref_logp.map(|o| dev.htod(o)).transpose()?,
            logp: dev.zeros(t)?,
            entropy: dev.zeros(t)?,
            lse: dev.zeros(t)?,
            token_loss: dev.zeros(t)?,
            shift: dev.zeros(t)?,
            log2_sum: dev.zeros(t)?,
            surprisal: dev.zeros(r)?,
            mean_entropy: dev.zeros(r)?,
            alpha: dev.zeros(r)?,
            adv: dev.zeros(r)?,
            loss: dev.zeros(1)?,
            bad_count: dev.zeros(1)?,
            first_bad: dev.htod(&[u32::MAX])?,
            grad_bad: dev.htod(&[0, u32::MAX])?,
            grad_dtype: GradDtype::F32,
            resp_done: dev.zeros(r)?,
            grp_done: dev.zeros(g)?,
        })
    }

    fn check_logits<X: Elem>(&self, logits: &Slice<'_, X>) -> Result<()> {
        let tv = self.t * self.v; // T·V < 2^64: checked by validation
        if logits.len() == tv {
            Ok(())
        } else {
            Err(Error::shape(
                "logits",
                format!("(T, V) = {tv} elements"),
                logits.len(),
            ))
        }
    }

    fn row_grid(&self, block: u32) -> Result<LaunchCfg> {
        let grid = u32::try_from(self.t).map_err(|_| Error::shape("T", "< 2^32", self.t))?;
        Ok(LaunchCfg {
            grid,
            block,
            smem: 0,
        })
    }

    /// Zeroes the kernels' counters. The fused forward leaves its completion counters at zero
    /// when it finishes, but a failed launch may not, so they are reset every time (R + G words).
    fn reset_counters(&mut self, dev: &Device) -> Result<()> {
        self.reset_bad_rows(dev)?;
        dev.write(&mut self.resp_done, &vec![0; self.r])?;
        dev.write(&mut self.grp_done, &vec![0; self.g])
    }

    /// Zeroes the bad-row counter (and sets the first bad row to "none").
    fn reset_bad_rows(&mut self, dev: &Device) -> Result<()> {
        dev.write(&mut self.bad_count, &[0])?;
        dev.write(&mut self.first_bad, &[u32::MAX])
    }

    /// Token stats, response stats, α and the rescaled advantage (launches only).
    pub fn forward<'l, X: DeviceLogit>(
        &mut self,
        dev: &Device,
        logits: impl Into<Slice<'l, X>>,
        plan: &Plan,
    ) -> Result<()> {
        let logits = logits.into();
        let b = plan.block;
        check_block(b)?;
        self.check_logits(&logits)?;
        self.reset_counters(dev)?;
        let (ti, vi, ri, gi) = self.dims;
        let p = self.p;
        let row_grid = self.row_grid(b)?;
        let x = X::logits_ptr(logits);
        match plan.forward {
            ForwardPlan::Unfused(k) => {
                let cfg = |grid| LaunchCfg {
                    grid,
                    block: b,
                    smem: 0,
                };
                // The three versions and both dtypes share one signature.
                macro_rules! token_stats {
                    ($k:ident, $x:expr, $grid:expr) => {
                        kernels::$k {
                            logits: $x,
                            targets: self.targets.ptr(),
                            t: ti,
                            v: vi,
                            logp: self.logp.ptr(),
                            entropy: self.entropy.ptr(),
                            lse: self.lse.ptr(),
                            shift: self.shift.ptr(),
                            log2_sum: self.log2_sum.ptr(),
                            bad_count: self.bad_count.ptr(),
                            first_bad_row: self.first_bad.ptr(),
                            p,
                        }
                        .launch(dev, cfg($grid))
                    };
                }
                let grid = match k {
                    TokenStatsKernel::V1 => blocks(self.t, b)?,
                    TokenStatsKernel::V2 => row_grid.grid,
                    TokenStatsKernel::V3 => blocks(self.t, b / 32)?,
                };
                use {LogitsPtr as L, TokenStatsKernel as K};
                match (k, x) {
                    (K::V1, L::F16(x)) => token_stats!(TokenStatsF16V1, x, grid),
                    (K::V1, L::Bf16(x)) => token_stats!(TokenStatsBf16V1, x, grid),
                    (K::V2, L::F16(x)) => token_stats!(TokenStatsF16V2, x, grid),
                    (K::V2, L::Bf16(x)) => token_stats!(TokenStatsBf16V2, x, grid),
                    (K::V3, L::F16(x)) => token_stats!(TokenStatsF16V3, x, grid),
                    (K::V3, L::Bf16(x)) => token_stats!(TokenStatsBf16V3, x, grid),
                }?;
                kernels::RespStatsV1 {
                    logp: self.logp.ptr(),
                    entropy: self.entropy.ptr(),
                    resp_start: self.resp_start.ptr(),
                    resp_len: self.resp_len.ptr(),
                    r: ri,
                    surprisal: self.surprisal.ptr(),
                    mean_entropy: self.mean_entropy.ptr(),
                }
                .launch(
                    dev,
                    LaunchCfg {
                        grid: blocks(self.r, b)?,
                        block: b,
                        smem: 0,
                    },
                )?;
                kernels::AemAlphaV1 {
                    mean_entropy: self.mean_entropy.ptr(),
                    adv_base: self.adv_base.ptr(),
                    grp_offsets: self.grp_offsets.ptr(),
                    grp_members: self.grp_members.ptr(),
                    g: gi,
                    alpha: self.alpha.ptr(),
                    adv: self.adv.ptr(),
                    p,
                }
                .launch(
                    dev,
                    LaunchCfg {
                        grid: blocks(self.g, b)?,
                        block: b,
                        smem: 0,
                    },
                )?;
            }
            ForwardPlan::Fused => {
                // Both dtypes share one signature.
                macro_rules! fwd {
                    ($k:ident, $x:expr) => {
                        kernels::$k {
                            logits: $x,
                            targets: self.targets.ptr(),
                            row_resp: self.row_resp.ptr(),
                            resp_start: self.resp_start.ptr(),
                            resp_len: self.resp_len.ptr(),
                            resp_group: self.resp_group.ptr(),
                            grp_offsets: self.grp_offsets.ptr(),
                            grp_members: self.grp_members.ptr(),
                            adv_base: self.adv_base.ptr(),
                            t: ti,
                            v: vi,
                            logp: self.logp.ptr(),
                            entropy: self.entropy.ptr(),
                            lse: self.lse.ptr(),
                            shift: self.shift.ptr(),
                            log2_sum: self.log2_sum.ptr(),
                            surprisal: self.surprisal.ptr(),
                            mean_entropy: self.mean_entropy.ptr(),
                            alpha: self.alpha.ptr(),
                            adv: self.adv.ptr(),
                            resp_done: self.resp_done.ptr(),
                            grp_done: self.grp_done.ptr(),
                            bad_count: self.bad_count.ptr(),
                            first_bad_row: self.first_bad.ptr(),
                            p,
                        }
                        .launch(dev, row_grid)
                    };
                }
                match x {
                    LogitsPtr::F16(x) => fwd!(LossHeadFwdF16V1, x),
                    LogitsPtr::Bf16(x) => fwd!(LossHeadFwdBf16V1, x),
                }?;
            }
        }
        Ok(())
    }

    /// Per-token loss, the gradient into the logits and the scalar loss (launches only), from
    /// the advantages of the last [`DeviceHead::forward`].
    pub fn backward<'l, X: DeviceLogit>(
        &mut self,
        dev: &Device,
        logits: impl Into<Slice<'l, X>>,
        grad: GradDst<'_>,
        plan: &Plan,
    ) -> Result<()> {
        let logits = logits.into();
        let b = plan.block;
        check_block(b)?;
        self.check_logits(&logits)?;
        if matches!(grad, GradDst::InPlace) && !logits.is_writable() {
            return Err(Error::config(
                "grad",
                0.0,
                "in place needs writable logits (an owned buffer or SliceMut::as_slice), \
                 not a read-only borrowed slice",
            ));
        }
        let tv = self.t * self.v;
        let glen = match &grad {
            GradDst::F16(g) => g.len(),
            GradDst::Bf16(g) => g.len(),
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
        let (ti, vi, _, _) = self.dims;
        let p = self.p;
        let row_grid = self.row_grid(b)?;
        let x = X::logits_ptr(logits);
        let dst = match &grad {
            GradDst::F16(g) => GradPtr::F16(g.ptr()),
            GradDst::Bf16(g) => GradPtr::Bf16(g.ptr()),
            GradDst::F32(g) => GradPtr::F32(g.ptr()),
            GradDst::InPlace => GradPtr::from(x),
        };
        self.grad_dtype = dst.dtype();
        dev.write(&mut self.grad_bad, &[0, u32::MAX])?;
        // Every (logits, gradient) dtype pair: one signature but for the element types.
        macro_rules! policy_grad {
            ($k:ident, $x:expr, $dlogits:expr) => {
                kernels::$k {
                    logits: $x,
                    targets: self.targets.ptr(),
                    row_resp: self.row_resp.ptr(),
                    resp_len: self.resp_len.ptr(),
                    adv: self.adv.ptr(),
                    logp: self.logp.ptr(),
                    entropy: self.entropy.ptr(),
                    shift: self.shift.ptr(),
                    log2_sum: self.log2_sum.ptr(),
                    old_logp: Ptr::opt(self.old_logp.as_ref()),
                    ref_logp: Ptr::opt(self.ref_logp.as_ref()),
                    t: ti,
                    v: vi,
                    dlogits: $dlogits,
                    token_loss: self.token_loss.ptr(),
                    grad_bad: self.grad_bad.ptr(),
                    p,
                }
                .launch(dev, row_grid)
            };
        }
        // The cache holds the row plus 8 elements of alignment slack, rounded to 16 bytes.
        let need = (2 * (self.v as u64 + 8)).div_ceil(16) * 16;
        let row_cache = matches!(plan.backward, BackwardPlan::Fused { row_cache: true });
        macro_rules! fused {
            ($k:ident, $x:expr, $dlogits:expr) => {{
                // The row fits when it fits beside the kernel's static shared memory.
                let room = dev.max_dyn_smem(kernels::$k::NAME)?;
                let cache = if row_cache && need <= u64::from(room) {
                    need as u32 // ≤ room, a u32
                } else {
                    0
                };
                kernels::$k {
                    logits: $x,
                    targets: self.targets.ptr(),
                    row_resp: self.row_resp.ptr(),
                    resp_len: self.resp_len.ptr(),
                    adv: self.adv.ptr(),
                    old_logp: Ptr::opt(self.old_logp.as_ref()),
                    ref_logp: Ptr::opt(self.ref_logp.as_ref()),
                    t: ti,
                    v: vi,
                    row_cache_bytes: cache,
                    dlogits: $dlogits,
                    logp: self.logp.ptr(),
                    entropy: self.entropy.ptr(),
                    lse: self.lse.ptr(),
                    token_loss: self.token_loss.ptr(),
                    bad_count: self.bad_count.ptr(),
                    first_bad_row: self.first_bad.ptr(),
                    grad_bad: self.grad_bad.ptr(),
                    p,
                }
                .launch(
                    dev,
                    LaunchCfg {
                        smem: cache,
                        ..row_grid
                    },
                )
            }};
        }
        use {GradPtr as G, LogitsPtr as L};
        match plan.backward {
            BackwardPlan::Separate => match (x, dst) {
                (L::F16(x), G::F16(d)) => policy_grad!(PolicyGradF16F16V1, x, d),
                (L::F16(x), G::Bf16(d)) => policy_grad!(PolicyGradF16Bf16V1, x, d),
                (L::F16(x), G::F32(d)) => policy_grad!(PolicyGradF16F32V1, x, d),
                (L::Bf16(x), G::F16(d)) => policy_grad!(PolicyGradBf16F16V1, x, d),
                (L::Bf16(x), G::Bf16(d)) => policy_grad!(PolicyGradBf16Bf16V1, x, d),
                (L::Bf16(x), G::F32(d)) => policy_grad!(PolicyGradBf16F32V1, x, d),
            }?,
            BackwardPlan::Fused { .. } => match (x, dst) {
                (L::F16(x), G::F16(d)) => fused!(LossHeadFusedF16F16V1, x, d),
                (L::F16(x), G::Bf16(d)) => fused!(LossHeadFusedF16Bf16V1, x, d),
                (L::F16(x), G::F32(d)) => fused!(LossHeadFusedF16F32V1, x, d),
                (L::Bf16(x), G::F16(d)) => fused!(LossHeadFusedBf16F16V1, x, d),
                (L::Bf16(x), G::Bf16(d)) => fused!(LossHeadFusedBf16Bf16V1, x, d),
                (L::Bf16(x), G::F32(d)) => fused!(LossHeadFusedBf16F32V1, x, d),
            }?,
        }
        kernels::LossReduceV1 {
            token_loss: self.token_loss.ptr(),
            row_resp: self.row_resp.ptr(),
            resp_len: self.resp_len.ptr(),
            t: ti,
            loss: self.loss.ptr(),
            p,
        }
        .launch(
            dev,
            LaunchCfg {
                grid: 1,
                block: b,
                smem: 0,
            },
        )
    }

    /// The policy-update plan, for a trainer that fixed α itself (AEM.md §3: α from the
    /// *sampling-time* entropies, constant through the update): `adv_base` is taken as the
    /// rescaled advantage `A = α·A_base` as it is, no α is computed from these logits and no
    /// separate forward runs — one fused forward+backward launch (statistics, token loss,
    /// dlogits) and the loss reduction. Read the results with [`Self::update_stats`].
    pub fn update<'l, X: DeviceLogit>(
        &mut self,
        dev: &Device,
        logits: impl Into<Slice<'l, X>>,
        grad: GradDst<'_>,
        block: u32,
    ) -> Result<()> {
        let logits = logits.into();
        check_block(block)?;
        self.check_logits(&logits)?;
        self.reset_bad_rows(dev)?;
        dev.copy(&self.adv_base, &mut self.adv)?;
        let plan = Plan {
            backward: BackwardPlan::Fused { row_cache: true },
            block,
            ..Plan::default()
        };
        self.backward(dev, logits, grad, &plan)
    }

    /// Downloads what [`Self::update`] computed, the per-row outputs and the loss (after a
    /// synchronisation).
    pub fn update_stats(&self, dev: &Device) -> Result<UpdateStats> {
        dev.synchronize()?;
        Ok(UpdateStats {
            logp: dev.dtoh(&self.logp)?,
            entropy: dev.dtoh(&self.entropy)?,
            lse: dev.dtoh(&self.lse)?,
            token_loss: dev.dtoh(&self.token_loss)?,
            loss: dev.dtoh(&self.loss)?.first().copied().unwrap_or(0.0),
            grad_bad: match dev.dtoh(&self.grad_bad)?.as_slice() {
                &[n, row] if row != u32::MAX => Some((u64::from(n), row as usize)),
                _ => None,
            },
            grad_dtype: self.grad_dtype,
        })
    }

    /// Reports rows the kernels found non-finite since the last forward (one small download).
    pub fn check(&self, dev: &Device) -> Result<()> {
        check_bad(dev, &self.bad_count, &self.first_bad)
    }

    /// Downloads every output but the gradient.
    pub fn stats(&self, dev: &Device) -> Result<HeadStats> {
        Ok(HeadStats {
            rows: self.update_stats(dev)?,
            resp_surprisal: dev.dtoh(&self.surprisal)?,
            resp_mean_entropy: dev.dtoh(&self.mean_entropy)?,
            alpha: dev.dtoh(&self.alpha)?,
            adv: dev.dtoh(&self.adv)?,
        })
    }
}

/// Forward, check, backward, check, download: the whole head on logits already on `dev`.
fn run<X: DeviceLogit>(
    dev: &Device,
    head: &mut DeviceHead,
    logits: Slice<'_, X>,
    grad: GradDst<'_>,
    plan: &Plan,
    inp: &HeadInputs,
    cfg: &HeadConfig,
) -> Result<HeadStats> {
    head.forward(dev, logits, plan)?;
    head.check(dev)?;
    head.backward(dev, logits, grad, plan)?;
    head.check(dev)?;
    let stats = head.stats(dev)?;
    stats.check(inp, cfg)?;
    Ok(stats)
}

/// The head on logits that already live on `dev` (a model's output), with dlogits left on the
/// device in `grad`. `logits` (T, V) f16 or bf16 stands for `inp.logits`, which is not read
/// (pass an empty slice). The logits are not scanned on the host: a non-finite logit is reported by the
/// kernels as `Error::NonFinite` for its row.
pub fn loss_head_resident<X: DeviceLogit>(
    dev: &Device,
    logits: &mut DevBuf<X>,
    inp: &HeadInputs,
    cfg: &HeadConfig,
    grad: GradDst<'_>,
    plan: &Plan,
) -> Result<HeadStats> {
    check_block(plan.block)?;
    let mut head = DeviceHead::new(dev, inp, cfg, logits.len())?;
    run(dev, &mut head, (&*logits).into(), grad, plan, inp, cfg)
}

/// The policy-update plan ([`DeviceHead::update`]) on logits that already live on `dev`, with
/// `inp.adv_base` the given `A = α·A_base` and dlogits left on the device in `grad`; `λ`, `δ`
/// are not used. `logits` (T, V) f16 or bf16 stands for `inp.logits`, which is not read.
pub fn loss_head_update_resident<X: DeviceLogit>(
    dev: &Device,
    logits: &mut DevBuf<X>,
    inp: &HeadInputs,
    cfg: &HeadConfig,
    grad: GradDst<'_>,
    block: u32,
) -> Result<UpdateStats> {
    check_block(block)?;
    let mut head = DeviceHead::new(dev, inp, cfg, logits.len())?;
    head.update(dev, logits, grad, block)?;
    head.check(dev)?;
    let stats = head.update_stats(dev)?;
    stats.check(inp, cfg)?;
    Ok(stats)
}

/// Runs the head on host inputs (validated on the host, logits included) and downloads every
/// output. The gradient is written over the uploaded logits when `plan.in_place` and `dtype` is
/// the logits' dtype, else into a separate buffer.
pub fn loss_head(
    dev: &Device,
    inp: &HeadInputs,
    cfg: &HeadConfig,
    dtype: GradDtype,
    plan: &Plan,
) -> Result<HeadResult> {
    check_block(plan.block)?;
    let layout = validate(inp, cfg)?;
    let mut head = DeviceHead::with_layout(dev, inp, cfg, &layout)?;
    crate::with_logits!(inp.logits, x => {
        loss_head_on(dev, &mut head, x, inp, cfg, dtype, plan)
    })
}

fn loss_head_on<X: DeviceLogit>(
    dev: &Device,
    head: &mut DeviceHead,
    x: &[X],
    inp: &HeadInputs,
    cfg: &HeadConfig,
    dtype: GradDtype,
    plan: &Plan,
) -> Result<HeadResult> {
    let logits = dev.htod(x)?;
    if plan.in_place && dtype == X::GRAD {
        let s = run(
            dev,
            head,
            (&logits).into(),
            GradDst::InPlace,
            plan,
            inp,
            cfg,
        )?;
        return Ok(HeadResult {
            stats: s,
            dlogits: X::grad_out(dev.dtoh(&logits)?),
        });
    }
    // A separate gradient buffer of the requested dtype.
    macro_rules! separate {
        ($t:ty, $variant:ident) => {{
            let mut g = dev.zeros::<$t>(x.len())?;
            let s = run(dev, head, (&logits).into(), (&mut g).into(), plan, inp, cfg)?;
            (s, GradOut::$variant(dev.dtoh(&g)?))
        }};
    }
    let (stats, dlogits) = match dtype {
        GradDtype::F16 => separate!(f16, F16),
        GradDtype::Bf16 => separate!(bf16, Bf16),
        GradDtype::F32 => separate!(f32, F32),
    };
    Ok(HeadResult { stats, dlogits })
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
