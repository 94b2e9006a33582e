// emu_selftest_main.cpp — drives the emulator's selftest kernels through the C ABI exactly as
// Rust does (aem_emu_launch with args/sig) and checks results and expected errors.
//   emu_selftest            all checks (exit status 1 on any failure)
//   emu_selftest oob        launch the planted out-of-bounds kernel (ASan must report it)
//   emu_selftest bench      row log-sum-exp 256 x 32000 on one worker, and a scheduler micro-bench
//   emu_selftest exhaustive float->half for all 2^32 floats against the CPU's F16C instruction
#include <immintrin.h>

#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "cuda_fp16.h"  // the emulator's conversions, for the direct checks
#include "emu_abi.h"


static int g_pass = 0, g_fail = 0;
#define CHECK(cond, ...)                                  \
  do {                                                    \
    if (cond) {                                           \
      ++g_pass;                                           \
    } else {                                              \
      ++g_fail;                                           \
      printf("  FAIL %s:%d: ", __FILE__, __LINE__);       \
      printf(__VA_ARGS__);                                \
      printf("\n");                                       \
    }                                                     \
  } while (0)

struct Dim { unsigned x = 1, y = 1, z = 1; };
struct Result { int rc; std::string err; };

static Result launch(const char* name, Dim g, Dim b, size_t smem, const char* sig, std::vector<void*> args) {
  char err[1024];
  const int rc = aem_emu_launch(name, g.x, g.y, g.z, b.x, b.y, b.z, smem, args.data(), sig, err, sizeof err);
  return {rc, err};
}
static bool ok(const Result& r, const char* what) {
  if (r.rc != 0) printf("  launch %s failed (%d): %s\n", what, r.rc, r.err.c_str());
  return r.rc == 0;
}
static uint32_t fbits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static float bitsf(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

// ---- independent half-precision references -----------------------------------------------------
// Value of a finite non-negative half (bits <= 0x7C00, 0x7C00 standing for 65536), times 2^48.
static unsigned __int128 half_scaled(uint32_t h) {
  const uint32_t e = h >> 10, m = h & 0x3FF;
  return e == 0 ? (unsigned __int128)m << 24 : (unsigned __int128)(1024 + m) << (e + 23);
}
// float -> half by exact search: the nearest half, ties to the even mantissa.
static uint16_t ref_f2h(float f) {
  const uint32_t u = fbits(f), sign = (u >> 16) & 0x8000;
  if ((u & 0x7F800000) == 0x7F800000)  // inf / NaN: the documented mapping (quiet, payload top bits)
    return (uint16_t)(sign | 0x7C00 | ((u & 0x7FFFFF) ? 0x200 : 0) | ((u & 0x7FFFFF) >> 13));
  const float a = fabsf(f);
  if (a >= 65520.0f) return (uint16_t)(sign | 0x7C00);  // halfway past 65504 rounds to even = inf
  if (a <= 0x1p-25f) return (uint16_t)sign;              // at most half the smallest subnormal
  // a > 2^-25 has its lowest bit at >= 2^-48, so a * 2^48 is an exact integer (< 2^64).
  const unsigned __int128 A = (uint64_t)ldexp((double)a, 48);
  uint32_t lo = 0, hi = 0x7C00;  // largest h with value(h) <= A
  while (hi - lo > 1) {
    const uint32_t mid = (lo + hi) / 2;
    (half_scaled(mid) <= A ? lo : hi) = mid;
  }
  const unsigned __int128 d1 = A - half_scaled(lo), d2 = half_scaled(lo + 1) - A;
  const uint32_t h = d1 < d2 ? lo : d2 < d1 ? lo + 1 : ((lo & 1) ? lo + 1 : lo);
  return (uint16_t)(sign | h);
}
static uint32_t ref_h2f_bits(uint16_t h) {
  const uint32_t sign = (uint32_t)(h & 0x8000) << 16, e = (h >> 10) & 31, m = h & 0x3FF;
  if (e == 31) return m ? (sign | 0x7FC00000 | (m << 13)) : (sign | 0x7F800000);
  const double v = e == 0 ? ldexp((double)m, -24) : ldexp((double)(1024 + m), (int)e - 25);
  return sign | fbits((float)v);  // exact: every half is a float
}

__attribute__((target("f16c"))) static uint16_t f16c_f2h(float f) {
  return (uint16_t)_cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT);
}

