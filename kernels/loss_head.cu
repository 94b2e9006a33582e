// loss_head.cu — the AEM loss head (shared/design/AEM.md §1–6) as CUDA kernels.
//
// Shape letters: T rows of the packed batch (rows of the logits), V vocabulary, R responses,
// G groups. All float math is f32; logits are f16 or bf16 (T, V) row-major (`{in}` in a kernel
// name); gradients are f16, bf16 or f32 (`{out}`); element offsets are 64-bit.
//
// Kernels (a version number is never reused; each version adds one idea over the previous one).
// Every version is instantiated per dtype from one template: {in} ∈ {f16, bf16},
// {out} ∈ {f16, bf16, f32}; the names below are the entry points.
//
//   token_stats_{in}_v1    one thread per row, scalar online max/sum/Σe·(z−m): the naive port
//                          of the reference loop.
//   token_stats_{in}_v2    one block per row, one pass: per-thread online state over 16-byte
//                          vector loads (8 elements; a scalar head/tail aligns any V and any row
//                          address), then a fixed warp-shuffle + block tree merge.
//   token_stats_{in}_v3    one warp per row (for small V): the v2 partition over 32 lanes and a
//                          warp-only merge, no __syncthreads.
//   resp_stats_v1          one thread per response: surprisal Σ−logp and mean entropy ΣH/len,
//                          rows in increasing order (bitwise reproducible).
//   aem_alpha_v1           one thread per group: min/max of mean entropy, the δ guard,
//                          w = exp(−λ H̃), α = w / mean w, adv = α · adv_base.
//   loss_head_fwd_{in}_v1  the fused forward: token_stats_{in}_v2 per row, then the last block to
//                          finish a response (integer counter + __threadfence) runs resp_stats
//                          for it, and the last response of a group runs aem_alpha for it.
//                          No float atomics: bitwise equal to token_stats_{in}_v2 (same
//                          blockDim) + resp_stats_v1 + aem_alpha_v1, run to run.
//   policy_grad_{in}_{out}_v1
//                          the backward: one block per row; every thread computes ρ, ℓ_t, g_t
//                          (identical values, no barrier), thread 0 writes token_loss, the block
//                          streams the row once writing dlogits (in place allowed when
//                          {in} = {out}).
//   loss_head_fused_{in}_{out}_v1
//                          forward+backward of the policy-update pass (adv fixed): token stats,
//                          ℓ_t, g_t and dlogits in one launch; the row is kept in dynamic shared
//                          memory when it fits (one read of the row), else read twice. Bitwise
//                          equal to token_stats_{in}_v2 + policy_grad_{in}_{out}_v1 (same
//                          blockDim).
//   loss_reduce_v1         Σ_t w_t ℓ_t → one f32, single block, fixed strided order + fixed tree.
//
// Numerics shared by all versions:
// - Exact shift, then scale: m = max x in the logits' own units, d = (x − m)·c with
//   c = log2e/τ, s = Σ 2^d, su = Σ 2^d·d. x − m of two f16 values is exact in f32 when
//   x ≥ m/2 (Sterbenz) and otherwise rounded once relative to itself, so every exponent carries
//   f32 rounding of its own size whatever the logits' magnitude; scaling first (u = x·c, then
//   u − m) would lose ulp(max|u|) in every exponent — 0.5% in p and 10⁻³ in logp at
//   |x| ≈ 6·10⁴. Then log2s = log2 s and
//   LSE = m/τ + log2s·ln2, H = (log2s − su/s)·ln2 (shifted sums: no cancellation),
//   logp = ((x_y − m)·c − log2s)·ln2 (never the difference of two large numbers).
// - The backward needs p_v = 2^((x_v − m)·c − log2s) to the same precision, which the rounded
//   LSE cannot give (ulp(LSE) at |LSE| ≈ 6·10⁴ is 0.004): the forward also writes the row's
//   `shift` = m and `log2_sum` = log2s, and the backward reads those.
// - A row is "bad" if logp, H or LSE is not finite (a NaN/±inf logit makes s or su NaN) or
//   targets[t] ≥ V; bad rows are counted in bad_count and the smallest index kept in
//   first_bad_row.
// - Gradient decisions (AEM.md §5–6): ratio/KL clamps give zero gradient where strictly active;
//   dual clip active (−A·c < ℓ strictly, A < 0) → 0; the unclipped term is active when
//   −Aρ ≥ −A·clip(ρ) (ties → unclipped). w_t = 1/agg_norm, or 1/(agg_norm·len_r) in mode 1.
//
// Argument order (every .cu file): inputs (const pointers), then counts and scalars, then
// outputs and in/out buffers, then the AemHeadParams block. Rust calls each kernel through the
// typed launcher build.rs generates from its signature (`kernels::TokenStatsF16V2 { .. }`).
//
// Block size: every block-per-row / thread-per-item kernel works for any blockDim.x that is a
// multiple of 32 up to 1024. Reduction orders depend on blockDim.x, so bitwise comparisons
// between kernels hold for equal blockDim.x.
//
// Launcher-zeroed buffers (the kernels never allocate):
// - bad_count (1) u32: set to 0 before token_stats_*, loss_head_fwd_*, loss_head_fused_*.
// - first_bad_row (1) u32: set to 0xFFFFFFFF before the same kernels (atomicMin).
// - grad_bad (2) u32: {0, 0xFFFFFFFF} before policy_grad_* and loss_head_fused_*: the count and
//   the first row of non-finite dlogits entries written (an overflow, e.g. of f16 under a large
//   grad_scale, is reported by the launcher, never returned silently).
// - resp_done (R) u32 and grp_done (G) u32 (loss_head_fwd_* only): zero before the launch; the
//   kernel leaves them zero again when it completes, so zeroing once after allocation suffices
//   (zero them again after a failed launch).

#include "common.cuh"

// =============================================================================================
// Online softmax state (base 2)
// =============================================================================================

// m = max x seen (logit units), s = Σ 2^d, su = Σ 2^d·d with d = (x − m)·c, c = log2e/τ.
// Empty: s == 0, m = −inf.
struct AemSoftmaxState {
  float m, s, su;
};

__device__ __forceinline__ AemSoftmaxState aem_sm_empty() {
  AemSoftmaxState st;
  st.m = -AEM_INFINITY;
  st.s = 0.f;
  st.su = 0.f;
  return st;
}

// Move the state to a larger maximum new_m (> st.m).
__device__ __forceinline__ void aem_sm_rescale(AemSoftmaxState& st, float new_m, float c) {
  if (st.s == 0.f) {  // empty: nothing to rescale (avoids −inf·0)
    st.m = new_m;
    return;
  }
  const float d = (st.m - new_m) * c;
  const float r = exp2f(d);
  st.su = r * fmaf(d, st.s, st.su);
  st.s = st.s * r;
  st.m = new_m;
}

