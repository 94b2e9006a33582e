//! The two model paths behind one interface, so that rollouts, the PPO update, the imitation
//! warm-up and evaluation are written once:
//!
//! - [`Sampler`]: KV-cache sampling under a validity mask ([`Gpt::sample`] or
//!   [`DeviceGpt::sample`]; both draw on the host from the step's logits with the same loop, so
//!   the same logits and RNG state give the same tokens).
//! - [`Learner`]: one optimizer step on a packed minibatch. [`CpuLearner`] runs the model's CPU
//!   path with the loss head's CPU reference; [`DeviceLearner`] runs [`DeviceGpt`] on a
//!   [`Device`] (the emulator or a GPU): forward, the validity mask on the resident f16 logits
//!   (`mask_logits_v1`), the fused loss-head kernels, backward and AdamW, all on the device.
//! - [`Policy`]: the trainer's model, one of the two (what `--backend` chose).
//!
//! Checkpoints stay in the CPU format: [`Policy::to_cpu`] downloads a device model and its
//! optimizer state, [`Policy::from_checkpoint`] uploads them, so `--resume` and `aem eval` work
//! across backends.
//!
//! **α on the device.** AEM's α must be the one computed once per iteration from the
//! *sampling-time* entropies and held fixed through the update (AEM.md §3), not recomputed from
//! the current logits. So the trainer computes `A = α·A_base` on the host
//! ([`super::update::alpha_of`]) and runs the head's policy-update plan
//! ([`crate::head::launch::DeviceHead::update`]): `A` is the given advantage, one fused
//! launch computes the statistics, the loss and dlogits, and no α is computed on the device
//! (`tests/train_device.rs` checks it against the host pipeline).

use half::f16;
use rand_chacha::ChaCha8Rng;

use super::batch::Packed;
use super::config::Backend;
use super::TrainError;
use crate::cpu;
use crate::device::Device;
use crate::head::launch::Plan;
use crate::head::{self, HeadConfig, HeadInputs, Logits};
use crate::model::{
    save_checkpoint, AdamW, AdamWConfig, Checkpoint, DeviceGpt, Elem, Gpt, GptConfig,
};

pub use super::sampler::{device_err, Sampler};

/// What one PPO optimizer step measured.
#[derive(Debug, Clone, PartialEq)]
pub struct StepOut {
    /// The head's loss `Σ w_t ℓ_t`.
    pub loss: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f32,
    /// Owned rows where PPO's clip (or dual clip) was active.
    pub clipped_rows: usize,
    /// logp: (N_tok) the current log-prob of each owned row, in the packed row order.
    pub logp: Vec<f64>,
}

/// One optimizer step of either model path.
pub trait Learner {
    /// The model, for sampling.
    fn sampler(&self) -> &dyn Sampler;

    /// The model's config.
    fn gpt_config(&self) -> &GptConfig {
        self.sampler().gpt_config()
    }

    /// Sets the optimizer's learning rate for the following steps.
    fn set_lr(&mut self, lr: f32) -> Result<(), TrainError>;

    /// One PPO step on `p` with per-response advantages `p.adv` (already `α·A_base`): forward,
    /// masked logits, loss head, backward, AdamW.
    fn ppo_step(
        &mut self,
        p: &Packed,
        hcfg: &HeadConfig,
        n_groups: usize,
    ) -> Result<StepOut, TrainError>;

    /// Forward over tokens (B, T); returns the logits (B·T, V) f32 on the host.
    fn forward_logits(
        &mut self,
        tokens: &[u32],
        b: usize,
        t: usize,
    ) -> Result<Vec<f32>, TrainError>;

    /// Backward from dlogits (B·T, V) f32 of the last forward, then one AdamW step; returns the
    /// gradient norm before clipping.
    fn backward_step(&mut self, dlogits: &[f32]) -> Result<f32, TrainError>;
}

/// The CPU path: [`Gpt`] (f16 storage in training; f32 in the tests' exact reference) with the
/// loss head's CPU reference (f64 accumulation).
pub struct CpuLearner<E: Elem> {
    pub model: Gpt<E>,
    pub optim: AdamW,
}

impl<E: Elem> Learner for CpuLearner<E> {
    fn sampler(&self) -> &dyn Sampler {
        &self.model
    }

    fn set_lr(&mut self, lr: f32) -> Result<(), TrainError> {
        self.optim.cfg.lr = lr;
        Ok(())
    }

