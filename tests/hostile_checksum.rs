//! Checkpoint integrity: a checksum over every tensor and the metadata, verified on load, on
//! `--resume` and by `aem eval` / `aem model forward`; a damaged file is an error naming what
//! failed, never a silent resume.

mod hostile;

use hostile::{fails, ok, strs, tiny_train};

fn flip_middle(path: &std::path::Path, n: usize) {
    let mut b = std::fs::read(path).unwrap();
    let mid = b.len() / 2;
    for x in &mut b[mid..mid + n] {
        *x ^= 0x5a;
    }
    std::fs::write(path, b).unwrap();
}

#[test]
fn flipped_bytes_in_a_checkpoint_are_refused_everywhere() {
    let dir = tempfile::tempdir().unwrap();
    ok(&strs(&tiny_train(4, 2, "run")), dir.path());
    std::fs::copy(
        dir.path().join("run/checkpoint.safetensors"),
        dir.path().join("good.st"),
    )
    .unwrap();
    flip_middle(&dir.path().join("run/checkpoint.safetensors"), 16);
    let e = fails(
        &[
            "eval",
            "--checkpoint",
            "run",
            "--tasks",
            "4",
            "--backend",
            "cpu",
        ],
        dir.path(),
    );
    assert!(e.contains("fails its checksum"), "{e}");
    // A resume of a damaged run (an --until run continued) is refused the same way.
    let mut until = tiny_train(4, 2, "run2");
    until.extend(["--until".to_string(), "2".to_string()]);
    ok(&strs(&until), dir.path());
    flip_middle(&dir.path().join("run2/checkpoint.safetensors"), 16);
    let e = fails(&["train", "--resume", "run2", "--quiet"], dir.path());
    assert!(e.contains("fails its checksum"), "{e}");
    // One flipped byte is enough.
    std::fs::copy(dir.path().join("good.st"), dir.path().join("one.st")).unwrap();
    flip_middle(&dir.path().join("one.st"), 1);
    let e = aem::model::load_checkpoint::<half::f16>(&dir.path().join("one.st"))
        .expect_err("a damaged checkpoint loaded")
        .to_string();
    assert!(e.contains("fails its checksum"), "{e}");
    // The undamaged copy loads.
    aem::model::load_checkpoint::<half::f16>(&dir.path().join("good.st")).unwrap();
}

#[test]
fn a_checkpoint_without_a_checksum_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    hostile::model_files(dir.path());
    hostile::with_metadata(&dir.path().join("ck.st"), &dir.path().join("old.st"), |m| {
        assert!(m.remove("aem.checksum").is_some());
    });
    let e = aem::model::load_checkpoint::<half::f16>(&dir.path().join("old.st"))
        .expect_err("loaded")
        .to_string();
    assert!(e.contains("no aem.checksum"), "{e}");
}
