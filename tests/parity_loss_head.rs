//! The CUDA kernels, executed on the CPU by the emulator through the same launch code the GPU
//! uses, against the CPU reference: every kernel version and launch configuration, ragged
//! shapes, single-token and long responses, singleton and guard-triggering groups.

mod common;

use aem::device::emu::{EmuDevice, FiberOrder};
use aem::device::Device;
use aem::head::file::{GradDtype, GradOut, HeadData};
use aem::head::launch::{self, BackwardPlan, ForwardPlan, Plan, TokenStatsKernel};
use aem::head::{Aggregation, HeadConfig};
use common::{check_parity, problem, Spec};

fn emu() -> Device {
    Device::emu().expect("emulator")
}

fn all_plans(blocks: &[u32]) -> Vec<Plan> {
    Plan::all(blocks)
}

/// A batch with a singleton group, a guard-triggering group (near-equal entropies), a long
/// response and single-token responses.
fn special(vocab: usize) -> HeadData {
    let mut d = problem(
        77,
        Spec {
            vocab,
            responses: 8,
            groups: 3,
            max_len: 3,
            ..Spec::default()
        },
    );
    // group 2 = {7}: a singleton.
    d.resp_group = vec![0, 0, 0, 1, 1, 1, 0, 2];
    // group 1 = {3, 4, 5}: copy one row's logits into all of its rows → equal entropies.
    let v = d.vocab;
    let src = d.resp_start[3] as usize * v;
    let row: Vec<_> = d.logits[src..src + v].to_vec();
    for r in 3..6 {
        let (s, l) = (d.resp_start[r] as usize, d.resp_len[r] as usize);
        for t in s..s + l {
            d.logits[t * v..(t + 1) * v].copy_from_slice(&row);
        }
    }
    d
}

#[test]
fn parity_every_plan_on_small_vocabularies() {
    let dev = emu();
    for v in [1usize, 7, 31, 257] {
        let d = problem(
            v as u64,
            Spec {
                vocab: v,
                responses: 11,
                groups: 3,
                max_len: 9,
                ..Spec::default()
            },
        );
        for plan in all_plans(&[32, 96, 256]) {
            for dtype in [GradDtype::F32, GradDtype::F16] {
                let cfg = HeadConfig {
                    entropy_coef: 0.01,
                    kl_coef: 0.1,
                    dual_clip: Some(3.0),
                    ..HeadConfig::default()
                };
                check_parity(&dev, &d, &cfg, dtype, &plan);
            }
        }
    }
}

#[test]
fn parity_every_option_and_aggregation() {
    let dev = emu();
    let d = problem(
        5,
        Spec {
            vocab: 97,
            responses: 9,
            groups: 3,
            max_len: 6,
            ..Spec::default()
        },
    );
    let plan = Plan::default();
    let mut on_policy = d.clone();
    on_policy.old_logp = None;
    for agg in Aggregation::ALL {
        for cfg in [
            HeadConfig {
                agg,
                ..HeadConfig::default()
            },
            HeadConfig {
                agg,
                dual_clip: Some(1.5),
                clip_high: 0.28,
                ..HeadConfig::default()
            },
            HeadConfig {
                agg,
                entropy_coef: 0.05,
                ..HeadConfig::default()
            },
            HeadConfig {
                agg,
                kl_coef: 0.3,
                ..HeadConfig::default()
            },
            HeadConfig {
                agg,
                temperature: 0.7,
                grad_scale: 1024.0,
                n_tok: Some(50.0),
                n_resp: Some(12.0),
                norm_const: Some(9.0),
                ..HeadConfig::default()
            },
            HeadConfig {
                agg,
                lambda: 0.0,
                ..HeadConfig::default()
            },
        ] {
            check_parity(&dev, &d, &cfg, GradDtype::F32, &plan);
            check_parity(
                &dev,
                &on_policy,
                &cfg,
                GradDtype::F16,
                &Plan {
                    backward: BackwardPlan::Separate,
                    ..plan
                },
            );
        }
    }
}

