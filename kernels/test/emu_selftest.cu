// emu_selftest.cu — test-only kernels for the CPU emulator (never shipped). Each exercises one
// piece of the execution model; several are wrong on purpose and must produce a launch error.
// Compiled by emu_selftest.sh with g++ -x c++ -DAEM_EMU -I kernels/emu.
#include <cuda_fp16.h>

#ifdef AEM_EMU
#define DYN_SMEM(T, name) T* name = reinterpret_cast<T*>(aem_emu_dyn_smem())
#else
#define DYN_SMEM(T, name) extern __shared__ __align__(16) unsigned char name##_raw[]; T* name = reinterpret_cast<T*>(name##_raw)
#endif

// --- correct kernels --------------------------------------------------------------------------

// Tree reduction in static shared memory; one partial sum per block. blockDim.x == 256.
extern "C" __global__ void block_sum(const float* __restrict__ x, float* __restrict__ out, int n) {
  __shared__ float s[256];
  const int t = threadIdx.x, i = blockIdx.x * blockDim.x + t;
  s[t] = i < n ? x[i] : 0.0f;
  __syncthreads();
  for (int k = blockDim.x / 2; k > 0; k >>= 1) {
    if (t < k) s[t] += s[t + k];
    __syncthreads();
  }
  if (t == 0) out[blockIdx.x] = s[0];
}

// Per warp: xor butterfly (every lane gets the sum), down-reduction (lane 0), inclusive scan with
// __shfl_up_sync, broadcast of lane 7, and a width-8 xor reduction.
extern "C" __global__ void warp_ops(const float* x, float* xor_sum, float* down_sum, float* scan,
                                    float* bcast, float* seg8) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x, lane = threadIdx.x % 32;
  const float v = x[i];
  float a = v, d = v, s = v, g = v;
  for (int o = 16; o > 0; o >>= 1) a += __shfl_xor_sync(0xffffffffu, a, o);
  for (int o = 16; o > 0; o >>= 1) d += __shfl_down_sync(0xffffffffu, d, o);
  for (int o = 1; o < 32; o <<= 1) {
    const float u = __shfl_up_sync(0xffffffffu, s, o);
    if (lane >= o) s += u;
  }
  for (int o = 4; o > 0; o >>= 1) g += __shfl_xor_sync(0xffffffffu, g, o, 8);
  xor_sum[i] = a;
  down_sum[i] = d;
  scan[i] = s;
  bcast[i] = __shfl_sync(0xffffffffu, v, 7);
  seg8[i] = g;
}

// 64-bit shuffles (double, unsigned long long) keep all bits.
extern "C" __global__ void shfl64(const double* x, double* out_d, unsigned long long* out_u) {
  const int i = threadIdx.x;
  out_d[i] = __shfl_sync(0xffffffffu, x[i], (i + 1) % 32);
  const unsigned long long u = 0x0123456789ABCDEFull ^ (unsigned long long)i << 40;
  out_u[i] = __shfl_xor_sync(0xffffffffu, u, 1);
}

extern "C" __global__ void votes(const int* p, unsigned* ballot, int* any, int* all, unsigned* match,
                                 unsigned* radd) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  ballot[i] = __ballot_sync(0xffffffffu, p[i]);
  any[i] = __any_sync(0xffffffffu, p[i]);
  all[i] = __all_sync(0xffffffffu, p[i]);
  match[i] = __match_any_sync(0xffffffffu, p[i]);
  radd[i] = __reduce_add_sync(0xffffffffu, (unsigned)p[i]);
}

extern "C" __global__ void sync_preds(const int* p, int* cnt, int* all, int* any) {
  const int t = threadIdx.x;
  cnt[t] = __syncthreads_count(p[t]);
  all[t] = __syncthreads_and(p[t]);
  any[t] = __syncthreads_or(p[t]);
}

// Dynamic shared memory: starts poisoned (all 0xFF), then a reversal through it.
extern "C" __global__ void dyn_smem(float* out, int* poisoned) {
  DYN_SMEM(float, s);
  const int t = threadIdx.x, n = blockDim.x;
  poisoned[blockIdx.x * n + t] = __float_as_uint(s[t]) == 0xFFFFFFFFu;
  s[t] = (float)(blockIdx.x * 1000 + t);
  __syncthreads();
  out[blockIdx.x * n + t] = s[n - 1 - t];
}

