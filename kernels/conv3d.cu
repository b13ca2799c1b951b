// 3D convolution, NDHWC activations, [kd, kh, kw, cin, cout] weights, as implicit GEMMs
// (no im2col buffer): the patch matrix is gathered tile by tile into shared memory.
//
//   forward          y[m, co]  = sum_k  X[m, k]  * W[k, co]     m: output voxel, k: (tap, ci)
//   backward data    dx[v, ci] = sum_k' G[v, k'] * W'[k', ci]   v: input voxel, k': (tap, co)
//   backward weights dW[k, co] = sum_m  X[m, k]  * dy[m, co]    split over m, partials summed
//
// One block computes a BM x BN tile of the result with BM/TM x BN/TN threads, each owning
// a TM x TN register tile; the reduction runs in steps of BK through shared memory, the
// next step's global loads issued before the current step's multiply. Any sizes work:
// loads outside the problem read zeros and stores outside it are skipped.
#include "common.h"

constexpr int VX_BM = VX_CONV_BM;
constexpr int VX_BN = VX_CONV_BN;
constexpr int VX_BK = VX_CONV_BK;
constexpr int VX_TM = 4;
constexpr int VX_TN = 4;
constexpr int VX_A_LOADS = VX_BM * VX_BK / VX_CONV_THREADS;
constexpr int VX_B_LOADS = VX_BN * VX_BK / VX_CONV_THREADS;
// Rows padded so that stores of one tile column spread over banks.
constexpr int VX_A_STRIDE = VX_BM + 4;
constexpr int VX_B_STRIDE = VX_BN + 4;
// A coordinate far outside any volume: rows past the problem read only zeros.
constexpr int VX_OUTSIDE = -(1 << 20);

static_assert((VX_BM / VX_TM) * (VX_BN / VX_TN) == VX_CONV_THREADS,
              "one thread per TM x TN register tile");
static_assert(VX_BM * VX_BK % VX_CONV_THREADS == 0 && VX_BN * VX_BK % VX_CONV_THREADS == 0,
              "tiles must split evenly over the threads");

typedef float VxTileA[VX_BK][VX_A_STRIDE];
typedef float VxTileB[VX_BK][VX_B_STRIDE];

__device__ __forceinline__ bool vx_inside(int z, int y, int x, int d, int h, int w) {
    return static_cast<unsigned>(z) < static_cast<unsigned>(d) &&
           static_cast<unsigned>(y) < static_cast<unsigned>(h) &&
           static_cast<unsigned>(x) < static_cast<unsigned>(w);
}

// Splits a kernel tap index into (kz, ky, kx).
__device__ __forceinline__ void vx_split_tap(const Conv3dParams& p, int tap, int& kz, int& ky,
                                             int& kx) {
    kx = tap % p.k_w;
    const int t = tap / p.k_w;
    ky = t % p.k_h;
    kz = t / p.k_h;
}

// Splits a voxel index of an [n, d, h, w] grid into (sample, z, y, x).
__device__ __forceinline__ void vx_split_voxel(int v, int d, int h, int w, int& nn, int& z,
                                               int& y, int& x) {
    x = v % w;
    int t = v / w;
    y = t % h;
    t /= h;
    z = t % d;
    nn = t / d;
}

// acc += As[kk][rows of this thread] x Bs[kk][cols of this thread], over one BK step.
__device__ __forceinline__ void vx_tile_multiply(const VxTileA& As, const VxTileB& Bs,
                                                 float (&acc)[VX_TM][VX_TN]) {
    const int tr = threadIdx.x / (VX_BN / VX_TN);
    const int tc = threadIdx.x % (VX_BN / VX_TN);
#pragma unroll
    for (int kk = 0; kk < VX_BK; ++kk) {
        float a[VX_TM], b[VX_TN];
#pragma unroll
        for (int i = 0; i < VX_TM; ++i) a[i] = As[kk][tr * VX_TM + i];
#pragma unroll
        for (int j = 0; j < VX_TN; ++j) b[j] = Bs[kk][tc * VX_TN + j];
#pragma unroll
        for (int i = 0; i < VX_TM; ++i)
#pragma unroll
            for (int j = 0; j < VX_TN; ++j) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
    }
}

