// gpt.cu — the elementwise, row and attention kernels of the small f16 GPT (src/model/), forward
// and backward, and AdamW. Matrix products are not here: they go through Device::gemm (cuBLAS on
// a GPU, an f32 CPU GEMM on the emulator).
//
// Shape letters (src/model/mod.rs): B sequences, T positions, N = B·T rows, C channels, NH heads,
// hs = C/NH, V vocabulary, maxT the context (rows of wpe and of a KV cache), OC the output
// channels of a projection, P the parameter count. Storage: parameters and saved activations f16,
// activation and parameter gradients f32, logits f32; every sum is accumulated in f32. Element
// offsets are 64-bit (N·V and B·NH·T·T exceed 2^31 long before N does).
//
// Every kernel here is the `_v1` naive port of the CPU op in src/model/cpu.rs: one thread per
// element, row, channel or (sequence, head, position), with each sum taken sequentially in the
// reference's order, so the emulator reproduces the CPU path up to the GEMMs' summation order.
// Sums over rows are done by one thread per output column looping over the rows in order (no
// float atomics), so every kernel is deterministic run to run.
//
//   encoder_fwd_v1           out = wte[token] + wpe[pos0 + n mod T]          thread per element
//   encoder_bwd_wte_v1       dwte[v] += Σ_{n: token_n = v} dout[n]           thread per (v, c)
//   encoder_bwd_wpe_v1       dwpe[t] += Σ_b dout[b, t]                       thread per (t, c)
//   layernorm_fwd_v1         out, mean, rstd                                 thread per row
//   layernorm_bwd_v1         dinp += …                                       thread per row
//   layernorm_bwd_params_v1  dw += Σ norm·dout, db += Σ dout                 thread per channel
//   bias_add_cast_v1         out (f16) = acc (f32) + bias                    thread per element
//   bias_grad_v1             dbias += Σ_rows dout                            thread per channel
//   gelu_fwd_v1, gelu_bwd_v1 tanh-GELU (tanh through exp, as the CPU path)  thread per element
//   residual_fwd_v1          out = a + b                                     thread per element
//   cast_f16_f32_v1, cast_f32_f16_v1, fill_f32_v1                            thread per element
//   mask_logits_v1           logits (f16) outside a row's bit mask = −65504  thread per element
//   attention_fwd_v1         causal softmax attention                        thread per (b, h, t)
//   attention_bwd_q_v1       dS (scratch) and dQ                             thread per (b, h, t)
//   attention_bwd_kv_v1      dK, dV from dS                                  thread per (b, h, t2)
//   kv_append_v1             k, v of one position into the caches            thread per element
//   attention_decode_v1      one query per sequence over its cache           thread per (b, h)
//   adamw_v1                 AdamW on f32 masters, f16 copy                  thread per parameter
//   sumsq_v1                 per-block Σ x² (the host adds the blocks in f64) grid-stride + tree
//
// Argument order (as in loss_head.cu): inputs (const pointers), then counts and scalars, then
// outputs (in/out buffers included). Rust launches them through the typed launchers build.rs
// generates from these signatures (src/device: `kernels::EncoderFwdV1 { .. }`), by name.
//
// Launch: every kernel takes any 1-D grid and any blockDim.x; threads past the end return. Only
// sumsq_v1 has a barrier (blockDim.x a multiple of 32, all threads reach it).

#include "common.cuh"

#define AEM_GELU_SCALE 0.7978846f  // sqrt(2/π), as GELU_SCALE in src/model/cpu.rs
#define AEM_LN_EPS 1e-5f           // LN_EPS

// tanh through exp, as tanh_fast in src/model/cpu.rs (saturates: exp overflow → 1).
__device__ __forceinline__ float aem_tanh_exp(float u) { return 1.f - 2.f / (expf(2.f * u) + 1.f); }

// ---------------------------------------------------------------------------------------------
// Embedding
// ---------------------------------------------------------------------------------------------