// Add one logit x ≤ st.m (a NaN x makes s NaN: the row is reported as bad).
__device__ __forceinline__ void aem_sm_add(AemSoftmaxState& st, float x, float c) {
  const float d = (x - st.m) * c;
  const float e = exp2f(d);
  st.s += e;
  st.su = fmaf(e, d, st.su);
}

__device__ __forceinline__ void aem_sm_push(AemSoftmaxState& st, float x, float c) {
  if (x > st.m) aem_sm_rescale(st, x, c);
  aem_sm_add(st, x, c);
}

// Merge b into a. Not symmetric in rounding; callers always pass the lower-indexed part first.
__device__ __forceinline__ AemSoftmaxState aem_sm_merge(AemSoftmaxState a, AemSoftmaxState b,
                                                     float c) {
  if (b.s == 0.f) return a;
  if (a.s == 0.f) return b;
  const float M = fmaxf(a.m, b.m);
  const float da = (a.m - M) * c, db = (b.m - M) * c;
  const float ra = exp2f(da), rb = exp2f(db);
  AemSoftmaxState r;
  r.m = M;
  r.s = a.s * ra + b.s * rb;
  r.su = ra * fmaf(da, a.s, a.su) + rb * fmaf(db, b.s, b.su);
  return r;
}

// Fixed shuffle-down tree; the result is in lane 0.
__device__ __forceinline__ AemSoftmaxState aem_sm_warp_reduce(AemSoftmaxState st, float c) {
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) {
    AemSoftmaxState o;
    o.m = __shfl_down_sync(AEM_FULL_MASK, st.m, off);
    o.s = __shfl_down_sync(AEM_FULL_MASK, st.s, off);
    o.su = __shfl_down_sync(AEM_FULL_MASK, st.su, off);
    st = aem_sm_merge(st, o, c);  // lanes ≥ 32−off merge junk; only lane 0's result is used
  }
  return st;
}

// Block merge, returned to every thread: warp trees, then warp 0 merges the warp results in warp
// order. All threads of the block must call it.
__device__ __forceinline__ AemSoftmaxState aem_sm_block_reduce(AemSoftmaxState st, float c) {
  __shared__ float part_m[32], part_s[32], part_su[32];
  __shared__ float res_m, res_s, res_su;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  st = aem_sm_warp_reduce(st, c);
  if (lane == 0) {
    part_m[warp] = st.m;
    part_s[warp] = st.s;
    part_su[warp] = st.su;
  }
  __syncthreads();
  if (warp == 0) {
    AemSoftmaxState w = aem_sm_empty();
    if (lane < nwarps) {
      w.m = part_m[lane];
      w.s = part_s[lane];
      w.su = part_su[lane];
    }
    w = aem_sm_warp_reduce(w, c);
    if (lane == 0) {
      res_m = w.m;
      res_s = w.s;
      res_su = w.su;
    }
  }
  __syncthreads();
  AemSoftmaxState out;
  out.m = res_m;
  out.s = res_s;
  out.su = res_su;
  return out;
}

// =============================================================================================
// Row partition: head (scalar, up to the first 16-byte boundary), body (8-half vectors), tail.
// Thread `tid` of `nt` (nt ≥ 8, a multiple of 32) takes head element tid, vectors tid, tid+nt, …
// and tail element tail_start+tid. Fixed for a given row address, V and nt.
// =============================================================================================

struct AemRowSplit {
  int mis;         // elements the row starts past a 16-byte boundary (0..7)
  int head;        // scalar elements before the first boundary: [0, head)
  int nvec;        // vectors: [head + 8i, head + 8i + 8)
  int tail_start;  // scalar elements [tail_start, V), fewer than 8
};

template <typename In>
__device__ __forceinline__ AemRowSplit aem_row_split(const In* row, int V) {
  AemRowSplit sp;
  sp.mis = aem_misalign_elems(row);
  sp.head = sp.mis ? 8 - sp.mis : 0;
  if (sp.head > V) sp.head = V;
  sp.nvec = (V - sp.head) >> 3;
  sp.tail_start = sp.head + (sp.nvec << 3);
  return sp;
}

// This thread's online-softmax state over its share of `row`. With CACHE, the values read are
// also stored to `cache` at index mis + e (so the cached vectors stay 16-byte aligned); the same
// thread reads them back later (same partition), so no barrier is needed between the two.
template <bool CACHE, typename In>
__device__ __forceinline__ AemSoftmaxState aem_row_partial(const In* row, int V, float c, int tid,
                                                           int nt, In* cache) {
  const AemRowSplit sp = aem_row_split(row, V);
  AemSoftmaxState st = aem_sm_empty();
  if (tid < sp.head) {
    const In h = row[tid];
    if (CACHE) cache[sp.mis + tid] = h;
    aem_sm_push(st, aem_to_f32(h), c);
  }
  const AemVec8<In>* vec = reinterpret_cast<const AemVec8<In>*>(row + sp.head);
  AemVec8<In>* cvec = CACHE ? reinterpret_cast<AemVec8<In>*>(cache + sp.mis + sp.head) : nullptr;
  for (int i = tid; i < sp.nvec; i += nt) {
    const AemVec8<In> x = vec[i];
    if (CACHE) cvec[i] = x;
    float u[8];
    float cm = -AEM_INFINITY;
#pragma unroll
    for (int k = 0; k < 8; ++k) {
      u[k] = aem_to_f32(x.h[k]);
      cm = fmaxf(cm, u[k]);
    }
    if (cm > st.m) aem_sm_rescale(st, cm, c);  // once per vector, not per element
#pragma unroll
    for (int k = 0; k < 8; ++k) aem_sm_add(st, u[k], c);
  }
  const int e = sp.tail_start + tid;
  if (e < V) {
    const In h = row[e];
    if (CACHE) cache[sp.mis + e] = h;
    aem_sm_push(st, aem_to_f32(h), c);
  }
  return st;
}

struct AemRowStats {
  float logp, entropy, lse;
  float shift, log2_sum;  // m and log2 s: what the backward needs (see the file header)
};

// x_y = logits[t, y] (NaN when y ≥ V); c = log2e/τ.
__device__ __forceinline__ AemRowStats aem_row_finalize(AemSoftmaxState st, float x_y, float c,
                                                        float inv_t) {
  const float log2s = log2f(st.s);
  AemRowStats r;
  r.lse = fmaf(log2s, AEM_LN2, st.m * inv_t);
  r.entropy = (log2s - st.su / st.s) * AEM_LN2;
  r.logp = ((x_y - st.m) * c - log2s) * AEM_LN2;
  r.shift = st.m;
  r.log2_sum = log2s;
  return r;
}

// The target logit, or NaN for an out-of-range target (a corrupted buffer: reported as bad).
template <typename In>
__device__ __forceinline__ float aem_target_logit(const In* row, unsigned int y, int V) {
  return y < (unsigned int)V ? aem_to_f32(row[y]) : aem_uint_as_float(0x7fc00000u);
}

