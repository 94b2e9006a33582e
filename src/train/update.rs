//! One policy update from a batch of rollouts: base advantages, AEM's α (from the sampling-time
//! entropies, fixed for the whole update), then epochs × minibatches of PPO steps of a
//! [`Learner`]: the loss head's CPU reference on the CPU path, the fused loss-head kernels on
//! the device path (which take `α·A_base` with λ = 0: see [`super::policy`]).
//!
//! The loss head rejects non-finite logits, so the validity mask is applied to the logits fed
//! to it by setting invalid entries to the most negative finite f16, −65504: `exp` underflows to
//! exactly 0 there, so log-prob, entropy and gradient equal those of the masked distribution the
//! tokens were sampled from, and invalid entries get a zero gradient (`tests/train_mask.rs`).
//! The device path applies the same mask to its resident f16 logits (`mask_logits_v1`).

use half::f16;
use std::collections::HashMap;

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::batch::too_big;
pub use super::batch::{masked_rows, pack, Packed, MASKED_LOGIT};
use super::config::{AemMap, AemOnly, AemProxy, AemScope, TrainConfig};
use super::policy::Learner;
use super::rollout::Rollouts;
use super::TrainError;
use crate::advantage::{self, GigpoConfig, Step};
use crate::cpu;
use crate::head::{self, HeadConfig, HeadInputs, Logits};

/// Base advantage of every turn (R = turns), in turn order.
pub fn base_advantages(ro: &Rollouts, cfg: &TrainConfig) -> Result<Vec<f64>, TrainError> {
    let traj_group: Vec<u32> = ro
        .trajs
        .iter()
        .map(|t| u32::try_from(t.group))
        .collect::<Result<_, _>>()
        .map_err(|_| TrainError::Config("too many groups".into()))?;
    let returns: Vec<f64> = ro.trajs.iter().map(|t| f64::from(t.reward)).collect();
    match cfg.algo.advantage.outcome() {
        Some(kind) => {
            let traj_adv = advantage::outcome(kind, &traj_group, &returns, ro.n_groups)?;
            let step_traj: Vec<usize> = ro.turns.iter().map(|t| t.traj).collect();
            Ok(advantage::per_turn(&traj_adv, &step_traj)?)
        }
        None => {
            // Steps must be in time order within each trajectory; turns are collected turn by
            // turn, so collection order is time order for every episode.
            let steps: Vec<Step> = ro
                .turns
                .iter()
                .map(|t| Step {
                    traj: t.traj,
                    reward: f64::from(t.reward),
                    obs: &t.obs,
                })
                .collect();
            let gcfg = GigpoConfig {
                omega: cfg.algo.gigpo_omega,
                gamma: cfg.algo.gigpo_gamma,
                step_std: cfg.algo.gigpo_step_std,
                episode: cfg.algo.gigpo_episode.outcome(),
            };
            Ok(advantage::gigpo(
                &traj_group,
                &returns,
                &steps,
                ro.n_groups,
                &gcfg,
            )?)
        }
    }
}

/// AEM's weights per turn and their diagnostics.
#[derive(Debug, Clone, PartialEq)]
pub struct AlphaStats {
    /// alpha: (R) — 1 everywhere when AEM is off.
    pub alpha: Vec<f64>,
    /// mean_entropy: (R) — each response's mean token entropy at sampling time.
    pub mean_entropy: Vec<f64>,
    /// surprisal: (R) — each response's `Σ −logp` at sampling time.
    pub surprisal: Vec<f64>,
    /// Groups that kept α = 1 (one response, or a range of the ranked statistic below δ).
    pub guarded_groups: usize,
    /// Groups of the ranking scope (`algo.aem_scope`; the tasks for the paper's).
    pub n_groups: usize,
}