#[test]
fn parity_special_groups_and_large_vocabularies() {
    let dev = emu();
    let cfg = HeadConfig::default();
    for v in [31usize, 4097] {
        let d = special(v);
        let got = check_parity(&dev, &d, &cfg, GradDtype::F32, &Plan::default());
        assert_eq!(got.alpha[7], 1.0, "singleton group keeps α = 1");
        assert!(
            got.alpha[3..6].iter().all(|&a| a == 1.0),
            "guarded group keeps α = 1"
        );
        assert!(
            got.alpha[..3].iter().any(|&a| a != 1.0),
            "a ranked group moves α"
        );
        for plan in [
            Plan {
                forward: ForwardPlan::Unfused(TokenStatsKernel::V3),
                backward: BackwardPlan::Separate,
                block: 1024,
                in_place: true,
            },
            Plan {
                forward: ForwardPlan::Unfused(TokenStatsKernel::V1),
                backward: BackwardPlan::Fused { row_cache: false },
                block: 64,
                in_place: false,
            },
        ] {
            check_parity(&dev, &d, &cfg, GradDtype::F16, &plan);
        }
    }
    // V = 50257 (GPT-2), a few rows: the row cache (≈100 KB) and the streaming path.
    let d = problem(
        9,
        Spec {
            vocab: 50257,
            responses: 3,
            groups: 1,
            max_len: 2,
            ..Spec::default()
        },
    );
    for row_cache in [true, false] {
        let plan = Plan {
            backward: BackwardPlan::Fused { row_cache },
            ..Plan::default()
        };
        check_parity(&dev, &d, &cfg, GradDtype::F16, &plan);
    }
}

fn bits(r: &aem::head::file::HeadResult) -> Vec<u32> {
    let mut v: Vec<u32> = [
        &r.logp,
        &r.entropy,
        &r.lse,
        &r.token_loss,
        &r.resp_surprisal,
        &r.resp_mean_entropy,
        &r.alpha,
        &r.adv,
    ]
    .iter()
    .flat_map(|x| x.iter().map(|f| f.to_bits()))
    .collect();
    v.push(r.loss.to_bits());
    match &r.dlogits {
        GradOut::F16(g) => v.extend(g.iter().map(|x| u32::from(x.to_bits()))),
        GradOut::F32(g) => v.extend(g.iter().map(|x| x.to_bits())),
    }
    v
}

#[test]
fn results_are_bitwise_reproducible_and_fused_equals_unfused() {
    let d = problem(
        3,
        Spec {
            vocab: 257,
            responses: 13,
            groups: 4,
            max_len: 7,
            ..Spec::default()
        },
    );
    let cfg = HeadConfig {
        entropy_coef: 0.02,
        ..HeadConfig::default()
    };
    let run = |dev: &Device, plan: Plan| {
        launch::loss_head(dev, &d.inputs(), &cfg, GradDtype::F32, &plan).unwrap()
    };
    let dev = emu();
    let fused = Plan {
        block: 128,
        ..Plan::default()
    };
    let a = run(&dev, fused);
    let b = run(&dev, fused);
    assert_eq!(bits(&a), bits(&b), "two runs differ");
    // The fused forward equals token_stats_v2 + resp_stats + aem_alpha; the fused backward equals
    // token stats + policy_grad, for the same block size.
    let unfused = Plan {
        forward: ForwardPlan::Unfused(TokenStatsKernel::V2),
        backward: BackwardPlan::Separate,
        block: 128,
        in_place: false,
    };
    assert_eq!(
        bits(&a),
        bits(&run(&dev, unfused)),
        "fused and unfused differ"
    );
    // Different workers and fiber orders change scheduling, never results.
    for order in [FiberOrder::Reverse, FiberOrder::Seeded(12345)] {
        let other = Device::Emu(EmuDevice::new().unwrap().with_order(order).with_workers(1));
        assert_eq!(bits(&a), bits(&run(&other, fused)), "{order:?} differs");
    }
}

