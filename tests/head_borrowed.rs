//! The loss head over buffers the caller owns: logits read in place from borrowed memory (host
//! memory is the emulator's device memory, as a cudarc `CudaSlice` is the GPU's) and the
//! gradient written into the caller's buffer, or over the caller's logits. The same kernels as
//! over the crate's own buffers, so the results are bitwise equal.

mod common;

use aem::device::{Device, Elem, Slice, SliceMut};
use aem::head::file::{GradOut, HeadData, LogitsVec};
use aem::head::launch::{self, DeviceHead, DeviceLogit, GradDst, Plan};
use aem::head::{HeadConfig, Logits};
use common::{each_dtype, problem, Spec};

fn batch() -> HeadData {
    problem(
        12,
        Spec {
            vocab: 263,
            responses: 9,
            groups: 3,
            max_len: 6,
            ..Spec::default()
        },
    )
}

/// A copy of `x` at a 16-byte-aligned address (what the crate's own buffers have), so the
/// kernels' vector partition, and with it every reduction order, is the owned path's.
fn aligned<T: Elem>(x: &[T]) -> (Vec<u128>, usize) {
    let bytes = std::mem::size_of_val(x);
    let mut store = vec![0u128; bytes.div_ceil(16)];
    bytemuck::cast_slice_mut::<u128, u8>(&mut store)[..bytes]
        .copy_from_slice(bytemuck::cast_slice(x));
    (store, x.len())
}

fn view<T: Elem>(store: &[u128], len: usize) -> &[T] {
    &bytemuck::cast_slice(store)[..len]
}

fn view_mut<T: Elem>(store: &mut [u128], len: usize) -> &mut [T] {
    &mut bytemuck::cast_slice_mut(store)[..len]
}

/// The full head over borrowed host memory: stats and an f32 gradient in the caller's buffer.
fn borrowed<X: DeviceLogit>(
    dev: &Device,
    d: &HeadData,
    x: &[X],
    cfg: &HeadConfig,
    plan: &Plan,
) -> (aem::head::file::HeadStats, Vec<f32>) {
    let inp = d.inputs();
    let mut grad = vec![0f32; x.len()];
    let mut h = DeviceHead::new(dev, &inp, cfg, x.len()).unwrap();
    h.forward(dev, Slice::host(x), plan).unwrap();
    h.check(dev).unwrap();
    h.backward(
        dev,
        Slice::host(x),
        GradDst::F32(SliceMut::host(&mut grad)),
        plan,
    )
    .unwrap();
    h.check(dev).unwrap();
    (h.stats(dev).unwrap(), grad)
}

fn logits_of(d: &HeadData) -> Logits<'_> {
    d.logits.as_logits()
}

#[test]
fn borrowed_host_logits_and_gradient_equal_the_owned_path_bitwise() {
    let dev = Device::emu().unwrap();
    let cfg = HeadConfig {
        entropy_coef: 0.01,
        kl_coef: 0.1,
        ..HeadConfig::default()
    };
    for d in each_dtype(&batch()) {
        for plan in [Plan::default(), Plan::all(&[64])[1]] {
            let owned = launch::loss_head(
                &dev,
                &d.inputs(),
                &cfg,
                aem::head::file::GradDtype::F32,
                &plan,
            )
            .unwrap();
            let (stats, grad) = match logits_of(&d) {
                Logits::F16(x) => {
                    let (s, n) = aligned(x);
                    borrowed(&dev, &d, view::<half::f16>(&s, n), &cfg, &plan)
                }
                Logits::Bf16(x) => {
                    let (s, n) = aligned(x);
                    borrowed(&dev, &d, view::<half::bf16>(&s, n), &cfg, &plan)
                }
            };
            assert_eq!(stats, owned.stats, "{plan:?}");
            assert_eq!(GradOut::F32(grad), owned.dlogits, "{plan:?}");
        }
    }
}