/// Each turn's group under `scope`: (resp_group (R) u32, number of groups). Ids are given in
/// order of first appearance, so the grouping is deterministic.
pub fn proxy_groups(ro: &Rollouts, scope: AemScope) -> Result<(Vec<u32>, usize), TrainError> {
    if scope == AemScope::Task {
        let g = ro
            .turns
            .iter()
            .map(|t| u32::try_from(ro.trajs[t.traj].group).map_err(|_| too_big()))
            .collect::<Result<_, _>>()?;
        return Ok((g, ro.n_groups));
    }
    let mut ids: HashMap<(usize, Vec<u8>), u32> = HashMap::new();
    let mut out = Vec::with_capacity(ro.turns.len());
    let mut turn_index = vec![0usize; ro.turns.len()];
    for tr in &ro.trajs {
        for (n, &i) in tr.turns.iter().enumerate() {
            turn_index[i] = n;
        }
    }
    for (i, t) in ro.turns.iter().enumerate() {
        let group = ro.trajs[t.traj].group;
        let key = match scope {
            AemScope::Turn => (group, turn_index[i].to_le_bytes().to_vec()),
            _ => (group, t.obs.clone()),
        };
        let next = u32::try_from(ids.len()).map_err(|_| too_big())?;
        out.push(*ids.entry(key).or_insert(next));
    }
    Ok((out, ids.len()))
}

/// Each turn's value of the statistic `proxy` ranks: (R) f64. `mean` is [`cpu::resp_stats`]'s
/// mean entropy (the loss head's definition); a token is free when its mask allows ≥ 2 tokens.
pub fn proxy_values(ro: &Rollouts, proxy: AemProxy, mean_entropy: &[f64]) -> Vec<f64> {
    ro.turns
        .iter()
        .zip(mean_entropy)
        .map(|(t, &mean)| {
            let free = || {
                t.entropy
                    .iter()
                    .zip(&t.masks)
                    .filter(|(_, m)| m.count_ones() >= 2)
            };
            match proxy {
                AemProxy::Mean => mean,
                AemProxy::Sum => t.entropy.iter().map(|&h| f64::from(h)).sum(),
                AemProxy::FreeMean => {
                    let n = free().count();
                    if n == 0 {
                        0.0
                    } else {
                        free().map(|(&h, _)| f64::from(h)).sum::<f64>() / n as f64
                    }
                }
                AemProxy::FreeFraction => free().count() as f64 / t.entropy.len().max(1) as f64,
            }
        })
        .collect()
}

/// α of every turn for one proxy variant through the reference [`cpu::aem_alpha`]: `values`
/// (R) ranked within `groups` (R, ids < `n_groups`), the map applied (`reversed` negates the
/// statistic; `shuffled` permutes the paper's α within each group with `shuffle_seed`).
/// Returns (alpha (R), guarded groups).
#[allow(clippy::too_many_arguments)]
pub fn alpha_variant(
    ro: &Rollouts,
    groups: &[u32],
    n_groups: usize,
    values: &[f64],
    map: AemMap,
    lambda: f32,
    delta: f32,
    shuffle_seed: u64,
) -> Result<(Vec<f64>, usize), TrainError> {
    let r = ro.turns.len();
    let mut resp_start = Vec::with_capacity(r);
    let mut resp_len = Vec::with_capacity(r);
    let mut n_tok = 0usize;
    for t in &ro.turns {
        resp_start.push(u32::try_from(n_tok).map_err(|_| too_big())?);
        resp_len.push(u32::try_from(t.response.len()).map_err(|_| too_big())?);
        n_tok += t.response.len();
    }
    // α needs only the layout: a V = 1 stand-in for the logits.
    let logits = vec![f16::ZERO; n_tok];
    let targets = vec![0u32; n_tok];
    let adv_base = vec![0.0f32; r];
    let inp = HeadInputs {
        logits: Logits::F16(&logits),
        vocab: 1,
        targets: &targets,
        resp_start: &resp_start,
        resp_len: &resp_len,
        resp_group: groups,
        n_groups,
        adv_base: &adv_base,
        old_logp: None,
        ref_logp: None,
    };
    let hcfg = HeadConfig {
        lambda,
        delta,
        ..HeadConfig::default()
    };
    let layout = head::validate_layout(&inp, &hcfg)?;
    let ranked: Vec<f64> = match map {
        AemMap::Reversed => values.iter().map(|v| -v).collect(),
        _ => values.to_vec(),
    };
    let mut a = cpu::aem_alpha(&inp, &hcfg, &layout, &ranked);
    if map == AemMap::Shuffled {
        let mut rng = ChaCha8Rng::seed_from_u64(shuffle_seed);
        for g in 0..n_groups {
            let members = &layout.grp_members
                [layout.grp_offsets[g] as usize..layout.grp_offsets[g + 1] as usize];
            let mut vals: Vec<f64> = members.iter().map(|&i| a.alpha[i as usize]).collect();
            vals.shuffle(&mut rng);
            for (&i, v) in members.iter().zip(vals) {
                a.alpha[i as usize] = v;
            }
        }
    }
    Ok((a.alpha, a.guarded_groups))
}

