//! Checkpoints: save → load → the next steps' losses are bit-identical; HF names and metadata.

use aem::model::{
    cross_entropy, load_checkpoint, save_checkpoint, AdamW, AdamWConfig, Gpt, GptConfig,
};
use half::f16;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use safetensors::{Dtype, SafeTensors};

const CFG: GptConfig = GptConfig {
    vocab: 29,
    context: 16,
    d_model: 16,
    layers: 2,
    heads: 2,
};
const B: usize = 3;
const T: usize = 9;

/// A text of period 7; each step reads B windows at offsets drawn from the RNG, so the RNG state
/// matters for the steps after a restore.
fn step(m: &mut Gpt<f16>, opt: &mut AdamW, rng: &mut ChaCha8Rng) -> f32 {
    let text: Vec<u32> = (0..64).map(|i| ((i % 7) * 4 + 1) as u32).collect();
    let mut x = Vec::with_capacity(B * T);
    let mut y = Vec::with_capacity(B * T);
    for _ in 0..B {
        let o = rng.random_range(0..text.len() - T - 1);
        x.extend_from_slice(&text[o..o + T]);
        y.extend_from_slice(&text[o + 1..o + T + 1]);
    }
    let logits = m.forward(&x, B, T).unwrap().to_vec();
    let (loss, d) = cross_entropy(&logits, &y, CFG.vocab).unwrap();
    m.zero_grad();
    m.backward(&d).unwrap();
    opt.step(m).unwrap();
    loss
}

#[test]
fn model_checkpoint_resume_is_bit_identical() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ckpt.safetensors");
    let mut m = Gpt::<f16>::new(CFG, 11).unwrap();
    let mut opt = AdamW::new(
        AdamWConfig {
            lr: 3e-3,
            ..Default::default()
        },
        &m,
    )
    .unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(12);
    for _ in 0..3 {
        step(&mut m, &mut opt, &mut rng);
    }
    save_checkpoint(&path, &m, &opt, &rng, 3).unwrap();
    let cont: Vec<u32> = (0..4)
        .map(|_| step(&mut m, &mut opt, &mut rng).to_bits())
        .collect();

    let ck = load_checkpoint::<f16>(&path).unwrap();
    assert_eq!(ck.step, 3);
    let (mut m2, mut opt2, mut rng2) = (ck.model, ck.optim, ck.rng);
    let resumed: Vec<u32> = (0..4)
        .map(|_| step(&mut m2, &mut opt2, &mut rng2).to_bits())
        .collect();
    assert_eq!(cont, resumed);
    assert_eq!(m.params(), m2.params());
    assert_eq!(opt, opt2);

    // Only the checkpoint is left in the directory (the temporary file was renamed).
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[test]
fn model_checkpoint_hf_layout() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ckpt.safetensors");
    let m = Gpt::<f16>::new(CFG, 1).unwrap();
    let opt = AdamW::new(AdamWConfig::default(), &m).unwrap();
    save_checkpoint(&path, &m, &opt, &ChaCha8Rng::seed_from_u64(0), 0).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let c = CFG.d_model;
    for (name, shape) in [
        ("wte.weight", vec![CFG.vocab, c]),
        ("wpe.weight", vec![CFG.context, c]),
        ("h.0.ln_1.weight", vec![c]),
        ("h.1.attn.c_attn.weight", vec![c, 3 * c]),
        ("h.1.attn.c_attn.bias", vec![3 * c]),
        ("h.0.attn.c_proj.weight", vec![c, c]),
        ("h.0.mlp.c_fc.weight", vec![c, 4 * c]),
        ("h.0.mlp.c_proj.weight", vec![4 * c, c]),
        ("ln_f.bias", vec![c]),
    ] {
        let v = st.tensor(name).unwrap();
        assert_eq!(v.dtype(), Dtype::F16, "{name}");
        assert_eq!(v.shape(), &shape[..], "{name}");
        let m = st.tensor(&format!("optim.m.{name}")).unwrap();
        assert_eq!((m.dtype(), m.shape()), (Dtype::F32, &shape[..]));
    }
    let (_, meta) = SafeTensors::read_metadata(&bytes).unwrap();
    let cfg: serde_json::Value =
        serde_json::from_str(&meta.metadata().as_ref().unwrap()["config"]).unwrap();
    assert_eq!(cfg["n_embd"], 16);
    assert_eq!(cfg["n_layer"], 2);
    assert_eq!(cfg["n_head"], 2);
    assert_eq!(cfg["n_positions"], 16);
    assert_eq!(cfg["vocab_size"], 29);

    // Loading with another storage type is a typed error, not a reinterpretation.
    let err = load_checkpoint::<f32>(&path).unwrap_err();
    assert!(
        matches!(err, aem::model::ModelError::Checkpoint(_)),
        "{err}"
    );
}