// out (N, C) f16 = wte[tokens[n]] + wpe[pos0 + n mod T]; tokens (N) u32 < V (checked on the host).
extern "C" __global__ void AEM_LAUNCH_BOUNDS(1024)
    encoder_fwd_v1(const unsigned* tokens, const __half* wte, const __half* wpe, int N, int T,
                   int pos0, int C, __half* out) {
  const long long i = aem_global_tid();
  if (i >= (long long)N * C) return;
  const long long n = i / C;
  const int c = (int)(i % C);
  const long long tok = tokens[n];
  const long long pos = pos0 + n % T;
  out[i] = aem_f2h(aem_h2f(wte[tok * C + c]) + aem_h2f(wpe[pos * C + c]));
}

// dwte (V, C) f32 += Σ over rows n with tokens[n] = v of dout (N, C) f32, rows in order.
extern "C" __global__ void AEM_LAUNCH_BOUNDS(1024)
    encoder_bwd_wte_v1(const float* dout, const unsigned* tokens, int N, int C, int V, float* dwte) {
  const long long i = aem_global_tid();
  if (i >= (long long)V * C) return;
  const unsigned v = (unsigned)(i / C);
  const int c = (int)(i % C);
  float acc = dwte[i];
  for (long long n = 0; n < N; ++n)
    if (tokens[n] == v) acc += dout[n * C + c];
  dwte[i] = acc;
}

// dwpe (maxT, C) f32: rows t < T get += Σ_b dout[b·T + t] (N = B·T rows), b in order.
extern "C" __global__ void AEM_LAUNCH_BOUNDS(1024)
    encoder_bwd_wpe_v1(const float* dout, int N, int T, int C, float* dwpe) {
  const long long i = aem_global_tid();
  if (i >= (long long)T * C) return;
  const long long t = i / C;
  const int c = (int)(i % C);
  float acc = dwpe[i];
  for (long long n = t; n < N; n += T) acc += dout[n * C + c];
  dwpe[i] = acc;
}

// ---------------------------------------------------------------------------------------------
// LayerNorm
// ---------------------------------------------------------------------------------------------

// out (N, C) f16 = (inp − mean)·rstd·w + b; mean, rstd (N) f32 saved for the backward.
extern "C" __global__ void AEM_LAUNCH_BOUNDS(1024)
    layernorm_fwd_v1(const __half* inp, const __half* w, const __half* b, int N, int C, __half* out,
                     float* mean, float* rstd) {
  const long long n = aem_global_tid();
  if (n >= N) return;
  const __half* x = inp + n * C;
  float s = 0.f;
  for (int c = 0; c < C; ++c) s += aem_h2f(x[c]);
  const float m = s / (float)C;
  float v = 0.f;
  for (int c = 0; c < C; ++c) {
    const float d = aem_h2f(x[c]) - m;
    v += d * d;
  }
  v = v / (float)C;
  const float r = 1.f / sqrtf(v + AEM_LN_EPS);
  __half* o = out + n * C;
  for (int c = 0; c < C; ++c) o[c] = aem_f2h((aem_h2f(x[c]) - m) * r * aem_h2f(w[c]) + aem_h2f(b[c]));
  mean[n] = m;
  rstd[n] = r;
}

// dinp (N, C) f32 += (w·g − mean(w·g) − norm·mean(w·g·norm))·rstd, g = dout (N, C) f32.
extern "C" __global__ void AEM_LAUNCH_BOUNDS(1024)
    layernorm_bwd_v1(const float* dout, const __half* inp, const __half* w, const float* mean,
                     const float* rstd, int N, int C, float* dinp) {
  const long long n = aem_global_tid();
  if (n >= N) return;
  const __half* x = inp + n * C;
  const float* g = dout + n * C;
  const float mu = mean[n], rs = rstd[n];
  float dm = 0.f, dn = 0.f;
  for (int c = 0; c < C; ++c) {
    const float norm = (aem_h2f(x[c]) - mu) * rs;
    const float wg = aem_h2f(w[c]) * g[c];
    dm += wg;
    dn += wg * norm;
  }
  dm = dm / (float)C;
  dn = dn / (float)C;
  float* d = dinp + n * C;
  for (int c = 0; c < C; ++c) {
    const float norm = (aem_h2f(x[c]) - mu) * rs;
    d[c] += (aem_h2f(w[c]) * g[c] - dm - norm * dn) * rs;
  }
}

