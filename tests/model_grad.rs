//! Finite-difference check of every parameter tensor's gradient (f32 "exact" mode), and the f16
//! path's gradient against it.

use aem::model::params::ParamId;
use aem::model::{cross_entropy, Gpt, GptConfig};
use half::f16;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Tiny, ragged on purpose: V=11, maxT=7, C=8, L=2, NH=2; batch B=2, T=5.
const CFG: GptConfig = GptConfig {
    vocab: 11,
    context: 7,
    d_model: 8,
    layers: 2,
    heads: 2,
};
const B: usize = 2;
const T: usize = 5;

fn data() -> (Vec<u32>, Vec<u32>) {
    let tokens: Vec<u32> = (0..B * T).map(|i| ((i * 7 + 3) % 11) as u32).collect();
    let targets: Vec<u32> = (0..B * T).map(|i| ((i * 5 + 1) % 11) as u32).collect();
    (tokens, targets)
}

/// A model with large, asymmetric random parameters, so that attention is far from uniform and
/// every nonlinearity is exercised (the GPT-2 init would keep everything nearly linear).
fn model() -> Gpt<f32> {
    let mut m = Gpt::<f32>::new(CFG, 1).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let layout = m.layout().clone();
    for id in ParamId::ALL {
        let base = if matches!(id, ParamId::Ln1W | ParamId::Ln2W | ParamId::LnfW) {
            1.0
        } else {
            0.0
        };
        for p in &mut m.params_mut()[layout.range(id)] {
            *p = base + rng.random_range(-0.5f32..0.5);
        }
    }
    m
}

fn loss(m: &mut Gpt<f32>, tokens: &[u32], targets: &[u32]) -> f64 {
    let logits = m.forward(tokens, B, T).unwrap().to_vec();
    f64::from(cross_entropy(&logits, targets, CFG.vocab).unwrap().0)
}

/// Central differences with step h = 1e-2 in f32.
///
/// Error budget per coordinate: truncation h²/6·|L'''| ≈ 1.7e-5·|L'''|, with |L'''| = O(1) for
/// O(1) weights; rounding δ/h, where δ, the f32 error of the loss, is a random walk of ~10³
/// roundings of size 2⁻²⁴·|L| (|L| ≈ 3): δ ≈ √10³ · 6e-8 · 3 ≈ 6e-6, so δ/h ≈ 6e-4 at worst.
/// Tolerance 5e-4 absolute + 2e-3 relative; observed max 6e-5 (each tensor's max is printed).
/// A wrong formula (a missing term, a swapped index) is off by ≥ 1e-2 on some coordinate.
#[test]
fn model_grad_finite_differences() {
    let (tokens, targets) = data();
    let mut m = model();
    let logits = m.forward(&tokens, B, T).unwrap().to_vec();
    let (_, dlogits) = cross_entropy(&logits, &targets, CFG.vocab).unwrap();
    m.zero_grad();
    m.backward(&dlogits).unwrap();
    let grads = m.grads().to_vec();
    let layout = m.layout().clone();
    let h = 1e-2f32;
    for id in ParamId::ALL {
        let r = layout.range(id);
        let mut worst = 0.0f64;
        let mut norm = 0.0f64;
        for i in r.clone() {
            let p0 = m.params()[i];
            m.params_mut()[i] = p0 + h;
            let lp = loss(&mut m, &tokens, &targets);
            m.params_mut()[i] = p0 - h;
            let lm = loss(&mut m, &tokens, &targets);
            m.params_mut()[i] = p0;
            let fd = (lp - lm) / (2.0 * f64::from(h));
            let g = f64::from(grads[i]);
            let err = (fd - g).abs();
            assert!(
                err <= 5e-4 + 2e-3 * g.abs(),
                "{id:?}[{}]: fd {fd:.6} vs backward {g:.6}",
                i - r.start
            );
            worst = worst.max(err);
            norm += g * g;
        }
        assert!(
            norm.sqrt() > 1e-3,
            "{id:?}: gradient is trivially small ({})",
            norm.sqrt()
        );
        eprintln!(
            "{id:?}: max |fd - bw| = {worst:.2e}, |g| = {:.3e}",
            norm.sqrt()
        );
    }
}

/// The f16 path computes the same gradient as the exact path up to f16 rounding: relative L2 error
/// per tensor below 5e-3. f16 has u = 2⁻¹¹ ≈ 4.9e-4 per rounding; saved activations are rounded
/// after every op, the errors of ~20 ops in sequence add as a random walk (√20 · u ≈ 2.2e-3), and
/// we allow ~2× that. Observed: ≤ 1.2e-3 (printed per tensor).
#[test]
fn model_grad_f16_matches_f32() {
    let (tokens, targets) = data();
    let mut m32 = model();
    // Round the exact model's parameters to f16 so both models hold the same values.
    let rounded: Vec<f16> = m32.params().iter().map(|&x| f16::from_f32(x)).collect();
    for (p, r) in m32.params_mut().iter_mut().zip(&rounded) {
        *p = r.to_f32();
    }
    let mut m16 = Gpt::<f16>::new(CFG, 1).unwrap();
    m16.params_mut().copy_from_slice(&rounded);

    let l32 = m32.forward(&tokens, B, T).unwrap().to_vec();
    let (_, d32) = cross_entropy(&l32, &targets, CFG.vocab).unwrap();
    m32.backward(&d32).unwrap();
    let l16 = m16.forward(&tokens, B, T).unwrap().to_vec();
    let (_, d16) = cross_entropy(&l16, &targets, CFG.vocab).unwrap();
    m16.backward(&d16).unwrap();

    let max_logit_err = l32
        .iter()
        .zip(&l16)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(max_logit_err < 2e-2, "logits differ by {max_logit_err}");
    for id in ParamId::ALL {
        let r = m32.layout().range(id);
        let (a, b) = (&m32.grads()[r.clone()], &m16.grads()[r]);
        let diff: f32 = a
            .iter()
            .zip(b)
            .map(|(x, y)| (x - y) * (x - y))
            .sum::<f32>()
            .sqrt();
        let norm: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!(
            diff <= 5e-3 * norm,
            "{id:?}: relative error {}",
            diff / norm
        );
        eprintln!(
            "{id:?}: f16 vs f32 relative gradient error {:.2e}",
            diff / norm
        );
    }
}
