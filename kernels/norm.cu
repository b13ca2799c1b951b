// Batch and group (instance, layer) normalisation of NDHWC activations, as NormKernel in
// src/tensor_ops/norm (its cpu.rs is the reference). See params_norm.h for the
// [outer, mid, c] view and the statistic of each element.
//
// Statistics: a two-level reduction in f64. The first pass adds, per column (o, ch) and
// split of the rows, the shifted sums of (x - shift) and (x - shift)^2, the shift being the
// first element of the column's statistic (which keeps E[d^2] - E[d]^2 accurate when the
// mean is large against the spread); the second pass adds a statistic's columns and splits.
// Forward: per (o, ch) coefficients a, b in f64 (rounded once, as the CPU does), then one
// pass y = act(x a + b), which may also write y packed for a tensor-core convolution. Both
// round as the CPU backend does, so, given the same statistics, y and the backward's slopes
// match it bit for bit.
// Backward, three launches: a reduction of dz and dz (x - mean) (dz being the gradient at
// the pre-activation, whose sign is that of z = x a + b, recomputed bit for bit as the
// forward computed it from the same coefficients, so y need not be kept); one kernel for the
// dx coefficients, the forward's a, b and dgamma, dbeta; then one pass
// dx = k1 dz + k2 (x - mean) + k3. Few launches matter at the deep layers' small sizes,
// where each launch costs more than its memory traffic.
#include "common.h"
#include "conv3d_pipe.h"

typedef unsigned long long vx_u64;

// Two sums per column q = (o, i) of the [outer, mid, inner] view over the rows of split
// blockIdx.y, with the block layout of vx_reduce_axis1 (reduce.h). `load.ref(o, i)` is a
// per-column constant (of the load's choosing), `load.add(e, ref, a, b)` adds element e's
// terms. Writes plane 0 and
// plane 1 of `partial`, each [outer, splits, inner].
template <class Load>
__device__ __forceinline__ void vx_norm_reduce2(const ReduceParams& r, const Load& load,
                                                double* partial) {
    const unsigned tid = threadIdx.x;
    const unsigned cols = r.cols;
    const unsigned rows = unsigned(VX_REDUCE_THREADS) / cols;
    const vx_u64 q = static_cast<vx_u64>(blockIdx.x) * cols + tid % cols;
    const bool active = q < r.outer * r.inner;
    const vx_u64 o = active ? q / r.inner : 0;
    const vx_u64 i = active ? q - o * r.inner : 0;
    const vx_u64 m0 = static_cast<vx_u64>(blockIdx.y) * r.mid_per_split;
    const vx_u64 m1 = min(r.mid, m0 + r.mid_per_split);

    double a = 0.0, b = 0.0;
    if (active) {
        const auto ref = load.ref(o, i);
        const vx_u64 base = o * r.mid * r.inner + i;
        for (vx_u64 m = m0 + tid / cols; m < m1; m += rows) load.add(base + m * r.inner, ref, a, b);
    }
    for (unsigned offset = warpSize / 2; offset >= cols; offset /= 2) {
        a += __shfl_xor_sync(0xffffffffu, a, offset);
        b += __shfl_xor_sync(0xffffffffu, b, offset);
    }
    VX_SHARED(double, warp_sums, [2][VX_REDUCE_THREADS / 32][32]);
    const unsigned lane = tid % warpSize;
    if (lane < cols) {
        warp_sums[0][tid / warpSize][lane] = a;
        warp_sums[1][tid / warpSize][lane] = b;
    }
    __syncthreads();
    if (tid < cols && active) {
        double sa = 0.0, sb = 0.0;
        for (int w = 0; w < VX_REDUCE_THREADS / warpSize; ++w) {
            sa += warp_sums[0][w][tid];
            sb += warp_sums[1][w][tid];
        }
        const vx_u64 at = (o * r.splits + blockIdx.y) * r.inner + i;
        partial[at] = sa;
        partial[r.outer * r.splits * r.inner + at] = sb;
    }
}

