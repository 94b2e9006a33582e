//! The CPU reference against hand-computed cases, the properties of AEM.md §3, and central
//! finite differences of the loss against the analytic gradient (AEM.md §6).

mod common;

use aem::cpu::{self, Real};
use aem::head::{self, Aggregation, HeadConfig, HeadInputs};
use approx::assert_relative_eq;
use common::{problem, Spec};
use half::f16;

fn h(x: f32) -> f16 {
    f16::from_f32(x)
}

#[test]
fn token_stats_hand_case() {
    // z = [0, ln 2, ln 3] (exact in f64 up to f16 rounding of the inputs): p = [1,2,3]/6.
    let row: Vec<f64> = vec![0.0, 2f64.ln(), 3f64.ln()];
    let cpu::RowStats {
        logp,
        entropy: ent,
        lse,
        ..
    } = cpu::row_stats::<f64, f64>(&row, 1, 1.0);
    assert_relative_eq!(lse, 6f64.ln(), epsilon = 1e-14);
    assert_relative_eq!(logp, (2.0f64 / 6.0).ln(), epsilon = 1e-14);
    let p = [1.0 / 6.0, 2.0 / 6.0, 3.0 / 6.0f64];
    let want: f64 = -p.iter().map(|q| q * q.ln()).sum::<f64>();
    assert_relative_eq!(ent, want, epsilon = 1e-14);
    // Temperature 2 halves z: p ∝ [1, √2, √3].
    let r2 = cpu::row_stats::<f64, f64>(&row, 0, 0.5);
    let (ent2, lse2) = (r2.entropy, r2.lse);
    let q: Vec<f64> = [1.0, 2f64.sqrt(), 3f64.sqrt()].to_vec();
    let zsum: f64 = q.iter().sum();
    assert_relative_eq!(lse2, zsum.ln(), epsilon = 1e-14);
    let want2: f64 = -q.iter().map(|x| (x / zsum) * (x / zsum).ln()).sum::<f64>();
    assert_relative_eq!(ent2, want2, epsilon = 1e-14);
}

#[test]
fn token_stats_extreme_logits_do_not_cancel() {
    // A large common offset changes neither entropy nor logp, even in f32: the row is shifted
    // by its max in the logits' own units (exact here) before it is scaled, and logp is not
    // the difference of two large numbers.
    let base = [0.0f32, 1.0, -2.0, 0.5];
    let shifted: Vec<f32> = base.iter().map(|x| x + 60000.0).collect();
    let r0 = cpu::row_stats::<f32, f32>(&base, 2, 1.0);
    let r1 = cpu::row_stats::<f32, f32>(&shifted, 2, 1.0);
    assert_eq!((r0.entropy, r0.logp), (r1.entropy, r1.logp));
    assert_eq!((r0.shift, r1.shift), (1.0, 60001.0));
    assert_eq!(r0.log_sum, r1.log_sum);
    // A single-column row: p = 1, entropy 0, logp 0.
    let r = cpu::row_stats::<f64, f16>(&[h(7.5)], 0, 1.0);
    assert_eq!((r.logp, r.entropy, r.lse), (0.0, 0.0, 7.5));
}

/// One-column logits with the given responses (token stats are supplied by hand).
fn inputs_for<'a>(
    logits: &'a [f16],
    targets: &'a [u32],
    resp: (&'a [u32], &'a [u32], &'a [u32]),
    n_groups: usize,
    adv: &'a [f32],
) -> HeadInputs<'a> {
    HeadInputs {
        logits: aem::head::Logits::F16(logits),
        vocab: 1,
        targets,
        resp_start: resp.0,
        resp_len: resp.1,
        resp_group: resp.2,
        n_groups,
        adv_base: adv,
        old_logp: None,
        ref_logp: None,
    }
}

