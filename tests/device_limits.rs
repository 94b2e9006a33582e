//! Launch limits: the decisions a GPU takes (block size, grid, static + dynamic shared memory,
//! the opt-in threshold), taken on the host and exercised on the emulator impersonating sm_80
//! and sm_90.

mod common;

use aem::device::emu::EmuDevice;
use aem::device::limits::{static_smem, STATIC_SMEM};
use aem::device::modules::MODULES;
use aem::device::{Device, LaunchCfg, Limits};
use aem::Error;
use common::check_row_cache_launch;

fn cfg(grid: u32, block: u32, smem: u32) -> LaunchCfg {
    LaunchCfg { grid, block, smem }
}

fn limit_of(e: Error) -> (String, &'static str, u64, u64, String) {
    match e {
        Error::LaunchLimit {
            kernel,
            limit,
            requested,
            max,
            arch,
        } => (kernel, limit, requested, max, arch),
        other => panic!("expected a LaunchLimit error, got {other}"),
    }
}

#[test]
fn every_shipped_kernel_has_a_static_smem_entry_and_no_entry_is_stale() {
    let shipped: Vec<&str> = MODULES
        .iter()
        .flat_map(|m| m.kernels.iter().copied())
        .collect();
    for k in &shipped {
        assert!(static_smem(k).is_ok(), "{k}: missing from STATIC_SMEM");
    }
    for (k, _) in STATIC_SMEM {
        assert!(shipped.contains(k), "{k}: in STATIC_SMEM but not shipped");
    }
    assert!(static_smem("no_such_kernel").is_err());
}

#[test]
fn block_grid_and_shared_memory_violations_are_typed_errors_naming_kernel_and_limit() {
    let l = Limits::SM90;
    let (k, limit, req, max, arch) =
        limit_of(l.check("k_v1", cfg(1, 2048, 0), 0, None).unwrap_err());
    assert_eq!(
        (k.as_str(), limit, req, max, arch.as_str()),
        ("k_v1", "threads per block", 2048, 1024, "sm_90")
    );
    assert_eq!(
        limit_of(l.check("k_v1", cfg(1, 0, 0), 0, None).unwrap_err()).1,
        "threads per block"
    );
    // A compiled form whose registers allow fewer threads than the device.
    let (_, limit, req, max, _) =
        limit_of(l.check("k_v1", cfg(1, 1024, 0), 0, Some(512)).unwrap_err());
    assert_eq!(
        (limit, req, max),
        ("threads per block (this kernel's registers)", 1024, 512)
    );
    let (_, limit, ..) = limit_of(l.check("k_v1", cfg(u32::MAX, 256, 0), 0, None).unwrap_err());
    assert_eq!(limit, "blocks in x");
    // Static shared memory counts against the opt-in maximum: the whole maximum as dynamic
    // memory fits only a kernel with no static shared memory.
    assert!(l.check("k_v1", cfg(1, 256, l.smem_optin), 0, None).unwrap());
    let (_, limit, req, max, _) = limit_of(
        l.check("k_v1", cfg(1, 256, l.smem_optin), 400, None)
            .unwrap_err(),
    );
    assert_eq!(limit, "static + dynamic shared memory (bytes)");
    assert_eq!(
        (req, max),
        (u64::from(l.smem_optin) + 400, u64::from(l.smem_optin))
    );
    assert_eq!(l.max_dyn_smem(400), l.smem_optin - 400);
    // The opt-in attribute is needed only above 48 KiB, static part included.
    assert!(!l
        .check("k_v1", cfg(1, 256, 48 * 1024 - 400), 400, None)
        .unwrap());
    assert!(l
        .check("k_v1", cfg(1, 256, 48 * 1024 - 399), 400, None)
        .unwrap());
    // sm_80 allows less than sm_90.
    let dyn_ = 200 * 1024;
    assert!(Limits::SM90
        .check("k_v1", cfg(1, 256, dyn_), 0, None)
        .is_ok());
    assert_eq!(
        limit_of(
            Limits::SM80
                .check("k_v1", cfg(1, 256, dyn_), 0, None)
                .unwrap_err()
        )
        .4,
        "sm_80"
    );
}

#[test]
fn the_emulator_refuses_what_the_impersonated_gpu_would_refuse() {
    let dev = Device::Emu(EmuDevice::new().unwrap().with_limits(Limits::SM80));
    assert_eq!(dev.limits(), Limits::SM80);
    assert_eq!(dev.static_smem("loss_reduce_v1").unwrap(), 144);
    assert_eq!(
        dev.max_dyn_smem("loss_head_fused_f16_f16_v1").unwrap(),
        163 * 1024 - 400
    );
    // A launch over the block limit never reaches the kernel.
    let err = aem::device::kernels::FillF32V1 {
        x: aem::device::Ptr::null(),
        n: 0,
        value: 0.0,
    }
    .launch(&dev, cfg(1, 2048, 0))
    .unwrap_err();
    let (k, limit, ..) = limit_of(err);
    assert_eq!((k.as_str(), limit), ("fill_f32_v1", "threads per block"));
}

/// The fused kernel's row cache is chosen only when the row fits *beside* the kernel's static
/// shared memory: at this V the row alone fits the opt-in maximum of sm_90 (232,432 ≤ 232,448
/// bytes) but not with the 400 static bytes, so a decision that ignored them would launch an
/// invalid configuration (on the emulator: a LaunchLimit error; on a GPU:
/// CUDA_ERROR_INVALID_VALUE). On sm_80 a smaller V sits at the same edge.
#[test]
fn the_row_cache_decision_counts_static_shared_memory() {
    for (limits, v) in [(Limits::SM90, 116_208usize), (Limits::SM80, 83_432)] {
        let need = (2 * (v as u64 + 8)).div_ceil(16) * 16;
        assert!(
            need <= u64::from(limits.smem_optin),
            "{v}: the row alone must fit"
        );
        assert!(
            need + 400 > u64::from(limits.smem_optin),
            "{v}: not with the static part"
        );
        let dev = Device::Emu(EmuDevice::new().unwrap().with_limits(limits));
        check_row_cache_launch(&dev, v);
    }
}
