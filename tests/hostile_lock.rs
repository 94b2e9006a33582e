//! One process per run directory: a second `aem train` of a directory in use (a resume, or a
//! new run with the same `--out`) gets a clear error at once and writes nothing.

mod hostile;

use hostile::{fails, ok, strs, tiny_train};
use std::process::Command;
use std::time::{Duration, Instant};

#[test]
fn a_second_process_of_one_run_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_aem"))
        .args(strs(&tiny_train(400, 1, "run")))
        .current_dir(dir.path())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while !dir.path().join("run/config.toml").exists() {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "the first run never started"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let before = std::fs::read_to_string(dir.path().join("run/config.toml")).unwrap();
    let e = fails(&["train", "--resume", "run", "--quiet"], dir.path());
    assert!(e.contains("in use by another aem train"), "{e}");
    let e = fails(&strs(&tiny_train(3, 1, "run")), dir.path());
    assert!(e.contains("in use by another aem train"), "{e}");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("run/config.toml")).unwrap(),
        before
    );
    child.kill().unwrap();
    child.wait().unwrap();
    // The lock goes with the process: the run continues.
    let mut a = vec![
        "train".to_string(),
        "--resume".into(),
        "run".into(),
        "--quiet".into(),
    ];
    a.extend(["--until".to_string(), "3".to_string()]);
    ok(&strs(&a), dir.path());
}
