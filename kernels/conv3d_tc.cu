// 3D convolution on the tensor cores in TF32: the implicit GEMMs of conv3d_common.h with
// mma.sync (m16n8k8 TF32 operands, f32 accumulation) through the wrappers of mma.h. Inputs
// stay f32 in memory; they are rounded to TF32 (cvt.rna) when a reduction step is written
// to shared memory. (BF16 runs the packed, pipelined kernels of conv3d_pipe.cu; the
// precision policy below still takes k values in pairs so that the layouts stay general.)
//
// For channel counts that are multiples of 4 (the launch plan checks): every global load
// is 16 bytes, four consecutive channels of one voxel and tap, so a load is wholly inside
// or wholly outside the padded volume. One block of 4 warps computes a 128 x 64 (2 x 2
// warps of 64 x 32) or 128 x 32 (4 x 1 warps of 32 x 32) tile; the reduction runs in steps
// of 32 through shared memory, staged in registers so that the next step's loads are in
// flight during the current step's mma.
//
// Shared tiles hold 32-bit words: one TF32 value, or two BF16 values adjacent in k (the
// register format of the BF16 fragments). An operand whose source is contiguous in k is
// stored k-major (rows of k words, padded by 4 words); one contiguous in its row or column
// index is stored mn-major (rows of k words, padded by 8 words). With those paddings the
// fragment loads of a warp touch 32 distinct banks in both layouts, and either precision
// reads 8 words of k per mma.
#include "conv3d_common.h"
#include "mma.h"

template <int WARPS_M_, int WARPS_N_, int WM_, int WN_>
struct VxTcTile {
    static constexpr int WARPS_M = WARPS_M_, WARPS_N = WARPS_N_, WM = WM_, WN = WN_;
    static constexpr int THREADS = 32 * WARPS_M * WARPS_N;
    static constexpr int BM = WARPS_M * WM, BN = WARPS_N * WN, BK = VX_CONV_TC_BK;
    static constexpr int MT = WM / 16, NT = WN / 8;  // mma tiles per warp
    static_assert(THREADS == VX_CONV_THREADS && BM == VX_CONV_TC_BM, "params_conv.h");
    static_assert(WM % 16 == 0 && WN % 8 == 0, "whole mma tiles");
};
using VxTcN64 = VxTcTile<2, 2, 64, 32>;
using VxTcN32 = VxTcTile<4, 1, 32, 32>;

// How f32 values become the words of the shared tiles.
struct VxTf32 {
    static constexpr int KW = VX_CONV_TC_BK;  // words per reduction step
    static constexpr int PAIR = 1;            // k values per word

    // Four values consecutive in k, at k offset 4q of a k-major row.
    __device__ __forceinline__ static void put_k(unsigned* row, int q, const VxF4& v) {
        *reinterpret_cast<VxU4*>(row + 4 * q) =
            VxU4{vx_tf32(v.x), vx_tf32(v.y), vx_tf32(v.z), vx_tf32(v.w)};
    }
    // Columns 4q..4q+3 of an mn-major word row, from the PAIR k rows it holds.
    __device__ __forceinline__ static void put_mn(unsigned* row, int q, const VxF4 (&v)[PAIR]) {
        put_k(row, q, v[0]);
    }
    __device__ __forceinline__ static void mma(float (&d)[4], const unsigned (&a)[4],
                                               const unsigned (&b)[2]) {
        vx_mma_tf32(d, a, b);
    }
};

// An operand tile stored k-major: ROWS rows (m or n) of KW words.
template <int ROWS, int KW>
struct alignas(16) VxKMajor {
    unsigned w[ROWS][KW + 4];

    // The A fragment of rows m0..m0+15 at word k0 (mma.h lists the layout).
    __device__ __forceinline__ void frag_a(unsigned (&a)[4], int m0, int k0, int g,
                                           int t) const {
        a[0] = w[m0 + g][k0 + t];
        a[1] = w[m0 + g + 8][k0 + t];
        a[2] = w[m0 + g][k0 + t + 4];
        a[3] = w[m0 + g + 8][k0 + t + 4];
    }
    // The B fragment of columns n0..n0+7 at word k0.
    __device__ __forceinline__ void frag_b(unsigned (&b)[2], int n0, int k0, int g,
                                           int t) const {
        b[0] = w[n0 + g][k0 + t];
        b[1] = w[n0 + g][k0 + t + 4];
    }
};