// Writes one row's stats (shift and log2_sum only where given); counts it if bad. Called by
// one thread per row.
__device__ __forceinline__ void aem_write_row_stats(long long t, AemRowStats r, float* logp,
                                                    float* entropy, float* lse, float* shift,
                                                    float* log2_sum, unsigned int* bad_count,
                                                    unsigned int* first_bad_row) {
  logp[t] = r.logp;
  entropy[t] = r.entropy;
  lse[t] = r.lse;
  if (shift != nullptr) shift[t] = r.shift;
  if (log2_sum != nullptr) log2_sum[t] = r.log2_sum;
  if (!(aem_isfinite(r.logp) && aem_isfinite(r.entropy) && aem_isfinite(r.lse))) {
    atomicAdd(bad_count, 1u);
    atomicMin(first_bad_row, (unsigned int)t);
  }
}

// token_stats_{in}_v2's row body: every thread of the block gets the row's stats.
template <bool CACHE, typename In>
__device__ __forceinline__ AemRowStats aem_row_stats_block(const In* row, unsigned int y, int V,
                                                           float inv_t, In* cache) {
  const float x_y = aem_target_logit(row, y, V);  // read before any in-place write of the row
  const float c = inv_t * AEM_LOG2E;
  AemSoftmaxState st = aem_row_partial<CACHE, In>(row, V, c, threadIdx.x, blockDim.x, cache);
  st = aem_sm_block_reduce(st, c);
  return aem_row_finalize(st, x_y, c, inv_t);
}

// =============================================================================================
// token_stats
// =============================================================================================
// Arguments (all token_stats versions):
//   logits        (T, V) f16 / bf16, row-major
//   targets       (T) u32, < V
//   T, V          i32 counts
//   logp          (T) f32 out: z[y] − LSE
//   entropy       (T) f32 out: LSE − Σ p z
//   lse           (T) f32 out: log Σ exp z
//   shift         (T) f32 out: max_v x_v (logit units), for the backward
//   log2_sum      (T) f32 out: log2 Σ_v 2^((x_v − shift)·log2e/τ), for the backward
//   bad_count     (1) u32 in/out: += rows with a non-finite stat or targets ≥ V (launcher: 0)
//   first_bad_row (1) u32 in/out: min bad row index (launcher: 0xFFFFFFFF)
//   p             AemHeadParams (uses inv_temperature)

// The three versions over input element In; the extern "C" entry points below instantiate them
// per logits dtype (token_stats_{f16,bf16}_v{1,2,3}).
#define AEM_TOKEN_STATS_ARGS                                                                  \
  logits, targets, T, V, logp, entropy, lse, shift, log2_sum, bad_count, first_bad_row, p

// v1 — grid ceil(T / blockDim.x), one thread per row.
template <typename In>
__device__ __forceinline__ void aem_token_stats_v1(const In* logits, const unsigned int* targets,
                                                   int T, int V, float* logp, float* entropy,
                                                   float* lse, float* shift, float* log2_sum,
                                                   unsigned int* bad_count,
                                                   unsigned int* first_bad_row,
                                                   const AemHeadParams& p) {
  const long long t = aem_global_tid();
  if (t >= T) return;
  const In* row = logits + aem_row_offset(t, V);
  const float c = p.inv_temperature * AEM_LOG2E;
  AemSoftmaxState st = aem_sm_empty();
  for (int v = 0; v < V; ++v) aem_sm_push(st, aem_to_f32(row[v]), c);
  const AemRowStats r =
      aem_row_finalize(st, aem_target_logit(row, targets[t], V), c, p.inv_temperature);
  aem_write_row_stats(t, r, logp, entropy, lse, shift, log2_sum, bad_count, first_bad_row);
}

// v2 — grid T, one block per row.
template <typename In>
__device__ __forceinline__ void aem_token_stats_v2(const In* logits, const unsigned int* targets,
                                                   int T, int V, float* logp, float* entropy,
                                                   float* lse, float* shift, float* log2_sum,
                                                   unsigned int* bad_count,
                                                   unsigned int* first_bad_row,
                                                   const AemHeadParams& p) {
  const long long t = blockIdx.x;
  if (t >= T) return;  // uniform over the block
  const In* row = logits + aem_row_offset(t, V);
  const AemRowStats r =
      aem_row_stats_block<false, In>(row, targets[t], V, p.inv_temperature, nullptr);
  if (threadIdx.x == 0)
    aem_write_row_stats(t, r, logp, entropy, lse, shift, log2_sum, bad_count, first_bad_row);
}

// v3 — grid ceil(T / (blockDim.x/32)), one warp per row (row = block's first row + warp index).
template <typename In>
__device__ __forceinline__ void aem_token_stats_v3(const In* logits, const unsigned int* targets,
                                                   int T, int V, float* logp, float* entropy,
                                                   float* lse, float* shift, float* log2_sum,
                                                   unsigned int* bad_count,
                                                   unsigned int* first_bad_row,
                                                   const AemHeadParams& p) {
  const int lane = threadIdx.x & 31;
  const long long t = (long long)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
  if (t >= T) return;  // uniform over the warp
  const In* row = logits + aem_row_offset(t, V);
  const float c = p.inv_temperature * AEM_LOG2E;
  AemSoftmaxState st = aem_row_partial<false, In>(row, V, c, lane, 32, nullptr);
  st = aem_sm_warp_reduce(st, c);
  if (lane == 0) {
    const AemRowStats r =
        aem_row_finalize(st, aem_target_logit(row, targets[t], V), c, p.inv_temperature);
    aem_write_row_stats(t, r, logp, entropy, lse, shift, log2_sum, bad_count, first_bad_row);
  }
}

// Entry points. Each family's parameter list is written once, as a macro over the dtypes
// (IN logits, OUT gradient; NR is __restrict__ where logits and dlogits cannot alias, empty where
// the update may run in place, IN == OUT); build.rs expands it to generate the typed launcher.
#define AEM_TOKEN_STATS_PARAMS(IN)                                                             \
  const IN* __restrict__ logits, const unsigned int* __restrict__ targets, int T, int V,       \
      float* __restrict__ logp, float* __restrict__ entropy, float* __restrict__ lse,          \
      float* __restrict__ shift, float* __restrict__ log2_sum, unsigned int* bad_count,        \
      unsigned int* first_bad_row, AemHeadParams p

extern "C" __global__ void AEM_LAUNCH_BOUNDS(AEM_MAX_THREADS)
    token_stats_f16_v1(AEM_TOKEN_STATS_PARAMS(__half)) {
  aem_token_stats_v1<__half>(AEM_TOKEN_STATS_ARGS);
}

extern "C" __global__ void AEM_LAUNCH_BOUNDS(AEM_MAX_THREADS)
    token_stats_bf16_v1(AEM_TOKEN_STATS_PARAMS(__nv_bfloat16)) {
  aem_token_stats_v1<__nv_bfloat16>(AEM_TOKEN_STATS_ARGS);
}