// dw (C) f32 += Σ_n (inp − mean)·rstd·dout, db (C) f32 += Σ_n dout, rows in order.
extern "C" __global__ void AEM_LAUNCH_BOUNDS(1024)
    layernorm_bwd_params_v1(const float* dout, const __half* inp, const float* mean,
                            const float* rstd, int N, int C, float* dw, float* db) {
  const long long c = aem_global_tid();
  if (c >= C) return;
  float aw = dw[c], ab = db[c];
  for (long long n = 0; n < N; ++n) {
    const float g = dout[n * C + c];
    aw += (aem_h2f(inp[n * C + c]) - mean[n]) * rstd[n] * g;
    ab += g;
  }
  dw[c] = aw;
  db[c] = ab;
}

// ---------------------------------------------------------------------------------------------
// Projections (around the GEMM)
// ---------------------------------------------------------------------------------------------

// out (N, OC) f16 = acc (N, OC) f32 + bias (OC) f16 (bias may be NULL).
extern "C" __global__ void AEM_LAUNCH_BOUNDS(1024)
    bias_add_cast_v1(const float* acc, const __half* bias, int N, int OC, __half* out) {
  const long long i = aem_global_tid();
  if (i >= (long long)N * OC) return;
  const float b = bias ? aem_h2f(bias[i % OC]) : 0.f;
  out[i] = aem_f2h(acc[i] + b);
}

// dbias (OC) f32 += Σ_n dout (N, OC) f32, rows in order.
extern "C" __global__ void AEM_LAUNCH_BOUNDS(1024)
    bias_grad_v1(const float* dout, int N, int OC, float* dbias) {
  const long long o = aem_global_tid();
  if (o >= OC) return;
  float acc = dbias[o];
  for (long long n = 0; n < N; ++n) acc += dout[n * OC + o];
  dbias[o] = acc;
}

// ---------------------------------------------------------------------------------------------
// Elementwise
// ---------------------------------------------------------------------------------------------

// out (n) f16 = gelu(inp (n) f16), tanh form.
extern "C" __global__ void AEM_LAUNCH_BOUNDS(1024) gelu_fwd_v1(__half* out, const __half* inp, int n) {
  const long long i = aem_global_tid();
  if (i >= n) return;
  const float x = aem_h2f(inp[i]);
  out[i] = aem_f2h(0.5f * x * (1.f + aem_tanh_exp(AEM_GELU_SCALE * (x + 0.044715f * x * x * x))));
}

// dinp (n) f32 = gelu'(inp) · dout (overwritten).
extern "C" __global__ void AEM_LAUNCH_BOUNDS(1024)
    gelu_bwd_v1(const __half* inp, const float* dout, int n, float* dinp) {
  const long long i = aem_global_tid();
  if (i >= n) return;
  const float x = aem_h2f(inp[i]);
  const float th = aem_tanh_exp(AEM_GELU_SCALE * (x + 0.044715f * x * x * x));
  const float sech2 = 1.f - th * th;
  const float local =
      0.5f * (1.f + th) + x * 0.5f * sech2 * AEM_GELU_SCALE * (1.f + 3.f * 0.044715f * x * x);
  dinp[i] = local * dout[i];
}

// out (n) f16 = a + b.
extern "C" __global__ void AEM_LAUNCH_BOUNDS(1024)
    residual_fwd_v1(const __half* a, const __half* b, int n, __half* out) {
  const long long i = aem_global_tid();
  if (i >= n) return;
  out[i] = aem_f2h(aem_h2f(a[i]) + aem_h2f(b[i]));
}

// out (n) f32 = inp (n) f16 (exact).
extern "C" __global__ void AEM_LAUNCH_BOUNDS(1024) cast_f16_f32_v1(float* out, const __half* inp, int n) {
  const long long i = aem_global_tid();
  if (i >= n) return;
  out[i] = aem_h2f(inp[i]);
}

