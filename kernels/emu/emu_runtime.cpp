// emu_runtime.cpp — the CPU emulator's runtime: kernel registry, worker pool, the per-block fiber
// scheduler (barriers, warp exchanges, error reports) and the C ABI that Rust calls.
//
// A launch is synchronous. Workers (OS threads, one per core by default) take whole blocks from an
// atomic counter. On a worker every CUDA thread of the block is a fiber with its own stack; a
// fiber runs until it waits at a barrier / warp operation or exits, then control returns to the
// block's scheduler, which releases a barrier when all threads wait at it and a warp operation
// when all lanes of its mask wait at it. When nothing can run but the block is unfinished, the
// scheduler reports why (exited threads, mismatched operations, deadlock) instead of hanging.
//
// Build: g++ -std=c++17 -O2 -pthread [-DAEM_EMU_UCONTEXT] [-fsanitize=address] -I kernels/emu
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdarg>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

// After the standard headers: cuda_emu.h defines keyword macros (__noinline__) they would trip on.
#include "cuda_emu.h"
#include "emu_abi.h"
#include "cuda_bf16.h"
#include "emu_register.h"

#if !defined(__x86_64__) && !defined(AEM_EMU_UCONTEXT)
#define AEM_EMU_UCONTEXT 1  // the hand-written switch is x86-64 only
#endif
#ifdef AEM_EMU_UCONTEXT
#include <ucontext.h>
#endif

#if defined(__SANITIZE_ADDRESS__)
#define AEM_EMU_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define AEM_EMU_ASAN 1
#endif
#endif
#ifdef AEM_EMU_ASAN
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif

__thread aem_emu::ThreadState* aem_emu_t_thread = nullptr;
__thread aem_emu::BlockState* aem_emu_t_block = nullptr;

