// Matrix product c = op(a) op(b) (+ bias), as MatmulKernel in src/tensor_ops/matmul:
// shared-memory tiles of 64 x 64 outputs, 16 steps of k at a time, each thread a 4 x 4
// block of outputs strided by 16 (conflict-free shared reads), f32 accumulation. The
// transpose flags only change which tile loads are coalesced. grid.z splits k (see
// params_matmul.h); the partial products are added by sum_axis1 (reduce.cu).
#include "common.h"

extern "C" __global__ void __launch_bounds__(VX_MATMUL_THREADS)
    matmul_tiled(const MatmulKernelParams p, const float* __restrict__ a,
                 const float* __restrict__ b, const float* __restrict__ bias,
                 float* __restrict__ c) {
    constexpr int BM = VX_MATMUL_BM, BN = VX_MATMUL_BN, BK = VX_MATMUL_BK;
    constexpr int LOADS = BM * BK / VX_MATMUL_THREADS;  // tile elements per thread
    static_assert(BM == BN && LOADS * VX_MATMUL_THREADS == BM * BK, "tile shape");
    VX_SHARED(float, a_tile, [BK][BM + 1]);
    VX_SHARED(float, b_tile, [BK][BN + 1]);

    const unsigned tid = threadIdx.x;
    const unsigned tx = tid % 16, ty = tid / 16;
    const unsigned long long row0 = static_cast<unsigned long long>(blockIdx.x) * BM;
    const unsigned long long col0 = static_cast<unsigned long long>(blockIdx.y) * BN;
    const unsigned long long k_begin = static_cast<unsigned long long>(blockIdx.z) * p.k_per_split;
    const unsigned long long k_end = min(p.k, k_begin + p.k_per_split);

    float acc[4][4];
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] = 0.0f;

    for (unsigned long long k0 = k_begin; k0 < k_end; k0 += BK) {
#pragma unroll
        for (int l = 0; l < LOADS; ++l) {
            const unsigned e = tid + l * VX_MATMUL_THREADS;
            // Consecutive threads walk the contiguous axis of the stored operand.
            const unsigned r = p.trans_a ? e % BM : e / BK;
            const unsigned kk = p.trans_a ? e / BM : e % BK;
            const unsigned long long row = row0 + r, kg = k0 + kk;
            float v = 0.0f;
            if (row < p.m && kg < k_end) v = p.trans_a ? a[kg * p.m + row] : a[row * p.k + kg];
            a_tile[kk][r] = v;
        }
#pragma unroll
        for (int l = 0; l < LOADS; ++l) {
            const unsigned e = tid + l * VX_MATMUL_THREADS;
            const unsigned cc = p.trans_b ? e / BK : e % BN;
            const unsigned kk = p.trans_b ? e % BK : e / BN;
            const unsigned long long col = col0 + cc, kg = k0 + kk;
            float v = 0.0f;
            if (col < p.n && kg < k_end) v = p.trans_b ? b[col * p.k + kg] : b[kg * p.n + col];
            b_tile[kk][cc] = v;
        }
        __syncthreads();
#pragma unroll
        for (int kk = 0; kk < BK; ++kk) {
            float af[4], bf[4];
#pragma unroll
            for (int i = 0; i < 4; ++i) af[i] = a_tile[kk][ty + 16 * i];
#pragma unroll
            for (int j = 0; j < 4; ++j) bf[j] = b_tile[kk][tx + 16 * j];
#pragma unroll
            for (int i = 0; i < 4; ++i)
#pragma unroll
                for (int j = 0; j < 4; ++j) acc[i][j] += af[i] * bf[j];
        }
        __syncthreads();
    }

    float* out = c + static_cast<unsigned long long>(blockIdx.z) * p.m * p.n;
    const bool add_bias = p.has_bias && blockIdx.z == 0;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        const unsigned long long row = row0 + ty + 16 * i;
        if (row >= p.m) continue;
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            const unsigned long long col = col0 + tx + 16 * j;
            if (col < p.n) out[row * p.n + col] = add_bias ? bias[col] + acc[i][j] : acc[i][j];
        }
    }
}
VX_EMU_ENTRY(matmul_tiled,
             (const MatmulKernelParams p, const float* a, const float* b, const float* bias,
              float* c),
             (p, a, b, bias, c))
