//! Loss-head throughput. Groups by stem: `loss_head_fwd/<executor>`, `loss_head_bwd/<executor>`,
//! `loss_head_fused/<executor>`, and `device_copy/cuda` (the measured bandwidth the kernels are
//! held to).
//!
//! CPU reference: T = 4096, V = 32000 by default (`AEM_BENCH_T`, `AEM_BENCH_V` override).
//! GPU (skipped, with a printed reason, when no CUDA device is present; the emulator is never
//! timed): T = 16384, V ∈ {32000, 151936}, f16 and bf16 logits (the gradient in the logits'
//! dtype; `AEM_BENCH_GPU_T` overrides T); inputs are uploaded once and each iteration launches
//! and synchronises.
//! Bytes counted: forward reads T·V·2 (16-bit logits) and writes 3·T·4 (logp, entropy, lse);
//! backward reads T·V·2 and writes T·V·2 (16-bit dlogits); the fused forward+backward reads
//! T·V·2 once when the row fits in shared memory (twice when it does not) and writes T·V·2.

use aem::cpu;
use aem::device::Device;
use aem::head::file::{HeadData, LogitsVec};
use aem::head::launch::DeviceLogit;
use aem::head::{self, HeadConfig};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use half::f16;
use std::hint::black_box;
use std::time::Instant;

/// GB/s of `f` moving `bytes` per call (each call ends in a synchronisation): 3 warm-up calls,
/// then the median of 15. For the percentage-of-device-copy lines, which criterion does not
/// print; criterion's own figures are the primary measurement.
fn gbps(bytes: u64, mut f: impl FnMut()) -> f64 {
    for _ in 0..3 {
        f();
    }
    let mut ts: Vec<f64> = (0..15)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed().as_secs_f64()
        })
        .collect();
    ts.sort_by(f64::total_cmp);
    bytes as f64 / ts[ts.len() / 2] / 1e9
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// T rows in responses of 16 rows, groups of 8 responses; logits distinct per row and column.
fn batch(t: usize, v: usize) -> HeadData {
    let logits = (0..t * v)
        .map(|i| {
            let (r, c) = ((i / v) as f32, (i % v) as f32);
            f16::from_f32(3.0 * (c * 0.731 + r * 0.37).sin() + 0.5 * (c * 0.013).cos())
        })
        .collect();
    let targets = (0..t).map(|i| ((i * 7919) % v) as u32).collect();
    let r = t / 16;
    HeadData {
        logits: LogitsVec::F16(logits),
        vocab: v,
        targets,
        resp_start: (0..r).map(|i| (16 * i) as u32).collect(),
        resp_len: vec![16; r],
        resp_group: (0..r).map(|i| (i / 8) as u32).collect(),
        n_groups: r.div_ceil(8),
        adv_base: (0..r)
            .map(|i| if i % 3 == 0 { 1.0 } else { -0.5 })
            .collect(),
        old_logp: None,
        ref_logp: None,
    }
}

fn bench_cpu(c: &mut Criterion) {
    let t = env_usize("AEM_BENCH_T", 4096);
    let v = env_usize("AEM_BENCH_V", 32000);
    let b = batch(t, v);
    let inp = b.inputs();
    let cfg = HeadConfig::default();
    let layout = head::validate(&inp, &cfg).expect("valid bench batch");
    let tv = (t * v) as u64;

    let mut g = c.benchmark_group("loss_head_fwd");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(2 * tv + 12 * t as u64));
    g.bench_function(format!("cpu_ref_f64/T{t}xV{v}"), |bch| {
        bch.iter(|| black_box(cpu::forward::<f64>(&inp, &cfg, &layout)))
    });
    g.bench_function(format!("cpu_ref_f32/T{t}xV{v}"), |bch| {
        bch.iter(|| black_box(cpu::forward::<f32>(&inp, &cfg, &layout)))
    });
    let b16 = HeadData {
        logits: b.logits.to_bf16(),
        ..b.clone()
    };
    let inp16 = b16.inputs();
    g.bench_function(format!("cpu_ref_f32_bf16/T{t}xV{v}"), |bch| {
        bch.iter(|| black_box(cpu::forward::<f32>(&inp16, &cfg, &layout)))
    });
    g.finish();

    let fwd = cpu::forward::<f64>(&inp, &cfg, &layout);
    let loss = cpu::policy_loss(&inp, &cfg, &layout, &fwd.tokens, &fwd.aem.adv);
    let mut out = vec![0f32; t * v];
    let mut g = c.benchmark_group("loss_head_bwd");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(6 * tv));
    g.bench_function(format!("cpu_ref_f64/T{t}xV{v}"), |bch| {
        bch.iter(|| {
            cpu::policy_grad(&inp, &cfg, &fwd.tokens, &loss, &mut out);
            black_box(&out);
        })
    });
    g.finish();
}

