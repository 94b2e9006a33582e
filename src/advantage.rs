//! Base advantages (AEM.md §4): GRPO, Dr.GRPO, RLOO and GiGPO. Cheap O(R) host functions.
//!
//! Trajectory `i` belongs to task group `traj_group[i]` and has outcome reward `reward[i]`.
//! Each trajectory is counted once in its group's statistics (our decision: counting every turn,
//! as verl-agent does, over-weights long failures). A group whose rewards are all equal gets zero
//! advantages, never NaN.

use crate::error::{Error, Result};
use std::collections::HashMap;

/// The outcome-level estimators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// `(R_i − mean) / (std + 1e-6)`, std with Bessel's correction (as `torch.std`).
    Grpo,
    /// `R_i − mean`.
    DrGrpo,
    /// `R_i − mean_{j≠i} R_j`.
    Rloo,
}

fn check_traj(traj_group: &[u32], reward: &[f64], n_groups: usize) -> Result<()> {
    if traj_group.len() != reward.len() {
        return Err(Error::shape(
            "reward",
            format!("({}) like traj_group", traj_group.len()),
            format!("({})", reward.len()),
        ));
    }
    if let Some(i) = traj_group.iter().position(|&g| g as usize >= n_groups) {
        return Err(Error::range(
            "traj_group",
            i,
            traj_group[i],
            format!("must be < G = {n_groups}"),
        ));
    }
    if let Some(i) = reward.iter().position(|x| !x.is_finite()) {
        return Err(Error::NonFinite {
            arg: "reward",
            index: i,
            col: None,
            value: reward[i],
        });
    }
    Ok(())
}

/// Members of each group, in index order.
fn group_lists(traj_group: &[u32], n_groups: usize) -> Vec<Vec<usize>> {
    let mut lists = vec![Vec::new(); n_groups];
    for (i, &g) in traj_group.iter().enumerate() {
        lists[g as usize].push(i);
    }
    lists
}

fn all_equal(xs: impl Iterator<Item = f64> + Clone) -> bool {
    let mut it = xs.clone();
    match it.next() {
        None => true,
        Some(first) => xs.into_iter().all(|x| x == first),
    }
}

/// Outcome advantages per trajectory.
/// traj_group: (N) u32 `< n_groups`; reward: (N) f64 → (N) f64.
pub fn outcome(
    kind: Outcome,
    traj_group: &[u32],
    reward: &[f64],
    n_groups: usize,
) -> Result<Vec<f64>> {
    check_traj(traj_group, reward, n_groups)?;
    let mut adv = vec![0.0; reward.len()];
    for members in group_lists(traj_group, n_groups) {
        let rs = members.iter().map(|&i| reward[i]);
        if all_equal(rs.clone()) {
            continue; // no signal: zeros
        }
        let n = members.len() as f64;
        let sum: f64 = rs.clone().sum();
        let mean = sum / n;
        match kind {
            Outcome::DrGrpo => {
                for &i in &members {
                    adv[i] = reward[i] - mean;
                }
            }
            Outcome::Grpo => {
                // n ≥ 2 here (a singleton group is all-equal).
                let var = rs.map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
                let std = var.sqrt();
                for &i in &members {
                    adv[i] = (reward[i] - mean) / (std + 1e-6);
                }
            }
            Outcome::Rloo => {
                for &i in &members {
                    adv[i] = reward[i] - (sum - reward[i]) / (n - 1.0);
                }
            }
        }
    }
    Ok(adv)
}

/// One step (turn) of a trajectory, for GiGPO.
#[derive(Debug, Clone, Copy)]
pub struct Step<'a> {
    /// Index of the trajectory this step belongs to.
    pub traj: usize,
    /// Immediate reward `r_k` of this step.
    pub reward: f64,
    /// The canonical observation the step acted on (anchor key within the task group).
    pub obs: &'a [u8],
}

