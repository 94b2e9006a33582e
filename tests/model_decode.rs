//! KV-cache decoding against the full forward; sampling: determinism, masks, temperature 0.

use aem::model::sample::KvCache;
use aem::model::{Gpt, GptConfig, ModelError, SampleParams};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// Ragged: V=37, maxT=13, C=24, L=2, NH=3.
const CFG: GptConfig = GptConfig {
    vocab: 37,
    context: 13,
    d_model: 24,
    layers: 2,
    heads: 3,
};

fn tokens(b: usize, t: usize) -> Vec<u32> {
    (0..b * t)
        .map(|i| ((i * 11 + i / t * 5 + 2) % CFG.vocab) as u32)
        .collect()
}

/// Decoding token by token with the cache gives the full forward's logits at every position.
/// Both paths run the same f16 ops on the same rounded values, differing only in how sgemm
/// blocks rows, so agreement is near-exact (observed: bit-identical); the bound 1e-2 is ≈ 2 f16
/// ulps of the largest activations (|x| < 4 → ulp 2⁻⁹), what one differently rounded residual
/// could cost.
#[test]
fn model_decode_matches_forward() {
    let (b, t) = (3, 11);
    let mut m = Gpt::<half::f16>::new(CFG, 7).unwrap();
    let toks = tokens(b, t);
    let full = m.forward(&toks, b, t).unwrap().to_vec();
    let mut cache = KvCache::new(&CFG, b).unwrap();
    let mut logits = vec![0.0f32; b * CFG.vocab];
    let mut worst = 0.0f32;
    for pos in 0..t {
        let step: Vec<u32> = (0..b).map(|bi| toks[bi * t + pos]).collect();
        m.decode_step(&mut cache, &step, pos, &mut logits).unwrap();
        for bi in 0..b {
            let f = &full[(bi * t + pos) * CFG.vocab..][..CFG.vocab];
            let d = &logits[bi * CFG.vocab..][..CFG.vocab];
            for (x, y) in f.iter().zip(d) {
                worst = worst.max((x - y).abs());
            }
        }
    }
    eprintln!("max |decode - forward| = {worst:.2e}");
    assert!(worst < 1e-2, "decode differs from forward by {worst}");
}

#[test]
fn model_sample_deterministic_and_reports_logprobs() {
    let m = Gpt::<half::f16>::new(CFG, 3).unwrap();
    let (b, p) = (4, 3);
    let prompts = tokens(b, p);
    let params = SampleParams {
        max_new: 9,
        temperature: 1.0,
    };
    let mut r1 = ChaCha8Rng::seed_from_u64(5);
    let mut r2 = ChaCha8Rng::seed_from_u64(5);
    let s1 = m.sample(&prompts, b, p, &params, &mut r1, None).unwrap();
    let s2 = m.sample(&prompts, b, p, &params, &mut r2, None).unwrap();
    assert_eq!(s1, s2);
    assert_eq!(s1.len, p + 9);
    for bi in 0..b {
        assert_eq!(&s1.tokens[bi * s1.len..][..p], &prompts[bi * p..][..p]);
    }
    // Near-uniform model at init: entropy close to ln V, log-probs close to −ln V.
    let ln_v = (CFG.vocab as f32).ln();
    for (&lp, &h) in s1.logprobs.iter().zip(&s1.entropies) {
        assert!(lp < 0.0 && (lp + ln_v).abs() < 0.5, "logprob {lp}");
        assert!(
            h > 0.0 && h <= ln_v + 1e-4 && (h - ln_v).abs() < 0.1,
            "entropy {h}"
        );
    }
}

#[test]
fn model_sample_mask_and_greedy() {
    let m = Gpt::<half::f16>::new(CFG, 3).unwrap();
    let (b, p) = (3, 2);
    let prompts = tokens(b, p);
    // Only tokens ≡ row (mod 3) and not equal to the last token are valid.
    let mut mask = |row: usize, so_far: &[u32], valid: &mut [bool]| {
        let last = so_far[so_far.len() - 1] as usize;
        for (tok, ok) in valid.iter_mut().enumerate() {
            *ok = tok % 3 == row % 3 && tok != last;
        }
    };
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let params = SampleParams {
        max_new: 8,
        temperature: 0.7,
    };
    let s = m
        .sample(&prompts, b, p, &params, &mut rng, Some(&mut mask))
        .unwrap();
    for bi in 0..b {
        let row = &s.tokens[bi * s.len..][..s.len];
        for i in p..s.len {
            assert_eq!(row[i] as usize % 3, bi % 3);
            assert_ne!(row[i], row[i - 1]);
        }
    }
    // The entropy is that of the masked distribution: at most ln(#valid) ≤ ln(13).
    assert!(s.entropies.iter().all(|&h| h <= 13f32.ln() + 1e-4));

    // Greedy: log-prob and entropy 0, and equal to the argmax of a full forward.
    let greedy = SampleParams {
        max_new: 1,
        temperature: 0.0,
    };
    let s = m.sample(&prompts, b, p, &greedy, &mut rng, None).unwrap();
    assert!(s.logprobs.iter().chain(&s.entropies).all(|&x| x == 0.0));
    let mut m2 = m.clone();
    let logits = m2.forward(&prompts, b, p).unwrap().to_vec();
    for bi in 0..b {
        let last = &logits[(bi * p + p - 1) * CFG.vocab..][..CFG.vocab];
        let best = last
            .iter()
            .enumerate()
            .fold(0, |best, (i, &x)| if x > last[best] { i } else { best });
        assert_eq!(s.tokens[bi * s.len + p] as usize, best);
    }

    // A mask that forbids everything is a typed error.
    let mut none =
        |_: usize, _: &[u32], valid: &mut [bool]| valid.iter_mut().for_each(|v| *v = false);
    let err = m
        .sample(&prompts, b, p, &params, &mut rng, Some(&mut none))
        .unwrap_err();
    assert!(matches!(err, ModelError::EmptyMask { row: 0, .. }), "{err}");
    // Too long, bad temperature.
    let long = SampleParams {
        max_new: 12,
        temperature: 1.0,
    };
    assert!(matches!(
        m.sample(&prompts, b, p, &long, &mut rng, None),
        Err(ModelError::TooLong { .. })
    ));
    let hot = SampleParams {
        max_new: 1,
        temperature: -1.0,
    };
    assert!(matches!(
        m.sample(&prompts, b, p, &hot, &mut rng, None),
        Err(ModelError::Invalid { .. })
    ));
}
