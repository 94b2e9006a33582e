//! No non-finite result is written with exit 0: each overflow is an error naming the output, its
//! first bad index and the cause, the same on the reference (cpu) and on the kernels (emu); a
//! non-finite weight is refused when a checkpoint is loaded (and never saved); divergence is
//! reported at the iteration that produced it, with no non-finite checkpoint left behind.

mod common;
mod hostile;

use aem::head::file::{self, Backend, GradDtype, HeadData};
use aem::head::HeadConfig;
use common::{problem, Spec};
use hostile::{fails, strs, tiny_train};

fn both(d: &HeadData, cfg: &HeadConfig, dtype: GradDtype) -> String {
    let cpu = file::compute(d, cfg, dtype, Backend::Cpu)
        .err()
        .unwrap_or_else(|| panic!("cpu returned a result for {cfg:?}"));
    let emu = file::compute(d, cfg, dtype, Backend::Emu).expect_err("emu returned a result");
    assert_eq!(cpu.to_string(), emu.to_string(), "cpu and emu disagree");
    cpu.to_string()
}

#[test]
fn overflowing_outputs_are_errors_on_cpu_and_emu() {
    let d = problem(5, Spec::default());
    let c = HeadConfig::default;
    let cases: Vec<(&str, HeadConfig, &str)> = vec![
        (
            "n_tok",
            HeadConfig {
                n_tok: Some(1e-300),
                ..c()
            },
            "its token weight 1/value overflows f32",
        ),
        (
            "norm_const",
            HeadConfig {
                agg: aem::head::Aggregation::SeqMeanTokenSumNorm,
                norm_const: Some(1e-300),
                ..c()
            },
            "overflows f32",
        ),
        (
            "temperature",
            HeadConfig {
                temperature: 1e-38,
                ..c()
            },
            "z = x/τ overflows f32",
        ),
    ];
    for (what, cfg, want) in cases {
        let e = both(&d, &cfg, GradDtype::F32);
        assert!(e.contains(want), "{what}: {e}");
    }
    // A KL coefficient that overflows the token loss (the reference policy far from this one).
    let mut far = d.clone();
    for x in far.ref_logp.as_mut().unwrap() {
        *x += 4.0;
    }
    let e = both(
        &far,
        &HeadConfig {
            kl_coef: 1e38,
            ..c()
        },
        GradDtype::F32,
    );
    assert!(
        e.starts_with("token_loss[") && e.contains("kl_coef = 100000"),
        "{e}"
    );
    // f16 gradients under a large loss scale overflow: counted by the kernels, named with the
    // entry count and the first row.
    let e = both(
        &d,
        &HeadConfig {
            grad_scale: 1e6,
            ..c()
        },
        GradDtype::F16,
    );
    assert!(
        e.starts_with("dlogits[") && e.contains("overflows f16"),
        "{e}"
    );
    // …and the same scale with f32 gradients is fine.
    file::compute(
        &d,
        &HeadConfig {
            grad_scale: 1e6,
            ..c()
        },
        GradDtype::F32,
        Backend::Emu,
    )
    .unwrap();
    // An advantage that overflows after α.
    let mut big = d.clone();
    for a in &mut big.adv_base {
        *a = if *a >= 0.0 { 3e38 } else { -3e38 };
    }
    let e = both(&big, &c(), GradDtype::F32);
    assert!(
        e.starts_with("adv[") || e.starts_with("token_loss[") || e.starts_with("loss["),
        "{e}"
    );
}

#[test]
fn the_cli_writes_nothing_for_a_non_finite_result() {
    let dir = tempfile::tempdir().unwrap();
    file::write_inputs(&dir.path().join("in.st"), &problem(5, Spec::default())).unwrap();
    for backend in ["cpu", "emu"] {
        let e = fails(
            &[
                "head",
                "--input",
                "in.st",
                "--output",
                "o.st",
                "--grad-scale",
                "1e6",
                "--grad-dtype",
                "f16",
                "--backend",
                backend,
            ],
            dir.path(),
        );
        assert!(e.contains("overflows f16"), "{e}");
        let e = fails(
            &[
                "head",
                "--input",
                "in.st",
                "--output",
                "o.st",
                "--temperature",
                "1e-38",
                "--backend",
                backend,
            ],
            dir.path(),
        );
        assert!(e.contains("z = x/τ overflows"), "{e}");
    }
    assert!(!dir.path().join("o.st").exists());
}

/// Rewrites a checkpoint with element 1 of `tensor` set to NaN and valid checksums.
fn plant_nan(src: &std::path::Path, dst: &std::path::Path, tensor: &str) {
    hostile::rewrite(
        src,
        dst,
        |_| {},
        |n, dt, data| {
            if n == tensor {
                match dt {
                    safetensors::Dtype::F16 => {
                        data[2..4].copy_from_slice(&half::f16::NAN.to_le_bytes())
                    }
                    _ => data[4..8].copy_from_slice(&f32::NAN.to_le_bytes()),
                }
            }
        },
        true,
    );
}

#[test]
fn non_finite_weights_or_optimizer_state_are_refused_on_load() {
    let dir = tempfile::tempdir().unwrap();
    hostile::model_files(dir.path());
    for tensor in [
        "h.0.mlp.c_fc.weight",
        "optim.v.wte.weight",
        "optim.master.h.1.ln_2.bias",
    ] {
        plant_nan(
            &dir.path().join("ck.st"),
            &dir.path().join("nan.st"),
            tensor,
        );
        let e = fails(
            &[
                "model",
                "forward",
                "--checkpoint",
                "nan.st",
                "--input",
                "tok.st",
                "--output",
                "o.st",
            ],
            dir.path(),
        );
        assert!(
            e.contains(&format!("tensor {tensor}[1]")) && e.contains("not finite"),
            "{tensor}: {e}"
        );
    }
    assert!(!dir.path().join("o.st").exists());
    // The library refuses to save one, too.
    let mut ck = aem::model::load_checkpoint::<half::f16>(&dir.path().join("ck.st")).unwrap();
    ck.model.params_mut()[7] = half::f16::INFINITY;
    let e =
        aem::model::save_checkpoint(&dir.path().join("bad.st"), &ck.model, &ck.optim, &ck.rng, 0)
            .expect_err("saved a non-finite model")
            .to_string();
    assert!(e.contains("wte.weight[7]"), "{e}");
    assert!(!dir.path().join("bad.st").exists());
}

#[test]
fn divergence_is_reported_at_its_iteration_and_never_checkpointed() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = tiny_train(4, 1, "run");
    a.extend(["--lr".to_string(), "1e6".to_string()]);
    let e = fails(&strs(&a), dir.path());
    assert!(e.contains("training diverged at iteration 1"), "{e}");
    // Whatever checkpoint exists is finite (here: none was written, the first save comes after
    // iteration 1).
    let ck = dir.path().join("run/checkpoint.safetensors");
    if ck.exists() {
        aem::model::load_checkpoint::<half::f16>(&ck).unwrap();
    }
}