// ---- tests ----------------------------------------------------------------------------------------
static void test_registry() {
  printf("registry\n");
  const int n = aem_emu_kernel_count();
  CHECK(n == 24, "kernel count %d", n);
  bool found_t = false, found_i = false;
  for (int i = 0; i < n; ++i) {
    if (!strcmp(aem_emu_kernel_name(i), "scale_t_3")) found_t = !strcmp(aem_emu_kernel_sig(i), "p");
    if (!strcmp(aem_emu_kernel_name(i), "indices")) found_i = !strcmp(aem_emu_kernel_sig(i), "psiulUfdp");
  }
  CHECK(found_t && found_i, "template / all-kinds signatures");
  CHECK(aem_emu_kernel_name(n) == nullptr, "out of range name");
}

static void test_block_sum() {
  printf("block_sum (static smem + __syncthreads), all order modes, 1 and 3 workers\n");
  const int n = 1000, blocks = 4;
  std::vector<float> x(n), out(blocks);
  for (int i = 0; i < n; ++i) x[i] = (float)(i % 7) - 3.0f + 0.5f;
  for (int mode = 0; mode < 3; ++mode)
    for (unsigned w : {1u, 3u}) {
      aem_emu_set_order(mode, 42);
      aem_emu_set_workers(w);
      float* px = x.data(); float* po = out.data(); int nn = n;
      if (!ok(launch("block_sum", {blocks}, {256}, 0, "ppi", {&px, &po, &nn}), "block_sum")) { ++g_fail; continue; }
      for (int b = 0; b < blocks; ++b) {
        float e = 0;
        for (int i = b * 256; i < std::min(n, b * 256 + 256); ++i) e += x[i];
        CHECK(out[b] == e, "mode %d workers %u block %d: %g vs %g", mode, w, b, out[b], e);
      }
    }
  aem_emu_set_order(0, 0);
  aem_emu_set_workers(0);
}

static void test_warp_ops() {
  printf("warp shuffles (xor, down, up-scan, idx broadcast, width 8)\n");
  const int n = 128;
  std::vector<float> x(n), a(n), d(n), s(n), bc(n), g(n);
  for (int i = 0; i < n; ++i) x[i] = (float)((i * 37) % 101) * 0.25f;
  float *px = x.data(), *pa = a.data(), *pd = d.data(), *ps = s.data(), *pb = bc.data(), *pg = g.data();
  if (!ok(launch("warp_ops", {2}, {64}, 0, "pppppp", {&px, &pa, &pd, &ps, &pb, &pg}), "warp_ops")) { ++g_fail; return; }
  for (int w = 0; w < n / 32; ++w) {
    const float* v = &x[w * 32];
    float sum = 0, dd[32], pre = 0;
    for (int l = 0; l < 32; ++l) { sum += v[l]; dd[l] = v[l]; }
    for (int o = 16; o > 0; o >>= 1) {  // down-reduction as the hardware does it
      float nx[32];
      for (int l = 0; l < 32; ++l) nx[l] = dd[l] + (l + o < 32 ? dd[l + o] : dd[l]);
      memcpy(dd, nx, sizeof dd);
    }
    for (int l = 0; l < 32; ++l) {
      const int i = w * 32 + l;
      pre += v[l];
      float seg = 0;
      for (int k = l & ~7; k < (l & ~7) + 8; ++k) seg += v[k];
      CHECK(a[i] == sum, "xor lane %d: %g vs %g", i, a[i], sum);
      CHECK(d[i] == dd[l], "down lane %d: %g vs %g", i, d[i], dd[l]);
      CHECK(s[i] == pre, "scan lane %d: %g vs %g", i, s[i], pre);
      CHECK(bc[i] == v[7], "bcast lane %d", i);
      CHECK(g[i] == seg, "width-8 xor lane %d: %g vs %g", i, g[i], seg);
    }
  }
  std::vector<double> xd(32), od(32);
  std::vector<unsigned long long> ou(32);
  for (int i = 0; i < 32; ++i) xd[i] = 1.0 / 3.0 + i * 1e-12;
  double *pxd = xd.data(), *pod = od.data();
  unsigned long long* pou = ou.data();
  if (!ok(launch("shfl64", {1}, {32}, 0, "ppp", {&pxd, &pod, &pou}), "shfl64")) { ++g_fail; return; }
  for (int i = 0; i < 32; ++i) {
    CHECK(od[i] == xd[(i + 1) % 32], "double shfl lane %d", i);
    CHECK(ou[i] == (0x0123456789ABCDEFull ^ (unsigned long long)(i ^ 1) << 40), "u64 shfl lane %d", i);
  }
}

