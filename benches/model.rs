//! Model benches at the default config: a training step (forward + backward + AdamW) on
//! B·T = 16·64 tokens, and KV-cache sampling of 128 sequences × 24 new tokens.
//! Throughput is tokens/s (`Throughput::Elements`). Before the criterion groups, it prints the
//! FLOPs per token, the achieved GFLOP/s and a per-op profile of the training step.

use std::hint::black_box;
use std::time::{Duration, Instant};

use aem::model::{cross_entropy, AdamW, AdamWConfig, Gpt, GptConfig, Op, SampleParams};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use half::f16;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

const B: usize = 16;
const T: usize = 64;
const SAMPLE_B: usize = 128;
const PROMPT: usize = 8;
const NEW: usize = 24;

/// Forward FLOPs per token at sequence length `t` (a multiply-add counts 2): the matmuls
/// (12·C² per layer: qkv 3C², proj C², fc 4C², fcproj 4C²), the tied logits (C·V), and causal
/// attention (q·k and p·v over (t+1)/2 keys on average, 2·C each).
fn forward_flops_per_token(cfg: &GptConfig, t: usize) -> f64 {
    let (c, l, v) = (cfg.d_model as f64, cfg.layers as f64, cfg.vocab as f64);
    let matmul = 2.0 * 12.0 * c * c * l + 2.0 * c * v;
    let attention = 2.0 * 2.0 * c * (t as f64 + 1.0) / 2.0 * l;
    matmul + attention
}

fn batch(cfg: &GptConfig) -> (Vec<u32>, Vec<u32>) {
    let v = cfg.vocab;
    let x: Vec<u32> = (0..B * T).map(|i| ((i * 7 + i / T) % v) as u32).collect();
    let y: Vec<u32> = (0..B * T)
        .map(|i| ((i * 7 + 7 + i / T) % v) as u32)
        .collect();
    (x, y)
}

fn train_step(m: &mut Gpt<f16>, opt: &mut AdamW, x: &[u32], y: &[u32]) -> f32 {
    let v = m.config().vocab;
    let logits = m.forward(x, B, T).unwrap_or(&[]).to_vec();
    let (loss, d) = cross_entropy(&logits, y, v).unwrap_or((f32::NAN, vec![0.0; B * T * v]));
    m.zero_grad();
    m.backward(&d).ok();
    opt.step(m).ok();
    loss
}

/// One-off report: FLOPs, GFLOP/s and where the step's time goes.
fn report(cfg: &GptConfig) {
    let mut m = Gpt::<f16>::new(*cfg, 1).expect("config");
    let mut opt = AdamW::new(AdamWConfig::default(), &m).expect("adamw");
    let (x, y) = batch(cfg);
    for _ in 0..3 {
        train_step(&mut m, &mut opt, &x, &y);
    }
    *m.profile_mut() = Default::default();
    // AEM_BENCH_STEPS: more steps for a steadier median (scripts/bench_vs_jax.sh uses 60).
    let steps = std::env::var("AEM_BENCH_STEPS")
        .ok()
        .and_then(|s| s.parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or(20);
    let (mut t_ce, mut t_opt) = (Duration::ZERO, Duration::ZERO);
    let mut per = Vec::with_capacity(steps);
    let t0 = Instant::now();
    for _ in 0..steps {
        let ts = Instant::now();
        let logits = m.forward(&x, B, T).expect("forward").to_vec();
        let tc = Instant::now();
        let (_, d) = cross_entropy(&logits, &y, cfg.vocab).expect("ce");
        t_ce += tc.elapsed();
        m.zero_grad();
        m.backward(&d).expect("backward");
        let to = Instant::now();
        opt.step(&mut m).expect("step");
        t_opt += to.elapsed();
        per.push(ts.elapsed().as_secs_f64());
    }
    per.sort_by(f64::total_cmp);
    let median = per[steps / 2];
    let wall = t0.elapsed().as_secs_f64();
    let fwd = forward_flops_per_token(cfg, T);
    let train = 3.0 * fwd; // backward = 2× forward (d input and d weight per matmul)
    let per_step = wall / steps as f64;
    eprintln!("params: {}", m.num_params());
    eprintln!("FLOPs/token: forward {fwd:.0}, training step {train:.0}");
    eprintln!(
        "step: {:.2} ms for {} tokens → {:.0} tokens/s, {:.2} GFLOP/s",
        per_step * 1e3,
        B * T,
        (B * T) as f64 / per_step,
        train * (B * T) as f64 / per_step / 1e9
    );
    eprintln!(
        "train_step median {:.2} ms over {steps} steps (B·T = {B}·{T}, warm)",
        median * 1e3
    );
    let ms = |d: Duration| d.as_secs_f64() * 1e3 / steps as f64;
    let share = |d: Duration| 100.0 * d.as_secs_f64() / wall;
    let prof = m.profile();
    eprintln!(
        "{:<10} {:>8} {:>8} {:>7}",
        "op", "fwd ms", "bwd ms", "share"
    );
    for op in Op::ALL {
        let [f, b] = prof.time[op as usize];
        if !(f.is_zero() && b.is_zero()) {
            eprintln!(
                "{:<10} {:>8.2} {:>8.2} {:>6.1}%",
                format!("{op:?}"),
                ms(f),
                ms(b),
                share(f + b)
            );
        }
    }
    eprintln!(
        "{:<10} {:>8.2} {:>8} {:>6.1}%",
        "xentropy",
        ms(t_ce),
        "",
        share(t_ce)
    );
    eprintln!(
        "{:<10} {:>8.2} {:>8} {:>6.1}%",
        "AdamW",
        ms(t_opt),
        "",
        share(t_opt)
    );
    let rest = Duration::from_secs_f64(wall).saturating_sub(prof.total() + t_ce + t_opt);
    eprintln!(
        "{:<10} {:>8.2} {:>8} {:>6.1}% (copies, zero_grad)",
        "other",
        ms(rest),
        "",
        share(rest)
    );
}

fn bench_model(c: &mut Criterion) {
    let cfg = GptConfig::default();
    report(&cfg);

    let mut g = c.benchmark_group("train_step");
    g.throughput(Throughput::Elements((B * T) as u64));
    g.sample_size(10).measurement_time(Duration::from_secs(5));
    let mut m = Gpt::<f16>::new(cfg, 1).expect("config");
    let mut opt = AdamW::new(AdamWConfig::default(), &m).expect("adamw");
    let (x, y) = batch(&cfg);
    g.bench_function("f16", |bch| {
        bch.iter(|| black_box(train_step(&mut m, &mut opt, &x, &y)))
    });
    g.finish();

    let mut g = c.benchmark_group("sample");
    g.throughput(Throughput::Elements((SAMPLE_B * NEW) as u64));
    g.sample_size(10).measurement_time(Duration::from_secs(5));
    let prompts: Vec<u32> = (0..SAMPLE_B * PROMPT)
        .map(|i| (i % cfg.vocab) as u32)
        .collect();
    let params = SampleParams {
        max_new: NEW,
        temperature: 1.0,
    };
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    g.bench_function("f16", |bch| {
        bch.iter(|| {
            black_box(
                m.sample(&prompts, SAMPLE_B, PROMPT, &params, &mut rng, None)
                    .ok(),
            )
        })
    });
    g.finish();
}

criterion_group!(benches, bench_model);
criterion_main!(benches);