fn bench_gpu(c: &mut Criterion) {
    let dev = match Device::cuda(0) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("GPU benches SKIPPED: {e}");
            return;
        }
    };
    eprintln!("GPU benches on {}", dev.name());
    let t = env_usize("AEM_BENCH_GPU_T", 16384);
    for v in [32000usize, 151936] {
        let b = batch(t, v);
        let shape = format!("T{t}xV{v}");
        let LogitsVec::F16(x16) = &b.logits else {
            unreachable!("batch() writes f16 logits")
        };

        // Device bandwidth: a device-to-device copy of the logits (reads and writes T·V·2).
        let tv = (t * v) as u64;
        let src = dev.htod(x16).expect("upload");
        let mut dst = dev.zeros::<f16>(t * v).expect("alloc");
        let mut g = c.benchmark_group("device_copy");
        g.sample_size(20);
        g.throughput(Throughput::Bytes(4 * tv));
        let mut copy = || {
            dev.copy(&src, &mut dst).expect("copy");
            dev.synchronize().expect("sync");
        };
        g.bench_function(format!("cuda/{shape}"), |bch| bch.iter(&mut copy));
        g.finish();
        let copy_gbps = gbps(4 * tv, copy);
        eprintln!("device_copy/cuda/{shape}: {copy_gbps:.0} GB/s (the 100% below)");
        drop((src, dst));

        bench_gpu_head(c, &dev, &b, x16, &format!("f16/{shape}"), copy_gbps);
        let LogitsVec::Bf16(x) = b.logits.to_bf16() else {
            unreachable!("to_bf16 gives bf16")
        };
        bench_gpu_head(c, &dev, &b, &x, &format!("bf16/{shape}"), copy_gbps);
    }
}

/// Every forward and backward plan on logits of element type `X`, the gradient in `X`; each
/// also printed as a percentage of the device-copy bandwidth `copy_gbps` measured in this run.
fn bench_gpu_head<X: DeviceLogit>(
    c: &mut Criterion,
    dev: &Device,
    b: &HeadData,
    x: &[X],
    label: &str,
    copy_gbps: f64,
) {
    let report = |name: &str, bytes: u64, f: &mut dyn FnMut()| {
        let r = gbps(bytes, f);
        eprintln!(
            "{name}: {r:.0} GB/s = {:.1}% of device copy",
            100.0 * r / copy_gbps
        );
    };
    use aem::head::launch::{BackwardPlan, DeviceHead, ForwardPlan, Plan};
    let (t, v) = (b.targets.len() as u64, b.vocab as u64);
    let inp = b.inputs();
    let cfg = HeadConfig::default();
    let logits = dev.htod(x).expect("upload");
    let mut grad = dev.zeros::<X>(x.len()).expect("alloc");
    let mut h = DeviceHead::new(dev, &inp, &cfg, logits.len()).expect("upload");
    let mut g = c.benchmark_group("loss_head_fwd");
    g.sample_size(20);
    for fwd in ForwardPlan::ALL {
        let name = fwd.name();
        g.throughput(Throughput::Bytes(fwd.bytes(t, v)));
        for block in [256u32, 1024] {
            let plan = Plan {
                forward: fwd,
                block,
                ..Plan::default()
            };
            let mut run = || {
                h.forward(dev, &logits, &plan).expect("forward");
                dev.synchronize().expect("sync");
            };
            let id = format!("cuda_{name}_b{block}/{label}");
            g.bench_function(&id, |bch| bch.iter(&mut run));
            report(&id, fwd.bytes(t, v), &mut run);
        }
    }
    g.finish();
    h.forward(dev, &logits, &Plan::default()).expect("forward");
    let mut g = c.benchmark_group("loss_head_bwd");
    g.sample_size(20);
    for bwd in BackwardPlan::ALL {
        // Bytes per plan: the uncached fused kernel reads the row twice (6·T·V for 16-bit).
        g.throughput(Throughput::Bytes(bwd.bytes(t, v, 2)));
        for block in [256u32, 1024] {
            let plan = Plan {
                backward: bwd,
                block,
                ..Plan::default()
            };
            let mut run = || {
                h.backward(dev, &logits, X::grad_dst((&mut grad).into()), &plan)
                    .expect("backward");
                dev.synchronize().expect("sync");
            };
            let id = format!("cuda_{}_b{block}/{label}", bwd.name());
            g.bench_function(&id, |bch| bch.iter(&mut run));
            report(&id, bwd.bytes(t, v, 2), &mut run);
        }
    }
    g.finish();
}

criterion_group!(benches, bench_cpu, bench_gpu);
criterion_main!(benches);
