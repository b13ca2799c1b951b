// 3D convolution in f32 on the CUDA cores, as implicit GEMMs (conv3d_common.h says how each
// pass maps onto one): no im2col buffer, the patch matrix is gathered tile by tile into
// shared memory. One block computes a BM x BN tile of the result with 128 threads, each
// owning a TM x TN register tile; the reduction runs in steps of BK through shared memory.
// Any sizes work: loads outside the problem read zeros and stores outside it are skipped.
//
// Three tile shapes (params_conv.h): wide (64 x 32, K step 16) for most layers, narrow
// (64 x 8) for outputs of at most 8 channels, shallow (64 x 32, K step 4) for reductions of
// at most 4 (tap, channel) pairs, so that small channel counts do not run mostly padding.
#include "conv3d_common.h"

template <int BN_, int BK_, int TM_, int TN_>
struct VxSimtTile {
    static constexpr int BM = VX_CONV_SIMT_BM, BN = BN_, BK = BK_, TM = TM_, TN = TN_;
    static constexpr int THREADS = VX_CONV_THREADS;
    static constexpr int A_LOADS = BM * BK / THREADS;
    static constexpr int B_LOADS = BN * BK / THREADS;
    static_assert((BM / TM) * (BN / TN) == THREADS, "one thread per TM x TN register tile");
    static_assert(A_LOADS * THREADS == BM * BK && B_LOADS * THREADS == BN * BK,
                  "tiles must split evenly over the threads");
    static_assert(THREADS % BK == 0 && THREADS % BM == 0 && THREADS % BN == 0,
                  "loads map threads onto whole tile rows");
};
using VxWide = VxSimtTile<VX_CONV_WIDE_BN, VX_CONV_WIDE_BK, 4, 4>;
using VxNarrow = VxSimtTile<VX_CONV_NARROW_BN, VX_CONV_NARROW_BK, 2, 2>;
using VxShallow = VxSimtTile<VX_CONV_SHALLOW_BN, VX_CONV_SHALLOW_BK, 4, 4>;

// One reduction step of both operands, k-major; rows padded so that stores of one tile
// column spread over banks.
template <class T>
struct alignas(16) VxSimtShared {
    float a[T::BK][T::BM + 4];
    float b[T::BK][T::BN + 4];
};

// acc += A[rows of this thread] x B[cols of this thread], over one BK step.
template <class T>
__device__ __forceinline__ void vx_simt_multiply(const VxSimtShared<T>& s,
                                                 float (&acc)[T::TM][T::TN]) {
    const int tr = threadIdx.x / (T::BN / T::TN);
    const int tc = threadIdx.x % (T::BN / T::TN);
#pragma unroll
    for (int kk = 0; kk < T::BK; ++kk) {
        float a[T::TM], b[T::TN];
#pragma unroll
        for (int i = 0; i < T::TM; ++i) a[i] = s.a[kk][tr * T::TM + i];
#pragma unroll
        for (int j = 0; j < T::TN; ++j) b[j] = s.b[kk][tc * T::TN + j];
#pragma unroll
        for (int i = 0; i < T::TM; ++i)
#pragma unroll
            for (int j = 0; j < T::TN; ++j) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
    }
}

// Writes the thread's register tile: tile row `row` goes to out[out_row(row) * cols + col],
// plus bias[col] when there is a bias.
template <class T, class OutRow>
__device__ __forceinline__ void vx_simt_store(const float (&acc)[T::TM][T::TN], int rows,
                                              int cols, OutRow out_row, const float* bias,
                                              float* out) {
    const int tr = threadIdx.x / (T::BN / T::TN);
    const int tc = threadIdx.x % (T::BN / T::TN);
    const int row0 = blockIdx.x * T::BM + tr * T::TM;
    const int col0 = blockIdx.y * T::BN + tc * T::TN;
#pragma unroll
    for (int i = 0; i < T::TM; ++i) {
        const int row = row0 + i;
        if (row >= rows) continue;
        float* dst = out + static_cast<size_t>(out_row(row)) * cols;
#pragma unroll
        for (int j = 0; j < T::TN; ++j) {
            const int col = col0 + j;
            if (col < cols) dst[col] = bias ? acc[i][j] + bias[col] : acc[i][j];
        }
    }
}

