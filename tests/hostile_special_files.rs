//! Special files: a non-regular input (a FIFO, a directory) is refused without blocking; an
//! output never replaces a non-regular file (a device node, a directory) and is never the input.

mod common;
mod hostile;

use aem::head::file;
use common::{problem, Spec};
use hostile::{fails, ok};
use std::path::Path;
use std::time::{Duration, Instant};

fn mkfifo(p: &Path) {
    let st = std::process::Command::new("mkfifo")
        .arg(p)
        .status()
        .unwrap();
    assert!(st.success());
}

fn head_input(dir: &Path) {
    file::write_inputs(&dir.join("in.st"), &problem(2, Spec::default())).unwrap();
}

#[test]
fn a_fifo_input_is_refused_without_blocking() {
    let dir = tempfile::tempdir().unwrap();
    mkfifo(&dir.path().join("fifo"));
    std::fs::write(dir.path().join("c.json"), "{}").unwrap();
    ok(
        &["model", "init", "--config", "c.json", "--out", "ck.st"],
        dir.path(),
    );
    let t0 = Instant::now();
    for args in [
        vec!["head", "--input", "fifo", "--output", "o.st"],
        vec!["model", "init", "--config", "fifo", "--out", "x.st"],
        vec![
            "model",
            "forward",
            "--checkpoint",
            "ck.st",
            "--input",
            "fifo",
            "--output",
            "o.st",
        ],
        vec![
            "model",
            "forward",
            "--checkpoint",
            "fifo",
            "--input",
            "ck.st",
            "--output",
            "o.st",
        ],
        vec!["train", "--config", "fifo", "--out", "run"],
    ] {
        let e = fails(&args, dir.path());
        assert!(e.contains("a FIFO, not a regular file"), "{args:?}: {e}");
    }
    assert!(t0.elapsed() < Duration::from_secs(30));
    let e = fails(&["head", "--input", ".", "--output", "o.st"], dir.path());
    assert!(e.contains("a directory"), "{e}");
}

#[test]
fn outputs_never_replace_special_files_or_inputs() {
    let dir = tempfile::tempdir().unwrap();
    head_input(dir.path());
    let before = std::fs::read(dir.path().join("in.st")).unwrap();
    // The input itself, also through another name (a hard link).
    std::fs::hard_link(dir.path().join("in.st"), dir.path().join("same.st")).unwrap();
    for out in ["in.st", "same.st", "./in.st"] {
        let e = fails(&["head", "--input", "in.st", "--output", out], dir.path());
        assert!(e.contains("same file as the input"), "{out}: {e}");
    }
    assert_eq!(std::fs::read(dir.path().join("in.st")).unwrap(), before);
    // A device node is never replaced by a regular file.
    use std::os::unix::fs::FileTypeExt;
    let e = fails(
        &["head", "--input", "in.st", "--output", "/dev/null"],
        dir.path(),
    );
    assert!(e.contains("a device"), "{e}");
    assert!(std::fs::metadata("/dev/null")
        .unwrap()
        .file_type()
        .is_char_device());
    // Nor a directory, a FIFO, …
    std::fs::create_dir(dir.path().join("d")).unwrap();
    let e = fails(&["head", "--input", "in.st", "--output", "d"], dir.path());
    assert!(e.contains("a directory"), "{e}");
    mkfifo(&dir.path().join("f"));
    let e = fails(&["demo-input", "--output", "f"], dir.path());
    assert!(e.contains("a FIFO"), "{e}");
    // aem model: the output is neither the checkpoint nor the input.
    std::fs::write(dir.path().join("c.json"), "{}").unwrap();
    let e = fails(
        &["model", "init", "--config", "c.json", "--out", "c.json"],
        dir.path(),
    );
    assert!(e.contains("same file as the input"), "{e}");
    ok(
        &["model", "init", "--config", "c.json", "--out", "ck.st"],
        dir.path(),
    );
    let e = fails(
        &[
            "model",
            "forward",
            "--checkpoint",
            "ck.st",
            "--input",
            "in.st",
            "--output",
            "ck.st",
        ],
        dir.path(),
    );
    assert!(e.contains("same file as the input"), "{e}");
}