// An operand tile stored mn-major: KW word rows of COLS (m or n) words.
template <int KW, int COLS>
struct alignas(16) VxMnMajor {
    unsigned w[KW][COLS + 8];

    __device__ __forceinline__ void frag_a(unsigned (&a)[4], int m0, int k0, int g,
                                           int t) const {
        a[0] = w[k0 + t][m0 + g];
        a[1] = w[k0 + t][m0 + g + 8];
        a[2] = w[k0 + t + 4][m0 + g];
        a[3] = w[k0 + t + 4][m0 + g + 8];
    }
    __device__ __forceinline__ void frag_b(unsigned (&b)[2], int n0, int k0, int g,
                                           int t) const {
        b[0] = w[k0 + t][n0 + g];
        b[1] = w[k0 + t + 4][n0 + g];
    }
};

template <class T>
using VxTcAcc = float[T::MT][T::NT][4];

// acc += A x B over one reduction step, each warp its WM x WN part.
template <class T, class P, class SA, class SB>
__device__ __forceinline__ void vx_tc_multiply(const SA& sa, const SB& sb, VxTcAcc<T>& acc) {
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int g = lane >> 2, t = lane & 3;
    const int m0 = (warp / T::WARPS_N) * T::WM, n0 = (warp % T::WARPS_N) * T::WN;
#pragma unroll
    for (int k0 = 0; k0 < P::KW; k0 += 8) {
        unsigned a[T::MT][4], b[T::NT][2];
#pragma unroll
        for (int i = 0; i < T::MT; ++i) sa.frag_a(a[i], m0 + 16 * i, k0, g, t);
#pragma unroll
        for (int j = 0; j < T::NT; ++j) sb.frag_b(b[j], n0 + 8 * j, k0, g, t);
#pragma unroll
        for (int i = 0; i < T::MT; ++i)
#pragma unroll
            for (int j = 0; j < T::NT; ++j) P::mma(acc[i][j], a[i], b[j]);
    }
}

// Writes the accumulators: GEMM row r (block-local row `local`) goes to
// out[out_row(local, r) * cols + col], plus bias[col] when there is a bias. cols is a
// multiple of 4, so each lane's column pair is wholly inside or outside.
template <class T, class OutRow>
__device__ __forceinline__ void vx_tc_store(const VxTcAcc<T>& acc, int rows, int cols,
                                            OutRow out_row, const float* bias, float* out) {
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int g = lane >> 2, t = lane & 3;
    const int local0 = (warp / T::WARPS_N) * T::WM;
    const int col0 = blockIdx.y * T::BN + (warp % T::WARPS_N) * T::WN + 2 * t;
#pragma unroll
    for (int i = 0; i < T::MT; ++i) {
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            const int local = local0 + 16 * i + g + 8 * h;
            const int r = blockIdx.x * T::BM + local;
            if (r >= rows) continue;
            float* dst = out + static_cast<size_t>(out_row(local, r)) * cols;
#pragma unroll
            for (int j = 0; j < T::NT; ++j) {
                const int c = col0 + 8 * j;
                if (c >= cols) continue;
                VxF2 v;
                v.x = acc[i][j][2 * h];
                v.y = acc[i][j][2 * h + 1];
                if (bias) {
                    v.x += bias[c];
                    v.y += bias[c + 1];
                }
                *reinterpret_cast<VxF2*>(dst + c) = v;
            }
        }
    }
}

__device__ __forceinline__ VxF4 vx_zero4() { return VxF4{0.0f, 0.0f, 0.0f, 0.0f}; }

// Forward: A = patches of x (k-major: channels are contiguous), B = weights [K, cout]
// (mn-major: output channels are contiguous).
template <class T, class P>
struct VxTcForward {
    struct Shared {
        VxKMajor<T::BM, P::KW> a;
        VxMnMajor<P::KW, T::BN> b;
        VxRow rows[T::BM];
    };
    static constexpr int QUADS_K = T::BK / 4;                    // k quads per A row
    static constexpr int A_LOADS = T::BM * QUADS_K / T::THREADS;  // A quads per thread
    static constexpr int QUADS_N = T::BN / 4;                    // column quads per B row
    static constexpr int B_ROWS = P::KW * QUADS_N / T::THREADS;  // B word rows per thread
    static_assert(A_LOADS * T::THREADS == T::BM * QUADS_K && T::THREADS % QUADS_K == 0, "A");
    static_assert(B_ROWS * T::THREADS == P::KW * QUADS_N && T::THREADS % QUADS_N == 0, "B");

