//! kill -9 at any moment, then `--resume`: the run's `metrics.jsonl` equals an uninterrupted
//! run's, byte for byte apart from wall times — no record lost (also with the kill placed exactly
//! between an iteration's record and its checkpoint), a torn last line repaired, floats exact.
//! Directories left by a failed start (no checkpoint yet, `--until 0`) can be resumed or started
//! again with the same `--out`.

mod hostile;

use hostile::{aem_env, metrics_text_without_timing, ok, strs, tiny_train};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const STEPS: u64 = 4;
const EVERY: u64 = 2;

fn reference(dir: &Path) -> Vec<String> {
    ok(&strs(&tiny_train(STEPS, EVERY, "ref")), dir);
    metrics_text_without_timing(&dir.join("ref"))
}

/// Resumes `run` until it finishes.
fn finish(dir: &Path, run: &str) {
    ok(&["train", "--resume", run, "--quiet"], dir);
}

#[test]
fn a_kill_between_a_record_and_its_checkpoint_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let want = reference(dir.path());
    assert_eq!(want.len() as u64, STEPS + 1);
    for (i, point) in [
        "after-metrics:2",
        "after-metrics:3",
        "after-checkpoint:2",
        "after-metrics:4",
    ]
    .iter()
    .enumerate()
    {
        let run = format!("run{i}");
        let o = aem_env(
            &strs(&tiny_train(STEPS, EVERY, &run)),
            dir.path(),
            &[("AEM_FAULT", point)],
        );
        assert!(o.status.code().is_none(), "{point}: not killed");
        finish(dir.path(), &run);
        assert_eq!(
            metrics_text_without_timing(&dir.path().join(&run)),
            want,
            "{point}"
        );
    }
}

#[test]
fn a_torn_last_line_is_repaired() {
    let dir = tempfile::tempdir().unwrap();
    let want = reference(dir.path());
    let mut a = tiny_train(STEPS, EVERY, "run");
    a.extend(["--until".to_string(), "2".to_string()]);
    ok(&strs(&a), dir.path());
    let m = dir.path().join("run/metrics.jsonl");
    let mut text = std::fs::read_to_string(&m).unwrap();
    text.push_str("{\"step\":3,\"phase\":\"r");
    std::fs::write(&m, text).unwrap();
    finish(dir.path(), "run");
    assert_eq!(metrics_text_without_timing(&dir.path().join("run")), want);
}

#[test]
fn dead_directories_can_be_resumed_or_started_again() {
    let dir = tempfile::tempdir().unwrap();
    let want = reference(dir.path());
    // A crash before the first checkpoint: config and records, no checkpoint.
    let o = aem_env(
        &strs(&tiny_train(STEPS, EVERY, "dead")),
        dir.path(),
        &[("AEM_FAULT", "after-metrics:1")],
    );
    assert!(o.status.code().is_none());
    assert!(!dir.path().join("dead/checkpoint.safetensors").exists());
    finish(dir.path(), "dead");
    assert_eq!(metrics_text_without_timing(&dir.path().join("dead")), want);
    // The same, started again with the same --out.
    let o = aem_env(
        &strs(&tiny_train(STEPS, EVERY, "again")),
        dir.path(),
        &[("AEM_FAULT", "after-metrics:1")],
    );
    assert!(o.status.code().is_none());
    ok(&strs(&tiny_train(STEPS, EVERY, "again")), dir.path());
    assert_eq!(metrics_text_without_timing(&dir.path().join("again")), want);
    // --until 0 leaves a resumable run.
    let mut a = tiny_train(STEPS, EVERY, "zero");
    a.extend(["--until".to_string(), "0".to_string()]);
    ok(&strs(&a), dir.path());
    finish(dir.path(), "zero");
    assert_eq!(metrics_text_without_timing(&dir.path().join("zero")), want);
}

#[test]
fn random_kills_then_resumes_equal_an_uninterrupted_run() {
    let dir = tempfile::tempdir().unwrap();
    let steps = 12;
    let t0 = std::time::Instant::now();
    ok(&strs(&tiny_train(steps, 1, "ref")), dir.path());
    let run_ms = t0.elapsed().as_millis().max(1) as u64;
    let want = metrics_text_without_timing(&dir.path().join("ref"));
    // Delays from a fixed sequence, spread over a whole run's duration on this machine (a
    // fraction of them kill before the first checkpoint, some mid-run, some never).
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut delay = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        Duration::from_millis(state % (run_ms / 2 + 1) + 1)
    };
    let first = tiny_train(steps, 1, "run");
    let mut kills = 0;
    for attempt in 0..40 {
        let args: Vec<String> = if attempt == 0 {
            first.clone()
        } else if dir.path().join("run/config.toml").exists() {
            vec![
                "train".into(),
                "--resume".into(),
                "run".into(),
                "--quiet".into(),
            ]
        } else {
            first.clone()
        };
        let mut child = Command::new(env!("CARGO_BIN_EXE_aem"))
            .args(&args)
            .current_dir(dir.path())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(delay());
        match child.try_wait().unwrap() {
            Some(st) => {
                assert!(st.success(), "attempt {attempt}: {st:?}");
                if dir.path().join("run/summary.json").exists() {
                    break;
                }
            }
            None => {
                child.kill().unwrap(); // SIGKILL
                child.wait().unwrap();
                kills += 1;
            }
        }
    }
    assert!(
        dir.path().join("run/summary.json").exists(),
        "never finished"
    );
    assert!(kills > 0, "no attempt was killed: the test proves nothing");
    assert_eq!(metrics_text_without_timing(&dir.path().join("run")), want);
}