// The statistic of channel ch in outer slice o.
__device__ __forceinline__ vx_u64 vx_norm_stat(const NormKernelParams& p, vx_u64 o, vx_u64 ch) {
    return o * (p.c / p.cpg) + ch / p.cpg;
}

// Both planes of column (o, ch) summed over the splits.
__device__ __forceinline__ void vx_norm_column_totals(const ReduceParams& r, const double* partial,
                                                      vx_u64 o, vx_u64 ch, double& a, double& b) {
    const vx_u64 plane = r.outer * r.splits * r.inner;
    a = 0.0;
    b = 0.0;
    for (unsigned s = 0; s < r.splits; ++s) {
        const vx_u64 at = (o * r.splits + s) * r.inner + ch;
        a += partial[at];
        b += partial[plane + at];
    }
}

struct VxNormStatsLoad {
    NormKernelParams p;
    const float* x;
    __device__ __forceinline__ double ref(vx_u64 o, vx_u64 i) const {
        return x[o * p.mid * p.c + (i / p.cpg) * p.cpg];
    }
    __device__ __forceinline__ void add(vx_u64 e, double ref, double& a, double& b) const {
        const double d = static_cast<double>(x[e]) - ref;
        a += d;
        b += d * d;
    }
};

extern "C" __global__ void __launch_bounds__(VX_REDUCE_THREADS)
    norm_stats_partial(const ReduceParams r, const NormKernelParams p, const float* __restrict__ x,
                       double* __restrict__ partial) {
    vx_norm_reduce2(r, VxNormStatsLoad{p, x}, partial);
}
VX_EMU_ENTRY(norm_stats_partial,
             (const ReduceParams r, const NormKernelParams p, const float* x, double* partial),
             (r, p, x, partial))

// One thread per statistic: mean and biased variance from the shifted sums.
extern "C" __global__ void __launch_bounds__(256)
    norm_stats_finish(const ReduceParams r, const NormKernelParams p,
                      const double* __restrict__ partial, const float* __restrict__ x,
                      float* __restrict__ mean, float* __restrict__ var) {
    const vx_u64 groups = p.c / p.cpg;
    const double count = static_cast<double>(p.mid) * static_cast<double>(p.cpg);
    for (vx_u64 s = vx_thread_index(); s < p.outer * groups; s += vx_thread_stride()) {
        const vx_u64 o = s / groups, first = (s - o * groups) * p.cpg;
        double sum = 0.0, squares = 0.0;
        for (vx_u64 ch = first; ch < first + p.cpg; ++ch) {
            double a, b;
            vx_norm_column_totals(r, partial, o, ch, a, b);
            sum += a;
            squares += b;
        }
        const double shift = x[o * p.mid * p.c + first];
        const double d = sum / count;
        mean[s] = static_cast<float>(shift + d);
        var[s] = static_cast<float>(fmax(squares / count - d * d, 0.0));
    }
}
VX_EMU_ENTRY(norm_stats_finish,
             (const ReduceParams r, const NormKernelParams p, const double* partial,
              const float* x, float* mean, float* var),
             (r, p, partial, x, mean, var))

// 1 / sqrt(var + eps) of statistic s, in f64 as the CPU computes it.
__device__ __forceinline__ double vx_norm_rstd(const NormKernelParams& p, const float* var,
                                               vx_u64 s) {
    return 1.0 / sqrt(static_cast<double>(var[s]) + p.eps);
}

