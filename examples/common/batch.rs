//! The hand-made batch the examples share: 2 tasks (groups) × 2 rollouts, one turn each, over a
//! 5-token vocabulary, packed with a 1-row prompt before each response.

use aem::head::file::{HeadData, LogitsVec};
use half::f16;

/// logits (T = 12, V = 5): each response's rows are sharper or flatter, so the mean entropies
/// differ within a group and AEM moves α.
pub fn batch() -> HeadData {
    let sharp = [3.0f32, 0.5, 2.0, 1.0];
    let mut logits = Vec::new();
    let mut targets = Vec::new();
    let (mut resp_start, mut resp_len) = (Vec::new(), Vec::new());
    let mut t = 0u32;
    for (r, &s) in sharp.iter().enumerate() {
        // one prompt row (unowned), then a 2-row response
        for row in 0..3u32 {
            for v in 0..5u32 {
                let x = if v == (row + r as u32) % 5 {
                    s
                } else {
                    -s * 0.1 * v as f32
                };
                logits.push(f16::from_f32(x));
            }
            targets.push((row + r as u32) % 5);
        }
        resp_start.push(t + 1);
        resp_len.push(2);
        t += 3;
    }
    HeadData {
        logits: LogitsVec::F16(logits),
        vocab: 5,
        targets,
        resp_start,
        resp_len,
        resp_group: vec![0, 0, 1, 1],
        n_groups: 2,
        // group 0: one success, one failure; group 1: likewise
        adv_base: vec![1.0, -1.0, 1.0, -1.0],
        old_logp: None,
        ref_logp: None,
    }
}

/// Exits non-zero with `what` when `ok` is false.
pub fn check(ok: bool, what: &str) {
    if ok {
        println!("  check: {what} — ok");
    } else {
        eprintln!("  check FAILED: {what}");
        std::process::exit(1);
    }
}
