//! `--resume` continues bit-identically: a run stopped at an iteration and resumed ends with
//! the same checkpoint bytes and the same metrics (timings aside) as an uninterrupted run.

mod train_support;

use aem::model::load_checkpoint;
use aem::train::metrics::read_jsonl;
use aem::train::{train, RunOptions};
use half::f16;
use train_support::strip;

#[test]
fn resume_is_bit_identical() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = train_support::tiny("keyrooms-train", "keyrooms-hard");
    cfg.run.steps = 5;
    cfg.run.checkpoint_every = 100; // only at --until and the end
    cfg.optim.minibatches = 2; // exercises the shuffle RNG across the resume
    cfg.warmup.steps = 1;
    cfg.warmup.episodes = 4;

    let a = dir.path().join("straight");
    train(
        cfg.clone(),
        &RunOptions {
            out: Some(a.clone()),
            ..RunOptions::default()
        },
    )
    .unwrap();

    let b = dir.path().join("split");
    let s = train(
        cfg.clone(),
        &RunOptions {
            out: Some(b.clone()),
            until: Some(3),
            ..RunOptions::default()
        },
    )
    .unwrap();
    assert_eq!(s.steps_done, 3);
    assert!(!b.join("summary.json").exists());
    // A crash after the checkpoint can leave later lines; resume drops them.
    let mut torn = std::fs::read_to_string(b.join("metrics.jsonl")).unwrap();
    torn.push_str("{\"step\":4,\"phase\":\"rl\",\"wall_s\":1.0}\n{\"step\":5,\"ph");
    std::fs::write(b.join("metrics.jsonl"), torn).unwrap();
    let s = train(
        aem::train::TrainConfig::default(),
        &RunOptions {
            resume: Some(b.clone()),
            ..RunOptions::default()
        },
    )
    .unwrap();
    assert_eq!(s.steps_done, 6);

    // Parameters, AdamW state, RNG and step bit for bit (the file's metadata JSON may order
    // its keys differently, so compare the contents, not the bytes).
    let ca = load_checkpoint::<f16>(&a.join("checkpoint.safetensors")).unwrap();
    let cb = load_checkpoint::<f16>(&b.join("checkpoint.safetensors")).unwrap();
    let bits = |x: &[f16]| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
    assert!(
        bits(ca.model.params()) == bits(cb.model.params()),
        "parameters differ"
    );
    assert!(ca.optim == cb.optim, "optimizer state differs");
    assert_eq!(ca.rng, cb.rng);
    assert_eq!(ca.step, cb.step);
    let ma = read_jsonl(&a.join("metrics.jsonl")).unwrap();
    let mb = read_jsonl(&b.join("metrics.jsonl")).unwrap();
    assert_eq!(ma.len(), 7);
    assert_eq!(strip(&ma), strip(&mb));
    assert_eq!(
        std::fs::read(a.join("config.toml")).unwrap(),
        std::fs::read(b.join("config.toml")).unwrap()
    );
}

#[test]
fn resume_needs_a_run() {
    let dir = tempfile::tempdir().unwrap();
    let e = train(
        aem::train::TrainConfig::default(),
        &RunOptions {
            resume: Some(dir.path().to_path_buf()),
            ..RunOptions::default()
        },
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("nothing to resume"), "{e}");
}