extern "C" __global__ void AEM_LAUNCH_BOUNDS(AEM_MAX_THREADS)
    token_stats_f16_v2(AEM_TOKEN_STATS_PARAMS(__half)) {
  aem_token_stats_v2<__half>(AEM_TOKEN_STATS_ARGS);
}

extern "C" __global__ void AEM_LAUNCH_BOUNDS(AEM_MAX_THREADS)
    token_stats_bf16_v2(AEM_TOKEN_STATS_PARAMS(__nv_bfloat16)) {
  aem_token_stats_v2<__nv_bfloat16>(AEM_TOKEN_STATS_ARGS);
}

extern "C" __global__ void AEM_LAUNCH_BOUNDS(AEM_MAX_THREADS)
    token_stats_f16_v3(AEM_TOKEN_STATS_PARAMS(__half)) {
  aem_token_stats_v3<__half>(AEM_TOKEN_STATS_ARGS);
}

extern "C" __global__ void AEM_LAUNCH_BOUNDS(AEM_MAX_THREADS)
    token_stats_bf16_v3(AEM_TOKEN_STATS_PARAMS(__nv_bfloat16)) {
  aem_token_stats_v3<__nv_bfloat16>(AEM_TOKEN_STATS_ARGS);
}

// =============================================================================================
// resp_stats
// =============================================================================================

// One response, rows in increasing order. COHERENT: the rows were written by other blocks of the
// same launch (read through L2 after the counter handshake).
template <bool COHERENT>
__device__ __forceinline__ void aem_resp_reduce(const float* logp, const float* entropy,
                                                unsigned int start, unsigned int len,
                                                float* surprisal, float* mean_entropy,
                                                unsigned int r) {
  float sp = 0.f, h = 0.f;
  for (unsigned int i = 0; i < len; ++i) {
    const long long t = (long long)start + i;
    const float lp = COHERENT ? aem_ld_l2(logp + t) : logp[t];
    const float ht = COHERENT ? aem_ld_l2(entropy + t) : entropy[t];
    sp = sp - lp;
    h = h + ht;
  }
  surprisal[r] = sp;
  mean_entropy[r] = h / (float)len;
}

// resp_stats_v1 — grid ceil(R / blockDim.x), one thread per response.
//   logp, entropy  (T) f32 (from token_stats)
//   resp_start     (R) u32; resp_len (R) u32 ≥ 1; response r owns rows [start, start+len)
//   R              i32 count
//   surprisal      (R) f32 out: Σ_t −logp_t
//   mean_entropy   (R) f32 out: Σ_t H_t / len_r
extern "C" __global__ void AEM_LAUNCH_BOUNDS(AEM_MAX_THREADS)
    resp_stats_v1(const float* __restrict__ logp, const float* __restrict__ entropy,
                  const unsigned int* __restrict__ resp_start,
                  const unsigned int* __restrict__ resp_len, int R, float* __restrict__ surprisal,
                  float* __restrict__ mean_entropy) {
  const long long r = aem_global_tid();
  if (r >= R) return;
  aem_resp_reduce<false>(logp, entropy, resp_start[r], resp_len[r], surprisal, mean_entropy,
                         (unsigned int)r);
}

// =============================================================================================
// aem_alpha
// =============================================================================================

// One group: members grp_members[begin, end) in CSR order. COHERENT as in aem_resp_reduce.
template <bool COHERENT>
__device__ __forceinline__ void aem_group_alpha(const float* mean_entropy, const float* adv_base,
                                                const unsigned int* grp_members,
                                                unsigned int begin, unsigned int end,
                                                float lambda, float delta, float* alpha,
                                                float* adv) {
  if (end <= begin) return;
  float lo = AEM_INFINITY, hi = -AEM_INFINITY;
  for (unsigned int i = begin; i < end; ++i) {
    const unsigned int r = grp_members[i];
    const float h = COHERENT ? aem_ld_l2(mean_entropy + r) : mean_entropy[r];
    lo = fminf(lo, h);
    hi = fmaxf(hi, h);
  }
  const float range = hi - lo;
  // One member, a range below δ, or no range at all (δ = 0 with equal entropies): α = 1.
  if (end - begin == 1 || range < delta || !(range > 0.f)) {
    for (unsigned int i = begin; i < end; ++i) {
      const unsigned int r = grp_members[i];
      alpha[r] = 1.f;
      adv[r] = adv_base[r];
    }
    return;
  }
  float sum_w = 0.f;
  for (unsigned int i = begin; i < end; ++i) {
    const unsigned int r = grp_members[i];
    const float h = COHERENT ? aem_ld_l2(mean_entropy + r) : mean_entropy[r];
    sum_w += expf((-lambda * (h - lo)) / range);
  }
  const float mean_w = sum_w / (float)(end - begin);
  for (unsigned int i = begin; i < end; ++i) {
    const unsigned int r = grp_members[i];
    const float h = COHERENT ? aem_ld_l2(mean_entropy + r) : mean_entropy[r];
    const float a = expf((-lambda * (h - lo)) / range) / mean_w;
    alpha[r] = a;
    adv[r] = a * adv_base[r];
  }
}

// aem_alpha_v1 — grid ceil(G / blockDim.x), one thread per group.
//   mean_entropy  (R) f32 (from resp_stats)
//   adv_base      (R) f32
//   grp_offsets   (G+1) u32, grp_members (R) u32: group g's responses, increasing index
//   G             i32 count
//   alpha         (R) f32 out; adv (R) f32 out: α · adv_base
//   p             AemHeadParams (uses lambda, delta)
extern "C" __global__ void AEM_LAUNCH_BOUNDS(AEM_MAX_THREADS)
    aem_alpha_v1(const float* __restrict__ mean_entropy, const float* __restrict__ adv_base,
                 const unsigned int* __restrict__ grp_offsets,
                 const unsigned int* __restrict__ grp_members, int G, float* __restrict__ alpha,
                 float* __restrict__ adv, AemHeadParams p) {
  const long long g = aem_global_tid();
  if (g >= G) return;
  aem_group_alpha<false>(mean_entropy, adv_base, grp_members, grp_offsets[g], grp_offsets[g + 1],
                         p.lambda, p.delta, alpha, adv);
}

