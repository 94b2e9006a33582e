//! Shared by the hostile_* tests: running `aem`, asserting one-line errors, tiny runs.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output};

/// `aem args…` in `cwd` with extra environment variables.
pub fn aem_env(args: &[&str], cwd: &Path, envs: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_aem"));
    c.args(args).current_dir(cwd);
    for (k, v) in envs {
        c.env(k, v);
    }
    c.output().unwrap()
}

pub fn aem(args: &[&str], cwd: &Path) -> Output {
    aem_env(args, cwd, &[])
}

/// Runs a command that must fail cleanly: exit status 1 or 2 (not a signal), stderr exactly one
/// line starting `aem: error: `. Returns that line.
pub fn fails_env(args: &[&str], cwd: &Path, envs: &[(&str, &str)]) -> String {
    let o = aem_env(args, cwd, envs);
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(!o.status.success(), "{args:?} succeeded: {err}");
    assert!(
        matches!(o.status.code(), Some(1 | 2)),
        "{args:?}: ended by {:?} (a signal?): {err}",
        o.status
    );
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "{args:?}: not one line: {err}"
    );
    assert!(err.starts_with("aem: error: "), "{err}");
    err
}

pub fn fails(args: &[&str], cwd: &Path) -> String {
    fails_env(args, cwd, &[])
}

/// Runs a command that must succeed; returns stderr.
pub fn ok(args: &[&str], cwd: &Path) -> String {
    ok_env(args, cwd, &[])
}

pub fn ok_env(args: &[&str], cwd: &Path, envs: &[(&str, &str)]) -> String {
    let o = aem_env(args, cwd, envs);
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(o.status.success(), "{args:?} failed: {err}");
    err
}

/// Flags of a tiny CPU training run (a second or two per run at opt-level 1).
pub const TINY: &[&str] = &[
    "--set",
    "model.d_model=16",
    "--set",
    "model.layers=1",
    "--set",
    "model.heads=2",
    "--tasks",
    "2",
    "--rollouts",
    "4",
    "--eval-tasks",
    "6",
    "--eval-every",
    "2",
    "--backend",
    "cpu",
    "--quiet",
];

/// A tiny run's command line: `train` + TINY + `--steps steps --checkpoint-every every --out out`.
pub fn tiny_train(steps: u64, every: u64, out: &str) -> Vec<String> {
    let mut v: Vec<String> = vec!["train".into()];
    v.extend(TINY.iter().map(|s| s.to_string()));
    v.extend([
        "--steps".into(),
        steps.to_string(),
        "--checkpoint-every".into(),
        every.to_string(),
        "--out".into(),
        out.into(),
    ]);
    v
}

pub fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// A run's metrics.jsonl as JSON values without their timing fields.
pub fn metrics_without_timing(dir: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap();
    text.lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            for k in aem::train::metrics::TIMING_FIELDS {
                v.as_object_mut().unwrap().remove(k);
            }
            v
        })
        .collect()
}

/// The metrics lines as text with the timing fields removed: a byte-level comparison of what
/// was written (floats included), not of what they parse to.
pub fn metrics_text_without_timing(dir: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap();
    text.lines()
        .map(|l| {
            l.split(',')
                .filter(|f| {
                    !aem::train::metrics::TIMING_FIELDS
                        .iter()
                        .any(|k| f.trim_start_matches('{').starts_with(&format!("\"{k}\"")))
                })
                .collect::<Vec<_>>()
                .join(",")
        })
        .collect()
}

/// `aem model init` of the default config into `dir/ck.st`, and a `dir/tok.st` holding
/// `tokens` (1, 2): a checkpoint and an input for `aem model forward`.
pub fn model_files(dir: &Path) {
    std::fs::write(dir.join("c.json"), "{}").unwrap();
    ok(
        &["model", "init", "--config", "c.json", "--out", "ck.st"],
        dir,
    );
    let tokens = safetensors::tensor::TensorView::new(
        safetensors::Dtype::U32,
        vec![1, 2],
        bytemuck::cast_slice(&[1u32, 2]),
    )
    .unwrap();
    let bytes = safetensors::serialize([("tokens", tokens)], None).unwrap();
    std::fs::write(dir.join("tok.st"), bytes).unwrap();
}

/// Copies the safetensors file `src` to `dst` with its metadata edited by `edit` (tensors as
/// they are).
pub fn with_metadata(
    src: &Path,
    dst: &Path,
    edit: impl FnOnce(&mut std::collections::HashMap<String, String>),
) {
    rewrite(src, dst, edit, |_, _, _| {}, false);
}

/// Copies a checkpoint with its metadata and tensor bytes edited; with `reseal`, its
/// `aem.checksum` is recomputed in the format of `model::checkpoint` (CRC-32 per tensor, and one
/// over the other metadata values in key order) so that only the edit is wrong.
pub fn rewrite(
    src: &Path,
    dst: &Path,
    edit_meta: impl FnOnce(&mut std::collections::HashMap<String, String>),
    mut edit_tensor: impl FnMut(&str, safetensors::Dtype, &mut Vec<u8>),
    reseal: bool,
) {
    let bytes = std::fs::read(src).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let mut m = meta.metadata().clone().unwrap_or_default();
    edit_meta(&mut m);
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut owned: Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .map(|(n, v)| (n, v.dtype(), v.shape().to_vec(), v.data().to_vec()))
        .collect();
    for (n, dt, _, data) in &mut owned {
        edit_tensor(n, *dt, data);
    }
    if reseal {
        m.remove("aem.checksum");
        let mut sums: std::collections::BTreeMap<String, String> = owned
            .iter()
            .map(|(n, _, _, d)| (n.clone(), format!("{:08x}", crc32fast::hash(d))))
            .collect();
        let mut h = crc32fast::Hasher::new();
        let mut keys: Vec<&String> = m.keys().collect();
        keys.sort();
        for k in keys {
            for part in [k.as_bytes(), b"\0", m[k].as_bytes(), b"\0"] {
                h.update(part);
            }
        }
        sums.insert("metadata".into(), format!("{:08x}", h.finalize()));
        m.insert("aem.checksum".into(), serde_json::to_string(&sums).unwrap());
    }
    let views: Vec<(String, safetensors::tensor::TensorView)> = owned
        .iter()
        .map(|(n, dt, s, d)| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(*dt, s.clone(), d).unwrap(),
            )
        })
        .collect();
    std::fs::write(dst, safetensors::serialize(views, Some(m)).unwrap()).unwrap();
}
