//! Launch limits, checked before every launch on either executor.
//!
//! CUDA refuses a launch whose block is too large, whose grid is too wide, or whose static plus
//! dynamic shared memory exceeds what the block may use: 48 KiB without opting in, and with the
//! opt-in attribute `CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES` at most the device's
//! opt-in maximum *minus the kernel's static shared memory*. [`Limits::check`] takes that
//! decision on the host, so a violation is a typed [`Error::LaunchLimit`] naming the kernel and
//! the limit instead of `CUDA_ERROR_INVALID_VALUE`, and the emulator impersonates a device's
//! table ([`Limits::SM80`], [`Limits::SM90`]) so the tests take the decisions a GPU takes.

use super::LaunchCfg;
use crate::error::{Error, Result};

/// What a device allows one launch (1-D launches: every kernel here uses x only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Limits {
    /// Compute capability (major, minor).
    pub sm: (u32, u32),
    /// Threads per block.
    pub max_block: u32,
    /// Blocks in x.
    pub max_grid_x: u32,
    /// Static + dynamic shared memory per block without the opt-in attribute (bytes).
    pub smem_default: u32,
    /// Static + dynamic shared memory per block with the opt-in attribute (bytes).
    pub smem_optin: u32,
}

impl Limits {
    /// A100 (sm_80): 163 KiB of shared memory per block with opt-in.
    pub const SM80: Limits = Limits {
        sm: (8, 0),
        max_block: 1024,
        max_grid_x: i32::MAX as u32,
        smem_default: 48 * 1024,
        smem_optin: 163 * 1024,
    };
    /// H100 / H200 (sm_90): 227 KiB of shared memory per block with opt-in.
    pub const SM90: Limits = Limits {
        sm: (9, 0),
        max_block: 1024,
        max_grid_x: i32::MAX as u32,
        smem_default: 48 * 1024,
        smem_optin: 227 * 1024,
    };

    /// `sm_XY`.
    pub fn arch(&self) -> String {
        format!("sm_{}{}", self.sm.0, self.sm.1)
    }

    /// The most dynamic shared memory a launch of a kernel with `static_smem` bytes of static
    /// shared memory may ask for.
    pub fn max_dyn_smem(&self, static_smem: u32) -> u32 {
        self.smem_optin.saturating_sub(static_smem)
    }

    /// Checks `cfg` for `kernel`, whose static shared memory is `static_smem` bytes and whose
    /// compiled form allows at most `kernel_max_block` threads (registers can lower it below
    /// the device's limit; None when unknown). `Ok(true)` when the launch needs the opt-in
    /// attribute (static + dynamic above [`Self::smem_default`]).
    pub fn check(
        &self,
        kernel: &str,
        cfg: LaunchCfg,
        static_smem: u32,
        kernel_max_block: Option<u32>,
    ) -> Result<bool> {
        let fail = |limit: &'static str, requested: u64, max: u64| Error::LaunchLimit {
            kernel: kernel.to_string(),
            limit,
            requested,
            max,
            arch: self.arch(),
        };
        if cfg.block == 0 || cfg.block > self.max_block {
            return Err(fail(
                "threads per block",
                cfg.block.into(),
                self.max_block.into(),
            ));
        }
        if let Some(k) = kernel_max_block.filter(|&k| cfg.block > k) {
            return Err(fail(
                "threads per block (this kernel's registers)",
                cfg.block.into(),
                k.into(),
            ));
        }
        if cfg.grid > self.max_grid_x {
            return Err(fail("blocks in x", cfg.grid.into(), self.max_grid_x.into()));
        }
        let total = u64::from(static_smem) + u64::from(cfg.smem);
        if total > u64::from(self.smem_optin) {
            return Err(fail(
                "static + dynamic shared memory (bytes)",
                total,
                self.smem_optin.into(),
            ));
        }
        Ok(total > u64::from(self.smem_default))
    }
}

/// Static shared memory per kernel (bytes), as ptxas reports it for both sm_80 and sm_90. The
/// NVRTC compile check (`tests/compile_kernels.rs`) holds this table to the compiler's numbers,
/// so a kernel that changes its `__shared__` arrays fails CI until the table follows; on a GPU
/// the driver's own figure is used (and the GPU suite compares it with this table). The
/// emulator cannot measure static shared memory (its `__shared__` is thread-local storage), so
/// it reads this table to take the same decisions.
pub const STATIC_SMEM: &[(&str, u32)] = &[
    ("token_stats_f16_v1", 0),
    ("token_stats_bf16_v1", 0),
    ("token_stats_f16_v2", 400),
    ("token_stats_bf16_v2", 400),
    ("token_stats_f16_v3", 0),
    ("token_stats_bf16_v3", 0),
    ("resp_stats_v1", 0),
    ("aem_alpha_v1", 0),
    ("loss_head_fwd_f16_v1", 400),
    ("loss_head_fwd_bf16_v1", 400),
    ("policy_grad_f16_f16_v1", 0),
    ("policy_grad_f16_bf16_v1", 0),
    ("policy_grad_f16_f32_v1", 0),
    ("policy_grad_bf16_f16_v1", 0),
    ("policy_grad_bf16_bf16_v1", 0),
    ("policy_grad_bf16_f32_v1", 0),
    ("loss_head_fused_f16_f16_v1", 400),
    ("loss_head_fused_f16_bf16_v1", 400),
    ("loss_head_fused_f16_f32_v1", 400),
    ("loss_head_fused_bf16_f16_v1", 400),
    ("loss_head_fused_bf16_bf16_v1", 400),
    ("loss_head_fused_bf16_f32_v1", 400),
    ("loss_reduce_v1", 144),
    ("encoder_fwd_v1", 0),
    ("encoder_bwd_wte_v1", 0),
    ("encoder_bwd_wpe_v1", 0),
    ("layernorm_fwd_v1", 0),
    ("layernorm_bwd_v1", 0),
    ("layernorm_bwd_params_v1", 0),
    ("bias_add_cast_v1", 0),
    ("bias_grad_v1", 0),
    ("gelu_fwd_v1", 0),
    ("gelu_bwd_v1", 0),
    ("residual_fwd_v1", 0),
    ("cast_f16_f32_v1", 0),
    ("cast_f32_f16_v1", 0),
    ("fill_f32_v1", 0),
    ("mask_logits_v1", 0),
    ("attention_fwd_v1", 0),
    ("attention_bwd_q_v1", 0),
    ("attention_bwd_kv_v1", 0),
    ("kv_append_v1", 0),
    ("attention_decode_v1", 0),
    ("adamw_v1", 0),
    ("sumsq_v1", 132),
];

/// `kernel`'s entry in [`STATIC_SMEM`]: [`Error::KernelMissing`] for a kernel no module ships,
/// an error naming the kernel for a shipped one the table lacks.
pub fn static_smem(kernel: &str) -> Result<u32> {
    if super::modules::find(kernel).is_none() {
        return Err(Error::KernelMissing {
            module: "(none)".into(),
            name: kernel.into(),
        });
    }
    STATIC_SMEM
        .iter()
        .find(|(k, _)| *k == kernel)
        .map(|&(_, b)| b)
        .ok_or_else(|| Error::Device {
            backend: "device",
            message: format!(
                "{kernel}: no static shared memory entry in device::limits::STATIC_SMEM \
                 (add the ptxas figure the NVRTC compile check prints)"
            ),
        })
}
