//! Sizes that pass validation but cannot be allocated: each is a one-line error naming the value
//! and the memory it needs, given at once (before anything is allocated or written), never an
//! abort. `AEM_MEMORY_LIMIT` pins the budget so the tests do not depend on the machine.

mod common;
mod hostile;

use aem::head::file;
use common::{problem, Spec};
use hostile::{fails_env, strs, tiny_train};
use std::time::{Duration, Instant};

const LIMIT: (&str, &str) = ("AEM_MEMORY_LIMIT", "2G");

/// Fails within a few seconds (an allocation of the size asked for would take far longer).
fn fails_fast(args: &[&str], cwd: &std::path::Path) -> String {
    let t0 = Instant::now();
    let e = fails_env(args, cwd, &[LIMIT]);
    assert!(
        t0.elapsed() < Duration::from_secs(20),
        "{args:?} took {:?}",
        t0.elapsed()
    );
    e
}

#[test]
fn head_groups_beyond_memory_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut d = problem(1, Spec::default());
    d.resp_group[0] = 2_000_000_000;
    d.n_groups = 2_000_000_001;
    let p = dir.path().join("in.safetensors");
    file::write_inputs(&p, &d).unwrap();
    let p = p.to_str().unwrap();
    let e = fails_fast(&["head", "--input", p, "--output", "o.st"], dir.path());
    assert!(e.contains("G = 2000000001") && e.contains("memory"), "{e}");
    let d = problem(1, Spec::default());
    file::write_inputs(dir.path().join("ok.st").as_path(), &d).unwrap();
    for backend in ["cpu", "emu"] {
        let e = fails_fast(
            &[
                "head",
                "--input",
                "ok.st",
                "--output",
                "o.st",
                "--n-groups",
                "4000000000",
                "--backend",
                backend,
            ],
            dir.path(),
        );
        assert!(e.contains("G = 4000000000") && e.contains("memory"), "{e}");
    }
    assert!(!dir.path().join("o.st").exists());
}

#[test]
fn model_configs_beyond_memory_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    for (cfg, what) in [
        (r#"{"layers": 1000000}"#, "layers 1000000"),
        (r#"{"d_model": 1000000, "heads": 1}"#, "d_model 1000000"),
        (r#"{"vocab": 4000000000}"#, "vocab 4000000000"),
        (r#"{"context": 1000000000000}"#, "context 1000000000000"),
    ] {
        std::fs::write(dir.path().join("c.json"), cfg).unwrap();
        let e = fails_fast(
            &["model", "init", "--config", "c.json", "--out", "ck.st"],
            dir.path(),
        );
        assert!(e.contains(what) && e.contains("needs"), "{cfg}: {e}");
        assert!(!dir.path().join("ck.st").exists());
    }
}

#[test]
fn a_checkpoint_claiming_a_huge_model_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    hostile::model_files(dir.path());
    // The metadata's config claims another n_embd, checksums resealed (the tensors stay 1.5 MB):
    // 1e6 needs more memory than the budget; 128 fits the budget but not the file.
    for (n_embd, want) in [
        ("1000000", "needs"),
        ("128", "bytes of tensors, the file has"),
    ] {
        hostile::rewrite(
            &dir.path().join("ck.st"),
            &dir.path().join("big.st"),
            |m| {
                let cfg = m["config"].replace("\"n_embd\":64", &format!("\"n_embd\":{n_embd}"));
                assert_ne!(cfg, m["config"]);
                m.insert("config".into(), cfg);
            },
            |_, _, _| {},
            true,
        );
        let e = fails_fast(
            &[
                "model",
                "forward",
                "--checkpoint",
                "big.st",
                "--input",
                "tok.st",
                "--output",
                "o.st",
            ],
            dir.path(),
        );
        assert!(e.contains(want) && !e.contains("checksum"), "{n_embd}: {e}");
    }
}

#[test]
fn train_sizes_are_refused_before_the_run_directory_exists() {
    let dir = tempfile::tempdir().unwrap();
    for (set, what) in [
        ("model.d_model=1000000", "needs"),
        ("rollout.tasks=100000000000", "at most"),
        (
            "run.eval_tasks=100000000000",
            "run.eval_tasks = 100000000000: at most",
        ),
        ("model.context=8", "model.context = 8"),
        ("env.history=1000000", "model.context = 64"),
    ] {
        let mut args = tiny_train(2, 1, "run");
        args.extend(["--set".to_string(), set.to_string()]);
        let e = fails_fast(&strs(&args), dir.path());
        assert!(e.contains(what), "{set}: {e}");
        assert!(
            !dir.path().join("run").exists(),
            "{set}: run directory made"
        );
    }
    let e = fails_fast(
        &strs(&[
            "train".into(),
            "--history".into(),
            "1000000".into(),
            "--out".into(),
            "run".into(),
        ]),
        dir.path(),
    );
    assert!(e.contains("env.history = 1000000"), "{e}");
    assert!(!dir.path().join("run").exists());
}

#[test]
fn eval_task_counts_beyond_the_limit_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    hostile::ok(&strs(&tiny_train(1, 1, "run")), dir.path());
    let e = fails_fast(
        &[
            "eval",
            "--checkpoint",
            "run",
            "--tasks",
            "1e11",
            "--backend",
            "cpu",
        ],
        dir.path(),
    );
    assert!(e.contains("100000000000") && e.contains("at most"), "{e}");
}

#[test]
fn an_allocation_the_system_refuses_is_an_error_not_an_abort() {
    let e = aem::mem::try_vec("test buffer", usize::MAX / 2, 0u64).unwrap_err();
    assert!(e.to_string().starts_with("test buffer needs"), "{e}");
    assert_eq!(aem::mem::try_vec("small", 3, 7u8).unwrap(), vec![7, 7, 7]);
}
