//! `aem head` on good and bad files.

mod common;

use aem::head::file::{self, Backend, GradDtype, GradOut};
use aem::head::HeadConfig;
use aem::io::{write_tensors, OutTensor, TensorFile};
use common::{logits_f64, problem, to_bf16, Spec};
use std::path::Path;
use std::process::Command;

fn aem() -> Command {
    Command::new(env!("CARGO_BIN_EXE_aem"))
}

/// Writes a problem as `aem head` input; integers as I64 when `i64_ints` (as PyTorch dumps them).
fn write_input(path: &Path, d: &file::HeadData, i64_ints: bool, skip: &str) {
    let t = d.targets.len();
    let r = d.resp_start.len();
    let ints = |x: &Vec<u32>| {
        if i64_ints {
            OutTensor::I64(x.iter().map(|&v| i64::from(v)).collect(), vec![x.len()])
        } else {
            OutTensor::U32(x.clone(), vec![x.len()])
        }
    };
    let mut ts: Vec<(&str, OutTensor)> = vec![
        ("logits", common::logits_tensor(d)),
        ("targets", ints(&d.targets)),
        ("resp_start", ints(&d.resp_start)),
        ("resp_len", ints(&d.resp_len)),
        ("resp_group", ints(&d.resp_group)),
        ("adv_base", OutTensor::F32(d.adv_base.clone(), vec![r])),
    ];
    if let Some(o) = &d.old_logp {
        ts.push(("old_logp", OutTensor::F32(o.clone(), vec![t])));
    }
    if let Some(o) = &d.ref_logp {
        ts.push(("ref_logp", OutTensor::F32(o.clone(), vec![t])));
    }
    ts.retain(|(n, _)| *n != skip);
    write_tensors(path, &ts, None).unwrap();
}

#[test]
fn head_round_trips_and_matches_the_library() {
    let dir = tempfile::tempdir().unwrap();
    let d = problem(
        21,
        Spec {
            vocab: 257,
            responses: 8,
            ..Spec::default()
        },
    );
    let b16 = to_bf16(&d);
    for (i64_ints, dtype, d) in [
        (false, "f32", &d),
        (true, "f16", &d),
        (false, "bf16", &b16),
        (true, "f32", &b16),
    ] {
        let input = dir.path().join(format!("in_{dtype}.safetensors"));
        let output = dir.path().join(format!("out_{dtype}.safetensors"));
        write_input(&input, d, i64_ints, "");
        let st = aem()
            .args(["head", "--input"])
            .arg(&input)
            .arg("--output")
            .arg(&output)
            .args([
                "--kl-coef",
                "0.1",
                "--entropy-coef",
                "0.01",
                "--dual-clip",
                "3",
                "--agg",
                "seq-mean-token-mean",
            ])
            .args(["--grad-dtype", dtype])
            .output()
            .unwrap();
        assert!(
            st.status.success(),
            "{}",
            String::from_utf8_lossy(&st.stderr)
        );
        let cfg = HeadConfig {
            kl_coef: 0.1,
            entropy_coef: 0.01,
            dual_clip: Some(3.0),
            agg: aem::head::Aggregation::SeqMeanTokenMean,
            ..HeadConfig::default()
        };
        let gd = match dtype {
            "f16" => GradDtype::F16,
            "bf16" => GradDtype::Bf16,
            _ => GradDtype::F32,
        };
        let want = file::compute(d, &cfg, gd, Backend::Cpu).unwrap();
        let f = TensorFile::open(&output).unwrap();
        assert_eq!(f.f32("logp").unwrap().data, want.logp);
        assert_eq!(f.f32("entropy").unwrap().data, want.entropy);
        assert_eq!(f.f32("lse").unwrap().data, want.lse);
        assert_eq!(f.f32("token_loss").unwrap().data, want.token_loss);
        assert_eq!(f.f32("resp_surprisal").unwrap().data, want.resp_surprisal);
        assert_eq!(
            f.f32("resp_mean_entropy").unwrap().data,
            want.resp_mean_entropy
        );
        assert_eq!(f.f32("alpha").unwrap().data, want.alpha);
        assert_eq!(f.f32("adv").unwrap().data, want.adv);
        let loss = f.f32("loss").unwrap();
        assert_eq!((loss.data, loss.shape), (vec![want.loss], vec![]));
        match (want.dlogits, f.half("dlogits")) {
            (GradOut::F16(g), Ok(aem::io::Half::F16(got))) => {
                assert_eq!(got.shape, vec![d.targets.len(), 257]);
                assert_eq!(got.data, g);
            }
            (GradOut::Bf16(g), Ok(aem::io::Half::Bf16(got))) => {
                assert_eq!(got.shape, vec![d.targets.len(), 257]);
                assert_eq!(got.data, g);
            }
            (GradOut::F32(g), _) => assert_eq!(f.f32("dlogits").unwrap().data, g),
            (g, got) => panic!("dlogits: wrote {got:?}, expected {:?}", g.dtype()),
        }
    }
}