// Atomics across blocks: integer histogram, float/double sums of integers (exact), min/max.
extern "C" __global__ void atomics(const int* x, int n, unsigned* hist, int nbins, float* fsum,
                                   double* dsum, int* imax, int* imin, unsigned long long* usum) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  atomicAdd(&hist[x[i] % nbins], 1u);
  atomicAdd(fsum, (float)x[i]);
  atomicAdd(dsum, (double)x[i]);
  atomicMax(imax, x[i]);
  atomicMin(imin, x[i]);
  atomicAdd(usum, (unsigned long long)x[i]);
}

// The last block to finish sums all blocks' partials (threadfence + atomicInc pattern).
extern "C" __global__ void last_block_sum(const float* x, int n, float* partial, unsigned* counter,
                                          float* total) {
  __shared__ float s[128];
  __shared__ bool am_last;
  const int t = threadIdx.x, i = blockIdx.x * blockDim.x + t;
  s[t] = i < n ? x[i] : 0.0f;
  __syncthreads();
  for (int k = 64; k > 0; k >>= 1) {
    if (t < k) s[t] += s[t + k];
    __syncthreads();
  }
  if (t == 0) {
    partial[blockIdx.x] = s[0];
    __threadfence();  // partial visible before the counter says so
    am_last = atomicInc(counter, gridDim.x - 1) == gridDim.x - 1;  // wraps to 0 for reuse
  }
  __syncthreads();
  if (am_last && t == 0) {
    float acc = 0.0f;
    for (unsigned b = 0; b < gridDim.x; ++b) acc += partial[b];
    *total = acc;
  }
}

extern "C" __global__ void f2h(const float* in, unsigned short* out, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) out[i] = __half_as_ushort(__float2half_rn(in[i]));
}
extern "C" __global__ void h2f(const unsigned short* in, float* out, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) out[i] = __half2float(__ushort_as_half(in[i]));
}

// Index mapping of a 3-D grid of 3-D blocks, plus one parameter of every signature kind.
struct Params {
  int a;
  float b;
  double c;
};
extern "C" __global__ void indices(uint4* out, Params p, int i32, unsigned u32, long long i64,
                                   unsigned long long u64, float f, double d, double* echo) {
  const unsigned b = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
  const unsigned t = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
  const unsigned nt = blockDim.x * blockDim.y * blockDim.z;
  out[b * nt + t] = make_uint4(b, t, threadIdx.x + 100 * threadIdx.y + 10000 * threadIdx.z,
                               blockIdx.x + 100 * blockIdx.y + 10000 * blockIdx.z);
  if (b == 0 && t == 0) {
    echo[0] = p.a; echo[1] = p.b; echo[2] = p.c; echo[3] = i32; echo[4] = u32;
    echo[5] = (double)i64; echo[6] = (double)u64; echo[7] = f; echo[8] = d;
  }
}

// A template kernel instantiated for registration under an explicit name.
template <int SCALE>
__global__ void scale_t(float* x) { x[threadIdx.x] *= SCALE; }