    fn ppo_step(
        &mut self,
        p: &Packed,
        hcfg: &HeadConfig,
        n_groups: usize,
    ) -> Result<StepOut, TrainError> {
        let vocab = self.model.config().vocab;
        let logits = self.model.forward(&p.tokens, p.b, p.t)?;
        let mut head_logits = Vec::new();
        super::batch::masked_rows(logits, vocab, &p.rows, &p.masks, &mut head_logits);
        let adv_base: Vec<f32> = p.adv.iter().map(|&a| a as f32).collect();
        let inp = HeadInputs {
            logits: Logits::F16(&head_logits),
            vocab,
            targets: &p.targets,
            resp_start: &p.resp_start,
            resp_len: &p.resp_len,
            resp_group: &p.resp_group,
            n_groups,
            adv_base: &adv_base,
            old_logp: Some(&p.old_logp),
            ref_logp: None,
        };
        let layout = head::validate(&inp, hcfg)?;
        let ts = cpu::token_stats::<f64>(&inp, hcfg);
        // α was fixed at sampling time: pass α·A_base directly (f64, not rounded to f32).
        let loss = cpu::policy_loss(&inp, hcfg, &layout, &ts, &p.adv);
        let mut drows = vec![0.0f32; head_logits.len()];
        cpu::policy_grad(&inp, hcfg, &ts, &loss, &mut drows);
        let mut dlogits = vec![0.0f32; p.b * p.t * vocab];
        for (k, &r) in p.rows.iter().enumerate() {
            dlogits[r * vocab..(r + 1) * vocab].copy_from_slice(&drows[k * vocab..(k + 1) * vocab]);
        }
        self.model.zero_grad();
        self.model.backward(&dlogits)?;
        let norm = self.optim.step(&mut self.model)?;
        Ok(StepOut {
            loss: loss.loss,
            grad_norm: norm,
            clipped_rows: loss.clipped_rows,
            logp: ts.logp,
        })
    }

    fn forward_logits(
        &mut self,
        tokens: &[u32],
        b: usize,
        t: usize,
    ) -> Result<Vec<f32>, TrainError> {
        Ok(self.model.forward(tokens, b, t)?.to_vec())
    }

    fn backward_step(&mut self, dlogits: &[f32]) -> Result<f32, TrainError> {
        self.model.zero_grad();
        self.model.backward(dlogits)?;
        Ok(self.optim.step(&mut self.model)?)
    }
}

/// The device path: [`DeviceGpt`] with its optimizer state on the device.
pub struct DeviceLearner<'d> {
    pub model: DeviceGpt<'d>,
}

/// The head's inputs over all B·T rows of a packed minibatch (the device head runs on the whole
/// resident logits buffer; rows no response owns get no loss and a zero gradient), and the
/// packed validity mask of `mask_logits_v1` (all-ones words on unowned rows).
pub struct DeviceBatch {
    /// targets, old_logp: (B·T); 0 on unowned rows.
    pub targets: Vec<u32>,
    pub old_logp: Vec<f32>,
    /// resp_start: (R) the B·T row of each response's first token.
    pub resp_start: Vec<u32>,
    /// adv_base: (R) f32 `α·A_base`.
    pub adv: Vec<f32>,
    /// mask: (B·T, ceil(V/32)) u32.
    pub mask: Vec<u32>,
}

impl DeviceBatch {
    /// Lays `p` out over its B·T rows for a vocabulary of `vocab` tokens.
    pub fn new(p: &Packed, vocab: usize) -> Result<Self, TrainError> {
        let n = p.b * p.t;
        let w = vocab.div_ceil(32);
        let mut out = DeviceBatch {
            targets: vec![0; n],
            old_logp: vec![0.0; n],
            resp_start: Vec::with_capacity(p.resp_start.len()),
            adv: p.adv.iter().map(|&a| a as f32).collect(),
            mask: vec![u32::MAX; n * w],
        };
        for (k, &r) in p.rows.iter().enumerate() {
            out.targets[r] = p.targets[k];
            out.old_logp[r] = p.old_logp[k];
            // Tokens ≥ 64 are never valid (the env masks are u64), as in `masked_rows`.
            let m = p.masks[k];
            for (j, word) in out.mask[r * w..(r + 1) * w].iter_mut().enumerate() {
                *word = match j {
                    0 => m as u32,
                    1 => (m >> 32) as u32,
                    _ => 0,
                };
            }
        }
        for &s in &p.resp_start {
            let row = p.rows.get(s as usize).copied().ok_or_else(|| {
                TrainError::Config(format!("packed response start {s} outside the rows"))
            })?;
            out.resp_start.push(
                u32::try_from(row)
                    .map_err(|_| TrainError::Config("batch too large for 32-bit rows".into()))?,
            );
        }
        Ok(out)
    }
}

