//! The AEM experiment's machinery: the proxy variants and controls of `algo.aem_*`, the
//! per-response rows (`responses.tsv`, durable across resume) and the proxy-validity probe.

mod train_support;

use std::collections::HashMap;

use aem::env::{self, PromptConfig};
use aem::model::{Gpt, GptConfig};
use aem::train::config::{AemMap, AemOnly, AemProxy, AemScope};
use aem::train::metrics::{resume_responses, RESPONSES_HEADER};
use aem::train::probe::{self, pearson, ProbeConfig};
use aem::train::rollout::{self, Rollouts};
use aem::train::update::{alpha_of, alpha_variant, proxy_groups, proxy_values, trained_turns};
use aem::train::{train, RunOptions};
use half::f16;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

fn model(level: &env::Level, seed: u64) -> Gpt<f16> {
    let cfg = GptConfig {
        vocab: level.vocab().len(),
        context: 64,
        d_model: 16,
        layers: 1,
        heads: 2,
    };
    Gpt::<f16>::new(cfg, seed).unwrap()
}

fn rollouts(alts: usize, seed: u64) -> (Rollouts, Vec<Vec<f64>>) {
    let level = env::level("keyrooms-train").unwrap();
    let m = model(&level, seed);
    let ts: Vec<_> = (0..4u64)
        .map(|s| env::train_task(&level, s).unwrap())
        .collect();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rollout::collect_with_alternatives(
        &m,
        &ts,
        6,
        PromptConfig::default(),
        1.0,
        alts,
        &mut rng,
        |_, _| {},
    )
    .unwrap()
}

fn members(groups: &[u32], g: u32) -> Vec<usize> {
    (0..groups.len()).filter(|&i| groups[i] == g).collect()
}

#[test]
fn no_alternatives_is_collect_draw_for_draw() {
    let level = env::level("keyrooms-train").unwrap();
    let m = model(&level, 3);
    let ts: Vec<_> = (0..3u64)
        .map(|s| env::train_task(&level, s).unwrap())
        .collect();
    let mut r1 = ChaCha8Rng::seed_from_u64(9);
    let mut r2 = ChaCha8Rng::seed_from_u64(9);
    let a = rollout::collect(&m, &ts, 4, PromptConfig::default(), 1.0, &mut r1, |_, _| {}).unwrap();
    let (b, alts) = rollout::collect_with_alternatives(
        &m,
        &ts,
        4,
        PromptConfig::default(),
        1.0,
        0,
        &mut r2,
        |_, _| {},
    )
    .unwrap();
    assert_eq!(a, b);
    assert!(alts.is_empty());
    // With alternatives: one list of K surprisals per turn, each a finite Σ −logp ≥ 0.
    let (ro, alts) = rollouts(5, 3);
    assert_eq!(alts.len(), ro.turns.len());
    assert!(alts
        .iter()
        .all(|a| a.len() == 5 && a.iter().all(|s| s.is_finite() && *s >= 0.0)));
}

#[test]
fn group_scopes() {
    let (ro, _) = rollouts(0, 1);
    let (task, n_task) = proxy_groups(&ro, AemScope::Task).unwrap();
    assert_eq!(n_task, ro.n_groups);
    let (turn, n_turn) = proxy_groups(&ro, AemScope::Turn).unwrap();
    let (anchor, n_anchor) = proxy_groups(&ro, AemScope::Anchor).unwrap();
    assert!(n_turn >= n_task && n_anchor >= n_task);
    // Turn scope: same task and same turn index ⇔ same group; anchor: same task and observation.
    let mut index = vec![0usize; ro.turns.len()];
    for tr in &ro.trajs {
        for (n, &i) in tr.turns.iter().enumerate() {
            index[i] = n;
        }
    }
    for i in 0..ro.turns.len() {
        for j in 0..ro.turns.len() {
            let same_task = task[i] == task[j];
            assert_eq!(turn[i] == turn[j], same_task && index[i] == index[j]);
            assert_eq!(
                anchor[i] == anchor[j],
                same_task && ro.turns[i].obs == ro.turns[j].obs
            );
        }
    }
}

