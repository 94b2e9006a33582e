// cuda_bf16.h — CPU-emulator stand-in for CUDA's <cuda_bf16.h> (only on the -I path of AEM_EMU
// builds). `__nv_bfloat16` is a plain struct; the kernels only convert it to and from float.
//
// Conversions are bit-exact with the Rust `half` crate (bf16::from_f32 / to_f32; checked over
// all 2^32 floats by tests/emu_bf16.rs through `aem_emu_f32_to_bf16_bits`): float→bf16 rounds
// to nearest even (overflowing to ±inf, keeping subnormals), a NaN keeps its sign and top
// payload bits with the quiet bit set; bf16→float is exact (a NaN comes back quiet).
// Note: CUDA itself returns the canonical NaN 0x7FFF from __float2bfloat16_rn; we follow `half`
// because the parity tests compare against it.
#pragma once
#include <cstdint>
#include <cstring>

namespace aem_emu_bf16 {

// Port of half-2.7.1 `f32_to_bf16` (round to nearest, ties to even).
inline unsigned short f32_to_bf16_bits(float value) {
  uint32_t x;
  std::memcpy(&x, &value, 4);
  if ((x & 0x7FFFFFFFu) > 0x7F800000u) return (unsigned short)((x >> 16) | 0x0040u);  // NaN
  const uint32_t round_bit = 0x00008000u;
  // round bit set and (sticky bits or result LSB set) ⇒ round up; a carry bumps the exponent.
  if ((x & round_bit) && (x & (3 * round_bit - 1))) return (unsigned short)((x >> 16) + 1);
  return (unsigned short)(x >> 16);
}

// Port of half-2.7.1 `bf16_to_f32` (exact; NaN gets the quiet bit).
inline float bf16_bits_to_f32(unsigned short b) {
  uint32_t out = (b & 0x7FFFu) > 0x7F80u ? ((uint32_t)b | 0x0040u) << 16 : (uint32_t)b << 16;
  float f;
  std::memcpy(&f, &out, 4);
  return f;
}

}  // namespace aem_emu_bf16

struct __nv_bfloat16_raw {
  unsigned short x;
};

struct alignas(2) __nv_bfloat16 {
  unsigned short __x;
  __nv_bfloat16() = default;  // trivial, as __half
  __nv_bfloat16(const __nv_bfloat16_raw& r) : __x(r.x) {}
  __nv_bfloat16(float f) : __x(aem_emu_bf16::f32_to_bf16_bits(f)) {}
  operator float() const { return aem_emu_bf16::bf16_bits_to_f32(__x); }
};

typedef __nv_bfloat16 nv_bfloat16;

inline __nv_bfloat16 __float2bfloat16(float f) { return __nv_bfloat16(f); }
inline __nv_bfloat16 __float2bfloat16_rn(float f) { return __nv_bfloat16(f); }
inline float __bfloat162float(__nv_bfloat16 b) { return aem_emu_bf16::bf16_bits_to_f32(b.__x); }
inline unsigned short __bfloat16_as_ushort(__nv_bfloat16 b) { return b.__x; }
inline __nv_bfloat16 __ushort_as_bfloat16(unsigned short u) { return __nv_bfloat16_raw{u}; }
