//! A short training run: finite loss and metrics, a complete run directory, a config that
//! round-trips, and the imitation warm-up.

mod train_support;

use aem::train::metrics::read_jsonl;
use aem::train::{train, RunOptions, TrainConfig};

#[test]
fn short_run_is_finite_and_complete() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let mut cfg = train_support::tiny("keyrooms-train", "keyrooms-hard");
    cfg.warmup.steps = 1;
    cfg.warmup.episodes = 4;
    cfg.optim.epochs = 2;
    cfg.optim.minibatches = 2;
    cfg.optim.schedule = "cosine".into();
    let opts = RunOptions {
        out: Some(out.clone()),
        ..RunOptions::default()
    };
    let s = train(cfg.clone(), &opts).unwrap();
    assert_eq!(s.steps_done, 5);
    assert_eq!(s.total_steps, 5);
    for f in [
        "config.toml",
        "metrics.jsonl",
        "checkpoint.safetensors",
        "success.png",
        "entropy.png",
        "aem.png",
        "summary.json",
    ] {
        let p = out.join(f);
        assert!(
            p.is_file() && std::fs::metadata(&p).unwrap().len() > 0,
            "{f} missing"
        );
    }
    for f in ["success.png", "entropy.png", "aem.png"] {
        let bytes = std::fs::read(out.join(f)).unwrap();
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "{f} is not a PNG");
    }
    // The resolved config is what was asked for.
    let back = TrainConfig::from_toml_file(&out.join("config.toml")).unwrap();
    assert_eq!(back, cfg);

    let recs = read_jsonl(&out.join("metrics.jsonl")).unwrap();
    let steps: Vec<u64> = recs.iter().map(|r| r.step).collect();
    assert_eq!(steps, vec![0, 1, 2, 3, 4, 5]);
    assert_eq!(recs[0].phase, "init");
    assert!(recs[0].random_valid_heldout.is_some() && recs[0].heldout_success.is_some());
    assert_eq!(recs[1].phase, "imitation");
    assert!(recs[1].loss.unwrap().is_finite() && recs[1].loss.unwrap() > 0.0);
    for r in &recs[2..] {
        assert_eq!(r.phase, "rl");
        let v = serde_json::to_value(r).unwrap();
        for key in [
            "train_success",
            "entropy",
            "surprisal",
            "alpha_mean",
            "alpha_min",
            "alpha_max",
            "guard_frac",
            "frac_pos",
            "frac_neg",
            "loss",
            "clip_frac",
            "approx_kl",
            "grad_norm",
            "lr",
            "tokens_per_s",
            "wall_s",
        ] {
            let x = v[key].as_f64().unwrap_or(f64::NAN);
            assert!(x.is_finite(), "step {}: {key} = {x}", r.step);
        }
        assert!((r.alpha_mean.unwrap() - 1.0).abs() < 1e-9);
        assert!(r.frac_pos.unwrap() + r.frac_neg.unwrap() <= 1.0);
        assert!((0.0..=1.0).contains(&r.train_success.unwrap()));
    }
    // Held-out success after RL steps 2 and 4 (eval_every = 2) and at the end.
    let evals: Vec<u64> = recs
        .iter()
        .filter(|r| r.heldout_success.is_some())
        .map(|r| r.step)
        .collect();
    assert_eq!(evals, vec![0, 3, 5]);
    // The cosine schedule decays.
    assert!(recs[5].lr.unwrap() < recs[2].lr.unwrap());

    // A second run into the same directory is refused.
    let err = train(cfg, &opts).unwrap_err().to_string();
    assert!(err.contains("already holds a run"), "{err}");
}

#[test]
fn every_advantage_with_and_without_aem_runs() {
    for adv in ["grpo", "dr-grpo", "rloo", "gigpo"] {
        for aem in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let mut cfg = train_support::tiny("foglake-proto", "foglake-hard");
            cfg.algo.advantage = adv.into();
            cfg.algo.aem = aem;
            cfg.run.steps = 2;
            cfg.run.eval_every = 0;
            cfg.rollout.tasks = 3;
            let opts = RunOptions {
                out: Some(dir.path().join("r")),
                ..RunOptions::default()
            };
            let s = train(cfg, &opts).unwrap();
            assert_eq!(s.steps_done, 2);
            let recs = read_jsonl(&dir.path().join("r/metrics.jsonl")).unwrap();
            for r in &recs[1..] {
                assert!(r.loss.unwrap().is_finite(), "{adv} aem={aem}");
                if !aem {
                    assert_eq!(r.alpha_min, Some(1.0));
                    assert_eq!(r.alpha_max, Some(1.0));
                    assert_eq!(r.frac_pos, Some(0.0));
                }
            }
        }
    }
}
