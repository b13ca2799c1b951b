// The block reduction shared by the sum kernels (reduce.cu) and the broadcast gradient of
// binary ops (binary.cu): sums over the middle axis of [outer, mid, inner] in f64, like the
// CPU reference, without atomics (each block owns its outputs; splits of `mid` write
// separate partials that a second launch adds).
#pragma once
#include "common.h"

// `load(e, i)` returns element e of the flat input, whose column inside `inner` is i.
// Block b.x owns output columns q = b.x * cols + c of the flattened [outer, inner];
// thread t adds rows m = t / cols, + blockDim / cols, ... of column t % cols. Rows are
// combined by warp shuffles (lanes cols, 2 cols, ... apart share a column), then across
// warps through shared memory.
template <class Load, class Out>
__device__ __forceinline__ void vx_reduce_axis1(const ReduceParams& p, Load load, Out* out) {
    const unsigned tid = threadIdx.x;
    const unsigned cols = p.cols;
    const unsigned rows = unsigned(VX_REDUCE_THREADS) / cols;
    const unsigned long long q = static_cast<unsigned long long>(blockIdx.x) * cols + tid % cols;
    const bool active = q < p.outer * p.inner;
    // A 64-bit division per thread is most of the cost of a short reduction over a long
    // row, and a single outer slice (e.g. the sum of a split convolution's partials) needs
    // none.
    const unsigned long long o = active && p.outer > 1 ? q / p.inner : 0;
    const unsigned long long i = active ? q - o * p.inner : 0;
    const unsigned long long m0 = static_cast<unsigned long long>(blockIdx.y) * p.mid_per_split;
    const unsigned long long m1 = min(p.mid, m0 + p.mid_per_split);

    double acc = 0.0;
    if (active) {
        const unsigned long long base = o * p.mid * p.inner + i;
        for (unsigned long long m = m0 + tid / cols; m < m1; m += rows)
            acc += static_cast<double>(load(base + m * p.inner, i));
    }
    for (unsigned offset = warpSize / 2; offset >= cols; offset /= 2)
        acc += __shfl_xor_sync(0xffffffffu, acc, offset);

    VX_SHARED(double, warp_sums, [VX_REDUCE_THREADS / 32][32]);
    const unsigned lane = tid % warpSize;
    if (lane < cols) warp_sums[tid / warpSize][lane] = acc;
    __syncthreads();
    if (tid < cols && active) {
        double s = 0.0;
        for (int w = 0; w < VX_REDUCE_THREADS / warpSize; ++w) s += warp_sums[w][tid];
        out[(o * p.splits + blockIdx.y) * p.inner + i] = static_cast<Out>(s);
    }
}