    const Conv3dParams& p;
    const float* x;
    const float* w;
    Shared& s;
    int k_end;
    VxF4 a[A_LOADS];
    VxF4 b[B_ROWS][P::PAIR];

    __device__ __forceinline__ VxTcForward(const Conv3dParams& params, const float* x_,
                                           const float* w_, Shared& s_, int k_end_)
        : p(params), x(x_), w(w_), s(s_), k_end(k_end_) {
        const int m_total = p.n * p.out_d * p.out_h * p.out_w;
        for (int i = threadIdx.x; i < T::BM; i += T::THREADS)
            s.rows[i] = vx_forward_row(p, blockIdx.x * T::BM + i, m_total);
    }

    __device__ __forceinline__ void prepare(int, int) {}

    __device__ __forceinline__ void fetch(int k0, int) {
        const int q = threadIdx.x % QUADS_K;
        const int k = k0 + 4 * q;
        const int ci = k % p.cin;
        int kz, ky, kx;
        vx_split3(k / p.cin, p.k_h, p.k_w, kz, ky, kx);
        if (k >= k_end) kz = VX_OUTSIDE;
#pragma unroll
        for (int j = 0; j < A_LOADS; ++j) {
            const VxRow& r = s.rows[threadIdx.x / QUADS_K + j * (T::THREADS / QUADS_K)];
            const int iz = r.z + kz, iy = r.y + ky, ix = r.x + kx;
            a[j] = vx_inside(iz, iy, ix, p.in_d, p.in_h, p.in_w)
                       ? vx_load4(x + static_cast<size_t>(r.base + (iz * p.in_h + iy) * p.in_w +
                                                          ix) *
                                          p.cin +
                                  ci)
                       : vx_zero4();
        }
        const int n = blockIdx.y * T::BN + 4 * (threadIdx.x % QUADS_N);
#pragma unroll
        for (int j = 0; j < B_ROWS; ++j) {
            const int kr = threadIdx.x / QUADS_N + j * (T::THREADS / QUADS_N);
#pragma unroll
            for (int h = 0; h < P::PAIR; ++h) {
                const int kb = k0 + kr * P::PAIR + h;
                b[j][h] = kb < k_end && n < p.cout
                              ? vx_load4(w + static_cast<size_t>(kb) * p.cout + n)
                              : vx_zero4();
            }
        }
    }

    __device__ __forceinline__ void store() {
#pragma unroll
        for (int j = 0; j < A_LOADS; ++j)
            P::put_k(s.a.w[threadIdx.x / QUADS_K + j * (T::THREADS / QUADS_K)],
                     threadIdx.x % QUADS_K, a[j]);
#pragma unroll
        for (int j = 0; j < B_ROWS; ++j)
            P::put_mn(s.b.w[threadIdx.x / QUADS_N + j * (T::THREADS / QUADS_N)],
                      threadIdx.x % QUADS_N, b[j]);
    }
};

template <class T, class P>
__device__ __forceinline__ void vx_tc_forward(const Conv3dParams& p, const float* x,
                                              const float* w, const float* bias, float* y) {
    __shared__ typename VxTcForward<T, P>::Shared s;
    const int k_total = p.k_d * p.k_h * p.k_w * p.cin;
    int k_begin, k_end;
    vx_split_range(p, blockIdx.z, k_total, k_begin, k_end);
    VxTcForward<T, P> ld(p, x, w, s, k_end);
    VxTcAcc<T> acc = {};
    vx_mainloop(ld, k_begin, k_end, T::BK, [&] { vx_tc_multiply<T, P>(s.a, s.b, acc); });
    const int rows = p.n * p.out_d * p.out_h * p.out_w;
    vx_tc_store<T>(
        acc, rows, p.cout, [](int, int r) { return r; }, blockIdx.z == 0 ? bias : nullptr,
        y + static_cast<size_t>(blockIdx.z) * rows * p.cout);
}

