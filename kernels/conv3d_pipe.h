// The parts of the tensor-core convolutions that do not depend on how a tile is multiplied,
// shared by the mma.sync kernels (conv3d_pipe.cu, sm_80 and later) and the wgmma kernels
// (conv3d_wgmma.cu, sm_90a): the precision policies, the operand loaders of the three
// passes, the store of the accumulators and the kernel definition.
//
// A tile type T gives: Prec (VxBf16 or VxTf32), Elem, THREADS, BM, BN, BK (elements of
// one reduction step per row), ROW_CHUNKS (16-byte chunks of one step per row: BK /
// PER_CHUNK), k_major_offset(r, c) (byte offset of chunk c of row r in a k-major tile),
// and the accumulator shape WARPS_M, WARPS_N, WM, WN, MT = WM / 16, NT = WN / 8, with
// warp w holding rows (w / WARPS_N) * WM .. and columns (w % WARPS_N) * WN .. in the
// m16n8 accumulator layout of mma.h (wgmma's m64nN accumulators of a warpgroup are that
// layout with WM = 16 per warp).
//
// T::KMajorLoop runs the reduction over k-major tiles (forward, backward data) and
// T::MnMajorLoop over mn-major ones (backward weights: [k][row] tiles whose chunk c of k
// row r is at T::mn_major_offset<CHUNKS>(r, c), CHUNKS = chunks per k row):
// Loop::template run<T>(ld, steps, acc), the loader ld issuing step s's copies with
// load(s, a_tile, b_tile) for s = 0, 1, ... in order, begin() before the first barrier and
// ahead(i) after the copies of iteration i.
#pragma once
#include "conv3d_common.h"
#include "mma.h"

// bf16 values as their bits.
using VxBf16Bits = unsigned short;

// ---------------------------------------------------------------------------------------
// Precision policies

// Eight f32 as one chunk of bf16, the first in the low half of the first word.
__device__ __forceinline__ VxU4 vx_bf16_chunk(const float (&v)[8]) {
    return VxU4{vx_bf16x2(v[0], v[1]), vx_bf16x2(v[2], v[3]), vx_bf16x2(v[4], v[5]),
                vx_bf16x2(v[6], v[7])};
}

struct VxBf16 {
    using Elem = VxBf16Bits;
    static constexpr int PER_CHUNK = 8;  // elements per 16-byte chunk
    static constexpr int MMA_K = 16;     // reduction of one mma (m16n8k16)
    __device__ __forceinline__ static VxU4 chunk(const float (&v)[PER_CHUNK]) {
        return vx_bf16_chunk(v);
    }
    __device__ __forceinline__ static void mma(float (&d)[4], const unsigned (&a)[4],
                                               const unsigned (&b)[2]) {
        vx_mma_bf16(d, a, b);
    }
};

struct VxTf32 {
    using Elem = unsigned;
    static constexpr int PER_CHUNK = 4;
    static constexpr int MMA_K = 8;  // m16n8k8
    __device__ __forceinline__ static VxU4 chunk(const float (&v)[PER_CHUNK]) {
        return VxU4{vx_tf32(v[0]), vx_tf32(v[1]), vx_tf32(v[2]), vx_tf32(v[3])};
    }
    __device__ __forceinline__ static void mma(float (&d)[4], const unsigned (&a)[4],
                                               const unsigned (&b)[2]) {
        vx_mma_tf32(d, a, b);
    }
};

// A pack's store of one chunk: its values rounded to P at element `at` of dst.
template <class P>
struct VxPackStore {
    typename P::Elem* dst;
    __device__ __forceinline__ void operator()(size_t at, const float (&v)[P::PER_CHUNK]) const {
        *reinterpret_cast<VxU4*>(dst + at) = P::chunk(v);
    }
};

// x - hi, hi being bf16 bits of x's rounding; 0 where hi is not finite (an infinity or NaN
// stays in hi, and its residual would be NaN). An infinite x still makes NaN sums where
// tf32 makes infinities (inf times the other operand's residual 0): non-finite gradients
// either way.
__device__ __forceinline__ float vx_bf16_residual(float x, unsigned hi_bits) {
    const unsigned hi = hi_bits << 16;
    return (hi & 0x7F800000u) == 0x7F800000u ? 0.0f : x - __uint_as_float(hi);
}

