//! Base advantages on real rollout groups (a small untrained policy on KeyRooms and FogLake):
//! the trainer's per-turn advantages against brute-force recomputations of AEM.md §4.

mod train_support;

use std::collections::HashMap;

use aem::env::{self, PromptConfig};
use aem::model::{Gpt, GptConfig};
use aem::train::config::{Advantage, TrainConfig};
use aem::train::rollout::{self, Rollouts};
use aem::train::update::{alpha_of, base_advantages};
use half::f16;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

fn rollouts(level_name: &str, tasks: usize, n: usize, seed: u64) -> Rollouts {
    let level = env::level(level_name).unwrap();
    let cfg = GptConfig {
        vocab: level.vocab().len(),
        context: 64,
        d_model: 16,
        layers: 1,
        heads: 2,
    };
    let model = Gpt::<f16>::new(cfg, seed).unwrap();
    let ts: Vec<_> = (0..tasks as u64)
        .map(|s| env::train_task(&level, s + 100 * seed).unwrap())
        .collect();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rollout::collect(
        &model,
        &ts,
        n,
        PromptConfig::default(),
        1.0,
        &mut rng,
        |_, _| {},
    )
    .unwrap()
}

fn cfg_with(adv: Advantage) -> TrainConfig {
    let mut c = TrainConfig::default();
    c.algo.advantage = adv;
    c
}

fn group_rewards(ro: &Rollouts, g: usize) -> Vec<f64> {
    ro.trajs
        .iter()
        .filter(|t| t.group == g)
        .map(|t| f64::from(t.reward))
        .collect()
}

/// Rollouts with mixed groups: at least one group with both outcomes and every task's N episodes.
fn mixed(level: &str) -> Rollouts {
    for seed in 0..20 {
        let ro = rollouts(level, 6, 8, seed);
        let any_mixed = (0..ro.n_groups).any(|g| {
            let r = group_rewards(&ro, g);
            r.iter().any(|&x| x > 0.0) && r.contains(&0.0)
        });
        if any_mixed {
            return ro;
        }
    }
    panic!("no mixed group found");
}

#[test]
fn outcome_estimators_on_rollout_groups() {
    for level in ["keyrooms-train", "foglake-proto"] {
        let ro = mixed(level);
        assert_eq!(ro.trajs.len(), 6 * 8);
        for (name, f) in [
            (Advantage::Grpo, 0usize),
            (Advantage::DrGrpo, 1),
            (Advantage::Rloo, 2),
        ] {
            let c = cfg_with(name);
            c.validate().unwrap();
            let adv = base_advantages(&ro, &c).unwrap();
            assert_eq!(adv.len(), ro.turns.len());
            for (i, tr) in ro.trajs.iter().enumerate() {
                let rs = group_rewards(&ro, tr.group);
                let n = rs.len() as f64;
                let mean = rs.iter().sum::<f64>() / n;
                let r = f64::from(tr.reward);
                let want = if rs.iter().all(|&x| x == rs[0]) {
                    0.0
                } else {
                    match f {
                        0 => {
                            let sd = (rs.iter().map(|x| (x - mean).powi(2)).sum::<f64>()
                                / (n - 1.0))
                                .sqrt();
                            (r - mean) / (sd + 1e-6)
                        }
                        1 => r - mean,
                        _ => r - (rs.iter().sum::<f64>() - r) / (n - 1.0),
                    }
                };
                // Every turn of trajectory i carries its trajectory's advantage.
                for &t in &tr.turns {
                    assert_eq!(ro.turns[t].traj, i);
                    assert!((adv[t] - want).abs() < 1e-12, "{level} {name} traj {i}");
                }
            }
            // Centred per group (GRPO/Dr.GRPO exactly; RLOO too, as a rescaled Dr.GRPO).
            for g in 0..ro.n_groups {
                let s: f64 = ro
                    .trajs
                    .iter()
                    .filter(|t| t.group == g)
                    .map(|t| adv[t.turns[0]])
                    .sum();
                assert!(s.abs() < 1e-9, "{level} {name} group {g} sums to {s}");
            }
        }
    }
}

