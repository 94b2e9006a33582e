// cuda_fp16.h — CPU-emulator stand-in for CUDA's <cuda_fp16.h> (only on the -I path of AEM_EMU
// builds). `__half` / `__half2` are plain structs; arithmetic goes through float and rounds back.
//
// Conversions are bit-exact with the Rust `half` crate (f16::from_f32 / to_f32, which equal the
// x86 F16C instructions): float→half rounds to nearest even, overflows to ±inf, keeps subnormals,
// and maps NaN to a quiet NaN with the sign and the top 10 payload bits (0x7FC00000 → 0x7E00).
// half→float is exact (a signalling-NaN half comes back quiet, as in `half` and F16C).
// Note: CUDA itself returns the canonical NaN 0x7FFF from __float2half; we follow `half` because
// the parity tests compare against it.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>

#include "vector_types.h"  // float2 for __half22float2 / __float22half2_rn

namespace aem_emu_fp16 {

// Port of half-2.7.1 `f32_to_f16_fallback` (round to nearest, ties to even).
inline unsigned short f32_to_f16_bits(float value) {
  uint32_t x;
  std::memcpy(&x, &value, 4);
  const uint32_t sign = x & 0x80000000u, exp = x & 0x7F800000u, man = x & 0x007FFFFFu;
  if (exp == 0x7F800000u)  // inf or NaN: keep the payload's top bits, force quiet for NaN
    return (unsigned short)((sign >> 16) | 0x7C00u | (man ? 0x0200u : 0u) | (man >> 13));
  const uint32_t half_sign = sign >> 16;
  const int half_exp = (int)(exp >> 23) - 127 + 15;
  if (half_exp >= 0x1F) return (unsigned short)(half_sign | 0x7C00u);  // overflow → ±inf
  if (half_exp <= 0) {                                                 // subnormal or zero
    if (14 - half_exp > 24) return (unsigned short)half_sign;
    const uint32_t m = man | 0x00800000u;
    uint32_t half_man = m >> (14 - half_exp);
    const uint32_t round_bit = 1u << (13 - half_exp);
    // round bit set and (sticky bits or result LSB set) ⇒ round up: ties to even.
    if ((m & round_bit) && (m & (3 * round_bit - 1))) half_man += 1;
    return (unsigned short)(half_sign | half_man);
  }
  const uint32_t bits = half_sign | ((uint32_t)half_exp << 10) | (man >> 13);
  // A carry out of the mantissa correctly bumps the exponent (up to inf).
  return (unsigned short)(((man & 0x1000u) && (man & 0x2FFFu)) ? bits + 1 : bits);
}

// Port of half-2.7.1 `f16_to_f32_fallback` (exact; NaN gets the quiet bit).
inline float f16_bits_to_f32(unsigned short h) {
  uint32_t out;
  const uint32_t sign = (uint32_t)(h & 0x8000u) << 16, exp = h & 0x7C00u, man = h & 0x03FFu;
  if ((h & 0x7FFFu) == 0) {
    out = sign;
  } else if (exp == 0x7C00u) {
    out = man == 0 ? (sign | 0x7F800000u) : (sign | 0x7FC00000u | (man << 13));
  } else if (exp == 0) {  // subnormal: normalise
    const int e = (__builtin_clz(man) - 16) - 6;  // leading zeros of the 10-bit mantissa
    out = sign | ((uint32_t)(127 - 15 - e) << 23) | ((man << (14 + e)) & 0x7FFFFFu);
  } else {
    out = sign | ((uint32_t)((int)(exp >> 10) - 15 + 127) << 23) | (man << 13);
  }
  float f;
  std::memcpy(&f, &out, 4);
  return f;
}

}  // namespace aem_emu_fp16

struct __half_raw {
  unsigned short x;
};

struct alignas(2) __half {
  unsigned short __x;
  __half() = default;  // trivial, so `__shared__ __half s[N]` needs no dynamic initialisation
  __half(const __half_raw& r) : __x(r.x) {}
  __half(float f) : __x(aem_emu_fp16::f32_to_f16_bits(f)) {}
  operator float() const { return aem_emu_fp16::f16_bits_to_f32(__x); }
  operator __half_raw() const { return __half_raw{__x}; }
  __half& operator=(float f) { __x = aem_emu_fp16::f32_to_f16_bits(f); return *this; }
};

struct alignas(4) __half2 {
  __half x, y;
  __half2() = default;
  __half2(__half a, __half b) : x(a), y(b) {}
};

typedef __half half;
typedef __half2 half2;