// The store of the bf16x3 packs (ConvBf16x3PackParams): each chunk in all three copies,
// as hi = bf16(x) or, in the copies whose bit residual_copies sets, lo = bf16(x - hi)
// (x - hi is exact in f32). The kernel's sum over the three copies of a pair of operands
// packed (hi, hi, lo) and (hi, lo, hi) is hi hi' + hi lo' + lo hi': x x' but for lo lo' and
// lo's rounding, about 2^-16 of it, against tf32's 2^-11.
struct VxBf16x3Store {
    VxBf16Bits* dst;
    size_t copy_len;
    int residual_copies;
    __device__ __forceinline__ void operator()(size_t at, const float (&v)[8]) const {
        const VxU4 hi = vx_bf16_chunk(v);
        const unsigned words[4] = {hi.x, hi.y, hi.z, hi.w};
        float r[8];
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            r[2 * j] = vx_bf16_residual(v[2 * j], words[j] & 0xFFFFu);
            r[2 * j + 1] = vx_bf16_residual(v[2 * j + 1], words[j] >> 16);
        }
        const VxU4 lo = vx_bf16_chunk(r);
#pragma unroll
        for (int copy = 0; copy < 3; ++copy)
            *reinterpret_cast<VxU4*>(dst + copy * copy_len + at) =
                (residual_copies >> copy) & 1 ? lo : hi;
    }
};

// Channels padded to whole 16-byte chunks.
template <class P>
__device__ __forceinline__ int vx_pad(int c) {
    return (c + P::PER_CHUNK - 1) / P::PER_CHUNK * P::PER_CHUNK;
}

// v[j] = row[c0 + j] for c0 + j < c, else 0; 16-byte loads when rows are 16-byte aligned.
template <int N>
__device__ __forceinline__ void vx_load_chunk(const float* row, int c0, int c, float (&v)[N]) {
    if (c % 4 == 0) {
#pragma unroll
        for (int h = 0; h < N / 4; ++h) {
            const VxF4 q = c0 + 4 * h < c ? vx_load4(row + c0 + 4 * h) : VxF4{0, 0, 0, 0};
            v[4 * h] = q.x;
            v[4 * h + 1] = q.y;
            v[4 * h + 2] = q.z;
            v[4 * h + 3] = q.w;
        }
    } else {
#pragma unroll
        for (int j = 0; j < N; ++j) v[j] = c0 + j < c ? row[c0 + j] : 0.0f;
    }
}

template <class T>
using VxPipeAcc = float[T::MT][T::NT][4];

// The start of a main loop over the ring of stages at `ring`: the loader's begin(), a
// barrier, then the copies of the first AHEAD steps (STAGES - 1 unless the loop keeps more
// stages in use), one commit group each (empty past the last step, so that the loop's
// wait_group counts stay right).
template <class T, int AHEAD = T::STAGES - 1, class Loader>
__device__ __forceinline__ void vx_ring_prologue(Loader& ld, unsigned char* ring, int steps) {
    ld.begin();
    __syncthreads();
#pragma unroll
    for (int s = 0; s < AHEAD; ++s) {
        unsigned char* stage = ring + s * T::STAGE_BYTES;
        if (s < steps) ld.load(s, stage, stage + T::A_BYTES);
        vx_cp_async_commit();
    }
}

// Writes the accumulators of the tile whose first column is `col_base`: GEMM row r
// (block-local `local`) goes to out[out_row(local, r) * cols + col] (skipped when
// out_row < 0), plus bias[col] when there is a bias. The threads that multiply store
// (T::mma_thread() is this thread's index among them, negative for one that only copies).
template <class T, class OutRow>
__device__ __forceinline__ void vx_pipe_store_at(const VxPipeAcc<T>& acc, int rows, int cols,
                                                 int col_base, OutRow out_row,
                                                 const float* bias, float* out) {
    const int tid = T::mma_thread();
    if (tid < 0) return;
    const int warp = tid / 32, lane = tid % 32;
    const int g = lane >> 2, t = lane & 3;
    const int local0 = (warp / T::WARPS_N) * T::WM;
    const int col0 = col_base + (warp % T::WARPS_N) * T::WN + 2 * t;
#pragma unroll
    for (int i = 0; i < T::MT; ++i) {
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            const int local = local0 + 16 * i + g + 8 * h;
            const int r = blockIdx.x * T::BM + local;
            if (r >= rows) continue;
            const int o = out_row(local, r);
            if (o < 0) continue;
            float* dst = out + static_cast<size_t>(o) * cols;
#pragma unroll
            for (int j = 0; j < T::NT; ++j) {
                const int c = col0 + 8 * j;
                if (c >= cols) continue;
                float v0 = acc[i][j][2 * h], v1 = acc[i][j][2 * h + 1];
                const bool pair = c + 1 < cols;
                if (bias) {
                    v0 += bias[c];
                    if (pair) v1 += bias[c + 1];
                }
                if (pair && cols % 2 == 0) {
                    *reinterpret_cast<VxF2*>(dst + c) = VxF2{v0, v1};
                } else {
                    dst[c] = v0;
                    if (pair) dst[c + 1] = v1;
                }
            }
        }
    }
}

