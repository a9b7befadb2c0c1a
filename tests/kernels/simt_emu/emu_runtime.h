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
// (written independently of the kernels); so does the sm_90 warpgroup MMA (wgmma, asynchronous: see its
// section). CTAs run in a shuffled order, either one at a time or concurrently on `host threads` OS threads
// (each runs one CTA at a time; shared memory is thread_local), with the cross-CTA operations mapped to C++
// memory-order operations: atomicAdd/atomicExch are relaxed atomic RMWs (__atomic builtins, as CUDA's are
// relaxed), __threadfence is a sequentially consistent fence. Under
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

// Shared address of dynamic shared memory byte 0 (ptx.cuh smem_u32): on sm_80/90 the runtime reserves 1 KB per block
// and the kernels' static shared memory (the 16-byte split-K flag) comes first, so it is not 1024-byte aligned.
constexpr uint32_t kDynSmemBase = 0x410;

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
  // fence.proxy.async bookkeeping (both modes): shared offsets of this thread's cp.async copies, by group; a
  // fence covers only the copies already waited for (px_waited).
  std::vector<size_t> px_open;
  std::vector<std::vector<size_t>> px_groups;
  std::vector<size_t> px_waited;
  bool wgmma_fenced = false;  // has executed wgmma.fence
};

struct Slot {
  int kind;  // 1 = ldmatrix, 2 = mma f16, 3 = mma bf16; warpgroup collectives: see kWg*
  const unsigned char* addr;
  uint32_t a[4], b[2];
  float c[4];
  uint64_t desc;  // wgmma
  float* d;       // wgmma: the thread's accumulator array
};

// One wgmma.mma_async in flight: its operands as snapshotted at issue (A registers, descriptor), each thread's
// accumulator array and the accumulator value it started from (cin, known once its predecessor on the same
// registers retired: need_cin).
struct WgmmaOp {
  bool bf16;
  uint64_t desc;
  uint32_t a[128][4];
  float* d[128];
  float cin[128][32];
  bool need_cin[128];
};
struct Warpgroup {
  std::vector<WgmmaOp> open;                 // issued, not yet committed
  std::vector<std::vector<WgmmaOp>> groups;  // committed, not yet retired by wgmma.wait_group
};

enum Mode { kEarly = 0, kLate = 1 };

