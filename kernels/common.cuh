// common.cuh — helpers shared by the aem kernels: the params struct, warp/block reductions,
// f16 helpers, 64-bit indexing, dynamic shared memory, and the guards that let the same source
// compile with NVRTC/nvcc (CUDA) and with g++ against the CPU emulator (`-DAEM_EMU`).
//
// Rules this header keeps (and the kernels rely on):
// - Nothing here uses inline PTX, tensor cores, cp.async or cooperative groups (the emulator has
//   none of them); CUDA-only intrinsics sit behind `#ifndef AEM_EMU` with a plain path.
// - Reductions are deterministic: a fixed shuffle-down tree inside a warp, then warp 0 combines
//   the per-warp partials in warp order. The result depends only on blockDim.x and the data.
// - blockDim.x is any multiple of 32 up to 1024 (so at most 32 warps per block).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

// ---------------------------------------------------------------------------------------------
// Portability
// ---------------------------------------------------------------------------------------------

// Every kernel may be launched with up to 1024 threads, so ptxas must keep registers ≤ 64.
// AEM_LAUNCH_BOUNDS lets ptxas aim at its default occupancy (it often picks 32 registers = two
// 1024-thread blocks per SM). AEM_LAUNCH_BOUNDS_1 (min one block per SM) frees it to use up to
// 64: for kernels that would otherwise spill (the fused f32 kernel spills at 32 on sm_90).
#ifdef AEM_EMU
#define AEM_LAUNCH_BOUNDS(n)
#define AEM_LAUNCH_BOUNDS_1(n)
#else
#define AEM_LAUNCH_BOUNDS(n) __launch_bounds__(n)
#define AEM_LAUNCH_BOUNDS_1(n) __launch_bounds__(n, 1)
#endif
#define AEM_MAX_THREADS 1024
#define AEM_FULL_MASK 0xffffffffu

// Dynamic shared memory as an array of T named `name` (16-byte aligned).
#ifdef AEM_EMU
extern "C" void* aem_emu_dyn_smem(void);  // kernels/emu: this block's buffer
#define AEM_DYN_SMEM(T, name) T* name = reinterpret_cast<T*>(aem_emu_dyn_smem())
#else
#define AEM_DYN_SMEM(T, name)                                    \
  extern __shared__ __align__(16) unsigned char aem_dyn_smem_raw[]; \
  T* name = reinterpret_cast<T*>(aem_dyn_smem_raw)
#endif

__device__ __forceinline__ float aem_uint_as_float(unsigned int u) {
#ifdef AEM_EMU
  float f;
  __builtin_memcpy(&f, &u, sizeof f);
  return f;
#else
  return __uint_as_float(u);
#endif
}

__device__ __forceinline__ unsigned int aem_float_as_uint(float f) {
#ifdef AEM_EMU
  unsigned int u;
  __builtin_memcpy(&u, &f, sizeof u);
  return u;
#else
  return __float_as_uint(f);
#endif
}

// NVRTC has no INFINITY; build it from its bits.
#define AEM_INFINITY aem_uint_as_float(0x7f800000u)
#define AEM_LOG2E 1.4426950408889634f  // log2(e)
#define AEM_LN2 0.6931471805599453f    // ln(2)

// True for finite x (not NaN, not ±inf); a bit test, so fast-math cannot fold it away.
__device__ __forceinline__ bool aem_isfinite(float x) {
  return (aem_float_as_uint(x) & 0x7f800000u) != 0x7f800000u;
}

// A load that sees data another block wrote before a __threadfence() + atomic handshake:
// bypasses L1 (ld.global.cg). The emulator reads through a volatile pointer.
__device__ __forceinline__ float aem_ld_l2(const float* p) {
#ifdef AEM_EMU
  return *reinterpret_cast<const volatile float*>(p);
#else
  return __ldcg(p);
#endif
}

// ---------------------------------------------------------------------------------------------
// The loss-head configuration. Passed BY VALUE as the last kernel argument; the Rust side mirrors
// it with #[repr(C)]: 12 four-byte fields, 48 bytes, no pointers. Do not reorder.
// ---------------------------------------------------------------------------------------------
struct AemHeadParams {
  float inv_temperature;  // 1/τ; z = logit * inv_temperature
  float lambda;           // AEM λ ≥ 0
  float delta;            // AEM range guard δ ≥ 0
  float clip_low;         // ε_low
  float clip_high;        // ε_high
  float dual_clip;        // c > 1, or 0 = off
  float entropy_coef;     // β_H
  float kl_coef;          // β_KL (ref_logp may be NULL only when 0)
  float grad_scale;       // s
  int agg_mode;           // 0 token-mean, 1 seq-mean-token-mean, 2 seq-mean-token-sum, 3 ...-sum-norm
  float agg_norm;         // N_tok (0), N_resp (1, 2), C (3); w_t = 1/agg_norm, /len_r in mode 1
  int has_old_logp;       // 0: old_logp is NULL → on-policy (old = logp, ratio 1)
};
static_assert(sizeof(AemHeadParams) == 48, "AemHeadParams must stay 12 x 4 bytes (Rust mirror)");

