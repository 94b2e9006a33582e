//! The loss head on candle tensors (feature `candle`).
//!
//! [`loss_head`] takes the logits as a candle `Tensor` (T, V), f16 or bf16, and returns the loss
//! as a scalar tensor in the logits' autograd graph: `out.loss.backward()` hands the head's
//! `dlogits` to candle's autograd (a custom op whose backward returns the gradient the head
//! computed with the loss, scaled by the incoming gradient), so the head sits at the end of an
//! ordinary candle training loop. The statistics (logp, entropy, α, response statistics) come
//! back as f32 tensors on the logits' device.
//!
//! ```
//! use aem::candle::{loss_head, Batch, Exec};
//! use aem::head::HeadConfig;
//! use candle_core::{DType, Device, Tensor, Var};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // Two rollouts of one task, one 2-token turn each, vocabulary 4.
//! let w = Var::from_tensor(&Tensor::randn(0f32, 1.0, (4, 4), &Device::Cpu)?)?;
//! let h = Tensor::randn(0f32, 1.0, (4, 4), &Device::Cpu)?;
//! let logits = h.matmul(w.as_tensor())?.to_dtype(DType::BF16)?; // (T, V) bf16
//! let batch = Batch {
//!     targets: vec![0, 1, 2, 3],
//!     resp_start: vec![0, 2],
//!     resp_len: vec![2, 2],
//!     resp_group: vec![0, 0],
//!     n_groups: 1,
//!     adv_base: vec![1.0, -1.0],
//!     ..Batch::default()
//! };
//! let out = loss_head(&logits, &batch, &HeadConfig::default(), Exec::Reference)?;
//! let grads = out.loss.backward()?; // the head's dlogits, then candle's own backward
//! assert!(grads.get(w.as_tensor()).is_some());
//! println!("alpha {:?}", out.alpha.to_vec1::<f32>()?);
//! # Ok(())
//! # }
//! ```
//!
//! CPU tensors run the f64 reference ([`Exec::Reference`], bitwise what `aem head --backend
//! cpu` writes) or the CUDA kernels on the emulator ([`Exec::Emulator`]). CUDA tensors are not
//! supported yet: candle-core's `cuda` feature compiles its own kernels with nvcc at build
//! time, which this crate's build and CI machines do not have; a CUDA tensor is a typed error.

use crate::error::{Error, Result};
use crate::head::file::{self, GradDtype, GradOut, HeadResult};
use crate::head::launch::{self, Plan};
use crate::head::{HeadConfig, HeadInputs, Logits};
use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, DType, Layout, Shape, Tensor};
use std::sync::{Arc, Mutex};

/// Which executor runs the head for CPU tensors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Exec {
    /// The f64 reference (`cpu::loss_head`), statistics rounded once to f32, the gradient once
    /// to the logits' dtype.
    #[default]
    Reference,
    /// The CUDA kernels (default plan) on the CPU emulator.
    Emulator,
}

/// Everything of a batch but the logits, owned: what a trainer builds once per update.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Batch {
    /// targets: (T) u32, each `< V`.
    pub targets: Vec<u32>,
    /// resp_start, resp_len, resp_group: (R) u32.
    pub resp_start: Vec<u32>,
    pub resp_len: Vec<u32>,
    pub resp_group: Vec<u32>,
    /// G, the number of groups.
    pub n_groups: usize,
    /// adv_base: (R) f32.
    pub adv_base: Vec<f32>,
    /// old_logp, ref_logp: (T) f32 (as [`HeadInputs`]).
    pub old_logp: Option<Vec<f32>>,
    pub ref_logp: Option<Vec<f32>>,
}