struct Cta {
  int nthreads = 0;
  std::vector<Fiber> fibers;
  Barrier bar;
  Barrier warp_bar[32];
  Barrier wg_bar[8];  // warpgroups (4 consecutive warps)
  Warpgroup wg[8];
  Slot slots[1024];
  int cur = -1;
  ucontext_t sched{};
#if EMU_TSAN
  void* sched_tsan = nullptr;
#endif
  unsigned char* dyn = nullptr;
  size_t dyn_bytes = 0;
  std::vector<int> pending;  // per dynamic smem byte: cp.async copies in flight to it
  std::vector<int> unfenced;  // per dynamic smem byte: 1 + the thread whose cp.async wrote it and has not fenced
                              // (fence.proxy.async) since; 0 when the async proxy may read it
  std::vector<unsigned char> async_view;  // dynamic shared memory as of the last fence.proxy.async by any thread
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
  Warpgroup& wg = g_cta->wg[g_cta->cur / 128];
  if (!wg.open.empty() || !wg.groups.empty())
    fail("thread exits with wgmma.mma_async still in flight (no wgmma.wait_group retired it)");
  Barrier* bars[3] = {&g_cta->bar, &g_cta->warp_bar[g_cta->cur / 32], &g_cta->wg_bar[g_cta->cur / 128]};
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
  cta->unfenced.assign(dyn_bytes ? dyn_bytes : 16, 0);
  cta->async_view.assign(dyn, dyn + (dyn_bytes ? dyn_bytes : 16));
  cta->bar.expected = nthreads;
  for (int w = 0; w < (nthreads + 31) / 32; ++w) cta->warp_bar[w].expected = std::min(32, nthreads - 32 * w);
  for (int g = 0; g < (nthreads + 127) / 128; ++g) cta->wg_bar[g].expected = std::min(128, nthreads - 128 * g);
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
  {  // a generic-proxy write: the async proxy (wgmma) may read it only after this thread's fence.proxy.async
    const size_t off = static_cast<size_t>(c.dst - g_cta->dyn);
    for (size_t i = 0; i < 16; ++i) g_cta->unfenced[off + i] = g_cta->cur + 1;
    self().px_open.push_back(off);
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
  f.px_groups.push_back(std::move(f.px_open));
  f.px_open.clear();
}
inline void wait_group(int n) {
  Fiber& f = self();
  while (static_cast<int>(f.groups.size()) > n) {
    apply(f.groups.front());
    f.groups.erase(f.groups.begin());
  }
  while (static_cast<int>(f.px_groups.size()) > n) {
    f.px_waited.insert(f.px_waited.end(), f.px_groups.front().begin(), f.px_groups.front().end());
    f.px_groups.erase(f.px_groups.begin());
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

// ---- warpgroup MMA (wgmma, sm_90) ---------------------------------------------------------------------------------
// From the PTX ISA, section 9.7.15 "Asynchronous Warpgroup Level Matrix Multiply-Accumulate Instructions". Only what
// the kernels use is emulated: wgmma.mma_async.sync.aligned.m64n64k16.f32.{f16,bf16}.{f16,bf16} with A in
// registers, B in shared memory through a descriptor (K-major, 128-byte swizzle), scale-d = 1, imm-scale-a/b = 1,
// imm-trans-b = 0; wgmma.fence / commit_group / wait_group; fence.proxy.async.shared::cta.
//
// Register fragments (9.7.15.5.1.1.1 "Matrix Fragments for wgmma.mma_async.m64nNk16", Figures 148 and 149): warp
// w = 0..3 of the warpgroup holds rows 16w..16w+15 of A and D; within the warp, with g = lane / 4, q = lane % 4,
//   A (64 x 16, four .f16x2/.bf16x2 registers, elements a0..a7 low to high):
//     a0,a1 (row 16w+g, k 2q, 2q+1)   a2,a3 (row 16w+g+8, k 2q, 2q+1)
//     a4,a5 (row 16w+g, k 2q+8, 2q+9) a6,a7 (row 16w+g+8, k 2q+8, 2q+9)
//   D (64 x N f32, N/2 registers d0..): d_i at row 16w + g + 8 ((i / 2) % 2), col 8 (i / 4) + 2q + (i % 2).
// Matrix descriptor (9.7.15.5.1.2.2 "Matrix Descriptor Format"), encode(x) = (x & 0x3FFFF) >> 4:
//   bits 13-0 encode(start address), 29-16 encode(leading dimension byte offset), 45-32 encode(stride dimension
//   byte offset), 51-49 matrix base offset, 63-62 swizzle mode (0 none, 1 128-byte, 2 64-byte, 3 32-byte); the
//   base offset is 0 when the swizzle pattern starts on its boundary (1024 bytes for the 128-byte swizzle).
// Shared memory layout (9.7.15.5.1.2 "Shared Memory Matrix Layout", Table 38 and the K-major 128B swizzling figure):
//   imm-trans-b = 0 means B is K-major; a 128B-swizzle K-major atom is 8 x 8 16-byte units = 8 rows (N) of 128 bytes
//   (64 16-bit K values), 1024 bytes; unit j of row r lies at unit j ^ r of that row. Successive 8-row atoms along N
//   are the stride byte offset apart. As the swizzle is a function of the address bits (bits 4-6 ^= bits 7-9 within
//   a 1024-aligned pattern), a k16 slice further along K is addressed by advancing the start address by 32 bytes
//   inside row 0 of the atom; the leading byte offset is not used (the k16 slice never leaves the 128-byte row;
//   the tcgen05 twin of this table, 9.7.16.3.1.1, says so explicitly: "K-Major, swizzled layouts: not used,
//   assumed to be 1"), so its value is not checked.
// Emulation contract (what fails loudly): swizzle mode other than 128B, a non-zero base offset, reserved bits set,
// a stride byte offset that is not a multiple of 1024, a start address outside row 0 of a 1024-aligned atom or
// whose 32-byte k slice crosses the row, reads outside the dynamic shared memory, a descriptor that differs
// between the threads. Addresses are shared addresses (dynamic shared memory starts at kDynSmemBase, not 1024-aligned).
//
// Asynchrony (9.7.15.7 "Asynchronous wgmma Proxy Operations": wgmma.fence, commit_group, wait_group): at issue
// the A registers and descriptor are snapshotted and the accumulator registers are poisoned (0xFF..: NaN) -
// reading or writing them before the wgmma.wait_group that retires the op is undefined in PTX; a write is
// reported at retirement. Shared memory is read, and D += A x B computed (in double from the exact operands,
// rounded to float once per wgmma), only when wgmma.wait_group N retires the op's group, so a tile overwritten
// before the wait gives wrong results. Ops chained on the same accumulator (no wait in between) take their
// predecessor's result.
// Proxy rule (9.7.15.4 "Async Proxy": wgmma runs in the async proxy, ordered after generic-proxy writes only by
// fence.proxy.async; its completion implies the fence back to the generic proxy): shared bytes written by
// cp.async (generic proxy) may be read by wgmma only after the writing thread executed fence.proxy.async after
// waiting for that copy (and, for other threads' wgmmas, a barrier: the shuffled fiber order exposes a missing
// one). Checked at issue and again at retirement. Plain C++ stores to shared memory cannot be attributed to a
// thread: for them only "some thread executed fence.proxy.async after the store" is checked (a wgmma that reads a
// byte differing from the memory as of the last fence by any thread fails).
// wgmma.fence (9.7.15.7.1): only "every thread executed one before its first wgmma in the CTA" is checked, not the
// rule that one must separate other accesses of the A or accumulator registers from a later wgmma (accumulator
// chains of the same shape need none). Rewriting the A source registers while the op is in flight is not
// detected (the op uses its issue-time snapshot).
constexpr int kWgF16 = 16, kWgBf16 = 17, kWgCommit = 18, kWgWait = 32;  // kWgWait + N

inline bool is_wg_leader() { return g_cta->cur % 128 == 0; }

inline void wg_enter(int kind, const char* op) {
  const int t = g_cta->cur, g = t / 128;
  Barrier& b = g_cta->wg_bar[g];
  if (b.expected != 128)
    fail("%s: warpgroup collective with exited threads (%d of 128 of warpgroup %d live)", op, b.expected, g);
  g_cta->slots[t].kind = kind;
  arrive(b);
  if (b.expected != 128) fail("%s: a thread of warpgroup %d exited instead of joining the collective", op, g);
  for (int l = 0; l < 128; ++l)
    if (g_cta->slots[g * 128 + l].kind != kind)
      fail("%s: divergent warpgroup collective: thread %d of warpgroup %d is at kind %d, this one at %d", op, l, g,
           g_cta->slots[g * 128 + l].kind, kind);
}
inline void wg_leave() { arrive(g_cta->wg_bar[g_cta->cur / 128]); }

struct WgmmaB {
  uint32_t start, sbo;
};

// Decodes and validates a descriptor against the supported case (see above).
inline WgmmaB wgmma_decode(uint64_t desc, const char* op) {
  const uint32_t start = static_cast<uint32_t>(desc & 0x3FFF) << 4;
  const uint32_t sbo = static_cast<uint32_t>((desc >> 32) & 0x3FFF) << 4;
  const unsigned base_offset = static_cast<unsigned>((desc >> 49) & 7), mode = static_cast<unsigned>(desc >> 62);
  const uint64_t reserved = (3ull << 14) | (3ull << 30) | (7ull << 46) | (0x3FFull << 52);
  if (mode != 1) fail("%s: descriptor swizzle mode %u not emulated (only 1 = 128-byte swizzle)", op, mode);
  if (base_offset != 0) fail("%s: descriptor base offset %u not emulated (only 0)", op, base_offset);
  if (desc & reserved) fail("%s: descriptor reserved bits set (0x%016llx)", op, static_cast<unsigned long long>(desc));
  if (sbo == 0 || sbo % 1024 != 0)
    fail("%s: stride byte offset %u is not a multiple of the 1024-byte 128B-swizzle atom", op, sbo);
  if (start % 1024 >= 128)
    fail("%s: start address %u is not in row 0 of a 1024-byte-aligned swizzle atom (base offset 0)", op, start);
  if (start % 128 + 32 > 128)
    fail("%s: start address %u: the k16 slice (32 bytes) crosses the 128-byte row", op, start);
  return {start, sbo};
}

// Dynamic shared offset of element (n, k) of the k16 x N64 B operand, K-major 128-byte swizzle: the swizzle acts on
// the bits of the shared address (start is one), the offset is from kDynSmemBase.
inline size_t wgmma_b_offset(const WgmmaB& b, int n, int k) {
  const uint32_t a = b.start + static_cast<uint32_t>(n / 8) * b.sbo + static_cast<uint32_t>(n % 8) * 128 +
                     static_cast<uint32_t>(2 * k);
  const uint32_t swizzled = a ^ (((a >> 7) & 7) << 4);
  if (swizzled < kDynSmemBase) fail("wgmma: B address 0x%x below the dynamic shared memory at 0x%x", swizzled, kDynSmemBase);
  return swizzled - kDynSmemBase;
}

// The async proxy may read these bytes now: in range, landed (LATE), fenced after their cp.async.
inline void wgmma_check_b(const WgmmaB& b, const char* op) {
  for (int n = 0; n < 64; ++n)
    for (int k = 0; k < 16; ++k) {
      const size_t off = wgmma_b_offset(b, n, k);
      if (off + 2 > g_cta->dyn_bytes)
        fail("%s: B element (n %d, k %d) at shared offset %zu outside the %zu dynamic bytes", op, n, k, off,
             g_cta->dyn_bytes);
      for (size_t i = off; i < off + 2; ++i) {
        if (g_mode == kLate && g_cta->pending[i] != 0)
          fail("%s reads shared bytes whose cp.async has not been waited for (offset %zu)", op, i);
        if (g_cta->unfenced[i] != 0)
          fail("%s reads shared offset %zu written by thread %d's cp.async without that thread's fence.proxy.async "
               "after the wait (missing fence, or the tile was rewritten while the wgmma was in flight)",
               op, i, g_cta->unfenced[i] - 1);
        if (g_cta->dyn[i] != g_cta->async_view[i])
          fail("%s reads shared offset %zu, stored to by the generic proxy after the last fence.proxy.async of any "
               "thread (missing fence, or the tile was rewritten while the wgmma was in flight)", op, i);
      }
    }
}

template <typename T>
inline void wgmma_issue(float (&d)[32], const uint32_t (&a)[4], uint64_t desc) {
  const char* op = std::is_same<T, __half>::value ? "wgmma.mma_async m64n64k16 f16" : "wgmma.mma_async m64n64k16 bf16";
  const int t = g_cta->cur, g = t / 128;
  if (!self().wgmma_fenced) fail("%s issued by a thread that has not executed wgmma.fence before", op);
  Slot& s = g_cta->slots[t];
  for (int i = 0; i < 4; ++i) s.a[i] = a[i];
  s.desc = desc;
  s.d = d;
  wg_enter(std::is_same<T, __half>::value ? kWgF16 : kWgBf16, op);
  if (is_wg_leader()) {
    const WgmmaB b = wgmma_decode(desc, op);
    wgmma_check_b(b, op);
    Warpgroup& wg = g_cta->wg[g];
    WgmmaOp o;
    o.bf16 = !std::is_same<T, __half>::value;
    o.desc = desc;
    for (int l = 0; l < 128; ++l) {
      const Slot& sl = g_cta->slots[g * 128 + l];
      if (sl.desc != desc) fail("%s: thread %d passes descriptor 0x%llx, thread 0 0x%llx", op, l,
                                static_cast<unsigned long long>(sl.desc), static_cast<unsigned long long>(desc));
      if (!g_cta->fibers[static_cast<size_t>(g * 128 + l)].wgmma_fenced)
        fail("%s issued while thread %d has not executed wgmma.fence before", op, l);
      for (int i = 0; i < 4; ++i) o.a[l][i] = sl.a[i];
      o.d[l] = sl.d;
      // Chained on an op in flight with the same accumulator: its input is that op's result.
      bool chained = false;
      for (const auto& grp : wg.groups)
        for (const WgmmaOp& p : grp) chained = chained || p.d[l] == sl.d;
      for (const WgmmaOp& p : wg.open) chained = chained || p.d[l] == sl.d;
      o.need_cin[l] = chained;
      if (!chained) {
        std::memcpy(o.cin[l], sl.d, sizeof(o.cin[l]));
        std::memset(sl.d, 0xFF, sizeof(o.cin[l]));
      }
    }
    wg.open.push_back(o);
  }
  wg_leave();
}

inline void wgmma_retire(WgmmaOp& o, Warpgroup& wg) {
  const char* op = o.bf16 ? "wgmma.mma_async m64n64k16 bf16 (retiring)" : "wgmma.mma_async m64n64k16 f16 (retiring)";
  const WgmmaB b = wgmma_decode(o.desc, op);
  wgmma_check_b(b, op);
  const auto val = [&](uint16_t bits) { return o.bf16 ? to_float<__nv_bfloat16>(bits) : to_float<__half>(bits); };
  double A[64][16], B[16][64];
  for (int l = 0; l < 128; ++l) {
    const int w = l / 32, gq = (l % 32) / 4, q = l % 4;
    for (int reg = 0; reg < 4; ++reg)
      for (int h = 0; h < 2; ++h)
        A[16 * w + gq + 8 * (reg & 1)][2 * q + h + 8 * (reg >> 1)] =
            val(static_cast<uint16_t>(o.a[l][reg] >> (16 * h)));
  }
  for (int n = 0; n < 64; ++n)
    for (int k = 0; k < 16; ++k) {
      uint16_t bits;
      std::memcpy(&bits, g_cta->dyn + wgmma_b_offset(b, n, k), 2);
      B[k][n] = val(bits);
    }
  for (int l = 0; l < 128; ++l) {
    const uint32_t poison = 0xFFFFFFFFu;
    for (int i = 0; i < 32; ++i)
      if (std::memcmp(&o.d[l][i], &poison, 4) != 0)
        fail("%s: thread %d wrote accumulator register d%d while its wgmma was in flight", op, l, i);
    const int w = l / 32, gq = (l % 32) / 4, q = l % 4;
    float out[32];
    for (int i = 0; i < 32; ++i) {
      const int row = 16 * w + gq + 8 * ((i / 2) % 2), col = 8 * (i / 4) + 2 * q + (i % 2);
      double acc = o.cin[l][i];
      for (int k = 0; k < 16; ++k) acc += A[row][k] * B[k][col];
      out[i] = static_cast<float>(acc);
    }
    // The next op in flight on the same registers starts from this result; else the registers receive it.
    WgmmaOp* next = nullptr;
    for (auto& grp : wg.groups)
      for (WgmmaOp& p : grp)
        if (next == nullptr && &p != &o && p.d[l] == o.d[l] && p.need_cin[l]) next = &p;
    for (WgmmaOp& p : wg.open)
      if (next == nullptr && p.d[l] == o.d[l] && p.need_cin[l]) next = &p;
    if (next != nullptr) {
      std::memcpy(next->cin[l], out, sizeof(out));
      next->need_cin[l] = false;
    } else {
      std::memcpy(o.d[l], out, sizeof(out));
    }
  }
}

inline void wgmma_fence() { self().wgmma_fenced = true; }

inline void wgmma_commit() {
  wg_enter(kWgCommit, "wgmma.commit_group");
  if (is_wg_leader()) {
    Warpgroup& wg = g_cta->wg[g_cta->cur / 128];
    wg.groups.push_back(std::move(wg.open));
    wg.open.clear();
  }
  wg_leave();
}

inline void wgmma_wait(int n) {
  wg_enter(kWgWait + n, "wgmma.wait_group");
  if (is_wg_leader()) {
    Warpgroup& wg = g_cta->wg[g_cta->cur / 128];
    while (static_cast<int>(wg.groups.size()) > n) {
      for (WgmmaOp& o : wg.groups.front()) wgmma_retire(o, wg);
      wg.groups.erase(wg.groups.begin());
    }
  }
  wg_leave();
}

// fence.proxy.async.shared::cta: this thread's cp.async writes that it has waited for become visible to the async
// proxy (bytes rewritten since by another thread keep that thread's mark); plain stores by anyone so far too.
inline void fence_proxy_async() {
  Fiber& f = self();
  for (size_t off : f.px_waited)
    for (size_t i = off; i < off + 16; ++i)
      if (g_cta->unfenced[i] == g_cta->cur + 1) g_cta->unfenced[i] = 0;
  f.px_waited.clear();
  std::memcpy(g_cta->async_view.data(), g_cta->dyn, g_cta->async_view.size());
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