// out (n) f16 = inp (n) f32, round to nearest even.
extern "C" __global__ void AEM_LAUNCH_BOUNDS(1024) cast_f32_f16_v1(__half* out, const float* inp, int n) {
  const long long i = aem_global_tid();
  if (i >= n) return;
  out[i] = aem_f2h(inp[i]);
}

// x (n) f32 = value.
extern "C" __global__ void AEM_LAUNCH_BOUNDS(1024) fill_f32_v1(float* x, float value, int n) {
  const long long i = aem_global_tid();
  if (i >= n) return;
  x[i] = value;
}

// The trainer's validity mask on the loss head's input, in place: logits (N, V) f16, mask (N, W)
// u32 with W = ceil(V/32) words per row, bit (v mod 32) of word v/32 set = token v valid.
// Invalid entries become −65504, the most negative finite f16 (exp underflows to exactly 0, so
// the head sees the masked distribution and gives them a zero gradient); ±inf entries of valid
// tokens become ±65504, which is what rounding the clamped f32 logit to f16 gives (the CPU
// path's src/train/update.rs::masked_rows); NaN stays NaN (and the head reports it).
extern "C" __global__ void AEM_LAUNCH_BOUNDS(1024)
    mask_logits_v1(const unsigned* mask, int N, int V, int W, __half* logits) {
  const long long i = aem_global_tid();
  if (i >= (long long)N * V) return;
  const long long n = i / V;
  const int v = (int)(i % V);
  const unsigned word = mask[n * W + (v >> 5)];
  if (((word >> (v & 31)) & 1u) == 0u) {
    logits[i] = aem_f2h(-65504.f);
    return;
  }
  const float x = aem_h2f(logits[i]);
  if (fabsf(x) > 65504.f) logits[i] = aem_f2h(x > 0.f ? 65504.f : -65504.f);
}

// ---------------------------------------------------------------------------------------------
// Attention. qkv (B, T, 3C) f16: q at channels 0..C, k at C..2C, v at 2C..3C; head h owns
// channels h·hs..(h+1)·hs of each. att (B, NH, T, T) f16: softmax probabilities, exactly zero
// above the diagonal (written by attention_fwd_v1, read by the backward).
// ---------------------------------------------------------------------------------------------

// atty (B, T, C) f16 and att from qkv; probs (B, NH, T, T) f32 scratch holds the unrounded
// probabilities that P·V uses (as the CPU path, which multiplies before rounding att).
extern "C" __global__ void AEM_LAUNCH_BOUNDS(1024)
    attention_fwd_v1(const __half* qkv, int B, int T, int C, int NH, __half* atty, __half* att,
                     float* probs) {
  const long long i = aem_global_tid();  // (b, h, t)
  if (i >= (long long)B * NH * T) return;
  const int t = (int)(i % T);
  const int h = (int)((i / T) % NH);
  const long long b = i / ((long long)T * NH);
  const int hs = C / NH;
  const float scale = 1.f / sqrtf((float)hs);
  const __half* q = qkv + (b * T + t) * 3 * C + h * hs;
  float* p = probs + i * T;  // row t of (b, h)
  __half* a = att + i * T;
  float mx = -AEM_INFINITY;
  for (int t2 = 0; t2 <= t; ++t2) {
    const __half* k = qkv + (b * T + t2) * 3 * C + C + h * hs;
    float dot = 0.f;
    for (int d = 0; d < hs; ++d) dot += aem_h2f(q[d]) * aem_h2f(k[d]);
    p[t2] = dot * scale;
    mx = fmaxf(mx, p[t2]);
  }
  float sum = 0.f;
  for (int t2 = 0; t2 <= t; ++t2) {
    p[t2] = expf(p[t2] - mx);
    sum += p[t2];
  }
  const float inv = 1.f / sum;
  for (int t2 = 0; t2 < T; ++t2) {
    p[t2] = t2 <= t ? p[t2] * inv : 0.f;
    a[t2] = aem_f2h(p[t2]);
  }
  __half* y = atty + (b * T + t) * C + h * hs;
  for (int d = 0; d < hs; ++d) {
    float acc = 0.f;
    for (int t2 = 0; t2 <= t; ++t2) acc += p[t2] * aem_h2f(qkv[(b * T + t2) * 3 * C + 2 * C + h * hs + d]);
    y[d] = aem_f2h(acc);
  }
}

