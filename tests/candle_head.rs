//! `aem::candle` (feature `candle`): the head on candle CPU tensors equals the reference bitwise,
//! and the gradient candle's autograd delivers to the logits — and through them to a layer
//! below — is the head's `dlogits`.
#![cfg(feature = "candle")]

mod common;

use aem::candle::{loss_head, Batch, Exec};
use aem::head::file::{self, GradDtype, GradOut, HeadData, LogitsVec};
use aem::head::HeadConfig;
use candle_core::{DType, Device, Tensor, Var};
use common::{each_dtype, problem, Spec};

fn batch_of(d: &HeadData) -> Batch {
    Batch {
        targets: d.targets.clone(),
        resp_start: d.resp_start.clone(),
        resp_len: d.resp_len.clone(),
        resp_group: d.resp_group.clone(),
        n_groups: d.n_groups,
        adv_base: d.adv_base.clone(),
        old_logp: d.old_logp.clone(),
        ref_logp: d.ref_logp.clone(),
    }
}

fn tensor_of(d: &HeadData) -> Tensor {
    let shape = (d.targets.len(), d.vocab);
    match &d.logits {
        LogitsVec::F16(x) => Tensor::from_slice(x, shape, &Device::Cpu).unwrap(),
        LogitsVec::Bf16(x) => Tensor::from_slice(x, shape, &Device::Cpu).unwrap(),
    }
}

fn grad_dtype(d: &HeadData) -> GradDtype {
    d.logits.as_logits().dtype().into()
}

fn vec1(t: &Tensor) -> Vec<f32> {
    t.to_vec1::<f32>().unwrap()
}