// The forward's coefficients of channel ch, whose statistic is s with `rstd`:
// a = gamma * rstd and b = beta - mean * a, so that the forward is y = act(x a + b). Every
// kernel that needs them computes them here, so the forward and the backward's recomputed
// pre-activation agree bit for bit.
struct VxNormAffine {
    float a;
    float b;
};
__device__ __forceinline__ VxNormAffine vx_norm_forward_coefs(const NormKernelParams& p,
                                                              const float* mean, double rstd,
                                                              const float* gamma,
                                                              const float* beta, vx_u64 s,
                                                              vx_u64 ch) {
    const double scale = (p.has_gamma ? static_cast<double>(gamma[ch]) : 1.0) * rstd;
    const double shift = p.has_beta ? static_cast<double>(beta[ch]) : 0.0;
    const double centre = __dmul_rn(static_cast<double>(mean[s]), scale);
    return {static_cast<float>(scale), static_cast<float>(shift - centre)};
}

// One thread per (outer slice, channel) k: coef[k] = a and coef[outer * c + k] = b
// (vx_norm_forward_coefs).
extern "C" __global__ void __launch_bounds__(256)
    norm_affine(const NormKernelParams p, const float* __restrict__ mean,
                const float* __restrict__ var, const float* __restrict__ gamma,
                const float* __restrict__ beta, float* __restrict__ coef) {
    const vx_u64 count = p.outer * p.c;
    for (vx_u64 k = vx_thread_index(); k < count; k += vx_thread_stride()) {
        const vx_u64 ch = k % p.c, s = vx_norm_stat(p, k / p.c, ch);
        const VxNormAffine f =
            vx_norm_forward_coefs(p, mean, vx_norm_rstd(p, var, s), gamma, beta, s, ch);
        coef[k] = f.a;
        coef[count + k] = f.b;
    }
}
VX_EMU_ENTRY(norm_affine,
             (const NormKernelParams p, const float* mean, const float* var, const float* gamma,
              const float* beta, float* coef),
             (p, mean, var, gamma, beta, coef))

// The (outer slice, channel) coefficient index of element i. Index type I is 32-bit when
// the element count allows.
template <class I>
__device__ __forceinline__ I vx_norm_coef_index(const NormKernelParams& p, I i) {
    const I c = static_cast<I>(p.c);
    const I o = p.outer == 1 ? I(0) : i / static_cast<I>(p.mid * p.c);
    return o * c + i % c;
}

// The pre-activation z = x a + b, rounded after the product and after the sum as the CPU
// backend rounds it (__fmul_rn is never fused), so that the forward, the backward (which
// recomputes z for the activation's slope) and the CPU choose the same slopes.
__device__ __forceinline__ float vx_norm_z(float x, float a, float b) {
    return __fmul_rn(x, a) + b;
}

// y = act(x a + b) of one element whose coefficients a, b are at k and planes + k.
template <class I>
__device__ __forceinline__ float vx_norm_y(const NormKernelParams& p, const float* coef,
                                           I planes, I k, float x) {
    const float z = vx_norm_z(x, coef[k], coef[planes + k]);
    return z > 0.0f ? z : z * p.neg_slope;
}

template <class I>
__device__ __forceinline__ void vx_norm_apply(const NormKernelParams& p, const float* x,
                                              const float* coef, float* y) {
    const I n = static_cast<I>(p.outer * p.mid * p.c);
    const I planes = static_cast<I>(p.outer * p.c);
    for (I i = static_cast<I>(vx_thread_index()); i < n; i += static_cast<I>(vx_thread_stride()))
        y[i] = vx_norm_y(p, coef, planes, vx_norm_coef_index(p, i), x[i]);
}

// Largest element count served with 32-bit indices (the grid stride must not wrap).
constexpr vx_u64 VX_NORM_MAX_32 = 0x7fffffffull;

// y = act(x a + b): normalisation, affine and activation in one pass.
extern "C" __global__ void __launch_bounds__(256)
    norm_apply(const NormKernelParams p, const float* __restrict__ x,
               const float* __restrict__ coef, float* __restrict__ y) {
    if (p.outer * p.mid * p.c <= VX_NORM_MAX_32)
        vx_norm_apply<unsigned>(p, x, coef, y);
    else
        vx_norm_apply<vx_u64>(p, x, coef, y);
}
VX_EMU_ENTRY(norm_apply, (const NormKernelParams p, const float* x, const float* coef, float* y),
             (p, x, coef, y))