// vx_pipe_store_at for the tile of grid column blockIdx.y.
template <class T, class OutRow>
__device__ __forceinline__ void vx_pipe_store(const VxPipeAcc<T>& acc, int rows, int cols,
                                              OutRow out_row, const float* bias, float* out) {
    vx_pipe_store_at<T>(acc, rows, cols, static_cast<int>(blockIdx.y) * T::BN, out_row, bias,
                        out);
}

// The next tap of a row-major (d, h, w) tap grid.
__device__ __forceinline__ void vx_next_tap(int& z, int& y, int& x, int h, int w) {
    if (++x == w) {
        x = 0;
        if (++y == h) {
            y = 0;
            ++z;
        }
    }
}

// The voxel a gathered row reads at the tap `tap_offset` voxels from its corner, or voxel 0
// for a copy that reads nothing (!ok): outside the volume the index may be negative, and
// its address would then lie far outside any buffer.
__device__ __forceinline__ unsigned vx_gathered_voxel(bool ok, int corner, int tap_offset) {
    return ok ? static_cast<unsigned>(corner + tap_offset) : 0u;
}

// The gathered (k-major) operand of forward and backward data: this thread copies chunk
// column threadIdx.x % ROW_CHUNKS of ITERS rows of the tile, row r reading the packed
// volume `src` (dims, `stride` elements per voxel) at its window corner plus `tap`, element
// `c0` of the voxel; zeros outside the volume or past the reduction (!k_ok). A row costs
// its bounds test, one addition and one wide multiply-add for the address (see VxRow); its
// place in the tile is the first row's plus whole swizzle periods (both families' k-major
// swizzles repeat every 8 rows, and a thread's rows are ROW_STEP apart).
template <class T, int ITERS, class E>
__device__ __forceinline__ void vx_gather_rows(unsigned char* tile, const VxRow* rows,
                                               const E* src, const int (&tap)[3],
                                               const int (&dims)[3], int stride, int c0,
                                               bool k_ok) {
    constexpr int ROW_STEP = T::LOAD_THREADS / T::ROW_CHUNKS;
    static_assert(ROW_STEP % 8 == 0, "a thread's rows sit at one phase of the swizzle");
    const int c = threadIdx.x % T::ROW_CHUNKS;
    const int r0 = threadIdx.x / T::ROW_CHUNKS;
    unsigned char* dst = tile + T::k_major_offset(r0, c);
    const int tap_offset = vx_tap_offset(tap[0], tap[1], tap[2], dims[1], dims[2]);
    // Byte addresses: voxel times the voxel's bytes plus the base is one wide multiply-add.
    const char* src_c0 = reinterpret_cast<const char*>(src + c0);
    const unsigned voxel_bytes = static_cast<unsigned>(stride) * sizeof(E);
    // Tiles with registers to spare compute every row's address before the first copy:
    // ptxas then puts its filler before the copies once rather than before each (an
    // H100's SASS has three never-executed LDS ahead of a cp.async that follows a shared
    // load). The mma.sync tiles are at their register cap and copy row by row.
    const char* from[ITERS];
    bool ok[ITERS];
#pragma unroll
    for (int j = 0; j < ITERS; ++j) {
        const VxRow& row = rows[r0 + j * ROW_STEP];
        // `&`, not `&&`: no branch per row.
        ok[j] = k_ok & vx_inside(row.z + tap[0], row.y + tap[1], row.x + tap[2], dims[0],
                                 dims[1], dims[2]);
        from[j] =
            vx_mad_wide(vx_gathered_voxel(ok[j], row.corner, tap_offset), voxel_bytes, src_c0);
        if constexpr (!T::SPARE_REGISTERS)
            vx_cp_async16_activation(dst + j * ROW_STEP * T::ROW_CHUNKS * 16, from[j], ok[j]);
    }
    if constexpr (T::SPARE_REGISTERS) {
#pragma unroll
        for (int j = 0; j < ITERS; ++j)
            vx_cp_async16_activation(dst + j * ROW_STEP * T::ROW_CHUNKS * 16, from[j], ok[j]);
    }
}

