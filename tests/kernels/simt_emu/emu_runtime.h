// Host-side SIMT emulator that runs the real kernel source of csrc/ on the CPU (no GPU), compiled with g++.
//
// Why: the kernels were written without a GPU; this executes their actual index math, pipeline and
// split-K logic so layout/boundary/synchronisation bugs show up before device time is spent.
// How: every CUDA thread of a CTA is a ucontext fiber on one OS thread; __syncthreads and the warp-collective
// PTX ops (ldmatrix, mma) are barriers at which fibers yield. The fiber order between barriers is shuffled,
// cp.async copies land either at issue (EARLY: catches write-after-read races on a ring slot) or only at
// cp.async.wait_group (LATE: catches reads of a stage before its wait), shared and output memory start
// poisoned with 0xFF (NaN in fp16/bf16/fp32), and every buffer ends at a PROT_NONE guard page so a read
// or write one byte past its end faults. ldmatrix/mma follow the PTX ISA fragment layouts
// (written independently of the kernels). CTAs run in a shuffled order, either one at a time or concurrently
// on `host threads` OS threads (each runs one CTA at a time; shared memory is thread_local), with the
// cross-CTA operations mapped to C++ memory-order operations: atomicAdd/atomicExch are relaxed atomic RMWs
// (__atomic builtins, as CUDA's are relaxed), __threadfence is a sequentially consistent fence. Under
// ThreadSanitizer (g++ -fsanitize=thread) fibers are announced with the TSan fiber API and each fence is also
// a release + acquire on one global sync object: PTX fence.sc (what __threadfence compiles to) synchronizes
// with every later fence.sc in the SC order, and TSan does not model standalone C++ fences itself. So a split-K
// reduction without the writer's or the reader's fence is reported as a data race on the partials.
//
// Force-included before the copied kernel sources (g++ -include emu_runtime.h); tests/kernels/simt_emu/ptx.cuh
// replaces csrc/ptx.cuh. Not a general CUDA emulator: it supports what csrc/ uses.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <random>
#include <thread>
#include <vector>

#if defined(__SANITIZE_THREAD__)
#include <sanitizer/tsan_interface.h>
#define EMU_TSAN 1
#else
#define EMU_TSAN 0
#endif

#undef __shared__
#define __shared__ static thread_local  // a host thread runs one CTA at a time: per-CTA shared memory
#define __launch_bounds__(...)

using std::max;
using std::min;

inline thread_local uint3 threadIdx, blockIdx;
inline dim3 blockDim, gridDim;