// Walks the 16-byte chunks of an activation of c channels, c a whole number of chunks,
// that a norm kernel writes: `four(e, k, v)` gives elements e .. e + 3 (coefficient indices
// k .. k + 3); they are stored to `out` and, converted as the tensor-core convolutions pack
// an operand (conv3d_pack_rows_bf16/_tf32 on [voxels][1][c] write the same bits), to
// `packed`, so a convolution reading the activation finds its pack made. One thread per
// chunk: PER_CHUNK channels of one voxel.
template <class P, class I, class Four>
__device__ __forceinline__ void vx_norm_write_packed(const NormKernelParams& p, float* out,
                                                     VxU4* packed, Four four) {
    const I chunks = static_cast<I>(p.outer * p.mid * p.c) / P::PER_CHUNK;
    for (I i = static_cast<I>(vx_thread_index()); i < chunks;
         i += static_cast<I>(vx_thread_stride())) {
        const I e0 = i * P::PER_CHUNK;
        const I k0 = vx_norm_coef_index(p, e0);
        float v[P::PER_CHUNK];
#pragma unroll
        for (int j = 0; j < P::PER_CHUNK; j += 4) {
            float(&q)[4] = *reinterpret_cast<float(*)[4]>(v + j);
            four(e0 + j, k0 + j, q);
            *reinterpret_cast<VxF4*>(out + e0 + j) = VxF4{q[0], q[1], q[2], q[3]};
        }
        packed[i] = P::chunk(v);
    }
}

// vx_load4 (conv3d_common.h) as an array, for arithmetic indexed by lane.
__device__ __forceinline__ void vx_load4_lanes(const float* at, float (&v)[4]) {
    const VxF4 f = vx_load4(at);
    v[0] = f.x;
    v[1] = f.y;
    v[2] = f.z;
    v[3] = f.w;
}

// norm_apply that also writes y packed (vx_norm_write_packed).
template <class P, class I>
__device__ __forceinline__ void vx_norm_apply_packed(const NormKernelParams& p, const float* x,
                                                     const float* coef, float* y,
                                                     VxU4* packed) {
    const I planes = static_cast<I>(p.outer * p.c);
    vx_norm_write_packed<P, I>(p, y, packed, [&](I e, I k, float(&v)[4]) {
        float xs[4];
        vx_load4_lanes(x + e, xs);
#pragma unroll
        for (int t = 0; t < 4; ++t) v[t] = vx_norm_y(p, coef, planes, k + t, xs[t]);
    });
}

#define VX_NORM_APPLY_PACKED(name, Precision)                                              \
    extern "C" __global__ void __launch_bounds__(256)                                      \
        name(const NormKernelParams p, const float* __restrict__ x,                        \
             const float* __restrict__ coef, float* __restrict__ y,                        \
             VxU4* __restrict__ packed) {                                                  \
        if (p.outer * p.mid * p.c <= VX_NORM_MAX_32)                                       \
            vx_norm_apply_packed<Precision, unsigned>(p, x, coef, y, packed);              \
        else                                                                               \
            vx_norm_apply_packed<Precision, vx_u64>(p, x, coef, y, packed);                \
    }                                                                                      \
    VX_EMU_ENTRY(name,                                                                     \
                 (const NormKernelParams p, const float* x, const float* coef, float* y,   \
                  VxU4* packed),                                                           \
                 (p, x, coef, y, packed))

VX_NORM_APPLY_PACKED(norm_apply_bf16_pack, VxBf16)
VX_NORM_APPLY_PACKED(norm_apply_tf32_pack, VxTf32)

// The gradient at the pre-activation z: the slope is 1 where z > 0, as the forward chose
// (neg_slope >= 0).
__device__ __forceinline__ float vx_norm_dz(const NormKernelParams& p, float z, float dy) {
    return z > 0.0f ? dy : dy * p.neg_slope;
}

