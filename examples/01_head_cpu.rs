//! 01 — the loss head on the CPU reference: a hand-made batch of two tasks × two rollouts through
//! `cpu::loss_head`, the numbers every executor is held to.
//!
//! `cargo run --example 01_head_cpu`

#[path = "common/batch.rs"]
mod batch;

use aem::cpu;
use aem::head::HeadConfig;

fn main() -> aem::Result<()> {
    let d = batch::batch();
    let inp = d.inputs();
    let cfg = HeadConfig::default(); // λ = 1, δ = 0.1, PPO clip 0.2, token-mean
                                     // f64 accumulation, gradient written as f32.
    let out = cpu::loss_head::<f64, f32>(&inp, &cfg)?;
    let (fwd, loss) = (&out.fwd, &out.loss);
    println!("per response: mean entropy H̄, surprisal S, α, A = α·A_base");
    for r in 0..inp.responses() {
        println!(
            "  r{r} (group {}): H̄ = {:.4}  S = {:.4}  α = {:.4}  A = {:+.4}",
            d.resp_group[r],
            fwd.resp.mean_entropy[r],
            fwd.resp.surprisal[r],
            fwd.aem.alpha[r],
            fwd.aem.adv[r]
        );
    }
    println!("loss = {:.6}", loss.loss);
    // What AEM promises: within a group, α averages to 1 and falls with the mean entropy.
    for g in 0..d.n_groups {
        let rs: Vec<usize> = (0..inp.responses())
            .filter(|&r| d.resp_group[r] as usize == g)
            .collect();
        let mean = rs.iter().map(|&r| fwd.aem.alpha[r]).sum::<f64>() / rs.len() as f64;
        batch::check(
            (mean - 1.0).abs() < 1e-12,
            &format!("group {g}: mean α = 1"),
        );
        let (a, b) = (rs[0], rs[1]);
        let lower_entropy_higher_alpha = (fwd.resp.mean_entropy[a] < fwd.resp.mean_entropy[b])
            == (fwd.aem.alpha[a] > fwd.aem.alpha[b]);
        batch::check(
            lower_entropy_higher_alpha,
            &format!("group {g}: α falls with H̄"),
        );
    }
    // The softmax gradient of every row sums to zero over the vocabulary.
    let worst = out
        .dlogits
        .chunks(d.vocab)
        .map(|row| row.iter().map(|&x| f64::from(x)).sum::<f64>().abs())
        .fold(0.0, f64::max);
    batch::check(worst < 1e-6, "each dlogits row sums to 0");
    Ok(())
}
