// cuda_emu.h — lets an unmodified CUDA C++ kernel file compile with g++ (-x c++ -std=c++17
// -DAEM_EMU -I kernels/emu) and run on the CPU emulator (emu_runtime.cpp).
//
// Model: every CUDA thread is a fiber on the OS worker that runs its block. Barriers and warp
// operations hand control to the block's scheduler, which releases them when every participant
// has arrived (and performs the shuffle / vote exchange). `__shared__` becomes `static
// thread_local`: a worker runs one block at a time and all fibers of the block live on it.
// Not emulated: inline PTX, tensor cores, cp.async, cooperative groups, __CUDA_ARCH__ paths.
#pragma once

// Standard headers first: the keyword macros below (__noinline__, __shared__) must not reach them.
#include <cassert>
#include <climits>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <math.h>  // isnan/isfinite/... and expf/... in the global namespace, as in CUDA
#include <type_traits>

#include "vector_types.h"
#include "cuda_fp16.h"

// ---- execution-space and storage keywords ---------------------------------------------------
#define __global__
#define __device__
#define __host__
#define __constant__
#define __managed__
#define __grid_constant__
#define __forceinline__ inline __attribute__((always_inline))
#define __noinline__ __attribute__((noinline))
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))
#define __shared__ static thread_local
// __restrict__ is native in g++.

// ---- the emulator's per-fiber / per-block state (defined in emu_runtime.cpp) -----------------
namespace aem_emu {
struct ThreadState {  // public prefix of a fiber
  uint3 thread_idx;
};
struct BlockState {  // the block a worker is running
  uint3 block_idx;
  dim3 block_dim;
  dim3 grid_dim;
  void* dyn_smem;
};
enum WarpKind : int {
  W_SHFL_IDX, W_SHFL_UP, W_SHFL_DOWN, W_SHFL_XOR, W_BALLOT, W_ANY, W_ALL, W_SYNCWARP,
  W_MATCH_ANY, W_REDUCE_ADD, W_REDUCE_MIN_U, W_REDUCE_MAX_U, W_REDUCE_MIN_I, W_REDUCE_MAX_I,
  W_KIND_COUNT
};
enum BarrierKind : int { B_SYNC, B_COUNT, B_AND, B_OR };

// Block until every lane of `mask` waits at the same warp operation; returns this lane's result.
uint64_t warp_op(int kind, unsigned mask, uint64_t val, int arg, int width, const char* file, int line);
// Block until every thread of the block waits here; returns the count/and/or result.
int barrier(int kind, int pred, const char* file, int line);
unsigned active_mask();
[[noreturn]] void fail(const char* what, const char* file, int line);
long long clock64();

template <typename T>
inline uint64_t to_bits(T v) {
  static_assert(sizeof(T) <= 8 && std::is_trivially_copyable<T>::value, "warp op on a type > 8 bytes");
  uint64_t b = 0;
  std::memcpy(&b, &v, sizeof(T));
  return b;
}
template <typename T>
inline T from_bits(uint64_t b) {
  T v;
  std::memcpy(&v, &b, sizeof(T));
  return v;
}
template <typename To, typename From>
inline To bit_cast(From f) {
  static_assert(sizeof(To) == sizeof(From), "size mismatch");
  To t;
  std::memcpy(&t, &f, sizeof(To));
  return t;
}
}  // namespace aem_emu

// `__thread` (not thread_local): plain TLS access, no C++ init wrappers on every threadIdx read.
extern __thread aem_emu::ThreadState* aem_emu_t_thread;
extern __thread aem_emu::BlockState* aem_emu_t_block;

// The current block's dynamic shared memory: 16-byte aligned, exactly the launch's size,
// refilled with 0xFF (NaN as floats) at each block start. kernels/common.cuh wraps it in a macro.
extern "C" void* aem_emu_dyn_smem(void);

#define threadIdx (aem_emu_t_thread->thread_idx)
#define blockIdx (aem_emu_t_block->block_idx)
#define blockDim (aem_emu_t_block->block_dim)
#define gridDim (aem_emu_t_block->grid_dim)
static constexpr int warpSize = 32;