static void test_votes() {
  printf("ballot / any / all / match_any / reduce_add, __syncthreads_count/and/or\n");
  const int n = 64;
  std::vector<int> p(n), any(n), all(n);
  std::vector<unsigned> bal(n), match(n), radd(n);
  for (int i = 0; i < n; ++i) p[i] = i < 32 ? (i % 3 == 0) : 1;
  int *pp = p.data(), *pany = any.data(), *pall = all.data();
  unsigned *pbal = bal.data(), *pm = match.data(), *pr = radd.data();
  if (!ok(launch("votes", {1}, {64}, 0, "pppppp", {&pp, &pbal, &pany, &pall, &pm, &pr}), "votes")) { ++g_fail; return; }
  unsigned b0 = 0;
  for (int l = 0; l < 32; ++l) b0 |= (unsigned)(l % 3 == 0) << l;
  for (int i = 0; i < n; ++i) {
    const bool w0 = i < 32;
    CHECK(bal[i] == (w0 ? b0 : 0xffffffffu), "ballot %d: %08x", i, bal[i]);
    CHECK(any[i] == 1, "any %d", i);
    CHECK(all[i] == (w0 ? 0 : 1), "all %d", i);
    CHECK(match[i] == (w0 ? (p[i] ? b0 : ~b0) : 0xffffffffu), "match %d: %08x", i, match[i]);
    CHECK(radd[i] == (w0 ? 11u : 32u), "reduce_add %d: %u", i, radd[i]);
  }
  const int nt = 96;
  std::vector<int> q(nt), cnt(nt), a2(nt), o2(nt);
  for (int pass = 0; pass < 2; ++pass) {
    for (int t = 0; t < nt; ++t) q[t] = pass ? 1 : (t % 5 == 0);
    int *pq = q.data(), *pc = cnt.data(), *pa = a2.data(), *po = o2.data();
    if (!ok(launch("sync_preds", {1}, {nt}, 0, "pppp", {&pq, &pc, &pa, &po}), "sync_preds")) { ++g_fail; return; }
    for (int t = 0; t < nt; ++t) {
      CHECK(cnt[t] == (pass ? nt : 20), "count %d: %d", t, cnt[t]);
      CHECK(a2[t] == pass, "and %d", t);
      CHECK(o2[t] == 1, "or %d", t);
    }
  }
}

static void test_dyn_smem() {
  printf("dynamic shared memory (poisoned at block start)\n");
  const int b = 100, g = 3;
  std::vector<float> out(b * g);
  std::vector<int> poisoned(b * g);
  float* po = out.data();
  int* pp = poisoned.data();
  for (int run = 0; run < 2; ++run) {  // second run: the buffer is re-poisoned, not left over
    if (!ok(launch("dyn_smem", {g}, {b}, b * sizeof(float), "pp", {&po, &pp}), "dyn_smem")) { ++g_fail; return; }
    for (int k = 0; k < g; ++k)
      for (int t = 0; t < b; ++t) {
        CHECK(poisoned[k * b + t] == 1, "block %d thread %d saw no poison", k, t);
        CHECK(out[k * b + t] == (float)(k * 1000 + b - 1 - t), "reverse %d %d", k, t);
      }
  }
}

