// Sums over the middle axis of [outer, mid, inner] and their backward (a broadcast), as
// ReduceKernel in src/tensor_ops/reduce. Where the outputs alone fill the device or the
// middle axis is short (the partials of a split convolution), sum_axis1_columns: one thread
// per output. Otherwise the block reduction: one launch when the plan has a single split,
// else f64 partials per split, then sum_axis1_finish adds them.
#include "reduce.h"

template <class T>
struct VxLoadPlain {
    const T* x;
    __device__ __forceinline__ T operator()(unsigned long long e, unsigned long long) const {
        return x[e];
    }
};

extern "C" __global__ void __launch_bounds__(VX_REDUCE_THREADS)
    sum_axis1(const ReduceParams p, const float* __restrict__ x, float* __restrict__ out) {
    vx_reduce_axis1(p, VxLoadPlain<float>{x}, out);
}
VX_EMU_ENTRY(sum_axis1, (const ReduceParams p, const float* x, float* out), (p, x, out))

extern "C" __global__ void __launch_bounds__(VX_REDUCE_THREADS)
    sum_axis1_partial(const ReduceParams p, const float* __restrict__ x,
                      double* __restrict__ partial) {
    vx_reduce_axis1(p, VxLoadPlain<float>{x}, partial);
}
VX_EMU_ENTRY(sum_axis1_partial, (const ReduceParams p, const float* x, double* partial),
             (p, x, partial))

// One thread per output (grid-stride), its column's rows added in order in f64: loads
// coalesce across the threads, and no block waits at a barrier. The block reduction would
// leave most of its threads idle on a short column and run a block per 32 outputs.
extern "C" __global__ void __launch_bounds__(256)
    sum_axis1_columns(const ReduceParams p, const float* __restrict__ x, float* __restrict__ out) {
    const unsigned long long n = p.outer * p.inner;
    for (unsigned long long q = vx_thread_index(); q < n; q += vx_thread_stride()) {
        const unsigned long long o = p.outer > 1 ? q / p.inner : 0;
        const float* column = x + o * p.mid * p.inner + (q - o * p.inner);
        double acc = 0.0;
        for (unsigned long long m = 0; m < p.mid; ++m) acc += column[m * p.inner];
        out[q] = static_cast<float>(acc);
    }
}
VX_EMU_ENTRY(sum_axis1_columns, (const ReduceParams p, const float* x, float* out), (p, x, out))

// The second pass: `p` views the partials as [outer, splits, inner] with one split.
extern "C" __global__ void __launch_bounds__(VX_REDUCE_THREADS)
    sum_axis1_finish(const ReduceParams p, const double* __restrict__ partial,
                     float* __restrict__ out) {
    vx_reduce_axis1(p, VxLoadPlain<double>{partial}, out);
}
VX_EMU_ENTRY(sum_axis1_finish, (const ReduceParams p, const double* partial, float* out),
             (p, partial, out))

extern "C" __global__ void __launch_bounds__(256)
    broadcast_axis1(const BroadcastParams p, const float* __restrict__ x, float* __restrict__ out) {
    const unsigned long long n = p.outer * p.mid * p.inner;
    const unsigned long long slab = p.mid * p.inner;
    for (unsigned long long e = vx_thread_index(); e < n; e += vx_thread_stride()) {
        const unsigned long long o = e / slab;
        out[e] = x[o * p.inner + e % p.inner];
    }
}
VX_EMU_ENTRY(broadcast_axis1, (const BroadcastParams p, const float* x, float* out), (p, x, out))