// ---- barriers and warp operations -----------------------------------------------------------
// __builtin_FILE/LINE as default arguments record the call site for error messages.
#define AEM_EMU_SITE const char *aem_file = __builtin_FILE(), int aem_line = __builtin_LINE()

inline void __syncthreads(AEM_EMU_SITE) { aem_emu::barrier(aem_emu::B_SYNC, 1, aem_file, aem_line); }
inline int __syncthreads_count(int p, AEM_EMU_SITE) { return aem_emu::barrier(aem_emu::B_COUNT, p, aem_file, aem_line); }
inline int __syncthreads_and(int p, AEM_EMU_SITE) { return aem_emu::barrier(aem_emu::B_AND, p, aem_file, aem_line); }
inline int __syncthreads_or(int p, AEM_EMU_SITE) { return aem_emu::barrier(aem_emu::B_OR, p, aem_file, aem_line); }
inline void __syncwarp(unsigned mask = 0xffffffffu, AEM_EMU_SITE) {
  aem_emu::warp_op(aem_emu::W_SYNCWARP, mask, 0, 0, 32, aem_file, aem_line);
}

#define AEM_EMU_SHFL(NAME, KIND)                                                                 \
  template <typename T>                                                                          \
  inline T NAME(unsigned mask, T var, int arg, int width = 32, AEM_EMU_SITE) {                   \
    return aem_emu::from_bits<T>(                                                                \
        aem_emu::warp_op(aem_emu::KIND, mask, aem_emu::to_bits(var), arg, width, aem_file, aem_line)); \
  }
AEM_EMU_SHFL(__shfl_sync, W_SHFL_IDX)
AEM_EMU_SHFL(__shfl_up_sync, W_SHFL_UP)
AEM_EMU_SHFL(__shfl_down_sync, W_SHFL_DOWN)
AEM_EMU_SHFL(__shfl_xor_sync, W_SHFL_XOR)
#undef AEM_EMU_SHFL

inline unsigned __ballot_sync(unsigned mask, int p, AEM_EMU_SITE) {
  return (unsigned)aem_emu::warp_op(aem_emu::W_BALLOT, mask, p != 0, 0, 32, aem_file, aem_line);
}
inline int __any_sync(unsigned mask, int p, AEM_EMU_SITE) {
  return (int)aem_emu::warp_op(aem_emu::W_ANY, mask, p != 0, 0, 32, aem_file, aem_line);
}
inline int __all_sync(unsigned mask, int p, AEM_EMU_SITE) {
  return (int)aem_emu::warp_op(aem_emu::W_ALL, mask, p != 0, 0, 32, aem_file, aem_line);
}
inline unsigned __activemask() { return aem_emu::active_mask(); }
template <typename T>
inline unsigned __match_any_sync(unsigned mask, T v, AEM_EMU_SITE) {
  return (unsigned)aem_emu::warp_op(aem_emu::W_MATCH_ANY, mask, aem_emu::to_bits(v), 0, 32, aem_file, aem_line);
}
inline unsigned __reduce_add_sync(unsigned mask, unsigned v, AEM_EMU_SITE) {
  return (unsigned)aem_emu::warp_op(aem_emu::W_REDUCE_ADD, mask, v, 0, 32, aem_file, aem_line);
}
inline int __reduce_add_sync(unsigned mask, int v, AEM_EMU_SITE) {
  return (int)aem_emu::warp_op(aem_emu::W_REDUCE_ADD, mask, (unsigned)v, 0, 32, aem_file, aem_line);
}
inline unsigned __reduce_min_sync(unsigned mask, unsigned v, AEM_EMU_SITE) {
  return (unsigned)aem_emu::warp_op(aem_emu::W_REDUCE_MIN_U, mask, v, 0, 32, aem_file, aem_line);
}
inline unsigned __reduce_max_sync(unsigned mask, unsigned v, AEM_EMU_SITE) {
  return (unsigned)aem_emu::warp_op(aem_emu::W_REDUCE_MAX_U, mask, v, 0, 32, aem_file, aem_line);
}
inline int __reduce_min_sync(unsigned mask, int v, AEM_EMU_SITE) {
  return (int)aem_emu::warp_op(aem_emu::W_REDUCE_MIN_I, mask, (unsigned)v, 0, 32, aem_file, aem_line);
}
inline int __reduce_max_sync(unsigned mask, int v, AEM_EMU_SITE) {
  return (int)aem_emu::warp_op(aem_emu::W_REDUCE_MAX_I, mask, (unsigned)v, 0, 32, aem_file, aem_line);
}