// Forward: A = patches of x (rows: output voxels), B = weights as [K, cout].
template <class T>
struct VxSimtForward {
    const Conv3dParams& p;
    const float* x;
    const float* w;
    VxSimtShared<T>& s;
    int k_end;
    VxRow rows[T::A_LOADS];
    float a[T::A_LOADS], b[T::B_LOADS];

    __device__ __forceinline__ VxSimtForward(const Conv3dParams& params, const float* x_,
                                             const float* w_, VxSimtShared<T>& s_, int k_end_)
        : p(params), x(x_), w(w_), s(s_), k_end(k_end_) {
        const int m_total = p.n * p.out_d * p.out_h * p.out_w;
#pragma unroll
        for (int j = 0; j < T::A_LOADS; ++j) {
            const int m = blockIdx.x * T::BM + threadIdx.x / T::BK + j * (T::THREADS / T::BK);
            rows[j] = vx_forward_row(p, m, m_total);
        }
    }

    __device__ __forceinline__ void prepare(int, int) {}

    __device__ __forceinline__ void fetch(int k0, int) {
        const int k = k0 + threadIdx.x % T::BK;
        const int ci = k % p.cin;
        int kz, ky, kx;
        vx_split3(k / p.cin, p.k_h, p.k_w, kz, ky, kx);
        if (k >= k_end) kz = VX_OUTSIDE;
        const int tap_offset = vx_tap_offset(kz, ky, kx, p.in_h, p.in_w);
#pragma unroll
        for (int j = 0; j < T::A_LOADS; ++j) {
            const int voxel =
                vx_tap_voxel(rows[j], kz, ky, kx, tap_offset, p.in_d, p.in_h, p.in_w);
            a[j] = voxel >= 0 ? x[static_cast<long long>(voxel) * p.cin + ci] : 0.0f;
        }
        const int co = blockIdx.y * T::BN + threadIdx.x % T::BN;
#pragma unroll
        for (int j = 0; j < T::B_LOADS; ++j) {
            const int kb = k0 + threadIdx.x / T::BN + j * (T::THREADS / T::BN);
            b[j] = kb < k_end && co < p.cout ? w[static_cast<size_t>(kb) * p.cout + co] : 0.0f;
        }
    }

    __device__ __forceinline__ void store() const {
#pragma unroll
        for (int j = 0; j < T::A_LOADS; ++j)
            s.a[threadIdx.x % T::BK][threadIdx.x / T::BK + j * (T::THREADS / T::BK)] = a[j];
#pragma unroll
        for (int j = 0; j < T::B_LOADS; ++j)
            s.b[threadIdx.x / T::BN + j * (T::THREADS / T::BN)][threadIdx.x % T::BN] = b[j];
    }
};

template <class T>
__device__ __forceinline__ void vx_simt_forward(const Conv3dParams& p, const float* x,
                                                const float* w, const float* bias, float* y) {
    VX_SHARED(VxSimtShared<T>, s, );
    const int k_total = p.k_d * p.k_h * p.k_w * p.cin;
    int k_begin, k_end;
    vx_split_range(p, blockIdx.z, k_total, k_begin, k_end);
    VxSimtForward<T> ld(p, x, w, s, k_end);
    float acc[T::TM][T::TN] = {};
    vx_mainloop(ld, k_begin, k_end, T::BK, [&] { vx_simt_multiply<T>(s, acc); });
    const int rows = p.n * p.out_d * p.out_h * p.out_w;
    vx_simt_store<T>(
        acc, rows, p.cout, [](int r) { return r; }, blockIdx.z == 0 ? bias : nullptr,
        y + static_cast<size_t>(blockIdx.z) * rows * p.cout);
}