fn run_err(args: &[&str]) -> String {
    let o = aem().args(args).output().unwrap();
    assert!(!o.status.success(), "expected failure for {args:?}");
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "one line expected: {err}"
    );
    err
}

#[test]
fn bad_files_are_one_line_errors_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n).to_string_lossy().to_string();
    let out = p("out.safetensors");
    let d = problem(2, Spec::default());

    let e = run_err(&["head", "--input", &p("nope.safetensors"), "--output", &out]);
    assert!(e.contains("nope.safetensors"), "{e}");

    std::fs::write(p("garbage.safetensors"), b"not a tensor file").unwrap();
    let e = run_err(&[
        "head",
        "--input",
        &p("garbage.safetensors"),
        "--output",
        &out,
    ]);
    assert!(e.contains("not a safetensors file"), "{e}");

    write_input(Path::new(&p("noadv.safetensors")), &d, false, "adv_base");
    let e = run_err(&["head", "--input", &p("noadv.safetensors"), "--output", &out]);
    assert!(e.contains("missing tensor \"adv_base\""), "{e}");

    // logits as F32 instead of F16.
    let t = d.targets.len();
    let r = d.resp_start.len();
    let ts = vec![
        (
            "logits",
            OutTensor::F32(
                logits_f64(&d).iter().map(|&x| x as f32).collect(),
                vec![t, d.vocab],
            ),
        ),
        ("targets", OutTensor::U32(d.targets.clone(), vec![t])),
        ("resp_start", OutTensor::U32(d.resp_start.clone(), vec![r])),
        ("resp_len", OutTensor::U32(d.resp_len.clone(), vec![r])),
        ("resp_group", OutTensor::U32(d.resp_group.clone(), vec![r])),
        ("adv_base", OutTensor::F32(d.adv_base.clone(), vec![r])),
    ];
    write_tensors(Path::new(&p("f32logits.safetensors")), &ts, None).unwrap();
    let e = run_err(&[
        "head",
        "--input",
        &p("f32logits.safetensors"),
        "--output",
        &out,
    ]);
    assert!(e.contains("expected dtype F16 or BF16"), "{e}");

    // A validation error from the head itself.
    let mut bad = d.clone();
    bad.targets[3] = 10_000;
    write_input(Path::new(&p("badtarget.safetensors")), &bad, false, "");
    let e = run_err(&[
        "head",
        "--input",
        &p("badtarget.safetensors"),
        "--output",
        &out,
    ]);
    assert!(e.contains("targets[3]"), "{e}");

    // KL without ref_logp.
    write_input(Path::new(&p("noref.safetensors")), &d, false, "ref_logp");
    let e = run_err(&[
        "head",
        "--input",
        &p("noref.safetensors"),
        "--output",
        &out,
        "--kl-coef",
        "0.1",
    ]);
    assert!(e.contains("ref_logp"), "{e}");

    // A bad flag value.
    write_input(Path::new(&p("ok.safetensors")), &d, false, "");
    let e = run_err(&[
        "head",
        "--input",
        &p("ok.safetensors"),
        "--output",
        &out,
        "--temperature",
        "0",
    ]);
    assert!(e.contains("temperature"), "{e}");

    assert!(
        !Path::new(&out).exists(),
        "no output may be written on error"
    );
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(
        leftovers
            .iter()
            .all(|n| n.to_string_lossy().ends_with(".safetensors")),
        "{leftovers:?}"
    );
}