/// GiGPO's knobs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GigpoConfig {
    /// Weight `ω` of the step-level advantage.
    pub omega: f64,
    /// Discount `γ` of step returns.
    pub gamma: f64,
    /// Divide `A_S` by the anchor group's std (+1e-6).
    pub step_std: bool,
    /// The episode-level estimator (`DrGrpo` by default, or `Grpo`).
    pub episode: Outcome,
}

impl Default for GigpoConfig {
    fn default() -> Self {
        GigpoConfig {
            omega: 1.0,
            gamma: 0.95,
            step_std: false,
            episode: Outcome::DrGrpo,
        }
    }
}

/// GiGPO advantages per step: `A = A_E + ω A_S`.
///
/// traj_group: (N) u32; traj_return: (N) f64 episode returns; steps: (S), the steps of each
/// trajectory in time order (trajectories may interleave). Returns (S) f64.
/// `A_S` = discounted step return minus its mean over the anchor group (same task group,
/// byte-identical observation); a singleton anchor group gives `A_S = 0`.
pub fn gigpo(
    traj_group: &[u32],
    traj_return: &[f64],
    steps: &[Step],
    n_groups: usize,
    cfg: &GigpoConfig,
) -> Result<Vec<f64>> {
    if !(cfg.gamma.is_finite() && (0.0..=1.0).contains(&cfg.gamma)) {
        return Err(Error::config("gamma", cfg.gamma, "must be in [0, 1]"));
    }
    if !cfg.omega.is_finite() {
        return Err(Error::config("omega", cfg.omega, "must be finite"));
    }
    let a_e = outcome(cfg.episode, traj_group, traj_return, n_groups)?;
    let n = traj_group.len();
    for (k, s) in steps.iter().enumerate() {
        if s.traj >= n {
            return Err(Error::range(
                "steps.traj",
                k,
                s.traj,
                format!("must be < N = {n}"),
            ));
        }
        if !s.reward.is_finite() {
            return Err(Error::NonFinite {
                arg: "steps.reward",
                index: k,
                col: None,
                value: s.reward,
            });
        }
    }
    // Discounted returns, walking each trajectory's steps backwards.
    let mut ret = vec![0.0; steps.len()];
    let mut tail = vec![0.0; n];
    for k in (0..steps.len()).rev() {
        let i = steps[k].traj;
        tail[i] = steps[k].reward + cfg.gamma * tail[i];
        ret[k] = tail[i];
    }
    // Anchor groups keyed by (task group, observation bytes); members in step order.
    let mut anchors: HashMap<(u32, &[u8]), Vec<usize>> = HashMap::new();
    for (k, s) in steps.iter().enumerate() {
        anchors
            .entry((traj_group[s.traj], s.obs))
            .or_default()
            .push(k);
    }
    let mut a_s = vec![0.0; steps.len()];
    for members in anchors.values() {
        if members.len() < 2 || all_equal(members.iter().map(|&k| ret[k])) {
            continue;
        }
        let m = members.len() as f64;
        let mean = members.iter().map(|&k| ret[k]).sum::<f64>() / m;
        let std = if cfg.step_std {
            (members
                .iter()
                .map(|&k| (ret[k] - mean).powi(2))
                .sum::<f64>()
                / (m - 1.0))
                .sqrt()
        } else {
            1.0
        };
        for &k in members {
            let centred = ret[k] - mean;
            a_s[k] = if cfg.step_std {
                centred / (std + 1e-6)
            } else {
                centred
            };
        }
    }
    Ok(steps
        .iter()
        .enumerate()
        .map(|(k, s)| a_e[s.traj] + cfg.omega * a_s[k])
        .collect())
}

/// Spreads per-trajectory advantages to its turns: step_traj: (S) trajectory of each turn.
pub fn per_turn(traj_adv: &[f64], step_traj: &[usize]) -> Result<Vec<f64>> {
    step_traj
        .iter()
        .enumerate()
        .map(|(k, &i)| {
            traj_adv.get(i).copied().ok_or_else(|| {
                Error::range(
                    "step_traj",
                    k,
                    i,
                    format!("must be < N = {}", traj_adv.len()),
                )
            })
        })
        .collect()
}
