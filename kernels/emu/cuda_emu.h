// CPU execution harness: lets kernels/*.cu compile as host C++ and run on the CPU, so the
// exact kernel source is tested where no GPU is lent (tests/cuda_harness.rs).
//
// Model
// - Blocks run one after another on the calling OS thread. The threads of a block are
//   fibers on that thread (a switch of our own on x86-64, ucontext elsewhere), switched
//   only at __syncthreads(), __syncwarp() and warp shuffles, round-robin in rounds that
//   alternate between thread order and its reverse (even blocks start in thread order,
//   odd ones in reverse). So a launch is deterministic, concurrent launches from different
//   test threads share nothing, and a race between two threads shows whichever of them a
//   GPU runs first.
// - blockIdx/threadIdx/blockDim/gridDim are thread_local variables the scheduler sets
//   before resuming each fiber. Shared memory is per OS thread (below), which all fibers
//   of the running block share; blocks never overlap in time.
// - __syncthreads() is a barrier over the block's live threads (threads that returned
//   count as arrived, as on sm_70+). A round in which no thread can move is reported as a
//   deadlock and the launch fails (e.g. __syncthreads() or a shuffle in divergent code).
// - __shfl_sync/__shfl_xor_sync/__shfl_down_sync: each lane posts its value in a
//   per-thread slot, the warp meets at a barrier, reads its source lane, meets again. Only
//   the full mask over a full warp of 32 threads is emulated; anything else fails the
//   launch.
// - atomicAdd goes through std::atomic_ref.
// - Dynamic shared memory (VX_DYNAMIC_SHARED in common.h, shared_bytes at launch) is a
//   per-launch buffer refilled with 0xFF bytes (NaN as f32/f64) before every block, so a
//   read of a value no thread wrote shows up as NaN in the results. Static shared memory
//   (VX_SHARED in common.h) is a buffer per declaration and OS thread, refilled with 0xFF
//   bytes by the first thread of each block that reaches the declaration, so a value left
//   by an earlier block is not read either.
//
// What is not emulated faithfully, and how it is covered
// - Timing, warp divergence cost, occupancy, bank conflicts: not modelled. Covered by
//   `ptxas -v` (scripts/ptxas-check.sh: registers, spills) and by GPU runs
//   (scripts/gpu-check.sh).
// - The memory model: fibers interleave only at barriers, so a missing barrier shows up
//   deterministically as a wrong result (in the blocks or rounds whose order runs the
//   reading thread first), but races between warps that a GPU would expose only
//   sometimes, missing `volatile`, and warp-synchronous code without __syncwarp() are not
//   caught. The GPU parity tests (tests/cuda_parity.rs) cover them.
// - Out-of-bounds accesses are trapped only for async copies (cp.async, kernels/mma.h):
//   a copy that reads must lie inside a global buffer the launch's wrapper registered
//   (emu_allow_global_read), so a stray read whose value the kernel discards, which no
//   value check can see and which can fault on a GPU, fails the launch. A copy with
//   src-size 0 reads nothing and is not checked. Plain loads and stores are not trapped;
//   tests surround buffers with guard values.
// - Each thread gets a 64 KiB stack: a kernel with large local arrays needs more.
// - Fast-math intrinsics (__expf, __fdividef, rsqrtf) map to exact host math, so their
//   reduced precision on the GPU is only seen by the parity tests.
// - Tensor-core fragments are not provided: a kernel that uses them must wrap them in
//   __device__ functions with a host twin (kernels/mma.h does so for mma.sync, ldmatrix
//   and cp.async).
// - cp.async and wgmma run when the wait_group that retires their commit group runs
//   (EmuAsyncQueue, below), the latest moment a GPU allows: a copy's slot read before its
//   wait, a stage refilled or released before the wgmmas reading it are retired, or
//   accumulators read before their wait, show up as wrong results (where a late read
//   meets a late copy, a test reruns the kernel with the copies alone deferred,
//   emu_set_deferred). A wait stronger than needed cannot show (it only costs time on a
//   GPU). wgmma.wait_group, .sync on a GPU, meets the warp once each lane has run its share
//   (kernels/wgmma.h), so a lane does not go on before its warp's wgmmas have completed.
// - mbarriers (kernels/mbarrier.h) are a count and a phase in their 8 bytes of shared
//   memory; a thread waiting for a phase yields to the block's other threads until it
//   completes, so a producer that overwrites a stage its consumers have not released, or a
//   consumer that reads one not yet filled, shows up as a wrong result or a deadlock; so
//   does an arrival made too early within its step (a stage released before
//   wgmma.wait_group, one published before cp.async.wait_group), as the deferred work then
//   runs after the other side has moved on. A missing fence.proxy.async or wgmma.fence
//   cannot show here; the GPU parity tests cover them. Named barriers (bar.sync id, count)
//   meet `count` threads.
// - Tensor memory accelerator copies (kernels/tma.h) read their box from a tensor map the
//   harness encoded (emu_tensor_map_encode_tiled: the driver's documented checks, but only
//   5-dimensional tiles, no interleave, zero fill, and the 128-byte swizzle on rows of 128
//   bytes), place each 16-byte chunk by the swizzle of its shared-state address, and
//   complete their bytes on the mbarrier at issue; a copy that completes more bytes than
//   its phase was armed with fails the launch (on a GPU the phase would complete early).
//   Whether the driver encodes the same arguments into the same boxes is for the GPU
//   parity tests.
#pragma once