static void test_atomics() {
  printf("atomics across blocks; last-block-done with __threadfence\n");
  const int n = 10007, nb = 13;
  std::vector<int> x(n);
  std::vector<unsigned> hist(nb, 0), eh(nb, 0);
  long long esum = 0;
  int emax = -1, emin = 1 << 30;
  for (int i = 0; i < n; ++i) {
    x[i] = (int)((i * 7919LL) % 1000);
    eh[x[i] % nb]++;
    esum += x[i];
    emax = std::max(emax, x[i]);
    emin = std::min(emin, x[i]);
  }
  float fsum = 0;
  double dsum = 0;
  int imax = -1, imin = 1 << 30;
  unsigned long long usum = 0;
  int* px = x.data(); int nn = n, nbb = nb;
  unsigned* ph = hist.data();
  float* pf = &fsum; double* pd = &dsum; int *pmx = &imax, *pmn = &imin; unsigned long long* pu = &usum;
  if (!ok(launch("atomics", {(n + 127) / 128}, {128}, 0, "pipippppp", {&px, &nn, &ph, &nbb, &pf, &pd, &pmx, &pmn, &pu}), "atomics")) { ++g_fail; return; }
  CHECK(hist == eh, "histogram");
  CHECK(fsum == (float)esum && dsum == (double)esum && usum == (unsigned long long)esum, "sums %g %g %llu vs %lld", fsum, dsum, usum, esum);
  CHECK(imax == emax && imin == emin, "min/max");

  const int m = 128 * 37 - 5, g = (m + 127) / 128;
  std::vector<float> y(m), partial(g);
  for (int i = 0; i < m; ++i) y[i] = (float)(i % 10);
  double ey = 0;
  for (float v : y) ey += v;
  unsigned counter = 0;
  for (int run = 0; run < 2; ++run) {
    float total = -1;
    float *py = y.data(), *pp = partial.data(), *pt = &total; unsigned* pc = &counter; int mm = m;
    if (!ok(launch("last_block_sum", {g}, {128}, 0, "pippp", {&py, &mm, &pp, &pc, &pt}), "last_block_sum")) { ++g_fail; return; }
    CHECK(total == (float)ey && counter == 0, "run %d: total %g vs %g, counter %u", run, total, ey, counter);
  }
}