// The reduction over [k_begin, k_end) in BK steps. The loader gathers a step into
// registers (fetch), writes them to the tiles (store) and may stage per-step indices in
// shared memory (prepare, double-buffered by `buf`) before its fetch.
template <class Loader>
__device__ __forceinline__ void vx_gemm_mainloop(Loader& ld, int k_begin, int k_end, VxTileA& As,
                                                 VxTileB& Bs, float (&acc)[VX_TM][VX_TN]) {
#pragma unroll
    for (int i = 0; i < VX_TM; ++i)
#pragma unroll
        for (int j = 0; j < VX_TN; ++j) acc[i][j] = 0.0f;
    ld.prepare(k_begin, 0);
    __syncthreads();
    ld.fetch(k_begin, 0);
    int buf = 0;
    for (int k0 = k_begin; k0 < k_end; k0 += VX_BK) {
        ld.store(As, Bs);
        const bool more = k0 + VX_BK < k_end;
        if (more) ld.prepare(k0 + VX_BK, buf ^ 1);
        __syncthreads();
        if (more) ld.fetch(k0 + VX_BK, buf ^ 1);
        vx_tile_multiply(As, Bs, acc);
        __syncthreads();
        buf ^= 1;
    }
}

// Writes the thread's register tile to out[row, col] of a [rows, cols] matrix.
__device__ __forceinline__ void vx_store_tile(const float (&acc)[VX_TM][VX_TN], float* out,
                                              int rows, int cols) {
    const int tr = threadIdx.x / (VX_BN / VX_TN);
    const int tc = threadIdx.x % (VX_BN / VX_TN);
    const int row0 = blockIdx.x * VX_BM + tr * VX_TM;
    const int col0 = blockIdx.y * VX_BN + tc * VX_TN;
#pragma unroll
    for (int i = 0; i < VX_TM; ++i) {
        const int row = row0 + i;
        if (row >= rows) continue;
#pragma unroll
        for (int j = 0; j < VX_TN; ++j) {
            const int col = col0 + j;
            if (col < cols) out[static_cast<size_t>(row) * cols + col] = acc[i][j];
        }
    }
}

// Forward: A = patches of x (rows: output voxels), B = weights as [K, cout].
struct VxForwardLoader {
    const Conv3dParams& p;
    const float* x;
    const float* w;
    int k_total;
    // Per loaded row: input voxel index of (sample, 0, 0, 0) and the corner of its window.
    int row_base[VX_A_LOADS], row_z[VX_A_LOADS], row_y[VX_A_LOADS], row_x[VX_A_LOADS];
    float a[VX_A_LOADS], b[VX_B_LOADS];

    __device__ __forceinline__ VxForwardLoader(const Conv3dParams& params, const float* x_,
                                               const float* w_)
        : p(params), x(x_), w(w_), k_total(params.k_d * params.k_h * params.k_w * params.cin) {
        const int m_total = p.n * p.out_d * p.out_h * p.out_w;
#pragma unroll
        for (int j = 0; j < VX_A_LOADS; ++j) {
            const int m = blockIdx.x * VX_BM + threadIdx.x / VX_BK + j * (VX_CONV_THREADS / VX_BK);
            int nn, oz, oy, ox;
            vx_split_voxel(m, p.out_d, p.out_h, p.out_w, nn, oz, oy, ox);
            const bool valid = m < m_total;
            row_base[j] = nn * p.in_d * p.in_h * p.in_w;
            row_z[j] = valid ? oz * p.stride_d - p.pad_d : VX_OUTSIDE;
            row_y[j] = oy * p.stride_h - p.pad_h;
            row_x[j] = ox * p.stride_w - p.pad_w;
        }
    }

    __device__ __forceinline__ void prepare(int, int) {}