// Backward data, one stride phase (conv3d_common.h): A = dy gathered per phase voxel and
// (tap of the phase, co), B = W' with W'[(tap, co), ci] = W[kernel tap, ci, co].
template <class T>
struct VxSimtBackwardData {
    const Conv3dParams& p;
    const VxPhase& ph;
    const float* dy;
    const float* w;
    VxSimtShared<T>& s;
    int k_end;
    VxRow rows[T::A_LOADS];
    float a[T::A_LOADS], b[T::B_LOADS];

    __device__ __forceinline__ VxSimtBackwardData(const Conv3dParams& params, const VxPhase& phase,
                                                  const float* dy_, const float* w_,
                                                  VxSimtShared<T>& s_, int k_end_)
        : p(params), ph(phase), dy(dy_), w(w_), s(s_), k_end(k_end_) {
        const int m_total = vx_phase_rows(p, ph);
#pragma unroll
        for (int j = 0; j < T::A_LOADS; ++j) {
            const int m = blockIdx.x * T::BM + threadIdx.x / T::BK + j * (T::THREADS / T::BK);
            int unused;
            rows[j] = vx_phase_row(p, ph, m, m_total, unused);
        }
    }

    __device__ __forceinline__ void prepare(int, int) {}

    __device__ __forceinline__ void fetch(int k0, int) {
        const int k = k0 + threadIdx.x % T::BK;
        const int co = k % p.cout;
        const bool k_valid = k < k_end;
        // A phase without taps has no valid k (and zero sizes must not be divided by).
        int tz = VX_OUTSIDE, ty = 0, tx = 0;
        if (k_valid) vx_split3(k / p.cout, ph.taps[1], ph.taps[2], tz, ty, tx);
        const int tap_offset = vx_tap_offset(tz, ty, tx, p.out_h, p.out_w);
#pragma unroll
        for (int j = 0; j < T::A_LOADS; ++j) {
            const int voxel =
                vx_tap_voxel(rows[j], tz, ty, tx, tap_offset, p.out_d, p.out_h, p.out_w);
            a[j] = voxel >= 0 ? dy[static_cast<long long>(voxel) * p.cout + co] : 0.0f;
        }
        const int tap = k_valid ? vx_phase_kernel_tap(p, ph, tz, ty, tx) : 0;
#pragma unroll
        for (int j = 0; j < T::B_LOADS; ++j) {
            const int ci =
                blockIdx.y * T::BN + threadIdx.x / T::BK + j * (T::THREADS / T::BK);
            b[j] = k_valid && ci < p.cin
                       ? w[(static_cast<size_t>(tap) * p.cin + ci) * p.cout + co]
                       : 0.0f;
        }
    }

    __device__ __forceinline__ void store() const {
#pragma unroll
        for (int j = 0; j < T::A_LOADS; ++j)
            s.a[threadIdx.x % T::BK][threadIdx.x / T::BK + j * (T::THREADS / T::BK)] = a[j];
#pragma unroll
        for (int j = 0; j < T::B_LOADS; ++j)
            s.b[threadIdx.x % T::BK][threadIdx.x / T::BK + j * (T::THREADS / T::BK)] = b[j];
    }
};