// ---------------------------------------------------------------------------------------------
// Indexing
// ---------------------------------------------------------------------------------------------

// Element offset of row `row` in a row-major (rows, cols) matrix. 64-bit: T·V exceeds 2^31.
__device__ __forceinline__ long long aem_row_offset(long long row, int cols) {
  return row * (long long)cols;
}

// Global thread index over a 1-D grid, 64-bit.
__device__ __forceinline__ long long aem_global_tid() {
  return (long long)blockIdx.x * (long long)blockDim.x + (long long)threadIdx.x;
}

// ---------------------------------------------------------------------------------------------
// f16 / bf16 helpers
// ---------------------------------------------------------------------------------------------

__device__ __forceinline__ float aem_h2f(__half h) { return __half2float(h); }
__device__ __forceinline__ __half aem_f2h(float f) { return __float2half_rn(f); }
// Any 16-bit input element to f32 (exact for both).
__device__ __forceinline__ float aem_to_f32(__half h) { return __half2float(h); }
__device__ __forceinline__ float aem_to_f32(__nv_bfloat16 b) { return __bfloat162float(b); }

// 8 16-bit elements = 16 bytes, for one vector load/store (ld.global.v4 on the GPU).
template <typename T>
struct alignas(16) AemVec8 {
  T h[8];
};
typedef AemVec8<__half> AemHalf8;
// 4 floats = 16 bytes.
struct alignas(16) AemFloat4 {
  float f[4];
};

// Address in units of `elem_bytes`, modulo `per16` (= 16 / elem_bytes): how many elements the
// pointer sits past the previous 16-byte boundary.
template <typename T>
__device__ __forceinline__ int aem_misalign_elems(const T* p) {
  return (int)((reinterpret_cast<unsigned long long>(p) % 16ull) / sizeof(T));
}

// Store one f32 value as the gradient's element type (round to nearest even for f16). Returns 1
// if the stored value is not finite (|v| ≥ 65520 overflows f16), else 0: the gradient kernels
// count such entries so that an overflow is reported, not written silently.
__device__ __forceinline__ unsigned aem_store(__half* p, float v) {
  const __half h = aem_f2h(v);
  *p = h;
  return aem_isfinite(aem_h2f(h)) ? 0u : 1u;
}
__device__ __forceinline__ unsigned aem_store(__nv_bfloat16* p, float v) {
  const __nv_bfloat16 b = __float2bfloat16_rn(v);
  *p = b;
  return aem_isfinite(__bfloat162float(b)) ? 0u : 1u;
}
__device__ __forceinline__ unsigned aem_store(float* p, float v) {
  *p = v;
  return aem_isfinite(v) ? 0u : 1u;
}

// ---------------------------------------------------------------------------------------------
// Reductions. Warp versions return the result in lane 0 (other lanes hold partial values);
// block versions return it in every thread. All threads of the block must call the block
// versions (they contain __syncthreads).
// ---------------------------------------------------------------------------------------------

__device__ __forceinline__ float aem_warp_sum(float v) {
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) v += __shfl_down_sync(AEM_FULL_MASK, v, off);
  return v;
}

__device__ __forceinline__ float aem_warp_max(float v) {
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) v = fmaxf(v, __shfl_down_sync(AEM_FULL_MASK, v, off));
  return v;
}

__device__ __forceinline__ float aem_warp_min(float v) {
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) v = fminf(v, __shfl_down_sync(AEM_FULL_MASK, v, off));
  return v;
}

// Broadcast lane 0's value to the whole warp.
__device__ __forceinline__ float aem_warp_bcast0(float v) { return __shfl_sync(AEM_FULL_MASK, v, 0); }

// Block-wide sum, returned to every thread. Fixed order: lane tree per warp, then warp 0 combines
// the warp partials with the same tree (warps ≥ nwarps contribute 0).
__device__ __forceinline__ float aem_block_sum(float v) {
  __shared__ float partial[32];
  __shared__ float result;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  v = aem_warp_sum(v);
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  if (warp == 0) {
    float w = lane < nwarps ? partial[lane] : 0.f;
    w = aem_warp_sum(w);
    if (lane == 0) result = w;
  }
  __syncthreads();
  return result;
}

// Block-wide max, returned to every thread.
__device__ __forceinline__ float aem_block_max(float v) {
  __shared__ float partial[32];
  __shared__ float result;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  v = aem_warp_max(v);
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  if (warp == 0) {
    float w = lane < nwarps ? partial[lane] : -AEM_INFINITY;
    w = aem_warp_max(w);
    if (lane == 0) result = w;
  }
  __syncthreads();
  return result;
}