impl Batch {
    fn inputs<'a>(&'a self, logits: Logits<'a>, vocab: usize) -> HeadInputs<'a> {
        HeadInputs {
            logits,
            vocab,
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

/// What [`loss_head`] returns: the loss in the autograd graph, the statistics as constants.
#[derive(Debug, Clone)]
pub struct HeadOutput {
    /// loss: () f32, `Σ_t w_t ℓ_t`; its backward is the head's `dlogits`, which carry the
    /// loss scale `cfg.grad_scale` (as on every executor), so with `s ≠ 1` the gradients candle
    /// delivers are `s·∂loss/∂logits`.
    pub loss: Tensor,
    /// logp, entropy, lse, token_loss: (T) f32.
    pub logp: Tensor,
    pub entropy: Tensor,
    pub lse: Tensor,
    pub token_loss: Tensor,
    /// resp_surprisal, resp_mean_entropy, alpha, adv: (R) f32.
    pub resp_surprisal: Tensor,
    pub resp_mean_entropy: Tensor,
    pub alpha: Tensor,
    pub adv: Tensor,
}

fn candle_err(e: candle_core::Error) -> Error {
    Error::Device {
        backend: "candle",
        message: e.to_string(),
    }
}

/// The forward's outcome, shared by the op (its backward reads the gradient) and [`loss_head`]
/// (which reads the statistics, or the typed error the head returned).
type Slot = Arc<Mutex<Option<Result<HeadResult>>>>;

/// The custom op: its forward computes the whole head (loss, statistics and gradient) and keeps
/// the result, its backward returns the kept gradient.
struct HeadOp {
    batch: Arc<Batch>,
    cfg: HeadConfig,
    exec: Exec,
    vocab: usize,
    slot: Slot,
}

fn poisoned() -> candle_core::Error {
    candle_core::Error::msg("aem_loss_head: result lock poisoned")
}

impl HeadOp {
    fn run(&self, logits: Logits<'_>) -> Result<HeadResult> {
        let inp = self.batch.inputs(logits, self.vocab);
        let dtype = GradDtype::from(logits.dtype());
        match self.exec {
            Exec::Reference => file::reference(&inp, &self.cfg, dtype),
            Exec::Emulator => {
                let dev = crate::device::Device::emu()?;
                launch::loss_head(&dev, &inp, &self.cfg, dtype, &Plan::default())
            }
        }
    }
}

impl CustomOp1 for HeadOp {
    fn name(&self) -> &'static str {
        "aem_loss_head"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (start, end) = layout
            .contiguous_offsets()
            .ok_or_else(|| candle_core::Error::msg("aem_loss_head: logits must be contiguous"))?;
        let res = match storage {
            CpuStorage::F16(x) => self.run(Logits::F16(&x[start..end])),
            CpuStorage::BF16(x) => self.run(Logits::Bf16(&x[start..end])),
            _ => Err(Error::shape(
                "logits",
                "dtype F16 or BF16",
                format!("{:?}", storage.dtype()),
            )),
        };
        let out = match &res {
            Ok(r) => Ok((CpuStorage::F32(vec![r.loss]), Shape::from(()))),
            Err(e) => Err(candle_core::Error::msg(e)),
        };
        *self.slot.lock().map_err(|_| poisoned())? = Some(res);
        out
    }

    fn bwd(
        &self,
        arg: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        let guard = self.slot.lock().map_err(|_| poisoned())?;
        let Some(Ok(res)) = guard.as_ref() else {
            return Err(candle_core::Error::msg(
                "aem_loss_head: backward without a successful forward",
            ));
        };
        let g = match &res.dlogits {
            GradOut::F16(g) => Tensor::from_slice(g, arg.shape(), arg.device())?,
            GradOut::Bf16(g) => Tensor::from_slice(g, arg.shape(), arg.device())?,
            GradOut::F32(g) => Tensor::from_slice(g, arg.shape(), arg.device())?,
        };
        // d(loss)/d(logits) = dlogits · (the gradient arriving at the loss); exact for 1.
        let scale = grad_res.to_dtype(g.dtype())?;
        Ok(Some(g.broadcast_mul(&scale)?))
    }
}

/// The loss head on `logits` (T, V), f16 or bf16, on the CPU. Validates the batch as every
/// executor does (a typed error naming the argument and the index); the logits are made
/// contiguous first (through candle, so the gradient flows back through the copy).
pub fn loss_head(
    logits: &Tensor,
    batch: &Batch,
    cfg: &HeadConfig,
    exec: Exec,
) -> Result<HeadOutput> {
    if logits.device().is_cuda() {
        return Err(Error::NoDevice(
            "aem::candle: CUDA tensors are not supported yet (candle-core's cuda feature needs \
             nvcc at build time); move the logits to the CPU or use aem::head::launch on the \
             tensor's cudarc slice"
                .into(),
        ));
    }
    match logits.dtype() {
        DType::F16 | DType::BF16 => {}
        other => {
            return Err(Error::shape(
                "logits",
                "dtype F16 or BF16 (convert with to_dtype, which autograd follows)",
                format!("{other:?}"),
            ))
        }
    }
    let (_, vocab) = logits
        .dims2()
        .map_err(|_| Error::shape("logits", "rank 2 (T, V)", format!("{:?}", logits.dims())))?;
    let slot: Slot = Arc::new(Mutex::new(None));
    let op = HeadOp {
        batch: Arc::new(batch.clone()),
        cfg: cfg.clone(),
        exec,
        vocab,
        slot: slot.clone(),
    };
    let logits = logits.contiguous().map_err(candle_err)?;
    let applied = logits.apply_op1(op);
    let mut guard = slot.lock().map_err(|_| Error::Device {
        backend: "candle",
        message: "result lock poisoned".into(),
    })?;
    let loss = match applied {
        Ok(loss) => loss,
        // The head's own typed error wins over candle's text of it.
        Err(e) => {
            return Err(match guard.take() {
                Some(Err(head)) => head,
                _ => candle_err(e),
            })
        }
    };
    // The result stays in the slot: the op's backward reads the gradient from it.
    let Some(Ok(res)) = guard.as_ref() else {
        return Err(Error::Device {
            backend: "candle",
            message: "the head's forward did not run".into(),
        });
    };
    let dev = logits.device();
    let t = |x: &[f32]| Tensor::from_slice(x, x.len(), dev).map_err(candle_err);
    Ok(HeadOutput {
        loss,
        logp: t(&res.logp)?,
        entropy: t(&res.entropy)?,
        lse: t(&res.lse)?,
        token_loss: t(&res.token_loss)?,
        resp_surprisal: t(&res.resp_surprisal)?,
        resp_mean_entropy: t(&res.resp_mean_entropy)?,
        alpha: t(&res.alpha)?,
        adv: t(&res.adv)?,
    })
}