// A column's mean and the forward's coefficients a, b.
struct VxNormBackwardColumn {
    double mean;
    VxNormAffine forward;
};

// Each column computes the forward's coefficients once (vx_norm_forward_coefs); an absent
// gamma or beta is not read.
struct VxNormBackwardLoad {
    NormKernelParams p;
    const float* x;
    const float* dy;
    const float* mean;
    const float* var;
    const float* gamma;
    const float* beta;
    __device__ __forceinline__ VxNormBackwardColumn ref(vx_u64 o, vx_u64 i) const {
        const vx_u64 s = vx_norm_stat(p, o, i);
        return {mean[s], vx_norm_forward_coefs(p, mean, vx_norm_rstd(p, var, s), gamma, beta, s, i)};
    }
    __device__ __forceinline__ void add(vx_u64 e, const VxNormBackwardColumn& col, double& a,
                                        double& b) const {
        const float z = vx_norm_z(x[e], col.forward.a, col.forward.b);
        const double g = vx_norm_dz(p, z, dy[e]);
        a += g;
        b += g * (static_cast<double>(x[e]) - col.mean);
    }
};

// Backward pass 1: per column, sum dz (plane 0) and sum dz (x - mean) (plane 1).
extern "C" __global__ void __launch_bounds__(VX_REDUCE_THREADS)
    norm_backward_partial(const ReduceParams r, const NormKernelParams p,
                          const float* __restrict__ x, const float* __restrict__ dy,
                          const float* __restrict__ mean, const float* __restrict__ var,
                          const float* __restrict__ gamma, const float* __restrict__ beta,
                          double* __restrict__ partial) {
    vx_norm_reduce2(r, VxNormBackwardLoad{p, x, dy, mean, var, gamma, beta}, partial);
}
VX_EMU_ENTRY(norm_backward_partial,
             (const ReduceParams r, const NormKernelParams p, const float* x, const float* dy,
              const float* mean, const float* var, const float* gamma, const float* beta,
              double* partial),
             (r, p, x, dy, mean, var, gamma, beta, partial))

// The dx coefficients of statistic s's pairs (see norm_backward_finish).
__device__ __forceinline__ void vx_norm_dx_coefs(const ReduceParams& r, const NormKernelParams& p,
                                                 const double* partial, const float* mean,
                                                 const float* var, const float* gamma,
                                                 const float* beta, vx_u64 s, float* coef) {
    const vx_u64 groups = p.c / p.cpg, planes = p.outer * p.c;
    const double count = static_cast<double>(p.mid) * static_cast<double>(p.cpg);
    const vx_u64 o = s / groups, first = (s - o * groups) * p.cpg;
    const double rstd = vx_norm_rstd(p, var, s);
    double sum_dxhat = 0.0, sum_dxhat_xhat = 0.0;
    if (!p.fixed_stats) {
        for (vx_u64 ch = first; ch < first + p.cpg; ++ch) {
            const double g = p.has_gamma ? static_cast<double>(gamma[ch]) : 1.0;
            double sdz, sdzx;
            vx_norm_column_totals(r, partial, o, ch, sdz, sdzx);
            sum_dxhat += g * sdz;
            sum_dxhat_xhat += g * (sdzx * rstd);
        }
    }
    for (vx_u64 ch = first; ch < first + p.cpg; ++ch) {
        const vx_u64 k = o * p.c + ch;
        const double g = p.has_gamma ? static_cast<double>(gamma[ch]) : 1.0;
        coef[k] = static_cast<float>(rstd * g);
        coef[planes + k] = static_cast<float>(-rstd * rstd * sum_dxhat_xhat / count);
        coef[2 * planes + k] = static_cast<float>(-rstd * sum_dxhat / count);
        coef[3 * planes + k] = mean[s];
        const VxNormAffine f = vx_norm_forward_coefs(p, mean, rstd, gamma, beta, s, ch);
        coef[4 * planes + k] = f.a;
        coef[5 * planes + k] = f.b;
    }
}

