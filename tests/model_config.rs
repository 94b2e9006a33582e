//! Bad configs and bad inputs are typed errors.

use aem::model::{AdamW, AdamWConfig, Gpt, GptConfig, ModelError};
use half::f16;

#[test]
fn model_config_errors() {
    let ok = GptConfig::default();
    assert!(ok.validate().is_ok());
    let m = Gpt::<f16>::new(ok, 0).unwrap();
    // Default: ~0.1M parameters.
    assert!(
        (90_000..130_000).contains(&m.num_params()),
        "{}",
        m.num_params()
    );

    type Check = fn(&ModelError) -> bool;
    let cases: [(GptConfig, Check); 7] = [
        (GptConfig { heads: 3, ..ok }, |e| {
            matches!(
                e,
                ModelError::HeadsDontDivide {
                    d_model: 64,
                    heads: 3
                }
            )
        }),
        (GptConfig { context: 0, ..ok }, |e| {
            matches!(e, ModelError::ZeroDim { field: "context" })
        }),
        (GptConfig { vocab: 0, ..ok }, |e| {
            matches!(e, ModelError::ZeroDim { field: "vocab" })
        }),
        (GptConfig { d_model: 0, ..ok }, |e| {
            matches!(e, ModelError::ZeroDim { field: "d_model" })
        }),
        (GptConfig { layers: 0, ..ok }, |e| {
            matches!(e, ModelError::ZeroDim { field: "layers" })
        }),
        (GptConfig { heads: 0, ..ok }, |e| {
            matches!(e, ModelError::ZeroDim { field: "heads" })
        }),
        (
            GptConfig {
                d_model: usize::MAX / 2,
                heads: 1,
                ..ok
            },
            |e| matches!(e, ModelError::Overflow { .. }),
        ),
    ];
    for (cfg, is) in cases {
        let err = Gpt::<f16>::new(cfg, 0).unwrap_err();
        assert!(is(&err), "{cfg:?}: {err}");
    }
}

#[test]
fn model_input_errors() {
    let cfg = GptConfig {
        vocab: 10,
        context: 8,
        d_model: 8,
        layers: 1,
        heads: 2,
    };
    let mut m = Gpt::<f16>::new(cfg, 0).unwrap();
    assert!(matches!(m.backward(&[0.0; 10]), Err(ModelError::NoForward)));
    assert!(matches!(
        m.forward(&[1, 2, 3], 2, 2),
        Err(ModelError::Shape {
            expected: 4,
            got: 3,
            ..
        })
    ));
    assert!(matches!(
        m.forward(&[1, 2, 10, 3], 2, 2),
        Err(ModelError::Token {
            token: 10,
            vocab: 10
        })
    ));
    assert!(matches!(
        m.forward(&[0; 9], 1, 9),
        Err(ModelError::TooLong {
            t: 9,
            context: 8,
            ..
        })
    ));
    assert!(matches!(
        m.forward(&[], 0, 4),
        Err(ModelError::ZeroDim { .. })
    ));
    m.forward(&[1, 2, 3, 4], 2, 2).unwrap();
    assert!(matches!(
        m.backward(&[0.0; 39]),
        Err(ModelError::Shape { expected: 40, .. })
    ));
    let bad = AdamWConfig {
        lr: f32::NAN,
        ..Default::default()
    };
    assert!(matches!(
        AdamW::new(bad, &m),
        Err(ModelError::Invalid { what: "lr", .. })
    ));
    let bad = AdamWConfig {
        beta2: 1.0,
        ..Default::default()
    };
    assert!(matches!(
        AdamW::new(bad, &m),
        Err(ModelError::Invalid { what: "beta2", .. })
    ));
}