    __device__ __forceinline__ void fetch(int k0, int) {
        const int k = k0 + threadIdx.x % VX_BK;
        const int ci = k % p.cin;
        int kz, ky, kx;
        vx_split_tap(p, k / p.cin, kz, ky, kx);
        if (k >= k_total) kz = VX_OUTSIDE;
#pragma unroll
        for (int j = 0; j < VX_A_LOADS; ++j) {
            const int iz = row_z[j] + kz, iy = row_y[j] + ky, ix = row_x[j] + kx;
            a[j] = vx_inside(iz, iy, ix, p.in_d, p.in_h, p.in_w)
                       ? x[static_cast<size_t>(row_base[j] + (iz * p.in_h + iy) * p.in_w + ix) *
                               p.cin +
                           ci]
                       : 0.0f;
        }
        const int co = blockIdx.y * VX_BN + threadIdx.x % VX_BN;
#pragma unroll
        for (int j = 0; j < VX_B_LOADS; ++j) {
            const int kb = k0 + threadIdx.x / VX_BN + j * (VX_CONV_THREADS / VX_BN);
            b[j] = kb < k_total && co < p.cout ? w[static_cast<size_t>(kb) * p.cout + co] : 0.0f;
        }
    }

    __device__ __forceinline__ void store(VxTileA& As, VxTileB& Bs) const {
#pragma unroll
        for (int j = 0; j < VX_A_LOADS; ++j)
            As[threadIdx.x % VX_BK][threadIdx.x / VX_BK + j * (VX_CONV_THREADS / VX_BK)] = a[j];
#pragma unroll
        for (int j = 0; j < VX_B_LOADS; ++j)
            Bs[threadIdx.x / VX_BN + j * (VX_CONV_THREADS / VX_BN)][threadIdx.x % VX_BN] = b[j];
    }
};

extern "C" __global__ void __launch_bounds__(VX_CONV_THREADS, 4)
    conv3d_forward(const __grid_constant__ Conv3dParams p, const float* __restrict__ x,
                   const float* __restrict__ w, float* __restrict__ y) {
    __shared__ VxTileA As;
    __shared__ VxTileB Bs;
    VxForwardLoader ld(p, x, w);
    float acc[VX_TM][VX_TN];
    vx_gemm_mainloop(ld, 0, ld.k_total, As, Bs, acc);
    vx_store_tile(acc, y, p.n * p.out_d * p.out_h * p.out_w, p.cout);
}
VX_EMU_ENTRY(conv3d_forward, (const Conv3dParams p, const float* x, const float* w, float* y),
             (p, x, w, y))

// Backward data: A = dy gathered per input voxel v and (tap, co): the output voxel o with
// o * stride - pad + tap = v, when it exists. B = W' with W'[(tap, co), ci] = W[tap, ci, co].
struct VxBackwardDataLoader {
    const Conv3dParams& p;
    const float* dy;
    const float* w;
    int k_total;
    // Per loaded row: output voxel index of (sample, 0, 0, 0) and v + pad.
    int row_base[VX_A_LOADS], row_z[VX_A_LOADS], row_y[VX_A_LOADS], row_x[VX_A_LOADS];
    float a[VX_A_LOADS], b[VX_B_LOADS];

    __device__ __forceinline__ VxBackwardDataLoader(const Conv3dParams& params, const float* dy_,
                                                    const float* w_)
        : p(params), dy(dy_), w(w_), k_total(params.k_d * params.k_h * params.k_w * params.cout) {
        const int v_total = p.n * p.in_d * p.in_h * p.in_w;
#pragma unroll
        for (int j = 0; j < VX_A_LOADS; ++j) {
            const int v = blockIdx.x * VX_BM + threadIdx.x / VX_BK + j * (VX_CONV_THREADS / VX_BK);
            int nn, iz, iy, ix;
            vx_split_voxel(v, p.in_d, p.in_h, p.in_w, nn, iz, iy, ix);
            row_base[j] = nn * p.out_d * p.out_h * p.out_w;
            row_z[j] = v < v_total ? iz + p.pad_d : VX_OUTSIDE;
            row_y[j] = iy + p.pad_h;
            row_x[j] = ix + p.pad_w;
        }
    }

