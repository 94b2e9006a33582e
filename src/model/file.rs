//! `aem model`: initialise a checkpoint from a config file, and run the forward pass of a
//! checkpoint over a token file on the CPU path, the emulator or a GPU.
//!
//! Config file: JSON with any of `vocab`, `context`, `d_model`, `layers`, `heads` (non-negative
//! integers; absent keys take [`GptConfig::default`]); any other key is an error, so a typo
//! cannot silently fall back to a default. Example: `{"vocab": 64, "context": 32, "d_model": 32,
//! "layers": 2, "heads": 4}`.
//! Token file: safetensors with `tokens` (B, T) as U32, I32 or I64. Output: safetensors with
//! `logits` (B, T, V) F32, written atomically (nothing is written on an error).

use std::path::Path;

use half::f16;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde_json::Value;

use super::{load_checkpoint, save_checkpoint, AdamW, AdamWConfig, DeviceGpt, Gpt, GptConfig};
use crate::error::{Error, Result};
use crate::io::{write_tensors, OutTensor, TensorFile};

pub use crate::device::Backend;

fn file_err(path: &Path, reason: impl Into<String>) -> Error {
    Error::File {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// Reads and validates a config file (format in the module docs).
pub fn read_config(path: &Path) -> Result<GptConfig> {
    let text = crate::io::read_input_text(path)?;
    let v: Value =
        serde_json::from_str(&text).map_err(|e| file_err(path, format!("not JSON: {e}")))?;
    let obj = v
        .as_object()
        .ok_or_else(|| file_err(path, "expected a JSON object"))?;
    let mut cfg = GptConfig::default();
    for (k, x) in obj {
        let slot = match k.as_str() {
            "vocab" => &mut cfg.vocab,
            "context" => &mut cfg.context,
            "d_model" => &mut cfg.d_model,
            "layers" => &mut cfg.layers,
            "heads" => &mut cfg.heads,
            other => {
                return Err(file_err(
                    path,
                    format!(
                        "unknown key {other:?} (expected vocab, context, d_model, layers, heads)"
                    ),
                ))
            }
        };
        *slot = x
            .as_u64()
            .and_then(|n| usize::try_from(n).ok())
            .ok_or_else(|| file_err(path, format!("{k} = {x}: expected a non-negative integer")))?;
    }
    cfg.validate().map_err(|e| file_err(path, e.to_string()))?;
    Ok(cfg)
}

/// Writes a freshly initialised checkpoint (GPT-2 init from `seed`, fresh AdamW state, step 0).
pub fn init(config: &Path, out: &Path, seed: u64) -> Result<(GptConfig, usize)> {
    let cfg = read_config(config)?;
    let model = Gpt::<f16>::new(cfg, seed)?;
    let optim = AdamW::new(AdamWConfig::default(), &model)?;
    let rng = ChaCha8Rng::seed_from_u64(seed);
    save_checkpoint(out, &model, &optim, &rng, 0).map_err(|e| file_err(out, e.to_string()))?;
    Ok((cfg, model.num_params()))
}

/// Runs the forward pass of `checkpoint` over `tokens` (B, T) of `input` and writes `logits`
/// (B, T, V) f32 to `output`. Returns (B, T, V).
pub fn forward(
    checkpoint: &Path,
    input: &Path,
    output: &Path,
    backend: Backend,
) -> Result<(usize, usize, usize)> {
    let ck = load_checkpoint::<f16>(checkpoint).map_err(|e| file_err(checkpoint, e.to_string()))?;
    let mut model = ck.model;
    let file = TensorFile::open(input)?;
    let tokens = file.index_u32("tokens")?;
    let &[b, t] = tokens.shape.as_slice() else {
        return Err(file_err(
            input,
            format!(
                "tensor \"tokens\": expected shape (B, T), got {:?}",
                tokens.shape
            ),
        ));
    };
    let v = model.config().vocab;
    model.config().check_activations(
        || format!("a forward over tokens ({b}, {t})"),
        b.saturating_mul(t),
        t,
    )?;
    let in_err = |e: super::ModelError| file_err(input, format!("tokens: {e}"));
    // The CPU path's checks, on every backend, so a bad file names the input.
    super::config::check_tokens(model.config(), "forward", &tokens.data, b, t).map_err(in_err)?;
    let logits = match backend.open()?.device {
        None => model.forward(&tokens.data, b, t).map_err(in_err)?.to_vec(),
        Some(dev) => DeviceGpt::from_cpu(&dev, &model)?.forward(&tokens.data, b, t)?,
    };
    // Finite weights can still overflow (f16 extremes through the GEMMs): never write inf/NaN.
    if let Some(i) = logits.iter().position(|x| !x.is_finite()) {
        let count = logits.iter().filter(|x| !x.is_finite()).count() as u64;
        let row = i / v.max(1);
        return Err(Error::NonFiniteOutput {
            arg: "logits",
            index: row,
            count,
            cause: format!(
                "the forward pass overflows f32 at sequence {}, position {} (weights of {} too large)",
                row / t.max(1),
                row % t.max(1),
                checkpoint.display()
            ),
        });
    }
    write_tensors(
        output,
        &[("logits", OutTensor::F32(logits, vec![b, t, v]))],
        None,
    )?;
    Ok((b, t, v))
}
