// Block-wide sums of a few doubles per thread in a fixed order (warp butterflies, then the
// warp totals in warp order), so a launch of a given shape always gives the same bits.
// Used by the loss reductions (bce.cu, cross_entropy.cu): partial sums per block, then
// one block adds the partials.
#pragma once
#include "common.h"

// Blocks that call vx_block_sum have VX_SUM_THREADS threads (params_bce.h).

// Replaces v[0..N) of thread 0 with the block's totals (other threads' values are then
// meaningless). Every thread of the block must call it; it may be called once per kernel.
template <int N>
__device__ __forceinline__ void vx_block_sum(double (&v)[N]) {
    VX_SHARED(double, warp_totals, [N][VX_SUM_THREADS / 32]);
    const unsigned lane = threadIdx.x % warpSize, warp = threadIdx.x / warpSize;
#pragma unroll
    for (int j = 0; j < N; ++j)
        for (int offset = warpSize / 2; offset > 0; offset /= 2)
            v[j] += __shfl_xor_sync(0xffffffffu, v[j], offset);
    if (lane == 0) {
#pragma unroll
        for (int j = 0; j < N; ++j) warp_totals[j][warp] = v[j];
    }
    __syncthreads();
    if (threadIdx.x == 0) {
#pragma unroll
        for (int j = 0; j < N; ++j) {
            double s = 0.0;
            for (int w = 0; w < VX_SUM_THREADS / 32; ++w) s += warp_totals[j][w];
            v[j] = s;
        }
    }
}

// Adds `count` values per plane of `partial` (planes of `count`), as one block: thread t
// takes values t, t + 256, ... in order. The totals land in thread 0.
template <int N>
__device__ __forceinline__ void vx_sum_partials(const double* partial, unsigned count,
                                                double (&v)[N]) {
#pragma unroll
    for (int j = 0; j < N; ++j) {
        v[j] = 0.0;
        for (unsigned i = threadIdx.x; i < count; i += VX_SUM_THREADS) v[j] += partial[j * count + i];
    }
    vx_block_sum(v);
}
