// Shared-memory barriers that hand a stage of a ring from the threads that fill it to the
// threads that read it and back (mbarrier, sm_90 for try_wait), and named barriers that
// meet a subset of a block's warps (bar.sync id, count). Each has a harness twin
// (kernels/emu/cuda_emu.h says how they are emulated).
//
// An mbarrier completes a phase when `count` arrivals have been made since the last one;
// its phase parity starts at 0. A thread waits for the phase of parity `parity` to
// complete: for the n-th completion (n = 0, 1, ...) it waits with parity n % 2.
#pragma once

#ifdef __CUDACC__

__device__ __forceinline__ void vx_mbar_init(unsigned long long* bar, unsigned count) {
    const unsigned addr = static_cast<unsigned>(__cvta_generic_to_shared(bar));
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(addr), "r"(count) : "memory");
}

// Arrives with release semantics at CTA scope: this thread's earlier writes (and, after a
// proxy fence, its completed async copies) are visible to a thread whose wait sees the
// phase complete.
__device__ __forceinline__ void vx_mbar_arrive(unsigned long long* bar) {
    const unsigned addr = static_cast<unsigned>(__cvta_generic_to_shared(bar));
    asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];" ::"r"(addr) : "memory");
}

__device__ __forceinline__ bool vx_mbar_try_wait(unsigned long long* bar, unsigned parity) {
    const unsigned addr = static_cast<unsigned>(__cvta_generic_to_shared(bar));
    unsigned done;
    asm volatile(
        "{\n.reg .pred p;\nmbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n"
        "selp.u32 %0, 1, 0, p;\n}\n"
        : "=r"(done)
        : "r"(addr), "r"(parity)
        : "memory");
    return done != 0;
}

// The low 32 bits of the GPU's global timer (nanoseconds, wrapping every 4.29 s): one
// register, where the 256-row tile's multiplying warps have no second one to spare.
__device__ __forceinline__ unsigned vx_global_timer_lo_ns() {
    unsigned t;
    asm volatile("mov.u32 %0, %%globaltimer_lo;" : "=r"(t));
    return t;
}

// A wait longer than this traps the kernel: a phase that can never complete (a transaction
// byte count the copies do not meet, a missing arrival) then fails the launch within
// seconds instead of hanging the process until a test's time limit ends it. The launch
// then fails with CUDA_ERROR_ILLEGAL_INSTRUCTION, as a malformed instruction's does.
constexpr unsigned VX_MBAR_TIMEOUT_NS = 4000000000u;

// Meets `threads` threads (whole warps) of the block at barrier `id` (1..15; 0 is
// __syncthreads'), ordering their shared-memory accesses as __syncthreads does.
__device__ __forceinline__ void vx_named_barrier(unsigned id, unsigned threads) {
    asm volatile("bar.sync %0, %1;" ::"r"(id), "r"(threads) : "memory");
}

#else  // The harness twins: the low word counts arrivals (16 bits expected, 16 arrived), the
       // high word holds the phase parity (bit 0) and the pending transaction bytes
       // (signed, the other 31 bits).

namespace vx_mbar_emu {

struct State {
    unsigned expected, arrived;
    int tx;
    unsigned parity;
};

inline State load(const unsigned long long* bar) {
    unsigned w[2];
    std::memcpy(w, bar, sizeof w);
    return {w[0] & 0xFFFF, w[0] >> 16, static_cast<int>(w[1]) >> 1, w[1] & 1};
}

// Stores `s`, completing the phase when every arrival is in and no transaction byte is
// pending.
inline void store(unsigned long long* bar, State s) {
    if (s.arrived == s.expected && s.tx == 0) {
        s.arrived = 0;
        s.parity ^= 1;
    }
    const unsigned w[2] = {s.expected | s.arrived << 16,
                           static_cast<unsigned>(s.tx) << 1 | s.parity};
    std::memcpy(bar, w, sizeof w);
}

inline State initialised(const unsigned long long* bar, const char* what) {
    const State s = load(bar);
    if (s.expected == 0) emu_fail(what);
    return s;
}

}  // namespace vx_mbar_emu

inline void vx_mbar_init(unsigned long long* bar, unsigned count) {
    if (count == 0 || count > 0xFFFF) emu_fail("mbarrier count out of range");
    const unsigned w[2] = {count & 0xFFFF, 0};
    std::memcpy(bar, w, sizeof w);
}

inline void vx_mbar_arrive(unsigned long long* bar) {
    vx_mbar_emu::State s =
        vx_mbar_emu::initialised(bar, "arrival at an mbarrier that was never initialised");
    if (s.expected == 0) return;
    if (s.arrived == s.expected) emu_fail("an arrival beyond an mbarrier's count");
    ++s.arrived;
    vx_mbar_emu::store(bar, s);
    emu_progress();
}

inline bool vx_mbar_try_wait(unsigned long long* bar, unsigned parity) {
    const vx_mbar_emu::State s =
        vx_mbar_emu::initialised(bar, "wait at an mbarrier that was never initialised");
    return s.parity != parity;
}

inline void vx_named_barrier(unsigned id, unsigned threads) { emu_named_barrier(id, threads); }

#endif

// Waits until the phase of parity `parity` of `bar` has completed (on a GPU, trapping
// after VX_MBAR_TIMEOUT_NS; the timer is read only once the first try fails; the harness
// reports a deadlock itself). Where wgmmas are in flight (the multiplying warps' loops)
// ptxas puts a wgmma wait before the trap (its C7517 note, "warpgroup.wait is injected"):
// on the trap's path alone, so the loop's waits stay as written. scripts/ptxas-check.sh
// builds the wgmma kernels once more with VX_MBAR_NO_TRAP, where any such note would be a
// wait injected elsewhere, and fails on one.
__device__ __forceinline__ void vx_mbar_wait(unsigned long long* bar, unsigned parity) {
#if defined(__CUDACC__) && defined(VX_MBAR_NO_TRAP)
    while (!vx_mbar_try_wait(bar, parity)) {
    }
#elif defined(__CUDACC__)
    if (vx_mbar_try_wait(bar, parity)) return;
    const unsigned start = vx_global_timer_lo_ns();
    while (!vx_mbar_try_wait(bar, parity))
        if (vx_global_timer_lo_ns() - start > VX_MBAR_TIMEOUT_NS) __trap();
#else
    while (!vx_mbar_try_wait(bar, parity)) emu_yield();
    emu_progress();
#endif
}