// Backward data, one stride phase: A = dy gathered per phase voxel and (tap, co) (k-major),
// B = W'[(tap, co), ci] = W[kernel tap, ci, co] (k-major: co is contiguous in w).
template <class T, class P>
struct VxTcBackwardData {
    struct Shared {
        VxKMajor<T::BM, P::KW> a;
        VxKMajor<T::BN, P::KW> b;
        VxRow rows[T::BM];
        int dx_voxel[T::BM];
    };
    static constexpr int QUADS_K = T::BK / 4;
    static constexpr int A_LOADS = T::BM * QUADS_K / T::THREADS;
    static constexpr int B_LOADS = T::BN * QUADS_K / T::THREADS;
    static_assert(A_LOADS * T::THREADS == T::BM * QUADS_K && T::THREADS % QUADS_K == 0, "A");
    static_assert(B_LOADS * T::THREADS == T::BN * QUADS_K, "B");

    const Conv3dParams& p;
    const VxPhase& ph;
    const float* dy;
    const float* w;
    Shared& s;
    int k_end;
    VxF4 a[A_LOADS];
    VxF4 b[B_LOADS];

    __device__ __forceinline__ VxTcBackwardData(const Conv3dParams& params, const VxPhase& phase,
                                                const float* dy_, const float* w_, Shared& s_,
                                                int k_end_)
        : p(params), ph(phase), dy(dy_), w(w_), s(s_), k_end(k_end_) {
        const int m_total = vx_phase_rows(p, ph);
        for (int i = threadIdx.x; i < T::BM; i += T::THREADS)
            s.rows[i] = vx_phase_row(p, ph, blockIdx.x * T::BM + i, m_total, s.dx_voxel[i]);
    }

    __device__ __forceinline__ void prepare(int, int) {}

    __device__ __forceinline__ void fetch(int k0, int) {
        const int q = threadIdx.x % QUADS_K;
        const int k = k0 + 4 * q;
        const int co = k % p.cout;
        const bool k_valid = k < k_end;
        // A phase without taps has no valid k (and zero sizes must not be divided by).
        int tz = VX_OUTSIDE, ty = 0, tx = 0;
        if (k_valid) vx_split3(k / p.cout, ph.taps[1], ph.taps[2], tz, ty, tx);
#pragma unroll
        for (int j = 0; j < A_LOADS; ++j) {
            const VxRow& r = s.rows[threadIdx.x / QUADS_K + j * (T::THREADS / QUADS_K)];
            const int oz = r.z + tz, oy = r.y + ty, ox = r.x + tx;
            a[j] = vx_inside(oz, oy, ox, p.out_d, p.out_h, p.out_w)
                       ? vx_load4(dy + static_cast<size_t>(r.base + (oz * p.out_h + oy) * p.out_w +
                                                           ox) *
                                           p.cout +
                                  co)
                       : vx_zero4();
        }
        const int tap = k_valid ? vx_phase_kernel_tap(p, ph, tz, ty, tx) : 0;
#pragma unroll
        for (int j = 0; j < B_LOADS; ++j) {
            const int ci = blockIdx.y * T::BN + threadIdx.x / QUADS_K + j * (T::THREADS / QUADS_K);
            b[j] = k_valid && ci < p.cin
                       ? vx_load4(w + (static_cast<size_t>(tap) * p.cin + ci) * p.cout + co)
                       : vx_zero4();
        }
    }

    __device__ __forceinline__ void store() {
        const int q = threadIdx.x % QUADS_K;
#pragma unroll
        for (int j = 0; j < A_LOADS; ++j)
            P::put_k(s.a.w[threadIdx.x / QUADS_K + j * (T::THREADS / QUADS_K)], q, a[j]);
#pragma unroll
        for (int j = 0; j < B_LOADS; ++j)
            P::put_k(s.b.w[threadIdx.x / QUADS_K + j * (T::THREADS / QUADS_K)], q, b[j]);
    }
};