// Channel ch's dgamma = sum dz xhat and dbeta = sum dz over every outer slice, as asked.
__device__ __forceinline__ void vx_norm_affine_grads(const ReduceParams& r,
                                                     const NormKernelParams& p,
                                                     const double* partial, const float* var,
                                                     unsigned grads, vx_u64 ch, float* dgamma,
                                                     float* dbeta) {
    const vx_u64 groups = p.c / p.cpg, group = ch / p.cpg;
    double sum_x = 0.0, sum = 0.0;
    for (vx_u64 o = 0; o < p.outer; ++o) {
        double sdz, sdzx;
        vx_norm_column_totals(r, partial, o, ch, sdz, sdzx);
        sum += sdz;
        sum_x += sdzx * vx_norm_rstd(p, var, o * groups + group);
    }
    if (grads & VX_NORM_GRAD_GAMMA) dgamma[ch] = static_cast<float>(sum_x);
    if (grads & VX_NORM_GRAD_BETA) dbeta[ch] = static_cast<float>(sum);
}

// Backward, between the passes; `grads` (VX_NORM_GRAD_*) says what to write. Thread t
// handles statistic t for dx: the coefficients of dx = k1 dz + k2 (x - k4) + k3 and the
// forward's a, b of each of its (outer slice, channel) pairs k, in planes k1, k2, k3, k4, a, b
// of outer * c (with fixed statistics only k1 is non-zero and the partials are not read);
// and channel t for dgamma and dbeta. Unwritten outputs and an absent gamma or beta are not
// touched.
extern "C" __global__ void __launch_bounds__(256)
    norm_backward_finish(const ReduceParams r, const NormKernelParams p, unsigned grads,
                         const double* __restrict__ partial, const float* __restrict__ mean,
                         const float* __restrict__ var, const float* __restrict__ gamma,
                         const float* __restrict__ beta, float* __restrict__ coef,
                         float* __restrict__ dgamma, float* __restrict__ dbeta) {
    const vx_u64 stats = (grads & VX_NORM_GRAD_DX) ? p.outer * (p.c / p.cpg) : 0;
    const vx_u64 channels = (grads & (VX_NORM_GRAD_GAMMA | VX_NORM_GRAD_BETA)) ? p.c : 0;
    for (vx_u64 t = vx_thread_index(); t < max(stats, channels); t += vx_thread_stride()) {
        if (t < stats) vx_norm_dx_coefs(r, p, partial, mean, var, gamma, beta, t, coef);
        if (t < channels) vx_norm_affine_grads(r, p, partial, var, grads, t, dgamma, dbeta);
    }
}
VX_EMU_ENTRY(norm_backward_finish,
             (const ReduceParams r, const NormKernelParams p, unsigned grads,
              const double* partial, const float* mean, const float* var, const float* gamma,
              const float* beta, float* coef, float* dgamma, float* dbeta),
             (r, p, grads, partial, mean, var, gamma, beta, coef, dgamma, dbeta))

// dx = k1 dz + k2 (x - k4) + k3 of one element, coefficient kj at k + (j - 1) planes, the
// forward's a, b (for dz's slope) at k + 4 planes and k + 5 planes (norm_backward_finish).
template <class I>
__device__ __forceinline__ float vx_norm_dx_value(const NormKernelParams& p, const float* coef,
                                                  I planes, I k, float x, float dy) {
    const float g = vx_norm_dz(p, vx_norm_z(x, coef[4 * planes + k], coef[5 * planes + k]), dy);
    return coef[k] * g + coef[planes + k] * (x - coef[3 * planes + k]) + coef[2 * planes + k];
}