fn grad_f32(t: &Tensor) -> Vec<f32> {
    t.to_dtype(DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
}

fn base() -> HeadData {
    problem(
        41,
        Spec {
            vocab: 97,
            responses: 9,
            ..Spec::default()
        },
    )
}

#[test]
fn candle_cpu_equals_the_reference_bitwise_and_autograd_gives_dlogits() {
    let cfg = HeadConfig {
        entropy_coef: 0.01,
        kl_coef: 0.1,
        ..HeadConfig::default()
    };
    for d in each_dtype(&base()) {
        let want = file::reference(&d.inputs(), &cfg, grad_dtype(&d)).unwrap();
        let var = Var::from_tensor(&tensor_of(&d)).unwrap();
        let out = loss_head(var.as_tensor(), &batch_of(&d), &cfg, Exec::Reference).unwrap();
        assert_eq!(out.loss.to_vec0::<f32>().unwrap(), want.loss);
        assert_eq!(vec1(&out.logp), want.logp);
        assert_eq!(vec1(&out.entropy), want.entropy);
        assert_eq!(vec1(&out.lse), want.lse);
        assert_eq!(vec1(&out.token_loss), want.token_loss);
        assert_eq!(vec1(&out.resp_surprisal), want.resp_surprisal);
        assert_eq!(vec1(&out.resp_mean_entropy), want.resp_mean_entropy);
        assert_eq!(vec1(&out.alpha), want.alpha);
        assert_eq!(vec1(&out.adv), want.adv);
        // loss.backward(): the gradient at the logits is the head's dlogits, bit for bit.
        let grads = out.loss.backward().unwrap();
        let g = grads
            .get(var.as_tensor())
            .expect("a gradient for the logits");
        assert_eq!(g.dtype(), var.as_tensor().dtype());
        assert_eq!(grad_f32(g), want.dlogits.to_f32());
        // A scaled loss scales the gradient (the incoming gradient is applied).
        let out = loss_head(var.as_tensor(), &batch_of(&d), &cfg, Exec::Reference).unwrap();
        let grads = (out.loss * 2.0).unwrap().backward().unwrap();
        let g2 = grad_f32(grads.get(var.as_tensor()).unwrap());
        let twice: Vec<f32> = want.dlogits.to_f32().iter().map(|x| 2.0 * x).collect();
        assert_eq!(g2, twice);
    }
}

#[test]
fn the_gradient_flows_through_the_layers_below() {
    // logits = (h · W) cast to f16: dL/dW = hᵀ · dlogits (in f32), through candle's own ops.
    let d = base();
    let (t, v) = (d.targets.len(), d.vocab);
    let k = 8;
    let h = Tensor::from_vec(
        (0..t * k)
            .map(|i| ((i * 37 % 17) as f32 - 8.0) / 8.0)
            .collect::<Vec<_>>(),
        (t, k),
        &Device::Cpu,
    )
    .unwrap();
    let w = Var::from_tensor(
        &Tensor::from_vec(
            (0..k * v)
                .map(|i| ((i * 13 % 11) as f32 - 5.0) / 10.0)
                .collect::<Vec<_>>(),
            (k, v),
            &Device::Cpu,
        )
        .unwrap(),
    )
    .unwrap();
    let logits = h
        .matmul(w.as_tensor())
        .unwrap()
        .to_dtype(DType::F16)
        .unwrap();
    let cfg = HeadConfig::default();
    let out = loss_head(&logits, &batch_of(&d), &cfg, Exec::Reference).unwrap();
    let grads = out.loss.backward().unwrap();
    let gw = grads.get(w.as_tensor()).expect("a gradient for W");
    // The same product by hand from the head's dlogits at these logits.
    let x: Vec<half::f16> = logits.flatten_all().unwrap().to_vec1().unwrap();
    let inp = aem::head::HeadInputs {
        logits: aem::head::Logits::F16(&x),
        ..d.inputs()
    };
    let dl = match file::reference(&inp, &cfg, GradDtype::F16).unwrap().dlogits {
        GradOut::F16(g) => g.iter().map(|x| x.to_f32()).collect::<Vec<_>>(),
        _ => unreachable!(),
    };
    let dl = Tensor::from_vec(dl, (t, v), &Device::Cpu).unwrap();
    let want = h.t().unwrap().matmul(&dl).unwrap();
    assert_eq!(grad_f32(gw), grad_f32(&want));
}

#[test]
fn the_emulator_exec_equals_the_kernels() {
    let cfg = HeadConfig::default();
    for d in each_dtype(&base()) {
        let dev = aem::device::Device::emu().unwrap();
        let plan = aem::head::launch::Plan::default();
        let want =
            aem::head::launch::loss_head(&dev, &d.inputs(), &cfg, grad_dtype(&d), &plan).unwrap();
        let var = Var::from_tensor(&tensor_of(&d)).unwrap();
        let out = loss_head(var.as_tensor(), &batch_of(&d), &cfg, Exec::Emulator).unwrap();
        assert_eq!(vec1(&out.alpha), want.alpha);
        assert_eq!(vec1(&out.logp), want.logp);
        let grads = out.loss.backward().unwrap();
        assert_eq!(
            grad_f32(grads.get(var.as_tensor()).unwrap()),
            want.dlogits.to_f32()
        );
    }
}

#[test]
fn bad_input_is_a_typed_error() {
    let d = base();
    let cfg = HeadConfig::default();
    // f32 logits: the dtype is named.
    let f32s = tensor_of(&d).to_dtype(DType::F32).unwrap();
    let e = loss_head(&f32s, &batch_of(&d), &cfg, Exec::Reference).unwrap_err();
    assert!(e.to_string().contains("logits"), "{e}");
    // A target out of range: the head's own error, with its index.
    let mut b = batch_of(&d);
    b.targets[3] = 10_000;
    let e = loss_head(&tensor_of(&d), &b, &cfg, Exec::Reference).unwrap_err();
    assert!(e.to_string().contains("targets[3]"), "{e}");
    // Rank 1 logits.
    let flat = tensor_of(&d).flatten_all().unwrap();
    let e = loss_head(&flat, &batch_of(&d), &cfg, Exec::Reference).unwrap_err();
    assert!(e.to_string().contains("rank 2"), "{e}");
}