// =============================================================================================
// loss_head_fwd_{f16,bf16}_v1 — the fused forward. grid T, one block per row, dyn smem 0.
//   logits        (T, V) f16 / bf16
//   targets       (T) u32
//   row_resp      (T) i32: response owning row t, or −1
//   resp_start    (R) u32, resp_len (R) u32 ≥ 1, resp_group (R) u32 < G
//   grp_offsets   (G+1) u32, grp_members (R) u32 (CSR, increasing response index per group)
//   adv_base      (R) f32
//   T, V          i32 counts
//   logp, entropy, lse, shift, log2_sum   (T) f32 out (as token_stats)
//   surprisal, mean_entropy      (R) f32 out (as resp_stats_v1)
//   alpha, adv                   (R) f32 out (as aem_alpha_v1)
//   resp_done     (R) u32 workspace, zero at launch (left zero at exit)
//   grp_done      (G) u32 workspace, zero at launch (left zero at exit)
//   bad_count     (1) u32 (launcher: 0), first_bad_row (1) u32 (launcher: 0xFFFFFFFF)
//   p             AemHeadParams (uses inv_temperature, lambda, delta)
// The results written by other blocks are read through L2 after __threadfence + atomicAdd; the
// order of every float reduction is fixed, so results are bitwise identical run to run.
// =============================================================================================
template <typename In>
__device__ __forceinline__ void aem_loss_head_fwd_v1(
    const In* logits, const unsigned int* targets, const int* row_resp,
    const unsigned int* resp_start, const unsigned int* resp_len, const unsigned int* resp_group,
    const unsigned int* grp_offsets, const unsigned int* grp_members, const float* adv_base, int T,
    int V, float* logp, float* entropy, float* lse, float* shift, float* log2_sum,
    float* surprisal, float* mean_entropy, float* alpha, float* adv, unsigned int* resp_done,
    unsigned int* grp_done, unsigned int* bad_count, unsigned int* first_bad_row,
    const AemHeadParams& p) {
  const long long t = blockIdx.x;
  if (t >= T) return;  // uniform over the block
  const In* row = logits + aem_row_offset(t, V);
  const AemRowStats rs =
      aem_row_stats_block<false, In>(row, targets[t], V, p.inv_temperature, nullptr);
  if (threadIdx.x != 0) return;

  aem_write_row_stats(t, rs, logp, entropy, lse, shift, log2_sum, bad_count, first_bad_row);
  const int r = row_resp[t];
  if (r < 0) return;
  __threadfence();  // this row's logp/entropy visible before the counter says so
  const unsigned int len = resp_len[r];
  if (atomicAdd(&resp_done[r], 1u) != len - 1u) return;

  // Last row of response r to finish: reduce its rows in row order.
  __threadfence();
  aem_resp_reduce<true>(logp, entropy, resp_start[r], len, surprisal, mean_entropy,
                        (unsigned int)r);
  resp_done[r] = 0u;  // leave the workspace zero for the next launch
  __threadfence();    // mean_entropy[r] visible before the group counter says so
  const unsigned int g = resp_group[r];
  const unsigned int begin = grp_offsets[g], end = grp_offsets[g + 1];
  if (atomicAdd(&grp_done[g], 1u) != end - begin - 1u) return;

  // Last response of group g to finish: α for the whole group.
  __threadfence();
  aem_group_alpha<true>(mean_entropy, adv_base, grp_members, begin, end, p.lambda, p.delta, alpha,
                        adv);
  grp_done[g] = 0u;
}

#define AEM_LOSS_HEAD_FWD_PARAMS(IN)                                                           \
  const IN* __restrict__ logits, const unsigned int* __restrict__ targets,                     \
      const int* __restrict__ row_resp, const unsigned int* __restrict__ resp_start,           \
      const unsigned int* __restrict__ resp_len, const unsigned int* __restrict__ resp_group,  \
      const unsigned int* __restrict__ grp_offsets,                                            \
      const unsigned int* __restrict__ grp_members, const float* __restrict__ adv_base, int T, \
      int V, float* logp, float* entropy, float* lse, float* shift, float* log2_sum,           \
      float* surprisal, float* mean_entropy, float* alpha, float* adv,                         \
      unsigned int* resp_done, unsigned int* grp_done, unsigned int* bad_count,                \
      unsigned int* first_bad_row, AemHeadParams p
#define AEM_LOSS_HEAD_FWD_ARGS                                                                 \
  logits, targets, row_resp, resp_start, resp_len, resp_group, grp_offsets, grp_members,       \
      adv_base, T, V, logp, entropy, lse, shift, log2_sum, surprisal, mean_entropy, alpha,     \
      adv, resp_done, grp_done, bad_count, first_bad_row, p

extern "C" __global__ void AEM_LAUNCH_BOUNDS(AEM_MAX_THREADS)
    loss_head_fwd_f16_v1(AEM_LOSS_HEAD_FWD_PARAMS(__half)) {
  aem_loss_head_fwd_v1<__half>(AEM_LOSS_HEAD_FWD_ARGS);
}

extern "C" __global__ void AEM_LAUNCH_BOUNDS(AEM_MAX_THREADS)
    loss_head_fwd_bf16_v1(AEM_LOSS_HEAD_FWD_PARAMS(__nv_bfloat16)) {
  aem_loss_head_fwd_v1<__nv_bfloat16>(AEM_LOSS_HEAD_FWD_ARGS);
}

// =============================================================================================
// Policy loss and gradient
// =============================================================================================

// w_t for a row of a response of length len (AEM.md §5).
__device__ __forceinline__ float aem_row_weight(unsigned int len, const AemHeadParams& p) {
  return p.agg_mode == 1 ? 1.0f / (p.agg_norm * (float)len) : 1.0f / p.agg_norm;
}

struct AemTokenLoss {
  float loss;  // ℓ_t, unweighted
  float g;     // ∂ℓ_t/∂logp_t (surrogate + KL; the entropy part is separate)
};

// ℓ_t and g_t of one owned row (AEM.md §5–6 with the decisions in the file header).
__device__ __forceinline__ AemTokenLoss aem_token_loss(float A, float logp, float H, float old,
                                                       float ref, const AemHeadParams& p) {
  const float d = logp - old;
  const float dc = fminf(fmaxf(d, -20.f), 20.f);
  const float rho = expf(dc);
  const float unclipped = -A * rho;
  const float clipped = -A * fminf(fmaxf(rho, 1.f - p.clip_low), 1.f + p.clip_high);
  AemTokenLoss o;
  if (unclipped >= clipped) {
    o.loss = unclipped;
    o.g = (d == dc) ? -A * rho : 0.f;
  } else {
    o.loss = clipped;
    o.g = 0.f;
  }
  if (p.dual_clip > 0.f && A < 0.f) {
    const float cap = -A * p.dual_clip;
    if (cap < o.loss) {
      o.loss = cap;
      o.g = 0.f;
    }
  }
  o.loss = o.loss - p.entropy_coef * H;
  if (p.kl_coef != 0.f) {
    const float dd = ref - logp;
    const float ddc = fminf(fmaxf(dd, -20.f), 20.f);
    const float ed = expf(ddc);
    const float k3 = ed - ddc - 1.f;
    const float k3c = fminf(fmaxf(k3, -10.f), 10.f);
    o.loss = o.loss + p.kl_coef * k3c;
    if (dd == ddc && k3 == k3c) o.g = o.g + p.kl_coef * (1.f - ed);
  }
  return o;
}

