//! The emulator's `__nv_bfloat16` conversions (kernels/emu/cuda_bf16.h) against the Rust `half`
//! crate: float→bf16 on all 2^32 floats and bf16→float on all 2^16 values, bit for bit (NaN
//! payloads included), so the emulated bf16 kernels round exactly as the reference does.

use aem::device::emu;
use half::bf16;
use rayon::prelude::*;

#[test]
fn float_to_bf16_matches_half_on_every_float() {
    // 256 chunks of 2^24 floats, in parallel; reports the first mismatch of each chunk.
    let bad: Vec<(u32, u16, u16)> = (0u32..256)
        .into_par_iter()
        .filter_map(|hi| {
            (0u32..1 << 24).find_map(|lo| {
                let bits = hi << 24 | lo;
                let f = f32::from_bits(bits);
                let (got, want) = (emu::f32_to_bf16_bits(f), bf16::from_f32(f).to_bits());
                (got != want).then_some((bits, got, want))
            })
        })
        .collect();
    assert!(
        bad.is_empty(),
        "{} chunks mismatch, first: {:#010x} → emu {:#06x}, half {:#06x}",
        bad.len(),
        bad[0].0,
        bad[0].1,
        bad[0].2
    );
}

#[test]
fn bf16_to_float_matches_half_on_every_bf16() {
    for b in 0..=u16::MAX {
        let (got, want) = (emu::bf16_bits_to_f32(b), bf16::from_bits(b).to_f32());
        assert_eq!(got.to_bits(), want.to_bits(), "bf16 {b:#06x}");
    }
}