// With P = att and dY = datty (B, T, C) f32, for query row t of (b, h):
// dP[t2] = dY[t]·V[t2], dS[t2] = P[t2]·(dP[t2] − Σ P·dP)·scale (stored in dscores (B, NH, T, T)
// f32, zero above the diagonal), dQ[t] = Σ_t2 dS[t2]·K[t2] into dqkv (B, T, 3C) f32 (overwritten).
extern "C" __global__ void AEM_LAUNCH_BOUNDS(1024)
    attention_bwd_q_v1(const float* datty, const __half* qkv, const __half* att, int B, int T,
                       int C, int NH, float* dqkv, float* dscores) {
  const long long i = aem_global_tid();  // (b, h, t)
  if (i >= (long long)B * NH * T) return;
  const int t = (int)(i % T);
  const int h = (int)((i / T) % NH);
  const long long b = i / ((long long)T * NH);
  const int hs = C / NH;
  const float scale = 1.f / sqrtf((float)hs);
  const float* dy = datty + (b * T + t) * C + h * hs;
  const __half* p = att + i * T;
  float* ds = dscores + i * T;
  float dot = 0.f;
  for (int t2 = 0; t2 <= t; ++t2) {
    const __half* v = qkv + (b * T + t2) * 3 * C + 2 * C + h * hs;
    float dp = 0.f;
    for (int d = 0; d < hs; ++d) dp += dy[d] * aem_h2f(v[d]);
    ds[t2] = dp;
    dot += dp * aem_h2f(p[t2]);
  }
  for (int t2 = 0; t2 < T; ++t2) ds[t2] = t2 <= t ? aem_h2f(p[t2]) * (ds[t2] - dot) * scale : 0.f;
  float* dq = dqkv + (b * T + t) * 3 * C + h * hs;
  for (int d = 0; d < hs; ++d) {
    float acc = 0.f;
    for (int t2 = 0; t2 <= t; ++t2) acc += ds[t2] * aem_h2f(qkv[(b * T + t2) * 3 * C + C + h * hs + d]);
    dq[d] = acc;
  }
}

// For key row t2 of (b, h): dV[t2] = Σ_{t ≥ t2} P[t, t2]·dY[t], dK[t2] = Σ_{t ≥ t2} dS[t, t2]·Q[t],
// into dqkv (overwritten). Reads the dscores attention_bwd_q_v1 wrote.
extern "C" __global__ void AEM_LAUNCH_BOUNDS(1024)
    attention_bwd_kv_v1(const float* dscores, const float* datty, const __half* qkv,
                        const __half* att, int B, int T, int C, int NH, float* dqkv) {
  const long long i = aem_global_tid();  // (b, h, t2)
  if (i >= (long long)B * NH * T) return;
  const int t2 = (int)(i % T);
  const long long bh = i / T;
  const int h = (int)(bh % NH);
  const long long b = bh / NH;
  const int hs = C / NH;
  float* dk = dqkv + (b * T + t2) * 3 * C + C + h * hs;
  float* dv = dk + C;
  // Not unrolled: with 1024-thread blocks the kernel has 64 registers, and the unrolled loop
  // spills.
#pragma unroll 1
  for (int d = 0; d < hs; ++d) {
    float ak = 0.f, av = 0.f;
#pragma unroll 1
    for (int t = t2; t < T; ++t) {
      const long long row = (bh * T + t) * T + t2;  // (b, h, t, t2)
      ak += dscores[row] * aem_h2f(qkv[(b * T + t) * 3 * C + h * hs + d]);
      av += aem_h2f(att[row]) * datty[(b * T + t) * C + h * hs + d];
    }
    dk[d] = ak;
    dv[d] = av;
  }
}