namespace aem_emu {
namespace {

// ---- context switch -------------------------------------------------------------------------
#ifndef AEM_EMU_UCONTEXT
// Saves the callee-saved registers and rsp of the running context into *save_sp and resumes the
// one saved at load_sp. MXCSR / x87 control words are not saved: kernels never change them.
extern "C" void aem_emu_ctx_switch(void** save_sp, void* load_sp);
// First "return address" of a new fiber: calls r13(r12) on a 16-byte aligned stack.
extern "C" void aem_emu_ctx_start();
asm(R"(
  .text
  .p2align 4
  .globl aem_emu_ctx_switch
  .hidden aem_emu_ctx_switch
  .type aem_emu_ctx_switch,@function
aem_emu_ctx_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size aem_emu_ctx_switch, .-aem_emu_ctx_switch
  .p2align 4
  .globl aem_emu_ctx_start
  .hidden aem_emu_ctx_start
  .type aem_emu_ctx_start,@function
aem_emu_ctx_start:
  movq %r12, %rdi
  callq *%r13
  ud2
  .size aem_emu_ctx_start, .-aem_emu_ctx_start
)");
#endif

enum State : uint8_t { RUNNABLE, WAIT_BAR, WAIT_WARP, EXITED, FAILED };

const char* const kWarpName[W_KIND_COUNT] = {
    "__shfl_sync", "__shfl_up_sync", "__shfl_down_sync", "__shfl_xor_sync", "__ballot_sync",
    "__any_sync", "__all_sync", "__syncwarp", "__match_any_sync", "__reduce_add_sync",
    "__reduce_min_sync(unsigned)", "__reduce_max_sync(unsigned)", "__reduce_min_sync(int)",
    "__reduce_max_sync(int)"};
const char* const kBarName[4] = {"__syncthreads", "__syncthreads_count", "__syncthreads_and",
                                 "__syncthreads_or"};

struct Fiber {
  ThreadState pub;  // first member: aem_emu_t_thread points here
  int tid;
  unsigned lane, warp;
  State state;
  // What the fiber waits at (and its operand), filled before it yields.
  int kind;
  unsigned mask;
  int arg, width;
  uint64_t val, result;
  const char* file;
  int line;
  char* stack;  // usable stack [stack, stack + stack_size)
  size_t stack_size;
#ifdef AEM_EMU_UCONTEXT
  ucontext_t uc;
#else
  void* sp;
#endif
#ifdef AEM_EMU_ASAN
  void* fake_stack;
#endif
};

struct Job {
  const char* name;
  Thunk thunk;
  void** args;
  dim3 grid, block;
  size_t smem;
  int order;
  uint64_t seed;
  uint64_t nblocks;
  std::atomic<uint64_t> next{0};
  std::atomic<bool> failed{false};
  std::mutex mu;
  std::string msg;
  void set_error(const std::string& m) {
    std::lock_guard<std::mutex> g(mu);
    if (!failed.load()) msg = m;
    failed.store(true);
  }
};

struct Warp {
  unsigned exists, exited, waiting;  // lane masks
};

size_t stack_bytes() {
#ifdef AEM_EMU_ASAN
  size_t kb = 256;  // ASan frames carry redzones
#else
  size_t kb = 64;
#endif
  if (const char* e = getenv("AEM_EMU_STACK_KB")) {
    const long v = strtol(e, nullptr, 10);
    if (v >= 16) kb = (size_t)v;
  }
  return kb * 1024;
}

// Appends "a-b,c,..." (linear thread indices) for the set bits of `sel` over `n` threads.
std::string ranges(const std::vector<char>& sel) {
  std::string s;
  const int n = (int)sel.size();
  int shown = 0;
  for (int i = 0; i < n; ++i) {
    if (!sel[i]) continue;
    int j = i;
    while (j + 1 < n && sel[j + 1]) ++j;
    if (shown++ == 8) { s += ",..."; break; }
    if (!s.empty()) s += ",";
    s += std::to_string(i);
    if (j > i) s += "-" + std::to_string(j);
    i = j;
  }
  return s;
}

std::string fmt(const char* f, ...) __attribute__((format(printf, 1, 2)));
std::string fmt(const char* f, ...) {
  char buf[512];
  va_list ap;
  va_start(ap, f);
  vsnprintf(buf, sizeof buf, f, ap);
  va_end(ap);
  return buf;
}

// One OS worker: its fibers (stacks reused across blocks and launches) and the scheduler state
// of the block it is running.
struct Worker {
  std::vector<Fiber*> fibers;
  size_t stack_size = stack_bytes();
  BlockState blk{};
  Job* job = nullptr;
  void* smem = nullptr;
  size_t smem_size = SIZE_MAX;
  int n = 0;                         // threads in the block
  int live = 0;                      // not exited
  std::vector<int> runq;             // ring of runnable tids (each at most once), power-of-2 size
  size_t head = 0, count = 0, qmask = 0;
  std::vector<Warp> warps;
  int bar_count = 0, bar_preds = 0;  // barrier arrivals, predicates set
  bool bar_mismatch = false;
  Fiber* bar_first = nullptr;
  uint64_t rng = 0;
  std::vector<int> tmp;
  std::string fiber_error;           // set by a fiber before it yields as FAILED
  bool dirty_stacks = false;         // a block was abandoned mid-way (ASan poison may remain)
#ifdef AEM_EMU_UCONTEXT
  ucontext_t sched_uc;
#else
  void* sched_sp = nullptr;
#endif
#ifdef AEM_EMU_ASAN
  void* sched_fake = nullptr;
  const void* sched_bottom = nullptr;
  size_t sched_size = 0;
#endif

  ~Worker() {
    for (Fiber* f : fibers) {
#ifdef AEM_EMU_ASAN
      __asan_unpoison_memory_region(f->stack, f->stack_size);  // leave no stale shadow behind
#endif
      munmap(f->stack - page(), f->stack_size + page());
      delete f;
    }
    free(smem);
  }
  static size_t page() { return (size_t)sysconf(_SC_PAGESIZE); }

