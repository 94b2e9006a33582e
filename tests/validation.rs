//! Every error of AEM.md §7: a typed error naming the argument and the first bad index.

mod common;

use aem::head::{self, HeadConfig};
use aem::Error;
use common::{problem, Spec};
use half::f16;

fn base() -> aem::head::file::HeadData {
    problem(1, Spec::default())
}

fn err_of(d: &aem::head::file::HeadData, cfg: &HeadConfig) -> Error {
    match head::validate(&d.inputs(), cfg) {
        Ok(_) => panic!("expected an error"),
        Err(e) => e,
    }
}

#[test]
fn the_generated_batch_is_valid() {
    head::validate(&base().inputs(), &HeadConfig::default()).unwrap();
}

#[test]
fn shape_mismatches_name_the_argument() {
    let mut d = base();
    common::f16s_mut(&mut d).pop();
    assert!(matches!(
        err_of(&d, &HeadConfig::default()),
        Error::Shape { arg: "logits", .. }
    ));
    for (arg, f) in [
        (
            "resp_len",
            (|d: &mut aem::head::file::HeadData| {
                d.resp_len.pop();
            }) as fn(&mut _),
        ),
        ("resp_group", |d| {
            d.resp_group.push(0);
        }),
        ("adv_base", |d| {
            d.adv_base.pop();
        }),
        ("old_logp", |d| {
            d.old_logp.as_mut().unwrap().pop();
        }),
        ("ref_logp", |d| {
            d.ref_logp.as_mut().unwrap().push(0.0);
        }),
    ] {
        let mut d = base();
        f(&mut d);
        match err_of(&d, &HeadConfig::default()) {
            Error::Shape { arg: a, .. } => assert_eq!(a, arg),
            e => panic!("{arg}: {e}"),
        }
    }
    let mut d = base();
    d.vocab = 0;
    common::f16s_mut(&mut d).clear();
    assert!(matches!(
        err_of(&d, &HeadConfig::default()),
        Error::Shape { arg: "logits", .. }
    ));
}

#[test]
fn target_out_of_vocab_names_the_row() {
    let mut d = base();
    d.targets[4] = d.vocab as u32;
    d.targets[6] = 1_000_000;
    match err_of(&d, &HeadConfig::default()) {
        Error::OutOfRange {
            arg: "targets",
            index: 4,
            ..
        } => {}
        e => panic!("{e}"),
    }
}

#[test]
fn response_errors() {
    let mut d = base();
    d.resp_len[2] = 0;
    assert!(matches!(
        err_of(&d, &HeadConfig::default()),
        Error::OutOfRange {
            arg: "resp_len",
            index: 2,
            ..
        }
    ));

    let mut d = base();
    let t = d.targets.len() as u32;
    d.resp_start[3] = t - 1;
    d.resp_len[3] = 2;
    assert!(matches!(
        err_of(&d, &HeadConfig::default()),
        Error::OutOfRange {
            arg: "resp_start",
            index: 3,
            ..
        }
    ));

    let mut d = base();
    d.resp_group[5] = d.n_groups as u32;
    assert!(matches!(
        err_of(&d, &HeadConfig::default()),
        Error::OutOfRange {
            arg: "resp_group",
            index: 5,
            ..
        }
    ));

    let mut d = base();
    d.resp_start[4] = d.resp_start[3]; // response 4 starts where 3 starts
    match err_of(&d, &HeadConfig::default()) {
        Error::Overlap {
            index: 3, other: 4, ..
        } => {}
        e => panic!("{e}"),
    }
}

#[test]
fn non_finite_values_name_the_first_bad_element() {
    let mut d = base();
    let v = d.vocab;
    common::f16s_mut(&mut d)[5 * v + 3] = f16::NAN;
    common::f16s_mut(&mut d)[7 * v] = f16::INFINITY;
    match err_of(&d, &HeadConfig::default()) {
        Error::NonFinite {
            arg: "logits",
            index: 5,
            col: Some(3),
            ..
        } => {}
        e => panic!("{e}"),
    }
    let mut d = base();
    common::f16s_mut(&mut d)[2 * v + 1] = f16::NEG_INFINITY;
    let msg = err_of(&d, &HeadConfig::default()).to_string();
    assert!(msg.contains("logits[2, 1]"), "{msg}");
    // bf16 logits: the same scan, the same error.
    let mut b = common::to_bf16(&base());
    if let aem::head::file::LogitsVec::Bf16(x) = &mut b.logits {
        x[5 * v + 3] = half::bf16::NAN;
    }
    let msg = err_of(&b, &HeadConfig::default()).to_string();
    assert!(msg.contains("logits[5, 3]"), "{msg}");

    for (arg, f) in [
        (
            "adv_base",
            (|d: &mut aem::head::file::HeadData| d.adv_base[3] = f32::NAN) as fn(&mut _),
        ),
        ("old_logp", |d| {
            d.old_logp.as_mut().unwrap()[3] = f32::INFINITY
        }),
        ("ref_logp", |d| d.ref_logp.as_mut().unwrap()[3] = f32::NAN),
    ] {
        let mut d = base();
        f(&mut d);
        match err_of(&d, &HeadConfig::default()) {
            Error::NonFinite {
                arg: a, index: 3, ..
            } => assert_eq!(a, arg),
            e => panic!("{arg}: {e}"),
        }
    }
}

#[test]
fn config_domains() {
    let d = base();
    let cases: Vec<(&str, HeadConfig)> = vec![
        (
            "temperature",
            HeadConfig {
                temperature: 0.0,
                ..Default::default()
            },
        ),
        (
            "temperature",
            HeadConfig {
                temperature: f32::NAN,
                ..Default::default()
            },
        ),
        (
            "lambda",
            HeadConfig {
                lambda: -0.1,
                ..Default::default()
            },
        ),
        (
            "delta",
            HeadConfig {
                delta: -1.0,
                ..Default::default()
            },
        ),
        (
            "clip_low",
            HeadConfig {
                clip_low: -0.2,
                ..Default::default()
            },
        ),
        (
            "clip_high",
            HeadConfig {
                clip_high: f32::INFINITY,
                ..Default::default()
            },
        ),
        (
            "dual_clip",
            HeadConfig {
                dual_clip: Some(1.0),
                ..Default::default()
            },
        ),
        (
            "kl_coef",
            HeadConfig {
                kl_coef: -1.0,
                ..Default::default()
            },
        ),
        (
            "grad_scale",
            HeadConfig {
                grad_scale: 0.0,
                ..Default::default()
            },
        ),
        (
            "n_tok",
            HeadConfig {
                n_tok: Some(0.0),
                ..Default::default()
            },
        ),
        (
            "n_resp",
            HeadConfig {
                n_resp: Some(f64::NAN),
                ..Default::default()
            },
        ),
        (
            "norm_const",
            HeadConfig {
                norm_const: Some(-3.0),
                ..Default::default()
            },
        ),
    ];
    for (arg, cfg) in cases {
        match err_of(&d, &cfg) {
            Error::Config { arg: a, .. } => assert_eq!(a, arg),
            e => panic!("{arg}: {e}"),
        }
    }
}

#[test]
fn kl_needs_ref_logp() {
    let mut d = base();
    d.ref_logp = None;
    let cfg = HeadConfig {
        kl_coef: 0.1,
        ..Default::default()
    };
    assert!(matches!(
        err_of(&d, &cfg),
        Error::Missing {
            arg: "ref_logp",
            ..
        }
    ));
    head::validate(&d.inputs(), &HeadConfig::default()).unwrap();
}
