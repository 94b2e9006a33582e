//! Checkpoints: one safetensors file with parameters (E), AdamW state (f32), RNG state and step.
//!
//! Tensor names follow Hugging Face GPT-2 (`wte.weight`, `h.0.attn.c_attn.weight` (C, 3C), …);
//! optimizer tensors are `optim.master.<name>`, `optim.m.<name>`, `optim.v.<name>`; the RNG is
//! `rng.state` (u8, 56 bytes: seed 32, stream u64 LE, word position u128 LE). Metadata holds
//! `config` (HF GPT2Config JSON), `optim` (AdamW hyperparameters and step count), `step` and
//! `aem.checksum`: a JSON object of CRC-32s, one per tensor and one (`"metadata"`) over the other
//! metadata values, verified on every load (a flipped byte is an error naming the tensor).
//! Files are written with [`crate::io::write_atomic`] (temporary file, fsync, rename).
//!
//! Neither direction accepts a non-finite value: `save_checkpoint` refuses a model or optimizer
//! state holding a NaN or ±inf (a diverged run must not overwrite its last good checkpoint) and
//! `load_checkpoint` refuses one, naming the tensor and the index.

use std::collections::{BTreeMap, HashMap};
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
    check_finite_state(model, optim)?;
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
    let mut meta = HashMap::from([
        ("config".to_string(), config_json(model.config())),
        ("optim".to_string(), optim_json.to_string()),
        ("step".to_string(), step.to_string()),
        ("format".to_string(), "pt".to_string()),
    ]);
    let mut sums: BTreeMap<String, String> = views
        .iter()
        .map(|(name, v)| (name.clone(), crc_hex(v.data())))
        .collect();
    sums.insert("metadata".into(), meta_crc(&meta));
    let sums = serde_json::to_string(&sums).map_err(|e| bad(format!("checksum json: {e}")))?;
    meta.insert(CHECKSUM_KEY.to_string(), sums);
    let bytes = safetensors::serialize(views, Some(meta))?;
    crate::io::write_atomic(path, &bytes).map_err(|e| bad(e.to_string()))
}

/// The metadata key of the checksums.
const CHECKSUM_KEY: &str = "aem.checksum";

fn crc_hex(bytes: &[u8]) -> String {
    format!("{:08x}", crc32fast::hash(bytes))
}

/// CRC-32 over the metadata values but the checksum itself, in key order.
fn meta_crc(meta: &HashMap<String, String>) -> String {
    let mut h = crc32fast::Hasher::new();
    let mut keys: Vec<&String> = meta.keys().filter(|k| *k != CHECKSUM_KEY).collect();
    keys.sort();
    for k in keys {
        for part in [k.as_bytes(), b"\0", meta[k].as_bytes(), b"\0"] {
            h.update(part);
        }
    }
    format!("{:08x}", h.finalize())
}

fn non_finite(name: &str, index: usize, value: f64) -> ModelError {
    bad(format!(
        "tensor {name}[{index}] = {value} is not finite (a diverged model or a damaged file)"
    ))
}

/// The first non-finite parameter or optimizer value (tensor order, then `optim.master`, `.m`,
/// `.v` of that tensor), as an error naming the tensor and index. Saving and loading both refuse
/// one, so no checkpoint holds a non-finite value.
fn check_finite_state<E: Elem>(model: &Gpt<E>, optim: &AdamW) -> Result<()> {
    let first = |name: &str, xs: &mut dyn Iterator<Item = f32>| match xs
        .enumerate()
        .find(|(_, x)| !x.is_finite())
    {
        Some((i, x)) => Err(non_finite(name, i, f64::from(x))),
        None => Ok(()),
    };
    for (name, _, r) in model.layout().hf_tensors() {
        first(
            &name,
            &mut model.params()[r.clone()].iter().map(|x| x.to_f32()),
        )?;
        for (prefix, buf) in [
            ("optim.master.", &optim.master),
            ("optim.m.", &optim.m),
            ("optim.v.", &optim.v),
        ] {
            first(
                &format!("{prefix}{name}"),
                &mut buf[r.clone()].iter().copied(),
            )?;
        }
    }
    Ok(())
}

/// Checks every tensor's and the metadata's CRC-32 against `aem.checksum`.
fn verify_checksums(st: &SafeTensors, meta: &HashMap<String, String>) -> Result<()> {
    let text = meta.get(CHECKSUM_KEY).ok_or_else(|| {
        bad(format!(
            "metadata has no {CHECKSUM_KEY} (written by an older aem, or the header is damaged)"
        ))
    })?;
    let sums: BTreeMap<String, String> =
        serde_json::from_str(text).map_err(|e| bad(format!("{CHECKSUM_KEY}: {e}")))?;
    let mismatch = |what: &str| {
        bad(format!(
            "{what} fails its checksum: the file is damaged (restore it or retrain)"
        ))
    };
    if sums.get("metadata") != Some(&meta_crc(meta)) {
        return Err(mismatch("the metadata"));
    }
    let names = st.names();
    if names.len() + 1 != sums.len() {
        return Err(bad(format!(
            "{CHECKSUM_KEY} lists {} tensors, the file holds {}",
            sums.len().saturating_sub(1),
            names.len()
        )));
    }
    for name in names {
        let view = st.tensor(name)?;
        if sums.get(name as &str) != Some(&crc_hex(view.data())) {
            return Err(mismatch(&format!("tensor {name}")));
        }
    }
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
    let bytes = crate::io::read_input(path).map_err(|e| bad(e.to_string()))?;
    let (_, meta) = SafeTensors::read_metadata(&bytes)?;
    let meta = meta.metadata().clone().unwrap_or_default();
    let st = SafeTensors::deserialize(&bytes)?;
    verify_checksums(&st, &meta)?;
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

    // The config decides the allocation: the file must hold that many values (params in E,
    // three f32 optimizer tensors) before anything is allocated.
    let want = super::params::ParamLayout::new(&cfg)
        .total()
        .checked_mul(std::mem::size_of::<E>() + 12)
        .ok_or(ModelError::Overflow {
            what: "checkpoint size",
        })?;
    if want > bytes.len() {
        return Err(bad(format!(
            "metadata config {cfg:?} needs {want} bytes of tensors, the file has {}",
            bytes.len()
        )));
    }
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
    check_finite_state(&model, &optim)?;
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