// Fences: the blocks of a launch run on several OS threads, so these are real fences.
inline void __threadfence() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
inline void __threadfence_block() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
inline void __threadfence_system() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }

// ---- errors: reported to the launcher, never abort the process ------------------------------
inline void __trap(AEM_EMU_SITE) { aem_emu::fail("__trap()", aem_file, aem_line); }
inline void __brkpt(AEM_EMU_SITE) { aem_emu::fail("__brkpt()", aem_file, aem_line); }
// Device assert → launch error. (A kernel that includes <cassert>/<assert.h> after this header
// gets the host assert back; NVRTC-compatible kernels do not include it.)
#undef assert
#ifdef NDEBUG
#define assert(e) ((void)0)
#else
#define assert(e) ((e) ? (void)0 : aem_emu::fail("assertion failed: " #e, __FILE__, __LINE__))
#endif

inline long long clock64() { return aem_emu::clock64(); }
inline void __nanosleep(unsigned) {}

// ---- cached / streaming loads and stores: plain memory accesses here ------------------------
template <typename T> inline T __ldg(const T* p) { return *p; }
template <typename T> inline T __ldcg(const T* p) { return *p; }
template <typename T> inline T __ldca(const T* p) { return *p; }
template <typename T> inline T __ldcs(const T* p) { return *p; }
template <typename T> inline T __ldlu(const T* p) { return *p; }
template <typename T> inline T __ldcv(const T* p) { return *p; }
template <typename T> inline void __stcs(T* p, T v) { *p = v; }
template <typename T> inline void __stcg(T* p, T v) { *p = v; }
template <typename T> inline void __stwb(T* p, T v) { *p = v; }
template <typename T> inline void __stwt(T* p, T v) { *p = v; }

// ---- math ----------------------------------------------------------------------------------
// Fast-math intrinsics map to the accurate libm functions (the GPU's are less accurate; parity
// tolerances must cover that, not the emulator).
inline float __expf(float x) { return expf(x); }
inline float __exp10f(float x) { return exp10f(x); }
inline float __logf(float x) { return logf(x); }
inline float __log2f(float x) { return log2f(x); }
inline float __log10f(float x) { return log10f(x); }
inline float __powf(float x, float y) { return powf(x, y); }
inline float __sinf(float x) { return sinf(x); }
inline float __cosf(float x) { return cosf(x); }
inline float __tanf(float x) { return tanf(x); }
inline float __tanhf(float x) { return tanhf(x); }
inline float __fdividef(float a, float b) { return a / b; }
inline float __frcp_rn(float x) { return 1.0f / x; }
inline float __fsqrt_rn(float x) { return sqrtf(x); }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float __fmaf_rn(float a, float b, float c) { return fmaf(a, b, c); }
inline double __dadd_rn(double a, double b) { return a + b; }
inline double __dmul_rn(double a, double b) { return a * b; }
inline double __fma_rn(double a, double b, double c) { return fma(a, b, c); }
inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
inline double rsqrt(double x) { return 1.0 / sqrt(x); }
inline float __saturatef(float x) { return x != x ? 0.0f : fminf(fmaxf(x, 0.0f), 1.0f); }
inline int __float2int_rn(float x) { return (int)nearbyintf(x); }
inline int __float2int_rz(float x) { return (int)x; }
inline int __float2int_rd(float x) { return (int)floorf(x); }
inline int __float2int_ru(float x) { return (int)ceilf(x); }
inline unsigned __float2uint_rn(float x) { return (unsigned)nearbyintf(x); }
inline unsigned __float2uint_rz(float x) { return (unsigned)x; }
inline float __int2float_rn(int x) { return (float)x; }
inline float __uint2float_rn(unsigned x) { return (float)x; }
inline float __int_as_float(int x) { return aem_emu::bit_cast<float>(x); }
inline int __float_as_int(float x) { return aem_emu::bit_cast<int>(x); }
inline float __uint_as_float(unsigned x) { return aem_emu::bit_cast<float>(x); }
inline unsigned __float_as_uint(float x) { return aem_emu::bit_cast<unsigned>(x); }
inline double __longlong_as_double(long long x) { return aem_emu::bit_cast<double>(x); }
inline long long __double_as_longlong(double x) { return aem_emu::bit_cast<long long>(x); }