#[test]
fn resp_stats_and_alpha_hand_case() {
    // Three one-column rows have entropy 0; use explicit token stats instead of logits.
    let logits = vec![h(0.0); 6];
    let targets = vec![0u32; 6];
    let (starts, lens, groups) = (vec![0u32, 2, 3], vec![2u32, 1, 3], vec![0u32, 0, 0]);
    let adv = vec![1.0f32, -2.0, 0.5];
    let inp = inputs_for(&logits, &targets, (&starts, &lens, &groups), 1, &adv);
    let ts = cpu::TokenStats {
        logp: vec![-1.0, -2.0, -0.5, -0.25, -0.5, -1.0f64],
        ..cpu::TokenStats::from_entropy(vec![0.0, 1.0, 0.25, 1.0, 1.5, 2.0])
    };
    let rs = cpu::resp_stats(&inp, &ts);
    assert_eq!(rs.surprisal, vec![3.0, 0.5, 1.75]);
    assert_eq!(rs.mean_entropy, vec![0.5, 0.25, 1.5]);
    let cfg = HeadConfig::default();
    let layout = head::validate(&inp, &cfg).unwrap();
    let a = cpu::aem_alpha(&inp, &cfg, &layout, &rs.mean_entropy);
    // lo = 0.25, hi = 1.5 → H̃ = [0.2, 0, 1]; w = exp(−H̃); α = w / mean(w).
    let w = [(-0.2f64).exp(), 1.0, (-1.0f64).exp()];
    let m = w.iter().sum::<f64>() / 3.0;
    for i in 0..3 {
        assert_relative_eq!(a.alpha[i], w[i] / m, epsilon = 1e-15);
        assert_relative_eq!(a.adv[i], w[i] / m * f64::from(adv[i]), epsilon = 1e-15);
    }
    assert_eq!(a.guarded_groups, 0);
}

fn alpha_for(means: &[f64], groups: &[u32], g: usize, lambda: f32, delta: f32) -> Vec<f64> {
    let r = means.len();
    let logits = vec![h(0.0); r];
    let targets = vec![0u32; r];
    let starts: Vec<u32> = (0..r as u32).collect();
    let lens = vec![1u32; r];
    let adv = vec![1.0f32; r];
    let inp = inputs_for(&logits, &targets, (&starts, &lens, groups), g, &adv);
    let cfg = HeadConfig {
        lambda,
        delta,
        ..HeadConfig::default()
    };
    let layout = head::validate(&inp, &cfg).unwrap();
    cpu::aem_alpha(&inp, &cfg, &layout, means).alpha
}

#[test]
fn alpha_properties() {
    let means = [0.3, 1.9, 0.8, 1.2, 0.31, 2.5, 0.7];
    let groups = [0u32, 0, 0, 0, 1, 1, 2];
    let a = alpha_for(&means, &groups, 3, 1.0, 0.1);
    // group 0: mean 1, decreasing in entropy, inside (1/e, e) for λ = 1.
    let g0 = [0usize, 1, 2, 3];
    let mean0: f64 = g0.iter().map(|&i| a[i]).sum::<f64>() / 4.0;
    assert_relative_eq!(mean0, 1.0, epsilon = 1e-14);
    let mut by_h = g0.to_vec();
    by_h.sort_by(|&i, &j| means[i].total_cmp(&means[j]));
    for w in by_h.windows(2) {
        assert!(a[w[0]] > a[w[1]], "α must decrease in entropy");
    }
    for &i in &g0 {
        assert!(a[i] > (-1f64).exp() && a[i] < 1f64.exp());
    }
    // group 1: two responses, range 2.19 ≥ δ → ranked.
    assert_relative_eq!(a[4] + a[5], 2.0, epsilon = 1e-14);
    assert!(a[4] > a[5]);
    // group 2: a singleton keeps α = 1.
    assert_eq!(a[6], 1.0);
    // λ = 0: α ≡ 1 (the base algorithm).
    assert!(alpha_for(&means, &groups, 3, 0.0, 0.1)
        .iter()
        .all(|&x| x == 1.0));
    // the guard: a range below δ keeps α = 1.
    let close = [0.50, 0.55, 0.59];
    assert!(alpha_for(&close, &[0, 0, 0], 1, 1.0, 0.1)
        .iter()
        .all(|&x| x == 1.0));
    assert!(alpha_for(&close, &[0, 0, 0], 1, 1.0, 0.05)
        .iter()
        .any(|&x| x != 1.0));
}