#[test]
fn in_place_over_the_callers_logits_equals_the_owned_in_place_path() {
    let dev = Device::emu().unwrap();
    let cfg = HeadConfig::default();
    let plan = Plan {
        in_place: true,
        ..Plan::default()
    };
    let d = common::to_bf16(&batch());
    let LogitsVec::Bf16(x) = &d.logits else {
        unreachable!()
    };
    let owned = launch::loss_head(
        &dev,
        &d.inputs(),
        &cfg,
        aem::head::file::GradDtype::Bf16,
        &plan,
    )
    .unwrap();
    let (mut store, n) = aligned(x);
    let mut h = DeviceHead::new(&dev, &d.inputs(), &cfg, n).unwrap();
    {
        let buf = SliceMut::host(view_mut::<half::bf16>(&mut store, n));
        h.forward(&dev, buf.as_slice(), &plan).unwrap();
        h.backward(&dev, buf.as_slice(), GradDst::InPlace, &plan)
            .unwrap();
    }
    h.check(&dev).unwrap();
    assert_eq!(h.stats(&dev).unwrap(), owned.stats);
    assert_eq!(
        GradOut::Bf16(view::<half::bf16>(&store, n).to_vec()),
        owned.dlogits
    );
}

#[test]
fn misaligned_borrowed_logits_meet_the_parity_rule() {
    // Host memory at any element offset: the kernels align each row themselves (scalar head and
    // tail around 16-byte vectors), so only the reduction order differs from the owned path.
    let dev = Device::emu().unwrap();
    let cfg = HeadConfig::default();
    let d = batch();
    let LogitsVec::F16(x) = &d.logits else {
        unreachable!()
    };
    let mut shifted = vec![half::f16::ZERO];
    shifted.extend_from_slice(x);
    let (stats, grad) = borrowed(&dev, &d, &shifted[1..], &cfg, &Plan::default());
    let r64 = aem::cpu::loss_head::<f64, f64>(&d.inputs(), &cfg).unwrap();
    let r32 = aem::cpu::loss_head::<f32, f32>(&d.inputs(), &cfg).unwrap();
    let f = |v: &[f32]| v.iter().map(|&x| f64::from(x)).collect::<Vec<_>>();
    let zmax = common::logits_f64(&d)
        .iter()
        .fold(0.0f64, |m, x| m.max(x.abs()));
    common::within(
        "logp",
        &f(&stats.logp),
        &r64.fwd.tokens.logp,
        &f(&r32.fwd.tokens.logp),
        zmax,
        "misaligned",
    );
    common::within(
        "dlogits",
        &f(&grad),
        &r64.dlogits,
        &f(&r32.dlogits),
        0.0,
        "misaligned",
    );
}

#[test]
fn borrowed_buffers_are_checked() {
    let dev = Device::emu().unwrap();
    let d = batch();
    let LogitsVec::F16(x) = &d.logits else {
        unreachable!()
    };
    let cfg = HeadConfig::default();
    let plan = Plan::default();
    let mut h = DeviceHead::new(&dev, &d.inputs(), &cfg, x.len()).unwrap();
    // In place needs writable logits: a read-only borrow is refused before any launch.
    h.forward(&dev, Slice::host(x), &plan).unwrap();
    let e = h
        .backward(&dev, Slice::host(x), GradDst::InPlace, &plan)
        .unwrap_err();
    assert!(e.to_string().contains("grad"), "{e}");
    // A window of the wrong length names the argument.
    let e = h.forward(&dev, Slice::host(&x[1..]), &plan).unwrap_err();
    assert!(e.to_string().contains("logits"), "{e}");
    let mut short = vec![0f32; x.len() - 1];
    let e = h
        .backward(
            &dev,
            Slice::host(x),
            GradDst::F32(SliceMut::host(&mut short)),
            &plan,
        )
        .unwrap_err();
    assert!(e.to_string().contains("dlogits"), "{e}");
}
