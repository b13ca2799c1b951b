// The mma.sync machinery of the tensor-core convolutions (sm_80 and later), shared by the
// gathering kernels (conv3d_pipe.cu) and the halo kernels (conv3d_halo.cu): the swizzled
// shared-memory tiles, their ldmatrix fragments, the multiply of one stage and the
// cp.async ring that feeds it. See conv3d_pipe.cu for the layouts and why.
#pragma once
#include "conv3d_pipe.h"

// Byte offset of chunk c (16 bytes) of row r in a tile of CHUNKS chunks per row. The chunk
// index is XORed with row bits so that 8 consecutive rows at one logical chunk (what an
// ldmatrix reads) and 8 consecutive chunks (what a quarter warp copies) land in 8 distinct
// 16-byte bank groups: bits 1..2 of the row for 64-byte rows (two rows share 128 bytes);
// for rows of 128 bytes and more, bits 0..2 of the row rotated to 2, 0, 1, so that rows
// r..r+3 (r a multiple of 4) move an aligned pair of chunks to 4 distinct pairs: the
// 32-bit loads of a TF32 mn-major fragment (rows t, columns g and g + 8) are then
// conflict free too.
template <int CHUNKS>
__device__ __forceinline__ int vx_swizzle(int r, int c) {
    static_assert(CHUNKS == 4 || CHUNKS % 8 == 0, "64-byte rows or multiples of 128 bytes");
    const int x = CHUNKS == 4 ? (r >> 1) & 3 : ((r & 3) << 1) | ((r >> 2) & 1);
    return (r * CHUNKS + (c ^ x)) * 16;
}

// The warps of an mma.sync tile: WARPS_M x WARPS_N warps of WM x WN results each, in the
// m16n8 accumulator layout, over reduction steps of VX_CONV_PIPE_STEP_BYTES per row (4
// chunks, two mma k steps), the swizzled offsets of k-major and mn-major tiles.
template <class P, int WARPS_M_, int WARPS_N_, int WM_, int WN_, int MIN_BLOCKS_>
struct VxSyncWarps {
    using Prec = P;
    using Elem = typename P::Elem;
    static constexpr int WARPS_M = WARPS_M_, WARPS_N = WARPS_N_, WM = WM_, WN = WN_;
    static constexpr int MIN_BLOCKS = MIN_BLOCKS_;
    static constexpr int THREADS = 32 * WARPS_M * WARPS_N;
    // Every thread copies and multiplies (conv3d_pipe.h).
    static constexpr int LOAD_THREADS = THREADS;
    __device__ __forceinline__ static int mma_thread() { return threadIdx.x; }
    static constexpr int BK = VX_CONV_PIPE_STEP_BYTES / static_cast<int>(sizeof(Elem));
    static constexpr int MT = WM / 16, NT = WN / 8;  // mma tiles per warp
    static constexpr int ROW_CHUNKS = 4;
    // These tiles are at their register cap: the loaders keep the least per thread
    // (vx_gather_rows, VxPipeBackwardWeights).
    static constexpr bool SPARE_REGISTERS = false;
    __device__ __forceinline__ static int k_major_offset(int r, int c) {
        return vx_swizzle<ROW_CHUNKS>(r, c);
    }
    template <int CHUNKS>
    __device__ __forceinline__ static int mn_major_offset(int r, int c) {
        return vx_swizzle<CHUNKS>(r, c);
    }
    static_assert(sizeof(Elem) * P::PER_CHUNK == 16 && BK == ROW_CHUNKS * P::PER_CHUNK &&
                      BK == 2 * P::MMA_K,
                  "k-major rows of 4 chunks, two mma k steps per stage");
    static_assert(WM % 16 == 0 && WN % 16 == 0, "whole mma tiles, B fragments by pairs");
};

struct VxSyncKMajorLoop;
struct VxSyncMnMajorLoop;