// ---------------------------------------------------------------------------------------
// Forward: A[m][(tap, ci)] = x at output voxel m's window, B[(tap, ci)][co] from w packed
// [cout][tap][cin_p]. Each thread copies chunk column tid % ROW_CHUNKS of A_ITERS rows of A and
// B_ITERS rows of B, so it follows one k position: k = tap * cin_p + ci. Its B rows are
// ROW_STEP output channels apart, one wide multiply-add each from its first row's chunk,
// which moves on by a step per load.
template <class T>
struct VxPipeForward {
    // No per-step tables in shared memory (see VxPipeBackwardWeights).
    static constexpr bool STEP_TABLES = false;
    using P = typename T::Prec;
    using E = typename T::Elem;
    static constexpr int A_ITERS = T::BM * T::ROW_CHUNKS / T::LOAD_THREADS;
    static constexpr int B_ITERS = T::BN * T::ROW_CHUNKS / T::LOAD_THREADS;
    static constexpr int ROW_STEP = T::LOAD_THREADS / T::ROW_CHUNKS;
    static_assert(A_ITERS >= 1 && B_ITERS >= 1, "every thread copies");
    struct Shared {
        VxRow rows[T::BM];
    };

    const Conv3dParams& p;
    const E* x;
    Shared& s;
    int cin_p, k_end;
    int k, ci, kz, ky, kx;
    // B: this thread's chunk in its first row (channel co0) at k, the bytes between rows.
    const char* w_chunk;
    unsigned w_row_bytes;
    int co0;

    __device__ __forceinline__ VxPipeForward(const Conv3dParams& params, const E* x_,
                                             const E* w, Shared& s_, int k_begin, int k_end_)
        : p(params), x(x_), s(s_), k_end(k_end_) {
        cin_p = vx_pad<P>(p.cin);
        const int k_total = p.k_d * p.k_h * p.k_w * cin_p;
        k = k_begin + P::PER_CHUNK * (threadIdx.x % T::ROW_CHUNKS);
        const int tap = k / cin_p;
        ci = k - tap * cin_p;
        vx_split3(tap, p.k_h, p.k_w, kz, ky, kx);
        co0 = blockIdx.y * T::BN + threadIdx.x / T::ROW_CHUNKS;
        w_row_bytes = static_cast<unsigned>(k_total) * sizeof(E);
        w_chunk = vx_mad_wide(static_cast<unsigned>(co0), w_row_bytes,
                              reinterpret_cast<const char*>(w + k));
    }

    __device__ __forceinline__ void begin() {
        const int m_total = p.n * p.out_d * p.out_h * p.out_w;
        for (int i = threadIdx.x; i < T::BM; i += T::LOAD_THREADS)
            s.rows[i] = vx_forward_row(p, blockIdx.x * T::BM + i, m_total);
    }

    __device__ __forceinline__ void ahead(int) {}

    __device__ __forceinline__ void load(int, unsigned char* a_tile, unsigned char* b_tile) {
        const int c = threadIdx.x % T::ROW_CHUNKS;
        const bool k_ok = k < k_end;
        vx_gather_rows<T, A_ITERS>(a_tile, s.rows, x, {kz, ky, kx}, {p.in_d, p.in_h, p.in_w},
                                   cin_p, ci, k_ok);
        // A copy that is not ok reads nothing (src-size 0), wherever its address points.
#pragma unroll
        for (int j = 0; j < B_ITERS; ++j) {
            const int r = threadIdx.x / T::ROW_CHUNKS + j * ROW_STEP;
            vx_cp_async16(b_tile + T::k_major_offset(r, c),
                          vx_mad_wide(j * ROW_STEP, w_row_bytes, w_chunk),
                          k_ok & (co0 + j * ROW_STEP < p.cout));
        }
        w_chunk += T::BK * sizeof(E);
        k += T::BK;
        ci += T::BK;
        while (ci >= cin_p) {
            ci -= cin_p;
            vx_next_tap(kz, ky, kx, p.k_h, p.k_w);
        }
    }
};

template <class T>
__device__ __forceinline__ void vx_pipe_forward(const Conv3dParams& p, const typename T::Elem* x,
                                                const typename T::Elem* w, const float* bias,
                                                float* y) {
    VX_SHARED(typename VxPipeForward<T>::Shared, s, );
    const int k_total = p.k_d * p.k_h * p.k_w * vx_pad<typename T::Prec>(p.cin);
    int k_begin, k_end;
    vx_split_range(p, blockIdx.z, k_total, k_begin, k_end);
    VxPipeForward<T> ld(p, x, w, s, k_begin, k_end);
    VxPipeAcc<T> acc = {};
    T::KMajorLoop::template run<T>(ld, (k_end - k_begin + T::BK - 1) / T::BK, acc);
    const int rows = p.n * p.out_d * p.out_h * p.out_w;
    vx_pipe_store<T>(
        acc, rows, p.cout, [](int, int r) { return r; }, blockIdx.z == 0 ? bias : nullptr,
        y + static_cast<size_t>(blockIdx.z) * rows * p.cout);
}