impl DeviceLearner<'_> {
    /// Forward, mask, the fused loss-head kernels on the resident logits (dlogits stay on the
    /// device); returns the head's statistics over the B·T rows. Backward and step are separate
    /// so that tests can look at the gradient.
    pub fn loss_head(
        &mut self,
        p: &Packed,
        hcfg: &HeadConfig,
        n_groups: usize,
    ) -> Result<crate::head::launch::UpdateStats, TrainError> {
        let vocab = self.model.config().vocab;
        let db = DeviceBatch::new(p, vocab)?;
        self.model
            .forward_resident(&p.tokens, p.b, p.t)
            .map_err(device_err)?;
        self.model.mask_logits(&db.mask).map_err(device_err)?;
        let inp = HeadInputs {
            logits: Logits::F16(&[]),
            vocab,
            targets: &db.targets,
            resp_start: &db.resp_start,
            resp_len: &p.resp_len,
            resp_group: &p.resp_group,
            n_groups,
            adv_base: &db.adv,
            old_logp: Some(&db.old_logp),
            ref_logp: None,
        };
        self.model
            .loss_head_update(&inp, hcfg, Plan::default().block)
            .map_err(device_err)
    }
}

impl Learner for DeviceLearner<'_> {
    fn sampler(&self) -> &dyn Sampler {
        &self.model
    }

    fn set_lr(&mut self, lr: f32) -> Result<(), TrainError> {
        let c = self
            .model
            .optim_config_mut()
            .ok_or_else(|| TrainError::Config("device model has no optimizer state".into()))?;
        c.lr = lr;
        Ok(())
    }

    fn ppo_step(
        &mut self,
        p: &Packed,
        hcfg: &HeadConfig,
        n_groups: usize,
    ) -> Result<StepOut, TrainError> {
        let stats = self.loss_head(p, hcfg, n_groups)?;
        self.model.zero_grad().map_err(device_err)?;
        self.model.backward_resident().map_err(device_err)?;
        let norm = self.model.step().map_err(device_err)?;
        // The clip indicator per owned row, from the device's logp and entropy through the
        // reference's per-row rule (the kernels do not count it).
        let mut clipped_rows = 0;
        let mut logp = Vec::with_capacity(p.rows.len());
        for (j, (&s, &len)) in p.resp_start.iter().zip(&p.resp_len).enumerate() {
            for k in s as usize..(s + len) as usize {
                let r = p.rows[k];
                let (lp, h) = (
                    f64::from(stats.logp.get(r).copied().unwrap_or(f32::NAN)),
                    f64::from(stats.entropy.get(r).copied().unwrap_or(f32::NAN)),
                );
                // The advantage the kernels used: α·A_base rounded to f32.
                let a = f64::from(p.adv.get(j).map_or(f32::NAN, |&a| a as f32));
                let tl = cpu::token_loss(hcfg, a, lp, h, f64::from(p.old_logp[k]), None);
                clipped_rows += usize::from(tl.clipped);
                logp.push(lp);
            }
        }
        Ok(StepOut {
            loss: f64::from(stats.loss),
            grad_norm: norm,
            clipped_rows,
            logp,
        })
    }

    fn forward_logits(
        &mut self,
        tokens: &[u32],
        b: usize,
        t: usize,
    ) -> Result<Vec<f32>, TrainError> {
        self.model.forward(tokens, b, t).map_err(device_err)
    }

    fn backward_step(&mut self, dlogits: &[f32]) -> Result<f32, TrainError> {
        self.model.zero_grad().map_err(device_err)?;
        self.model.backward(dlogits).map_err(device_err)?;
        self.model.step().map_err(device_err)
    }
}

/// The trainer's model: the CPU path or the device path. (Both variants are a few KB of
/// handles; a trainer holds one and never moves it in a loop, so neither is boxed.)
#[allow(clippy::large_enum_variant)]
pub enum Policy<'d> {
    Cpu(CpuLearner<f16>),
    Device(DeviceLearner<'d>),
}

impl<'d> Policy<'d> {
    /// A model and optimizer from a checkpoint's contents, on `dev` (None = the CPU path).
    pub fn new(model: Gpt<f16>, optim: AdamW, dev: Option<&'d Device>) -> Result<Self, TrainError> {
        match dev {
            None => Ok(Policy::Cpu(CpuLearner { model, optim })),
            Some(dev) => {
                let mut m = DeviceGpt::from_cpu(dev, &model).map_err(device_err)?;
                m.set_optim(&optim).map_err(device_err)?;
                Ok(Policy::Device(DeviceLearner { model: m }))
            }
        }
    }

