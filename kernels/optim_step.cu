// Multi-tensor optimiser kernels, as OptimStepKernel in src/tensor_ops/optim_step: one
// launch updates (or scales, or sums the squares of) every tensor of a table, a block per
// fixed-size chunk of one tensor. The update arithmetic is in f64 like the CPU reference,
// each stored value rounded to f32 once, and every product that feeds a sum goes through
// __dmul_rn so that nvcc cannot fuse it into a multiply-add: the device then rounds each
// operation as the CPU does and matches it bit for bit.
#include "block_sum.h"

static_assert(VX_OPTIM_THREADS == VX_SUM_THREADS, "the sum-of-squares blocks use vx_block_sum");

// The entry whose chunks hold chunk `c`: the last one starting at or before it (a binary
// search over the table, at most ~7 steps for a network's ~100 tensors, every thread of
// the block reading the same entries).
__device__ __forceinline__ const OptimTensor& vx_chunk_tensor(const OptimTensor* table,
                                                              unsigned tensors,
                                                              unsigned long long c) {
    unsigned lo = 0, hi = tensors - 1;
    while (lo < hi) {
        const unsigned mid = (lo + hi + 1) / 2;
        if (table[mid].first_chunk <= c) {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    return table[lo];
}

// This block's elements of tensor `t`: [begin, end).
struct VxChunk {
    unsigned long long begin, end;
};

__device__ __forceinline__ VxChunk vx_block_chunk(const OptimTableParams& p, const OptimTensor& t) {
    const unsigned long long begin = (blockIdx.x - t.first_chunk) * p.chunk;
    const unsigned long long end = begin + p.chunk < t.n ? begin + p.chunk : t.n;
    return VxChunk{begin, end};
}

// SGD, PyTorch's form with dampening 0: g = grad + wd p; with a momentum buffer
// buf = momentum buf + g and the direction g + momentum buf (Nesterov) or buf, else g;
// p -= lr direction. Entries without a buffer (state0 == 0) take the plain step.
extern "C" __global__ void __launch_bounds__(VX_OPTIM_THREADS)
    sgd_step_multi(const SgdKernelParams p, const OptimTensor* __restrict__ table) {
    const OptimTensor& t = vx_chunk_tensor(table, p.table.tensors, blockIdx.x);
    const VxChunk c = vx_block_chunk(p.table, t);
    float* param = reinterpret_cast<float*>(t.param);
    const float* grad = reinterpret_cast<const float*>(t.grad);
    float* buffer = reinterpret_cast<float*>(t.state0);
    const double wd = t.decay ? p.weight_decay : 0.0;
    for (unsigned long long i = c.begin + threadIdx.x; i < c.end; i += blockDim.x) {
        const double pv = static_cast<double>(param[i]);
        const double g = static_cast<double>(grad[i]) + __dmul_rn(wd, pv);
        double dir = g;
        if (buffer != nullptr) {
            const double bv = __dmul_rn(p.momentum, static_cast<double>(buffer[i])) + g;
            buffer[i] = static_cast<float>(bv);
            dir = p.nesterov ? g + __dmul_rn(p.momentum, bv) : bv;
        }
        param[i] = static_cast<float>(pv - __dmul_rn(p.lr, dir));
    }
}
VX_EMU_ENTRY(sgd_step_multi, (const SgdKernelParams p, const OptimTensor* table), (p, table))

// Adam / AdamW / LazyAdam: g = grad + l2 p, m = b1 m + (1 - b1) g, v = b2 v + (1 - b2) g^2,
// p = p (1 - lr decoupled_decay) - lr (m / bc1) / (sqrt(v / bc2) + eps); with `lazy`,
// entries whose gradient is exactly zero keep their parameter and moments.
extern "C" __global__ void __launch_bounds__(VX_OPTIM_THREADS)
    adam_step_multi(const AdamKernelParams p, const OptimTensor* __restrict__ table) {
    const OptimTensor& t = vx_chunk_tensor(table, p.table.tensors, blockIdx.x);
    const VxChunk c = vx_block_chunk(p.table, t);
    float* param = reinterpret_cast<float*>(t.param);
    const float* grad = reinterpret_cast<const float*>(t.grad);
    float* m = reinterpret_cast<float*>(t.state0);
    float* v = reinterpret_cast<float*>(t.state1);
    const double l2 = t.decay ? p.l2 : 0.0;
    const double decay = 1.0 - __dmul_rn(p.lr, t.decay ? p.decoupled_decay : 0.0);
    for (unsigned long long i = c.begin + threadIdx.x; i < c.end; i += blockDim.x) {
        const float gf = grad[i];
        if (p.lazy && gf == 0.0f) continue;
        const double pv = static_cast<double>(param[i]);
        const double g = static_cast<double>(gf) + __dmul_rn(l2, pv);
        const double mv = __dmul_rn(p.beta1, static_cast<double>(m[i])) + __dmul_rn(1.0 - p.beta1, g);
        const double vv = __dmul_rn(p.beta2, static_cast<double>(v[i])) +
                          __dmul_rn(__dmul_rn(1.0 - p.beta2, g), g);
        m[i] = static_cast<float>(mv);
        v[i] = static_cast<float>(vv);
        const double step = (mv / p.bias_correction1) / (sqrt(vv / p.bias_correction2) + p.eps);
        param[i] = static_cast<float>(__dmul_rn(pv, decay) - __dmul_rn(p.lr, step));
    }
}
VX_EMU_ENTRY(adam_step_multi, (const AdamKernelParams p, const OptimTensor* table), (p, table))

// x *= factor in f32, in place (UnaryOp::Scale's arithmetic): gradient clipping.
extern "C" __global__ void __launch_bounds__(VX_OPTIM_THREADS)
    scale_multi(const ScaleKernelParams p, const OptimTensor* __restrict__ table) {
    const OptimTensor& t = vx_chunk_tensor(table, p.table.tensors, blockIdx.x);
    const VxChunk c = vx_block_chunk(p.table, t);
    float* x = reinterpret_cast<float*>(t.param);
    for (unsigned long long i = c.begin + threadIdx.x; i < c.end; i += blockDim.x) x[i] *= p.factor;
}
VX_EMU_ENTRY(scale_multi, (const ScaleKernelParams p, const OptimTensor* table), (p, table))

// The sum of squares of one chunk, in f64, into partial[chunk]. A square of an f32 is exact
// in f64, so whether the add is fused with it or not, the bits are the same; the order of
// the adds depends only on the chunk size, not on the device.
extern "C" __global__ void __launch_bounds__(VX_OPTIM_THREADS)
    sum_squares_partial(const OptimTableParams p, const OptimTensor* __restrict__ table,
                        double* __restrict__ partial) {
    const OptimTensor& t = vx_chunk_tensor(table, p.tensors, blockIdx.x);
    const VxChunk c = vx_block_chunk(p, t);
    const float* x = reinterpret_cast<const float*>(t.param);
    double s[1] = {0.0};
    for (unsigned long long i = c.begin + threadIdx.x; i < c.end; i += blockDim.x) {
        const double v = static_cast<double>(x[i]);
        s[0] += v * v;
    }
    vx_block_sum(s);
    if (threadIdx.x == 0) partial[blockIdx.x] = s[0];
}
VX_EMU_ENTRY(sum_squares_partial,
             (const OptimTableParams p, const OptimTensor* table, double* partial),
             (p, table, partial))

// One block: the chunk partials added in a fixed order, into total[0].
extern "C" __global__ void __launch_bounds__(VX_OPTIM_THREADS)
    sum_squares_finish(const OptimTableParams p, const double* __restrict__ partial,
                       double* __restrict__ total) {
    double s[1];
    vx_sum_partials(partial, p.chunks, s);
    if (threadIdx.x == 0) total[0] = s[0];
}
VX_EMU_ENTRY(sum_squares_finish,
             (const OptimTableParams p, const double* partial, double* total),
             (p, partial, total))