// ---------------------------------------------------------------------------------------
// Backward data, one stride phase: A[v][(t, co)] = dy gathered at phase voxel v's window
// (tap t of the phase), B[(t, co)][ci] from w packed [cin][tap][cout_p] at the kernel tap
// of t. The thread follows k = t * cout_p + co as the forward does; its B rows are ROW_STEP
// input channels apart, one wide multiply-add each from its first row's chunk.
template <class T>
struct VxPipeBackwardData {
    // No per-step tables in shared memory (see VxPipeBackwardWeights).
    static constexpr bool STEP_TABLES = false;
    using P = typename T::Prec;
    using E = typename T::Elem;
    static constexpr int A_ITERS = T::BM * T::ROW_CHUNKS / T::LOAD_THREADS;
    static constexpr int B_ITERS = T::BN * T::ROW_CHUNKS / T::LOAD_THREADS;
    static constexpr int ROW_STEP = T::LOAD_THREADS / T::ROW_CHUNKS;
    static_assert(A_ITERS >= 1 && B_ITERS >= 1, "every thread copies");
    struct Shared {
        VxRow rows[T::BM];
        int dx_voxel[T::BM];
    };

    const Conv3dParams& p;
    const VxPhase& ph;
    const E* dy;
    Shared& s;
    int cout_p, k_end;
    int k, co, tz = 0, ty = 0, tx = 0;
    // B: the start of this thread's first row (input channel ci0), the bytes between rows.
    const char* w_row;
    unsigned w_row_bytes;
    int ci0;

    __device__ __forceinline__ VxPipeBackwardData(const Conv3dParams& params,
                                                  const VxPhase& phase, const E* dy_,
                                                  const E* w, Shared& s_, int k_begin,
                                                  int k_end_)
        : p(params), ph(phase), dy(dy_), s(s_), k_end(k_end_) {
        cout_p = vx_pad<P>(p.cout);
        const int taps = p.k_d * p.k_h * p.k_w;
        ci0 = blockIdx.y * T::BN + threadIdx.x / T::ROW_CHUNKS;
        w_row_bytes = static_cast<unsigned>(taps * cout_p) * sizeof(E);
        w_row = vx_mad_wide(static_cast<unsigned>(ci0), w_row_bytes,
                            reinterpret_cast<const char*>(w));
        k = k_begin + P::PER_CHUNK * (threadIdx.x % T::ROW_CHUNKS);
        co = k;
        // A phase without taps has no steps (and its zero sizes must not be divided by).
        if (k < k_end) {
            const int t = k / cout_p;
            co = k - t * cout_p;
            vx_split3(t, ph.taps[1], ph.taps[2], tz, ty, tx);
        }
    }

    __device__ __forceinline__ void begin() {
        const int m_total = vx_phase_rows(p, ph);
        for (int i = threadIdx.x; i < T::BM; i += T::LOAD_THREADS)
            s.rows[i] = vx_phase_row(p, ph, blockIdx.x * T::BM + i, m_total, s.dx_voxel[i]);
    }

    __device__ __forceinline__ void ahead(int) {}

    __device__ __forceinline__ void load(int, unsigned char* a_tile, unsigned char* b_tile) {
        const int c = threadIdx.x % T::ROW_CHUNKS;
        const bool k_ok = k < k_end;
        vx_gather_rows<T, A_ITERS>(a_tile, s.rows, dy, {tz, ty, tx},
                                   {p.out_d, p.out_h, p.out_w}, cout_p, co, k_ok);
        const int tap = k_ok ? vx_phase_kernel_tap(p, ph, tz, ty, tx) : 0;
        // A copy that is not ok reads nothing (src-size 0), wherever its address points.
        const char* w_chunk =
            vx_mad_wide(static_cast<unsigned>(tap * cout_p + co), sizeof(E), w_row);
#pragma unroll
        for (int j = 0; j < B_ITERS; ++j) {
            const int r = threadIdx.x / T::ROW_CHUNKS + j * ROW_STEP;
            vx_cp_async16(b_tile + T::k_major_offset(r, c),
                          vx_mad_wide(j * ROW_STEP, w_row_bytes, w_chunk),
                          k_ok & (ci0 + j * ROW_STEP < p.cin));
        }
        k += T::BK;
        co += T::BK;
        while (co >= cout_p) {
            co -= cout_p;
            vx_next_tap(tz, ty, tx, ph.taps[1], ph.taps[2]);
        }
    }
};