#ifdef __CUDACC__
#error "cuda_emu.h is for host builds of the kernels only"
#endif

#include <atomic>
#include <cmath>
#include <cstddef>
#include <cstring>
#include <deque>
#include <math.h>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __grid_constant__
// Static shared memory is declared with VX_SHARED (common.h), which the harness poisons
// per block; a plain __shared__ would keep an earlier block's values.
#define __shared__ static_assert(false, "declare static shared memory with VX_SHARED (common.h)");

struct uint3 {
    unsigned x, y, z;
};

struct dim3 {
    unsigned x, y, z;
    constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

inline thread_local uint3 threadIdx;
inline thread_local uint3 blockIdx;
inline thread_local dim3 blockDim;
inline thread_local dim3 gridDim;
constexpr int warpSize = 32;

// Launch dimensions as the Rust side passes them (LaunchDims in src/backend/cuda/launch.rs).
struct EmuDims {
    unsigned grid[3];
    unsigned block[3];
    unsigned shared_bytes;
};

// Runs `body` once per thread of every block. Returns 0, or -1 with emu_last_error() set.
int emu_run(dim3 grid, dim3 block, size_t shared_bytes, void (*body)(void*), void* ctx);

// The launch helper: kernel<<<grid, block, shared_bytes>>>(args...).
template <class... P, class... A>
int emu_launch(dim3 grid, dim3 block, size_t shared_bytes, void (*kernel)(P...), A... args) {
    auto call = [&]() { kernel(args...); };
    using Call = decltype(call);
    return emu_run(
        grid, block, shared_bytes, [](void* c) { (*static_cast<Call*>(c))(); }, &call);
}

template <class... P, class... A>
int emu_launch(const EmuDims& d, void (*kernel)(P...), A... args) {
    return emu_launch(dim3(d.grid[0], d.grid[1], d.grid[2]),
                      dim3(d.block[0], d.block[1], d.block[2]), d.shared_bytes, kernel, args...);
}

extern "C" const char* emu_last_error();

void emu_sync_block();
void emu_sync_warp();
// Waits until `threads` threads of the block have reached named barrier `id` (1..15).
void emu_named_barrier(unsigned id, unsigned threads);
// Lets the block's other threads run (a thread spinning on a condition they will change).
void emu_yield();
// Counts as progress for the deadlock check (an mbarrier arrival or completed wait).
void emu_progress();
// Posts `bytes` of `value` for this lane, then copies lane `src_lane`'s value to `out`.
void emu_warp_exchange(const void* value, void* out, unsigned bytes, unsigned mask, int src_lane);
void* emu_dynamic_shared();
size_t emu_dynamic_shared_bytes();

// The storage of one static shared declaration (VX_SHARED) on this OS thread.
struct EmuSharedSlot {
    void* memory = nullptr;
    size_t align = 0;
    unsigned long long block = 0;  // the block it was last poisoned for
    EmuSharedSlot() = default;
    EmuSharedSlot(const EmuSharedSlot&) = delete;
    EmuSharedSlot& operator=(const EmuSharedSlot&) = delete;
    ~EmuSharedSlot();
};
// `slot`'s `bytes`, allocated on first use, filled with 0xFF once per block.
void* emu_static_shared(EmuSharedSlot& slot, size_t bytes, size_t align);
// The global buffers this OS thread's next launches may read through async copies, until
// emu_clear_global_reads(). The Rust wrappers of the kernels that copy asynchronously
// register their operands; an async copy in a launch that registered none fails it.
extern "C" void emu_allow_global_read(const void* base, size_t bytes);
extern "C" void emu_clear_global_reads();
// Whether [src, src + bytes) lies inside one registered buffer; fails the running launch
// when it does not.
bool emu_check_global_read(const void* src, size_t bytes);
// Fails the running launch with `msg` (for emulated instructions given what they cannot
// model); the thread goes on, and the launch returns -1 when it ends.
void emu_fail(const char* msg);

// The running thread's index in its block (x fastest).
unsigned emu_thread_index();
// Runs `hook` after every block this OS thread runs from now on, before the launch
// returns (so a failure it reports fails that launch); a hook registered twice runs once.
void emu_on_block_end(void (*hook)());

// The kinds of asynchronous work EmuAsyncQueue defers: wgmma's reads of its operands (and
// its accumulation), cp.async's copies. Deferring the reads shows a stage refilled before
// the tensor cores are done with it, deferring the copies a stage read before they land;
// as the fibers run, deferring both can hide the second (a late read meets a late copy),
// so a test may run a kernel again with the copies alone deferred.
constexpr int EMU_DEFER_READS = 1, EMU_DEFER_COPIES = 2;
// Sets whether this OS thread's next launches defer wgmma's reads and cp.async's copies
// (both until set).
extern "C" void emu_set_deferred(int reads, int copies);
int emu_deferred();

// Work that an emulated asynchronous instruction (wgmma, cp.async) defers until a wait
// retires it: per thread of the running block, the operations issued since the last
// commit, then the committed groups, oldest first. Running each at the latest moment its
// instruction allows makes a stage released before its wait (the tensor cores may still
// read it) or read before its copies' wait show up as wrong results. Work of a kind not
// deferred (emu_set_deferred, Op::KIND) runs when issued. At a block's end, work no wait
// retired fails the launch with Op::UNRETIRED, or is dropped where that is null (copies
// issued ahead of a loop's last step).
template <class Op>
class EmuAsyncQueue {
  public:
    static void issue(const Op& op) {
        if (emu_deferred() & Op::KIND) {
            mine().open.push_back(op);
        } else {
            op();
        }
    }
    static void commit() {
        Queue& q = mine();
        q.groups.push_back(std::move(q.open));
        q.open.clear();
    }
    // Runs the oldest committed groups until at most `pending` remain.
    static void retire(size_t pending) {
        Queue& q = mine();
        while (q.groups.size() > pending) {
            for (const Op& op : q.groups.front()) op();
            q.groups.pop_front();
        }
    }