    /// A fresh model (initialised from `seed`) with a fresh optimizer.
    pub fn fresh(
        cfg: GptConfig,
        seed: u64,
        ocfg: AdamWConfig,
        dev: Option<&'d Device>,
    ) -> Result<Self, TrainError> {
        let model = Gpt::<f16>::new(cfg, seed)?;
        let optim = AdamW::new(ocfg, &model)?;
        Self::new(model, optim, dev)
    }

    /// From a loaded checkpoint (its RNG and step are the caller's).
    pub fn from_checkpoint(
        ck: Checkpoint<f16>,
        dev: Option<&'d Device>,
    ) -> Result<Self, TrainError> {
        Self::new(ck.model, ck.optim, dev)
    }

    /// The model and optimizer state in the CPU format (downloaded from a device).
    pub fn to_cpu(&self) -> Result<(Gpt<f16>, AdamW), TrainError> {
        match self {
            Policy::Cpu(l) => Ok((l.model.clone(), l.optim.clone())),
            Policy::Device(l) => device_to_cpu(&l.model),
        }
    }

    /// Writes the checkpoint (CPU format) atomically.
    pub fn save_checkpoint(
        &self,
        path: &std::path::Path,
        rng: &ChaCha8Rng,
        step: u64,
    ) -> Result<(), TrainError> {
        match self {
            Policy::Cpu(l) => save_checkpoint(path, &l.model, &l.optim, rng, step)?,
            Policy::Device(l) => {
                let (model, optim) = device_to_cpu(&l.model)?;
                save_checkpoint(path, &model, &optim, rng, step)?;
            }
        }
        Ok(())
    }

    /// The first non-finite parameter (or f32 master weight on the CPU path), named by its
    /// tensor and index, or `None` when all are finite. On a device the f16 parameters are
    /// downloaded (the model this trainer runs is small).
    pub fn first_non_finite(&self) -> Result<Option<String>, TrainError> {
        let (layout, params, master) = match self {
            Policy::Cpu(l) => (
                l.model.layout(),
                l.model
                    .params()
                    .iter()
                    .map(|x| x.to_f32())
                    .position(|x| !x.is_finite()),
                l.optim.master.iter().position(|x| !x.is_finite()),
            ),
            Policy::Device(l) => (
                l.model.layout(),
                l.model
                    .params()
                    .map_err(device_err)?
                    .iter()
                    .position(|x| !x.is_finite()),
                None,
            ),
        };
        let name = |i: usize, prefix: &str| {
            layout
                .hf_tensors()
                .into_iter()
                .find(|(_, _, r)| r.contains(&i))
                .map_or(format!("{prefix}parameter {i}"), |(n, _, r)| {
                    format!("{prefix}{n}[{}]", i - r.start)
                })
        };
        Ok(match (params, master) {
            (Some(i), _) => Some(format!("parameter {} is not finite", name(i, ""))),
            (None, Some(i)) => Some(format!("{} is not finite", name(i, "optim.master."))),
            (None, None) => None,
        })
    }

    /// Replaces the optimizer's hyperparameters (keeping its state).
    pub fn set_optim_config(&mut self, cfg: AdamWConfig) -> Result<(), TrainError> {
        match self {
            Policy::Cpu(l) => l.optim.cfg = cfg,
            Policy::Device(l) => {
                let c = l.model.optim_config_mut().ok_or_else(|| {
                    TrainError::Config("device model has no optimizer state".into())
                })?;
                *c = cfg;
            }
        }
        Ok(())
    }

    /// The policy as a [`Learner`].
    pub fn learner(&mut self) -> &mut dyn Learner {
        match self {
            Policy::Cpu(l) => l,
            Policy::Device(l) => l,
        }
    }

    /// The policy as a [`Sampler`].
    pub fn sampler(&self) -> &dyn Sampler {
        match self {
            Policy::Cpu(l) => &l.model,
            Policy::Device(l) => &l.model,
        }
    }
}

fn device_to_cpu(m: &DeviceGpt) -> Result<(Gpt<f16>, AdamW), TrainError> {
    let model = m.to_cpu().map_err(device_err)?;
    let optim = m
        .optim()
        .map_err(device_err)?
        .ok_or_else(|| TrainError::Config("device model has no optimizer state".into()))?;
    Ok((model, optim))
}

pub use crate::device::Opened;

/// Opens `b` ([`Backend::open`]); a backend that cannot be opened is a one-line error naming it.
pub fn open_backend(b: Backend) -> Result<Opened, TrainError> {
    b.open().map_err(|e| TrainError::Backend {
        backend: b.name(),
        why: e.to_string(),
    })
}
