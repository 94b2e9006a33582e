//! The parity suite on a real GPU through `CudaDevice`. Without a driver or device each test
//! prints why it skips; with `AEM_REQUIRE_CUDA=1` a skip is a failure, so a GPU run cannot pass
//! by skipping.

mod common;

use aem::device::Device;
use aem::head::file::GradDtype;
use aem::head::launch::{BackwardPlan, ForwardPlan, Plan};
use aem::head::HeadConfig;
use common::{check_parity, check_row_cache_launch, problem, Spec};

fn gpu(test: &str) -> Option<Device> {
    match Device::cuda(0) {
        Ok(d) => {
            eprintln!("{test}: running on {}", d.name());
            Some(d)
        }
        Err(e) => {
            if std::env::var("AEM_REQUIRE_CUDA").is_ok_and(|v| v == "1") {
                panic!("{test}: AEM_REQUIRE_CUDA=1 but no GPU: {e}");
            }
            eprintln!(
                "{test}: SKIPPED (no GPU: {e}); set AEM_REQUIRE_CUDA=1 to make this a failure"
            );
            None
        }
    }
}

#[test]
fn gpu_parity_every_plan() {
    let Some(dev) = gpu("gpu_parity_every_plan") else {
        return;
    };
    for v in [1usize, 7, 31, 257, 4097, 50257] {
        let max_len = if v > 5000 { 3 } else { 9 };
        let d = problem(
            v as u64,
            Spec {
                vocab: v,
                responses: 11,
                groups: 3,
                max_len,
                ..Spec::default()
            },
        );
        // Both logits dtypes; every gradient dtype, in place for the logits' own.
        for d in common::each_dtype(&d) {
            let (own, other) = match d.logits {
                aem::head::file::LogitsVec::F16(_) => (GradDtype::F16, GradDtype::Bf16),
                aem::head::file::LogitsVec::Bf16(_) => (GradDtype::Bf16, GradDtype::F16),
            };
            for block in [32u32, 256, 1024] {
                for forward in ForwardPlan::ALL {
                    for backward in BackwardPlan::ALL {
                        for (dtype, in_place) in [
                            (GradDtype::F32, false),
                            (own, false),
                            (own, true),
                            (other, false),
                        ] {
                            let cfg = HeadConfig {
                                entropy_coef: 0.01,
                                kl_coef: 0.1,
                                dual_clip: Some(3.0),
                                ..HeadConfig::default()
                            };
                            let plan = Plan {
                                forward,
                                backward,
                                block,
                                in_place,
                            };
                            check_parity(&dev, &d, &cfg, dtype, &plan);
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn gpu_matches_emulator_bitwise_where_arithmetic_is_exact() {
    let Some(dev) = gpu("gpu_matches_emulator_bitwise_where_arithmetic_is_exact") else {
        return;
    };
    // α of a guarded or singleton group is exactly 1 on both; integer-derived outputs agree.
    let d = problem(
        3,
        Spec {
            vocab: 257,
            responses: 5,
            groups: 5,
            ..Spec::default()
        },
    );
    let emu = Device::emu().unwrap();
    let cfg = HeadConfig::default();
    let a = aem::head::launch::loss_head(&dev, &d.inputs(), &cfg, GradDtype::F32, &Plan::default())
        .unwrap();
    let b = aem::head::launch::loss_head(&emu, &d.inputs(), &cfg, GradDtype::F32, &Plan::default())
        .unwrap();
    assert_eq!(a.alpha, b.alpha);
    assert!(a.alpha.iter().all(|&x| x == 1.0));
}

/// The driver's static shared memory for every kernel of the loaded images equals the table the
/// emulator decides with, and the row-cache edge (the row fits the opt-in maximum only without
/// the static part) launches on this GPU's own limits.
#[test]
fn gpu_static_smem_matches_the_table_and_the_row_cache_edge_launches() {
    let Some(dev) = gpu("gpu_static_smem_matches_the_table_and_the_row_cache_edge_launches") else {
        return;
    };
    for m in aem::device::modules::MODULES {
        for k in m.kernels {
            assert_eq!(
                dev.static_smem(k).unwrap(),
                aem::device::limits::static_smem(k).unwrap(),
                "{k}: driver vs device::limits::STATIC_SMEM"
            );
        }
    }
    let optin = u64::from(dev.limits().smem_optin);
    // The largest V whose row cache fits the opt-in maximum alone.
    let v = (optin / 16 * 16 / 2 - 8) as usize;
    check_row_cache_launch(&dev, v);
}

/// The caller's stream and buffers: a cudarc stream the test creates, logits uploaded into its
/// own `CudaSlice` (f16 and bf16), the gradient written into another; equal bitwise to the
/// crate's own device and buffers (the same kernels on the same GPU).
#[test]
fn gpu_head_on_the_callers_stream_and_buffers() {
    use aem::device::{Slice, SliceMut};
    use aem::head::file::GradOut;
    use aem::head::launch::{DeviceHead, GradDst};
    let Some(own) = gpu("gpu_head_on_the_callers_stream_and_buffers") else {
        return;
    };
    let ctx = cudarc::driver::CudaContext::new(0).expect("context");
    let stream = ctx.new_stream().expect("stream");
    let dev = Device::cuda_on_stream(stream.clone()).expect("device on the caller's stream");
    let cfg = HeadConfig::default();
    let plan = Plan::default();
    let base = problem(
        6,
        Spec {
            vocab: 4097,
            responses: 9,
            ..Spec::default()
        },
    );
    for d in common::each_dtype(&base) {
        let owned = aem::head::launch::loss_head(&own, &d.inputs(), &cfg, GradDtype::F32, &plan)
            .expect("owned path");
        let (stats, grad) = aem::with_logits!(d.logits.as_logits(), x => {
            let logits = stream.clone_htod(x).expect("upload");
            let mut grad = stream.alloc_zeros::<f32>(x.len()).expect("alloc");
            let mut h = DeviceHead::new(&dev, &d.inputs(), &cfg, x.len()).expect("head");
            h.forward(&dev, Slice::cuda(&logits), &plan).expect("forward");
            h.backward(&dev, Slice::cuda(&logits), GradDst::F32(SliceMut::cuda(&mut grad)), &plan)
                .expect("backward");
            h.check(&dev).expect("finite");
            let stats = h.stats(&dev).expect("stats");
            (stats, stream.clone_dtoh(&grad).expect("download"))
        });
        assert_eq!(stats, owned.stats);
        assert_eq!(GradOut::F32(grad), owned.dlogits);
    }
}
