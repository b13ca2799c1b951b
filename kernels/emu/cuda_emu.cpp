// The fiber scheduler behind cuda_emu.h: one fiber per thread of the running block,
// switched round-robin at barriers. See the header for the model and its limits.
#include "cuda_emu.h"

#include <algorithm>
#include <cstdint>
#include <memory>
#include <new>
#include <string>
#include <vector>

#if defined(__x86_64__) && defined(__GNUC__)
#define EMU_ASM_SWITCH 1
#else
#include <ucontext.h>
#endif

namespace {

[[noreturn]] void fiber_main();

#if EMU_ASM_SWITCH
// Fibers switch by a few instructions of our own instead of swapcontext, which saves and
// restores the signal mask with a system call every time: the harness switches at every
// barrier of every emulated thread, and swapcontext made a third of its run time.
// vx_emu_switch(from, to) pushes the callee-saved registers and the SSE and x87 control
// words (the System V ABI's preserved state) on the running stack, stores the stack
// pointer in *from, and pops the same from `to`.
extern "C" void vx_emu_switch(void** from, void* to);
asm(R"(
    .text
    .p2align 4
    .globl vx_emu_switch
    .hidden vx_emu_switch
    .type vx_emu_switch, @function
vx_emu_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    subq $8, %rsp
    stmxcsr (%rsp)
    fnstcw 4(%rsp)
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    ldmxcsr (%rsp)
    fldcw 4(%rsp)
    addq $8, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size vx_emu_switch, .-vx_emu_switch
)");

struct Context {
    void* sp = nullptr;
};

// A stack on which the first switch to `c` enters fiber_main as if called: control words as
// the running thread has them, zeroed registers (a zero frame pointer ends backtraces),
// fiber_main's address for `ret`, and below the top a zero return address, so that the
// stack pointer is 8 modulo 16 on entry as the ABI wants.
void start_context(Context& c, char* stack, size_t bytes, Context&) {
    auto top = reinterpret_cast<uintptr_t>(stack + bytes) & ~uintptr_t{15};
    auto* sp = reinterpret_cast<uint64_t*>(top);
    *--sp = 0;
    *--sp = reinterpret_cast<uint64_t>(&fiber_main);
    for (int r = 0; r < 6; ++r) *--sp = 0;
    uint32_t mxcsr;
    uint16_t fpucw;
    asm volatile("stmxcsr %0" : "=m"(mxcsr));
    asm volatile("fnstcw %0" : "=m"(fpucw));
    *--sp = uint64_t{mxcsr} | uint64_t{fpucw} << 32;
    c.sp = sp;
}

void switch_context(Context& from, Context& to) { vx_emu_switch(&from.sp, to.sp); }
#else
struct Context {
    ucontext_t uc;
};

void start_context(Context& c, char* stack, size_t bytes, Context& link) {
    getcontext(&c.uc);
    c.uc.uc_stack.ss_sp = stack;
    c.uc.uc_stack.ss_size = bytes;
    c.uc.uc_link = &link.uc;
    makecontext(&c.uc, fiber_main, 0);
}

void switch_context(Context& from, Context& to) { swapcontext(&from.uc, &to.uc); }
#endif

// Kernels keep small register tiles on the stack; 64 KiB leaves a wide margin.
constexpr size_t kStackBytes = 64 * 1024;
constexpr unsigned kMaxBlockThreads = 1024;
// The most dynamic shared memory a block may opt into on sm_90 (the launchers set the
// attribute above 48 KiB).
constexpr size_t kMaxSharedBytes = 227 * 1024;

struct Barrier {
    unsigned arrived = 0;
    unsigned live = 0;
    unsigned long long generation = 0;
};

struct Fiber {
    Context context;
    uint3 tid;
    unsigned warp;
    bool done;
};

struct Launch {
    Context scheduler;
    std::vector<Fiber> fibers;
    Barrier block;
    std::vector<Barrier> warps;
    Barrier named[16];  // bar.sync ids; id 0 is __syncthreads
    std::vector<unsigned> warp_lanes;
    std::vector<unsigned long long> slots;  // one shuffle slot per thread
    std::vector<unsigned char> dynamic_shared;
    size_t current = 0;
    unsigned long long progress = 0;
    void (*body)(void*) = nullptr;
    void* ctx = nullptr;
};

thread_local Launch* active = nullptr;
thread_local std::vector<void (*)()> block_end_hooks;
thread_local int deferred_kinds = EMU_DEFER_READS | EMU_DEFER_COPIES;
thread_local std::string last_error;
thread_local std::vector<std::unique_ptr<char[]>> stacks;
// Counts the blocks this OS thread has started, so a static shared slot knows whether it
// was poisoned for the running one.
thread_local unsigned long long blocks_started = 0;

struct GlobalBuffer {
    uintptr_t begin, end;
};
thread_local std::vector<GlobalBuffer> global_reads;

void fail(const std::string& msg) {
    if (last_error.empty()) last_error = msg;
}

void yield_to_scheduler() {
    Launch& l = *active;
    switch_context(l.fibers[l.current].context, l.scheduler);
}

void release_if_complete(Barrier& b) {
    if (b.arrived > 0 && b.arrived == b.live) {
        b.arrived = 0;
        ++b.generation;
    }
}

void barrier_wait(Barrier& b) {
    ++b.arrived;
    ++active->progress;
    if (b.arrived == b.live) {
        b.arrived = 0;
        ++b.generation;
        return;
    }
    unsigned long long gen = b.generation;
    while (b.generation == gen) yield_to_scheduler();
}

// Runs on the fiber's stack and never returns: the scheduler does not resume a done fiber.
void fiber_main() {
    Launch& l = *active;
    l.body(l.ctx);
    Fiber& f = l.fibers[l.current];
    f.done = true;
    ++l.progress;
    --l.block.live;
    release_if_complete(l.block);
    --l.warps[f.warp].live;
    release_if_complete(l.warps[f.warp]);
    switch_context(f.context, l.scheduler);
    __builtin_unreachable();
}

std::string dims(dim3 d) {
    return "(" + std::to_string(d.x) + ", " + std::to_string(d.y) + ", " + std::to_string(d.z) +
           ")";
}

bool check_dims(dim3 grid, dim3 block, size_t shared_bytes) {
    unsigned long long threads = 1ull * block.x * block.y * block.z;
    if (grid.x == 0 || grid.y == 0 || grid.z == 0 || grid.x > 0x7fffffffu || grid.y > 65535 ||
        grid.z > 65535) {
        fail("invalid grid " + dims(grid));
        return false;
    }
    if (threads == 0 || threads > kMaxBlockThreads || block.z > 64) {
        fail("invalid block " + dims(block));
        return false;
    }
    if (shared_bytes > kMaxSharedBytes) {
        fail("dynamic shared memory of " + std::to_string(shared_bytes) + " bytes");
        return false;
    }
    return true;
}

// Sets fiber t up to start the kernel body on its own stack.
__attribute__((noinline)) void prepare(Launch& l, unsigned t) {
    Fiber& f = l.fibers[t];
    f.done = false;
    start_context(f.context, stacks[t].get(), kStackBytes, l.scheduler);
}

// Runs fiber t until it waits at a barrier or returns; true when it returned. Kept out of
// run_block so that no local of the round-robin loop lives across the switch.
__attribute__((noinline)) bool resume(Launch& l, unsigned t) {
    Fiber& f = l.fibers[t];
    l.current = t;
    threadIdx = f.tid;
    switch_context(l.scheduler, f.context);
    return f.done;
}

// Runs every thread of the current block to completion; false on deadlock.
bool run_block(Launch& l) {
    unsigned n = unsigned(l.fibers.size());
    l.block = Barrier{0, n, 0};
    for (unsigned w = 0; w < l.warps.size(); ++w) l.warps[w] = Barrier{0, l.warp_lanes[w], 0};
    for (Barrier& b : l.named) b = Barrier{};
    std::fill(l.dynamic_shared.begin(), l.dynamic_shared.end(), 0xFF);
    ++blocks_started;
    for (unsigned t = 0; t < n; ++t) prepare(l, t);
    unsigned alive = n;
    // Rounds alternate between thread order and its reverse, starting with the order of
    // the block's parity, so that a read racing a write another thread makes between the
    // same two barriers comes before it in some block or round, whichever thread is first.
    const unsigned linear = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
    for (unsigned round = linear % 2; alive > 0; ++round) {
        unsigned long long before = l.progress;
        for (unsigned i = 0; i < n; ++i) {
            const unsigned t = round % 2 == 0 ? i : n - 1 - i;
            if (!l.fibers[t].done && resume(l, t)) --alive;
        }
        if (alive > 0 && l.progress == before) {
            fail("deadlock in block " + dims(dim3(blockIdx.x, blockIdx.y, blockIdx.z)) + ": " +
                 std::to_string(alive) +
                 " threads wait at barriers or mbarriers that cannot complete (a barrier or "
                 "shuffle in divergent code? an mbarrier phase that never comes?)");
            for (void (*hook)() : block_end_hooks) hook();
            return false;
        }
    }
    for (void (*hook)() : block_end_hooks) hook();
    return true;
}

}  // namespace

