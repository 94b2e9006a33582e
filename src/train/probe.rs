//! The proxy-validity probe (`aem probe`): does AEM's α track what it stands for?
//!
//! AEM's theory ranks a response by how surprising it is *at its state*: the relative surprisal
//! `r = S − H_resp(s)`, with `S = Σ −logp` of the response and `H_resp(s)` the expected
//! surprisal of a response from state `s`. α − 1 should be positive where `r` is negative (the
//! paper: corr(α − 1, −r) = 0.63). The probe measures it for a checkpoint's policy on held-out
//! tasks: each task is run as a training group (its `rollouts` episodes); at every state a
//! response was taken from, `alts` further responses are sampled from the same state and
//! `H_resp(s)` is their mean surprisal (an unbiased Monte-Carlo estimate that excludes the
//! response itself); α is computed as training would for the group the response belongs to,
//! for every proxy variant (statistic × group scope, the paper's map).

use half::f16;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use super::config::{AemMap, AemProxy, AemScope, TrainConfig};
use super::rollout::{self, Rollouts};
use super::sampler::{device_err, Sampler};
use super::update::{alpha_variant, proxy_groups, proxy_values, response_stats};
use super::TrainError;
use crate::device::Device;
use crate::env::PromptConfig;
use crate::model::DeviceGpt;

/// What the probe samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ProbeConfig {
    /// Held-out tasks (each one group).
    pub tasks: usize,
    /// Episodes per task (the group's rollouts, as in training).
    pub rollouts: usize,
    /// Alternative responses per state (K) for `H_resp(s)`.
    pub alts: usize,
    /// Seed of the sampling.
    pub seed: u64,
}

impl Default for ProbeConfig {
    fn default() -> Self {
        Self {
            tasks: 32,
            rollouts: 8,
            alts: 16,
            seed: 0,
        }
    }
}

/// One proxy variant's agreement with the relative surprisal.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProbeRow {
    pub proxy: AemProxy,
    pub scope: AemScope,
    /// Pearson corr(α − 1, −r) over all responses (NaN-free: 0 when either side is constant).
    pub corr: f64,
    /// Fraction of responses with sign(α − 1) = sign(−r), among those with α ≠ 1 and r ≠ 0.
    pub sign_agree: f64,
    /// Responses counted by `sign_agree`.
    pub signed: usize,
    /// Fraction of responses whose group kept α = 1 (the guard).
    pub guarded: f64,
}

/// The probe's result for one checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProbeReport {
    pub config: ProbeConfig,
    /// Responses (turns) probed.
    pub responses: usize,
    /// Fraction of response tokens with ≥ 2 valid choices.
    pub free_token_frac: f64,
    /// Mean and standard deviation of r over responses.
    pub r_mean: f64,
    pub r_std: f64,
    /// Success of the probed episodes (sampled).
    pub success: f64,
    pub rows: Vec<ProbeRow>,
}

/// Pearson correlation; 0 when either series is constant.
pub fn pearson(x: &[f64], y: &[f64]) -> f64 {
    let n = x.len().min(y.len());
    if n < 2 {
        return 0.0;
    }
    let mx = x[..n].iter().sum::<f64>() / n as f64;
    let my = y[..n].iter().sum::<f64>() / n as f64;
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (a, b) in x[..n].iter().zip(&y[..n]) {
        sxy += (a - mx) * (b - my);
        sxx += (a - mx) * (a - mx);
        syy += (b - my) * (b - my);
    }
    if sxx <= 0.0 || syy <= 0.0 {
        0.0
    } else {
        sxy / (sxx * syy).sqrt()
    }
}

/// Every proxy statistic against every group scope, for rollouts `ro` whose relative surprisal
/// is `r` (R), at the run's λ and δ.
pub fn probe_rows(
    ro: &Rollouts,
    r: &[f64],
    lambda: f32,
    delta: f32,
) -> Result<Vec<ProbeRow>, TrainError> {
    let (mean_entropy, _) = response_stats(ro)?;
    let neg_r: Vec<f64> = r.iter().map(|v| -v).collect();
    let mut rows = Vec::new();
    for proxy in [
        AemProxy::Mean,
        AemProxy::FreeMean,
        AemProxy::Sum,
        AemProxy::FreeFraction,
    ] {
        let values = proxy_values(ro, proxy, &mean_entropy);
        for scope in [AemScope::Task, AemScope::Turn, AemScope::Anchor] {
            let (groups, n_groups) = proxy_groups(ro, scope)?;
            let (alpha, _) = alpha_variant(
                ro,
                &groups,
                n_groups,
                &values,
                AemMap::Paper,
                lambda,
                delta,
                0,
            )?;
            let am1: Vec<f64> = alpha.iter().map(|a| a - 1.0).collect();
            let (mut agree, mut signed) = (0usize, 0usize);
            for (a, nr) in am1.iter().zip(&neg_r) {
                if *a != 0.0 && *nr != 0.0 {
                    signed += 1;
                    if (*a > 0.0) == (*nr > 0.0) {
                        agree += 1;
                    }
                }
            }
            let guarded = am1.iter().filter(|a| **a == 0.0).count();
            rows.push(ProbeRow {
                proxy,
                scope,
                corr: pearson(&am1, &neg_r),
                sign_agree: if signed > 0 {
                    agree as f64 / signed as f64
                } else {
                    0.0
                },
                signed,
                guarded: guarded as f64 / am1.len().max(1) as f64,
            });
        }
    }
    Ok(rows)
}