    __device__ __forceinline__ void prepare(int, int) {}

    // One output coordinate from v + pad - tap, or -1 when no output voxel reads v there.
    __device__ __forceinline__ static int source(int t, int stride, int size) {
        if (t < 0 || t % stride != 0) return -1;
        const int o = t / stride;
        return o < size ? o : -1;
    }

    __device__ __forceinline__ void fetch(int k0, int) {
        const int k = k0 + threadIdx.x % VX_BK;
        const int co = k % p.cout;
        const int tap = k / p.cout;
        int kz, ky, kx;
        vx_split_tap(p, tap, kz, ky, kx);
        const bool k_valid = k < k_total;
#pragma unroll
        for (int j = 0; j < VX_A_LOADS; ++j) {
            const int oz = source(row_z[j] - kz, p.stride_d, p.out_d);
            const int oy = source(row_y[j] - ky, p.stride_h, p.out_h);
            const int ox = source(row_x[j] - kx, p.stride_w, p.out_w);
            a[j] = k_valid && (oz | oy | ox) >= 0
                       ? dy[static_cast<size_t>(row_base[j] + (oz * p.out_h + oy) * p.out_w + ox) *
                                p.cout +
                            co]
                       : 0.0f;
        }
#pragma unroll
        for (int j = 0; j < VX_B_LOADS; ++j) {
            const int ci = blockIdx.y * VX_BN + threadIdx.x / VX_BK + j * (VX_CONV_THREADS / VX_BK);
            b[j] = k_valid && ci < p.cin
                       ? w[(static_cast<size_t>(tap) * p.cin + ci) * p.cout + co]
                       : 0.0f;
        }
    }

    __device__ __forceinline__ void store(VxTileA& As, VxTileB& Bs) const {
#pragma unroll
        for (int j = 0; j < VX_A_LOADS; ++j)
            As[threadIdx.x % VX_BK][threadIdx.x / VX_BK + j * (VX_CONV_THREADS / VX_BK)] = a[j];
#pragma unroll
        for (int j = 0; j < VX_B_LOADS; ++j)
            Bs[threadIdx.x % VX_BK][threadIdx.x / VX_BK + j * (VX_CONV_THREADS / VX_BK)] = b[j];
    }
};

extern "C" __global__ void __launch_bounds__(VX_CONV_THREADS, 4)
    conv3d_backward_data(const __grid_constant__ Conv3dParams p, const float* __restrict__ dy,
                         const float* __restrict__ w, float* __restrict__ dx) {
    __shared__ VxTileA As;
    __shared__ VxTileB Bs;
    VxBackwardDataLoader ld(p, dy, w);
    float acc[VX_TM][VX_TN];
    vx_gemm_mainloop(ld, 0, ld.k_total, As, Bs, acc);
    vx_store_tile(acc, dx, p.n * p.in_d * p.in_h * p.in_w, p.cin);
}
VX_EMU_ENTRY(conv3d_backward_data,
             (const Conv3dParams p, const float* dy, const float* w, float* dx), (p, dy, w, dx))

// Per-step output-voxel coordinates for the backward-weights loader, shared by the block.
struct VxVoxelSteps {
    int base[2][VX_BK], z[2][VX_BK], y[2][VX_BK], x[2][VX_BK];
};

// Backward weights: rows are (tap, ci), columns cout, the reduction runs over the output
// voxels m of one split. A[m][(tap, ci)] is the forward patch value, B = dy as [M, cout].
struct VxBackwardWeightsLoader {
    const Conv3dParams& p;
    const float* x;
    const float* dy;
    VxVoxelSteps& steps;
    int m_end;
    // This thread's fixed row (tap, ci) of the result.
    int ci, kz, ky, kx;
    float a[VX_A_LOADS], b[VX_B_LOADS];