extern "C" const char* emu_last_error() { return last_error.c_str(); }

int emu_run(dim3 grid, dim3 block, size_t shared_bytes, void (*body)(void*), void* ctx) {
    last_error.clear();
    if (active != nullptr) {
        fail("kernel launch from inside a kernel");
        return -1;
    }
    if (!check_dims(grid, block, shared_bytes)) return -1;
    unsigned n = block.x * block.y * block.z;
    while (stacks.size() < n) stacks.emplace_back(new char[kStackBytes]);

    Launch l;
    l.body = body;
    l.ctx = ctx;
    l.fibers.resize(n);
    l.slots.assign(n, 0);
    l.dynamic_shared.resize(shared_bytes);
    unsigned nwarps = (n + warpSize - 1) / warpSize;
    l.warps.resize(nwarps);
    l.warp_lanes.resize(nwarps);
    for (unsigned w = 0; w < nwarps; ++w) l.warp_lanes[w] = std::min<unsigned>(warpSize, n - w * warpSize);
    unsigned t = 0;
    for (unsigned z = 0; z < block.z; ++z)
        for (unsigned y = 0; y < block.y; ++y)
            for (unsigned x = 0; x < block.x; ++x, ++t) {
                l.fibers[t].tid = uint3{x, y, z};
                l.fibers[t].warp = t / warpSize;
            }

    active = &l;
    blockDim = block;
    gridDim = grid;
    bool ok = true;
    for (unsigned z = 0; ok && z < grid.z; ++z)
        for (unsigned y = 0; ok && y < grid.y; ++y)
            for (unsigned x = 0; ok && x < grid.x; ++x) {
                blockIdx = uint3{x, y, z};
                ok = run_block(l);
            }
    active = nullptr;
    return ok && last_error.empty() ? 0 : -1;
}