static void test_half() {
  printf("half conversions: all 65536 halves, boundary floats, vs exact references\n");
  // half -> float for every half, through the h2f kernel.
  std::vector<unsigned short> hs(65536), back(65536);
  std::vector<float> fs(65536);
  for (int i = 0; i < 65536; ++i) hs[i] = (unsigned short)i;
  unsigned short* ph = hs.data(); float* pf = fs.data(); int n = 65536;
  if (!ok(launch("h2f", {256}, {256}, 0, "ppi", {&ph, &pf, &n}), "h2f")) { ++g_fail; return; }
  unsigned short* pb = back.data();
  if (!ok(launch("f2h", {256}, {256}, 0, "ppi", {&pf, &pb, &n}), "f2h")) { ++g_fail; return; }
  int bad_h2f = 0, bad_trip = 0;
  for (int i = 0; i < 65536; ++i) {
    bad_h2f += fbits(fs[i]) != ref_h2f_bits((uint16_t)i);
    const bool nan = (i & 0x7FFF) > 0x7C00;
    bad_trip += back[i] != (nan ? (i | 0x200) : i);  // a NaN comes back quiet
  }
  CHECK(bad_h2f == 0, "%d halves convert to the wrong float", bad_h2f);
  CHECK(bad_trip == 0, "%d halves fail the round trip", bad_trip);

  // float -> half: each half's value, the midpoints to its neighbours and +-1,2 float ulps around
  // them, specials, and pseudo-random bit patterns.
  std::vector<float> in;
  for (uint32_t h = 0; h < 0x7C00; ++h) {
    const double v = bitsf(ref_h2f_bits((uint16_t)h)), nx = bitsf(ref_h2f_bits((uint16_t)(h + 1)));
    const float mid = (float)((v + nx) / 2);  // exact: 12 significant bits
    for (float c : {(float)v, mid})
      for (int k = -2; k <= 2; ++k)
        if (c != 0 || k >= 0) { in.push_back(bitsf(fbits(c) + k)); in.push_back(-bitsf(fbits(c) + k)); }
  }
  for (float c : {0x1p-25f, 0x1p-26f, 0x1.8p-25f, 65504.0f, 65519.99f, 65520.0f, 1e30f, INFINITY, -INFINITY,
                  NAN, -NAN, bitsf(0x7F800001), bitsf(0xFFC00123), bitsf(0x7FBFFFFF), 1e-45f, 0.0f, -0.0f})
    in.push_back(c);
  uint64_t r = 0x1234567;
  for (int i = 0; i < 2000000; ++i) {
    r = r * 6364136223846793005ull + 1442695040888963407ull;
    in.push_back(bitsf((uint32_t)(r >> 32)));
  }
  const bool hw = __builtin_cpu_supports("f16c");
  std::vector<unsigned short> out(in.size());
  float* pi = in.data(); unsigned short* po = out.data(); int m = (int)in.size();
  if (!ok(launch("f2h", {(unsigned)((m + 255) / 256)}, {256}, 0, "ppi", {&pi, &po, &m}), "f2h sample")) { ++g_fail; return; }
  int bad = 0, bad_hw = 0;
  for (size_t i = 0; i < in.size(); ++i) {
    const uint16_t e = ref_f2h(in[i]);
    if (out[i] != e && bad++ < 5) printf("  f2h(%a = 0x%08x) = 0x%04x, want 0x%04x\n", in[i], fbits(in[i]), out[i], e);
    if (hw && out[i] != f16c_f2h(in[i]) && bad_hw++ < 5) printf("  f2h(0x%08x) = 0x%04x, F16C 0x%04x\n", fbits(in[i]), out[i], f16c_f2h(in[i]));
  }
  CHECK(bad == 0, "%d of %zu floats convert differently from the exact reference", bad, in.size());
  CHECK(bad_hw == 0, "%d of %zu floats convert differently from F16C", bad_hw, in.size());
  printf("  %zu floats checked against the exact reference%s\n", in.size(), hw ? " and F16C" : "");
}

