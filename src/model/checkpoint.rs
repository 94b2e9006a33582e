//! Checkpoints: one safetensors file with parameters (E), AdamW state (f32), RNG state and step.
//!
//! Tensor names follow Hugging Face GPT-2 (`wte.weight`, `h.0.attn.c_attn.weight` (C, 3C), …);
//! optimizer tensors are `optim.master.<name>`, `optim.m.<name>`, `optim.v.<name>`; the RNG is
//! `rng.state` (u8, 56 bytes: seed 32, stream u64 LE, word position u128 LE). Metadata holds
//! `config` (HF GPT2Config JSON), `optim` (AdamW hyperparameters and step count) and `step`.
//! Files are written to a temporary file in the target directory, synced, then renamed.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};
use serde_json::{json, Value};

use super::{AdamW, AdamWConfig, Elem, Gpt, GptConfig, ModelError, Result};

/// Everything a checkpoint restores.
#[derive(Debug, Clone)]
pub struct Checkpoint<E: Elem> {
    /// The model (gradients zero, no saved activations).
    pub model: Gpt<E>,
    /// Optimizer state.
    pub optim: AdamW,
    /// RNG state.
    pub rng: ChaCha8Rng,
    /// Training step.
    pub step: u64,
}

fn bad(msg: impl Into<String>) -> ModelError {
    ModelError::Checkpoint(msg.into())
}

/// HF GPT2Config JSON for a config.
pub fn config_json(cfg: &GptConfig) -> String {
    json!({
        "model_type": "gpt2",
        "vocab_size": cfg.vocab,
        "n_positions": cfg.context,
        "n_ctx": cfg.context,
        "n_embd": cfg.d_model,
        "n_layer": cfg.layers,
        "n_head": cfg.heads,
        "layer_norm_epsilon": 1e-5,
        "activation_function": "gelu_new",
        "tie_word_embeddings": true,
    })
    .to_string()
}

/// Parses the HF GPT2Config JSON written by [`config_json`] (extra keys ignored).
pub fn parse_config_json(s: &str) -> Result<GptConfig> {
    let v: Value = serde_json::from_str(s).map_err(|e| bad(format!("config json: {e}")))?;
    let get = |k: &str| -> Result<usize> {
        v.get(k)
            .and_then(Value::as_u64)
            .and_then(|x| usize::try_from(x).ok())
            .ok_or_else(|| bad(format!("config json: missing or bad {k}")))
    };
    let cfg = GptConfig {
        vocab: get("vocab_size")?,
        context: get("n_positions")?,
        d_model: get("n_embd")?,
        layers: get("n_layer")?,
        heads: get("n_head")?,
    };
    cfg.validate()?;
    Ok(cfg)
}

fn rng_bytes(rng: &ChaCha8Rng) -> Vec<u8> {
    let mut out = Vec::with_capacity(56);
    out.extend_from_slice(&rng.get_seed());
    out.extend_from_slice(&rng.get_stream().to_le_bytes());
    out.extend_from_slice(&rng.get_word_pos().to_le_bytes());
    out
}

fn rng_from_bytes(b: &[u8]) -> Result<ChaCha8Rng> {
    let err = || bad("rng.state must be 56 bytes");
    let seed: [u8; 32] = b
        .get(..32)
        .and_then(|s| s.try_into().ok())
        .ok_or_else(err)?;
    let stream: [u8; 8] = b
        .get(32..40)
        .and_then(|s| s.try_into().ok())
        .ok_or_else(err)?;
    let pos: [u8; 16] = b
        .get(40..56)
        .and_then(|s| s.try_into().ok())
        .ok_or_else(err)?;
    let mut rng = ChaCha8Rng::from_seed(seed);
    rng.set_stream(u64::from_le_bytes(stream));
    rng.set_word_pos(u128::from_le_bytes(pos));
    Ok(rng)
}