// grid.z runs over (split, phase), phase fastest.
template <class T>
__device__ __forceinline__ void vx_pipe_backward_data(const Conv3dParams& p,
                                                      const typename T::Elem* dy,
                                                      const typename T::Elem* w,
                                                      const float* bias, float* dx) {
    VX_SHARED(typename VxPipeBackwardData<T>::Shared, s, );
    const int phases = p.stride_d * p.stride_h * p.stride_w;
    const int split = blockIdx.z / phases;
    const VxPhase ph = vx_phase(p, blockIdx.z % phases);
    const int rows = vx_phase_rows(p, ph);
    if (static_cast<int>(blockIdx.x) * T::BM >= rows) return;
    const int k_total = ph.taps[0] * ph.taps[1] * ph.taps[2] * vx_pad<typename T::Prec>(p.cout);
    int k_begin, k_end;
    vx_split_range(p, split, k_total, k_begin, k_end);
    VxPipeBackwardData<T> ld(p, ph, dy, w, s, k_begin, k_end);
    VxPipeAcc<T> acc = {};
    T::KMajorLoop::template run<T>(ld, (k_end - k_begin + T::BK - 1) / T::BK, acc);
    const int voxels = p.n * p.in_d * p.in_h * p.in_w;
    vx_pipe_store<T>(
        acc, rows, p.cin, [&](int local, int) { return s.dx_voxel[local]; },
        split == 0 ? bias : nullptr, dx + static_cast<size_t>(split) * voxels * p.cin);
}

// ---------------------------------------------------------------------------------------
// Backward weights: rows (tap, ci) over the padded channels, columns cout, the reduction
// over the output voxels m of one split. Both tiles are [m][row]: A from x at m's window
// plus the row's tap, B from dy. A thread's A chunk column (one tap, a chunk of channels)
// is fixed for the block; the voxel coordinates of each step's BK m come from a ring of
// per-step tables in static shared memory, filled STAGES steps ahead by the first BK
// threads. Each of those keeps the output voxel it fills next (in registers where the tile
// has them to spare, else in shared memory) and adds BK to it per step (vx_advance_voxel):
// the divisions that split a voxel index would cost its warp about as many instructions as
// its share of the step's copies, and every warp waits for the slowest at the step's
// barrier.
template <class T>
struct VxPipeBackwardWeights {
    // ahead() writes the voxel tables that later loads of every loading thread read:
    // the loading threads must meet between steps.
    static constexpr bool STEP_TABLES = true;
    using P = typename T::Prec;
    using E = typename T::Elem;
    static constexpr int A_CHUNKS = T::BM / P::PER_CHUNK, B_CHUNKS = T::BN / P::PER_CHUNK;
    static constexpr int A_ITERS = T::BK * A_CHUNKS / T::LOAD_THREADS;
    static constexpr int B_ITERS = T::BK * B_CHUNKS / T::LOAD_THREADS;
    static_assert(A_ITERS >= 1 && B_ITERS >= 1 && T::LOAD_THREADS % A_CHUNKS == 0 &&
                      T::LOAD_THREADS % B_CHUNKS == 0 && T::LOAD_THREADS >= T::BK,
                  "every thread copies whole chunk columns");
    struct Shared {
        VxRow rows[T::STAGES][T::BK];
        // Per filling thread: the output voxel m of the row it fills next, and m split into
        // (sample, z, y, x); then BK split the same way.
        int next[5][T::BK];
        int step[4];
    };

    const Conv3dParams& p;
    Shared& s;
    int m_begin, m_end;
    // This thread's A chunk: rows (tap, ci..ci+PER_CHUNK-1), tap = (kz, ky, kx) at
    // tap_offset voxels from a row's corner, read from x_chunk + voxel * x_voxel_bytes.
    int kz, ky, kx, tap_offset;
    bool row_ok;
    const char* x_chunk;
    unsigned x_voxel_bytes;
    // The slot of the next load's voxel table in s.rows.
    int table = 0;
    // A filling thread's next voxel m and its (sample, z, y, x), where T::SPARE_REGISTERS.
    int next_m, next_n, next_z, next_y, next_x;
    const E* dy;

    __device__ __forceinline__ VxPipeBackwardWeights(const Conv3dParams& params, const E* x,
                                                     const E* dy_, Shared& s_, int m_begin_,
                                                     int m_end_)
        : p(params), s(s_), m_begin(m_begin_), m_end(m_end_), dy(dy_) {
        const int cin_p = vx_pad<P>(p.cin);
        const int k = blockIdx.x * T::BM + P::PER_CHUNK * (threadIdx.x % A_CHUNKS);
        const int tap = k / cin_p;
        row_ok = tap < p.k_d * p.k_h * p.k_w;
        vx_split3(tap, p.k_h, p.k_w, kz, ky, kx);
        tap_offset = vx_tap_offset(kz, ky, kx, p.in_h, p.in_w);
        x_chunk = reinterpret_cast<const char*>(x + (k - tap * cin_p));
        x_voxel_bytes = static_cast<unsigned>(cin_p) * sizeof(E);
    }