static void test_indices() {
  printf("3-D grid/block indices; struct, int, uint, i64, u64, float, double parameters; template kernel\n");
  const Dim g{3, 2, 2}, b{4, 3, 2};
  const int nb = 12, nt = 24;
  std::vector<uint4> out(nb * nt);
  std::vector<double> echo(9);
  struct { int a; float b; double c; } params{-7, 2.5f, 1e100};
  uint4* po = out.data(); double* pe = echo.data();
  int i32 = -123456; unsigned u32 = 4000000000u; long long i64 = -(1LL << 40); unsigned long long u64 = 1ULL << 63;
  float f = 0.125f; double d = -3.75;
  if (!ok(launch("indices", g, b, 0, "psiulUfdp", {&po, &params, &i32, &u32, &i64, &u64, &f, &d, &pe}), "indices")) { ++g_fail; return; }
  int bad = 0;
  for (unsigned bz = 0; bz < 2; ++bz) for (unsigned by = 0; by < 2; ++by) for (unsigned bx = 0; bx < 3; ++bx)
    for (unsigned tz = 0; tz < 2; ++tz) for (unsigned ty = 0; ty < 3; ++ty) for (unsigned tx = 0; tx < 4; ++tx) {
      const unsigned bl = bx + 3 * (by + 2 * bz), tl = tx + 4 * (ty + 3 * tz);
      const uint4 v = out[bl * nt + tl];
      bad += !(v.x == bl && v.y == tl && v.z == tx + 100 * ty + 10000 * tz && v.w == bx + 100 * by + 10000 * bz);
    }
  CHECK(bad == 0, "%d wrong indices", bad);
  const double want[9] = {-7, 2.5, 1e100, -123456, 4000000000.0, -(double)(1LL << 40), (double)(1ULL << 63), 0.125, -3.75};
  for (int k = 0; k < 9; ++k) CHECK(echo[k] == want[k], "param %d: %g vs %g", k, echo[k], want[k]);
  std::vector<float> x(32);
  for (int i = 0; i < 32; ++i) x[i] = (float)i;
  float* px = x.data();
  if (!ok(launch("scale_t_3", {1}, {32}, 0, "p", {&px}), "scale_t_3")) { ++g_fail; return; }
  for (int i = 0; i < 32; ++i) CHECK(x[i] == 3.0f * i, "scale %d", i);
  std::vector<float> so(256);
  float* pso = so.data();
  if (!ok(launch("stack_use", {1}, {256}, 0, "p", {&pso}), "stack_use")) { ++g_fail; return; }
  for (int t = 0; t < 256; ++t) CHECK(so[t] == 64.0f * t + 2016.0f, "stack_use %d", t);
}

static std::vector<float> lse_input(int rows, int cols) {
  std::vector<float> x((size_t)rows * cols);
  uint32_t s = 12345;
  for (auto& v : x) { s = s * 1664525u + 1013904223u; v = (float)((s >> 8) % 20001) / 1000.0f - 10.0f; }
  return x;
}
static double lse_ref(const float* row, int cols) {
  double m = -INFINITY, s = 0;
  for (int c = 0; c < cols; ++c) m = std::max(m, (double)row[c]);
  for (int c = 0; c < cols; ++c) s += exp((double)row[c] - m);
  return m + log(s);
}

static void test_row_lse() {
  printf("row log-sum-exp (online, shuffles + smem)\n");
  const int rows = 5, cols = 1001;
  auto x = lse_input(rows, cols);
  std::vector<float> lse(rows);
  float *px = x.data(), *pl = lse.data(); int c = cols;
  if (!ok(launch("row_lse", {rows}, {256}, 0, "ppi", {&px, &pl, &c}), "row_lse")) { ++g_fail; return; }
  for (int r = 0; r < rows; ++r) {
    const double e = lse_ref(&x[(size_t)r * cols], cols);
    CHECK(fabs(lse[r] - e) <= 1e-5 * fabs(e) + 1e-5, "row %d: %.7g vs %.7g", r, lse[r], e);
  }
}

static void test_order_modes() {
  printf("order modes expose a missing barrier\n");
  const int n = 64;
  std::vector<float> def(n), rev(n), sh1(n), sh2(n), sh3(n);
  auto run = [&](int mode, unsigned long long seed, std::vector<float>& out) {
    aem_emu_set_order(mode, seed);
    float* po = out.data();
    return ok(launch("missing_barrier", {1}, {n}, n * sizeof(float), "p", {&po}), "missing_barrier");
  };
  if (!(run(0, 0, def) && run(1, 0, rev) && run(2, 7, sh1) && run(2, 7, sh2) && run(2, 8, sh3))) { ++g_fail; return; }
  aem_emu_set_order(0, 0);
  int nan_def = 0, nan_rev = 0;
  for (int t = 0; t < n; ++t) { nan_def += std::isnan(def[t]); nan_rev += std::isnan(rev[t]); }
  // Default: each thread runs to its end before the next one writes its slot, so all but thread
  // 63 (which reads s[0]) read poison. Reverse: only thread 63, which runs first, reads poison.
  CHECK(nan_def == n - 1 && !std::isnan(def[n - 1]), "default order: %d NaN", nan_def);
  CHECK(nan_rev == 1 && std::isnan(rev[n - 1]), "reverse order: %d NaN", nan_rev);
  CHECK(memcmp(sh1.data(), sh2.data(), n * 4) == 0, "shuffle is reproducible for one seed");
  CHECK(memcmp(sh1.data(), sh3.data(), n * 4) != 0, "different seeds differ");
  printf("  default: %d/%d threads read poison, reverse: %d/%d\n", nan_def, n, nan_rev, n);
}

