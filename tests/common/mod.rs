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
