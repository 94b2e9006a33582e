//! `aem model init` and `aem model forward` on good and bad files.

use aem::io::{write_tensors, OutTensor, TensorFile};
use aem::model::{load_checkpoint, Gpt};
use half::f16;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn aem(args: &[&str], paths: &[(&str, &Path)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_aem"));
    c.args(args);
    for (flag, p) in paths {
        c.arg(flag).arg(p);
    }
    c.output().unwrap()
}

fn write_config(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn write_tokens(path: &Path, t: OutTensor) {
    write_tensors(path, &[("tokens", t)], None).unwrap();
}

const CONFIG: &str = r#"{"vocab": 23, "context": 9, "d_model": 16, "layers": 2, "heads": 2}"#;

/// Asserts a failed run: non-zero exit, one line on stderr starting with `aem: error:` that
/// mentions `needle`, and no output file.
fn assert_fails(out: &Output, needle: &str, output: &Path) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "expected failure, got success: {err}"
    );
    assert_eq!(err.trim_end().lines().count(), 1, "not one line: {err:?}");
    assert!(err.starts_with("aem: error:"), "{err}");
    assert!(err.contains(needle), "{err:?} does not mention {needle:?}");
    assert!(!output.exists(), "{} was written", output.display());
}

#[test]
fn model_init_then_forward_on_cpu_and_emu_agree() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cfg = write_config(d, "cfg.json", CONFIG);
    let ck = d.join("ck.safetensors");
    let out = aem(
        &["model", "init", "--seed", "3"],
        &[("--config", &cfg), ("--out", &ck)],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (b, t) = (3usize, 7usize);
    let toks: Vec<i64> = (0..b * t).map(|i| ((i * 5 + 2) % 23) as i64).collect();
    let input = d.join("tokens.safetensors");
    write_tokens(&input, OutTensor::I64(toks.clone(), vec![b, t]));
    let mut logits = Vec::new();
    for backend in ["cpu", "emu"] {
        let output = d.join(format!("logits_{backend}.safetensors"));
        let out = aem(
            &["model", "forward", "--backend", backend],
            &[
                ("--checkpoint", &ck),
                ("--input", &input),
                ("--output", &output),
            ],
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let f = TensorFile::open(&output).unwrap();
        let l = f.f32("logits").unwrap();
        assert_eq!(l.shape, vec![b, t, 23]);
        logits.push(l.data);
    }
    // The CPU output is the library's forward of the checkpoint, exactly.
    let mut m: Gpt<f16> = load_checkpoint(&ck).unwrap().model;
    let toks32: Vec<u32> = toks.iter().map(|&x| x as u32).collect();
    assert_eq!(m.forward(&toks32, b, t).unwrap(), &logits[0][..]);
    // The emulator runs the same f16 ops; only the GEMMs' f32 summation order differs, which can
    // move an activation by one f16 ulp: bound 1e-2 ≈ 2 ulps of |x| < 4 (observed: printed).
    let worst = logits[0]
        .iter()
        .zip(&logits[1])
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    eprintln!("max |emu - cpu| = {worst:.2e}");
    assert!(worst <= 1e-2);
}

#[test]
fn model_bad_configs_are_one_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ck = d.join("ck.safetensors");
    for (name, text, needle) in [
        (
            "typo.json",
            r#"{"vocab": 10, "head": 2}"#,
            "unknown key \"head\"",
        ),
        (
            "divide.json",
            r#"{"d_model": 16, "heads": 3}"#,
            "must divide",
        ),
        ("zero.json", r#"{"layers": 0}"#, "layers must be > 0"),
        ("neg.json", r#"{"vocab": -4}"#, "non-negative integer"),
        ("float.json", r#"{"vocab": 4.5}"#, "non-negative integer"),
        ("notjson.json", "vocab = 10", "not JSON"),
        ("array.json", "[1, 2]", "JSON object"),
    ] {
        let cfg = write_config(d, name, text);
        let out = aem(&["model", "init"], &[("--config", &cfg), ("--out", &ck)]);
        assert_fails(&out, needle, &ck);
        assert!(String::from_utf8_lossy(&out.stderr).contains(name));
    }
    let out = aem(
        &["model", "init"],
        &[("--config", &d.join("missing.json")), ("--out", &ck)],
    );
    assert_fails(&out, "missing.json", &ck);
}

#[test]
fn model_forward_bad_files_are_one_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cfg = write_config(d, "cfg.json", CONFIG);
    let ck = d.join("ck.safetensors");
    assert!(
        aem(&["model", "init"], &[("--config", &cfg), ("--out", &ck)])
            .status
            .success()
    );
    let output = d.join("logits.safetensors");
    let run = |input: &Path, ck: &Path, backend: &str| {
        aem(
            &["model", "forward", "--backend", backend],
            &[
                ("--checkpoint", ck),
                ("--input", input),
                ("--output", &output),
            ],
        )
    };
    let good = d.join("good.safetensors");
    write_tokens(&good, OutTensor::U32(vec![1, 2, 3, 4], vec![2, 2]));
    let cases: Vec<(&str, Option<OutTensor>, &str)> = vec![
        (
            "oob",
            Some(OutTensor::U32(vec![1, 23, 3, 4], vec![2, 2])),
            "token 23 out of range",
        ),
        (
            "rank1",
            Some(OutTensor::U32(vec![1, 2, 3, 4], vec![4])),
            "expected shape (B, T)",
        ),
        (
            "long",
            Some(OutTensor::U32(vec![0; 10], vec![1, 10])),
            "exceeds context 9",
        ),
        (
            "neg",
            Some(OutTensor::I64(vec![1, -2], vec![1, 2])),
            "does not fit",
        ),
        (
            "float",
            Some(OutTensor::F32(vec![1.0, 2.0], vec![1, 2])),
            "integer dtype",
        ),
        (
            "empty",
            Some(OutTensor::U32(vec![], vec![0, 2])),
            "batch must be > 0",
        ),
    ];
    for backend in ["cpu", "emu"] {
        for (name, t, needle) in &cases {
            let p = d.join(format!("{name}.safetensors"));
            if let Some(t) = t {
                write_tokens(&p, t.clone());
            }
            assert_fails(&run(&p, &ck, backend), needle, &output);
        }
        // no `tokens` tensor
        let p = d.join("other.safetensors");
        write_tensors(&p, &[("ids", OutTensor::U32(vec![1], vec![1, 1]))], None).unwrap();
        assert_fails(&run(&p, &ck, backend), "missing tensor \"tokens\"", &output);
        // not a safetensors file
        let junk = write_config(d, "junk.safetensors", "hello");
        assert_fails(&run(&junk, &ck, backend), "not a safetensors file", &output);
        assert_fails(&run(&good, &junk, backend), "junk.safetensors", &output);
        assert_fails(
            &run(&d.join("nope.safetensors"), &ck, backend),
            "nope.safetensors",
            &output,
        );
    }
    // Without a GPU the cuda backend is a one-line NoDevice error; with one it succeeds.
    let out = run(&good, &ck, "cuda");
    if out.status.success() {
        assert!(output.exists());
    } else {
        assert_fails(&out, "CUDA", &output);
    }
}
