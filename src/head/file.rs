//! `aem head`: the loss head over a safetensors file, for checking the crate against a
//! trainer's own dumps.
//!
//! Input tensors: `logits` F16 or BF16 (T, V); `targets` (T); `resp_start`, `resp_len`, `resp_group` (R)
//! as U32, I32 or I64; `adv_base` F32 (R); optional `old_logp` F32 (T) (absent: on-policy) and
//! `ref_logp` F32 (T) (required when the KL coefficient is positive).
//! Output tensors: `logp`, `entropy`, `lse`, `token_loss` F32 (T); `resp_surprisal`,
//! `resp_mean_entropy`, `alpha`, `adv` F32 (R); `loss` F32 (); `dlogits` (T, V) F16, BF16 or
//! F32 (`--grad-dtype`).

pub use super::result::{GradDtype, GradOut, HeadResult, HeadStats, UpdateStats};
use super::{HeadConfig, HeadInputs, Logits};
use crate::cpu;
use crate::error::{Error, Result};
use crate::io::{write_tensors, Half, OutTensor, Tensor, TensorFile};
use half::{bf16, f16};
use std::collections::HashMap;
use std::path::Path;

pub use crate::device::Backend;

/// logits (T, V), owned, in the dtype the file holds.
#[derive(Debug, Clone, PartialEq)]
pub enum LogitsVec {
    F16(Vec<f16>),
    Bf16(Vec<bf16>),
}

impl LogitsVec {
    pub fn as_logits(&self) -> Logits<'_> {
        match self {
            LogitsVec::F16(x) => Logits::F16(x),
            LogitsVec::Bf16(x) => Logits::Bf16(x),
        }
    }

    /// The same values rounded to bf16 (exact from bf16; one rounding from f16).
    pub fn to_bf16(&self) -> LogitsVec {
        match self {
            LogitsVec::F16(x) => {
                LogitsVec::Bf16(x.iter().map(|v| bf16::from_f32(v.to_f32())).collect())
            }
            LogitsVec::Bf16(x) => LogitsVec::Bf16(x.clone()),
        }
    }
}

/// The tensors of one head computation, owned (what a file holds).
#[derive(Debug, Clone, PartialEq)]
pub struct HeadData {
    /// logits: (T, V) f16 or bf16
    pub logits: LogitsVec,
    pub vocab: usize,
    /// targets: (T) u32
    pub targets: Vec<u32>,
    /// resp_start, resp_len, resp_group: (R) u32
    pub resp_start: Vec<u32>,
    pub resp_len: Vec<u32>,
    pub resp_group: Vec<u32>,
    pub n_groups: usize,
    /// adv_base: (R) f32
    pub adv_base: Vec<f32>,
    /// old_logp, ref_logp: (T) f32
    pub old_logp: Option<Vec<f32>>,
    pub ref_logp: Option<Vec<f32>>,
}

impl HeadData {
    /// `T=… V=… R=… G=… logits f16`: the shape, for messages.
    pub fn describe(&self) -> String {
        format!(
            "T={} V={} R={} G={} logits {}",
            self.targets.len(),
            self.vocab,
            self.resp_start.len(),
            self.n_groups,
            self.logits.as_logits().dtype().name()
        )
    }

    pub fn inputs(&self) -> HeadInputs<'_> {
        HeadInputs {
            logits: self.logits.as_logits(),
            vocab: self.vocab,
            targets: &self.targets,
            resp_start: &self.resp_start,
            resp_len: &self.resp_len,
            resp_group: &self.resp_group,
            n_groups: self.n_groups,
            adv_base: &self.adv_base,
            old_logp: self.old_logp.as_deref(),
            ref_logp: self.ref_logp.as_deref(),
        }
    }
}

fn expect_rank<T>(file: &TensorFile, name: &str, t: &Tensor<T>, rank: usize) -> Result<()> {
    if t.shape.len() == rank {
        Ok(())
    } else {
        Err(Error::File {
            path: file.path().to_path_buf(),
            reason: format!(
                "tensor {name:?}: expected rank {rank}, got shape {:?}",
                t.shape
            ),
        })
    }
}