/// Each turn's mean token entropy ([`cpu::resp_stats`]) and surprisal `Σ −logp` at sampling
/// time: ((R) f64, (R) f64).
pub fn response_stats(ro: &Rollouts) -> Result<(Vec<f64>, Vec<f64>), TrainError> {
    let r = ro.turns.len();
    let mut resp_start = Vec::with_capacity(r);
    let mut resp_len = Vec::with_capacity(r);
    let mut entropy = Vec::new();
    let mut surprisal = Vec::with_capacity(r);
    for t in &ro.turns {
        resp_start.push(u32::try_from(entropy.len()).map_err(|_| too_big())?);
        resp_len.push(u32::try_from(t.response.len()).map_err(|_| too_big())?);
        entropy.extend(t.entropy.iter().map(|&h| f64::from(h)));
        surprisal.push(t.logp.iter().map(|&l| -f64::from(l)).sum());
    }
    let n_tok = entropy.len();
    let logits = vec![f16::ZERO; n_tok];
    let targets = vec![0u32; n_tok];
    let adv_base = vec![0.0f32; r];
    let groups = vec![0u32; r];
    let inp = HeadInputs {
        logits: Logits::F16(&logits),
        vocab: 1,
        targets: &targets,
        resp_start: &resp_start,
        resp_len: &resp_len,
        resp_group: &groups,
        n_groups: 1,
        adv_base: &adv_base,
        old_logp: None,
        ref_logp: None,
    };
    let ts = cpu::TokenStats::from_entropy(entropy);
    Ok((cpu::resp_stats(&inp, &ts).mean_entropy, surprisal))
}

/// Computes α (AEM.md §3) once per iteration `k` from the sampling-time entropies, through the
/// reference [`cpu::aem_alpha`], for the run's variant (`algo.aem_*`; the paper's: the mean
/// entropy ranked within each task). With `aem = false`, α ≡ 1.
pub fn alpha_of(ro: &Rollouts, cfg: &TrainConfig, k: u64) -> Result<AlphaStats, TrainError> {
    let (mean_entropy, surprisal) = response_stats(ro)?;
    let (groups, n_groups) = proxy_groups(ro, cfg.algo.aem_scope)?;
    let values = proxy_values(ro, cfg.algo.aem_proxy, &mean_entropy);
    let lambda = if cfg.algo.aem { cfg.algo.lambda } else { 0.0 };
    let (alpha, guarded_groups) = alpha_variant(
        ro,
        &groups,
        n_groups,
        &values,
        cfg.algo.aem_map,
        lambda,
        cfg.algo.delta,
        super::derive_seed(cfg.run.seed, "aem-shuffle", k),
    )?;
    let alpha = if cfg.algo.aem {
        alpha
    } else {
        vec![1.0; ro.turns.len()]
    };
    Ok(AlphaStats {
        alpha,
        mean_entropy,
        surprisal,
        guarded_groups,
        n_groups,
    })
}