/// Writes a checkpoint atomically (temporary file in the same directory, then rename).
/// Byte order: storage is little-endian, as on every target this crate builds for.
pub fn save_checkpoint<E: Elem>(
    path: &Path,
    model: &Gpt<E>,
    optim: &AdamW,
    rng: &ChaCha8Rng,
    step: u64,
) -> Result<()> {
    let p = model.num_params();
    for got in [optim.master.len(), optim.m.len(), optim.v.len()] {
        if got != p {
            return Err(ModelError::OptimMismatch { expected: p, got });
        }
    }
    let names = model.layout().hf_tensors();
    let rng_state = rng_bytes(rng);
    let mut views: Vec<(String, TensorView)> = Vec::with_capacity(4 * names.len() + 1);
    for (name, shape, r) in &names {
        let bytes: &[u8] = bytemuck::cast_slice(&model.params()[r.clone()]);
        views.push((
            name.clone(),
            TensorView::new(E::DTYPE, shape.clone(), bytes)?,
        ));
        for (prefix, buf) in [
            ("optim.master.", &optim.master),
            ("optim.m.", &optim.m),
            ("optim.v.", &optim.v),
        ] {
            let bytes: &[u8] = bytemuck::cast_slice(&buf[r.clone()]);
            views.push((
                format!("{prefix}{name}"),
                TensorView::new(Dtype::F32, shape.clone(), bytes)?,
            ));
        }
    }
    views.push((
        "rng.state".to_string(),
        TensorView::new(Dtype::U8, vec![rng_state.len()], &rng_state)?,
    ));
    let c = &optim.cfg;
    let optim_json = json!({
        "lr": c.lr, "beta1": c.beta1, "beta2": c.beta2, "eps": c.eps,
        "weight_decay": c.weight_decay, "grad_clip": c.grad_clip, "t": optim.t,
    });
    let meta = HashMap::from([
        ("config".to_string(), config_json(model.config())),
        ("optim".to_string(), optim_json.to_string()),
        ("step".to_string(), step.to_string()),
        ("format".to_string(), "pt".to_string()),
    ]);
    let bytes = safetensors::serialize(views, Some(meta))?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(&bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| ModelError::Io(e.error))?;
    Ok(())
}

/// Reads `name` as `dtype` with the given shape into `dst`.
fn read_into<T: bytemuck::Pod>(
    st: &SafeTensors,
    name: &str,
    dtype: Dtype,
    shape: &[usize],
    dst: &mut [T],
) -> Result<()> {
    let view = st
        .tensor(name)
        .map_err(|_| bad(format!("missing tensor {name}")))?;
    if view.dtype() != dtype || view.shape() != shape {
        return Err(bad(format!(
            "{name}: expected {dtype:?} {shape:?}, found {:?} {:?}",
            view.dtype(),
            view.shape()
        )));
    }
    let size = std::mem::size_of::<T>();
    let data = view.data();
    if data.len() != std::mem::size_of_val(dst) {
        return Err(bad(format!(
            "{name}: {} bytes for {} elements",
            data.len(),
            dst.len()
        )));
    }
    for (d, chunk) in dst.iter_mut().zip(data.chunks_exact(size)) {
        *d = bytemuck::pod_read_unaligned(chunk);
    }
    Ok(())
}

/// Reads a checkpoint written by [`save_checkpoint`] with the same storage type `E`.
pub fn load_checkpoint<E: Elem>(path: &Path) -> Result<Checkpoint<E>> {
    let bytes = std::fs::read(path)?;
    let (_, meta) = SafeTensors::read_metadata(&bytes)?;
    let meta = meta.metadata().clone().unwrap_or_default();
    let field = |k: &str| {
        meta.get(k)
            .ok_or_else(|| bad(format!("metadata has no {k}")))
    };
    let cfg = parse_config_json(field("config")?)?;
    let step: u64 = field("step")?
        .parse()
        .map_err(|e| bad(format!("step: {e}")))?;
    let oj: Value =
        serde_json::from_str(field("optim")?).map_err(|e| bad(format!("optim json: {e}")))?;
    let f = |k: &str| {
        oj.get(k)
            .and_then(Value::as_f64)
            .map(|x| x as f32)
            .ok_or_else(|| bad(format!("optim.{k}")))
    };
    let ocfg = AdamWConfig {
        lr: f("lr")?,
        beta1: f("beta1")?,
        beta2: f("beta2")?,
        eps: f("eps")?,
        weight_decay: f("weight_decay")?,
        grad_clip: oj
            .get("grad_clip")
            .and_then(Value::as_f64)
            .map(|x| x as f32),
    };
    let t = oj
        .get("t")
        .and_then(Value::as_u64)
        .ok_or_else(|| bad("optim.t"))?;

    let st = SafeTensors::deserialize(&bytes)?;
    let mut model = Gpt::<E>::new(cfg, 0)?;
    let mut optim = AdamW::new(ocfg, &model)?;
    optim.t = t;
    for (name, shape, r) in model.layout().hf_tensors() {
        read_into(
            &st,
            &name,
            E::DTYPE,
            &shape,
            &mut model.params_mut()[r.clone()],
        )?;
        read_into(
            &st,
            &format!("optim.master.{name}"),
            Dtype::F32,
            &shape,
            &mut optim.master[r.clone()],
        )?;
        read_into(
            &st,
            &format!("optim.m.{name}"),
            Dtype::F32,
            &shape,
            &mut optim.m[r.clone()],
        )?;
        read_into(
            &st,
            &format!("optim.v.{name}"),
            Dtype::F32,
            &shape,
            &mut optim.v[r],
        )?;
    }
    let rs = st
        .tensor("rng.state")
        .map_err(|_| bad("missing tensor rng.state"))?;
    let rng = rng_from_bytes(rs.data())?;
    Ok(Checkpoint {
        model,
        optim,
        rng,
        step,
    })
}
