//! Hostile `aem head` flags and files: every numeric flag's negative value reaches its domain
//! check (a one-line error naming the argument), and a refused run writes nothing.

mod common;
mod hostile;

use aem::head::file;
use common::{problem, Spec};
use hostile::{fails, ok};

fn input(dir: &std::path::Path) -> String {
    let d = problem(3, Spec::default());
    let p = dir.join("in.safetensors");
    file::write_inputs(&p, &d).unwrap();
    p.to_str().unwrap().to_string()
}

#[test]
fn negative_numbers_reach_the_domain_checks() {
    let dir = tempfile::tempdir().unwrap();
    let inp = input(dir.path());
    let out = dir.path().join("out.safetensors");
    let out = out.to_str().unwrap();
    for (flag, arg, why) in [
        ("--lambda", "lambda = -1", "must be >= 0"),
        ("--delta", "delta = -1", "must be >= 0"),
        ("--clip-low", "clip_low = -1", "must be >= 0"),
        ("--clip-high", "clip_high = -1", "must be >= 0"),
        ("--kl-coef", "kl_coef = -1", "must be >= 0"),
        ("--temperature", "temperature = -1", "must be > 0"),
        ("--grad-scale", "grad_scale = -1", "must be > 0"),
        ("--dual-clip", "dual_clip = -1", "must be > 1"),
        ("--n-tok", "n_tok = -1", "must be finite and > 0"),
        ("--n-resp", "n_resp = -1", "must be finite and > 0"),
        ("--norm-const", "norm_const = -1", "must be finite and > 0"),
        ("--n-groups", "--n-groups", "-1 must be >= 0"),
    ] {
        let e = fails(
            &["head", "--input", &inp, "--output", out, flag, "-1"],
            dir.path(),
        );
        assert!(e.contains(arg) && e.contains(why), "{flag}: {e}");
        assert!(!std::path::Path::new(out).exists(), "{flag}: wrote {out}");
    }
    // The entropy bonus may be negative (a penalty): accepted.
    ok(
        &[
            "head",
            "--input",
            &inp,
            "--output",
            out,
            "--entropy-coef",
            "-0.01",
        ],
        dir.path(),
    );
}

#[test]
fn fractional_and_non_numeric_counts_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let inp = input(dir.path());
    let e = fails(
        &[
            "head",
            "--input",
            &inp,
            "--output",
            "o.st",
            "--n-groups",
            "2.5",
        ],
        dir.path(),
    );
    assert!(
        e.contains("--n-groups") && e.contains("whole number"),
        "{e}"
    );
    let e = fails(
        &["demo-input", "--output", "d.st", "--vocab", "many"],
        dir.path(),
    );
    assert!(e.contains("--vocab") && e.contains("not a number"), "{e}");
}
