//! `aem train`, `aem eval` and `aem probe` from the command line: a tiny run, eval's table, and one-line
//! errors for bad flags, bad values and bad config files.

use std::path::Path;
use std::process::{Command, Output};

fn aem(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_aem"))
        .args(args)
        .current_dir(cwd)
        .output()
        .unwrap()
}

/// Runs a command that must fail; returns its stderr, which must be exactly one line.
fn fails(args: &[&str], cwd: &Path) -> String {
    let o = aem(args, cwd);
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(!o.status.success(), "{args:?} succeeded: {err}");
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "{args:?}: not one line: {err}"
    );
    assert!(err.starts_with("aem: error: "), "{err}");
    err
}

const TINY: &[&str] = &[
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
    "--quiet",
];

#[test]
fn train_then_eval_then_resume() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut args = vec![
        "train",
        "--level",
        "keyrooms-train",
        "--ood-level",
        "keyrooms-hard",
    ];
    args.extend_from_slice(TINY);
    args.extend_from_slice(&["--steps", "3", "--until", "2", "--out", "run"]);
    let o = aem(&args, d);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("iterations 2/3"), "{err}");
    let cfg = std::fs::read_to_string(d.join("run/config.toml")).unwrap();
    assert!(
        cfg.contains("level = \"keyrooms-train\"") && cfg.contains("d_model = 16"),
        "{cfg}"
    );

    // Resume refuses config flags, then finishes the run.
    let e = fails(&["train", "--resume", "run", "--lr", "0.1"], d);
    assert!(e.contains("--lr cannot be combined"), "{e}");
    let o = aem(&["train", "--resume", "run", "--quiet"], d);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("iterations 3/3"), "{err}");

    // Eval: a table with both levels and the three policies.
    let o = aem(
        &[
            "eval",
            "--checkpoint",
            "run",
            "--tasks",
            "5",
            "--quiet",
            "--json",
            "e.json",
        ],
        d,
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let table = String::from_utf8_lossy(&o.stdout);
    assert_eq!(table.lines().count(), 7, "{table}");
    for w in [
        "keyrooms-train",
        "keyrooms-hard",
        "held-out",
        "ood",
        "greedy",
        "sampled",
        "random-valid",
    ] {
        assert!(table.contains(w), "{w} missing: {table}");
    }
    let rows: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("e.json")).unwrap()).unwrap();
    assert_eq!(rows.as_array().unwrap().len(), 6);
    assert_eq!(rows[0]["tasks"], 5);

    // Probe: the variant table and its JSON; bad sizes and a missing checkpoint are one line.
    let o = aem(
        &[
            "probe",
            "--checkpoint",
            "run",
            "--tasks",
            "3",
            "--rollouts",
            "3",
            "--alts",
            "4",
            "--quiet",
            "--json",
            "p.json",
        ],
        d,
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let table = String::from_utf8_lossy(&o.stdout);
    assert_eq!(table.lines().count(), 2 + 12, "{table}");
    let rep: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("p.json")).unwrap()).unwrap();
    assert_eq!(rep["rows"].as_array().unwrap().len(), 12);
    assert_eq!(rep["rows"][0]["proxy"], "mean");
    let e = fails(&["probe", "--checkpoint", "run", "--alts", "0"], d);
    assert!(e.contains("--alts 0"), "{e}");
    let e = fails(&["probe", "--checkpoint", "nowhere"], d);
    assert!(e.contains("no such checkpoint"), "{e}");
    let e = fails(&["probe", "--checkpoint", "run", "--tasks", "1e9"], d);
    assert!(e.contains("--tasks"), "{e}");

    // A second run into the same --out is refused.
    let mut again = vec!["train"];
    again.extend_from_slice(TINY);
    again.extend_from_slice(&["--steps", "1", "--out", "run"]);
    let e = fails(&again, d);
    assert!(e.contains("already holds a run"), "{e}");
}