#[test]
fn parity_under_reversed_and_seeded_fiber_orders() {
    let d = problem(
        8,
        Spec {
            vocab: 131,
            responses: 7,
            groups: 2,
            max_len: 5,
            ..Spec::default()
        },
    );
    let cfg = HeadConfig {
        kl_coef: 0.1,
        ..HeadConfig::default()
    };
    for order in [FiberOrder::Reverse, FiberOrder::Seeded(7)] {
        let dev = Device::Emu(EmuDevice::new().unwrap().with_order(order));
        for plan in all_plans(&[64]) {
            check_parity(&dev, &d, &cfg, GradDtype::F32, &plan);
        }
    }
}

#[test]
fn device_errors_are_typed() {
    let dev = emu();
    let mut d = problem(4, Spec::default());
    d.logits[3 * d.vocab + 2] = half::f16::NAN;
    let e = launch::loss_head(
        &dev,
        &d.inputs(),
        &HeadConfig::default(),
        GradDtype::F32,
        &Plan::default(),
    )
    .unwrap_err();
    assert!(e.to_string().contains("logits[3, 2]"), "{e}");
    let d = problem(4, Spec::default());
    let bad = Plan {
        block: 100,
        ..Plan::default()
    };
    let e = launch::loss_head(
        &dev,
        &d.inputs(),
        &HeadConfig::default(),
        GradDtype::F32,
        &bad,
    )
    .unwrap_err();
    assert!(e.to_string().contains("block"), "{e}");
    let e = dev
        .launch(
            "no_such_kernel",
            aem::device::LaunchCfg {
                grid: 1,
                block: 32,
                smem: 0,
            },
            &[],
        )
        .unwrap_err();
    assert!(matches!(e, aem::Error::KernelMissing { .. }), "{e}");
}

/// Logits of f16's whole range: each row is `B + σ·N(0, 1)` rounded to f16 and clamped to
/// ±65,504, for an offset `B`, a spread `σ` and a temperature `τ` that keep the softmax
/// non-trivial (case 0 is a control at B = 0; the ±65,504 cases are near one-hot).
fn extreme(seed: u64, vocab: usize, b: f32, sigma: f32) -> HeadData {
    use rand::{Rng, SeedableRng};
    let mut d = problem(
        seed,
        Spec {
            vocab,
            responses: 7,
            groups: 2,
            max_len: 4,
            ..Spec::default()
        },
    );
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ 0xE7);
    for x in d.logits.iter_mut() {
        // Box–Muller: the crate's rand has no normal distribution without rand_distr.
        let (u1, u2): (f32, f32) = (rng.random_range(1e-7..1.0), rng.random());
        let n = (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos();
        *x = half::f16::from_f32((b + sigma * n).clamp(-65504.0, 65504.0));
    }
    // One row reaches the f16 extreme itself.
    if b.abs() > 60000.0 {
        d.logits[vocab / 2] = half::f16::from_f32(65504.0f32.copysign(b));
    }
    // Targets as a sampler picks them: among each row's three largest logits. (A target far
    // below the max has logp ≈ −(x_max − x_y)/τ, whose f32 rounding then enters ρ = exp(logp −
    // old) for any f32 implementation — a property of the target, not of the head.)
    for (t, y) in d.targets.iter_mut().enumerate() {
        let row = &d.logits[t * vocab..(t + 1) * vocab];
        let mut idx: Vec<usize> = (0..vocab).collect();
        idx.sort_by(|&i, &j| row[j].total_cmp(&row[i]));
        *y = idx[t % 3] as u32;
    }
    d
}

/// `|got − want| ≤ rtol·|want| + atol`, elementwise, with no term that grows with the logits.
fn plainly_close(name: &str, got: &[f64], want: &[f64], rtol: f64, atol: f64, ctx: &str) {
    assert_eq!(got.len(), want.len(), "{name}: length ({ctx})");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= rtol * w.abs() + atol,
            "{name}[{i}] ({ctx}): {g:e} vs reference {w:e} (rel. error {:e})",
            (g - w).abs() / w.abs()
        );
    }
}

