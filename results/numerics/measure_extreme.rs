// Measures the loss head against the f64 reference on f16 rows of B + σ·N(0,1) (README,
// "Precision does not depend on the logits' magnitude"). Run: cp results/numerics/measure_extreme.rs
// tests/zz_measure.rs && cargo test --release --test zz_measure -- --nocapture; rm tests/zz_measure.rs
mod common;
use aem::device::Device;
use aem::head::file::{GradDtype, GradOut};
use aem::head::launch::{self, Plan};
use aem::head::HeadConfig;
#[test]
fn measure() {
    use rand::{Rng, SeedableRng};
    let dev = Device::emu().unwrap();
    for &(b, sigma, tau) in &[(0.0f32, 3.0f32, 1.0f32), (60000.0, 256.0, 64.0), (65000.0, 200.0, 1.0), (-65000.0, 200.0, 16.0)] {
        let v = 263;
        let mut d = common::problem(5, common::Spec { vocab: v, responses: 7, groups: 2, max_len: 4, ..Default::default() });
        let mut rng = rand::rngs::StdRng::seed_from_u64(9);
        for x in d.logits.iter_mut() {
            let (u1, u2): (f32, f32) = (rng.random_range(1e-7..1.0), rng.random());
            let n = (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos();
            *x = half::f16::from_f32((b + sigma * n).clamp(-65504.0, 65504.0));
        }
        for (t, y) in d.targets.iter_mut().enumerate() {
            let row = &d.logits[t * v..(t + 1) * v];
            let mut idx: Vec<usize> = (0..v).collect();
            idx.sort_by(|&i, &j| row[j].total_cmp(&row[i]));
            *y = idx[t % 3] as u32;
        }
        let lp = aem::cpu::token_stats_of::<f64, half::f16>(&d.logits, v, &d.targets, tau);
        d.old_logp = Some(lp.logp.iter().map(|l| *l as f32).collect());
        d.ref_logp = None;
        let cfg = HeadConfig { temperature: tau, entropy_coef: 0.01, ..HeadConfig::default() };
        let inp = d.inputs();
        let want = aem::cpu::loss_head::<f64, f64>(&inp, &cfg).unwrap();
        let got = launch::loss_head(&dev, &inp, &cfg, GradDtype::F32, &Plan::default()).unwrap();
        let GradOut::F32(g) = &got.dlogits else { panic!() };
        let gmax = want.dlogits.iter().fold(0.0f64, |m, x| m.max(x.abs()));
        let lperr = got.logp.iter().zip(&want.fwd.tokens.logp).map(|(a, b)| (f64::from(*a) - b).abs()).fold(0.0, f64::max);
        let grel = g.iter().zip(&want.dlogits).map(|(a, w)| (f64::from(*a) - w).abs()).fold(0.0, f64::max) / gmax;
        println!("B={b} sigma={sigma} tau={tau}: max|logp err| = {lperr:.2e}, max|dlogits err| / max|dlogits| = {grel:.2e}");
    }
}