// grid.z runs over (split, phase), phase fastest.
template <class T, class P>
__device__ __forceinline__ void vx_tc_backward_data(const Conv3dParams& p, const float* dy,
                                                    const float* w, const float* bias,
                                                    float* dx) {
    __shared__ typename VxTcBackwardData<T, P>::Shared s;
    const int phases = p.stride_d * p.stride_h * p.stride_w;
    const int split = blockIdx.z / phases;
    const VxPhase ph = vx_phase(p, blockIdx.z % phases);
    const int rows = vx_phase_rows(p, ph);
    if (static_cast<int>(blockIdx.x) * T::BM >= rows) return;
    const int k_total = ph.taps[0] * ph.taps[1] * ph.taps[2] * p.cout;
    int k_begin, k_end;
    vx_split_range(p, split, k_total, k_begin, k_end);
    VxTcBackwardData<T, P> ld(p, ph, dy, w, s, k_end);
    VxTcAcc<T> acc = {};
    vx_mainloop(ld, k_begin, k_end, T::BK, [&] { vx_tc_multiply<T, P>(s.a, s.b, acc); });
    const int voxels = p.n * p.in_d * p.in_h * p.in_w;
    vx_tc_store<T>(
        acc, rows, p.cin, [&](int local, int) { return s.dx_voxel[local]; },
        split == 0 ? bias : nullptr, dx + static_cast<size_t>(split) * voxels * p.cin);
}

// Backward weights: rows (tap, ci), columns cout, the reduction over the output voxels of
// one split. A[m][(tap, ci)] (mn-major: ci is contiguous), B = dy [M, cout] (mn-major).
template <class T, class P>
struct VxTcBackwardWeights {
    struct Shared {
        VxMnMajor<P::KW, T::BM> a;
        VxMnMajor<P::KW, T::BN> b;
        VxVoxelSteps<T::BK> steps;
    };
    static constexpr int QUADS_M = T::BM / 4;
    static constexpr int A_ROWS = P::KW * QUADS_M / T::THREADS;
    static constexpr int QUADS_N = T::BN / 4;
    static constexpr int B_ROWS = P::KW * QUADS_N / T::THREADS;
    static_assert(A_ROWS * T::THREADS == P::KW * QUADS_M && T::THREADS % QUADS_M == 0, "A");
    static_assert(B_ROWS * T::THREADS == P::KW * QUADS_N && T::THREADS % QUADS_N == 0, "B");

    const Conv3dParams& p;
    const float* x;
    const float* dy;
    Shared& s;
    int m_end;
    // This thread's fixed rows (tap, ci..ci+3) of the result.
    int ci, kz, ky, kx;
    VxF4 a[A_ROWS][P::PAIR];
    VxF4 b[B_ROWS][P::PAIR];

    __device__ __forceinline__ VxTcBackwardWeights(const Conv3dParams& params, const float* x_,
                                                   const float* dy_, Shared& s_, int m_end_)
        : p(params), x(x_), dy(dy_), s(s_), m_end(m_end_) {
        const int k = blockIdx.x * T::BM + 4 * (threadIdx.x % QUADS_M);
        ci = k % p.cin;
        vx_split3(k / p.cin, p.k_h, p.k_w, kz, ky, kx);
        if (k >= p.k_d * p.k_h * p.k_w * p.cin) kz = VX_OUTSIDE;
    }

    __device__ __forceinline__ void prepare(int m0, int buf) {
        s.steps.prepare(p, m0, m_end, buf);
    }

    __device__ __forceinline__ void fetch(int m0, int buf) {
#pragma unroll
        for (int j = 0; j < A_ROWS; ++j) {
            const int kr = threadIdx.x / QUADS_M + j * (T::THREADS / QUADS_M);
#pragma unroll
            for (int h = 0; h < P::PAIR; ++h) {
                const VxRow& r = s.steps.row[buf][kr * P::PAIR + h];
                const int iz = r.z + kz, iy = r.y + ky, ix = r.x + kx;
                a[j][h] = vx_inside(iz, iy, ix, p.in_d, p.in_h, p.in_w)
                              ? vx_load4(x +
                                         static_cast<size_t>(r.base +
                                                             (iz * p.in_h + iy) * p.in_w + ix) *
                                             p.cin +
                                         ci)
                              : vx_zero4();
            }
        }
        const int n = blockIdx.y * T::BN + 4 * (threadIdx.x % QUADS_N);
#pragma unroll
        for (int j = 0; j < B_ROWS; ++j) {
            const int kr = threadIdx.x / QUADS_N + j * (T::THREADS / QUADS_N);
#pragma unroll
            for (int h = 0; h < P::PAIR; ++h) {
                const int m = m0 + kr * P::PAIR + h;
                b[j][h] = m < m_end && n < p.cout
                              ? vx_load4(dy + static_cast<size_t>(m) * p.cout + n)
                              : vx_zero4();
            }
        }
    }