// grid.z runs over (split, phase), phase fastest.
template <class T>
__device__ __forceinline__ void vx_simt_backward_data(const Conv3dParams& p, const float* dy,
                                                      const float* w, const float* bias,
                                                      float* dx) {
    VX_SHARED(VxSimtShared<T>, s, );
    const int phases = p.stride_d * p.stride_h * p.stride_w;
    const int split = blockIdx.z / phases;
    const VxPhase ph = vx_phase(p, blockIdx.z % phases);
    const int rows = vx_phase_rows(p, ph);
    if (static_cast<int>(blockIdx.x) * T::BM >= rows) return;
    const int k_total = ph.taps[0] * ph.taps[1] * ph.taps[2] * p.cout;
    int k_begin, k_end;
    vx_split_range(p, split, k_total, k_begin, k_end);
    VxSimtBackwardData<T> ld(p, ph, dy, w, s, k_end);
    float acc[T::TM][T::TN] = {};
    vx_mainloop(ld, k_begin, k_end, T::BK, [&] { vx_simt_multiply<T>(s, acc); });
    const int voxels = p.n * p.in_d * p.in_h * p.in_w;
    vx_simt_store<T>(
        acc, rows, p.cin,
        [&](int r) {
            int voxel;
            vx_phase_row(p, ph, r, rows, voxel);
            return voxel;
        },
        split == 0 ? bias : nullptr, dx + static_cast<size_t>(split) * voxels * p.cin);
}

// Backward weights: rows are (tap, ci), columns cout, the reduction runs over the output
// voxels m of one split. A[m][(tap, ci)] is the forward patch value, B = dy as [M, cout].
template <class T>
struct VxSimtBackwardWeights {
    const Conv3dParams& p;
    const float* x;
    const float* dy;
    VxSimtShared<T>& s;
    VxVoxelSteps<T::BK>& steps;
    int m_end;
    // This thread's fixed row (tap, ci) of the result.
    int ci, kz, ky, kx;
    float a[T::A_LOADS], b[T::B_LOADS];

    __device__ __forceinline__ VxSimtBackwardWeights(const Conv3dParams& params, const float* x_,
                                                     const float* dy_, VxSimtShared<T>& s_,
                                                     VxVoxelSteps<T::BK>& steps_, int m_end_)
        : p(params), x(x_), dy(dy_), s(s_), steps(steps_), m_end(m_end_) {
        const int k = blockIdx.x * T::BM + threadIdx.x % T::BM;
        ci = k % p.cin;
        vx_split3(k / p.cin, p.k_h, p.k_w, kz, ky, kx);
        if (k >= p.k_d * p.k_h * p.k_w * p.cin) kz = VX_OUTSIDE;
    }

    __device__ __forceinline__ void prepare(int m0, int buf) {
        steps.prepare(p, m0, m_end, buf);
    }

    __device__ __forceinline__ void fetch(int m0, int buf) {
        const int tap_offset = vx_tap_offset(kz, ky, kx, p.in_h, p.in_w);
#pragma unroll
        for (int j = 0; j < T::A_LOADS; ++j) {
            const VxRow& r = steps.row[buf][threadIdx.x / T::BM + j * (T::THREADS / T::BM)];
            const int voxel = vx_tap_voxel(r, kz, ky, kx, tap_offset, p.in_d, p.in_h, p.in_w);
            a[j] = voxel >= 0 ? x[static_cast<long long>(voxel) * p.cin + ci] : 0.0f;
        }
        const int co = blockIdx.y * T::BN + threadIdx.x % T::BN;
#pragma unroll
        for (int j = 0; j < T::B_LOADS; ++j) {
            const int m = m0 + threadIdx.x / T::BN + j * (T::THREADS / T::BN);
            b[j] = m < m_end && co < p.cout ? dy[static_cast<size_t>(m) * p.cout + co] : 0.0f;
        }
    }

    __device__ __forceinline__ void store() const {
#pragma unroll
        for (int j = 0; j < T::A_LOADS; ++j)
            s.a[threadIdx.x / T::BM + j * (T::THREADS / T::BM)][threadIdx.x % T::BM] = a[j];
#pragma unroll
        for (int j = 0; j < T::B_LOADS; ++j)
            s.b[threadIdx.x / T::BN + j * (T::THREADS / T::BN)][threadIdx.x % T::BN] = b[j];
    }
};

