//! Seeded, asymmetric head problems shared by the test files.
#![allow(dead_code)]

use aem::cpu;
use aem::head::file::HeadData;
use half::f16;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// What to generate.
#[derive(Debug, Clone, Copy)]
pub struct Spec {
    pub vocab: usize,
    pub responses: usize,
    pub groups: usize,
    /// Longest response (lengths are drawn from 1..=max_len).
    pub max_len: usize,
    /// Logit scale; rows also get a random per-row sharpness so entropies differ.
    pub scale: f32,
    pub old_logp: bool,
    pub ref_logp: bool,
}

impl Default for Spec {
    fn default() -> Self {
        Spec {
            vocab: 31,
            responses: 9,
            groups: 3,
            max_len: 5,
            scale: 3.0,
            old_logp: true,
            ref_logp: true,
        }
    }
}

/// A packed batch: responses separated by 0–2 unowned rows (prompt/observation), groups
/// assigned round-robin then shuffled, logits distinct per row and column.
pub fn problem(seed: u64, s: Spec) -> HeadData {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut resp_start = Vec::new();
    let mut resp_len = Vec::new();
    let mut t = 0usize;
    for _ in 0..s.responses {
        t += rng.random_range(0..3);
        let l = rng.random_range(1..=s.max_len);
        resp_start.push(t as u32);
        resp_len.push(l as u32);
        t += l;
    }
    t += rng.random_range(0..2);
    let mut resp_group: Vec<u32> = (0..s.responses)
        .map(|i| (i % s.groups.max(1)) as u32)
        .collect();
    for i in (1..resp_group.len()).rev() {
        let j = rng.random_range(0..=i);
        resp_group.swap(i, j);
    }
    let v = s.vocab;
    let mut logits = Vec::with_capacity(t * v);
    for row in 0..t {
        let sharp: f32 = rng.random_range(0.2..1.5);
        let phase = row as f32 * 0.37;
        for col in 0..v {
            let x = s.scale
                * sharp
                * ((col as f32 * 0.731 + phase).sin() + 0.3 * (col as f32 * 0.017).cos())
                + rng.random_range(-0.5..0.5);
            logits.push(f16::from_f32(x));
        }
    }
    let targets: Vec<u32> = (0..t).map(|_| rng.random_range(0..v as u32)).collect();
    let adv_base: Vec<f32> = (0..s.responses)
        .map(|_| rng.random_range(-1.5..1.5))
        .collect();
    let logp = cpu::token_stats_of::<f64, f16>(&logits, v, &targets, 1.0).logp;
    let old_logp = s.old_logp.then(|| {
        logp.iter()
            .map(|&l| (l + rng.random_range(-1.2..1.2)) as f32)
            .collect()
    });
    let ref_logp = s.ref_logp.then(|| {
        logp.iter()
            .map(|&l| (l + rng.random_range(-1.0..1.0)) as f32)
            .collect()
    });
    HeadData {
        logits,
        vocab: v,
        targets,
        resp_start,
        resp_len,
        resp_group,
        n_groups: s.groups,
        adv_base,
        old_logp,
        ref_logp,
    }
}