static void expect_error(const char* name, Dim g, Dim b, int code, const char* needle, const char* sig,
                         std::vector<void*> args, size_t smem = 0) {
  const Result r = launch(name, g, b, smem, sig, std::move(args));
  printf("  %-24s rc=%d: %s\n", name, r.rc, r.err.c_str());
  CHECK(r.rc == code && r.err.find(needle) != std::string::npos, "%s: expected rc %d with '%s'", name, code, needle);
}

static void test_errors() {
  printf("errors are reported, not hangs or aborts\n");
  std::vector<float> f(2048);
  std::vector<int> i(2048, 1);
  float* pf = f.data();
  int* pi = i.data();
  expect_error("skip_barrier", {2}, {64}, 4, "not reached by threads 0-15 (they exited)", "p", {&pf});
  expect_error("divergent_barrier", {1}, {64}, 4, "different barriers", "p", {&pf});
  expect_error("mixed_warp_ops", {1}, {32}, 4, "different warp operations", "p", {&pi});
  expect_error("shfl_exited_lane", {1}, {32}, 4, "names threads 31 that exited", "p", {&pi});
  expect_error("warp_vs_block_deadlock", {1}, {64}, 4, "deadlock", "p", {&pi});
  expect_error("trap_kernel", {3}, {32}, 4, "block (1,0,0) thread (5,0,0): __trap()", "p", {&pi});
  i[17] = -1;
  expect_error("assert_kernel", {1}, {32}, 4, "thread (17,0,0): assertion failed: x[threadIdx.x] >= 0", "p", {&pi});
  expect_error("no_such_kernel", {1}, {1}, 1, "unknown kernel", "p", {&pi});
  int nn = 1;
  expect_error("block_sum", {1}, {256}, 2, "signature mismatch", "ppf", {&pf, &pf, &nn});
  expect_error("block_sum", {1}, {1025}, 3, "at most 1024", "ppi", {&pf, &pf, &nn});
  expect_error("block_sum", {1}, {32, 33}, 3, "at most 1024", "ppi", {&pf, &pf, &nn});
  expect_error("dyn_smem", {1}, {32}, 3, "exceed 227 KiB", "pp", {&pf, &pi}, 228 * 1024);
  // The pool and the fiber stacks are still healthy after aborted blocks.
  test_block_sum();
}

static void test_concurrent_callers() {
  printf("launches from 4 host threads at once (as parallel Rust tests do)\n");
  std::vector<int> bad(4, 0);
  std::vector<std::thread> ts;
  for (int k = 0; k < 4; ++k)
    ts.emplace_back([k, &bad] {
      const int n = 700 + k;
      std::vector<float> x(n, 1.0f), out(3);
      for (int rep = 0; rep < 25; ++rep) {
        float *px = x.data(), *po = out.data(); int nn = n;
        if (launch("block_sum", {3}, {256}, 0, "ppi", {&px, &po, &nn}).rc != 0) ++bad[k];
        if (out[0] != 256 || out[1] != 256 || out[2] != (float)(n - 512)) ++bad[k];
      }
    });
  for (auto& t : ts) t.join();
  for (int k = 0; k < 4; ++k) CHECK(bad[k] == 0, "caller %d: %d bad launches", k, bad[k]);
}