  Fiber* new_fiber() {
    // One mapping per stack with a PROT_NONE guard page below it: an overflow faults instead of
    // silently corrupting the neighbouring stack.
    const size_t pg = page();
    char* m = (char*)mmap(nullptr, stack_size + pg, PROT_READ | PROT_WRITE,
                          MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (m == MAP_FAILED) return nullptr;
    mprotect(m, pg, PROT_NONE);
#ifdef AEM_EMU_ASAN
    // The range may have been a dead thread's stack whose shadow still holds stale redzones.
    __asan_unpoison_memory_region(m + pg, stack_size);
#endif
    Fiber* f = new Fiber();
    f->stack = m + pg;
    f->stack_size = stack_size;
    return f;
  }

  uint64_t next_rand() {  // splitmix64
    uint64_t z = (rng += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }

  // Makes the tids in tmp runnable, in the launch's order mode.
  void push_tmp() {
    const int k = (int)tmp.size();
    if (job->order == 1) {
      for (int i = 0; i < k / 2; ++i) std::swap(tmp[i], tmp[k - 1 - i]);
    } else if (job->order == 2) {
      for (int i = k - 1; i > 0; --i) std::swap(tmp[i], tmp[next_rand() % (uint64_t)(i + 1)]);
    }
    for (int t : tmp) {
      fibers[t]->state = RUNNABLE;
      runq[(head + count++) & qmask] = t;
    }
    tmp.clear();
  }

  std::string where() const {
    return fmt("kernel %s block (%u,%u,%u)", job->name, blk.block_idx.x, blk.block_idx.y,
               blk.block_idx.z);
  }
  std::string thread_str(const Fiber* f) const {
    return fmt("thread (%u,%u,%u)", f->pub.thread_idx.x, f->pub.thread_idx.y, f->pub.thread_idx.z);
  }
  std::string op_str(const Fiber* f) const {
    if (f->state == WAIT_BAR) return fmt("%s at %s:%d", kBarName[f->kind], f->file, f->line);
    return fmt("%s at %s:%d (mask 0x%08x)", kWarpName[f->kind], f->file, f->line, f->mask);
  }

  bool run_block(uint64_t linear);
  void resume(Fiber* f);
  void on_barrier(Fiber* f);
  void on_warp(Fiber* f);
  void exchange(Fiber* f0, unsigned m);
  std::string stall_reason();
};

thread_local Worker* t_worker = nullptr;

inline Fiber* cur_fiber() { return reinterpret_cast<Fiber*>(aem_emu_t_thread); }

// ---- switching between a fiber and its scheduler ----------------------------------------------
// The ASan calls tell the sanitizer which stack is active, so it neither misreports fiber stack
// accesses nor loses track of the worker's own stack.
void fiber_main(Fiber* f);

void Worker::resume(Fiber* f) {
  aem_emu_t_thread = &f->pub;
#ifdef AEM_EMU_ASAN
  __sanitizer_start_switch_fiber(&sched_fake, f->stack, f->stack_size);
#endif
#ifdef AEM_EMU_UCONTEXT
  swapcontext(&sched_uc, &f->uc);
#else
  aem_emu_ctx_switch(&sched_sp, f->sp);
#endif
#ifdef AEM_EMU_ASAN
  __sanitizer_finish_switch_fiber(sched_fake, nullptr, nullptr);
#endif
  aem_emu_t_thread = nullptr;
}

// Called on the fiber's stack: hand control to the scheduler; returns when rescheduled
// (never when the fiber has exited or failed).
void yield_to_scheduler(Fiber* f) {
  Worker* w = t_worker;
#ifdef AEM_EMU_ASAN
  const bool final = f->state == EXITED || f->state == FAILED;
  __sanitizer_start_switch_fiber(final ? nullptr : &f->fake_stack, w->sched_bottom, w->sched_size);
#endif
#ifdef AEM_EMU_UCONTEXT
  swapcontext(&f->uc, &w->sched_uc);
#else
  aem_emu_ctx_switch(&f->sp, w->sched_sp);
#endif
#ifdef AEM_EMU_ASAN
  __sanitizer_finish_switch_fiber(f->fake_stack, nullptr, nullptr);
#endif
}

void fiber_main(Fiber* f) {
  Worker* w = t_worker;
#ifdef AEM_EMU_ASAN
  // Learn the scheduler's stack from the switch that started us.
  __sanitizer_finish_switch_fiber(nullptr, &w->sched_bottom, &w->sched_size);
#endif
  w->job->thunk(w->job->args);
  f->state = EXITED;
  yield_to_scheduler(f);
  __builtin_unreachable();
}

#ifdef AEM_EMU_UCONTEXT
void fiber_main_uc() { fiber_main(cur_fiber()); }
#endif

void init_context(Worker* w, Fiber* f) {
#ifdef AEM_EMU_UCONTEXT
  getcontext(&f->uc);
  f->uc.uc_stack.ss_sp = f->stack;
  f->uc.uc_stack.ss_size = f->stack_size;
  f->uc.uc_link = nullptr;
  makecontext(&f->uc, fiber_main_uc, 0);
  (void)w;
#else
  // Frame popped by aem_emu_ctx_switch: r15 r14 r13 r12 rbx rbp, then "return" into ctx_start.
  // Stack tops are page aligned; staggering them by 64-byte lines keeps the fibers' saved frames
  // out of one L1/L2 cache set (that aliasing made every switch miss).
  const uintptr_t top = (uintptr_t)f->stack + f->stack_size - (uintptr_t)(f->tid % 64) * 64 - 64;
  uint64_t* sp = (uint64_t*)(top & ~(uintptr_t)15);
  *--sp = (uint64_t)(uintptr_t)&aem_emu_ctx_start;
  *--sp = 0;                                  // rbp
  *--sp = 0;                                  // rbx
  *--sp = (uint64_t)(uintptr_t)f;             // r12: argument
  *--sp = (uint64_t)(uintptr_t)&fiber_main;   // r13: entry
  *--sp = 0;                                  // r14
  *--sp = 0;                                  // r15
  f->sp = sp;
  (void)w;
#endif
}

// ---- the block scheduler -----------------------------------------------------------------------
bool Worker::run_block(uint64_t linear) {
  const dim3 g = job->grid, b = job->block;
  blk.block_idx = uint3{(unsigned)(linear % g.x), (unsigned)(linear / g.x % g.y),
                        (unsigned)(linear / ((uint64_t)g.x * g.y))};
  blk.block_dim = b;
  blk.grid_dim = g;
  blk.dyn_smem = smem;
  aem_emu_t_block = &blk;
  if (job->smem) memset(smem, 0xFF, job->smem);  // poison: stale reads show up as NaN

  n = (int)(b.x * b.y * b.z);
  while ((int)fibers.size() < n) {
    Fiber* f = new_fiber();
    if (!f) {
      job->set_error(where() + ": cannot allocate fiber stacks");
      return false;
    }
    fibers.push_back(f);
  }
#ifdef AEM_EMU_ASAN
  if (dirty_stacks)  // frames of abandoned fibers left their redzones poisoned
    for (Fiber* f : fibers) __asan_unpoison_memory_region(f->stack, f->stack_size);
#endif
  dirty_stacks = false;
  for (int t = 0; t < n; ++t) {
    Fiber* f = fibers[t];
    f->tid = t;
    f->pub.thread_idx = uint3{t % b.x, t / b.x % b.y, t / (b.x * b.y)};
    f->lane = t % 32;
    f->warp = t / 32;
    f->state = RUNNABLE;
    init_context(this, f);
  }
  warps.assign((n + 31) / 32, Warp{0, 0, 0});
  for (int wi = 0; wi < (int)warps.size(); ++wi) {
    const int lanes = std::min(32, n - 32 * wi);
    warps[wi].exists = lanes == 32 ? 0xffffffffu : ((1u << lanes) - 1);
  }
  live = n;
  bar_count = bar_preds = 0;
  bar_mismatch = false;
  rng = job->seed ^ (0x9E3779B97F4A7C15ull * (linear + 1));
  size_t cap = 1;
  while (cap < (size_t)n) cap *= 2;
  runq.assign(cap, 0);
  qmask = cap - 1;
  head = count = 0;
  tmp.clear();
  for (int t = 0; t < n; ++t) tmp.push_back(t);
  push_tmp();

  while (count) {
    if (job->failed.load(std::memory_order_relaxed)) break;  // another block failed
    Fiber* f = fibers[runq[head]];
    head = (head + 1) & qmask;
    --count;
    resume(f);
    switch (f->state) {
      case EXITED: {
        --live;
        Warp& wp = warps[f->warp];
        wp.exited |= 1u << f->lane;
        break;
      }
      case WAIT_BAR: on_barrier(f); break;
      case WAIT_WARP: on_warp(f); break;
      case FAILED: job->set_error(fiber_error); break;
      case RUNNABLE: break;
    }
  }
  if (!job->failed.load() && live > 0) job->set_error(where() + ": " + stall_reason());
  const bool ok = live == 0 && !job->failed.load();
  if (!ok) dirty_stacks = true;
  aem_emu_t_block = nullptr;
  return ok;
}

void Worker::on_barrier(Fiber* f) {
  if (bar_count == 0) {
    bar_first = f;
  } else if (f->kind != bar_first->kind || f->line != bar_first->line ||
             (f->file != bar_first->file && strcmp(f->file, bar_first->file) != 0)) {
    bar_mismatch = true;
  }
  ++bar_count;
  bar_preds += f->val != 0;
  if (bar_count < n) return;  // (with exited threads it never completes: see stall_reason)
  if (bar_mismatch) {
    std::string m = where() + ": threads wait at different barriers:";
    std::vector<char> seen(n, 0);
    for (int t = 0; t < n; ++t) {
      if (seen[t]) continue;
      std::vector<char> sel(n, 0);
      for (int u = t; u < n; ++u) {
        Fiber* g = fibers[u];
        if (g->kind == fibers[t]->kind && g->line == fibers[t]->line && !strcmp(g->file, fibers[t]->file))
          sel[u] = seen[u] = 1;
      }
      m += " " + op_str(fibers[t]) + " (threads " + ranges(sel) + ");";
    }
    m.pop_back();
    job->set_error(m);
    return;
  }
  const int kind = bar_first->kind;
  const int res = kind == B_COUNT ? bar_preds : kind == B_AND ? (bar_preds == n) : kind == B_OR ? (bar_preds > 0) : 0;
  for (int t = 0; t < n; ++t) {
    fibers[t]->result = (uint64_t)res;
    tmp.push_back(t);
  }
  bar_count = bar_preds = 0;
  bar_mismatch = false;
  push_tmp();
}

void Worker::on_warp(Fiber* f) {
  Warp& wp = warps[f->warp];
  wp.waiting |= 1u << f->lane;
  // Lanes past the end of a partial last warp do not exist; a full mask there is tolerated.
  const unsigned m = f->mask & wp.exists;
  if ((wp.waiting & m) != m) return;  // someone in the mask has not arrived yet
  const int base = (int)f->warp * 32;
  for (unsigned mm = m; mm; mm &= mm - 1) {
    Fiber* g = fibers[base + __builtin_ctz(mm)];
    if (g->kind != f->kind || (g->mask & wp.exists) != m || g->width != f->width) {
      job->set_error(where() + ": lanes of one warp operation wait at different warp operations: " +
                     thread_str(f) + " at " + op_str(f) + ", " + thread_str(g) + " at " + op_str(g));
      return;
    }
  }
  exchange(f, m);
  wp.waiting &= ~m;
  for (unsigned mm = m; mm; mm &= mm - 1) tmp.push_back(base + __builtin_ctz(mm));
  push_tmp();
}

// Performs the warp operation `f0->kind` for the lanes of m (all waiting, all consistent).
void Worker::exchange(Fiber* f0, unsigned m) {
  const int base = (int)f0->warp * 32, kind = f0->kind, w = f0->width;
  Fiber* L[32];
  uint64_t v[32];
  for (unsigned mm = m; mm; mm &= mm - 1) {
    const int l = __builtin_ctz(mm);
    L[l] = fibers[base + l];
    v[l] = L[l]->val;
  }
  unsigned any = 0;
  uint32_t sum = 0, umin = UINT32_MAX, umax = 0;
  int32_t imin = INT32_MAX, imax = INT32_MIN;
  for (unsigned mm = m; mm; mm &= mm - 1) {
    const int l = __builtin_ctz(mm);
    const uint32_t x = (uint32_t)v[l];
    any |= (v[l] != 0) << l;
    sum += x;
    umin = std::min(umin, x);
    umax = std::max(umax, x);
    imin = std::min(imin, (int32_t)x);
    imax = std::max(imax, (int32_t)x);
  }
  for (unsigned mm = m; mm; mm &= mm - 1) {
    const int l = __builtin_ctz(mm);
    const int seg = l & ~(w - 1);  // first lane of this lane's width-segment
    int src = -1;
    uint64_t r = 0;
    switch (kind) {
      case W_SHFL_IDX: src = seg + (L[l]->arg & (w - 1)); break;
      case W_SHFL_UP: src = l - L[l]->arg; if (src < seg) src = l; break;
      case W_SHFL_DOWN: src = l + L[l]->arg; if (src >= seg + w) src = l; break;
      case W_SHFL_XOR: src = l ^ L[l]->arg; if (src >= seg + w || src < 0 || src > 31) src = l; break;
      case W_BALLOT: r = any; break;
      case W_ANY: r = any != 0; break;
      case W_ALL: r = any == m; break;
      case W_SYNCWARP: break;
      case W_MATCH_ANY:
        for (unsigned k = m; k; k &= k - 1)
          if (v[__builtin_ctz(k)] == v[l]) r |= 1u << __builtin_ctz(k);
        break;
      case W_REDUCE_ADD: r = sum; break;
      case W_REDUCE_MIN_U: r = umin; break;
      case W_REDUCE_MAX_U: r = umax; break;
      case W_REDUCE_MIN_I: r = (uint32_t)imin; break;
      case W_REDUCE_MAX_I: r = (uint32_t)imax; break;
    }
    if (src >= 0) {
      // A source lane that does not take part is undefined on the GPU; we return our own value.
      r = (src < 32 && (m >> src & 1)) ? v[src] : v[l];
    }
    L[l]->result = r;
  }
}

// Nothing can run but threads remain: say why.
std::string Worker::stall_reason() {
  std::vector<char> exited(n, 0), bar(n, 0);
  bool any_exited = false, all_bar = true;
  for (int t = 0; t < n; ++t) {
    const State s = fibers[t]->state;
    exited[t] = s == EXITED;
    bar[t] = s == WAIT_BAR;
    any_exited |= exited[t];
    if (s != EXITED && s != WAIT_BAR) all_bar = false;
  }
  if (any_exited && all_bar && bar_count > 0 && !bar_mismatch)
    return "barrier " + op_str(bar_first) + " not reached by threads " + ranges(exited) +
           " (they exited)";
  // A warp operation naming a lane that exited can never complete.
  for (int t = 0; t < n; ++t) {
    Fiber* f = fibers[t];
    if (f->state != WAIT_WARP) continue;
    const Warp& wp = warps[f->warp];
    const unsigned dead = f->mask & wp.exists & wp.exited;
    if (!dead) continue;
    std::vector<char> sel(n, 0), who(n, 0);
    for (unsigned mm = dead; mm; mm &= mm - 1) sel[f->warp * 32 + __builtin_ctz(mm)] = 1;
    for (int u = 0; u < n; ++u) {
      Fiber* g = fibers[u];
      who[u] = g->state == WAIT_WARP && g->warp == f->warp && g->kind == f->kind && g->line == f->line;
    }
    return op_str(f) + " by threads " + ranges(who) + " names threads " + ranges(sel) +
           " that exited";
  }
  // Generic deadlock: group waiting threads by what they wait at.
  std::string m = "deadlock:";
  std::vector<char> seen(n, 0);
  for (int t = 0; t < n; ++t) {
    Fiber* f = fibers[t];
    if (seen[t] || (f->state != WAIT_BAR && f->state != WAIT_WARP)) continue;
    std::vector<char> sel(n, 0);
    for (int u = t; u < n; ++u) {
      Fiber* g = fibers[u];
      if (g->state == f->state && g->kind == f->kind && g->line == f->line && g->mask == f->mask &&
          !strcmp(g->file, f->file))
        sel[u] = seen[u] = 1;
    }
    m += " threads " + ranges(sel) + " wait at " + op_str(f) + ";";
  }
  if (any_exited) m += " threads " + ranges(exited) + " exited;";
  m.pop_back();
  return m;
}

// ---- fiber side of the sync operations -------------------------------------------------------
Fiber* fiber_or_die(const char* op) {
  Fiber* f = cur_fiber();
  if (!f || !t_worker) {
    fprintf(stderr, "aem_emu: %s called outside an emulated kernel launch\n", op);
    std::abort();  // a host-side programming error, not reachable from a launch
  }
  return f;
}

// Abandons the fiber, so nothing on its stack may own heap memory at the switch (LeakSanitizer):
// hence a plain char buffer for the message.
[[noreturn]] void fail_fiber(Fiber* f, const char* what) {
  Worker* w = t_worker;
  w->fiber_error = w->where() + " " + w->thread_str(f) + ": " + what;
  f->state = FAILED;
  yield_to_scheduler(f);
  __builtin_unreachable();
}

}  // namespace

uint64_t warp_op(int kind, unsigned mask, uint64_t val, int arg, int width, const char* file, int line) {
  Fiber* f = fiber_or_die(kWarpName[kind]);
  char msg[256];
  if (!(mask >> f->lane & 1)) {
    snprintf(msg, sizeof msg, "%s at %s:%d: mask 0x%08x does not include the calling lane %u",
             kWarpName[kind], file, line, mask, f->lane);
    fail_fiber(f, msg);
  }
  if (width < 1 || width > 32 || (width & (width - 1))) {
    snprintf(msg, sizeof msg, "%s at %s:%d: width %d is not a power of two in [1, 32]",
             kWarpName[kind], file, line, width);
    fail_fiber(f, msg);
  }
  f->kind = kind;
  f->mask = mask;
  f->val = val;
  f->arg = arg;
  f->width = width;
  f->file = file;
  f->line = line;
  f->state = WAIT_WARP;
  yield_to_scheduler(f);
  return f->result;
}

int barrier(int kind, int pred, const char* file, int line) {
  Fiber* f = fiber_or_die(kBarName[kind]);
  f->kind = kind;
  f->val = pred != 0;
  f->file = file;
  f->line = line;
  f->state = WAIT_BAR;
  yield_to_scheduler(f);
  return (int)f->result;
}

unsigned active_mask() {
  Fiber* f = fiber_or_die("__activemask");
  const Warp& wp = t_worker->warps[f->warp];
  return wp.exists & ~wp.exited;
}

void fail(const char* what, const char* file, int line) {
  Fiber* f = fiber_or_die(what);
  char msg[512];
  snprintf(msg, sizeof msg, "%s at %s:%d", what, file, line);
  fail_fiber(f, msg);
}

long long clock64() {
  return (long long)std::chrono::steady_clock::now().time_since_epoch().count();
}

// ---- kernel registry ---------------------------------------------------------------------------
namespace {
struct Kernel {
  std::string name, sig;
  Thunk thunk;
  bool duplicate;
};
std::vector<Kernel>& registry() {
  static std::vector<Kernel> r;  // function-local: safe from static-initialisation order
  return r;
}
}  // namespace

void register_kernel(const char* name, const char* sig, Thunk thunk) {
  for (Kernel& k : registry())
    if (k.name == name) {
      k.duplicate = true;
      return;
    }
  registry().push_back(Kernel{name, sig, thunk, false});
}

// ---- worker pool -------------------------------------------------------------------------------
namespace {
struct Pool {
  std::mutex launch_mu;  // one launch at a time
  std::mutex mu;
  std::condition_variable work_cv, done_cv;
  std::vector<std::thread> threads;
  Job* job = nullptr;
  uint64_t gen = 0;
  unsigned running = 0;
  bool stop = false;
  std::atomic<unsigned> want_workers{0};
  std::atomic<int> order{0};
  std::atomic<unsigned long long> seed{0};