#[test]
fn proxy_statistics() {
    let (ro, _) = rollouts(0, 2);
    let c = aem::train::TrainConfig::default();
    let mean = alpha_of(&ro, &c, 1).unwrap().mean_entropy;
    let free_mean = proxy_values(&ro, AemProxy::FreeMean, &mean);
    let sum = proxy_values(&ro, AemProxy::Sum, &mean);
    let frac = proxy_values(&ro, AemProxy::FreeFraction, &mean);
    assert_eq!(proxy_values(&ro, AemProxy::Mean, &mean), mean);
    for (i, t) in ro.turns.iter().enumerate() {
        let free: Vec<f64> = t
            .entropy
            .iter()
            .zip(&t.masks)
            .filter(|(_, m)| m.count_ones() >= 2)
            .map(|(&h, _)| f64::from(h))
            .collect();
        let l = t.entropy.len() as f64;
        assert!((sum[i] - mean[i] * l).abs() < 1e-9);
        assert_eq!(frac[i], free.len() as f64 / l);
        let fm = if free.is_empty() {
            0.0
        } else {
            free.iter().sum::<f64>() / free.len() as f64
        };
        assert!((free_mean[i] - fm).abs() < 1e-12);
        // A forced token has entropy exactly 0, so the free mean is never below the mean.
        assert!(free_mean[i] >= mean[i] - 1e-12);
    }
}

#[test]
fn maps_and_controls() {
    let (ro, _) = rollouts(0, 4);
    let c = aem::train::TrainConfig::default();
    let h = alpha_of(&ro, &c, 1).unwrap().mean_entropy;
    let (g, n) = proxy_groups(&ro, AemScope::Task).unwrap();
    let (paper, guarded) = alpha_variant(&ro, &g, n, &h, AemMap::Paper, 1.0, 0.1, 0).unwrap();
    assert!(guarded < n, "need a group with a range of entropies");
    // The trainer's default is this variant.
    assert_eq!(alpha_of(&ro, &c, 1).unwrap().alpha, paper);
    let (rev, _) = alpha_variant(&ro, &g, n, &h, AemMap::Reversed, 1.0, 0.1, 0).unwrap();
    let (shuf, _) = alpha_variant(&ro, &g, n, &h, AemMap::Shuffled, 1.0, 0.1, 7).unwrap();
    let (shuf2, _) = alpha_variant(&ro, &g, n, &h, AemMap::Shuffled, 1.0, 0.1, 8).unwrap();
    assert_ne!(shuf, shuf2, "the shuffle depends on its seed");
    for grp in 0..n as u32 {
        let m = members(&g, grp);
        let mean = |a: &[f64]| m.iter().map(|&i| a[i]).sum::<f64>() / m.len() as f64;
        assert!((mean(&rev) - 1.0).abs() < 1e-9);
        // Reversed: α increases with entropy (the paper's decreases).
        for &i in &m {
            for &j in &m {
                if h[i] < h[j] {
                    assert!(rev[i] <= rev[j] && paper[i] >= paper[j]);
                }
            }
        }
        // Shuffled: the same multiset of α within the group.
        let mut a: Vec<f64> = m.iter().map(|&i| paper[i]).collect();
        let mut b: Vec<f64> = m.iter().map(|&i| shuf[i]).collect();
        a.sort_by(f64::total_cmp);
        b.sort_by(f64::total_cmp);
        assert_eq!(a, b);
    }
    // The mechanism filter.
    let base: Vec<f64> = (0..ro.turns.len())
        .map(|i| if i % 3 == 0 { 0.5 } else { -0.25 })
        .collect();
    let all = trained_turns(AemOnly::All, &base, &paper);
    let pos = trained_turns(AemOnly::Pos, &base, &paper);
    let neg = trained_turns(AemOnly::Neg, &base, &paper);
    assert_eq!(all.len(), ro.turns.len());
    assert!(pos.iter().all(|&i| base[i] * (paper[i] - 1.0) > 0.0));
    assert!(neg.iter().all(|&i| base[i] * (paper[i] - 1.0) < 0.0));
    assert!(!pos.is_empty() && !neg.is_empty());
    let mut both: HashMap<usize, ()> = HashMap::new();
    for &i in pos.iter().chain(&neg) {
        assert!(both.insert(i, ()).is_none());
    }
}

#[test]
fn variants_need_aem_on() {
    let mut c = aem::train::TrainConfig::default();
    c.algo.aem = false;
    c.algo.aem_only = AemOnly::Neg;
    let e = c.validate().unwrap_err().to_string();
    assert!(
        e.contains("algo.aem_only") && e.contains("algo.aem = true"),
        "{e}"
    );
    let mut c = aem::train::TrainConfig::default();
    c.set("algo.aem_scope=anchor").unwrap();
    assert_eq!(c.algo.aem_scope, AemScope::Anchor);
    let e = c.set("algo.aem_map=sideways").unwrap_err().to_string();
    assert!(e.contains("algo.aem_map"), "{e}");
}