template <class I>
__device__ __forceinline__ void vx_norm_dx(const NormKernelParams& p, const float* x,
                                           const float* dy, const float* coef, float* dx) {
    const I n = static_cast<I>(p.outer * p.mid * p.c);
    const I planes = static_cast<I>(p.outer * p.c);
    for (I i = static_cast<I>(vx_thread_index()); i < n; i += static_cast<I>(vx_thread_stride()))
        dx[i] = vx_norm_dx_value(p, coef, planes, vx_norm_coef_index(p, i), x[i], dy[i]);
}

// vx_norm_dx that also writes dx packed (vx_norm_write_packed): dx is the gradient at the
// output of the convolution before the norm, which that convolution's backward passes read
// packed.
template <class P, class I>
__device__ __forceinline__ void vx_norm_dx_packed(const NormKernelParams& p, const float* x,
                                                  const float* dy, const float* coef, float* dx,
                                                  VxU4* packed) {
    const I planes = static_cast<I>(p.outer * p.c);
    vx_norm_write_packed<P, I>(p, dx, packed, [&](I e, I k, float(&v)[4]) {
        float xs[4], ds[4];
        vx_load4_lanes(x + e, xs);
        vx_load4_lanes(dy + e, ds);
#pragma unroll
        for (int t = 0; t < 4; ++t)
            v[t] = vx_norm_dx_value(p, coef, planes, k + t, xs[t], ds[t]);
    });
}

#define VX_NORM_DX_PACKED(name, Precision)                                                 \
    extern "C" __global__ void __launch_bounds__(256)                                      \
        name(const NormKernelParams p, const float* __restrict__ x,                        \
             const float* __restrict__ dy, const float* __restrict__ coef,                 \
             float* __restrict__ dx, VxU4* __restrict__ packed) {                          \
        if (p.outer * p.mid * p.c <= VX_NORM_MAX_32)                                       \
            vx_norm_dx_packed<Precision, unsigned>(p, x, dy, coef, dx, packed);            \
        else                                                                               \
            vx_norm_dx_packed<Precision, vx_u64>(p, x, dy, coef, dx, packed);              \
    }                                                                                      \
    VX_EMU_ENTRY(name,                                                                     \
                 (const NormKernelParams p, const float* x, const float* dy,               \
                  const float* coef, float* dx, VxU4* packed),                             \
                 (p, x, dy, coef, dx, packed))

VX_NORM_DX_PACKED(norm_backward_dx_bf16_pack, VxBf16)
VX_NORM_DX_PACKED(norm_backward_dx_tf32_pack, VxTf32)

// Backward pass 2: dx = k1 dz + k2 (x - k4) + k3.
extern "C" __global__ void __launch_bounds__(256)
    norm_backward_dx(const NormKernelParams p, const float* __restrict__ x,
                     const float* __restrict__ dy, const float* __restrict__ coef,
                     float* __restrict__ dx) {
    if (p.outer * p.mid * p.c <= VX_NORM_MAX_32)
        vx_norm_dx<unsigned>(p, x, dy, coef, dx);
    else
        vx_norm_dx<vx_u64>(p, x, dy, coef, dx);
}
VX_EMU_ENTRY(norm_backward_dx,
             (const NormKernelParams p, const float* x, const float* dy, const float* coef,
              float* dx),
             (p, x, dy, coef, dx))

// moving = momentum * moving + (1 - momentum) * correction * batch, in f64, in place.
extern "C" __global__ void __launch_bounds__(256)
    norm_update_moving(const NormMovingParams p, float* __restrict__ moving,
                       const float* __restrict__ batch) {
    for (vx_u64 i = vx_thread_index(); i < p.n; i += vx_thread_stride())
        moving[i] = static_cast<float>(p.momentum * static_cast<double>(moving[i]) +
                                       (1.0 - p.momentum) * p.correction *
                                           static_cast<double>(batch[i]));
}
VX_EMU_ENTRY(norm_update_moving, (const NormMovingParams p, float* moving, const float* batch),
             (p, moving, batch))
