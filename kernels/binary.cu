// Element-wise binary ops with suffix broadcast (b repeats over a), forward and backward,
// with the semantics of BinaryOp::apply and BinaryOp::partials in src/tensor_ops/binary.
// The gradient of a broadcast b is a column sum, done by the block reduction of reduce.h
// into f64 partials that sum_axis1_finish (reduce.cu) adds.
#include "reduce.h"

__device__ __forceinline__ float vx_binary_apply(int op, float a, float b) {
    switch (op) {
        case BINARY_ADD: return a + b;
        case BINARY_SUB: return a - b;
        case BINARY_MUL: return a * b;
        default: return a / b;  // BINARY_DIV
    }
}

__device__ __forceinline__ float vx_binary_partial_a(int op, float, float b) {
    switch (op) {
        case BINARY_ADD:
        case BINARY_SUB: return 1.0f;
        case BINARY_MUL: return b;
        default: return 1.0f / b;
    }
}

__device__ __forceinline__ float vx_binary_partial_b(int op, float a, float b) {
    switch (op) {
        case BINARY_ADD: return 1.0f;
        case BINARY_SUB: return -1.0f;
        case BINARY_MUL: return a;
        default: return -a / (b * b);
    }
}

// b's index for element i of a; the modulo is skipped when nothing is broadcast.
__device__ __forceinline__ unsigned long long vx_b_index(const BinaryParams& p,
                                                         unsigned long long i) {
    return p.nb == p.n ? i : i % p.nb;
}

extern "C" __global__ void __launch_bounds__(256)
    binary_forward(const BinaryParams p, const float* __restrict__ a, const float* __restrict__ b,
                   float* __restrict__ out) {
    for (unsigned long long i = vx_thread_index(); i < p.n; i += vx_thread_stride())
        out[i] = vx_binary_apply(p.op, a[i], b[vx_b_index(p, i)]);
}
VX_EMU_ENTRY(binary_forward, (const BinaryParams p, const float* a, const float* b, float* out),
             (p, a, b, out))

extern "C" __global__ void __launch_bounds__(256)
    binary_backward_a(const BinaryParams p, const float* __restrict__ a,
                      const float* __restrict__ b, const float* __restrict__ dy,
                      float* __restrict__ da) {
    for (unsigned long long i = vx_thread_index(); i < p.n; i += vx_thread_stride())
        da[i] = dy[i] * vx_binary_partial_a(p.op, a[i], b[vx_b_index(p, i)]);
}
VX_EMU_ENTRY(binary_backward_a,
             (const BinaryParams p, const float* a, const float* b, const float* dy, float* da),
             (p, a, b, dy, da))

// db when b has as many elements as a (no broadcast).
extern "C" __global__ void __launch_bounds__(256)
    binary_backward_b(const BinaryParams p, const float* __restrict__ a,
                      const float* __restrict__ b, const float* __restrict__ dy,
                      float* __restrict__ db) {
    for (unsigned long long i = vx_thread_index(); i < p.n; i += vx_thread_stride())
        db[i] = dy[i] * vx_binary_partial_b(p.op, a[i], b[i]);
}
VX_EMU_ENTRY(binary_backward_b,
             (const BinaryParams p, const float* a, const float* b, const float* dy, float* db),
             (p, a, b, dy, db))

struct VxLoadGradB {
    BinaryParams p;
    const float* a;
    const float* b;
    const float* dy;
    __device__ __forceinline__ float operator()(unsigned long long e, unsigned long long i) const {
        return dy[e] * vx_binary_partial_b(p.op, a[e], b[i]);
    }
};

// db for a broadcast b: partials of the column sums of dy * d(a op b)/db over the
// [1, n / nb, nb] view `r`.
extern "C" __global__ void __launch_bounds__(VX_REDUCE_THREADS)
    binary_backward_b_partial(const ReduceParams r, const BinaryParams p,
                              const float* __restrict__ a, const float* __restrict__ b,
                              const float* __restrict__ dy, double* __restrict__ partial) {
    vx_reduce_axis1(r, VxLoadGradB{p, a, b, dy}, partial);
}
VX_EMU_ENTRY(binary_backward_b_partial,
             (const ReduceParams r, const BinaryParams p, const float* a, const float* b,
              const float* dy, double* partial),
             (r, p, a, b, dy, partial))
