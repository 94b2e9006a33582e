//! The minibatch both learners consume: turns packed as right-padded sequences with the owned
//! rows, their targets, validity masks and sampling log-probs, and per-response advantages;
//! and the masked f16 logits the CPU learner feeds the loss head.

use half::f16;

use super::rollout::Rollouts;
use super::TrainError;
use crate::env::vocab::PAD;

/// The masked-logit value: the most negative finite f16.
pub const MASKED_LOGIT: f32 = -65504.0;

pub(super) fn too_big() -> TrainError {
    TrainError::Config("batch too large for 32-bit indices".into())
}

/// A packed minibatch: sequences (prompt ++ response minus its last token), right-padded.
#[derive(Debug, Clone, PartialEq)]
pub struct Packed {
    pub b: usize,
    pub t: usize,
    /// tokens: (B, T) u32
    pub tokens: Vec<u32>,
    /// The (B·T) position of each owned row, in row order (responses contiguous).
    pub rows: Vec<usize>,
    /// targets, masks, old_logp: (N_tok)
    pub targets: Vec<u32>,
    pub masks: Vec<u64>,
    pub old_logp: Vec<f32>,
    /// resp_start, resp_len, resp_group: (R_mb), indices into the N_tok owned rows;
    /// adv: (R_mb) α·A_base.
    pub resp_start: Vec<u32>,
    pub resp_len: Vec<u32>,
    pub resp_group: Vec<u32>,
    pub adv: Vec<f64>,
}

/// Packs the turns `idx` of `ro` with per-turn advantages `adv` (R = all turns).
pub fn pack(ro: &Rollouts, idx: &[usize], adv: &[f64]) -> Result<Packed, TrainError> {
    let b = idx.len();
    let t = idx
        .iter()
        .map(|&i| ro.turns[i].prompt.len() + ro.turns[i].response.len() - 1)
        .max()
        .unwrap_or(1)
        .max(1);
    let mut p = Packed {
        b,
        t,
        tokens: vec![PAD; b * t],
        rows: Vec::new(),
        targets: Vec::new(),
        masks: Vec::new(),
        old_logp: Vec::new(),
        resp_start: Vec::with_capacity(b),
        resp_len: Vec::with_capacity(b),
        resp_group: Vec::with_capacity(b),
        adv: Vec::with_capacity(b),
    };
    for (bi, &i) in idx.iter().enumerate() {
        let turn = &ro.turns[i];
        let (pl, rl) = (turn.prompt.len(), turn.response.len());
        let row = &mut p.tokens[bi * t..(bi + 1) * t];
        row[..pl].copy_from_slice(&turn.prompt);
        row[pl..pl + rl - 1].copy_from_slice(&turn.response[..rl - 1]);
        p.resp_start
            .push(u32::try_from(p.targets.len()).map_err(|_| too_big())?);
        p.resp_len.push(u32::try_from(rl).map_err(|_| too_big())?);
        p.resp_group
            .push(u32::try_from(ro.trajs[turn.traj].group).map_err(|_| too_big())?);
        p.adv.push(adv[i]);
        for k in 0..rl {
            // Position pl − 1 + k predicts response token k.
            p.rows.push(bi * t + pl - 1 + k);
            p.targets.push(turn.response[k]);
            p.masks.push(turn.masks[k]);
            p.old_logp.push(turn.logp[k]);
        }
    }
    Ok(p)
}

/// Writes the logits of the owned rows as f16 with invalid tokens at [`MASKED_LOGIT`]:
/// logits (B·T, V) f32 → out (N_tok, V) f16.
pub fn masked_rows(
    logits: &[f32],
    vocab: usize,
    rows: &[usize],
    masks: &[u64],
    out: &mut Vec<f16>,
) {
    out.clear();
    out.reserve(rows.len() * vocab);
    for (&r, &m) in rows.iter().zip(masks) {
        for (v, &x) in logits[r * vocab..(r + 1) * vocab].iter().enumerate() {
            let ok = v < 64 && m & (1u64 << v) != 0;
            let x = if ok {
                x.clamp(-65504.0, 65504.0)
            } else {
                MASKED_LOGIT
            };
            out.push(f16::from_f32(x));
        }
    }
}