    // The tables of the first STAGES steps, and where ahead() goes on: step STAGES.
    __device__ __forceinline__ void begin() {
        for (int i = threadIdx.x; i < T::STAGES * T::BK; i += T::LOAD_THREADS)
            s.rows[i / T::BK][i % T::BK] = vx_forward_row(p, m_begin + i, m_end);
        const int lane = static_cast<int>(threadIdx.x);
        if (lane < T::BK) {
            const int m = m_begin + T::STAGES * T::BK + lane;
            int nn, z, y, x;
            vx_split_voxel(m, p.out_d, p.out_h, p.out_w, nn, z, y, x);
            keep_next(lane, m, nn, z, y, x);
        }
        if (lane == 0) vx_split_voxel(T::BK, p.out_d, p.out_h, p.out_w, s.step[0], s.step[1],
                                      s.step[2], s.step[3]);
    }

    // Step i + STAGES takes the slot of step i's table, last read when step i was loaded
    // (at least one iteration earlier, or in the prologue), before this iteration's barrier;
    // the next iteration's barrier publishes the new table before step i + STAGES is loaded.
    // Called once per step, in order (a thread's own entries of `next`, and `step`, written
    // before the prologue's barrier), so this thread's next voxel is step i + STAGES's.
    __device__ __forceinline__ void ahead(int i) {
        const int lane = static_cast<int>(threadIdx.x);
        if (lane < T::BK) {
            int m, nn, z, y, x;
            if constexpr (T::SPARE_REGISTERS) {
                m = next_m, nn = next_n, z = next_z, y = next_y, x = next_x;
            } else {
                m = s.next[0][lane], nn = s.next[1][lane], z = s.next[2][lane],
                y = s.next[3][lane], x = s.next[4][lane];
            }
            s.rows[i % T::STAGES][lane] =
                vx_forward_row_at(p, nn, z, y, x, m < m_end);
            vx_advance_voxel(nn, z, y, x, s.step[0], s.step[1], s.step[2], s.step[3], p.out_d,
                             p.out_h, p.out_w);
            keep_next(lane, m + T::BK, nn, z, y, x);
        }
    }

    // Keeps a filling thread's next voxel.
    __device__ __forceinline__ void keep_next(int lane, int m, int nn, int z, int y, int x) {
        if constexpr (T::SPARE_REGISTERS) {
            next_m = m, next_n = nn, next_z = z, next_y = y, next_x = x;
        } else {
            s.next[0][lane] = m, s.next[1][lane] = nn, s.next[2][lane] = z;
            s.next[3][lane] = y, s.next[4][lane] = x;
        }
    }

    // Loads come in step order, one each: `table` is this step's.
    // A copy that is not ok reads nothing (src-size 0), wherever its address points.
    __device__ __forceinline__ void load(int step, unsigned char* a_tile,
                                         unsigned char* b_tile) {
        VX_EMU_EXPECT(table == step % T::STAGES,
                      "backward weights: a load out of step order read another step's table");
        const VxRow* rows = s.rows[table];
        table = table + 1 == T::STAGES ? 0 : table + 1;
        const int ca = threadIdx.x % A_CHUNKS;
        // As vx_gather_rows: every address first where the tile has registers to spare.
        const char* from[A_ITERS];
        bool ok[A_ITERS];
#pragma unroll
        for (int j = 0; j < A_ITERS; ++j) {
            const int r = threadIdx.x / A_CHUNKS + j * (T::LOAD_THREADS / A_CHUNKS);
            const VxRow& row = rows[r];
            ok[j] = row_ok & vx_inside(row.z + kz, row.y + ky, row.x + kx, p.in_d, p.in_h,
                                       p.in_w);
            from[j] = vx_mad_wide(vx_gathered_voxel(ok[j], row.corner, tap_offset),
                                  x_voxel_bytes, x_chunk);
            if constexpr (!T::SPARE_REGISTERS)
                vx_cp_async16_activation(a_tile + T::template mn_major_offset<A_CHUNKS>(r, ca),
                                         from[j], ok[j]);
        }
        if constexpr (T::SPARE_REGISTERS) {
#pragma unroll
            for (int j = 0; j < A_ITERS; ++j) {
                const int r = threadIdx.x / A_CHUNKS + j * (T::LOAD_THREADS / A_CHUNKS);
                vx_cp_async16_activation(a_tile + T::template mn_major_offset<A_CHUNKS>(r, ca),
                                         from[j], ok[j]);
            }
        }
        const int cb = threadIdx.x % B_CHUNKS;
        const int n = blockIdx.y * T::BN + P::PER_CHUNK * cb;
        const int cout_p = vx_pad<P>(p.cout);
        const int m0 = m_begin + step * T::BK;
        const char* dy_n = reinterpret_cast<const char*>(dy + n);
#pragma unroll
        for (int j = 0; j < B_ITERS; ++j) {
            const int r = threadIdx.x / B_CHUNKS + j * (T::LOAD_THREADS / B_CHUNKS);
            vx_cp_async16(b_tile + T::template mn_major_offset<B_CHUNKS>(r, cb),
                          vx_mad_wide(m0 + r, cout_p * sizeof(E), dy_n),
                          (m0 + r < m_end) & (n < cout_p));
        }
    }
};