    __device__ __forceinline__ void store() {
#pragma unroll
        for (int j = 0; j < A_ROWS; ++j)
            P::put_mn(s.a.w[threadIdx.x / QUADS_M + j * (T::THREADS / QUADS_M)],
                      threadIdx.x % QUADS_M, a[j]);
#pragma unroll
        for (int j = 0; j < B_ROWS; ++j)
            P::put_mn(s.b.w[threadIdx.x / QUADS_N + j * (T::THREADS / QUADS_N)],
                      threadIdx.x % QUADS_N, b[j]);
    }
};

template <class T, class P>
__device__ __forceinline__ void vx_tc_backward_weights(const Conv3dParams& p, const float* x,
                                                       const float* dy, const float*,
                                                       float* dw) {
    __shared__ typename VxTcBackwardWeights<T, P>::Shared s;
    const int m_total = p.n * p.out_d * p.out_h * p.out_w;
    int m_begin, m_end;
    vx_split_range(p, blockIdx.z, m_total, m_begin, m_end);
    VxTcBackwardWeights<T, P> ld(p, x, dy, s, m_end);
    VxTcAcc<T> acc = {};
    vx_mainloop(ld, m_begin, m_end, T::BK, [&] { vx_tc_multiply<T, P>(s.a, s.b, acc); });
    const int k_total = p.k_d * p.k_h * p.k_w * p.cin;
    vx_tc_store<T>(
        acc, k_total, p.cout, [](int, int r) { return r; }, nullptr,
        dw + static_cast<size_t>(blockIdx.z) * k_total * p.cout);
}

#define VX_CONV_TC(name, pass, Tile, Precision)                                              \
    extern "C" __global__ void __launch_bounds__(VX_CONV_THREADS, 3)                           \
        name(const __grid_constant__ Conv3dParams p, const float* __restrict__ a,              \
             const float* __restrict__ b, const float* __restrict__ bias,                      \
             float* __restrict__ out) {                                                        \
        pass<Tile, Precision>(p, a, b, bias, out);                                             \
    }

VX_CONV_TC(conv3d_fwd_tf32_n64, vx_tc_forward, VxTcN64, VxTf32)
VX_CONV_TC(conv3d_fwd_tf32_n32, vx_tc_forward, VxTcN32, VxTf32)
VX_CONV_TC(conv3d_bwd_data_tf32_n64, vx_tc_backward_data, VxTcN64, VxTf32)
VX_CONV_TC(conv3d_bwd_data_tf32_n32, vx_tc_backward_data, VxTcN32, VxTf32)
VX_CONV_TC(conv3d_bwd_weight_tf32_n64, vx_tc_backward_weights, VxTcN64, VxTf32)
VX_CONV_TC(conv3d_bwd_weight_tf32_n32, vx_tc_backward_weights, VxTcN32, VxTf32)

// Probes of the wrappers for tests: one warp computes out = a b + c through one mma, with the
// fragments taken from row-major a (16 x K), b (K x 8) and c (16 x 8) by the layouts of
// mma.h; K = 8 for TF32, 16 for BF16.
extern "C" __global__ void __launch_bounds__(32)
    mma_probe_tf32(const float* __restrict__ a, const float* __restrict__ b,
                   const float* __restrict__ c, float* __restrict__ out) {
    const int g = threadIdx.x >> 2, t = threadIdx.x & 3;
    const unsigned fa[4] = {vx_tf32(a[g * 8 + t]), vx_tf32(a[(g + 8) * 8 + t]),
                            vx_tf32(a[g * 8 + t + 4]), vx_tf32(a[(g + 8) * 8 + t + 4])};
    const unsigned fb[2] = {vx_tf32(b[t * 8 + g]), vx_tf32(b[(t + 4) * 8 + g])};
    float acc[4];
    for (int i = 0; i < 4; ++i) acc[i] = c[(g + 8 * (i >> 1)) * 8 + 2 * t + (i & 1)];
    vx_mma_tf32(acc, fa, fb);
    for (int i = 0; i < 4; ++i) out[(g + 8 * (i >> 1)) * 8 + 2 * t + (i & 1)] = acc[i];
}
VX_EMU_ENTRY(mma_probe_tf32, (const float* a, const float* b, const float* c, float* out),
             (a, b, c, out))

