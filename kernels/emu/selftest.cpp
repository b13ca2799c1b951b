// Kernels that exercise the harness itself (barriers, shuffles, atomics, dynamic and
// static shared memory, error reports), so that a kernel test failing can be trusted to be
// the kernel.
// Host-only: nvcc never sees this file.
#include "../common.h"
#include "../mma.h"

// Thread t publishes t + 1, then reads its neighbour's value after the barrier.
__global__ void selftest_barrier(float* out) {
    VX_SHARED(float, s, [1024]);
    const unsigned t = threadIdx.x;
    s[t] = float(t + 1);
    __syncthreads();
    out[blockIdx.x * blockDim.x + t] = s[(t + 1) % blockDim.x];
}
VX_EMU_ENTRY(selftest_barrier, (float* out), (out))

// The same exchange without the barrier, with neighbour t + step (mod n), per block at
// out[n b ..]. Threads run one at a time between barriers, in thread order or its reverse
// (alternating by block and round), so in some block nearly all threads read their
// neighbour's slot before the neighbour writes it (zero, where the correct exchange gives
// the neighbour's t + 1): a missing barrier shows up deterministically, whether the reader
// comes before or after the writer in thread order.
__global__ void selftest_missing_barrier(float* out, int step) {
    VX_SHARED(float, s, [1024]);
    const unsigned t = threadIdx.x, n = blockDim.x;
    s[t] = 0.0f;
    __syncthreads();
    s[t] = float(t + 1);
    out[blockIdx.x * n + t] = s[(t + n + step) % n];
}
VX_EMU_ENTRY(selftest_missing_barrier, (float* out, int step), (out, step))

// out[4t..4t+4] = lane ^ 5 via xor (float), lane + 3 via down (int, clamped), the warp
// sum of (lane + 1) via an xor butterfly in double, and lane 7's thread index via a
// broadcast from lane 39, which wraps to 7 (unsigned).
__global__ void selftest_shuffle(float* out) {
    const unsigned t = threadIdx.x;
    const unsigned lane = t % warpSize;
    out[4 * t] = __shfl_xor_sync(0xffffffffu, float(lane), 5);
    out[4 * t + 1] = float(__shfl_down_sync(0xffffffffu, int(lane), 3));
    double v = lane + 1.0;
    for (int offset = 16; offset > 0; offset /= 2) v += __shfl_xor_sync(0xffffffffu, v, offset);
    out[4 * t + 2] = float(v);
    out[4 * t + 3] = float(__shfl_sync(0xffffffffu, t, 39));
}
VX_EMU_ENTRY(selftest_shuffle, (float* out), (out))

// Every thread of every block adds 1 to out[0] and its index to out[1].
__global__ void selftest_atomic(float* out) {
    atomicAdd(&out[0], 1.0f);
    atomicAdd(&out[1], float(threadIdx.x));
}
VX_EMU_ENTRY(selftest_atomic, (float* out), (out))

// out[t] = the poisoned value thread t finds in dynamic shared memory before writing
// (NaN), then out[n + t] = what its neighbour wrote there after a barrier.
__global__ void selftest_dynamic_shared(float* out) {
    VX_DYNAMIC_SHARED(float, s);
    const unsigned t = threadIdx.x;
    out[t] = s[t];
    __syncthreads();
    s[t] = float(2 * t);
    __syncthreads();
    out[blockDim.x + t] = s[(t + 1) % blockDim.x];
}
VX_EMU_ENTRY(selftest_dynamic_shared, (float* out), (out))

// Static shared memory of a helper: every call in a block reaches the same storage.
__device__ float* selftest_helper_slot() {
    VX_SHARED(float, slot, [1]);
    return slot;
}

// Per block b of n threads, at out[3 n b ..]: thread t's value in static shared memory
// before writing (poison, NaN, in every block: nothing is left from the block before), then
// its neighbour's b * 1000 + t + 1 after a barrier, then what thread 0 wrote through one
// call of a helper, read through another call after a barrier.
__global__ void selftest_static_shared(float* out) {
    VX_SHARED(float, s, [1024]);
    const unsigned t = threadIdx.x, n = blockDim.x;
    float* at = out + 3 * n * blockIdx.x;
    at[t] = s[t];
    __syncthreads();
    s[t] = float(blockIdx.x * 1000 + t + 1);
    if (t == 0) *selftest_helper_slot() = float(blockIdx.x + 7);
    __syncthreads();
    at[n + t] = s[(t + 1) % n];
    at[2 * n + t] = *selftest_helper_slot();
}
VX_EMU_ENTRY(selftest_static_shared, (float* out), (out))

// Half of a warp waits at a shuffle, the other half at __syncthreads(): neither can
// complete, which the harness must report rather than hang.
__global__ void selftest_deadlock(float* out) {
    const unsigned t = threadIdx.x;
    if (t % 2 == 0)
        out[t] = __shfl_xor_sync(0xffffffffu, 1.0f, 1);
    else
        __syncthreads();
}
VX_EMU_ENTRY(selftest_deadlock, (float* out), (out))

// Thread t copies src[4t..4t+4] into shared memory by an async copy, after a zero fill from
// far past src that reads nothing, then out[4t..4t+4] = the copy once waited for: the
// harness must trap the first copy where it leaves the registered buffers, and never the
// second. The copies land at the wait: read before it, the tile still holds what the
// thread wrote there (else the output is off by 1000).
__global__ void selftest_global_read(const float* src, float* out) {
    VX_SHARED(float, tile, [1024][4]);
    const unsigned t = threadIdx.x;
    const uintptr_t far = reinterpret_cast<uintptr_t>(src) + (uintptr_t(1) << 40);
    tile[t][0] = -1.0f;
    vx_cp_async16(tile[t], reinterpret_cast<const void*>(far), false);
    vx_cp_async16(tile[t], src + 4 * t, true);
    vx_cp_async_commit();
    const float before = tile[t][0];
    vx_cp_async_wait<0>();
    const float deferred = before == -1.0f ? 0.0f : 1000.0f;
    for (int i = 0; i < 4; ++i) out[4 * t + i] = tile[t][i] + deferred;
}
VX_EMU_ENTRY(selftest_global_read, (const float* src, float* out), (src, out))