#[test]
fn bad_flags_are_one_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cases: &[(&[&str], &str)] = &[
        (&["train", "--no-such-flag"], "--no-such-flag"),
        (&["train", "--lr", "abc"], "abc"),
        (&["train", "--lr", "-1"], "optim.lr = -1"),
        (&["train", "--steps", "0"], "run.steps = 0"),
        (
            &["train", "--advantage", "ppo"],
            "invalid value 'ppo' for '--advantage <ADVANTAGE>' [possible values: grpo, dr-grpo, rloo, gigpo]",
        ),
        (
            &["train", "--level", "mars"],
            "for '--level <LEVEL>' [possible values: foglake-proto, foglake-hard, keyrooms-train",
        ),
        (&["train", "--level", "foglake-proto"], "env.ood_level"),
        (
            &["train", "--mask", "none"],
            "[possible values: grammar, admissible]",
        ),
        (
            &["train", "--schedule", "step"],
            "[possible values: constant, cosine, linear]",
        ),
        (&["train", "--agg", "sum"], "seq-mean-token-sum-norm]"),
        (
            &["train", "--set", "algo.advantage=ppo"],
            "--set algo.advantage=ppo: unknown variant `ppo`, expected one of `grpo`, `dr-grpo`, `rloo`, `gigpo`",
        ),
        (
            &["train", "--set", "env.level=mars"],
            "--set env.level=mars: unknown level \"mars\"",
        ),
        (&["train", "--set", "optim.nope=1"], "unknown key \"nope\""),
        (&["train", "--set", "lr"], "expected section.key=value"),
        (&["train", "--set", "optim.lr=fast"], "optim.lr=fast"),
        (
            &["train", "--backend", "tpu"],
            "[possible values: auto, cpu, emu, cuda]",
        ),
        (
            &["train", "--set", "run.backend=tpu"],
            "--set run.backend=tpu: unknown variant `tpu`",
        ),
        (
            &["eval", "--checkpoint", "x", "--level", "mars"],
            "for '--level <LEVEL>'",
        ),
        (&["train", "--config", "missing.toml"], "missing.toml"),
        (&["train", "--resume", "nowhere"], "nothing to resume"),
        (
            &["eval", "--checkpoint", "nowhere.safetensors"],
            "no such checkpoint",
        ),
        (&["eval"], "--checkpoint"),
    ];
    for (args, want) in cases {
        let e = fails(args, d);
        assert!(e.contains(want), "{args:?}: {e}");
    }
}

#[test]
fn bad_config_files_are_one_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cases: &[(&str, &str)] = &[
        (
            "[optim]\nlr = 1e-3\nlrr = 2\n",
            "line 3, column 1: unknown field `lrr`",
        ),
        ("[optim]\nlr = \"fast\"\n", "line 2"),
        ("[optim\nlr = 1\n", "line 1"),
        ("[oops]\nx = 1\n", "unknown field `oops`"),
        ("[run]\nsteps = -3\n", "line 2"),
        ("[algo]\nclip_low = -0.1\n", "algo.clip_low = -0.1"),
        (
            "[algo]\nadvantage = \"ppo\"\n",
            "line 2, column 13: algo.advantage: unknown variant `ppo`, expected one of `grpo`, `dr-grpo`, `rloo`, `gigpo`",
        ),
        ("[env]\nlevel = \"mars\"\n", "line 2, column 9: env.level: unknown level"),
        (
            "[model]\nd_model = 30\nheads = 4\n",
            "model.heads = 4: must divide",
        ),
    ];
    for (i, (text, want)) in cases.iter().enumerate() {
        let name = format!("c{i}.toml");
        std::fs::write(d.join(&name), text).unwrap();
        let e = fails(&["train", "--config", &name], d);
        assert!(e.contains(want), "{text:?}: {e}");
        assert!(e.contains(&name) || !want.starts_with("line"), "{e}");
    }
    // A good partial file works with flags on top (validated, then refused for the backend).
    std::fs::write(
        d.join("ok.toml"),
        "[algo]\naem = false\n[run]\nbackend = \"cuda\"\n",
    )
    .unwrap();
    let e = fails(&["train", "--config", "ok.toml"], d);
    assert!(e.contains("backend cuda"), "{e}");
}

/// `aem train -h` lists every enum flag's values (from the same types the config uses).
#[test]
fn help_lists_the_accepted_values() {
    let dir = tempfile::tempdir().unwrap();
    let o = aem(&["train", "-h"], dir.path());
    assert!(o.status.success());
    let help = String::from_utf8_lossy(&o.stdout);
    for want in [
        "[possible values: foglake-proto, foglake-hard, keyrooms-train, keyrooms-hard, tinyshop-train, tinyshop-hard]",
        "[possible values: grpo, dr-grpo, rloo, gigpo]",
        "[possible values: grammar, admissible]",
        "[possible values: constant, cosine, linear]",
        "[possible values: token-mean, seq-mean-token-mean, seq-mean-token-sum, seq-mean-token-sum-norm]",
        "[possible values: auto, cpu, emu, cuda]",
    ] {
        assert!(help.contains(want), "{want} not in:\n{help}");
    }
}
