//! 04 — a batch dumped by a PyTorch trainer, read from Rust as `aem head` reads it.
//!
//! `cargo run --example 04_torch_dump [-- DUMP.safetensors]`
//!
//! A dump is what this writes from Python (`safetensors`, `torch`):
//!
//! ```python
//! from safetensors.torch import save_file
//! save_file({"logits": logits.bfloat16(),        # (T, V), bf16 or f16 as the model gives them
//!            "targets": targets,                 # (T) int64: the sampled token of each row
//!            "resp_start": starts, "resp_len": lens, "resp_group": groups,   # (R) int64
//!            "adv_base": adv.float(),            # (R)
//!            "old_logp": old_logp.float()},      # (T), optional
//!           "dump.safetensors")
//! ```
//!
//! Without an argument the example writes such a file itself (bf16 logits, int64 indices, as
//! torch dumps them) from the course batch, then reads it back. It runs the reference and the
//! kernels (GPU or emulator) on what it read and checks they agree.

#[path = "common/batch.rs"]
mod batch;

use aem::head::file::{self, Backend, GradDtype, LogitsVec};
use aem::head::HeadConfig;
use aem::io::{write_tensors, OutTensor};
use std::path::PathBuf;

/// Writes the course batch the way `save_file` above does.
fn write_torch_style(path: &std::path::Path) -> aem::Result<()> {
    let d = batch::batch();
    let LogitsVec::Bf16(x) = d.logits.to_bf16() else {
        unreachable!("to_bf16 gives bf16")
    };
    let i64s = |v: &[u32]| OutTensor::I64(v.iter().map(|&x| i64::from(x)).collect(), vec![v.len()]);
    write_tensors(
        path,
        &[
            ("logits", OutTensor::Bf16(x, vec![d.targets.len(), d.vocab])),
            ("targets", i64s(&d.targets)),
            ("resp_start", i64s(&d.resp_start)),
            ("resp_len", i64s(&d.resp_len)),
            ("resp_group", i64s(&d.resp_group)),
            (
                "adv_base",
                OutTensor::F32(d.adv_base.clone(), vec![d.adv_base.len()]),
            ),
        ],
        None,
    )
}

fn main() -> aem::Result<()> {
    let dir = std::env::temp_dir().join(format!("aem-04-{}", std::process::id()));
    let path = match std::env::args().nth(1) {
        Some(p) => PathBuf::from(p),
        None => {
            std::fs::create_dir_all(&dir).map_err(|e| aem::Error::File {
                path: dir.clone(),
                reason: e.to_string(),
            })?;
            let p = dir.join("dump.safetensors");
            write_torch_style(&p)?;
            println!("wrote a torch-style dump: {}", p.display());
            p
        }
    };
    // Reads and checks every tensor's dtype and rank; int64 indices are converted with a
    // range check, bf16 logits are kept as bf16.
    let d = file::read_inputs(&path, None)?;
    println!("read {}", d.describe());
    let cfg = HeadConfig::default();
    let reference = file::compute(&d, &cfg, GradDtype::F32, Backend::Cpu)?;
    // The kernels: on the GPU when there is one, else on the emulator.
    let backend = match aem::device::Device::cuda(0) {
        Ok(_) => Backend::Cuda,
        Err(_) => Backend::Emu,
    };
    println!("kernels on: {}", backend.name());
    let kernels = file::compute(&d, &cfg, GradDtype::F32, backend)?;
    println!(
        "loss: reference {:.6}, kernels {:.6}",
        reference.loss, kernels.loss
    );
    println!("α: {:?}", kernels.alpha);
    let close = |a: &[f32], b: &[f32]| {
        a.iter()
            .zip(b)
            .all(|(&x, &y)| (x - y).abs() <= 1e-5 * y.abs() + 1e-6)
    };
    batch::check(
        close(&kernels.alpha, &reference.alpha),
        "α: kernels = reference",
    );
    batch::check(
        close(&kernels.logp, &reference.logp),
        "logp: kernels = reference",
    );
    batch::check(
        close(&kernels.dlogits.to_f32(), &reference.dlogits.to_f32()),
        "dlogits: kernels = reference",
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