#[test]
fn response_rows_survive_resume_bit_identically() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = train_support::tiny("keyrooms-train", "keyrooms-hard");
    cfg.run.steps = 4;
    cfg.run.responses_every = 1;
    cfg.run.checkpoint_every = 100;
    cfg.algo.aem_map = AemMap::Shuffled;
    let a = dir.path().join("straight");
    let opts = |out: &std::path::Path, until| RunOptions {
        out: Some(out.to_path_buf()),
        until,
        ..RunOptions::default()
    };
    train(cfg.clone(), &opts(&a, None)).unwrap();
    let b = dir.path().join("split");
    train(cfg.clone(), &opts(&b, Some(2))).unwrap();
    // A crash after the rows of iteration 3 but before its checkpoint, with a torn line.
    let mut text = std::fs::read_to_string(b.join("responses.tsv")).unwrap();
    text.push_str("3\t0\t0\t0\t5\t2\t0.1\t0.2\t0.3\t0.4\t1.0\n3\t0\t1");
    std::fs::write(b.join("responses.tsv"), text).unwrap();
    train(
        aem::train::TrainConfig::default(),
        &RunOptions {
            resume: Some(b.clone()),
            ..RunOptions::default()
        },
    )
    .unwrap();
    let ra = std::fs::read_to_string(a.join("responses.tsv")).unwrap();
    let rb = std::fs::read_to_string(b.join("responses.tsv")).unwrap();
    assert_eq!(ra, rb);
    let lines: Vec<&str> = ra.lines().collect();
    assert_eq!(lines[0], RESPONSES_HEADER);
    let steps: Vec<u64> = lines[1..]
        .iter()
        .map(|l| l.split('\t').next().unwrap().parse().unwrap())
        .collect();
    assert!(steps.windows(2).all(|w| w[0] <= w[1]));
    assert_eq!((steps[0], *steps.last().unwrap()), (1, 4));
    // Resuming from no checkpoint cuts every row; the header stays.
    let f = dir.path().join("r.tsv");
    std::fs::write(&f, format!("{RESPONSES_HEADER}\n1\t0\n2\t0\n")).unwrap();
    resume_responses(&f, Some(1)).unwrap();
    assert_eq!(
        std::fs::read_to_string(&f).unwrap(),
        format!("{RESPONSES_HEADER}\n1\t0\n")
    );
    resume_responses(&f, None).unwrap();
    assert_eq!(
        std::fs::read_to_string(&f).unwrap(),
        format!("{RESPONSES_HEADER}\n")
    );
}

#[test]
fn pearson_known_values() {
    let x = [1.0, 2.0, 3.0, 4.0];
    assert!((pearson(&x, &[2.0, 4.0, 6.0, 8.0]) - 1.0).abs() < 1e-12);
    assert!((pearson(&x, &[8.0, 6.0, 4.0, 2.0]) + 1.0).abs() < 1e-12);
    assert_eq!(pearson(&x, &[1.0; 4]), 0.0);
    // x = (1,2,3,4), y = (1,3,2,4): Σdxdy = 4, Σdx² = Σdy² = 5, r = 0.8.
    assert!((pearson(&x, &[1.0, 3.0, 2.0, 4.0]) - 0.8).abs() < 1e-12);
}

#[test]
fn probe_a_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = train_support::tiny("keyrooms-train", "keyrooms-hard");
    let run = dir.path().join("run");
    train(
        cfg.clone(),
        &RunOptions {
            out: Some(run.clone()),
            until: Some(0),
            ..RunOptions::default()
        },
    )
    .unwrap();
    let ckpt = run.join("checkpoint.safetensors");
    let pc = ProbeConfig {
        tasks: 6,
        rollouts: 4,
        alts: 8,
        seed: 1,
    };
    let rep = probe::probe_checkpoint(&cfg, &ckpt, pc, None, |_, _| {}).unwrap();
    assert_eq!(
        rep,
        probe::probe_checkpoint(&cfg, &ckpt, pc, None, |_, _| {}).unwrap()
    );
    assert_eq!(rep.rows.len(), 12);
    assert!(rep.responses >= 6 * 4);
    assert!(rep.free_token_frac > 0.0 && rep.free_token_frac < 1.0);
    for r in &rep.rows {
        assert!((-1.0..=1.0).contains(&r.corr) && (0.0..=1.0).contains(&r.sign_agree));
    }
    // H_resp(s) is estimated from independent samples of the same distribution: r has mean 0
    // up to sampling noise (here within 4 standard errors).
    let se = rep.r_std / (rep.responses as f64).sqrt();
    assert!(rep.r_mean.abs() < 4.0 * se, "r mean {} se {se}", rep.r_mean);
    assert!(rep.r_std > 0.0);
    assert!(probe::table(&rep).contains("free-mean"));
    let e = probe::probe_checkpoint(&cfg, &ckpt, ProbeConfig { alts: 0, ..pc }, None, |_, _| {})
        .unwrap_err()
        .to_string();
    assert!(e.contains("--alts 0"), "{e}");
}