// Per-row constants of the gradient stream, in shifted base-2 units u = (x − m)·c.
struct AemGradCoef {
  float c;    // log2e/τ
  float m;    // the forward's shift (max x)
  float L2;   // log2 s: p_v = 2^(u − L2)
  float E2;   // (E_z − m/τ)·log2e = log2 s − H·log2e
  float S;    // s·w_t/τ
  float g;    // g_t
  float bh;   // β_H·ln2: β_H p (z − E_z) = bh·p·(u − E2)
};

__device__ __forceinline__ AemGradCoef aem_grad_coef(float shift, float log2_sum, float H, float g,
                                                     unsigned int len, const AemHeadParams& p) {
  AemGradCoef k;
  k.c = p.inv_temperature * AEM_LOG2E;
  k.m = shift;
  k.L2 = log2_sum;
  k.E2 = log2_sum - H * AEM_LOG2E;
  k.S = p.grad_scale * aem_row_weight(len, p) * p.inv_temperature;
  k.g = g;
  k.bh = p.entropy_coef * AEM_LN2;
  return k;
}

// dlogits[t, e] = S·( g·(1[e=y] − p) + β_H·p·(z − E_z) ); the target entry's (1 − p) is formed
// in f32 here and written once.
__device__ __forceinline__ float aem_grad_elem(float x, int e, int y, const AemGradCoef& k) {
  const float u = (x - k.m) * k.c;
  const float pv = exp2f(u - k.L2);
  const float onehot_minus_p = (e == y) ? 1.f - pv : -pv;
  return k.S * (k.g * onehot_minus_p + k.bh * pv * (u - k.E2));
}

// Store 8 gradient values at out[0..8): one 16-byte store (f16) / two (f32) when aligned.
// Returns how many stored values are not finite.
template <typename T16>  // __half or __nv_bfloat16
__device__ __forceinline__ unsigned aem_store8(T16* out, const float* v, bool vec_ok) {
  unsigned bad = 0;
  if (vec_ok) {
    AemVec8<T16> o;
#pragma unroll
    for (int k = 0; k < 8; ++k) bad += aem_store(&o.h[k], v[k]);
    *reinterpret_cast<AemVec8<T16>*>(out) = o;
  } else {
#pragma unroll
    for (int k = 0; k < 8; ++k) bad += aem_store(out + k, v[k]);
  }
  return bad;
}
__device__ __forceinline__ unsigned aem_store8(float* out, const float* v, bool vec_ok) {
  unsigned bad = 0;
#pragma unroll
  for (int k = 0; k < 8; ++k) bad += aem_isfinite(v[k]) ? 0u : 1u;
  if (vec_ok) {
    AemFloat4 a, b;
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      a.f[k] = v[k];
      b.f[k] = v[k + 4];
    }
    reinterpret_cast<AemFloat4*>(out)[0] = a;
    reinterpret_cast<AemFloat4*>(out)[1] = b;
  } else {
#pragma unroll
    for (int k = 0; k < 8; ++k) out[k] = v[k];
  }
  return bad;
}

// Adds a thread's count of non-finite gradient entries of row t to grad_bad (2) u32:
// [0] += count (mod 2^32: informational), [1] = min row with one (the launcher sets 0xFFFFFFFF;
// a value below it is the signal).
__device__ __forceinline__ void aem_count_grad_bad(unsigned bad, long long t,
                                                   unsigned int* grad_bad) {
  if (bad != 0u) {
    atomicAdd(&grad_bad[0], bad);
    atomicMin(&grad_bad[1], (unsigned int)t);
  }
}

// Stream one row of the gradient. Same partition as aem_row_partial (from the logits row's
// address), so with FROM_CACHE each thread reads back exactly what it cached, and in place
// (out == row, f16) every element is read by the thread that then writes it.
// Returns this thread's count of non-finite stored values.
template <typename In, typename OutT, bool FROM_CACHE>
__device__ __forceinline__ unsigned aem_grad_row(const In* row, const In* cache,
                                                 OutT* out, int V, unsigned int y,
                                                 const AemGradCoef& k, int tid, int nt) {
  const AemRowSplit sp = aem_row_split(row, V);
  const int yi = y < (unsigned int)V ? (int)y : -1;
  unsigned bad = 0;
  if (tid < sp.head) {
    const In h = FROM_CACHE ? cache[sp.mis + tid] : row[tid];
    bad += aem_store(out + tid, aem_grad_elem(aem_to_f32(h), tid, yi, k));
  }
  const AemVec8<In>* vec = reinterpret_cast<const AemVec8<In>*>(
      FROM_CACHE ? cache + sp.mis + sp.head : row + sp.head);
  const bool vec_ok = (reinterpret_cast<unsigned long long>(out + sp.head) & 15ull) == 0;
  for (int i = tid; i < sp.nvec; i += nt) {
    const AemVec8<In> x = vec[i];
    const int e0 = sp.head + (i << 3);
    float v[8];
#pragma unroll
    for (int j = 0; j < 8; ++j) v[j] = aem_grad_elem(aem_to_f32(x.h[j]), e0 + j, yi, k);
    bad += aem_store8(out + e0, v, vec_ok);
  }
  const int e = sp.tail_start + tid;
  if (e < V) {
    const In h = FROM_CACHE ? cache[sp.mis + e] : row[e];
    bad += aem_store(out + e, aem_grad_elem(aem_to_f32(h), e, yi, k));
  }
  return bad;
}

// Zero one output row (unowned rows): head / 16-byte vectors / tail by the output's alignment.
template <typename OutT>
__device__ __forceinline__ void aem_zero_row(OutT* out, int V, int tid, int nt) {
  const int per = 16 / (int)sizeof(OutT);
  const int mis = aem_misalign_elems(out);
  int head = mis ? per - mis : 0;
  if (head > V) head = V;
  const int nvec = (V - head) / per;
  if (tid < head) aem_store(out + tid, 0.f);
  AemFloat4 z;
#pragma unroll
  for (int k = 0; k < 4; ++k) z.f[k] = 0.f;  // all-zero bits: +0 in f16 and f32
  AemFloat4* vec = reinterpret_cast<AemFloat4*>(out + head);
  for (int i = tid; i < nvec; i += nt) vec[i] = z;
  const int e = head + nvec * per + tid;
  if (e < V) aem_store(out + e, 0.f);
}