/// Max |a − b| over two equally long sequences.
pub fn max_abs_diff(a: impl IntoIterator<Item = f64>, b: impl IntoIterator<Item = f64>) -> f64 {
    a.into_iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

use aem::device::Device;
use aem::head::file::{GradDtype, GradOut, HeadResult};
use aem::head::launch::{self, Plan};
use aem::head::HeadConfig;

/// The tolerance rule of ARCHITECTURE.md: a device result may be at most twice as far from the
/// f64 reference as a plain f32 implementation (the CPU reference run with f32 accumulation,
/// same output dtype), plus `atol`. `atol` = 16 f32 ulps of the quantity's scale: the kernels
/// accumulate in a different order (tree reductions, base-2 exponentials) than the sequential
/// plain path, so their error may differ from it by a few roundings of values of that size,
/// even where the plain path happens to be exact. `floor` is the scale of the intermediate
/// values a result is computed from (e.g. `max|z|` for `logp = z_y − LSE`, which cancels), so
/// that an exactly-zero reference (V = 1) still allows roundings of its inputs.
pub fn within(name: &str, dev: &[f64], r64: &[f64], r32: &[f64], floor: f64, ctx: &str) -> f64 {
    assert_eq!(dev.len(), r64.len(), "{name}: length ({ctx})");
    let scale = r64.iter().fold(0.0f64, |m, x| m.max(x.abs()));
    let atol = 16.0 * f64::from(f32::EPSILON) * (scale + floor + 1e-30);
    let err32 = max_abs_diff(r32.iter().copied(), r64.iter().copied());
    let errd = max_abs_diff(dev.iter().copied(), r64.iter().copied());
    let bound = 2.0 * err32 + atol;
    assert!(
        errd <= bound,
        "{name} ({ctx}): device error {errd:e} > bound {bound:e} (plain f32 error {err32:e}, scale {scale:e})"
    );
    assert!(
        dev.iter().all(|x| x.is_finite()),
        "{name} ({ctx}): non-finite output"
    );
    errd
}

fn f64s(x: &[f32]) -> Vec<f64> {
    x.iter().map(|&v| f64::from(v)).collect()
}

fn grad_f64(g: &GradOut) -> Vec<f64> {
    match g {
        GradOut::F16(v) => v.iter().map(|x| f64::from(x.to_f32())).collect(),
        GradOut::F32(v) => f64s(v),
    }
}

/// Runs the head on `dev` with `plan` and holds every output to the tolerance rule.
pub fn check_parity(
    dev: &Device,
    d: &HeadData,
    cfg: &HeadConfig,
    dtype: GradDtype,
    plan: &Plan,
) -> HeadResult {
    let inp = d.inputs();
    let ctx = format!(
        "V={} T={} R={} {dtype:?} {plan:?}",
        d.vocab,
        d.targets.len(),
        d.resp_start.len()
    );
    let got =
        launch::loss_head(dev, &inp, cfg, dtype, plan).unwrap_or_else(|e| panic!("{ctx}: {e}"));
    let r64 = cpu::loss_head::<f64, f64>(&inp, cfg).unwrap();
    let r32 = match dtype {
        GradDtype::F16 => {
            let o = cpu::loss_head::<f32, f16>(&inp, cfg).unwrap();
            (
                o.fwd,
                o.loss,
                o.dlogits
                    .iter()
                    .map(|x| f64::from(x.to_f32()))
                    .collect::<Vec<_>>(),
            )
        }
        GradDtype::F32 => {
            let o = cpu::loss_head::<f32, f32>(&inp, cfg).unwrap();
            (o.fwd, o.loss, f64s(&o.dlogits))
        }
    };
    let (f32w, l32, g32) = r32;
    let c = |x: &[f32]| f64s(x);
    // Scales of the intermediates (see `within`).
    let zmax = d
        .logits
        .iter()
        .fold(0.0f64, |m, x| m.max(f64::from(x.to_f32()).abs()))
        / f64::from(cfg.temperature);
    let lmax = d.resp_len.iter().copied().max().unwrap_or(1) as f64;
    let gmax = (0..d.targets.len())
        .map(|t| {
            r64.loss.weight[t]
                * (r64.loss.dlogp[t].abs() + f64::from(cfg.entropy_coef).abs() * zmax)
        })
        .fold(0.0, f64::max)
        * f64::from(cfg.grad_scale)
        / f64::from(cfg.temperature);
    let lossmax = r64
        .loss
        .token_loss
        .iter()
        .fold(0.0f64, |m, x| m.max(x.abs()));
    within(
        "logp",
        &c(&got.logp),
        &r64.fwd.tokens.logp,
        &c(&f32w.tokens.logp),
        zmax,
        &ctx,
    );
    within(
        "entropy",
        &c(&got.entropy),
        &r64.fwd.tokens.entropy,
        &c(&f32w.tokens.entropy),
        zmax,
        &ctx,
    );
    within(
        "lse",
        &c(&got.lse),
        &r64.fwd.tokens.lse,
        &c(&f32w.tokens.lse),
        zmax,
        &ctx,
    );
    within(
        "resp_surprisal",
        &c(&got.resp_surprisal),
        &r64.fwd.resp.surprisal,
        &c(&f32w.resp.surprisal),
        zmax * lmax,
        &ctx,
    );
    within(
        "resp_mean_entropy",
        &c(&got.resp_mean_entropy),
        &r64.fwd.resp.mean_entropy,
        &c(&f32w.resp.mean_entropy),
        zmax,
        &ctx,
    );
    within(
        "alpha",
        &c(&got.alpha),
        &r64.fwd.aem.alpha,
        &c(&f32w.aem.alpha),
        0.0,
        &ctx,
    );
    within(
        "adv",
        &c(&got.adv),
        &r64.fwd.aem.adv,
        &c(&f32w.aem.adv),
        0.0,
        &ctx,
    );
    within(
        "token_loss",
        &c(&got.token_loss),
        &r64.loss.token_loss,
        &c(&l32.token_loss),
        zmax * lossmax,
        &ctx,
    );
    let loss_floor = (0..d.targets.len())
        .map(|t| r64.loss.weight[t] * r64.loss.token_loss[t].abs())
        .sum::<f64>()
        + zmax * lossmax;
    within(
        "loss",
        &[f64::from(got.loss)],
        &[r64.loss.loss],
        &[f64::from(l32.loss)],
        loss_floor,
        &ctx,
    );
    within(
        "dlogits",
        &grad_f64(&got.dlogits),
        &r64.dlogits,
        &g32,
        gmax,
        &ctx,
    );
    got
}

/// The fused backward with the row cache requested, on a two-token batch of vocabulary `v`,
/// against the reference: the launch whose shared-memory decision the limits tests probe.
pub fn check_row_cache_launch(dev: &aem::device::Device, v: usize) {
    use aem::head::launch::{BackwardPlan, ForwardPlan, Plan, TokenStatsKernel};
    let d = problem(
        5,
        Spec {
            vocab: v,
            responses: 2,
            groups: 1,
            max_len: 1,
            ..Spec::default()
        },
    );
    let plan = Plan {
        forward: ForwardPlan::Unfused(TokenStatsKernel::V2),
        backward: BackwardPlan::Fused { row_cache: true },
        block: 256,
        in_place: false,
    };
    check_parity(
        dev,
        &d,
        &aem::head::HeadConfig::default(),
        aem::head::file::GradDtype::F16,
        &plan,
    );
}