  private:
    struct Queue {
        std::vector<Op> open;
        std::deque<std::vector<Op>> groups;
    };
    static std::vector<Queue>& queues() {
        static thread_local std::vector<Queue> q;
        return q;
    }
    static Queue& mine() {
        emu_on_block_end(&at_block_end);
        std::vector<Queue>& qs = queues();
        const unsigned t = emu_thread_index();
        if (qs.size() <= t) qs.resize(t + 1);
        return qs[t];
    }
    static void at_block_end() {
        for (Queue& q : queues()) {
            if (Op::UNRETIRED != nullptr && (!q.open.empty() || !q.groups.empty()))
                emu_fail(Op::UNRETIRED);
            q = Queue{};
        }
    }
};

inline void __syncthreads() { emu_sync_block(); }
inline void __syncwarp(unsigned = 0xffffffffu) { emu_sync_warp(); }

inline unsigned emu_lane() {
    return (threadIdx.x + threadIdx.y * blockDim.x + threadIdx.z * blockDim.x * blockDim.y) %
           warpSize;
}

template <class T>
T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = warpSize) {
    static_assert(sizeof(T) <= 8, "shuffles move at most 8 bytes");
    T out;
    int src = width == warpSize ? int(emu_lane()) ^ lane_mask : -1;
    emu_warp_exchange(&v, &out, sizeof(T), mask, src);
    return out;
}

