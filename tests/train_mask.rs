//! The validity mask in the loss: invalid logits set to −65504 (the most negative finite f16)
//! give exactly the log-prob, entropy and gradient of the masked distribution the sampler drew
//! from, and a zero gradient on invalid tokens.

use aem::cpu;
use aem::head::{self, HeadConfig, HeadInputs};
use aem::train::update::{masked_rows, MASKED_LOGIT};
use half::f16;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const V: usize = 37;

/// One row's head outputs (logp, entropy, dlogits (V) f32) for advantage `a` and `old`.
fn head_row(logits: &[f16], vocab: usize, y: u32, a: f32, old: f32) -> (f64, f64, Vec<f32>) {
    let targets = [y];
    let adv = [a];
    let old_logp = [old];
    let inp = HeadInputs {
        logits: aem::head::Logits::F16(logits),
        vocab,
        targets: &targets,
        resp_start: &[0],
        resp_len: &[1],
        resp_group: &[0],
        n_groups: 1,
        adv_base: &adv,
        old_logp: Some(&old_logp),
        ref_logp: None,
    };
    let cfg = HeadConfig {
        entropy_coef: 0.03,
        ..HeadConfig::default()
    };
    let layout = head::validate(&inp, &cfg).unwrap();
    let ts = cpu::token_stats::<f64>(&inp, &cfg);
    let loss = cpu::policy_loss(&inp, &cfg, &layout, &ts, &[f64::from(a)]);
    let mut d = vec![0.0f32; vocab];
    cpu::policy_grad(&inp, &cfg, &ts, &loss, &mut d);
    (ts.logp[0], ts.entropy[0], d)
}

#[test]
fn masked_logits_equal_the_masked_distribution() {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    for row in 0..40 {
        // Asymmetric logits, up to ±12, and a random non-empty mask (sometimes one token).
        let logits: Vec<f32> = (0..V)
            .map(|v| rng.random_range(-12.0f32..12.0) + 0.01 * v as f32)
            .collect();
        let mut mask = 0u64;
        let want = if row % 7 == 0 {
            1
        } else {
            rng.random_range(2..V)
        };
        while (mask.count_ones() as usize) < want {
            mask |= 1u64 << rng.random_range(0..V);
        }
        let valid: Vec<usize> = (0..V).filter(|&v| mask & (1u64 << v) != 0).collect();
        let y = valid[rng.random_range(0..valid.len())];
        let a = rng.random_range(-2.0f32..2.0);

        // The full-V row with invalid entries at −65504.
        let mut full = Vec::new();
        masked_rows(&logits, V, &[0], &[mask], &mut full);
        assert!(valid
            .iter()
            .all(|&v| full[v] != f16::from_f32(MASKED_LOGIT)));
        // The masked distribution as a problem over the valid columns only.
        let reduced: Vec<f16> = valid.iter().map(|&v| f16::from_f32(logits[v])).collect();
        let y_red = valid.iter().position(|&v| v == y).unwrap() as u32;
        // old_logp a little off so the ratio is not 1 (the PPO branch is exercised).
        let (lp_r, h_r, d_r) = head_row(&reduced, valid.len(), y_red, a, -0.9);
        let (lp_f, h_f, d_f) = head_row(&full, V, y as u32, a, -0.9);

        // exp(−65504 − m) is exactly 0 in f64: the sums are the same numbers in the same order
        // except for added exact zeros, so equality is exact.
        assert_eq!(lp_f, lp_r, "row {row}: logp");
        assert_eq!(h_f, h_r, "row {row}: entropy");
        for (v, &d) in d_f.iter().enumerate() {
            match valid.iter().position(|&u| u == v) {
                Some(j) => assert_eq!(d, d_r[j], "row {row}: dlogits[{v}]"),
                None => assert_eq!(d, 0.0, "row {row}: invalid dlogits[{v}]"),
            }
        }
        if valid.len() == 1 {
            assert_eq!(lp_f, 0.0);
            assert_eq!(h_f, 0.0);
        }
    }
}

/// The sampler's log-probs and entropies (f32, from f32 logits) agree with the loss head's on
/// the masked, f16-rounded logits of the same model: the sampling statistics the trainer feeds
/// to AEM are those of the distribution the loss sees, up to f16 rounding of the logits.
#[test]
fn sampler_statistics_match_the_loss_head() {
    use aem::env::{self, Episode, PromptConfig};
    use aem::model::{Gpt, GptConfig};
    use aem::train::rollout;
    let level = env::level("keyrooms-train").unwrap();
    let cfg = GptConfig {
        vocab: level.vocab().len(),
        context: 64,
        d_model: 16,
        layers: 1,
        heads: 2,
    };
    let model = Gpt::<f16>::new(cfg, 3).unwrap();
    let tasks: Vec<_> = (0..2)
        .map(|s| env::train_task(&level, s).unwrap())
        .collect();
    let pc = PromptConfig::default();
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let ro = rollout::collect(&model, &tasks, 3, pc, 1.0, &mut rng, |_, _| {}).unwrap();
    assert!(!ro.turns.is_empty());
    // The recorded masks are the episode's admissible masks at each prefix (replayed).
    for tr in &ro.trajs {
        let mut ep = Episode::new(&tasks[tr.group], pc);
        for &ti in &tr.turns {
            let t = &ro.turns[ti];
            assert_eq!(t.prompt, ep.prompt());
            for k in 0..t.response.len() {
                assert_eq!(
                    t.masks[k],
                    ep.valid_next(&t.response[..k]).0,
                    "turn {ti} token {k}"
                );
            }
            ep.step(&t.response);
        }
        assert!(ep.done());
        assert_eq!(tr.reward, ep.reward());
    }
    let mut m = model.clone();
    for t in &ro.turns {
        let mut seq = t.prompt.clone();
        seq.extend_from_slice(&t.response[..t.response.len() - 1]);
        let tt = seq.len();
        let logits = m.forward(&seq, 1, tt).unwrap().to_vec();
        let rows: Vec<usize> = (0..t.response.len())
            .map(|k| t.prompt.len() - 1 + k)
            .collect();
        let mut full = Vec::new();
        masked_rows(&logits, cfg.vocab, &rows, &t.masks, &mut full);
        let ts = cpu::token_stats_of::<f64, f16>(&full, cfg.vocab, &t.response, 1.0);
        for k in 0..t.response.len() {
            assert!(
                t.masks[k] & (1u64 << t.response[k]) != 0,
                "token outside its mask"
            );
            // f16 rounding of logits of size ≲ 1 moves logp by ≲ 1e-3.
            assert!((ts.logp[k] - f64::from(t.logp[k])).abs() < 5e-3, "logp {k}");
            assert!(
                (ts.entropy[k] - f64::from(t.entropy[k])).abs() < 5e-3,
                "entropy {k}"
            );
        }
    }
}