#[test]
fn alpha_preserves_sign_and_group_mean_on_random_batches() {
    for seed in 0..20 {
        let d = problem(
            seed,
            Spec {
                responses: 17,
                groups: 4,
                ..Spec::default()
            },
        );
        let inp = d.inputs();
        let cfg = HeadConfig {
            delta: 0.0,
            ..HeadConfig::default()
        };
        let layout = head::validate(&inp, &cfg).unwrap();
        let f = cpu::forward::<f64>(&inp, &cfg, &layout);
        for r in 0..inp.responses() {
            let (a, b) = (f.aem.adv[r], f64::from(inp.adv_base[r]));
            assert_eq!(a.signum(), b.signum(), "seed {seed} response {r}");
        }
        for g in 0..inp.n_groups {
            let m = &layout.grp_members
                [layout.grp_offsets[g] as usize..layout.grp_offsets[g + 1] as usize];
            if m.len() > 1 {
                let mean = m.iter().map(|&i| f.aem.alpha[i as usize]).sum::<f64>() / m.len() as f64;
                assert_relative_eq!(mean, 1.0, epsilon = 1e-13);
            }
        }
    }
}

#[test]
fn token_loss_hand_cases() {
    let cfg = HeadConfig::default();
    // On-policy, A = 2: ρ = 1, ℓ = −2, g = −2.
    let tl = cpu::token_loss::<f64>(&cfg, 2.0, -1.0, 0.5, -1.0, None);
    assert_eq!((tl.loss, tl.dlogp, tl.clipped), (-2.0, -2.0, false));
    // A > 0, ρ = e^0.5 > 1.2: clipped, ℓ = −A·1.2, g = 0.
    let tl = cpu::token_loss::<f64>(&cfg, 1.0, -0.5, 0.5, -1.0, None);
    assert_relative_eq!(tl.loss, -(1.0 + f64::from(0.2f32)), epsilon = 1e-15);
    assert_eq!((tl.dlogp, tl.clipped), (0.0, true));
    // A < 0, ρ = e^2 with dual clip 3: ℓ = min(−Aρ, −A·3) = 3, g = 0.
    let dual = HeadConfig {
        dual_clip: Some(3.0),
        ..cfg.clone()
    };
    let tl = cpu::token_loss::<f64>(&dual, -1.0, 1.0, 0.5, -1.0, None);
    assert_relative_eq!(tl.loss, 3.0, epsilon = 1e-15);
    assert_eq!(tl.dlogp, 0.0);
    // Without dual clip the same row is unclipped: ℓ = e^2, g = e^2.
    let tl = cpu::token_loss::<f64>(&cfg, -1.0, 1.0, 0.5, -1.0, None);
    assert_relative_eq!(tl.loss, 2f64.exp(), epsilon = 1e-13);
    assert_relative_eq!(tl.dlogp, 2f64.exp(), epsilon = 1e-13);
    // Entropy bonus and k3 KL: ℓ = −A − β_H H + β_KL (e^δ − δ − 1), δ = ref − logp = 0.5.
    let c = HeadConfig {
        entropy_coef: 0.1,
        kl_coef: 0.2,
        ..cfg.clone()
    };
    let tl = cpu::token_loss::<f64>(&c, 1.0, -1.0, 2.0, -1.0, Some(-0.5));
    let k3 = 0.5f64.exp() - 0.5 - 1.0;
    // Coefficients are f32 in the config; compare against their exact f64 values.
    let (bh, bk) = (f64::from(0.1f32), f64::from(0.2f32));
    assert_relative_eq!(tl.loss, -1.0 - bh * 2.0 + bk * k3, epsilon = 1e-15);
    assert_relative_eq!(tl.dlogp, -1.0 + bk * (1.0 - 0.5f64.exp()), epsilon = 1e-15);
    // KL clamps: δ = 30 clamps to 20 and k3 to 10; no gradient through either.
    let tl = cpu::token_loss::<f64>(&c, 0.0, -31.0, 0.0, -31.0, Some(-1.0));
    assert_relative_eq!(tl.loss, bk * 10.0, epsilon = 1e-15);
    assert_eq!(tl.dlogp, 0.0);
}