// Online log-sum-exp of each row: one block per row, 256 threads, warp shuffles + shared memory.
__device__ __forceinline__ void lse_merge(float& m, float& s, float m2, float s2) {
  const float mn = fmaxf(m, m2);
  if (mn == -INFINITY) return;  // both empty
  s = (m == -INFINITY ? 0.0f : s * __expf(m - mn)) + (m2 == -INFINITY ? 0.0f : s2 * __expf(m2 - mn));
  m = mn;
}
extern "C" __global__ void row_lse(const float* __restrict__ x, float* __restrict__ lse, int cols) {
  __shared__ float sm[32], ss[32];
  const float* row = x + (size_t)blockIdx.x * cols;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, nw = blockDim.x / 32;
  float m = -INFINITY, s = 0.0f;
  for (int c = threadIdx.x; c < cols; c += blockDim.x) {
    const float v = row[c];
    if (v > m) { s = (m == -INFINITY ? 0.0f : s * __expf(m - v)) + 1.0f; m = v; }
    else s += __expf(v - m);
  }
  for (int o = 16; o > 0; o >>= 1)
    lse_merge(m, s, __shfl_xor_sync(0xffffffffu, m, o), __shfl_xor_sync(0xffffffffu, s, o));
  if (lane == 0) { sm[warp] = m; ss[warp] = s; }
  __syncthreads();
  if (warp == 0) {
    m = lane < nw ? sm[lane] : -INFINITY;
    s = lane < nw ? ss[lane] : 0.0f;
    for (int o = 16; o > 0; o >>= 1)
      lse_merge(m, s, __shfl_xor_sync(0xffffffffu, m, o), __shfl_xor_sync(0xffffffffu, s, o));
    if (lane == 0) lse[blockIdx.x] = m + logf(s);
  }
}

// Scheduler micro-benchmark: `iters` rounds of __syncwarp and __syncthreads.
extern "C" __global__ void sync_spin(int iters, int* out) {
  int acc = 0;
  for (int k = 0; k < iters; ++k) {
    acc += __shfl_xor_sync(0xffffffffu, k, 1);
    __syncthreads();
  }
  out[blockIdx.x * blockDim.x + threadIdx.x] = acc;
}

// --- wrong on purpose ---------------------------------------------------------------------------

// Missing barrier between the write and the read of a neighbour's slot: the result depends on
// the order the emulator runs the threads in.
extern "C" __global__ void missing_barrier(float* out) {
  DYN_SMEM(float, s);
  const int t = threadIdx.x;
  s[t] = (float)t;
  // __syncthreads() missing here
  out[t] = s[(t + 1) % blockDim.x];
}

// Threads 0..15 return early: the others wait at a barrier that can never complete.
extern "C" __global__ void skip_barrier(float* out) {
  if (threadIdx.x < 16) return;
  __syncthreads();
  out[threadIdx.x] = 1.0f;
}

// Half the block waits at one __syncthreads, half at another.
extern "C" __global__ void divergent_barrier(float* out) {
  if (threadIdx.x % 2) {
    __syncthreads();
  } else {
    __syncthreads();
  }
  out[threadIdx.x] = 1.0f;
}

// Lanes of one full-mask operation split between a shuffle and a ballot.
extern "C" __global__ void mixed_warp_ops(int* out) {
  const int t = threadIdx.x;
  out[t] = t < 16 ? __shfl_xor_sync(0xffffffffu, t, 1) : (int)__ballot_sync(0xffffffffu, t & 1);
}

// Lane 31 exits, the rest shuffle with a mask that names it.
extern "C" __global__ void shfl_exited_lane(int* out) {
  const int t = threadIdx.x;
  if (t == 31) return;
  out[t] = __shfl_down_sync(0xffffffffu, t, 1);
}

// Thread 0 waits at __syncwarp for lane 1, which waits at __syncthreads: a deadlock.
extern "C" __global__ void warp_vs_block_deadlock(int* out) {
  if (threadIdx.x == 0) __syncwarp(0x3u);
  else __syncthreads();
  out[threadIdx.x] = 1;
}

extern "C" __global__ void trap_kernel(int* out) {
  if (blockIdx.x == 1 && threadIdx.x == 5) __trap();
  out[blockIdx.x * blockDim.x + threadIdx.x] = 1;
}

extern "C" __global__ void assert_kernel(const int* x) { assert(x[threadIdx.x] >= 0); }

// Writes one element past the end of `out` (found by AddressSanitizer only).
extern "C" __global__ void oob_write(float* out, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) out[i + 1] = 1.0f;  // planted bug: should be out[i]
}

// Spills a 64-entry local array across a barrier to exercise fiber stacks.
extern "C" __global__ void stack_use(float* out) {
  float a[64];
  for (int k = 0; k < 64; ++k) a[k] = (float)(threadIdx.x + k);
  __syncthreads();
  float s = 0.0f;
  for (int k = 0; k < 64; ++k) s += a[(k * 7) % 64];
  out[threadIdx.x] = s;
}