void emu_sync_block() { barrier_wait(active->block); }

void emu_sync_warp() {
    Launch& l = *active;
    barrier_wait(l.warps[l.fibers[l.current].warp]);
}

void emu_warp_exchange(const void* value, void* out, unsigned bytes, unsigned mask, int src_lane) {
    Launch& l = *active;
    const Fiber& f = l.fibers[l.current];
    std::memcpy(out, value, bytes);
    if (mask != 0xffffffffu) {
        fail("shuffle with a partial mask is not emulated");
        return;
    }
    if (l.warp_lanes[f.warp] != unsigned(warpSize)) {
        fail("shuffle in a partial warp (block of " + std::to_string(l.fibers.size()) +
             " threads)");
        return;
    }
    if (src_lane < 0 || src_lane >= warpSize) {
        fail("shuffle with a width other than 32 or a source lane out of range");
        return;
    }
    std::memcpy(&l.slots[l.current], value, bytes);
    barrier_wait(l.warps[f.warp]);
    std::memcpy(out, &l.slots[f.warp * warpSize + unsigned(src_lane)], bytes);
    barrier_wait(l.warps[f.warp]);
}

void emu_named_barrier(unsigned id, unsigned threads) {
    Launch& l = *active;
    if (id == 0 || id >= 16 || threads == 0 || threads % warpSize != 0 ||
        threads > l.fibers.size()) {
        fail("named barrier " + std::to_string(id) + " for " + std::to_string(threads) +
             " threads in a block of " + std::to_string(l.fibers.size()));
        return;
    }
    Barrier& b = l.named[id];
    if (b.arrived == 0) b.live = threads;
    if (b.live != threads) {
        fail("named barrier " + std::to_string(id) + " used with two thread counts");
        return;
    }
    barrier_wait(b);
}