// dw's row (tap, input channel) of backward weights' GEMM row r (tap, padded channel, cin_p
// of them a tap), or -1 for a padding channel.
__device__ __forceinline__ int vx_weight_row(const Conv3dParams& p, int cin_p, int r) {
    const int tap = r / cin_p, c = r - tap * cin_p;
    return c < p.cin ? tap * p.cin + c : -1;
}

// Writes backward weights' accumulators, rows (tap, padded channel), into this split's
// partial of dw [tap][cin][cout].
template <class T>
__device__ __forceinline__ void vx_pipe_store_weights(const VxPipeAcc<T>& acc,
                                                      const Conv3dParams& p, float* dw) {
    const int cin_p = vx_pad<typename T::Prec>(p.cin);
    const int taps = p.k_d * p.k_h * p.k_w;
    vx_pipe_store<T>(
        acc, taps * cin_p, p.cout, [&](int, int r) { return vx_weight_row(p, cin_p, r); },
        nullptr, dw + static_cast<size_t>(blockIdx.z) * taps * p.cin * p.cout);
}

template <class T>
__device__ __forceinline__ void vx_pipe_backward_weights(const Conv3dParams& p,
                                                         const typename T::Elem* x,
                                                         const typename T::Elem* dy,
                                                         const float*, float* dw) {
    VX_SHARED(typename VxPipeBackwardWeights<T>::Shared, s, );
    const int m_total = p.n * p.out_d * p.out_h * p.out_w;
    int m_begin, m_end;
    vx_split_range(p, blockIdx.z, m_total, m_begin, m_end);
    VxPipeBackwardWeights<T> ld(p, x, dy, s, m_begin, m_end);
    VxPipeAcc<T> acc = {};
    T::MnMajorLoop::template run<T>(ld, (m_end - m_begin + T::BK - 1) / T::BK, acc);
    vx_pipe_store_weights<T>(acc, p, dw);
}

// A tensor-core convolution kernel: pass `pass` (vx_pipe_forward, vx_pipe_backward_data,
// vx_pipe_backward_weights) on tile `Tile`, taking (params, a, b, bias, out) as every conv
// kernel does (conv3d_common.h).
#define VX_CONV_TC_KERNEL(name, pass, Tile)                                                  \
    extern "C" __global__ void __launch_bounds__(Tile::THREADS, Tile::MIN_BLOCKS)              \
        name(const __grid_constant__ Conv3dParams p, const Tile::Elem* __restrict__ a,         \
             const Tile::Elem* __restrict__ b, const float* __restrict__ bias,                 \
             float* __restrict__ out) {                                                        \
        pass<Tile>(p, a, b, bias, out);                                                        \
    }

#ifndef __CUDACC__
#include <cstring>

// A conv kernel of the harness and its name.
template <class E>
struct VxEmuConv {
    const char* name;
    void (*kernel)(Conv3dParams, const E*, const E*, const float*, float*);
};

// Launches the kernel called `name` among `kernels` on packed operands: 0, -1 when the
// launch failed (emu_last_error() says why), -2 when there is no such kernel.
template <class E, size_t N>
int vx_emu_conv(const VxEmuConv<E> (&kernels)[N], const char* name, const EmuDims* d,
                const Conv3dParams& p, const void* a, const void* b, const float* bias,
                float* out) {
    for (const auto& k : kernels)
        if (!std::strcmp(k.name, name))
            return emu_launch(*d, k.kernel, p, static_cast<const E*>(a),
                              static_cast<const E*>(b), bias, out);
    return -2;
}
#endif