#define AEM_EMU_MINMAX(A, B, R)                              \
  inline R min(A a, B b) { return (R)a < (R)b ? (R)a : (R)b; } \
  inline R max(A a, B b) { return (R)a > (R)b ? (R)a : (R)b; }
AEM_EMU_MINMAX(int, int, int)
AEM_EMU_MINMAX(unsigned, unsigned, unsigned)
AEM_EMU_MINMAX(int, unsigned, unsigned)
AEM_EMU_MINMAX(unsigned, int, unsigned)
AEM_EMU_MINMAX(long, long, long)
AEM_EMU_MINMAX(unsigned long, unsigned long, unsigned long)
AEM_EMU_MINMAX(long long, long long, long long)
AEM_EMU_MINMAX(unsigned long long, unsigned long long, unsigned long long)
#undef AEM_EMU_MINMAX
// Floating min/max follow fminf/fmaxf (a NaN operand loses), as CUDA's do.
inline float min(float a, float b) { return fminf(a, b); }
inline float max(float a, float b) { return fmaxf(a, b); }
inline double min(double a, double b) { return fmin(a, b); }
inline double max(double a, double b) { return fmax(a, b); }
inline double min(float a, double b) { return fmin(a, b); }
inline double max(float a, double b) { return fmax(a, b); }
inline double min(double a, float b) { return fmin(a, b); }
inline double max(double a, float b) { return fmax(a, b); }

// ---- integer intrinsics ---------------------------------------------------------------------
inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
inline int __ffs(int x) { return __builtin_ffs(x); }
inline int __ffsll(long long x) { return __builtin_ffsll(x); }
inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz((unsigned)x); }
inline int __clzll(long long x) { return x == 0 ? 64 : __builtin_clzll((unsigned long long)x); }
inline unsigned __brev(unsigned x) {
  x = ((x >> 1) & 0x55555555u) | ((x & 0x55555555u) << 1);
  x = ((x >> 2) & 0x33333333u) | ((x & 0x33333333u) << 2);
  x = ((x >> 4) & 0x0F0F0F0Fu) | ((x & 0x0F0F0F0Fu) << 4);
  return __builtin_bswap32(x);
}
inline unsigned long long __brevll(unsigned long long x) {
  return ((unsigned long long)__brev((unsigned)x) << 32) | __brev((unsigned)(x >> 32));
}
inline unsigned __umulhi(unsigned a, unsigned b) { return (unsigned)(((unsigned long long)a * b) >> 32); }
inline int __mulhi(int a, int b) { return (int)(((long long)a * b) >> 32); }
inline unsigned long long __umul64hi(unsigned long long a, unsigned long long b) {
  return (unsigned long long)(((unsigned __int128)a * b) >> 64);
}
inline long long __mul64hi(long long a, long long b) { return (long long)(((__int128)a * b) >> 64); }
inline unsigned __byte_perm(unsigned x, unsigned y, unsigned s) {
  const unsigned long long v = ((unsigned long long)y << 32) | x;
  unsigned r = 0;
  for (int i = 0; i < 4; ++i) r |= (unsigned)((v >> (8 * ((s >> (4 * i)) & 7))) & 0xFF) << (8 * i);
  return r;
}

