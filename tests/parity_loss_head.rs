//! The CUDA kernels, executed on the CPU by the emulator through the same launch code the GPU
//! uses, against the CPU reference: every kernel version and launch configuration, f16 and bf16
//! logits, f16, bf16 and f32 gradients, ragged shapes, single-token and long responses,
//! singleton and guard-triggering groups.

mod common;

use aem::device::emu::{EmuDevice, FiberOrder};
use aem::device::Device;
use aem::head::file::{GradDtype, GradOut, HeadData, LogitsVec};
use aem::head::launch::{self, BackwardPlan, ForwardPlan, Plan, TokenStatsKernel};
use aem::head::{Aggregation, HeadConfig, LogitDtype};
use common::{check_parity, each_dtype, f16s_mut, logits_f64, problem, to_bf16, Spec};

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
    let (starts, lens) = (d.resp_start.clone(), d.resp_len.clone());
    let logits = f16s_mut(&mut d);
    let row: Vec<_> = logits[src..src + v].to_vec();
    for r in 3..6 {
        let (s, l) = (starts[r] as usize, lens[r] as usize);
        for t in s..s + l {
            logits[t * v..(t + 1) * v].copy_from_slice(&row);
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
        // Every plan for each logits dtype, with the gradient in that dtype (in place on
        // alternate plans) and in f32; the mixed pairs (f16 → bf16, bf16 → f16) in
        // `parity_every_option_and_aggregation`.
        for d in each_dtype(&d) {
            let own = GradDtype::from(d.logits.as_logits().dtype());
            for plan in all_plans(&[32, 96, 256]) {
                for dtype in [GradDtype::F32, own] {
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
    let b16 = to_bf16(&d);
    let b16_on_policy = to_bf16(&on_policy);
    let separate = Plan {
        backward: BackwardPlan::Separate,
        ..plan
    };
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
            check_parity(&dev, &on_policy, &cfg, GradDtype::F16, &separate);
            check_parity(&dev, &b16, &cfg, GradDtype::Bf16, &plan);
            check_parity(&dev, &b16_on_policy, &cfg, GradDtype::F32, &separate);
            // The mixed pairs, fused and separate.
            check_parity(&dev, &d, &cfg, GradDtype::Bf16, &plan);
            check_parity(&dev, &on_policy, &cfg, GradDtype::Bf16, &separate);
            check_parity(&dev, &b16, &cfg, GradDtype::F16, &plan);
            check_parity(&dev, &b16_on_policy, &cfg, GradDtype::F16, &separate);
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
            check_parity(&dev, &to_bf16(&d), &cfg, GradDtype::Bf16, &plan);
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
        check_parity(&dev, &to_bf16(&d), &cfg, GradDtype::Bf16, &plan);
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
        GradOut::Bf16(g) => v.extend(g.iter().map(|x| u32::from(x.to_bits()))),
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
    let dev = emu();
    for (d, dtype) in [(d.clone(), GradDtype::F32), (to_bf16(&d), GradDtype::Bf16)] {
        reproducible_and_fused_equals_unfused(&dev, &d, &cfg, dtype);
    }
}

fn reproducible_and_fused_equals_unfused(
    dev: &Device,
    d: &HeadData,
    cfg: &HeadConfig,
    dtype: GradDtype,
) {
    let run =
        |dev: &Device, plan: Plan| launch::loss_head(dev, &d.inputs(), cfg, dtype, &plan).unwrap();
    let fused = Plan {
        block: 128,
        ..Plan::default()
    };
    let a = run(dev, fused);
    let b = run(dev, fused);
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
        bits(&run(dev, unfused)),
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
    let at = 3 * d.vocab + 2;
    f16s_mut(&mut d)[at] = half::f16::NAN;
    let mut b16 = to_bf16(&problem(4, Spec::default()));
    if let LogitsVec::Bf16(x) = &mut b16.logits {
        x[at] = half::bf16::INFINITY;
    }
    for d in [&d, &b16] {
        let e = launch::loss_head(
            &dev,
            &d.inputs(),
            &HeadConfig::default(),
            GradDtype::F32,
            &Plan::default(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("logits[3, 2]"), "{e}");
    }
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

/// Logits of a dtype's whole range: each row is `B + σ·N(0, 1)` rounded to `dtype` and
/// clamped to its largest finite value, for an offset `B`, a spread `σ` and a temperature `τ`
/// that keep the softmax non-trivial (B = 0 is a control; the ±65,504 cases of f16 are near
/// one-hot).
fn extreme(seed: u64, vocab: usize, b: f32, sigma: f32, dtype: LogitDtype) -> HeadData {
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
    let top = match dtype {
        LogitDtype::F16 => 65504.0f32,
        LogitDtype::Bf16 => half::bf16::MAX.to_f32(),
    };
    let mut xs: Vec<f32> = (0..logits_f64(&d).len())
        .map(|_| {
            // Box–Muller: the crate's rand has no normal distribution without rand_distr.
            let (u1, u2): (f32, f32) = (rng.random_range(1e-7..1.0), rng.random());
            let n = (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos();
            (b + sigma * n).clamp(-top, top)
        })
        .collect();
    // One row reaches the f16 extreme itself.
    if b.abs() > 60000.0 && dtype == LogitDtype::F16 {
        xs[vocab / 2] = 65504.0f32.copysign(b);
    }
    d.logits = match dtype {
        LogitDtype::F16 => LogitsVec::F16(xs.iter().map(|&x| half::f16::from_f32(x)).collect()),
        LogitDtype::Bf16 => LogitsVec::Bf16(xs.iter().map(|&x| half::bf16::from_f32(x)).collect()),
    };
    // Targets as a sampler picks them: among each row's three largest logits. (A target far
    // below the max has logp ≈ −(x_max − x_y)/τ, whose f32 rounding then enters ρ = exp(logp −
    // old) for any f32 implementation — a property of the target, not of the head.)
    let x = logits_f64(&d);
    for (t, y) in d.targets.iter_mut().enumerate() {
        let row = &x[t * vocab..(t + 1) * vocab];
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

/// `‖got − want‖₂ ≤ rtol·‖want‖₂`.
fn normwise_close(name: &str, got: &[f64], want: &[f64], rtol: f64, ctx: &str) {
    assert_eq!(got.len(), want.len(), "{name}: length ({ctx})");
    let err = got
        .iter()
        .zip(want)
        .map(|(g, w)| (g - w).powi(2))
        .sum::<f64>()
        .sqrt();
    let norm = want.iter().map(|w| w * w).sum::<f64>().sqrt();
    assert!(
        err <= rtol * norm,
        "{name} ({ctx}): normwise error {:e} > {rtol:e}",
        err / norm
    );
}

/// Exact-shift numerics: at any logit magnitude, every kernel plan (and the reference's own
/// f32 path) is within a fixed relative tolerance of the f64 reference — the per-row stats to
/// 10⁻⁵ plus 10⁻⁵ absolute (logp and H can be 0), dlogits to 10⁻⁵ plus 10⁻⁶ of the largest
/// gradient entry (f32; normwise 10⁻⁵ where s is a sequential loop), or to the output's
/// rounding (f16, bf16). Scaling before shifting
/// fails this at |x| ≈ 6·10⁴: the exponents lose ulp(max|x|/τ). f16 logits up to ±65,504;
/// bf16 logits up to 3·10³⁷ (z = x/τ within the f32 range the head accepts).
#[test]
fn parity_at_extremes_with_plain_relative_tolerance() {
    let dev = emu();
    // (dtype, offset B, spread σ, τ)
    let f16 = LogitDtype::F16;
    let bf16 = LogitDtype::Bf16;
    let cases = [
        (f16, 0.0f32, 3.0f32, 1.0f32),
        (f16, 60000.0, 256.0, 64.0),
        (f16, -60000.0, 256.0, 64.0),
        (f16, 65000.0, 200.0, 1.0),
        (f16, -65000.0, 200.0, 16.0),
        (f16, 1000.0, 2.0, 0.25),
        (f16, 30000.0, 64.0, 8.0),
        (bf16, 0.0, 3.0, 1.0),
        (bf16, 60000.0, 256.0, 64.0),
        (bf16, 1.0e6, 8192.0, 2048.0),
        (bf16, -3.0e30, 3.0e28, 1.0e27),
        (bf16, 3.0e37, 2.0e35, 1.0e35),
    ];
    let f64s = |x: &[f32]| x.iter().map(|&v| f64::from(v)).collect::<Vec<_>>();
    for (i, &(dt, b, sigma, tau)) in cases.iter().enumerate() {
        let mut d = extreme(100 + i as u64, 263, b, sigma, dt);
        let cfg = HeadConfig {
            temperature: tau,
            entropy_coef: 0.01,
            ..HeadConfig::default()
        };
        // Old log-probs near the current ones (ratios stay inside the clip: g ≠ 0).
        let lp = aem::cpu::token_stats::<f64>(
            &d.inputs(),
            &HeadConfig {
                temperature: tau,
                ..HeadConfig::default()
            },
        );
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
        let ctx = format!("{dt:?} B={b} σ={sigma} τ={tau}");
        // f32 gradients: elementwise, except where the row sum s is a sequential f32 loop (the
        // reference's f32 path, and token_stats_v1 feeding the separate backward). There the
        // loop, not the magnitude, is the limit: at B = 60000, σ = 256, τ = 64 (bf16) it drops 54
        // terms below half an ulp of s, 3.1·10⁻⁶ of s (the test after this one), which 1 − p of
        // a dominant target (p = 0.94) turns into 4·10⁻⁵ of that entry. Those paths are held normwise, which the
        // scale-then-shift numerics fail too (8·10⁻⁴ at B = 65000).
        let f32_grad = |got: &[f64], sequential: bool, ctx: &str| {
            if sequential {
                normwise_close("dlogits", got, &want.dlogits, 1e-5, ctx)
            } else {
                plainly_close("dlogits", got, &want.dlogits, 1e-5, 1e-6 * gmax, ctx)
            }
        };
        // The reference's f32 path.
        let r32 = aem::cpu::loss_head::<f32, f32>(&inp, &cfg).unwrap();
        let c = |x: &[f32]| f64s(x);
        check_stats(
            &c(&r32.fwd.tokens.logp),
            &c(&r32.fwd.tokens.entropy),
            &c(&r32.fwd.tokens.lse),
            &format!("{ctx} cpu f32"),
        );
        f32_grad(&c(&r32.dlogits), true, &format!("{ctx} cpu f32"));
        for plan in Plan::all(&[64]) {
            let sequential = plan.forward == ForwardPlan::Unfused(TokenStatsKernel::V1)
                && plan.backward == BackwardPlan::Separate;
            for dtype in GradDtype::ALL {
                let ctx = format!("{ctx} {dtype:?} {plan:?}");
                let got = launch::loss_head(&dev, &inp, &cfg, dtype, &plan)
                    .unwrap_or_else(|e| panic!("{ctx}: {e}"));
                check_stats(&c(&got.logp), &c(&got.entropy), &c(&got.lse), &ctx);
                match &got.dlogits {
                    GradOut::F32(g) => f32_grad(&c(g), sequential, &ctx),
                    // f16 rounding of an f32 value that is itself within 10⁻⁵: half an f16
                    // ulp relative (2⁻¹¹) and half the smallest subnormal (2⁻²⁵) absolute.
                    GradOut::F16(_) => plainly_close(
                        "dlogits",
                        &c(&got.dlogits.to_f32()),
                        &want.dlogits,
                        2f64.powi(-11) + 1e-5,
                        2f64.powi(-25) * 1.01,
                        &ctx,
                    ),
                    // bf16: half a bf16 ulp relative (2⁻⁸) and half its smallest subnormal
                    // (2⁻¹³⁴) absolute, plus 10⁻⁶ of the largest entry for the f32 error
                    // under the rounding (at τ = 10³⁵ the whole gradient is ~10⁻³⁵).
                    GradOut::Bf16(_) => plainly_close(
                        "dlogits",
                        &c(&got.dlogits.to_f32()),
                        &want.dlogits,
                        2f64.powi(-8) + 1e-5,
                        2f64.powi(-134) * 1.01 + 1e-6 * gmax,
                        &ctx,
                    ),
                }
            }
        }
    }
}

/// The finding behind the normwise rule above, reproduced: on the bf16 case B = 60000, σ = 256,
/// τ = 64 (row 6 of its batch) a plain sequential f32 sum of the shifted exponentials loses
/// terms below half an ulp of the running sum, and a compensated f32 sum does not.
/// `-- --nocapture` prints the numbers the README quotes.
#[test]
fn a_sequential_f32_row_sum_is_the_limit_on_the_bf16_extreme_case() {
    let d = extreme(108, 263, 60000.0, 256.0, LogitDtype::Bf16);
    let x = logits_f64(&d);
    let row = &x[6 * 263..7 * 263];
    let m = row.iter().copied().fold(f64::MIN, f64::max);
    let (mut plain, mut kahan, mut c, mut exact, mut tiny) = (0f32, 0f32, 0f32, 0f64, 0);
    for &xv in row {
        let e = (((xv - m) / 64.0) as f32).exp();
        tiny += usize::from(e < f32::EPSILON / 2.0);
        plain += e;
        let y = e - c;
        let t = kahan + y;
        c = (t - kahan) - y;
        kahan = t;
        exact += f64::from(e);
    }
    let rel = |s: f32| (f64::from(s) - exact).abs() / exact;
    println!(
        "terms below half an ulp of s: {tiny}; plain f32 rel. error {:.2e}, compensated {:.2e}",
        rel(plain),
        rel(kahan)
    );
    assert!(rel(plain) > 1e-6, "plain {:e}", rel(plain));
    assert!(rel(kahan) < 2e-7, "compensated {:e}", rel(kahan));
}