/// Reads the input tensors. `n_groups`: G, or `None` for `max(resp_group) + 1`.
pub fn read_inputs(path: &Path, n_groups: Option<usize>) -> Result<HeadData> {
    let f = TensorFile::open(path)?;
    let (logits, vocab) = match f.half("logits")? {
        Half::F16(t) => {
            expect_rank(&f, "logits", &t, 2)?;
            (LogitsVec::F16(t.data), t.shape[1])
        }
        Half::Bf16(t) => {
            expect_rank(&f, "logits", &t, 2)?;
            (LogitsVec::Bf16(t.data), t.shape[1])
        }
    };
    let targets = f.index_u32("targets")?;
    let resp_start = f.index_u32("resp_start")?;
    let resp_len = f.index_u32("resp_len")?;
    let resp_group = f.index_u32("resp_group")?;
    let adv_base = f.f32("adv_base")?;
    for (name, t) in [
        ("targets", &targets),
        ("resp_start", &resp_start),
        ("resp_len", &resp_len),
        ("resp_group", &resp_group),
    ] {
        expect_rank(&f, name, t, 1)?;
    }
    expect_rank(&f, "adv_base", &adv_base, 1)?;
    let old_logp = f.f32_opt("old_logp")?;
    let ref_logp = f.f32_opt("ref_logp")?;
    for (name, t) in [("old_logp", &old_logp), ("ref_logp", &ref_logp)] {
        if let Some(t) = t {
            expect_rank(&f, name, t, 1)?;
        }
    }
    let n_groups = n_groups.unwrap_or_else(|| {
        resp_group
            .data
            .iter()
            .map(|&g| g as usize + 1)
            .max()
            .unwrap_or(0)
    });
    Ok(HeadData {
        logits,
        vocab,
        targets: targets.data,
        resp_start: resp_start.data,
        resp_len: resp_len.data,
        resp_group: resp_group.data,
        n_groups,
        adv_base: adv_base.data,
        old_logp: old_logp.map(|t| t.data),
        ref_logp: ref_logp.map(|t| t.data),
    })
}

fn to_f32(xs: &[f64]) -> Vec<f32> {
    xs.iter().map(|&x| x as f32).collect()
}

/// Computes the head on the chosen backend.
pub fn compute(
    data: &HeadData,
    cfg: &HeadConfig,
    dtype: GradDtype,
    backend: Backend,
) -> Result<HeadResult> {
    let inp = data.inputs();
    let plan = super::launch::Plan::default();
    match backend.open()?.device {
        Some(dev) => super::launch::loss_head(&dev, &inp, cfg, dtype, &plan),
        None => reference(&inp, cfg, dtype),
    }
}

/// The f64 reference on host inputs, in the shape the kernels return it: statistics rounded
/// once to f32, the gradient once to `dtype`, checked for finiteness as the kernels' are.
pub fn reference(inp: &HeadInputs, cfg: &HeadConfig, dtype: GradDtype) -> Result<HeadResult> {
    macro_rules! run {
        ($t:ty, $variant:ident) => {{
            let o = cpu::loss_head::<f64, $t>(inp, cfg)?;
            let bad = first_bad_row(o.dlogits.iter().map(|x| x.is_finite()), inp.vocab);
            (o.fwd, o.loss, GradOut::$variant(o.dlogits), bad)
        }};
    }
    let (fwd, loss, dlogits, grad_bad) = match dtype {
        GradDtype::F16 => run!(f16, F16),
        GradDtype::Bf16 => run!(bf16, Bf16),
        GradDtype::F32 => run!(f32, F32),
    };
    let res = HeadResult {
        stats: HeadStats {
            rows: UpdateStats {
                logp: to_f32(&fwd.tokens.logp),
                entropy: to_f32(&fwd.tokens.entropy),
                lse: to_f32(&fwd.tokens.lse),
                token_loss: to_f32(&loss.token_loss),
                loss: loss.loss as f32,
                grad_bad,
                grad_dtype: dtype,
            },
            resp_surprisal: to_f32(&fwd.resp.surprisal),
            resp_mean_entropy: to_f32(&fwd.resp.mean_entropy),
            alpha: to_f32(&fwd.aem.alpha),
            adv: to_f32(&fwd.aem.adv),
        },
        dlogits,
    };
    res.check(inp, cfg)?;
    Ok(res)
}

/// Count of non-finite entries and the first row holding one, as the kernels report them.
fn first_bad_row(finite: impl Iterator<Item = bool>, vocab: usize) -> Option<(u64, usize)> {
    let mut first = None;
    let mut count = 0u64;
    for (i, ok) in finite.enumerate() {
        if !ok {
            count += 1;
            first.get_or_insert(i / vocab.max(1));
        }
    }
    first.map(|row| (count, row))
}