extern "C" __global__ void __launch_bounds__(32)
    mma_probe_bf16(const float* __restrict__ a, const float* __restrict__ b,
                   const float* __restrict__ c, float* __restrict__ out) {
    const int g = threadIdx.x >> 2, t = threadIdx.x & 3;
    const unsigned fa[4] = {
        vx_bf16x2(a[g * 16 + 2 * t], a[g * 16 + 2 * t + 1]),
        vx_bf16x2(a[(g + 8) * 16 + 2 * t], a[(g + 8) * 16 + 2 * t + 1]),
        vx_bf16x2(a[g * 16 + 2 * t + 8], a[g * 16 + 2 * t + 9]),
        vx_bf16x2(a[(g + 8) * 16 + 2 * t + 8], a[(g + 8) * 16 + 2 * t + 9])};
    const unsigned fb[2] = {vx_bf16x2(b[(2 * t) * 8 + g], b[(2 * t + 1) * 8 + g]),
                            vx_bf16x2(b[(2 * t + 8) * 8 + g], b[(2 * t + 9) * 8 + g])};
    float acc[4];
    for (int i = 0; i < 4; ++i) acc[i] = c[(g + 8 * (i >> 1)) * 8 + 2 * t + (i & 1)];
    vx_mma_bf16(acc, fa, fb);
    for (int i = 0; i < 4; ++i) out[(g + 8 * (i >> 1)) * 8 + 2 * t + (i & 1)] = acc[i];
}
VX_EMU_ENTRY(mma_probe_bf16, (const float* a, const float* b, const float* c, float* out),
             (a, b, c, out))

// The conversions on their own: tf32[i] holds the bits of vx_tf32(x[i]) and bf16[i] those
// of vx_bf16x2(x[i], x[i ^ 1]) (so the pair order is checked too), one thread per element.
extern "C" __global__ void __launch_bounds__(256)
    tc_round_probe(const float* __restrict__ x, int n, unsigned* __restrict__ tf32,
                   unsigned* __restrict__ bf16) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    tf32[i] = vx_tf32(x[i]);
    bf16[i] = vx_bf16x2(x[i], x[min(i ^ 1, n - 1)]);
}
VX_EMU_ENTRY(tc_round_probe, (const float* x, int n, unsigned* tf32, unsigned* bf16),
             (x, n, tf32, bf16))

#ifndef __CUDACC__
#include <cstring>

// The harness entry for every conv kernel of this file, by name: 0, -1 when the launch
// failed (emu_last_error() says why), -2 when there is no such kernel.
extern "C" int emu_conv3d_tc(const char* name, const EmuDims* d, const Conv3dParams p,
                             const float* a, const float* b, const float* bias, float* out) {
    using Kernel = void (*)(Conv3dParams, const float*, const float*, const float*, float*);
    static const struct {
        const char* name;
        Kernel kernel;
    } kernels[] = {
        {"conv3d_fwd_tf32_n64", conv3d_fwd_tf32_n64},
        {"conv3d_fwd_tf32_n32", conv3d_fwd_tf32_n32},
        {"conv3d_bwd_data_tf32_n64", conv3d_bwd_data_tf32_n64},
        {"conv3d_bwd_data_tf32_n32", conv3d_bwd_data_tf32_n32},
        {"conv3d_bwd_weight_tf32_n64", conv3d_bwd_weight_tf32_n64},
        {"conv3d_bwd_weight_tf32_n32", conv3d_bwd_weight_tf32_n32},
    };
    for (const auto& k : kernels)
        if (!std::strcmp(k.name, name)) return emu_launch(*d, k.kernel, p, a, b, bias, out);
    return -2;
}
#endif