#[test]
fn head_emu_backend_matches_cpu_within_the_parity_tolerance() {
    let d = problem(
        31,
        Spec {
            vocab: 513,
            responses: 10,
            ..Spec::default()
        },
    );
    emu_matches_cpu(&d, "f16");
    emu_matches_cpu(&to_bf16(&d), "bf16");
}

/// `aem head --backend emu` and `--backend cpu` on one file, the gradient in `grad` (the
/// logits' own dtype), held to the parity rule.
fn emu_matches_cpu(d: &file::HeadData, grad: &str) {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.safetensors");
    write_input(&input, d, false, "");
    let mut outs = Vec::new();
    for backend in ["cpu", "emu"] {
        let output = dir.path().join(format!("out_{backend}.safetensors"));
        let st = aem()
            .args(["head", "--backend", backend, "--input"])
            .arg(&input)
            .arg("--output")
            .arg(&output)
            .args(["--kl-coef", "0.1", "--grad-dtype", grad])
            .output()
            .unwrap();
        assert!(
            st.status.success(),
            "{}",
            String::from_utf8_lossy(&st.stderr)
        );
        outs.push(TensorFile::open(&output).unwrap());
    }
    // The same rule as tests/parity_loss_head.rs, applied to what the files hold.
    let cfg = HeadConfig {
        kl_coef: 0.1,
        ..HeadConfig::default()
    };
    // The plain f32 path, its gradient rounded to the file's gradient dtype.
    let (f32path, g32): (_, Vec<f64>) = if grad == "bf16" {
        let o = aem::cpu::loss_head::<f32, half::bf16>(&d.inputs(), &cfg).unwrap();
        (
            o.fwd,
            o.dlogits.iter().map(|x| f64::from(x.to_f32())).collect(),
        )
    } else {
        let o = aem::cpu::loss_head::<f32, half::f16>(&d.inputs(), &cfg).unwrap();
        (
            o.fwd,
            o.dlogits.iter().map(|x| f64::from(x.to_f32())).collect(),
        )
    };
    let r64 = aem::cpu::loss_head::<f64, f64>(&d.inputs(), &cfg).unwrap();
    let emu = outs[1].f32("entropy").unwrap().data;
    let e64 = &r64.fwd.tokens.entropy;
    let zmax = logits_f64(d).iter().fold(0.0f64, |m, x| m.max(x.abs()));
    common::within(
        "entropy",
        &emu.iter().map(|&x| f64::from(x)).collect::<Vec<_>>(),
        e64,
        &f32path
            .tokens
            .entropy
            .iter()
            .map(|&x| f64::from(x))
            .collect::<Vec<_>>(),
        zmax,
        "aem head --backend emu",
    );
    let g_emu: Vec<f64> = match outs[1].half("dlogits").unwrap() {
        aem::io::Half::F16(g) => g.data.iter().map(|x| f64::from(x.to_f32())).collect(),
        aem::io::Half::Bf16(g) => g.data.iter().map(|x| f64::from(x.to_f32())).collect(),
    };
    common::within(
        "dlogits",
        &g_emu,
        &r64.dlogits,
        &g32,
        0.0,
        &format!("aem head --backend emu, {grad}"),
    );
    let (lc, le) = (
        outs[0].f32("loss").unwrap().data[0],
        outs[1].f32("loss").unwrap().data[0],
    );
    assert!(
        (lc - le).abs() <= 1e-5 * (1.0 + lc.abs()),
        "loss cpu {lc} vs emu {le}"
    );
}