// policy_grad_{in}_{out}_v1 — grid T, one block per row, dyn smem 0.
//   logits      (T, V) f16 / bf16; may be the same buffer as dlogits when {in} = {out} (in place)
//   targets     (T) u32
//   row_resp    (T) i32: owning response or −1
//   resp_len    (R) u32
//   adv         (R) f32: α-rescaled advantage A_r
//   logp, entropy, shift, log2_sum  (T) f32: from the forward (token_stats / loss_head_fwd)
//   old_logp    (T) f32, or NULL when p.has_old_logp == 0 (on-policy: old = logp)
//   ref_logp    (T) f32, or NULL when p.kl_coef == 0
//   T, V        i32 counts
//   dlogits     (T, V) {out} out: s·w_t/τ·(g_t(1[v=y] − p_v) + β_H p_v (z_v − E_z)); 0 unowned
//   token_loss  (T) f32 out: ℓ_t unweighted, 0 for unowned rows
//   grad_bad    (2) u32 in/out: [0] += non-finite dlogits entries written, [1] = min such row
//               (launcher: 0, 0xFFFFFFFF)
//   p           AemHeadParams
template <typename In, typename OutT>
__device__ __forceinline__ void aem_policy_grad_impl(
    const In* logits, const unsigned int* targets, const int* row_resp,
    const unsigned int* resp_len, const float* adv, const float* logp, const float* entropy,
    const float* shift, const float* log2_sum, const float* old_logp, const float* ref_logp,
    int T, int V, OutT* dlogits, float* token_loss, unsigned int* grad_bad,
    const AemHeadParams& p) {
  const long long t = blockIdx.x;
  if (t >= T) return;  // uniform over the block
  const int r = row_resp[t];
  OutT* out = dlogits + aem_row_offset(t, V);
  if (r < 0) {
    if (threadIdx.x == 0) token_loss[t] = 0.f;
    aem_zero_row(out, V, threadIdx.x, blockDim.x);
    return;
  }
  // Every thread computes the same ℓ_t, g_t (a few flops; no barrier, no shared memory).
  const float lp = logp[t], h = entropy[t];
  const float old = p.has_old_logp ? old_logp[t] : lp;
  const float ref = p.kl_coef != 0.f ? ref_logp[t] : 0.f;
  const AemTokenLoss tl = aem_token_loss(adv[r], lp, h, old, ref, p);
  if (threadIdx.x == 0) token_loss[t] = tl.loss;
  const AemGradCoef k = aem_grad_coef(shift[t], log2_sum[t], h, tl.g, resp_len[r], p);
  const unsigned bad = aem_grad_row<In, OutT, false>(logits + aem_row_offset(t, V), nullptr, out,
                                                     V, targets[t], k, threadIdx.x, blockDim.x);
  aem_count_grad_bad(bad, t, grad_bad);
}

#define AEM_POLICY_GRAD_PARAMS(IN, OUT, NR)                                                    \
  const IN* NR logits, const unsigned int* __restrict__ targets,                               \
      const int* __restrict__ row_resp, const unsigned int* __restrict__ resp_len,             \
      const float* __restrict__ adv, const float* __restrict__ logp,                           \
      const float* __restrict__ entropy, const float* __restrict__ shift,                      \
      const float* __restrict__ log2_sum, const float* __restrict__ old_logp,                  \
      const float* __restrict__ ref_logp, int T, int V, OUT* NR dlogits,                       \
      float* __restrict__ token_loss, unsigned int* grad_bad, AemHeadParams p
#define AEM_POLICY_GRAD_ARGS                                                                   \
  logits, targets, row_resp, resp_len, adv, logp, entropy, shift, log2_sum, old_logp,          \
      ref_logp, T, V, dlogits, token_loss, grad_bad, p

extern "C" __global__ void AEM_LAUNCH_BOUNDS(AEM_MAX_THREADS)
    policy_grad_f16_f16_v1(AEM_POLICY_GRAD_PARAMS(__half, __half, )) {
  aem_policy_grad_impl<__half, __half>(AEM_POLICY_GRAD_ARGS);
}

extern "C" __global__ void AEM_LAUNCH_BOUNDS(AEM_MAX_THREADS)
    policy_grad_f16_bf16_v1(AEM_POLICY_GRAD_PARAMS(__half, __nv_bfloat16, __restrict__)) {
  aem_policy_grad_impl<__half, __nv_bfloat16>(AEM_POLICY_GRAD_ARGS);
}

extern "C" __global__ void AEM_LAUNCH_BOUNDS(AEM_MAX_THREADS)
    policy_grad_f16_f32_v1(AEM_POLICY_GRAD_PARAMS(__half, float, __restrict__)) {
  aem_policy_grad_impl<__half, float>(AEM_POLICY_GRAD_ARGS);
}

extern "C" __global__ void AEM_LAUNCH_BOUNDS(AEM_MAX_THREADS)
    policy_grad_bf16_f16_v1(AEM_POLICY_GRAD_PARAMS(__nv_bfloat16, __half, __restrict__)) {
  aem_policy_grad_impl<__nv_bfloat16, __half>(AEM_POLICY_GRAD_ARGS);
}

extern "C" __global__ void AEM_LAUNCH_BOUNDS(AEM_MAX_THREADS)
    policy_grad_bf16_bf16_v1(AEM_POLICY_GRAD_PARAMS(__nv_bfloat16, __nv_bfloat16, )) {
  aem_policy_grad_impl<__nv_bfloat16, __nv_bfloat16>(AEM_POLICY_GRAD_ARGS);
}

extern "C" __global__ void AEM_LAUNCH_BOUNDS(AEM_MAX_THREADS)
    policy_grad_bf16_f32_v1(AEM_POLICY_GRAD_PARAMS(__nv_bfloat16, float, __restrict__)) {
  aem_policy_grad_impl<__nv_bfloat16, float>(AEM_POLICY_GRAD_ARGS);
}