// ---- atomics (global or shared memory, from any worker) --------------------------------------
// Integer RMWs are GCC __atomic builtins; floating and min/max ones are compare-and-swap loops.
namespace aem_emu {
template <typename T, typename Bits, typename Op>
inline T cas_loop(T* p, Op op) {
  Bits* a = reinterpret_cast<Bits*>(p);
  Bits old = __atomic_load_n(a, __ATOMIC_RELAXED);
  for (;;) {
    const Bits nw = bit_cast<Bits>(static_cast<T>(op(bit_cast<T>(old))));
    if (__atomic_compare_exchange_n(a, &old, nw, true, __ATOMIC_SEQ_CST, __ATOMIC_RELAXED))
      return bit_cast<T>(old);
  }
}
}  // namespace aem_emu

#define AEM_EMU_ATOMIC_INT(T)                                                                     \
  inline T atomicAdd(T* p, T v) { return __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST); }             \
  inline T atomicSub(T* p, T v) { return __atomic_fetch_sub(p, v, __ATOMIC_SEQ_CST); }             \
  inline T atomicExch(T* p, T v) { return __atomic_exchange_n(p, v, __ATOMIC_SEQ_CST); }           \
  inline T atomicOr(T* p, T v) { return __atomic_fetch_or(p, v, __ATOMIC_SEQ_CST); }               \
  inline T atomicAnd(T* p, T v) { return __atomic_fetch_and(p, v, __ATOMIC_SEQ_CST); }             \
  inline T atomicXor(T* p, T v) { return __atomic_fetch_xor(p, v, __ATOMIC_SEQ_CST); }             \
  inline T atomicCAS(T* p, T cmp, T v) {                                                          \
    __atomic_compare_exchange_n(p, &cmp, v, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);           \
    return cmp;                                                                                   \
  }                                                                                               \
  inline T atomicMax(T* p, T v) { return aem_emu::cas_loop<T, T>(p, [v](T o) { return o > v ? o : v; }); } \
  inline T atomicMin(T* p, T v) { return aem_emu::cas_loop<T, T>(p, [v](T o) { return o < v ? o : v; }); }
AEM_EMU_ATOMIC_INT(int)
AEM_EMU_ATOMIC_INT(unsigned)
AEM_EMU_ATOMIC_INT(unsigned long long)
AEM_EMU_ATOMIC_INT(long long)
#undef AEM_EMU_ATOMIC_INT

inline float atomicAdd(float* p, float v) { return aem_emu::cas_loop<float, uint32_t>(p, [v](float o) { return o + v; }); }
inline double atomicAdd(double* p, double v) { return aem_emu::cas_loop<double, uint64_t>(p, [v](double o) { return o + v; }); }
inline __half atomicAdd(__half* p, __half v) { return aem_emu::cas_loop<__half, uint16_t>(p, [v](__half o) { return __hadd(o, v); }); }
inline float atomicExch(float* p, float v) { return aem_emu::bit_cast<float>(atomicExch(reinterpret_cast<unsigned*>(p), aem_emu::bit_cast<unsigned>(v))); }
inline float atomicMax(float* p, float v) { return aem_emu::cas_loop<float, uint32_t>(p, [v](float o) { return fmaxf(o, v); }); }
inline float atomicMin(float* p, float v) { return aem_emu::cas_loop<float, uint32_t>(p, [v](float o) { return fminf(o, v); }); }
inline unsigned short atomicCAS(unsigned short* p, unsigned short cmp, unsigned short v) {
  __atomic_compare_exchange_n(p, &cmp, v, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
  return cmp;
}
// CUDA wrap-around semantics: inc wraps to 0 past `lim`, dec wraps to `lim` at 0 or above it.
inline unsigned atomicInc(unsigned* p, unsigned lim) {
  return aem_emu::cas_loop<unsigned, unsigned>(p, [lim](unsigned o) { return o >= lim ? 0u : o + 1; });
}
inline unsigned atomicDec(unsigned* p, unsigned lim) {
  return aem_emu::cas_loop<unsigned, unsigned>(p, [lim](unsigned o) { return (o == 0 || o > lim) ? lim : o - 1; });
}
