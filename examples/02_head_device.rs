//! 02 — the same batch on a device: the GPU when there is one, else the CPU emulator running the
//! real CUDA kernels. Twice: over the crate's own device buffers, and over memory the caller
//! owns (a cudarc `CudaSlice` on a GPU; host memory on the emulator) with no copy.
//!
//! `cargo run --example 02_head_device`

#[path = "common/batch.rs"]
mod batch;

use aem::device::{Device, Slice, SliceMut};
use aem::head::file::{HeadStats, LogitsVec};
use aem::head::launch::{DeviceHead, GradDst, Plan};
use aem::head::HeadConfig;
use half::f16;

/// The head over logits and a gradient buffer that `dev` owns (uploaded once).
fn owned(dev: &Device, mut h: DeviceHead, x: &[f16]) -> aem::Result<(HeadStats, Vec<f32>)> {
    let plan = Plan::default();
    let logits = dev.htod(x)?;
    let mut grad = dev.zeros::<f32>(x.len())?;
    h.forward(dev, &logits, &plan)?; // token stats → response stats → α
    h.backward(dev, &logits, (&mut grad).into(), &plan)?; // loss and dlogits
    h.check(dev)?; // a non-finite row is a typed error
    Ok((h.stats(dev)?, dev.dtoh(&grad)?))
}

/// The head over the caller's memory: read and written in place.
fn borrowed(dev: &Device, mut h: DeviceHead, x: &[f16]) -> aem::Result<(HeadStats, Vec<f32>)> {
    let plan = Plan::default();
    match dev {
        #[cfg(feature = "cuda")]
        Device::Cuda(c) => {
            // What a trainer holding cudarc buffers does: its slices, this device's stream.
            let stream = c.stream();
            let logits = stream
                .clone_htod(x)
                .map_err(|e| aem::Error::NoDevice(e.to_string()))?;
            let mut grad = stream
                .alloc_zeros::<f32>(x.len())
                .map_err(|e| aem::Error::NoDevice(e.to_string()))?;
            h.forward(dev, Slice::cuda(&logits), &plan)?;
            h.backward(
                dev,
                Slice::cuda(&logits),
                GradDst::F32(SliceMut::cuda(&mut grad)),
                &plan,
            )?;
            h.check(dev)?;
            let g = stream
                .clone_dtoh(&grad)
                .map_err(|e| aem::Error::NoDevice(e.to_string()))?;
            Ok((h.stats(dev)?, g))
        }
        _ => {
            // The emulator's device memory is host memory: the caller's Vec, in place.
            let mut grad = vec![0f32; x.len()];
            h.forward(dev, Slice::host(x), &plan)?;
            h.backward(
                dev,
                Slice::host(x),
                GradDst::F32(SliceMut::host(&mut grad)),
                &plan,
            )?;
            h.check(dev)?;
            Ok((h.stats(dev)?, grad))
        }
    }
}

fn main() -> aem::Result<()> {
    let d = batch::batch();
    let LogitsVec::F16(x) = &d.logits else {
        unreachable!("the batch is f16")
    };
    let cfg = HeadConfig::default();
    let dev = Device::cuda(0).or_else(|e| {
        println!("no GPU ({e}): the emulator");
        Device::emu()
    })?;
    println!("device: {}", dev.name());
    // The per-row and per-response inputs, validated and uploaded once per head.
    let head = || DeviceHead::new(&dev, &d.inputs(), &cfg, x.len());
    let (stats, grad) = owned(&dev, head()?, x)?;
    let (stats_b, grad_b) = borrowed(&dev, head()?, x)?;
    println!("α = {:?}\nloss = {:.6}", stats.alpha, stats.loss);

    let want = aem::cpu::loss_head::<f64, f64>(&d.inputs(), &cfg)?;
    let close = |got: &[f32], want: &[f64]| {
        got.iter()
            .zip(want)
            .all(|(&g, &w)| (f64::from(g) - w).abs() <= 1e-5 * w.abs() + 1e-6)
    };
    batch::check(
        close(&stats.alpha, &want.fwd.aem.alpha),
        "α equals the reference",
    );
    batch::check(
        close(&stats.logp, &want.fwd.tokens.logp),
        "logp equals the reference",
    );
    batch::check(close(&grad, &want.dlogits), "dlogits equal the reference");
    batch::check(
        stats_b == stats && grad_b == grad,
        "the caller's buffers give the same numbers bit for bit",
    );
    Ok(())
}