inline __half __float2half(float f) { return __half(f); }
inline __half __float2half_rn(float f) { return __half(f); }
inline float __half2float(__half h) { return aem_emu_fp16::f16_bits_to_f32(h.__x); }
inline __half2 __halves2half2(__half a, __half b) { return __half2(a, b); }
inline __half2 __half2half2(__half a) { return __half2(a, a); }
inline __half __low2half(__half2 h) { return h.x; }
inline __half __high2half(__half2 h) { return h.y; }
inline float __low2float(__half2 h) { return __half2float(h.x); }
inline float __high2float(__half2 h) { return __half2float(h.y); }
inline __half2 __float22half2_rn(float2 f) { return __half2(__half(f.x), __half(f.y)); }
inline __half2 __floats2half2_rn(float a, float b) { return __half2(__half(a), __half(b)); }
inline __half2 __float2half2_rn(float a) { return __half2(__half(a), __half(a)); }
inline float2 __half22float2(__half2 h) { return float2{__half2float(h.x), __half2float(h.y)}; }
inline unsigned short __half_as_ushort(__half h) { return h.__x; }
inline short __half_as_short(__half h) { return (short)h.__x; }
inline __half __ushort_as_half(unsigned short u) { return __half_raw{u}; }
inline __half __short_as_half(short s) { return __half_raw{(unsigned short)s}; }
inline bool __hisnan(__half h) { return (h.__x & 0x7FFFu) > 0x7C00u; }
inline int __hisinf(__half h) {  // CUDA: -1 for -inf, 1 for +inf, else 0
  return h.__x == 0x7C00u ? 1 : h.__x == 0xFC00u ? -1 : 0;
}
inline __half __habs(__half h) { return __half_raw{(unsigned short)(h.__x & 0x7FFFu)}; }
inline __half __hneg(__half h) { return __half_raw{(unsigned short)(h.__x ^ 0x8000u)}; }
// fmaxf/fminf semantics: a NaN operand loses to a number (as CUDA's __hmax/__hmin).
inline __half __hmax(__half a, __half b) { return __half(std::fmax((float)a, (float)b)); }
inline __half __hmin(__half a, __half b) { return __half(std::fmin((float)a, (float)b)); }
inline __half __hadd(__half a, __half b) { return __half((float)a + (float)b); }
inline __half __hsub(__half a, __half b) { return __half((float)a - (float)b); }
inline __half __hmul(__half a, __half b) { return __half((float)a * (float)b); }  // exact in float
inline __half __hdiv(__half a, __half b) { return __half((float)a / (float)b); }
// Through double: exact product, one rounding of the sum to double, then double→float→half; can
// differ from a true fused op in the last bit only in extreme exponent spreads.
inline __half __hfma(__half a, __half b, __half c) {
  return __half((float)((double)(float)a * (double)(float)b + (double)(float)c));
}
inline bool __heq(__half a, __half b) { return (float)a == (float)b; }
inline bool __hne(__half a, __half b) { return (float)a != (float)b; }
inline bool __hlt(__half a, __half b) { return (float)a < (float)b; }
inline bool __hle(__half a, __half b) { return (float)a <= (float)b; }
inline bool __hgt(__half a, __half b) { return (float)a > (float)b; }
inline bool __hge(__half a, __half b) { return (float)a >= (float)b; }
inline __half2 __hadd2(__half2 a, __half2 b) { return __half2(__hadd(a.x, b.x), __hadd(a.y, b.y)); }
inline __half2 __hsub2(__half2 a, __half2 b) { return __half2(__hsub(a.x, b.x), __hsub(a.y, b.y)); }
inline __half2 __hmul2(__half2 a, __half2 b) { return __half2(__hmul(a.x, b.x), __hmul(a.y, b.y)); }
inline __half2 __hfma2(__half2 a, __half2 b, __half2 c) {
  return __half2(__hfma(a.x, b.x, c.x), __hfma(a.y, b.y, c.y));
}

// Operators on (__half, __half) through float. As in CUDA, mixing `__half` with `float` in one
// binary expression is ambiguous (both convert implicitly); write the conversion out.
inline __half operator+(__half a, __half b) { return __hadd(a, b); }
inline __half operator-(__half a, __half b) { return __hsub(a, b); }
inline __half operator*(__half a, __half b) { return __hmul(a, b); }
inline __half operator/(__half a, __half b) { return __hdiv(a, b); }
inline __half operator-(__half a) { return __hneg(a); }
inline __half operator+(__half a) { return a; }
inline __half& operator+=(__half& a, __half b) { return a = a + b; }
inline __half& operator-=(__half& a, __half b) { return a = a - b; }
inline __half& operator*=(__half& a, __half b) { return a = a * b; }
inline __half& operator/=(__half& a, __half b) { return a = a / b; }
inline bool operator==(__half a, __half b) { return __heq(a, b); }
inline bool operator!=(__half a, __half b) { return __hne(a, b); }
inline bool operator<(__half a, __half b) { return __hlt(a, b); }
inline bool operator<=(__half a, __half b) { return __hle(a, b); }
inline bool operator>(__half a, __half b) { return __hgt(a, b); }
inline bool operator>=(__half a, __half b) { return __hge(a, b); }
