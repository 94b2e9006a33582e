//! A short training run: finite loss and metrics, a complete run directory, a config that
//! round-trips, and the imitation warm-up.

mod train_support;

use aem::train::config::{
    Advantage, AemMap, AemOnly, AemProxy, AemScope, Aggregation, Backend, GigpoEpisode, MaskMode,
    Schedule,
};
use aem::train::metrics::read_jsonl;
use aem::train::{train, RunOptions, TrainConfig};
use clap::ValueEnum;

#[test]
fn short_run_is_finite_and_complete() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let mut cfg = train_support::tiny("keyrooms-train", "keyrooms-hard");
    cfg.warmup.steps = 1;
    cfg.warmup.episodes = 4;
    cfg.optim.epochs = 2;
    cfg.optim.minibatches = 2;
    cfg.optim.schedule = Schedule::Cosine;
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
    for adv in [
        Advantage::Grpo,
        Advantage::DrGrpo,
        Advantage::Rloo,
        Advantage::Gigpo,
    ] {
        for aem in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let mut cfg = train_support::tiny("foglake-proto", "foglake-hard");
            cfg.algo.advantage = adv;
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

/// Every committed run's `config.toml` loads with the typed config; the grid's (written by
/// the current key set) serialise back to the same text, and the values are the enums'.
#[test]
fn committed_run_configs_load_and_round_trip() {
    fn walk(d: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        for e in std::fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.file_name().is_some_and(|n| n == "config.toml") {
                out.push(p);
            }
        }
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("results");
    let mut files = Vec::new();
    walk(&root, &mut files);
    let mut grid = 0;
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        let c =
            TrainConfig::from_toml_str(&text).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        c.validate()
            .unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        if f.starts_with(root.join("experiment/runs")) {
            assert_eq!(c.to_toml().unwrap(), text, "{}", f.display());
            grid += 1;
        }
    }
    assert!(grid >= 40, "only {grid} grid configs found");

    let p = root.join("experiment/runs/keyrooms/grpo-s0/config.toml");
    let c = TrainConfig::from_toml_file(&p).unwrap();
    assert_eq!(c.env.level.as_str(), "keyrooms-train");
    assert_eq!(c.env.ood_level.as_str(), "keyrooms-hard");
    assert_eq!(c.env.mask, MaskMode::Admissible);
    assert_eq!(c.algo.advantage, Advantage::Grpo);
    assert_eq!(c.algo.agg, Aggregation::TokenMean);
    assert_eq!(c.algo.gigpo_episode, GigpoEpisode::DrGrpo);
    assert_eq!(c.optim.schedule, Schedule::Constant);
    assert_eq!(c.run.backend, Backend::Cpu);

    // A level alias is kept as written (a run's config and directory name say what was asked).
    let c = TrainConfig::from_toml_str(
        "[env]\nlevel = \"foglake-train\"\nood_level = \"foglake-hard\"\n",
    )
    .unwrap();
    c.validate().unwrap();
    assert!(c.to_toml().unwrap().contains("level = \"foglake-train\""));
}

/// One name per value: serde's (TOML) and clap's (flag) agree for every variant, and are the
/// values the README documents.
#[test]
fn enum_values_have_one_name() {
    fn names<T: clap::ValueEnum + serde::Serialize>() -> Vec<String> {
        T::value_variants()
            .iter()
            .map(|v| {
                let serde_name = serde_json::to_value(v).unwrap();
                let clap_name = v.to_possible_value().unwrap().get_name().to_string();
                assert_eq!(serde_name, clap_name.as_str());
                clap_name
            })
            .collect()
    }
    assert_eq!(names::<Advantage>(), ["grpo", "dr-grpo", "rloo", "gigpo"]);
    assert_eq!(names::<GigpoEpisode>(), ["dr-grpo", "grpo"]);
    assert_eq!(names::<MaskMode>(), ["grammar", "admissible"]);
    assert_eq!(names::<Schedule>(), ["constant", "cosine", "linear"]);
    assert_eq!(names::<Backend>(), ["auto", "cpu", "emu", "cuda"]);
    assert_eq!(
        names::<Aggregation>(),
        [
            "token-mean",
            "seq-mean-token-mean",
            "seq-mean-token-sum",
            "seq-mean-token-sum-norm"
        ]
    );
    assert_eq!(
        names::<AemProxy>(),
        ["mean", "free-mean", "sum", "free-fraction"]
    );
    assert_eq!(names::<AemScope>(), ["task", "turn", "anchor"]);
    assert_eq!(names::<AemMap>(), ["paper", "reversed", "shuffled"]);
    assert_eq!(names::<AemOnly>(), ["all", "pos", "neg"]);
    for b in Backend::value_variants() {
        assert_eq!(names::<Backend>()[*b as usize], b.name());
        assert_eq!(b.to_string(), b.name());
    }
    for a in Advantage::value_variants() {
        assert_eq!(serde_json::to_value(a).unwrap(), a.to_string().as_str());
    }
}