template <class T>
__device__ __forceinline__ void vx_simt_backward_weights(const Conv3dParams& p, const float* x,
                                                         const float* dy, const float*,
                                                         float* dw) {
    VX_SHARED(VxSimtShared<T>, s, );
    VX_SHARED(VxVoxelSteps<T::BK>, steps, );
    const int m_total = p.n * p.out_d * p.out_h * p.out_w;
    int m_begin, m_end;
    vx_split_range(p, blockIdx.z, m_total, m_begin, m_end);
    VxSimtBackwardWeights<T> ld(p, x, dy, s, steps, m_end);
    float acc[T::TM][T::TN] = {};
    vx_mainloop(ld, m_begin, m_end, T::BK, [&] { vx_simt_multiply<T>(s, acc); });
    const int k_total = p.k_d * p.k_h * p.k_w * p.cin;
    vx_simt_store<T>(
        acc, k_total, p.cout, [](int r) { return r; }, nullptr,
        dw + static_cast<size_t>(blockIdx.z) * k_total * p.cout);
}

#define VX_CONV_F32(name, pass, Tile)                                                        \
    extern "C" __global__ void __launch_bounds__(VX_CONV_THREADS, 4)                           \
        name(const __grid_constant__ Conv3dParams p, const float* __restrict__ a,              \
             const float* __restrict__ b, const float* __restrict__ bias,                      \
             float* __restrict__ out) {                                                        \
        pass<Tile>(p, a, b, bias, out);                                                        \
    }

VX_CONV_F32(conv3d_fwd_f32_wide, vx_simt_forward, VxWide)
VX_CONV_F32(conv3d_fwd_f32_narrow, vx_simt_forward, VxNarrow)
VX_CONV_F32(conv3d_fwd_f32_shallow, vx_simt_forward, VxShallow)
VX_CONV_F32(conv3d_bwd_data_f32_wide, vx_simt_backward_data, VxWide)
VX_CONV_F32(conv3d_bwd_data_f32_narrow, vx_simt_backward_data, VxNarrow)
VX_CONV_F32(conv3d_bwd_data_f32_shallow, vx_simt_backward_data, VxShallow)
VX_CONV_F32(conv3d_bwd_weight_f32_wide, vx_simt_backward_weights, VxWide)
VX_CONV_F32(conv3d_bwd_weight_f32_narrow, vx_simt_backward_weights, VxNarrow)

#ifndef __CUDACC__
#include <cstring>

// The harness entry for every kernel of this file, by name: 0, -1 when the launch failed
// (emu_last_error() says why), -2 when there is no such kernel.
extern "C" int emu_conv3d_f32(const char* name, const EmuDims* d, const Conv3dParams p,
                              const float* a, const float* b, const float* bias, float* out) {
    using Kernel = void (*)(Conv3dParams, const float*, const float*, const float*, float*);
    static const struct {
        const char* name;
        Kernel kernel;
    } kernels[] = {
        {"conv3d_fwd_f32_wide", conv3d_fwd_f32_wide},
        {"conv3d_fwd_f32_narrow", conv3d_fwd_f32_narrow},
        {"conv3d_fwd_f32_shallow", conv3d_fwd_f32_shallow},
        {"conv3d_bwd_data_f32_wide", conv3d_bwd_data_f32_wide},
        {"conv3d_bwd_data_f32_narrow", conv3d_bwd_data_f32_narrow},
        {"conv3d_bwd_data_f32_shallow", conv3d_bwd_data_f32_shallow},
        {"conv3d_bwd_weight_f32_wide", conv3d_bwd_weight_f32_wide},
        {"conv3d_bwd_weight_f32_narrow", conv3d_bwd_weight_f32_narrow},
    };
    for (const auto& k : kernels)
        if (!std::strcmp(k.name, name)) return emu_launch(*d, k.kernel, p, a, b, bias, out);
    return -2;
}
#endif
