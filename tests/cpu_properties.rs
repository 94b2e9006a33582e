//! Property tests over random shapes: ragged R, V from 1 to 50257, long and single-token
//! responses; and arbitrary (often invalid) layouts, which must give an error, never a panic.

mod common;

use aem::cpu;
use aem::head::{self, Aggregation, HeadConfig};
use common::{problem, Spec};
use proptest::prelude::*;

fn vocab() -> impl Strategy<Value = usize> {
    prop_oneof![1usize..=40, 41usize..=5000, Just(50257usize)]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, ..ProptestConfig::default() })]

    #[test]
    fn outputs_are_finite_and_consistent(
        seed in 0u64..1000,
        v in vocab(),
        responses in 1usize..7,
        groups in 1usize..4,
        max_len in 1usize..12,
        agg in 0usize..4,
        scale in 0.1f32..12.0,
    ) {
        // Keep T·V moderate so 40 cases stay fast.
        let max_len = if v > 5000 { max_len.min(2) } else { max_len };
        let d = problem(seed, Spec { vocab: v, responses, groups, max_len, scale, ..Spec::default() });
        let cfg = HeadConfig {
            agg: Aggregation::ALL[agg],
            entropy_coef: 0.01,
            kl_coef: 0.05,
            dual_clip: Some(3.0),
            ..HeadConfig::default()
        };
        let inp = d.inputs();
        let o = cpu::loss_head::<f64, f32>(&inp, &cfg).unwrap();
        let layout = head::validate(&inp, &cfg).unwrap();
        prop_assert!(o.loss.loss.is_finite());
        prop_assert!(o.fwd.tokens.entropy.iter().all(|&h| h.is_finite() && h >= -1e-12));
        prop_assert!(o.fwd.tokens.entropy.iter().all(|&h| h <= (v as f64).ln() + 1e-9));
        prop_assert!(o.fwd.tokens.logp.iter().all(|&l| l <= 1e-12));
        prop_assert!(o.dlogits.iter().all(|g| g.is_finite()));
        for g in 0..inp.n_groups {
            let m = &layout.grp_members[layout.grp_offsets[g] as usize..layout.grp_offsets[g + 1] as usize];
            if !m.is_empty() {
                let mean = m.iter().map(|&i| o.fwd.aem.alpha[i as usize]).sum::<f64>() / m.len() as f64;
                prop_assert!((mean - 1.0).abs() < 1e-12);
            }
        }
        // The f32 plain path stays near the f64 reference.
        let f = cpu::loss_head::<f32, f32>(&inp, &cfg).unwrap();
        let err = common::max_abs_diff(
            o.fwd.tokens.lse.iter().copied(),
            f.fwd.tokens.lse.iter().map(|&x| f64::from(x)),
        );
        prop_assert!(err < 1e-3 * (1.0 + f64::from(scale)), "lse error {}", err);
    }

    #[test]
    fn arbitrary_layouts_error_or_compute_never_panic(
        v in 1usize..9,
        t in 0usize..12,
        starts in proptest::collection::vec(0u32..14, 0..6),
        lens in proptest::collection::vec(0u32..5, 0..6),
        groups in proptest::collection::vec(0u32..4, 0..6),
        n_groups in 0usize..4,
        targets in proptest::collection::vec(0u32..10, 0..12),
        adv in proptest::collection::vec(-2.0f32..2.0, 0..6),
    ) {
        let logits: Vec<half::f16> = (0..t * v).map(|i| half::f16::from_f32((i as f32 * 0.37).sin())).collect();
        let inp = head::HeadInputs {
            logits: aem::head::Logits::F16(&logits), vocab: v, targets: &targets, resp_start: &starts, resp_len: &lens,
            resp_group: &groups, n_groups, adv_base: &adv, old_logp: None, ref_logp: None,
        };
        if let Ok(o) = cpu::loss_head::<f64, f32>(&inp, &HeadConfig::default()) {
            prop_assert!(o.loss.loss.is_finite());
            prop_assert_eq!(o.dlogits.len(), t * v);
        }
    }
}
