// Element-wise unary ops, forward and backward, with the semantics of UnaryOp::apply and
// UnaryOp::derivative in src/tensor_ops/unary (the CPU reference), in f32.
#include "common.h"

// Logistic function without overflow: exp only ever sees a non-positive argument.
__device__ __forceinline__ float vx_sigmoid(float x) {
    if (x >= 0.0f) return 1.0f / (1.0f + expf(-x));
    float e = expf(x);
    return e / (1.0f + e);
}

__device__ __forceinline__ float vx_unary_apply(int op, float arg, float x) {
    switch (op) {
        case UNARY_RELU: return fmaxf(x, 0.0f);
        case UNARY_LEAKY_RELU: return x > 0.0f ? x : x * arg;
        case UNARY_ELU: return x > 0.0f ? x : arg * (expf(x) - 1.0f);
        case UNARY_SIGMOID: return vx_sigmoid(x);
        case UNARY_TANH: return tanhf(x);
        case UNARY_EXP: return expf(x);
        case UNARY_LOG: return logf(x);
        case UNARY_NEG: return -x;
        case UNARY_ABS: return fabsf(x);
        case UNARY_SQUARE: return x * x;
        case UNARY_SQRT: return sqrtf(x);
        case UNARY_SCALE: return x * arg;
        default: return x + arg;  // UNARY_ADD_SCALAR
    }
}

// f'(x) given x and y = f(x).
__device__ __forceinline__ float vx_unary_derivative(int op, float arg, float x, float y) {
    switch (op) {
        case UNARY_RELU: return x > 0.0f ? 1.0f : 0.0f;
        case UNARY_LEAKY_RELU: return x > 0.0f ? 1.0f : arg;
        case UNARY_ELU: return x > 0.0f ? 1.0f : y + arg;
        case UNARY_SIGMOID: return y * (1.0f - y);
        case UNARY_TANH: return 1.0f - y * y;
        case UNARY_EXP: return y;
        case UNARY_LOG: return 1.0f / x;
        case UNARY_NEG: return -1.0f;
        case UNARY_ABS: return x > 0.0f ? 1.0f : (x < 0.0f ? -1.0f : 0.0f);
        case UNARY_SQUARE: return x + x;
        case UNARY_SQRT: return 0.5f / y;
        case UNARY_SCALE: return arg;
        default: return 1.0f;  // UNARY_ADD_SCALAR
    }
}

extern "C" __global__ void __launch_bounds__(256)
    unary_forward(const UnaryParams p, const float* __restrict__ x, float* __restrict__ y) {
    for (unsigned long long i = vx_thread_index(); i < p.n; i += vx_thread_stride())
        y[i] = vx_unary_apply(p.op, p.arg, x[i]);
}
VX_EMU_ENTRY(unary_forward, (const UnaryParams p, const float* x, float* y), (p, x, y))

extern "C" __global__ void __launch_bounds__(256)
    unary_backward(const UnaryParams p, const float* __restrict__ x, const float* __restrict__ y,
                   const float* __restrict__ dy, float* __restrict__ dx) {
    for (unsigned long long i = vx_thread_index(); i < p.n; i += vx_thread_stride())
        dx[i] = dy[i] * vx_unary_derivative(p.op, p.arg, x[i], y[i]);
}
VX_EMU_ENTRY(unary_backward,
             (const UnaryParams p, const float* x, const float* y, const float* dy, float* dx),
             (p, x, y, dy, dx))