    __device__ __forceinline__ VxBackwardWeightsLoader(const Conv3dParams& params, const float* x_,
                                                       const float* dy_, VxVoxelSteps& s,
                                                       int m_end_)
        : p(params), x(x_), dy(dy_), steps(s), m_end(m_end_) {
        const int k = blockIdx.x * VX_BM + threadIdx.x % VX_BM;
        ci = k % p.cin;
        vx_split_tap(p, k / p.cin, kz, ky, kx);
        if (k >= p.k_d * p.k_h * p.k_w * p.cin) kz = VX_OUTSIDE;
    }

    __device__ __forceinline__ void prepare(int m0, int buf) {
        const unsigned t = threadIdx.x;
        if (t >= VX_BK) return;
        const int m = m0 + t;
        int nn, oz, oy, ox;
        vx_split_voxel(m, p.out_d, p.out_h, p.out_w, nn, oz, oy, ox);
        steps.base[buf][t] = nn * p.in_d * p.in_h * p.in_w;
        steps.z[buf][t] = m < m_end ? oz * p.stride_d - p.pad_d : VX_OUTSIDE;
        steps.y[buf][t] = oy * p.stride_h - p.pad_h;
        steps.x[buf][t] = ox * p.stride_w - p.pad_w;
    }

    __device__ __forceinline__ void fetch(int m0, int buf) {
#pragma unroll
        for (int j = 0; j < VX_A_LOADS; ++j) {
            const int s = threadIdx.x / VX_BM + j * (VX_CONV_THREADS / VX_BM);
            const int iz = steps.z[buf][s] + kz, iy = steps.y[buf][s] + ky,
                      ix = steps.x[buf][s] + kx;
            a[j] = vx_inside(iz, iy, ix, p.in_d, p.in_h, p.in_w)
                       ? x[static_cast<size_t>(steps.base[buf][s] + (iz * p.in_h + iy) * p.in_w +
                                               ix) *
                               p.cin +
                           ci]
                       : 0.0f;
        }
        const int co = blockIdx.y * VX_BN + threadIdx.x % VX_BN;
#pragma unroll
        for (int j = 0; j < VX_B_LOADS; ++j) {
            const int m = m0 + threadIdx.x / VX_BN + j * (VX_CONV_THREADS / VX_BN);
            b[j] = m < m_end && co < p.cout ? dy[static_cast<size_t>(m) * p.cout + co] : 0.0f;
        }
    }

    __device__ __forceinline__ void store(VxTileA& As, VxTileB& Bs) const {
#pragma unroll
        for (int j = 0; j < VX_A_LOADS; ++j)
            As[threadIdx.x / VX_BM + j * (VX_CONV_THREADS / VX_BM)][threadIdx.x % VX_BM] = a[j];
#pragma unroll
        for (int j = 0; j < VX_B_LOADS; ++j)
            Bs[threadIdx.x / VX_BN + j * (VX_CONV_THREADS / VX_BN)][threadIdx.x % VX_BN] = b[j];
    }
};

// Writes the partial weight gradient of split blockIdx.z to dw + z * K * cout; with one
// split that is the gradient itself, otherwise sum_axis1 adds the splits.
extern "C" __global__ void __launch_bounds__(VX_CONV_THREADS, 4)
    conv3d_backward_weights(const __grid_constant__ Conv3dParams p, const float* __restrict__ x,
                            const float* __restrict__ dy, float* __restrict__ dw) {
    __shared__ VxTileA As;
    __shared__ VxTileB Bs;
    __shared__ VxVoxelSteps steps;
    const int m_total = p.n * p.out_d * p.out_h * p.out_w;
    const int m_begin = blockIdx.z * p.split_len;
    const int m_end = min(m_total, m_begin + p.split_len);
    VxBackwardWeightsLoader ld(p, x, dy, steps, m_end);
    float acc[VX_TM][VX_TN];
    vx_gemm_mainloop(ld, m_begin, m_end, As, Bs, acc);
    const int k_total = p.k_d * p.k_h * p.k_w * p.cin;
    vx_store_tile(acc, dw + static_cast<size_t>(blockIdx.z) * k_total * p.cout, k_total, p.cout);
}
VX_EMU_ENTRY(conv3d_backward_weights,
             (const Conv3dParams p, const float* x, const float* dy, float* dw), (p, x, dy, dw))