static void run_oob() {
  printf("launching oob_write: AddressSanitizer should report a heap-buffer-overflow now\n");
  fflush(stdout);
  const int n = 100;
  float* out = new float[n];
  int nn = n;
  const Result r = launch("oob_write", {1}, {128}, 0, "pi", {&out, &nn});
  printf("oob_write returned rc=%d without an AddressSanitizer report\n", r.rc);
  delete[] out;
  exit(3);
}

static void run_bench() {
  const int rows = 256, cols = 32000;
  auto x = lse_input(rows, cols);
  std::vector<float> lse(rows);
  float *px = x.data(), *pl = lse.data(); int c = cols;
  for (unsigned w : {1u, 0u}) {
    aem_emu_set_workers(w);
    launch("row_lse", {rows}, {256}, 0, "ppi", {&px, &pl, &c});  // warm-up: workers, stacks
    double best = 1e9;
    for (int rep = 0; rep < 3; ++rep) {
      const auto t0 = std::chrono::steady_clock::now();
      const Result r = launch("row_lse", {rows}, {256}, 0, "ppi", {&px, &pl, &c});
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      if (r.rc) { printf("row_lse failed: %s\n", r.err.c_str()); exit(1); }
      best = std::min(best, s);
    }
    double maxerr = 0;
    for (int r = 0; r < rows; ++r) maxerr = std::max(maxerr, fabs(lse[r] - lse_ref(&x[(size_t)r * cols], cols)));
    printf("row_lse %d x %d, 256 threads/block, %s: %.3f s (best of 3), max |err| vs f64 %.2e\n", rows, cols,
           w ? "1 worker" : "all cores", best, maxerr);
  }
  // Scheduler cost: each thread does `iters` x (one shuffle + one __syncthreads).
  aem_emu_set_workers(1);
  const int blocks = 64, threads = 256, iters = 100;
  std::vector<int> out(blocks * threads);
  int* po = out.data(); int it = iters;
  launch("sync_spin", {blocks}, {threads}, 0, "ip", {&it, &po});
  const auto t0 = std::chrono::steady_clock::now();
  const Result r = launch("sync_spin", {blocks}, {threads}, 0, "ip", {&it, &po});
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (r.rc) { printf("sync_spin failed: %s\n", r.err.c_str()); exit(1); }
  const double ops = 2.0 * blocks * threads * iters;
  printf("scheduler: %.0f thread-sync-ops in %.3f s = %.1f ns per thread per sync op (1 worker)\n", ops, s, s / ops * 1e9);
}

static void run_exhaustive() {
  if (!__builtin_cpu_supports("f16c")) { printf("no F16C on this CPU\n"); return; }
  uint64_t bad = 0;
  for (uint64_t u = 0; u <= 0xFFFFFFFFull; ++u) {
    const float f = bitsf((uint32_t)u);
    if (aem_emu_fp16::f32_to_f16_bits(f) != f16c_f2h(f) && bad++ < 5) printf("  mismatch at 0x%08x\n", (uint32_t)u);
  }
  printf("float->half over all 2^32 floats vs F16C: %llu mismatches\n", (unsigned long long)bad);
  for (uint32_t h = 0; h < 65536; ++h)  // and half->float, via the header directly
    if (fbits(aem_emu_fp16::f16_bits_to_f32((uint16_t)h)) != ref_h2f_bits((uint16_t)h)) ++bad;
  exit(bad ? 1 : 0);
}

int main(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "";
  if (mode == "oob") run_oob();
  if (mode == "bench") { run_bench(); return 0; }
  if (mode == "exhaustive") run_exhaustive();
  test_registry();
  test_block_sum();
  test_warp_ops();
  test_votes();
  test_dyn_smem();
  test_atomics();
  test_half();
  test_indices();
  test_row_lse();
  test_order_modes();
  test_errors();
  test_concurrent_callers();
  printf("%s: %d checks passed, %d failed\n", g_fail ? "FAILED" : "OK", g_pass, g_fail);
  return g_fail ? 1 : 0;
}
