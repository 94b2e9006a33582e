//! Base advantages (AEM.md §4) on hand-computed groups.

use aem::advantage::{gigpo, outcome, per_turn, GigpoConfig, Outcome, Step};
use approx::assert_relative_eq;

#[test]
fn grpo_drgrpo_rloo_hand_cases() {
    // Group 0: rewards [1, 0, 0, 1]; group 1: all equal (no signal); group 2: a singleton.
    let groups = [0u32, 0, 0, 0, 1, 1, 2];
    let rewards = [1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0];
    let dr = outcome(Outcome::DrGrpo, &groups, &rewards, 3).unwrap();
    assert_eq!(dr, vec![0.5, -0.5, -0.5, 0.5, 0.0, 0.0, 0.0]);
    let g = outcome(Outcome::Grpo, &groups, &rewards, 3).unwrap();
    let std = (4.0 * 0.25 / 3.0f64).sqrt(); // Bessel-corrected
    assert_relative_eq!(g[0], 0.5 / (std + 1e-6), epsilon = 1e-12);
    assert_relative_eq!(g[1], -0.5 / (std + 1e-6), epsilon = 1e-12);
    assert_eq!(&g[4..], &[0.0, 0.0, 0.0]);
    let r = outcome(Outcome::Rloo, &groups, &rewards, 3).unwrap();
    assert_relative_eq!(r[0], 1.0 - 1.0 / 3.0, epsilon = 1e-15);
    assert_relative_eq!(r[1], 0.0 - 2.0 / 3.0, epsilon = 1e-15);
    assert!(r.iter().all(|x| x.is_finite()));
}

#[test]
fn outcome_errors() {
    assert!(outcome(Outcome::Grpo, &[0, 1], &[1.0], 2).is_err());
    let e = outcome(Outcome::Grpo, &[0, 5], &[1.0, 0.0], 2).unwrap_err();
    assert!(e.to_string().contains("traj_group[1]"), "{e}");
    let e = outcome(Outcome::Grpo, &[0, 0], &[1.0, f64::NAN], 1).unwrap_err();
    assert!(e.to_string().contains("reward[1]"), "{e}");
}

#[test]
fn gigpo_anchor_groups() {
    // One task group, two trajectories of two steps each, sharing the first observation.
    // traj 0: obs A (r 0), obs B (r 1) → return 1 (success); traj 1: obs A (r 0), obs C (r 0) → 0.
    let steps = [
        Step {
            traj: 0,
            reward: 0.0,
            obs: b"A",
        },
        Step {
            traj: 1,
            reward: 0.0,
            obs: b"A",
        },
        Step {
            traj: 0,
            reward: 1.0,
            obs: b"B",
        },
        Step {
            traj: 1,
            reward: 0.0,
            obs: b"C",
        },
    ];
    let cfg = GigpoConfig::default();
    let a = gigpo(&[0, 0], &[1.0, 0.0], &steps, 1, &cfg).unwrap();
    // A_E (Dr.GRPO): +0.5, −0.5. Step returns: traj 0: [0.95, 1]; traj 1: [0, 0].
    // Anchor A = {0.95, 0} → A_S = ±0.475; B and C are singletons → 0.
    assert_relative_eq!(a[0], 0.5 + 0.475, epsilon = 1e-12);
    assert_relative_eq!(a[1], -0.5 - 0.475, epsilon = 1e-12);
    assert_relative_eq!(a[2], 0.5, epsilon = 1e-12);
    assert_relative_eq!(a[3], -0.5, epsilon = 1e-12);
    // ω = 0 is the episode-level estimator alone.
    let e = gigpo(
        &[0, 0],
        &[1.0, 0.0],
        &steps,
        1,
        &GigpoConfig { omega: 0.0, ..cfg },
    )
    .unwrap();
    assert_eq!(e, vec![0.5, -0.5, 0.5, -0.5]);
    // With the std: the anchor group {0.95, 0} has std 0.6718, A_S = ±0.7071.
    let s = gigpo(
        &[0, 0],
        &[1.0, 0.0],
        &steps,
        1,
        &GigpoConfig {
            step_std: true,
            ..cfg
        },
    )
    .unwrap();
    assert_relative_eq!(
        s[0] - 0.5,
        0.475 / ((2.0 * 0.475f64.powi(2)).sqrt() + 1e-6),
        epsilon = 1e-9
    );
    // The same observation in another task group is not an anchor partner.
    let b = gigpo(&[0, 1], &[1.0, 0.0], &steps, 2, &cfg).unwrap();
    assert_eq!(b, vec![0.0, 0.0, 0.0, 0.0]);
    // Errors name the argument.
    let bad = [Step {
        traj: 9,
        reward: 0.0,
        obs: b"A",
    }];
    assert!(gigpo(&[0], &[1.0], &bad, 1, &cfg)
        .unwrap_err()
        .to_string()
        .contains("steps.traj[0]"));
    assert!(gigpo(&[0], &[1.0], &[], 1, &GigpoConfig { gamma: 2.0, ..cfg }).is_err());
}

#[test]
fn per_turn_spreads_and_checks() {
    assert_eq!(
        per_turn(&[0.5, -1.0], &[0, 0, 1]).unwrap(),
        vec![0.5, 0.5, -1.0]
    );
    assert!(per_turn(&[0.5], &[1])
        .unwrap_err()
        .to_string()
        .contains("step_traj[0]"));
}