/// Writes the results atomically, with the configuration in the file's metadata.
pub fn write_result(path: &Path, res: &HeadResult, vocab: usize, cfg: &HeadConfig) -> Result<()> {
    let t = res.logp.len();
    let r = res.alpha.len();
    let grad = match &res.dlogits {
        GradOut::F16(g) => OutTensor::F16(g.clone(), vec![t, vocab]),
        GradOut::Bf16(g) => OutTensor::Bf16(g.clone(), vec![t, vocab]),
        GradOut::F32(g) => OutTensor::F32(g.clone(), vec![t, vocab]),
    };
    let vt = |x: &Vec<f32>, n| OutTensor::F32(x.clone(), vec![n]);
    let tensors = [
        ("logp", vt(&res.logp, t)),
        ("entropy", vt(&res.entropy, t)),
        ("lse", vt(&res.lse, t)),
        ("token_loss", vt(&res.token_loss, t)),
        ("resp_surprisal", vt(&res.resp_surprisal, r)),
        ("resp_mean_entropy", vt(&res.resp_mean_entropy, r)),
        ("alpha", vt(&res.alpha, r)),
        ("adv", vt(&res.adv, r)),
        ("loss", OutTensor::F32(vec![res.loss], vec![])),
        ("dlogits", grad),
    ];
    let mut meta = HashMap::new();
    meta.insert("aem.config".to_string(), format!("{cfg:?}"));
    write_tensors(path, &tensors, Some(meta))
}

/// A synthetic batch for trying the head: `responses` responses of 1..=`max_len` rows, each
/// preceded by a 2-row prompt, in groups of `group_size`; logits distinct per row and column,
/// rows of varied sharpness (so mean entropies differ within a group); `old_logp` and
/// `ref_logp` near the computed log-probs. Deterministic in `seed`.
pub fn demo_batch(
    seed: u64,
    responses: usize,
    group_size: usize,
    max_len: usize,
    vocab: usize,
) -> Result<HeadData> {
    if vocab == 0 || group_size == 0 || max_len == 0 {
        return Err(Error::config(
            "demo",
            0.0,
            "vocab, group size and max length must be >= 1",
        ));
    }
    // A small xorshift keeps this free of an RNG dependency in the library.
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 11) as f64 / (1u64 << 53) as f64
    };
    let (mut resp_start, mut resp_len, mut resp_group) = (vec![], vec![], vec![]);
    let mut t = 0usize;
    for r in 0..responses {
        t += 2;
        let len = 1 + (next() * max_len as f64) as usize % max_len;
        resp_start.push(crate::error::to_u32("resp_start", t)?);
        resp_len.push(crate::error::to_u32("resp_len", len)?);
        resp_group.push(crate::error::to_u32("resp_group", r / group_size)?);
        t += len;
    }
    let mut logits = Vec::with_capacity(t * vocab);
    for row in 0..t {
        let sharp = 0.2 + 2.0 * next();
        for c in 0..vocab {
            let x =
                sharp * (3.0 * (c as f64 * 0.731 + row as f64 * 0.37).sin()) + 0.3 * (next() - 0.5);
            logits.push(f16::from_f64(x));
        }
    }
    let targets: Vec<u32> = (0..t)
        .map(|_| ((next() * vocab as f64) as usize).min(vocab - 1) as u32)
        .collect();
    let adv_base = (0..responses)
        .map(|_| (2.0 * next() - 1.0) as f32)
        .collect();
    let logp = cpu::token_stats_of::<f64, f16>(&logits, vocab, &targets, 1.0).logp;
    let old_logp = logp
        .iter()
        .map(|l| (l + 0.6 * (next() - 0.5)) as f32)
        .collect();
    let ref_logp = logp
        .iter()
        .map(|l| (l + 0.4 * (next() - 0.5)) as f32)
        .collect();
    Ok(HeadData {
        logits: LogitsVec::F16(logits),
        vocab,
        targets,
        resp_start,
        resp_len,
        resp_group,
        n_groups: responses.div_ceil(group_size),
        adv_base,
        old_logp: Some(old_logp),
        ref_logp: Some(ref_logp),
    })
}

/// Writes a batch as `aem head` input (integers as U32).
pub fn write_inputs(path: &Path, d: &HeadData) -> Result<()> {
    let t = d.targets.len();
    let r = d.resp_start.len();
    let u = |x: &Vec<u32>, n| OutTensor::U32(x.clone(), vec![n]);
    let logits = match &d.logits {
        LogitsVec::F16(x) => OutTensor::F16(x.clone(), vec![t, d.vocab]),
        LogitsVec::Bf16(x) => OutTensor::Bf16(x.clone(), vec![t, d.vocab]),
    };
    let mut tensors = vec![
        ("logits", logits),
        ("targets", u(&d.targets, t)),
        ("resp_start", u(&d.resp_start, r)),
        ("resp_len", u(&d.resp_len, r)),
        ("resp_group", u(&d.resp_group, r)),
        ("adv_base", OutTensor::F32(d.adv_base.clone(), vec![r])),
    ];
    if let Some(o) = &d.old_logp {
        tensors.push(("old_logp", OutTensor::F32(o.clone(), vec![t])));
    }
    if let Some(o) = &d.ref_logp {
        tensors.push(("ref_logp", OutTensor::F32(o.clone(), vec![t])));
    }
    write_tensors(path, &tensors, None)
}