// kc, vc (B, maxT, C) f16: row pos of sequence b = k, v of qkv (B, 3C) f16.
extern "C" __global__ void AEM_LAUNCH_BOUNDS(1024)
    kv_append_v1(const __half* qkv, int B, int pos, int maxT, int C, __half* kc, __half* vc) {
  const long long i = aem_global_tid();
  if (i >= (long long)B * C) return;
  const long long b = i / C;
  const int c = (int)(i % C);
  const long long dst = (b * maxT + pos) * C + c;
  kc[dst] = qkv[b * 3 * C + C + c];
  vc[dst] = qkv[b * 3 * C + 2 * C + c];
}

// One decoding step: out (B, C) f16 from the queries of qkv (B, 3C) f16 over cache rows 0..=pos
// of kc, vc (B, maxT, C) f16; probs (B, NH, maxT) f32 scratch.
extern "C" __global__ void AEM_LAUNCH_BOUNDS(1024)
    attention_decode_v1(const __half* qkv, const __half* kc, const __half* vc, int B, int pos,
                        int maxT, int C, int NH, __half* out, float* probs) {
  const long long i = aem_global_tid();  // (b, h)
  if (i >= (long long)B * NH) return;
  const int h = (int)(i % NH);
  const long long b = i / NH;
  const int hs = C / NH;
  const float scale = 1.f / sqrtf((float)hs);
  const __half* q = qkv + b * 3 * C + h * hs;
  float* p = probs + i * maxT;
  float mx = -AEM_INFINITY;
  for (int t2 = 0; t2 <= pos; ++t2) {
    const __half* k = kc + (b * maxT + t2) * C + h * hs;
    float dot = 0.f;
    for (int d = 0; d < hs; ++d) dot += aem_h2f(q[d]) * aem_h2f(k[d]);
    p[t2] = dot * scale;
    mx = fmaxf(mx, p[t2]);
  }
  float sum = 0.f;
  for (int t2 = 0; t2 <= pos; ++t2) {
    p[t2] = expf(p[t2] - mx);
    sum += p[t2];
  }
  const float inv = 1.f / sum;
  for (int t2 = 0; t2 <= pos; ++t2) p[t2] *= inv;
  __half* y = out + b * C + h * hs;
  for (int d = 0; d < hs; ++d) {
    float acc = 0.f;
    for (int t2 = 0; t2 <= pos; ++t2) acc += p[t2] * aem_h2f(vc[(b * maxT + t2) * C + h * hs + d]);
    y[d] = aem_f2h(acc);
  }
}

// ---------------------------------------------------------------------------------------------
// Optimizer
// ---------------------------------------------------------------------------------------------

// AdamW on n parameters: g = grads·gscale (the clip factor); m, v moments; master f32 weights
// with decoupled decay wd; params (n) f16 = round(master). c1 = 1 − β1^t, c2 = 1 − β2^t.
extern "C" __global__ void AEM_LAUNCH_BOUNDS(1024)
    adamw_v1(const float* grads, int n, float lr, float beta1, float beta2, float c1, float c2,
             float eps, float wd, float gscale, __half* params, float* master, float* m, float* v) {
  const long long i = aem_global_tid();
  if (i >= n) return;
  const float g = grads[i] * gscale;
  const float mi = beta1 * m[i] + (1.f - beta1) * g;
  const float vi = beta2 * v[i] + (1.f - beta2) * g * g;
  m[i] = mi;
  v[i] = vi;
  const float mh = mi / c1, vh = vi / c2;
  float w = master[i];
  w -= lr * (mh / (sqrtf(vh) + eps) + wd * w);
  master[i] = w;
  params[i] = aem_f2h(w);
}

// partial (gridDim.x) f32: block b's Σ x² over the grid-stride elements of x (n) f32 it visits.
extern "C" __global__ void AEM_LAUNCH_BOUNDS(1024) sumsq_v1(float* partial, const float* x, int n) {
  float s = 0.f;
  for (long long i = aem_global_tid(); i < n; i += (long long)gridDim.x * blockDim.x) s += x[i] * x[i];
  s = aem_block_sum(s);
  if (threadIdx.x == 0) partial[blockIdx.x] = s;
}