#[test]
fn gigpo_anchor_groups_from_canonical_observations() {
    for level in ["keyrooms-train", "foglake-proto"] {
        let ro = mixed(level);
        let c = cfg_with(Advantage::Gigpo);
        c.validate().unwrap();
        let adv = base_advantages(&ro, &c).unwrap();
        // Brute force: A = A_E (Dr.GRPO) + ω (G_t − mean over the anchor group of G).
        let (omega, gamma) = (c.algo.gigpo_omega, c.algo.gigpo_gamma);
        let mut ret = vec![0.0f64; ro.turns.len()];
        for tr in &ro.trajs {
            let mut g = 0.0;
            for &t in tr.turns.iter().rev() {
                g = f64::from(ro.turns[t].reward) + gamma * g;
                ret[t] = g;
            }
        }
        let mut anchors: HashMap<(usize, Vec<u8>), Vec<usize>> = HashMap::new();
        for (t, turn) in ro.turns.iter().enumerate() {
            anchors
                .entry((ro.trajs[turn.traj].group, turn.obs.clone()))
                .or_default()
                .push(t);
        }
        // Every task's first observation is shared by its N rollouts: one anchor of size N.
        for tr in &ro.trajs {
            let first = &ro.turns[tr.turns[0]];
            assert!(anchors[&(tr.group, first.obs.clone())].len() >= 8);
        }
        let multi = anchors.values().filter(|m| m.len() > 1).count();
        assert!(multi >= ro.n_groups, "{level}: {multi} anchor groups");
        for members in anchors.values() {
            let mean = members.iter().map(|&t| ret[t]).sum::<f64>() / members.len() as f64;
            for &t in members {
                let tr = &ro.trajs[ro.turns[t].traj];
                let rs = group_rewards(&ro, tr.group);
                let a_e = f64::from(tr.reward) - rs.iter().sum::<f64>() / rs.len() as f64;
                let a_s = if members.len() > 1 {
                    ret[t] - mean
                } else {
                    0.0
                };
                assert!(
                    (adv[t] - (a_e + omega * a_s)).abs() < 1e-9,
                    "{level}: turn {t}: {} vs {}",
                    adv[t],
                    a_e + omega * a_s
                );
            }
        }
        // A winning turn never gets a lower step return than the mean of its anchor group.
        for (t, turn) in ro.turns.iter().enumerate() {
            if turn.reward > 0.0 {
                assert!(ret[t] == 1.0);
            }
        }
    }
}

#[test]
fn aem_alpha_on_rollout_groups() {
    let ro = mixed("keyrooms-train");
    let mut c = cfg_with(Advantage::Gigpo);
    let al = alpha_of(&ro, &c, 1).unwrap();
    // Group mean 1, decreasing in mean entropy, within (1/e, e) for λ = 1.
    for g in 0..ro.n_groups {
        let members: Vec<usize> = (0..ro.turns.len())
            .filter(|&t| ro.trajs[ro.turns[t].traj].group == g)
            .collect();
        let mean = members.iter().map(|&t| al.alpha[t]).sum::<f64>() / members.len() as f64;
        assert!((mean - 1.0).abs() < 1e-9);
        for &a in &members {
            for &b in &members {
                if al.mean_entropy[a] < al.mean_entropy[b] {
                    assert!(al.alpha[a] >= al.alpha[b]);
                }
            }
            assert!(al.alpha[a] > (-1.0f64).exp() && al.alpha[a] < 1.0f64.exp());
        }
    }
    // The mean entropy is the sampling-time mean over each response's tokens.
    for (t, turn) in ro.turns.iter().enumerate() {
        let m = turn.entropy.iter().map(|&h| f64::from(h)).sum::<f64>() / turn.entropy.len() as f64;
        assert!((al.mean_entropy[t] - m).abs() < 1e-12);
    }
    // AEM off: α ≡ 1.
    c.algo.aem = false;
    assert!(alpha_of(&ro, &c, 1)
        .unwrap()
        .alpha
        .iter()
        .all(|&a| a == 1.0));
    // A guard larger than any range: every group keeps α = 1.
    c.algo.aem = true;
    c.algo.delta = 100.0;
    let al = alpha_of(&ro, &c, 1).unwrap();
    assert_eq!(al.guarded_groups, ro.n_groups);
    assert!(al.alpha.iter().all(|&a| a == 1.0));
}