// The gathering kernels' tile (conv3d_pipe.cu): BM x BN results, one A and one B tile of
// a step per stage.
template <class P, int WARPS_M_, int WARPS_N_, int WM_, int WN_, int MIN_BLOCKS_>
struct VxPipeTile : VxSyncWarps<P, WARPS_M_, WARPS_N_, WM_, WN_, MIN_BLOCKS_> {
    using KMajorLoop = VxSyncKMajorLoop;
    using MnMajorLoop = VxSyncMnMajorLoop;
    static constexpr int BM = WARPS_M_ * WM_, BN = WARPS_N_ * WN_;
    static constexpr int STAGES = VX_CONV_PIPE_STAGES;
    static constexpr int A_BYTES = BM * VX_CONV_PIPE_STEP_BYTES;
    static constexpr int B_BYTES = BN * VX_CONV_PIPE_STEP_BYTES;
    static constexpr int STAGE_BYTES = A_BYTES + B_BYTES;
    static_assert(BM == VX_CONV_TC_BM, "params_conv.h");
    static_assert(STAGES >= 2, "a ring");
};
// Warp tiles of 64 x 64 (128 columns) and 64 x 32: the larger a warp's tile, the fewer
// shared-memory bytes (ldmatrix, cp.async) per mma, and shared-memory bandwidth is what
// bounds mma.sync here.
template <class P>
using VxPipeN128 = VxPipeTile<P, 2, 2, 64, 64, 2>;
template <class P>
using VxPipeN64 = VxPipeTile<P, 2, 2, 64, 32, 4>;
// 32 columns: four 32 x 32 warps for forward and backward data; two 64 x 32 warps for
// backward weights, whose mn-major fragment loads gain most from the larger warp tile
// (measured on an H200 at BF16: the 4-warp tile was faster for the other two passes).
template <class P>
using VxPipeN32 = VxPipeTile<P, 4, 1, 32, 32, 4>;
template <class P>
using VxPipeN32Narrow = VxPipeTile<P, 2, 1, 64, 32, 4>;
static_assert(VxPipeN128<VxBf16>::THREADS == VX_CONV_THREADS &&
                  VxPipeN64<VxBf16>::THREADS == VX_CONV_THREADS &&
                  VxPipeN32<VxBf16>::THREADS == VX_CONV_THREADS &&
                  VxPipeN32Narrow<VxBf16>::THREADS == VX_CONV_PIPE_NARROW_THREADS,
              "params_conv.h");

// Fragments of tiles stored [row][k] (k-major: 4 chunks per row) for mma k step `ks` of a
// stage (chunks 2 ks, 2 ks + 1), through ldmatrix.x4 at either precision.
template <class T>
struct VxKMajorFrags {
    // A of rows m0..m0+15: matrices (rows 0-7 | 8-15) x (chunk lo | hi).
    __device__ __forceinline__ static void a(unsigned (&f)[4], const unsigned char* tile,
                                             int m0, int ks, int lane) {
        vx_ldmatrix<4, false>(f, tile + vx_swizzle<4>(m0 + (lane & 15), 2 * ks + (lane >> 4)));
    }
    // B of columns n0..n0+15: f[0], f[1] the k halves of columns n0..n0+7, f[2], f[3] of
    // n0+8..n0+15.
    __device__ __forceinline__ static void b(unsigned (&f)[4], const unsigned char* tile,
                                             int n0, int ks, int lane) {
        const int q = lane >> 3;
        vx_ldmatrix<4, false>(
            f, tile + vx_swizzle<4>(n0 + (lane & 7) + 8 * (q >> 1), 2 * ks + (q & 1)));
    }
};

// Fragments of tiles stored [k][row] (mn-major: BM and BN elements per row) for mma k
// step `ks` (rows ks * MMA_K ..), in the same register order as VxKMajorFrags; A's k rows
// may start `k_shift` rows further (the halo kernels' taps along w).
template <class T>
struct VxMnMajorFrags {
    using P = typename T::Prec;
    static constexpr int A_CHUNKS = T::BM / P::PER_CHUNK, B_CHUNKS = T::BN / P::PER_CHUNK;

    // The 32-bit word of tf32 element e of row r.
    template <int CHUNKS>
    __device__ __forceinline__ static unsigned word(const unsigned char* tile, int r, int e) {
        return *reinterpret_cast<const unsigned*>(tile + vx_swizzle<CHUNKS>(r, e >> 2) +
                                                  4 * (e & 3));
    }

    __device__ __forceinline__ static void a(unsigned (&f)[4], const unsigned char* tile,
                                             int m0, int ks, int lane, int k_shift = 0) {
        const int kk = ks * P::MMA_K + k_shift;
        if constexpr (P::PER_CHUNK == 8) {
            const int q = lane >> 3;
            vx_ldmatrix<4, true>(
                f, tile + vx_swizzle<A_CHUNKS>(kk + (lane & 7) + 8 * (q >> 1), m0 / 8 + (q & 1)));
        } else {
            const int g = lane >> 2, t = lane & 3;
            f[0] = word<A_CHUNKS>(tile, kk + t, m0 + g);
            f[1] = word<A_CHUNKS>(tile, kk + t, m0 + g + 8);
            f[2] = word<A_CHUNKS>(tile, kk + t + 4, m0 + g);
            f[3] = word<A_CHUNKS>(tile, kk + t + 4, m0 + g + 8);
        }
    }
    __device__ __forceinline__ static void b(unsigned (&f)[4], const unsigned char* tile,
                                             int n0, int ks, int lane) {
        const int kk = ks * P::MMA_K;
        if constexpr (P::PER_CHUNK == 8) {
            const int q = lane >> 3;
            vx_ldmatrix<4, true>(
                f, tile + vx_swizzle<B_CHUNKS>(kk + (lane & 7) + 8 * (q & 1), n0 / 8 + (q >> 1)));
        } else {
            const int g = lane >> 2, t = lane & 3;
            f[0] = word<B_CHUNKS>(tile, kk + t, n0 + g);
            f[1] = word<B_CHUNKS>(tile, kk + t + 4, n0 + g);
            f[2] = word<B_CHUNKS>(tile, kk + t, n0 + g + 8);
            f[3] = word<B_CHUNKS>(tile, kk + t + 4, n0 + g + 8);
        }
    }
};