  Pool() {
    if (const char* e = getenv("AEM_EMU_WORKERS"))
      want_workers = (unsigned)std::min(strtoul(e, nullptr, 10), 256ul);
    if (const char* e = getenv("AEM_EMU_ORDER")) {  // default | reverse | shuffle[:seed]
      if (!strncmp(e, "reverse", 7)) order = 1;
      if (!strncmp(e, "shuffle", 7)) {
        order = 2;
        if (e[7] == ':') seed = strtoull(e + 8, nullptr, 10);
      }
    }
  }

  // `seen`: the generation current when the worker was spawned (jobs after it are its to run).
  void worker_loop(uint64_t seen) {
    auto w = std::make_unique<Worker>();
    t_worker = w.get();
    std::unique_lock<std::mutex> lk(mu);
    for (;;) {
      work_cv.wait(lk, [&] { return stop || gen != seen; });
      if (stop) return;
      seen = gen;
      Job* j = job;
      lk.unlock();
      w->job = j;
      if (w->smem_size != j->smem) {  // exact size, so ASan sees overruns of dynamic smem
        free(w->smem);
        w->smem = nullptr;
        if (posix_memalign(&w->smem, 16, j->smem ? j->smem : 16) != 0) w->smem = nullptr;
        w->smem_size = w->smem ? j->smem : SIZE_MAX;
      }
      if (!w->smem) {
        j->set_error(fmt("kernel %s: cannot allocate %zu bytes of dynamic shared memory", j->name, j->smem));
      } else {
        for (;;) {
          if (j->failed.load(std::memory_order_relaxed)) break;
          const uint64_t b = j->next.fetch_add(1);
          if (b >= j->nblocks) break;
          w->run_block(b);
        }
      }
      lk.lock();
      if (--running == 0) done_cv.notify_all();
    }
  }

