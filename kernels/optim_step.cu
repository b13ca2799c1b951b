// Fused in-place optimiser updates, as OptimStepKernel in src/tensor_ops/optim_step: one
// pass over the parameter, its gradient and its state, the arithmetic in f64 like the CPU
// reference, each stored value rounded to f32 once.
#include "common.h"

// SGD without a momentum buffer: p -= lr (grad + weight_decay p).
extern "C" __global__ void __launch_bounds__(256)
    sgd_step(const SgdKernelParams p, float* __restrict__ param, const float* __restrict__ grad) {
    for (unsigned long long i = vx_thread_index(); i < p.n; i += vx_thread_stride()) {
        const double pv = static_cast<double>(param[i]);
        param[i] = static_cast<float>(pv - p.lr * (static_cast<double>(grad[i]) + p.weight_decay * pv));
    }
}
VX_EMU_ENTRY(sgd_step, (const SgdKernelParams p, float* param, const float* grad),
             (p, param, grad))

// SGD with a momentum buffer, classical or Nesterov.
extern "C" __global__ void __launch_bounds__(256)
    sgd_momentum_step(const SgdKernelParams p, float* __restrict__ param,
                      float* __restrict__ buffer, const float* __restrict__ grad) {
    for (unsigned long long i = vx_thread_index(); i < p.n; i += vx_thread_stride()) {
        const double pv = static_cast<double>(param[i]);
        const double g = static_cast<double>(grad[i]) + p.weight_decay * pv;
        const double bv = p.momentum * static_cast<double>(buffer[i]) + g;
        buffer[i] = static_cast<float>(bv);
        const double dir = p.nesterov ? g + p.momentum * bv : bv;
        param[i] = static_cast<float>(pv - p.lr * dir);
    }
}
VX_EMU_ENTRY(sgd_momentum_step,
             (const SgdKernelParams p, float* param, float* buffer, const float* grad),
             (p, param, buffer, grad))

extern "C" __global__ void __launch_bounds__(256)
    adam_step(const AdamKernelParams p, float* __restrict__ param, float* __restrict__ m,
              float* __restrict__ v, const float* __restrict__ grad) {
    const double decay = 1.0 - p.lr * p.decoupled_decay;
    for (unsigned long long i = vx_thread_index(); i < p.n; i += vx_thread_stride()) {
        const float gf = grad[i];
        // LazyAdam: entries without gradient keep their parameter and moments.
        if (p.lazy && gf == 0.0f) continue;
        const double pv = static_cast<double>(param[i]);
        const double g = static_cast<double>(gf) + p.l2 * pv;
        const double mv = p.beta1 * static_cast<double>(m[i]) + (1.0 - p.beta1) * g;
        const double vv = p.beta2 * static_cast<double>(v[i]) + (1.0 - p.beta2) * g * g;
        m[i] = static_cast<float>(mv);
        v[i] = static_cast<float>(vv);
        const double step = (mv / p.bias_correction1) / (sqrt(vv / p.bias_correction2) + p.eps);
        param[i] = static_cast<float>(pv * decay - p.lr * step);
    }
}
VX_EMU_ENTRY(adam_step,
             (const AdamKernelParams p, float* param, float* m, float* v, const float* grad),
             (p, param, m, v, grad))