// acc += A B over one step for this warp's WM x WN part: a_frag(f, i, ks) fetches the A
// fragment of the warp's mma row i (rows 16 i ..) at mma k step ks, b_frag(f, j, ks) the
// B fragments of its columns 16 j .. 16 j + 15.
template <class T, class AFrag, class BFrag>
__device__ __forceinline__ void vx_sync_multiply(VxPipeAcc<T>& acc, AFrag a_frag,
                                                 BFrag b_frag) {
#pragma unroll
    for (int ks = 0; ks < 2; ++ks) {
        unsigned a[T::MT][4], b[T::NT / 2][4];
#pragma unroll
        for (int i = 0; i < T::MT; ++i) a_frag(a[i], i, ks);
#pragma unroll
        for (int j = 0; j < T::NT / 2; ++j) b_frag(b[j], j, ks);
#pragma unroll
        for (int i = 0; i < T::MT; ++i)
#pragma unroll
            for (int j = 0; j < T::NT; ++j) {
                const unsigned bj[2] = {b[j / 2][2 * (j % 2)], b[j / 2][2 * (j % 2) + 1]};
                T::Prec::mma(acc[i][j], a[i], bj);
            }
    }
}

// acc += A B over one step, each warp its WM x WN part, reading A's rows `a_shift` rows
// further into the A tile (the halo kernels' taps along w).
template <class T, class Frags>
__device__ __forceinline__ void vx_pipe_multiply(const unsigned char* a_tile,
                                                 const unsigned char* b_tile,
                                                 VxPipeAcc<T>& acc, int a_shift = 0) {
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int m0 = (warp / T::WARPS_N) * T::WM + a_shift, n0 = (warp % T::WARPS_N) * T::WN;
    vx_sync_multiply<T>(
        acc,
        [&](unsigned (&f)[4], int i, int ks) { Frags::a(f, a_tile, m0 + 16 * i, ks, lane); },
        [&](unsigned (&f)[4], int j, int ks) { Frags::b(f, b_tile, n0 + 16 * j, ks, lane); });
}

// The reduction over `steps` steps, `multiply(stage)` consuming each stage of the ring.
// The loader issues step s's copies into a stage with load(s, a_tile, b_tile), always for
// s = 0, 1, 2, ... in order; begin() runs before the first barrier and ahead(i) after the
// copies of iteration i (both for per-step indices the loader keeps in static shared
// memory).
template <class T, class Loader, class Multiply>
__device__ __forceinline__ void vx_sync_ring(Loader& ld, int steps, Multiply multiply) {
    VX_DYNAMIC_SHARED(unsigned char, smem);
    vx_ring_prologue<T>(ld, smem, steps);
    for (int i = 0; i < steps; ++i) {
        // Step i has landed for this thread; the barrier makes it so for the block and
        // also retires step i - 1, whose stage the next copies overwrite.
        vx_cp_async_wait<T::STAGES - 2>();
        __syncthreads();
        const int next = i + T::STAGES - 1;
        if (next < steps) {
            unsigned char* stage = smem + (next % T::STAGES) * T::STAGE_BYTES;
            ld.load(next, stage, stage + T::A_BYTES);
        }
        vx_cp_async_commit();
        ld.ahead(i);
        const unsigned char* stage = smem + (i % T::STAGES) * T::STAGE_BYTES;
        multiply(stage);
    }
}

// The ring over one A and one B tile per stage.
template <class T, class Frags, class Loader>
__device__ __forceinline__ void vx_pipe_mainloop(Loader& ld, int steps, VxPipeAcc<T>& acc) {
    vx_sync_ring<T>(ld, steps, [&](const unsigned char* stage) {
        vx_pipe_multiply<T, Frags>(stage, stage + T::A_BYTES, acc);
    });
}

// The main loops of the mma.sync tiles: forward and backward data, backward weights.
struct VxSyncKMajorLoop {
    template <class T, class Loader>
    __device__ __forceinline__ static void run(Loader& ld, int steps, VxPipeAcc<T>& acc) {
        vx_pipe_mainloop<T, VxKMajorFrags<T>>(ld, steps, acc);
    }
};
struct VxSyncMnMajorLoop {
    template <class T, class Loader>
    __device__ __forceinline__ static void run(Loader& ld, int steps, VxPipeAcc<T>& acc) {
        vx_pipe_mainloop<T, VxMnMajorFrags<T>>(ld, steps, acc);
    }
};