/// The turns a PPO step trains on under `only` (the mechanism check), in turn order.
pub fn trained_turns(only: AemOnly, base: &[f64], alpha: &[f64]) -> Vec<usize> {
    base.iter()
        .zip(alpha)
        .enumerate()
        .filter(|(_, (b, a))| match only {
            AemOnly::All => true,
            AemOnly::Pos => *b * (*a - 1.0) > 0.0,
            AemOnly::Neg => *b * (*a - 1.0) < 0.0,
        })
        .map(|(i, _)| i)
        .collect()
}

/// What one update measured.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct UpdateStats {
    /// Mean over optimizer steps of the head's loss `Σ w_t ℓ_t`.
    pub loss: f64,
    /// Fraction of owned rows where PPO's clip (or dual clip) was active.
    pub clip_frac: f64,
    /// `mean(old_logp − logp)` over owned rows (all epochs).
    pub approx_kl: f64,
    /// Mean global gradient norm before clipping.
    pub grad_norm: f64,
    /// Optimizer steps taken.
    pub opt_steps: usize,
    /// Token positions run through forward + backward.
    pub positions: usize,
}

/// The loss head configuration of this run.
pub fn head_config(cfg: &TrainConfig) -> HeadConfig {
    HeadConfig {
        temperature: cfg.rollout.temperature,
        lambda: cfg.algo.lambda,
        delta: cfg.algo.delta,
        clip_low: cfg.algo.clip_low,
        clip_high: cfg.algo.clip_high,
        dual_clip: cfg.algo.dual_clip,
        entropy_coef: cfg.algo.entropy_coef,
        kl_coef: 0.0,
        agg: cfg.algo.agg,
        n_tok: None,
        n_resp: None,
        norm_const: cfg.algo.norm_const,
        grad_scale: 1.0,
    }
}

/// Runs `epochs × minibatches` optimizer steps of `learner` (either model path) over the
/// rollouts' turns `turns` (indices, in turn order; all of them but under `algo.aem_only`) with
/// per-turn advantages `adv` (R, already multiplied by α) at learning rate `lr`.
#[allow(clippy::too_many_arguments)]
pub fn ppo_update(
    learner: &mut dyn Learner,
    ro: &Rollouts,
    turns: &[usize],
    adv: &[f64],
    hcfg: &HeadConfig,
    epochs: usize,
    minibatches: usize,
    lr: f32,
    rng: &mut ChaCha8Rng,
) -> Result<UpdateStats, TrainError> {
    let mut st = UpdateStats::default();
    let (mut rows_seen, mut clipped, mut kl_sum) = (0usize, 0usize, 0.0f64);
    let mut order: Vec<usize> = turns.to_vec();
    learner.set_lr(lr)?;
    for _ in 0..epochs {
        if minibatches > 1 {
            order.shuffle(rng);
        }
        let per = order.len().div_ceil(minibatches.max(1)).max(1);
        for chunk in order.chunks(per) {
            let p = pack(ro, chunk, adv)?;
            let out = learner.ppo_step(&p, hcfg, ro.n_groups)?;
            if !out.loss.is_finite() || !out.grad_norm.is_finite() {
                return Err(TrainError::NonFinite(format!(
                    "loss {} grad norm {}",
                    out.loss, out.grad_norm
                )));
            }
            st.loss += out.loss;
            st.grad_norm += f64::from(out.grad_norm);
            st.opt_steps += 1;
            st.positions += p.b * p.t;
            rows_seen += p.rows.len();
            clipped += out.clipped_rows;
            kl_sum += p
                .old_logp
                .iter()
                .zip(&out.logp)
                .map(|(&o, &l)| f64::from(o) - l)
                .sum::<f64>();
        }
    }
    if st.opt_steps > 0 {
        st.loss /= st.opt_steps as f64;
        st.grad_norm /= st.opt_steps as f64;
    }
    if rows_seen > 0 {
        st.clip_frac = clipped as f64 / rows_seen as f64;
        st.approx_kl = kl_sum / rows_seen as f64;
    }
    Ok(st)
}