/// A bad value in a TOML file or a `--set` names the key and the accepted values.
#[test]
fn bad_values_name_the_key_and_the_accepted_values() {
    let file = |text: &str| TrainConfig::from_toml_str(text).unwrap_err().to_string();
    let e = file("[algo]\nadvantage = \"ppo\"\n");
    assert!(
        e.contains("line 2, column 13: algo.advantage: unknown variant `ppo`, expected one of `grpo`, `dr-grpo`, `rloo`, `gigpo`"),
        "{e}"
    );
    let e = file("[optim]\nschedule = \"step\"\n");
    assert!(e.contains("optim.schedule: unknown variant `step`"), "{e}");
    assert!(e.contains("`constant`, `cosine`, `linear`"), "{e}");
    let e = file("algo = { agg = \"sum\" }\n");
    assert!(e.contains("algo.agg: unknown variant `sum`"), "{e}");
    assert!(e.contains("`seq-mean-token-sum-norm`"), "{e}");
    let e = file("[env]\nlevel = \"mars\"\n");
    assert!(e.contains("env.level: unknown level \"mars\""), "{e}");
    assert!(
        e.contains("keyrooms-train") && e.contains("foglake-train"),
        "{e}"
    );
    let e = file("[run]\nbackend = \"tpu\"\n");
    assert!(e.contains("run.backend: unknown variant `tpu`"), "{e}");
    assert!(e.contains("`auto`, `cpu`, `emu`, `cuda`"), "{e}");
    let e = file("[optim]\nlr = \"fast\"\n");
    assert!(
        e.contains("line 2, column 6: optim.lr: invalid type"),
        "{e}"
    );
    assert_eq!(e.lines().count(), 1, "{e}");

    let set = |kv: &str| {
        let mut c = TrainConfig::default();
        let e = c.set(kv).unwrap_err().to_string();
        assert_eq!(
            c,
            TrainConfig::default(),
            "a failed --set changed the config"
        );
        e
    };
    let e = set("algo.advantage=ppo");
    assert!(
        e.contains("--set algo.advantage=ppo: unknown variant `ppo`, expected one of `grpo`, `dr-grpo`, `rloo`, `gigpo`"),
        "{e}"
    );
    let e = set("env.mask=3");
    assert!(
        e.contains("--set env.mask=3: unknown variant `3`, expected `grammar` or `admissible`"),
        "{e}"
    );
    let e = set("algo.gigpo_episode=rloo");
    assert!(e.contains("expected `dr-grpo` or `grpo`"), "{e}");
    let e = set("env.ood_level=mars");
    assert!(
        e.contains("--set env.ood_level=mars: unknown level \"mars\""),
        "{e}"
    );

    // The good values set the typed fields.
    let mut c = TrainConfig::default();
    for kv in [
        "algo.advantage=dr-grpo",
        "algo.gigpo_episode=grpo",
        "env.mask=grammar",
        "algo.agg=seq-mean-token-sum",
        "optim.schedule=linear",
        "run.backend=emu",
        "env.level=foglake-proto",
        "env.ood_level=foglake-hard",
    ] {
        c.set(kv).unwrap();
    }
    c.validate().unwrap();
    assert_eq!(c.algo.advantage, Advantage::DrGrpo);
    assert_eq!(c.algo.gigpo_episode, GigpoEpisode::Grpo);
    assert_eq!(c.env.mask, MaskMode::Grammar);
    assert_eq!(c.algo.agg, Aggregation::SeqMeanTokenSum);
    assert_eq!(c.optim.schedule, Schedule::Linear);
    assert_eq!(c.run.backend, Backend::Emu);
    assert_eq!(c.env.level.as_str(), "foglake-proto");
}