namespace emu {

inline char g_where[160] = "host";

[[noreturn]] inline void fail(const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  std::fprintf(stderr, "EMU ERROR at %s (block %u,%u,%u thread %u): ", g_where, blockIdx.x, blockIdx.y, blockIdx.z,
               threadIdx.x);
  std::vfprintf(stderr, fmt, ap);
  std::fprintf(stderr, "\n");
  va_end(ap);
  std::exit(3);
}

// ---- guarded allocations ------------------------------------------------------------------------------------
struct Alloc {
  char* base;
  size_t bytes;
  char* map;
  size_t map_bytes;
};
inline std::vector<Alloc> g_allocs;

inline size_t page() { return static_cast<size_t>(sysconf(_SC_PAGESIZE)); }

// `bytes` of memory that end (within 15 bytes, keeping 16-byte alignment) at a PROT_NONE page, filled with `fill`.
inline void* galloc(size_t bytes, int fill) {
  const size_t ps = page(), body = ((bytes + 15) / 16 * 16 + ps - 1) / ps * ps;
  char* map = static_cast<char*>(mmap(nullptr, body + ps, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
  if (map == MAP_FAILED) fail("mmap failed");
  if (mprotect(map + body, ps, PROT_NONE) != 0) fail("mprotect failed");
  char* base = map + body - (bytes + 15) / 16 * 16;
  std::memset(map, fill, body);
  g_allocs.push_back({base, bytes, map, body + ps});
  return base;
}
inline void gfree(void* p) {
  for (size_t i = 0; i < g_allocs.size(); ++i)
    if (g_allocs[i].base == p) {
      munmap(g_allocs[i].map, g_allocs[i].map_bytes);
      g_allocs.erase(g_allocs.begin() + static_cast<long>(i));
      return;
    }
  fail("gfree of unknown pointer");
}
inline void check_global(const void* p, size_t n, size_t align, const char* what) {
  const char* c = static_cast<const char*>(p);
  if (reinterpret_cast<uintptr_t>(p) % align != 0) fail("%s: address %p not %zu-byte aligned", what, p, align);
  for (const Alloc& a : g_allocs)
    if (c >= a.base && c + n <= a.base + a.bytes) return;
  fail("%s: %zu bytes at %p are outside every global buffer", what, n, p);
}

// ---- fibers, barriers -----------------------------------------------------------------------------------------
struct Barrier {
  int arrived = 0, expected = 0;
  unsigned gen = 0;
};

struct Copy {
  unsigned char* dst;
  unsigned char data[16];
};

struct Fiber {
  ucontext_t ctx{};
  char* stack = nullptr;  // from the host thread's stack pool (fiber_stack)
#if EMU_TSAN
  void* tsan = nullptr;
#endif
  bool done = false;
  const Barrier* wait_bar = nullptr;
  unsigned wait_gen = 0;
  std::vector<Copy> open;                 // issued, not yet committed
  std::vector<std::vector<Copy>> groups;  // committed, not yet landed (LATE mode)
};

struct Slot {
  int kind;  // 1 = ldmatrix, 2 = mma f16, 3 = mma bf16
  const unsigned char* addr;
  uint32_t a[4], b[2];
  float c[4];
};

enum Mode { kEarly = 0, kLate = 1 };

struct Cta {
  int nthreads = 0;
  std::vector<Fiber> fibers;
  Barrier bar;
  Barrier warp_bar[32];
  Slot slots[1024];
  int cur = -1;
  ucontext_t sched{};
#if EMU_TSAN
  void* sched_tsan = nullptr;
#endif
  unsigned char* dyn = nullptr;
  size_t dyn_bytes = 0;
  std::vector<int> pending;  // per dynamic smem byte: cp.async copies in flight to it
  std::function<void()> body;
};

inline thread_local Cta* g_cta = nullptr;
inline Mode g_mode = kLate;
inline thread_local std::mt19937 g_rng(1);
inline unsigned g_seed = 1;
inline int g_host_threads = 1;  // OS threads running CTAs concurrently (1: one after another)
inline char g_fence_sync;       // the TSan sync object of the fence.sc model

constexpr size_t kFiberStack = 256 * 1024;

// Fiber stacks are mapped once per host thread and reused by every CTA it runs (untouched pages cost nothing).
inline char* fiber_stack(int t) {
  static thread_local std::vector<char*> pool;
  while (pool.size() <= static_cast<size_t>(t)) {
    void* m = mmap(nullptr, kFiberStack, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (m == MAP_FAILED) fail("mmap of a fiber stack failed");
    pool.push_back(static_cast<char*>(m));
  }
  return pool[static_cast<size_t>(t)];
}

inline Fiber& self() { return g_cta->fibers[static_cast<size_t>(g_cta->cur)]; }

inline void yield_to_scheduler() {
#if EMU_TSAN
  __tsan_switch_to_fiber(g_cta->sched_tsan, 0);
#endif
  swapcontext(&self().ctx, &g_cta->sched);
}

inline void release(Barrier& b) {
  b.arrived = 0;
  ++b.gen;
}

inline void arrive(Barrier& b) {
  const unsigned gen = b.gen;
  if (++b.arrived == b.expected) {
    release(b);
    return;
  }
  self().wait_bar = &b;
  self().wait_gen = gen;
  yield_to_scheduler();
}

inline void apply(const std::vector<Copy>& group) {
  for (const Copy& c : group) {
    std::memcpy(c.dst, c.data, 16);
    if (g_mode == kLate) {
      const size_t off = static_cast<size_t>(c.dst - g_cta->dyn);
      for (size_t i = 0; i < 16; ++i) --g_cta->pending[off + i];
    }
  }
}

inline void fiber_exit() {
  Fiber& f = self();
  for (auto& g : f.groups) apply(g);  // hardware lands them eventually; keep the shadow counts right
  f.groups.clear();
  if (!f.open.empty()) apply(f.open);
  f.open.clear();
  f.done = true;
  Barrier* bars[2] = {&g_cta->bar, &g_cta->warp_bar[g_cta->cur / 32]};
  for (Barrier* b : bars) {
    --b->expected;
    if (b->arrived > 0 && b->arrived == b->expected) release(*b);
  }
}

// Never returns: a finished fiber switches back for good (returning through uc_link would run this function's
// exit on the scheduler's ThreadSanitizer fiber and corrupt its shadow stack).
inline void fiber_entry() {
  g_cta->body();
  fiber_exit();
  yield_to_scheduler();
}

inline void set_thread(int t) {
  g_cta->cur = t;
  threadIdx = make_uint3(static_cast<unsigned>(t), 0, 0);
}

// Runs one CTA of `nthreads` threads to completion on this host thread, with `dyn` (>= dyn_bytes, 16 if 0) as its
// dynamic shared memory, poisoned with 0xFF first.
inline void run_cta(int nthreads, size_t dyn_bytes, unsigned char* dyn, const std::function<void()>& body) {
  Cta* cta = new Cta();
  cta->nthreads = nthreads;
  cta->body = body;
  cta->dyn_bytes = dyn_bytes;
  cta->dyn = dyn;
  std::memset(dyn, 0xFF, dyn_bytes ? dyn_bytes : 16);
  cta->pending.assign(dyn_bytes ? dyn_bytes : 16, 0);
  cta->bar.expected = nthreads;
  for (int w = 0; w < (nthreads + 31) / 32; ++w) cta->warp_bar[w].expected = std::min(32, nthreads - 32 * w);
  cta->fibers.resize(static_cast<size_t>(nthreads));
  g_cta = cta;
#if EMU_TSAN
  cta->sched_tsan = __tsan_get_current_fiber();
#endif
  for (int t = 0; t < nthreads; ++t) {
    Fiber& f = cta->fibers[static_cast<size_t>(t)];
    f.stack = fiber_stack(t);
    getcontext(&f.ctx);
    f.ctx.uc_stack.ss_sp = f.stack;
    f.ctx.uc_stack.ss_size = kFiberStack;
    f.ctx.uc_link = &cta->sched;
    makecontext(&f.ctx, fiber_entry, 0);
#if EMU_TSAN
    f.tsan = __tsan_create_fiber(0);
#endif
  }
  std::vector<int> order(static_cast<size_t>(nthreads));
  for (int t = 0; t < nthreads; ++t) order[static_cast<size_t>(t)] = t;
  int live = nthreads;
  while (live > 0) {
    std::shuffle(order.begin(), order.end(), g_rng);
    bool ran = false;
    for (int t : order) {
      Fiber& f = cta->fibers[static_cast<size_t>(t)];
      if (f.done) continue;
      if (f.wait_bar != nullptr && f.wait_bar->gen == f.wait_gen) continue;  // still blocked
      f.wait_bar = nullptr;
      set_thread(t);
#if EMU_TSAN
      __tsan_switch_to_fiber(f.tsan, 0);
#endif
      swapcontext(&cta->sched, &f.ctx);
      ran = true;
      if (f.done) --live;
    }
    if (!ran) fail("deadlock: %d threads blocked at barriers that can never complete", live);
  }
#if EMU_TSAN
  for (Fiber& f : cta->fibers) __tsan_destroy_fiber(f.tsan);
#endif
  cta->cur = -1;
  delete cta;
  g_cta = nullptr;
}

// ---- cp.async ---------------------------------------------------------------------------------------------------
inline void check_smem(const void* p, size_t n, const char* what) {
  const unsigned char* c = static_cast<const unsigned char*>(p);
  if (reinterpret_cast<uintptr_t>(p) % 16 != 0) fail("%s: shared address not 16-byte aligned", what);
  if (c < g_cta->dyn || c + n > g_cta->dyn + g_cta->dyn_bytes)
    fail("%s: shared offset %td (+%zu) outside the %zu dynamic bytes", what, c - g_cta->dyn, n, g_cta->dyn_bytes);
}

inline void cp_async(void* dst, const void* src, int src_bytes) {
  check_smem(dst, 16, "cp.async dst");
  Copy c;
  c.dst = static_cast<unsigned char*>(dst);
  std::memset(c.data, 0, 16);
  if (src_bytes > 0) {
    check_global(src, 16, 16, "cp.async src");
    std::memcpy(c.data, src, static_cast<size_t>(src_bytes));
  }
  if (g_mode == kEarly) {
    std::memcpy(c.dst, c.data, 16);
    return;
  }
  const size_t off = static_cast<size_t>(c.dst - g_cta->dyn);
  for (size_t i = 0; i < 16; ++i) ++g_cta->pending[off + i];
  self().open.push_back(c);
}
inline void commit() {
  Fiber& f = self();
  f.groups.push_back(std::move(f.open));
  f.open.clear();
}
inline void wait_group(int n) {
  Fiber& f = self();
  while (static_cast<int>(f.groups.size()) > n) {
    apply(f.groups.front());
    f.groups.erase(f.groups.begin());
  }
}

// ---- warp collectives ---------------------------------------------------------------------------------------------
inline void collective_enter(int kind) {
  const int t = g_cta->cur, w = t / 32;
  if (g_cta->warp_bar[w].expected != 32) fail("warp collective (kind %d) with exited lanes in warp %d", kind, w);
  g_cta->slots[t].kind = kind;
  arrive(g_cta->warp_bar[w]);
  for (int l = 0; l < 32; ++l)
    if (g_cta->slots[w * 32 + l].kind != kind)
      fail("divergent warp collective: lane %d kind %d vs %d", l, g_cta->slots[w * 32 + l].kind, kind);
}
inline void collective_leave() { arrive(g_cta->warp_bar[g_cta->cur / 32]); }

// ldmatrix.sync.aligned.m8n8.x4.shared.b16: lanes 8i..8i+7 give the row addresses of matrix i; lane L receives
// in register i the 32 bits at byte 4 (L % 4) of row L / 4 of matrix i.
inline void ldmatrix_x4(uint32_t (&r)[4], const void* p) {
  const int t = g_cta->cur, w = t / 32, lane = t % 32;
  check_smem(p, 16, "ldmatrix row address");
  if (g_mode == kLate) {
    const size_t off = static_cast<size_t>(static_cast<const unsigned char*>(p) - g_cta->dyn);
    for (size_t i = 0; i < 16; ++i)
      if (g_cta->pending[off + i] != 0) fail("ldmatrix reads shared bytes whose cp.async has not been waited for");
  }
  g_cta->slots[t].addr = static_cast<const unsigned char*>(p);
  collective_enter(1);
  for (int i = 0; i < 4; ++i) {
    const unsigned char* row = g_cta->slots[w * 32 + 8 * i + lane / 4].addr;
    std::memcpy(&r[i], row + 4 * (lane % 4), 4);
  }
  collective_leave();
}

// ld.shared.b32: in range, 4-byte aligned, and (LATE) never of bytes whose cp.async has not been waited for.
inline uint32_t ld_shared_u32(const unsigned char* p) {
  if (reinterpret_cast<uintptr_t>(p) % 4 != 0) fail("ld.shared.b32: address not 4-byte aligned");
  if (p < g_cta->dyn || p + 4 > g_cta->dyn + g_cta->dyn_bytes)
    fail("ld.shared.b32: shared offset %td outside the %zu dynamic bytes", p - g_cta->dyn, g_cta->dyn_bytes);
  if (g_mode == kLate) {
    const size_t off = static_cast<size_t>(p - g_cta->dyn);
    for (size_t i = 0; i < 4; ++i)
      if (g_cta->pending[off + i] != 0) fail("ld.shared reads shared bytes whose cp.async has not been waited for");
  }
  uint32_t r;
  std::memcpy(&r, p, 4);
  return r;
}

template <typename T>
inline float to_float(uint16_t bits) {
  T h;
  std::memcpy(&h, &bits, 2);
  return static_cast<float>(h);
}

// mma.sync.aligned.m16n8k16.row.col.f32.{f16,bf16}: with g = lane / 4, t = lane % 4,
//   A regs: a0 (row g, k 2t..2t+1), a1 (row g+8, k 2t..), a2 (row g, k 2t+8..), a3 (row g+8, k 2t+8..)
//   B regs: b0 (k 2t..2t+1, col g), b1 (k 2t+8..2t+9, col g)
//   C/D:    c0, c1 (row g, cols 2t, 2t+1), c2, c3 (row g+8, cols 2t, 2t+1); the low half is the lower index.
template <typename T>
inline void mma(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  const int t = g_cta->cur, w = t / 32, lane = t % 32;
  Slot& s = g_cta->slots[t];
  for (int i = 0; i < 4; ++i) s.a[i] = a[i], s.c[i] = c[i];
  s.b[0] = b0;
  s.b[1] = b1;
  collective_enter(sizeof(T) == 2 && std::is_same<T, __half>::value ? 2 : 3);
  float A[16][16], B[16][8];
  for (int l = 0; l < 32; ++l) {
    const Slot& o = g_cta->slots[w * 32 + l];
    const int g = l / 4, tq = l % 4;
    for (int reg = 0; reg < 4; ++reg)
      for (int h = 0; h < 2; ++h) {
        const int row = g + 8 * (reg & 1), col = 2 * tq + h + 8 * (reg >> 1);
        A[row][col] = to_float<T>(static_cast<uint16_t>(o.a[reg] >> (16 * h)));
      }
    for (int reg = 0; reg < 2; ++reg)
      for (int h = 0; h < 2; ++h) B[2 * tq + h + 8 * reg][g] = to_float<T>(static_cast<uint16_t>(o.b[reg] >> (16 * h)));
  }
  const int g = lane / 4, tq = lane % 4;
  float d[4];
  for (int e = 0; e < 4; ++e) {
    const int row = g + 8 * (e >> 1), col = 2 * tq + (e & 1);
    double acc = c[e];
    for (int k = 0; k < 16; ++k) acc += static_cast<double>(A[row][k]) * B[k][col];
    d[e] = static_cast<float>(acc);
  }
  collective_leave();
  for (int e = 0; e < 4; ++e) c[e] = d[e];
}

// ---- launch -----------------------------------------------------------------------------------------------------
inline std::map<const void*, int> g_max_dyn_smem;
inline cudaError_t g_last_error = cudaSuccess;
inline bool g_reverse_ctas = false;
constexpr int kMaxOptinSmem = 232448;  // H100: 227 KB per block

template <typename... P, typename... Args>
void launch(void (*kernel)(P...), dim3 grid, dim3 block, size_t smem, cudaStream_t, Args&&... args) {
  const size_t threads = static_cast<size_t>(block.x) * block.y * block.z;
  auto it = g_max_dyn_smem.find(reinterpret_cast<const void*>(kernel));
  const size_t limit = it == g_max_dyn_smem.end() ? 48 * 1024 : static_cast<size_t>(it->second);
  if (threads == 0 || threads > 1024 || grid.x == 0 || grid.y == 0 || grid.z == 0 || grid.y > 65535 ||
      grid.z > 65535 || smem > limit) {
    std::fprintf(stderr, "EMU: invalid launch grid (%u,%u,%u) block %zu smem %zu (limit %zu)\n", grid.x, grid.y,
                 grid.z, threads, smem, limit);
    g_last_error = cudaErrorInvalidConfiguration;
    return;
  }
  if (block.y != 1 || block.z != 1) fail("emulator supports 1-D blocks only");
  std::vector<dim3> ctas;
  for (unsigned z = 0; z < grid.z; ++z)
    for (unsigned y = 0; y < grid.y; ++y)
      for (unsigned x = 0; x < grid.x; ++x) ctas.push_back(dim3(x, y, z));
  std::shuffle(ctas.begin(), ctas.end(), g_rng);
  gridDim = grid;
  blockDim = block;
  const auto body = [&]() { kernel(args...); };
  const int workers = static_cast<int>(std::min<size_t>(static_cast<size_t>(std::max(1, g_host_threads)), ctas.size()));
  // Shared memory of every worker is mapped here, before any worker starts: g_allocs is then read-only.
  std::vector<unsigned char*> dyn(static_cast<size_t>(workers));
  for (auto& d : dyn) d = static_cast<unsigned char*>(galloc(smem ? smem : 16, 0xFF));
  std::atomic<size_t> next{0};
  const auto work = [&](int w) {
    for (size_t i = next.fetch_add(1); i < ctas.size(); i = next.fetch_add(1)) {
      blockIdx = make_uint3(ctas[i].x, ctas[i].y, ctas[i].z);
      run_cta(static_cast<int>(threads), smem, dyn[static_cast<size_t>(w)], body);
    }
  };
  if (workers == 1) {
    work(0);
  } else {
    std::vector<std::thread> pool;
    for (int w = 0; w < workers; ++w)
      pool.emplace_back([&, w]() {
        g_rng.seed(g_seed * 7919u + static_cast<unsigned>(w) + 1u);
        work(w);
      });
    for (auto& t : pool) t.join();
  }
  for (auto* d : dyn) gfree(d);
}

}  // namespace emu

// cuda_runtime.h declares this typed overload only for nvcc.
template <typename T>
inline cudaError_t cudaFuncSetAttribute(T* entry, cudaFuncAttribute attr, int value) {
  return ::cudaFuncSetAttribute(reinterpret_cast<const void*>(entry), attr, value);
}

// ---- CUDA device builtins the kernels use -------------------------------------------------------------------------
inline void __syncthreads() { emu::arrive(emu::g_cta->bar); }
// PTX fence.sc.gpu; see the header comment for the ThreadSanitizer model.
inline void __threadfence() {
  std::atomic_thread_fence(std::memory_order_seq_cst);
#if EMU_TSAN
  __tsan_release(&emu::g_fence_sync);
  __tsan_acquire(&emu::g_fence_sync);
#endif
}
inline unsigned __byte_perm(unsigned x, unsigned y, unsigned s) {
  const uint64_t both = static_cast<uint64_t>(x) | (static_cast<uint64_t>(y) << 32);
  unsigned r = 0;
  for (int i = 0; i < 4; ++i) r |= static_cast<unsigned>((both >> (8 * ((s >> (4 * i)) & 7))) & 0xFF) << (8 * i);
  return r;
}
template <typename T>
inline T __ldg(const T* p) {
  emu::check_global(p, sizeof(T), sizeof(T) >= 16 ? 16 : sizeof(T), "__ldg");
  return *p;
}
template <typename T>
inline T __ldcg(const T* p) {
  emu::check_global(p, sizeof(T), sizeof(T) >= 16 ? 16 : sizeof(T), "__ldcg");
  return *p;
}
// CUDA's atomicAdd/atomicExch are relaxed: atomic, but they order nothing else (that is the fences' job).
inline int atomicAdd(int* p, int v) {
  emu::check_global(p, 4, 4, "atomicAdd");
  return __atomic_fetch_add(p, v, __ATOMIC_RELAXED);
}
inline int atomicExch(int* p, int v) {
  emu::check_global(p, 4, 4, "atomicExch");
  return __atomic_exchange_n(p, v, __ATOMIC_RELAXED);
}