void emu_yield() { yield_to_scheduler(); }

unsigned emu_thread_index() { return unsigned(active->current); }

extern "C" void emu_set_deferred(int reads, int copies) {
    deferred_kinds = (reads ? EMU_DEFER_READS : 0) | (copies ? EMU_DEFER_COPIES : 0);
}

int emu_deferred() { return deferred_kinds; }

void emu_on_block_end(void (*hook)()) {
    for (void (*h)() : block_end_hooks)
        if (h == hook) return;
    block_end_hooks.push_back(hook);
}

void emu_progress() { ++active->progress; }

void* emu_dynamic_shared() { return active->dynamic_shared.data(); }

size_t emu_dynamic_shared_bytes() { return active->dynamic_shared.size(); }

// Static shared memory is at least 16-byte aligned on a GPU; vector loads rely on it.
void* emu_static_shared(EmuSharedSlot& slot, size_t bytes, size_t align) {
    if (slot.memory == nullptr) {
        slot.align = std::max<size_t>(align, 16);
        slot.memory = ::operator new(bytes, std::align_val_t{slot.align});
    }
    if (slot.block != blocks_started) {
        std::memset(slot.memory, 0xFF, bytes);
        slot.block = blocks_started;
    }
    return slot.memory;
}

EmuSharedSlot::~EmuSharedSlot() {
    if (memory != nullptr) ::operator delete(memory, std::align_val_t{align});
}

void emu_fail(const char* msg) { fail(msg); }

extern "C" void emu_allow_global_read(const void* base, size_t bytes) {
    const uintptr_t begin = reinterpret_cast<uintptr_t>(base);
    global_reads.push_back(GlobalBuffer{begin, begin + bytes});
}

extern "C" void emu_clear_global_reads() { global_reads.clear(); }

bool emu_check_global_read(const void* src, size_t bytes) {
    if (global_reads.empty()) {
        fail("an async copy in a launch whose wrapper registered no global buffers");
        return false;
    }
    const uintptr_t begin = reinterpret_cast<uintptr_t>(src);
    const GlobalBuffer* below = nullptr;  // the buffer that starts last at or before src
    for (const GlobalBuffer& b : global_reads) {
        if (begin >= b.begin && begin <= b.end && bytes <= b.end - begin) return true;
        if (begin >= b.begin && (below == nullptr || b.begin > below->begin)) below = &b;
    }
    std::string msg = "an async copy of " + std::to_string(bytes) + " bytes in block " +
                      dims(dim3(blockIdx.x, blockIdx.y, blockIdx.z)) + ", thread " +
                      std::to_string(active != nullptr ? active->current : 0) + ", reads ";
    if (below != nullptr)
        msg += "at byte " + std::to_string(begin - below->begin) + " of registered buffer " +
               std::to_string(below - global_reads.data()) + ", which has " +
               std::to_string(below->end - below->begin) + " bytes";
    else
        msg += "before every registered buffer";
    fail(msg);
    return false;
}