// =============================================================================================
// loss_head_fused_{in}_{out}_v1 — forward+backward of the policy-update pass. grid T, one block
// per row; dyn smem = row_cache_bytes.
//   logits          (T, V) f16 / bf16; may be the same buffer as dlogits when {in} = {out}
//   targets         (T) u32
//   row_resp        (T) i32: owning response or −1
//   resp_len        (R) u32
//   adv             (R) f32: α-rescaled advantage (a constant during the update)
//   old_logp        (T) f32, or NULL when p.has_old_logp == 0
//   ref_logp        (T) f32, or NULL when p.kl_coef == 0
//   T, V            i32 counts
//   row_cache_bytes u32: the dynamic shared memory passed at launch. The row is cached (one read
//                   of the logits) iff row_cache_bytes ≥ 2·(V + 8); the launcher passes
//                   round_up(2·(V+8), 16) when that fits its opt-in limit, else 0 (two reads).
//   dlogits         (T, V) {out} out (as policy_grad)
//   logp, entropy, lse  (T) f32 out (as token_stats, all rows)
//   token_loss      (T) f32 out: ℓ_t unweighted, 0 for unowned rows
//   bad_count (1) u32 (launcher: 0), first_bad_row (1) u32 (launcher: 0xFFFFFFFF)
//   grad_bad        (2) u32 in/out (as policy_grad)
//   p               AemHeadParams
// =============================================================================================
template <typename In, typename OutT>
__device__ __forceinline__ void aem_fused_impl(
    const In* logits, const unsigned int* targets, const int* row_resp,
    const unsigned int* resp_len, const float* adv, const float* old_logp, const float* ref_logp,
    int T, int V, unsigned int row_cache_bytes, OutT* dlogits, float* logp, float* entropy,
    float* lse, float* token_loss, unsigned int* bad_count, unsigned int* first_bad_row,
    unsigned int* grad_bad, const AemHeadParams& p) {
  const long long t = blockIdx.x;
  if (t >= T) return;  // uniform over the block
  AEM_DYN_SMEM(In, cache);
  const bool cached = (unsigned long long)row_cache_bytes >= 2ull * ((unsigned long long)V + 8ull);
  const In* row = logits + aem_row_offset(t, V);
  const unsigned int y = targets[t];
  // Both read the whole row (and x_y) before the block barrier inside; writes come after it.
  const AemRowStats rs = cached
                             ? aem_row_stats_block<true, In>(row, y, V, p.inv_temperature, cache)
                             : aem_row_stats_block<false, In>(row, y, V, p.inv_temperature,
                                                              nullptr);
  if (threadIdx.x == 0)
    aem_write_row_stats(t, rs, logp, entropy, lse, nullptr, nullptr, bad_count, first_bad_row);

  const int r = row_resp[t];
  OutT* out = dlogits + aem_row_offset(t, V);
  if (r < 0) {
    if (threadIdx.x == 0) token_loss[t] = 0.f;
    aem_zero_row(out, V, threadIdx.x, blockDim.x);
    return;
  }
  const float old = p.has_old_logp ? old_logp[t] : rs.logp;
  const float ref = p.kl_coef != 0.f ? ref_logp[t] : 0.f;
  const AemTokenLoss tl = aem_token_loss(adv[r], rs.logp, rs.entropy, old, ref, p);
  if (threadIdx.x == 0) token_loss[t] = tl.loss;
  const AemGradCoef k = aem_grad_coef(rs.shift, rs.log2_sum, rs.entropy, tl.g, resp_len[r], p);
  const unsigned bad =
      cached ? aem_grad_row<In, OutT, true>(row, cache, out, V, y, k, threadIdx.x, blockDim.x)
             : aem_grad_row<In, OutT, false>(row, nullptr, out, V, y, k, threadIdx.x, blockDim.x);
  aem_count_grad_bad(bad, t, grad_bad);
}

#define AEM_LOSS_HEAD_FUSED_PARAMS(IN, OUT, NR)                                                \
  const IN* NR logits, const unsigned int* __restrict__ targets,                               \
      const int* __restrict__ row_resp, const unsigned int* __restrict__ resp_len,             \
      const float* __restrict__ adv, const float* __restrict__ old_logp,                       \
      const float* __restrict__ ref_logp, int T, int V, unsigned int row_cache_bytes,          \
      OUT* NR dlogits, float* __restrict__ logp, float* __restrict__ entropy,                  \
      float* __restrict__ lse, float* __restrict__ token_loss, unsigned int* bad_count,        \
      unsigned int* first_bad_row, unsigned int* grad_bad, AemHeadParams p
#define AEM_LOSS_HEAD_FUSED_ARGS                                                               \
  logits, targets, row_resp, resp_len, adv, old_logp, ref_logp, T, V, row_cache_bytes,         \
      dlogits, logp, entropy, lse, token_loss, bad_count, first_bad_row, grad_bad, p

extern "C" __global__ void AEM_LAUNCH_BOUNDS_1(AEM_MAX_THREADS)
    loss_head_fused_f16_f16_v1(AEM_LOSS_HEAD_FUSED_PARAMS(__half, __half, )) {
  aem_fused_impl<__half, __half>(AEM_LOSS_HEAD_FUSED_ARGS);
}

extern "C" __global__ void AEM_LAUNCH_BOUNDS_1(AEM_MAX_THREADS)
    loss_head_fused_f16_bf16_v1(AEM_LOSS_HEAD_FUSED_PARAMS(__half, __nv_bfloat16, __restrict__)) {
  aem_fused_impl<__half, __nv_bfloat16>(AEM_LOSS_HEAD_FUSED_ARGS);
}

extern "C" __global__ void AEM_LAUNCH_BOUNDS_1(AEM_MAX_THREADS)
    loss_head_fused_f16_f32_v1(AEM_LOSS_HEAD_FUSED_PARAMS(__half, float, __restrict__)) {
  aem_fused_impl<__half, float>(AEM_LOSS_HEAD_FUSED_ARGS);
}

extern "C" __global__ void AEM_LAUNCH_BOUNDS_1(AEM_MAX_THREADS)
    loss_head_fused_bf16_f16_v1(AEM_LOSS_HEAD_FUSED_PARAMS(__nv_bfloat16, __half, __restrict__)) {
  aem_fused_impl<__nv_bfloat16, __half>(AEM_LOSS_HEAD_FUSED_ARGS);
}

extern "C" __global__ void AEM_LAUNCH_BOUNDS_1(AEM_MAX_THREADS)
    loss_head_fused_bf16_bf16_v1(AEM_LOSS_HEAD_FUSED_PARAMS(__nv_bfloat16, __nv_bfloat16, )) {
  aem_fused_impl<__nv_bfloat16, __nv_bfloat16>(AEM_LOSS_HEAD_FUSED_ARGS);
}

extern "C" __global__ void AEM_LAUNCH_BOUNDS_1(AEM_MAX_THREADS)
    loss_head_fused_bf16_f32_v1(AEM_LOSS_HEAD_FUSED_PARAMS(__nv_bfloat16, float, __restrict__)) {
  aem_fused_impl<__nv_bfloat16, float>(AEM_LOSS_HEAD_FUSED_ARGS);
}

// =============================================================================================
// loss_reduce_v1 — grid 1, one block (any multiple of 32 up to 1024 threads), dyn smem 0.
//   token_loss  (T) f32: ℓ_t (from policy_grad / loss_head_fused)
//   row_resp    (T) i32: owning response or −1 (skipped)
//   resp_len    (R) u32
//   T           i32 count
//   loss        (1) f32 out: Σ_t w_t ℓ_t; thread i sums rows i, i+nt, … in order, then the
//               fixed block tree (deterministic for a given blockDim.x)
//   p           AemHeadParams (uses agg_mode, agg_norm)
// =============================================================================================
extern "C" __global__ void AEM_LAUNCH_BOUNDS(AEM_MAX_THREADS)
    loss_reduce_v1(const float* __restrict__ token_loss, const int* __restrict__ row_resp,
                   const unsigned int* __restrict__ resp_len, int T, float* __restrict__ loss,
                   AemHeadParams p) {
  float acc = 0.f;
  for (long long t = threadIdx.x; t < T; t += blockDim.x) {
    const int r = row_resp[t];
    if (r >= 0) acc += aem_row_weight(resp_len[r], p) * token_loss[t];
  }
  const float total = aem_block_sum(acc);
  if (threadIdx.x == 0) loss[0] = total;
}