/// L(x) with the advantages held fixed (α is a constant during the update).
fn loss_of(x: &[f64], d: &aem::head::file::HeadData, cfg: &HeadConfig, adv: &[f64]) -> f64 {
    let inp = d.inputs();
    let layout = head::validate(&inp, cfg).unwrap();
    let ts = cpu::token_stats_of::<f64, f64>(x, d.vocab, &d.targets, cfg.temperature);
    cpu::policy_loss(&inp, cfg, &layout, &ts, adv).loss
}

fn fd_check(cfg: &HeadConfig, seed: u64) {
    let d = problem(
        seed,
        Spec {
            vocab: 7,
            responses: 5,
            groups: 2,
            max_len: 3,
            ..Spec::default()
        },
    );
    let inp = d.inputs();
    let layout = head::validate(&inp, cfg).unwrap();
    let x: Vec<f64> = common::logits_f64(&d);
    let fwd = cpu::forward::<f64>(&inp, cfg, &layout);
    let adv = fwd.aem.adv.clone();
    let ts = cpu::token_stats_of::<f64, f64>(&x, d.vocab, &d.targets, cfg.temperature);
    let pl = cpu::policy_loss(&inp, cfg, &layout, &ts, &adv);
    let mut grad = vec![0.0f64; x.len()];
    cpu::policy_grad_of(&x, d.vocab, &d.targets, cfg, &ts, &pl, &mut grad);
    // Central differences in f64: truncation O(h²·L''') ≈ 1e-12, rounding O(ε|L|/h) ≈ 1e-10,
    // so 1e-7 absolute (plus 1e-6 relative) can only fail on a wrong formula (or a kink).
    let hstep = 1e-5;
    let s = f64::from(cfg.grad_scale);
    let mut nonzero = 0;
    for i in 0..x.len() {
        let mut xp = x.clone();
        xp[i] += hstep;
        let mut xm = x.clone();
        xm[i] -= hstep;
        let fd = s * (loss_of(&xp, &d, cfg, &adv) - loss_of(&xm, &d, cfg, &adv)) / (2.0 * hstep);
        let an = grad[i];
        assert!(
            (fd - an).abs() <= 1e-7 + 1e-6 * an.abs(),
            "{cfg:?} seed {seed}: element {i} (row {}, col {}): fd {fd} vs analytic {an}",
            i / d.vocab,
            i % d.vocab
        );
        nonzero += usize::from(an.abs() > 1e-9);
    }
    assert!(
        nonzero >= d.vocab,
        "{cfg:?} seed {seed}: only {nonzero} non-zero gradients"
    );
}

#[test]
fn gradient_matches_finite_differences_for_every_mode_and_option() {
    let base = HeadConfig {
        grad_scale: 1.0,
        ..HeadConfig::default()
    };
    let variants: Vec<(&str, HeadConfig)> = vec![
        ("plain", base.clone()),
        (
            "dual clip",
            HeadConfig {
                dual_clip: Some(1.5),
                ..base.clone()
            },
        ),
        (
            "entropy bonus",
            HeadConfig {
                entropy_coef: 0.05,
                ..base.clone()
            },
        ),
        (
            "kl",
            HeadConfig {
                kl_coef: 0.3,
                ..base.clone()
            },
        ),
        (
            "temperature",
            HeadConfig {
                temperature: 0.7,
                grad_scale: 4.0,
                ..base.clone()
            },
        ),
    ];
    for agg in Aggregation::ALL {
        for (name, v) in &variants {
            let cfg = HeadConfig { agg, ..v.clone() };
            for seed in 0..3 {
                fd_check(&cfg, seed * 7 + name.len() as u64);
            }
        }
    }
}

#[test]
fn dual_clip_and_clipping_are_exercised_by_the_generator() {
    // The FD test above is only meaningful if clipped and dual-clipped rows occur.
    let cfg = HeadConfig {
        dual_clip: Some(1.5),
        ..HeadConfig::default()
    };
    let mut clipped = 0;
    for seed in 0..3 {
        let d = problem(
            seed,
            Spec {
                vocab: 7,
                responses: 5,
                groups: 2,
                max_len: 3,
                ..Spec::default()
            },
        );
        let inp = d.inputs();
        let layout = head::validate(&inp, &cfg).unwrap();
        let f = cpu::forward::<f64>(&inp, &cfg, &layout);
        clipped += cpu::policy_loss(&inp, &cfg, &layout, &f.tokens, &f.aem.adv).clipped_rows;
    }
    assert!(clipped > 0);
}