  void resize(unsigned nw) {
    if (threads.size() == nw) return;
    {
      std::lock_guard<std::mutex> g(mu);
      stop = true;
    }
    work_cv.notify_all();
    for (auto& t : threads) t.join();
    threads.clear();
    stop = false;
    const uint64_t g = gen;  // stable: resize runs under launch_mu, before the next ++gen
    for (unsigned i = 0; i < nw; ++i) threads.emplace_back([this, g] { worker_loop(g); });
  }

  void run(Job* j) {
    unsigned nw = want_workers.load();
    if (nw == 0) nw = std::max(1u, std::thread::hardware_concurrency());
    resize(nw);
    std::unique_lock<std::mutex> lk(mu);
    job = j;
    running = (unsigned)threads.size();
    ++gen;
    work_cv.notify_all();
    done_cv.wait(lk, [&] { return running == 0; });
    job = nullptr;
  }
};

Pool& pool() {
  static Pool* p = new Pool();  // never destroyed: workers may still sleep at process exit
  return *p;
}

int report(int code, const std::string& msg, char* err, size_t err_len) {
  if (err && err_len) snprintf(err, err_len, "%s", msg.c_str());
  return code;
}
}  // namespace
}  // namespace aem_emu

extern "C" void* aem_emu_dyn_smem(void) { return aem_emu_t_block ? aem_emu_t_block->dyn_smem : nullptr; }

// ---- C ABI (documented in emu_abi.h) ---------------------------------------------------------

extern "C" int aem_emu_launch(const char* name, unsigned gx, unsigned gy, unsigned gz, unsigned bx,
                              unsigned by, unsigned bz, size_t dyn_smem_bytes, void** args,
                              const char* sig, char* err, size_t err_len) {
  using namespace aem_emu;
  if (err && err_len) err[0] = '\0';
  if (!name) return report(AEM_EMU_UNKNOWN_KERNEL, "kernel name is null", err, err_len);
  const Kernel* k = nullptr;
  for (const Kernel& c : registry())
    if (c.name == name) k = &c;
  if (!k) return report(AEM_EMU_UNKNOWN_KERNEL, fmt("unknown kernel '%s' (%zu registered)", name, registry().size()), err, err_len);
  if (k->duplicate) return report(AEM_EMU_UNKNOWN_KERNEL, fmt("kernel '%s' is registered twice", name), err, err_len);
  if (!sig || k->sig != sig)
    return report(AEM_EMU_BAD_SIGNATURE, fmt("kernel %s: signature mismatch: kernel takes '%s', launch passes '%s'",
                                             name, k->sig.c_str(), sig ? sig : "(null)"), err, err_len);
  if (!k->sig.empty() && !args) return report(AEM_EMU_BAD_CONFIG, fmt("kernel %s: args is null", name), err, err_len);
  for (size_t i = 0; i < k->sig.size(); ++i)
    if (!args[i]) return report(AEM_EMU_BAD_CONFIG, fmt("kernel %s: args[%zu] is null", name, i), err, err_len);
  const unsigned long long threads = (unsigned long long)bx * by * bz;
  if (!gx || !gy || !gz || !bx || !by || !bz || threads > 1024 || bz > 64 || gy > 65535 || gz > 65535 ||
      gx > 0x7fffffffu)
    return report(AEM_EMU_BAD_CONFIG, fmt("kernel %s: invalid launch grid (%u,%u,%u) block (%u,%u,%u) "
                                          "(at most 1024 threads per block)", name, gx, gy, gz, bx, by, bz), err, err_len);
  if (dyn_smem_bytes > 227 * 1024)
    return report(AEM_EMU_BAD_CONFIG, fmt("kernel %s: %zu bytes of dynamic shared memory exceed 227 KiB",
                                          name, dyn_smem_bytes), err, err_len);

  Pool& p = pool();
  std::lock_guard<std::mutex> g(p.launch_mu);
  Job j;
  j.name = k->name.c_str();
  j.thunk = k->thunk;
  j.args = args;
  j.grid = dim3(gx, gy, gz);
  j.block = dim3(bx, by, bz);
  j.smem = dyn_smem_bytes;
  j.order = p.order.load();
  j.seed = p.seed.load();
  j.nblocks = (uint64_t)gx * gy * gz;
  p.run(&j);
  if (j.failed.load()) return report(AEM_EMU_KERNEL_ERROR, j.msg, err, err_len);
  return AEM_EMU_OK;
}

extern "C" void aem_emu_set_order(int mode, unsigned long long seed) {
  aem_emu::pool().order = (mode >= 0 && mode <= 2) ? mode : 0;
  aem_emu::pool().seed = seed;
}

extern "C" void aem_emu_set_workers(unsigned n) { aem_emu::pool().want_workers = std::min(n, 256u); }

extern "C" int aem_emu_kernel_count(void) { return (int)aem_emu::registry().size(); }

extern "C" const char* aem_emu_kernel_name(int i) {
  auto& r = aem_emu::registry();
  return (i >= 0 && i < (int)r.size()) ? r[i].name.c_str() : nullptr;
}

extern "C" const char* aem_emu_kernel_sig(int i) {
  auto& r = aem_emu::registry();
  return (i >= 0 && i < (int)r.size()) ? r[i].sig.c_str() : nullptr;
}

extern "C" unsigned short aem_emu_f32_to_bf16_bits(float f) {
  return aem_emu_bf16::f32_to_bf16_bits(f);
}
extern "C" float aem_emu_bf16_bits_to_f32(unsigned short b) {
  return aem_emu_bf16::bf16_bits_to_f32(b);
}