/// Probes the checkpoint `ckpt` of the run configured by `cfg` (its level's held-out split, its
/// temperature, λ and δ) on the CPU model or on `dev`.
pub fn probe_checkpoint(
    cfg: &TrainConfig,
    ckpt: &std::path::Path,
    pc: ProbeConfig,
    dev: Option<&Device>,
    mut progress: impl FnMut(usize, usize),
) -> Result<ProbeReport, TrainError> {
    cfg.validate()?;
    if pc.tasks == 0 || pc.rollouts == 0 || pc.alts == 0 {
        return Err(TrainError::Config(format!(
            "probe: --tasks {}, --rollouts {}, --alts {}: each must be >= 1",
            pc.tasks, pc.rollouts, pc.alts
        )));
    }
    crate::mem::product(&[pc.tasks, pc.rollouts, pc.alts + 1])
        .filter(|&n| n <= super::config::MAX_ROLLOUTS as u128)
        .ok_or_else(|| {
            TrainError::Config(format!(
                "probe: --tasks {} × --rollouts {} × (--alts {} + 1) rows per turn exceed {}",
                pc.tasks,
                pc.rollouts,
                pc.alts,
                super::config::MAX_ROLLOUTS
            ))
        })?;
    let ck = crate::model::load_checkpoint::<f16>(ckpt)?;
    let on_device = dev
        .map(|d| DeviceGpt::from_cpu(d, &ck.model))
        .transpose()
        .map_err(device_err)?;
    let model: &dyn Sampler = match &on_device {
        Some(m) => m,
        None => &ck.model,
    };
    let level = cfg.env.level.level()?;
    if level.vocab().len() != ck.model.config().vocab {
        return Err(TrainError::Config(format!(
            "level {} has {} tokens but the checkpoint's model has vocab {}",
            cfg.env.level,
            level.vocab().len(),
            ck.model.config().vocab
        )));
    }
    let tasks = crate::env::test_tasks(&level, pc.tasks)?;
    let prompt = PromptConfig {
        history: cfg.env.history,
        mask: cfg.env.mask,
    };
    let mut rng = ChaCha8Rng::seed_from_u64(super::derive_seed(pc.seed, "probe", 0));
    let (ro, alts) = rollout::collect_with_alternatives(
        model,
        &tasks,
        pc.rollouts,
        prompt,
        cfg.rollout.temperature,
        pc.alts,
        &mut rng,
        |live, total| progress(total - live, total),
    )?;
    let (_, surprisal) = response_stats(&ro)?;
    let r: Vec<f64> = surprisal
        .iter()
        .zip(&alts)
        .map(|(s, a)| s - a.iter().sum::<f64>() / a.len().max(1) as f64)
        .collect();
    let n = r.len().max(1) as f64;
    let r_mean = r.iter().sum::<f64>() / n;
    let r_std = (r.iter().map(|v| (v - r_mean).powi(2)).sum::<f64>() / n).sqrt();
    let (mut tok, mut free) = (0usize, 0usize);
    for t in &ro.turns {
        tok += t.masks.len();
        free += t.masks.iter().filter(|m| m.count_ones() >= 2).count();
    }
    Ok(ProbeReport {
        config: pc,
        responses: ro.turns.len(),
        free_token_frac: free as f64 / tok.max(1) as f64,
        r_mean,
        r_std,
        success: ro.success(),
        rows: probe_rows(&ro, &r, cfg.algo.lambda, cfg.algo.delta)?,
    })
}

/// The report as an aligned text table.
pub fn table(rep: &ProbeReport) -> String {
    let mut s = format!(
        "{} responses ({} tasks × {} episodes, K = {} alternatives per state), free tokens {:.1}%, r = S − H_resp: mean {:+.3}, sd {:.3}; episodes solved {:.3}\n",
        rep.responses,
        rep.config.tasks,
        rep.config.rollouts,
        rep.config.alts,
        100.0 * rep.free_token_frac,
        rep.r_mean,
        rep.r_std,
        rep.success
    );
    s.push_str(&format!(
        "{:<14} {:<7} {:>16} {:>11} {:>8}\n",
        "proxy", "group", "corr(α−1, −r)", "sign agree", "guarded"
    ));
    for row in &rep.rows {
        s.push_str(&format!(
            "{:<14} {:<7} {:>16.3} {:>11.3} {:>8.3}\n",
            name(&row.proxy),
            name(&row.scope),
            row.corr,
            row.sign_agree,
            row.guarded
        ));
    }
    s
}

/// A variant's config spelling (`free-mean`, `anchor`, ...).
fn name<T: clap::ValueEnum>(v: &T) -> String {
    v.to_possible_value()
        .map_or_else(String::new, |p| p.get_name().to_string())
}