#[test]
fn aggregation_weights() {
    let d = problem(3, Spec::default());
    let inp = d.inputs();
    let r = inp.responses() as f64;
    let owned: usize = d.resp_len.iter().map(|&l| l as usize).sum();
    let maxl = *d.resp_len.iter().max().unwrap() as f64;
    for (agg, n_tok, want) in [
        (Aggregation::TokenMean, None, 1.0 / owned as f64),
        (Aggregation::TokenMean, Some(1000.0), 1e-3),
        (Aggregation::SeqMeanTokenSum, None, 1.0 / r),
        (Aggregation::SeqMeanTokenSumNorm, None, 1.0 / maxl),
    ] {
        let cfg = HeadConfig {
            agg,
            n_tok,
            ..HeadConfig::default()
        };
        let layout = head::validate(&inp, &cfg).unwrap();
        assert_relative_eq!(layout.weight(agg, 3), want, epsilon = 1e-15);
    }
    let cfg = HeadConfig {
        agg: Aggregation::SeqMeanTokenMean,
        n_resp: Some(8.0),
        ..HeadConfig::default()
    };
    let layout = head::validate(&inp, &cfg).unwrap();
    assert_relative_eq!(layout.weight(cfg.agg, 4), 1.0 / 32.0, epsilon = 1e-15);
    // seq-mean-token-mean weights of one response sum to 1/N_resp.
    let f = cpu::forward::<f64>(&inp, &cfg, &layout);
    let pl = cpu::policy_loss(&inp, &cfg, &layout, &f.tokens, &f.aem.adv);
    let (s0, l0) = (d.resp_start[0] as usize, d.resp_len[0] as usize);
    assert_relative_eq!(
        pl.weight[s0..s0 + l0].iter().sum::<f64>(),
        1.0 / 8.0,
        epsilon = 1e-15
    );
}

#[test]
fn unowned_rows_have_no_loss_and_zero_gradient() {
    let d = problem(5, Spec::default());
    let cfg = HeadConfig {
        entropy_coef: 0.1,
        ..HeadConfig::default()
    };
    let o = cpu::loss_head::<f64, f32>(&d.inputs(), &cfg).unwrap();
    let layout = head::validate(&d.inputs(), &cfg).unwrap();
    let mut unowned = 0;
    for (t, &r) in layout.row_resp.iter().enumerate() {
        let row = &o.dlogits[t * d.vocab..(t + 1) * d.vocab];
        if r < 0 {
            unowned += 1;
            assert_eq!(o.loss.token_loss[t], 0.0);
            assert!(row.iter().all(|&g| g == 0.0));
        } else {
            // Σ_v dlogits = s·w/τ·(g(1 − Σp) + β_H Σ p(z − E z)) = 0.
            let sum: f64 = row.iter().map(|&g| f64::from(g)).sum();
            let scale: f64 = row.iter().map(|&g| f64::from(g).abs()).sum();
            assert!(sum.abs() <= 1e-6 * scale.max(1e-30), "row {t}: Σ = {sum}");
        }
    }
    assert!(unowned > 0);
}

#[test]
fn f32_path_is_close_to_f64_reference() {
    let d = problem(
        11,
        Spec {
            vocab: 4097,
            responses: 6,
            ..Spec::default()
        },
    );
    let cfg = HeadConfig::default();
    let a = cpu::loss_head::<f64, f64>(&d.inputs(), &cfg).unwrap();
    let b = cpu::loss_head::<f32, f64>(&d.inputs(), &cfg).unwrap();
    let err = common::max_abs_diff(
        a.fwd.tokens.entropy.iter().copied(),
        b.fwd.tokens.entropy.iter().map(|x| x.to_f64()),
    );
    assert!(err > 0.0 && err < 1e-4, "f32 entropy error {err}");
}