template <class T>
T __shfl_sync(unsigned mask, T v, int src_lane, int width = warpSize) {
    static_assert(sizeof(T) <= 8, "shuffles move at most 8 bytes");
    T out;
    // A lane past the warp reads lane src_lane modulo the width, as on a GPU.
    int src = width == warpSize ? int(unsigned(src_lane) % unsigned(warpSize)) : -1;
    emu_warp_exchange(&v, &out, sizeof(T), mask, src);
    return out;
}

template <class T>
T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = warpSize) {
    static_assert(sizeof(T) <= 8, "shuffles move at most 8 bytes");
    T out;
    int lane = int(emu_lane());
    int src = width != warpSize ? -1 : (lane + int(delta) < warpSize ? lane + int(delta) : lane);
    emu_warp_exchange(&v, &out, sizeof(T), mask, src);
    return out;
}

template <class T>
T atomicAdd(T* address, T value) {
    return std::atomic_ref<T>(*address).fetch_add(value, std::memory_order_relaxed);
}

// Math intrinsics as exact host functions.
inline float __expf(float x) { return expf(x); }
inline float __logf(float x) { return logf(x); }
inline float __fdividef(float a, float b) { return a / b; }
inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
// A product never fused into a following add; the volatile keeps the host compiler from
// contracting it too (kernels/optim_step.cu and stitch.cu rely on that to round as the
// CPU does).
inline double __dmul_rn(double a, double b) {
    volatile double product = a * b;
    return product;
}
inline float __fmul_rn(float a, float b) {
    volatile float product = a * b;
    return product;
}
inline float __saturatef(float x) { return x < 0.0f ? 0.0f : (x > 1.0f ? 1.0f : x); }
inline unsigned __umulhi(unsigned a, unsigned b) {
    return unsigned((static_cast<unsigned long long>(a) * b) >> 32);
}
inline unsigned __float_as_uint(float x) {
    unsigned u;
    std::memcpy(&u, &x, sizeof u);
    return u;
}
inline float __uint_as_float(unsigned u) {
    float x;
    std::memcpy(&x, &u, sizeof x);
    return x;
}
template <class T>
T __ldg(const T* p) {
    return *p;
}

// CUDA's integer min/max overloads.
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline unsigned min(unsigned a, unsigned b) { return a < b ? a : b; }
inline unsigned max(unsigned a, unsigned b) { return a > b ? a : b; }
inline long long min(long long a, long long b) { return a < b ? a : b; }
inline long long max(long long a, long long b) { return a > b ? a : b; }
inline unsigned long long min(unsigned long long a, unsigned long long b) { return a < b ? a : b; }
inline unsigned long long max(unsigned long long a, unsigned long long b) { return a > b ? a : b; }