/// Exact-shift numerics: at any logit magnitude, every kernel plan (and the reference's own
/// f32 path) is within a fixed relative tolerance of the f64 reference — the per-row stats to
/// 10⁻⁵ plus 10⁻⁶ absolute (logp and H can be 0), dlogits to 10⁻⁵ plus 10⁻⁶ of the largest
/// gradient entry (f32), or to f16 rounding (f16 output). Scaling before shifting fails this
/// at |x| ≈ 6·10⁴: the exponents lose ulp(max|x|/τ).
#[test]
fn parity_at_f16_extremes_with_plain_relative_tolerance() {
    let dev = emu();
    // (offset B, spread σ, τ)
    let cases = [
        (0.0f32, 3.0f32, 1.0f32),
        (60000.0, 256.0, 64.0),
        (-60000.0, 256.0, 64.0),
        (65000.0, 200.0, 1.0),
        (-65000.0, 200.0, 16.0),
        (1000.0, 2.0, 0.25),
        (30000.0, 64.0, 8.0),
    ];
    let f64s = |x: &[f32]| x.iter().map(|&v| f64::from(v)).collect::<Vec<_>>();
    for (i, &(b, sigma, tau)) in cases.iter().enumerate() {
        let mut d = extreme(100 + i as u64, 263, b, sigma);
        let cfg = HeadConfig {
            temperature: tau,
            entropy_coef: 0.01,
            ..HeadConfig::default()
        };
        // Old log-probs near the current ones (ratios stay inside the clip: g ≠ 0).
        let lp = aem::cpu::token_stats_of::<f64, half::f16>(&d.logits, d.vocab, &d.targets, tau);
        d.old_logp = Some(
            lp.logp
                .iter()
                .enumerate()
                .map(|(t, l)| (l + 0.01 * ((t % 5) as f64 - 2.0)) as f32)
                .collect(),
        );
        d.ref_logp = None;
        let inp = d.inputs();
        let want = aem::cpu::loss_head::<f64, f64>(&inp, &cfg).unwrap();
        let gmax = want.dlogits.iter().fold(0.0f64, |m, x| m.max(x.abs()));
        let check_stats = |logp: &[f64], ent: &[f64], lse: &[f64], ctx: &str| {
            plainly_close("logp", logp, &want.fwd.tokens.logp, 1e-5, 1e-5, ctx);
            plainly_close("entropy", ent, &want.fwd.tokens.entropy, 1e-5, 1e-5, ctx);
            plainly_close("lse", lse, &want.fwd.tokens.lse, 1e-5, 1e-5, ctx);
        };
        let ctx = format!("B={b} σ={sigma} τ={tau}");
        // The reference's f32 path.
        let r32 = aem::cpu::loss_head::<f32, f32>(&inp, &cfg).unwrap();
        let c = |x: &[f32]| f64s(x);
        check_stats(
            &c(&r32.fwd.tokens.logp),
            &c(&r32.fwd.tokens.entropy),
            &c(&r32.fwd.tokens.lse),
            &format!("{ctx} cpu f32"),
        );
        plainly_close(
            "dlogits",
            &c(&r32.dlogits),
            &want.dlogits,
            1e-5,
            1e-6 * gmax,
            &format!("{ctx} cpu f32"),
        );
        for plan in Plan::all(&[64]) {
            for dtype in [GradDtype::F32, GradDtype::F16] {
                let ctx = format!("{ctx} {dtype:?} {plan:?}");
                let got = launch::loss_head(&dev, &inp, &cfg, dtype, &plan)
                    .unwrap_or_else(|e| panic!("{ctx}: {e}"));
                check_stats(&c(&got.logp), &c(&got.entropy), &c(&got.lse), &ctx);
                match &got.dlogits {
                    GradOut::F32(g) => {
                        plainly_close("dlogits", &c(g), &want.dlogits, 1e-5, 1e-6 * gmax, &ctx)
                    }
                    // f16 rounding of an f32 value that is itself within 10⁻⁵: half an f16
                    // ulp relative (2⁻¹¹) and half the smallest subnormal (2⁻²⁵) absolute.
                    GradOut::F16(g) => plainly_close(
                        "dlogits",
                        &g.iter().map(|x| f64::from(x.to_f32())).collect::<Vec<_>>(),
                        &want.dlogits,
                        2f64.powi(-11) + 1e-5,
                        2f64.powi(-25) * 1.01,
                        &ctx,
                    ),
                }
            }
        }
    }
}
