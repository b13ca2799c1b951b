// Stride-1 convolution on the tensor cores (mma.sync, BF16 or TF32) with the input window
// reused across the taps along w: forward, backward data as the forward convolution of dy
// with the kernel flipped, and backward weights.
//
// Why: the gathering kernels (conv3d_pipe.cu) copy a fresh 128-row A tile for every tap,
// although the three taps along w read the same rows one voxel apart, and each copied row
// costs its own bounds test and address. Here A is a bordered pack (conv3d_pack_bordered_*):
// the source volume with zeros around it, so that a result voxel's window never leaves the
// volume. Over the bordered grid, result voxel (z, y, x) reads at tap (kz, ky, kx) the
// bordered voxel of linear index row + (kz * a_h + ky) * a_w + kx, row being the linear
// index of (z, y, x) in the bordered grid. A block computes 128 consecutive rows of that
// grid; for each tap row (kz, ky) it copies the 128 + k_w - 1 consecutive bordered voxels
// once (contiguous in memory, no bounds test but the volume's end) and multiplies them
// k_w times, the fragments of tap kx read kx rows further into the tile (ldmatrix takes
// each row's address, and the swizzle of conv3d_sync.h keeps any 8 consecutive rows on
// distinct banks). Rows of the grid that are no result voxel (x >= r_w, y >= r_h: the
// border) are computed and not stored; blocks cover only the planes z < r_d of each
// sample.
//
// Operands, the reduction over the padded channels of one tap (red):
//   forward        a = x  bordered by pad_before, dims out + k - 1   b = w as [cout][tap][cin_p]
//   backward data  a = dy bordered by k - 1 - pad_before, dims in + k - 1
//                  b = w as [cin][tap][cout_p], read at tap taps - 1 - t (the flip)
// Stage s covers tap row (kz, ky) = s / chunks and channels 64 bytes * (s % chunks), with
// chunks = ceil(red / (64 bytes)): A holds rows 0 .. 128 + k_w - 2 of it, B the k_w taps'
// [col][64 bytes] tiles. No split: the plans run these kernels only on grids that fill
// the device.
//
// Backward weights: dw[tap][ci][co] = sum over the rows r of the bordered grid of
// x[r - s + (kz a_h + ky) a_w + kx][ci] dy[r][co], with x bordered as forward and dy
// packed into the same grid as backward data places it, at (k - 1 - pad) per axis, whose
// linear offset is s (zeros on the border rows, which so add nothing; the rows before s
// are all border, so x's negative rows there read as zeros). Where in == out ('same')
// both passes read one pack of dy. A block takes one tap row (kz, ky) and a block of CI
// channels: its rows are (kx, ci), one warp row per kx. A step copies BK + k_w - 1
// consecutive rows of x (mn-major, [r][ci]) and BK rows of dy ([r][co]) once; the warps
// of tap kx read x's fragments kx rows further. The reduction over the rows is split
// across grid.z as the other kernels'.
#include "conv3d_sync.h"

// ---------------------------------------------------------------------------------------
// Bordered pack

template <class P, class Store>
__device__ __forceinline__ void vx_pack_bordered(const ConvBorderPackParams& p,
                                                 const float* src, const Store& store) {
    const unsigned chunks_per_voxel = static_cast<unsigned>(p.padded) / P::PER_CHUNK;
    const unsigned voxels = static_cast<unsigned>(p.n) * p.out_d * p.out_h * p.out_w;
    const unsigned chunks = voxels * chunks_per_voxel;
    for (unsigned i = static_cast<unsigned>(vx_thread_index()); i < chunks;
         i += static_cast<unsigned>(vx_thread_stride())) {
        const unsigned v = i / chunks_per_voxel;
        const int c0 = P::PER_CHUNK * static_cast<int>(i - v * chunks_per_voxel);
        int nn, z, y, x;
        vx_split_voxel(static_cast<int>(v), p.out_d, p.out_h, p.out_w, nn, z, y, x);
        const int sz = z - p.before_d, sy = y - p.before_h, sx = x - p.before_w;
        float vals[P::PER_CHUNK];
        if (vx_inside(sz, sy, sx, p.d, p.h, p.w)) {
            const size_t voxel = ((static_cast<size_t>(nn) * p.d + sz) * p.h + sy) * p.w + sx;
            vx_load_chunk(src + voxel * p.c, c0, p.c, vals);
        } else {
#pragma unroll
            for (int j = 0; j < P::PER_CHUNK; ++j) vals[j] = 0.0f;
        }
        store(static_cast<size_t>(v) * p.padded + c0, vals);
    }
}

#define VX_CONV_BORDER_PACK(name, Precision)                                               \
    extern "C" __global__ void __launch_bounds__(256)                                        \
        name(const ConvBorderPackParams p, const float* __restrict__ src,                    \
             Precision::Elem* __restrict__ dst) {                                            \
        vx_pack_bordered<Precision>(p, src, VxPackStore<Precision>{dst});                    \
    }                                                                                        \
    VX_EMU_ENTRY(name, (const ConvBorderPackParams p, const float* src, Precision::Elem* dst), \
                 (p, src, dst))

VX_CONV_BORDER_PACK(conv3d_pack_bordered_bf16, VxBf16)
VX_CONV_BORDER_PACK(conv3d_pack_bordered_tf32, VxTf32)

// The bordered pack of tf32 backward weights on the bf16 kernels: three copies
// (params_conv.h, ConvBorderBf16x3PackParams).
extern "C" __global__ void __launch_bounds__(256)
    conv3d_pack_bordered_bf16x3(const ConvBorderBf16x3PackParams p,
                                const float* __restrict__ src, VxBf16Bits* __restrict__ dst) {
    const ConvBorderPackParams& g = p.pack;
    const size_t copy_len =
        static_cast<size_t>(g.n) * g.out_d * g.out_h * g.out_w * static_cast<size_t>(g.padded);
    vx_pack_bordered<VxBf16>(g, src, VxBf16x3Store{dst, copy_len, p.residual_copies});
}
VX_EMU_ENTRY(conv3d_pack_bordered_bf16x3,
             (const ConvBorderBf16x3PackParams p, const float* src, VxBf16Bits* dst),
             (p, src, dst))

// ---------------------------------------------------------------------------------------
// Tiles

template <class P, int WARPS_M_, int WARPS_N_, int WM_, int WN_, int STAGES_, int MIN_BLOCKS_>
struct VxHaloTile : VxSyncWarps<P, WARPS_M_, WARPS_N_, WM_, WN_, MIN_BLOCKS_> {
    static constexpr int BM = WARPS_M_ * WM_, BN = WARPS_N_ * WN_;
    static constexpr int STAGES = STAGES_;
    static constexpr int A_BYTES = VX_CONV_HALO_ROWS * VX_CONV_PIPE_STEP_BYTES;
    static constexpr int TAP_BYTES = BN * VX_CONV_PIPE_STEP_BYTES;
    static constexpr int B_BYTES = VX_CONV_HALO_MAX_KW * TAP_BYTES;
    static constexpr int STAGE_BYTES = A_BYTES + B_BYTES;
    static_assert(BM == VX_CONV_TC_BM && 32 * WARPS_M_ * WARPS_N_ == VX_CONV_THREADS,
                  "params_conv.h");
    static_assert(VX_CONV_HALO_ROWS >= BM + VX_CONV_HALO_MAX_KW - 1, "room for the halo");
};
template <class P>
using VxHaloN128 = VxHaloTile<P, 2, 2, 64, 64, VX_CONV_HALO_STAGES_N128, 2>;
template <class P>
using VxHaloN64 = VxHaloTile<P, 2, 2, 64, 32, VX_CONV_HALO_STAGES_N64, 2>;
template <class P>
using VxHaloN32 = VxHaloTile<P, 4, 1, 32, 32, VX_CONV_HALO_STAGES_N32, 3>;

// ---------------------------------------------------------------------------------------
// The pass

// What a launch computes: the result's dims (r_*) and channels (cols), the bordered A's
// dims (a_* = r_* + k - 1) and padded channels per tap (red), and whether B's taps run
// backwards.
struct VxHaloGeometry {
    int r_d, r_h, r_w;
    int a_d, a_h, a_w;
    int red, cols;
    bool flip;
};

template <class P>
__device__ __forceinline__ VxHaloGeometry vx_halo_geometry(const Conv3dParams& p,
                                                           bool backward_data) {
    VxHaloGeometry g;
    if (backward_data) {
        g.r_d = p.in_d, g.r_h = p.in_h, g.r_w = p.in_w;
        g.red = vx_pad<P>(p.cout), g.cols = p.cin;
    } else {
        g.r_d = p.out_d, g.r_h = p.out_h, g.r_w = p.out_w;
        g.red = vx_pad<P>(p.cin), g.cols = p.cout;
    }
    g.flip = backward_data;
    g.a_d = g.r_d + p.k_d - 1, g.a_h = g.r_h + p.k_h - 1, g.a_w = g.r_w + p.k_w - 1;
    return g;
}

// Each step copies rows 0 .. BM + k_w - 2 of A from `row0` plus the tap row's offset, and
// the k_w taps' B tiles, in 16-byte chunks spread over the block's threads.
template <class T>
struct VxHaloLoader {
    using P = typename T::Prec;
    using E = typename T::Elem;

    const E* a;
    const E* b;
    const VxHaloGeometry& g;
    int taps, k_h, k_w;
    unsigned a_rows;  // voxels of the bordered volume
    int row0;         // the block's first row of the bordered grid
    int chunks;       // steps per tap row
    int kz = 0, ky = 0, chunk = 0;

    __device__ __forceinline__ void begin() {}
    __device__ __forceinline__ void ahead(int) {}

    __device__ __forceinline__ void load(int, unsigned char* a_tile, unsigned char* b_tile) {
        const int k0 = chunk * T::BK;
        const int base = row0 + (kz * g.a_h + ky) * g.a_w;
        const int a_chunks = (T::BM + k_w - 1) * T::ROW_CHUNKS;
        for (int i = threadIdx.x; i < a_chunks; i += T::THREADS) {
            const int r = i / T::ROW_CHUNKS, c = i % T::ROW_CHUNKS;
            const int k = k0 + c * P::PER_CHUNK;
            const unsigned v = static_cast<unsigned>(base + r);
            const bool ok = v < a_rows && k < g.red;
            const E* src = a + (ok ? static_cast<size_t>(v) * g.red + k : 0);
            vx_cp_async16(a_tile + T::k_major_offset(r, c), src, ok);
        }
        const int tap0 = (kz * k_h + ky) * k_w;
        const int b_chunks = k_w * T::BN * T::ROW_CHUNKS;
        for (int i = threadIdx.x; i < b_chunks; i += T::THREADS) {
            const int c = i % T::ROW_CHUNKS, rest = i / T::ROW_CHUNKS;
            const int kx = rest / T::BN, r = rest % T::BN;
            const int col = blockIdx.y * T::BN + r;
            const int k = k0 + c * P::PER_CHUNK;
            const int tap = g.flip ? taps - 1 - (tap0 + kx) : tap0 + kx;
            const bool ok = col < g.cols && k < g.red;
            const E* src = b + (ok ? (static_cast<size_t>(col) * taps + tap) * g.red + k : 0);
            vx_cp_async16(b_tile + kx * T::TAP_BYTES + T::k_major_offset(r, c), src, ok);
        }
        if (++chunk == chunks) {
            chunk = 0;
            if (++ky == k_h) {
                ky = 0;
                ++kz;
            }
        }
    }
};

// grid.x runs over the samples and, within one, over the BM-row blocks of its planes
// z < r_d; grid.y over the result's columns.
template <class T>
__device__ __forceinline__ void vx_halo_pass(const Conv3dParams& p, bool backward_data,
                                             const typename T::Elem* a,
                                             const typename T::Elem* b, const float* bias,
                                             float* out) {
    const VxHaloGeometry g = vx_halo_geometry<typename T::Prec>(p, backward_data);
    const int plane = g.a_h * g.a_w;
    const int rows_per_sample = g.r_d * plane;
    const int blocks_per_sample = (rows_per_sample + T::BM - 1) / T::BM;
    const int nn = blockIdx.x / blocks_per_sample;
    const int q0 = (blockIdx.x - nn * blocks_per_sample) * T::BM;
    const int chunks = (g.red + T::BK - 1) / T::BK;
    VxHaloLoader<T> ld{a,
                       b,
                       g,
                       p.k_d * p.k_h * p.k_w,
                       p.k_h,
                       p.k_w,
                       static_cast<unsigned>(p.n) * g.a_d * plane,
                       nn * g.a_d * plane + q0,
                       chunks};
    VxPipeAcc<T> acc = {};
    const int k_w = p.k_w;
    vx_sync_ring<T>(ld, p.k_d * p.k_h * chunks, [&](const unsigned char* stage) {
        for (int kx = 0; kx < k_w; ++kx)
            vx_pipe_multiply<T, VxKMajorFrags<T>>(stage, stage + T::A_BYTES + kx * T::TAP_BYTES,
                                                  acc, kx);
    });
    vx_pipe_store<T>(
        acc, gridDim.x * T::BM, g.cols,
        [&](int local, int) {
            const int q = q0 + local;
            if (q >= rows_per_sample) return -1;
            const int z = q / plane, yx = q - z * plane;
            const int y = yx / g.a_w, x = yx - y * g.a_w;
            if (y >= g.r_h || x >= g.r_w) return -1;
            return ((nn * g.r_d + z) * g.r_h + y) * g.r_w + x;
        },
        bias, out);
}

template <class T>
__device__ __forceinline__ void vx_halo_forward(const Conv3dParams& p,
                                                const typename T::Elem* x,
                                                const typename T::Elem* w, const float* bias,
                                                float* y) {
    vx_halo_pass<T>(p, false, x, w, bias, y);
}

template <class T>
__device__ __forceinline__ void vx_halo_backward_data(const Conv3dParams& p,
                                                      const typename T::Elem* dy,
                                                      const typename T::Elem* w,
                                                      const float* bias, float* dx) {
    vx_halo_pass<T>(p, true, dy, w, bias, dx);
}

// ---------------------------------------------------------------------------------------
// Backward weights

// Rows: CI channels of each of VX_CONV_HALO_MAX_KW taps (warp row kx holds tap kx; BM is
// CI, the width of the A tile); columns: WARPS_N warps of WN.
template <class P, int CI, int WARPS_N_, int WN_, int MIN_BLOCKS_>
struct VxHaloWeightsTile : VxSyncWarps<P, VX_CONV_HALO_MAX_KW, WARPS_N_, CI, WN_, MIN_BLOCKS_> {
    using Warps = VxSyncWarps<P, VX_CONV_HALO_MAX_KW, WARPS_N_, CI, WN_, MIN_BLOCKS_>;
    static constexpr int BM = CI, BN = WARPS_N_ * WN_;
    static constexpr int STAGES = VX_CONV_HALO_WEIGHT_STAGES;
    static constexpr int ELEM_BYTES = static_cast<int>(sizeof(typename P::Elem));
    static constexpr int A_ROWS = Warps::BK + VX_CONV_HALO_WEIGHT_EXTRA_ROWS;
    static constexpr int A_BYTES = A_ROWS * BM * ELEM_BYTES;
    static constexpr int B_BYTES = Warps::BK * BN * ELEM_BYTES;
    static constexpr int STAGE_BYTES = A_BYTES + B_BYTES;
    static_assert(VX_CONV_HALO_WEIGHT_EXTRA_ROWS >= VX_CONV_HALO_MAX_KW - 1, "room for taps");
};
template <class P>
using VxHaloWeights32x32 = VxHaloWeightsTile<P, 32, 1, 32, 4>;
template <class P>
using VxHaloWeights64x32 = VxHaloWeightsTile<P, 64, 1, 32, 4>;
template <class P>
using VxHaloWeights64x64 = VxHaloWeightsTile<P, 64, 2, 32, 2>;
template <class P>
using VxHaloWeights64x128 = VxHaloWeightsTile<P, 64, 2, 64, 1>;

// Each step copies rows m0 + tap_offset .. + BK + k_w - 2 of x (channels ci0 .. ci0 + CI)
// and rows m0 .. m0 + BK - 1 of dy (the block's columns), m0 = m_begin + step * BK.
template <class T>
struct VxHaloWeightsLoader {
    using P = typename T::Prec;
    using E = typename T::Elem;
    static constexpr int A_CHUNKS = T::BM / P::PER_CHUNK, B_CHUNKS = T::BN / P::PER_CHUNK;

    const E* x;
    const E* dy;
    int cin_p, cout_p, k_w;
    unsigned rows;   // voxels of the bordered volumes
    int tap_offset;  // x's row for dy's row 0 at the block's tap row (kz, ky); may be < 0
    int ci0;
    int m_begin, m_end;

    __device__ __forceinline__ void begin() {}
    __device__ __forceinline__ void ahead(int) {}

    __device__ __forceinline__ void load(int step, unsigned char* a_tile, unsigned char* b_tile) {
        const int m0 = m_begin + step * T::BK;
        const int a_chunks = (T::BK + k_w - 1) * A_CHUNKS;
        for (int i = threadIdx.x; i < a_chunks; i += T::THREADS) {
            const int r = i / A_CHUNKS, c = i % A_CHUNKS;
            // A negative row wraps past `rows` and reads as zero.
            const unsigned v = static_cast<unsigned>(m0 + tap_offset + r);
            const int ci = ci0 + c * P::PER_CHUNK;
            const bool ok = v < rows && ci < cin_p;
            const E* src = x + (ok ? static_cast<size_t>(v) * cin_p + ci : 0);
            vx_cp_async16(a_tile + T::template mn_major_offset<A_CHUNKS>(r, c), src, ok);
        }
        for (int i = threadIdx.x; i < T::BK * B_CHUNKS; i += T::THREADS) {
            const int r = i / B_CHUNKS, c = i % B_CHUNKS;
            const int m = m0 + r, co = blockIdx.y * T::BN + c * P::PER_CHUNK;
            const bool ok = m < m_end && co < cout_p;
            const E* src = dy + (ok ? static_cast<size_t>(m) * cout_p + co : 0);
            vx_cp_async16(b_tile + T::template mn_major_offset<B_CHUNKS>(r, c), src, ok);
        }
    }
};

// grid.x runs over (tap row, channel block), channel blocks fastest; grid.y over cout;
// grid.z over the splits of the rows.
template <class T>
__device__ __forceinline__ void vx_halo_backward_weights(const Conv3dParams& p,
                                                         const typename T::Elem* x,
                                                         const typename T::Elem* dy,
                                                         const float*, float* dw) {
    using P = typename T::Prec;
    const int cin_p = vx_pad<P>(p.cin), cout_p = vx_pad<P>(p.cout);
    const int a_h = p.out_h + p.k_h - 1, a_w = p.out_w + p.k_w - 1;
    const int rows = p.n * (p.out_d + p.k_d - 1) * a_h * a_w;
    const int ci_blocks = (cin_p + T::BM - 1) / T::BM;
    const int tap_row = blockIdx.x / ci_blocks;
    const int ci0 = (blockIdx.x - tap_row * ci_blocks) * T::BM;
    const int kz = tap_row / p.k_h, ky = tap_row - kz * p.k_h;
    const int dy_offset =
        ((p.k_d - 1 - p.pad_d) * a_h + p.k_h - 1 - p.pad_h) * a_w + p.k_w - 1 - p.pad_w;
    int m_begin, m_end;
    vx_split_range(p, blockIdx.z, rows, m_begin, m_end);
    VxHaloWeightsLoader<T> ld{x,    dy,  cin_p,   cout_p, p.k_w, static_cast<unsigned>(rows),
                              (kz * a_h + ky) * a_w - dy_offset, ci0, m_begin, m_end};
    VxPipeAcc<T> acc = {};
    const int k_w = p.k_w;
    vx_sync_ring<T>(ld, (m_end - m_begin + T::BK - 1) / T::BK, [&](const unsigned char* stage) {
        using Frags = VxMnMajorFrags<T>;
        const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
        const int kx = warp / T::WARPS_N, n0 = (warp % T::WARPS_N) * T::WN;
        if (kx >= k_w) return;
        vx_sync_multiply<T>(
            acc,
            [&](unsigned (&f)[4], int i, int ks) { Frags::a(f, stage, 16 * i, ks, lane, kx); },
            [&](unsigned (&f)[4], int j, int ks) {
                Frags::b(f, stage + T::A_BYTES, n0 + 16 * j, ks, lane);
            });
    });
    const int taps = p.k_d * p.k_h * p.k_w;
    // Every local row passes the store's row test; out_row maps (kx, ci) to dw's rows.
    vx_pipe_store<T>(
        acc, (gridDim.x + T::WARPS_M) * T::BM, p.cout,
        [&](int local, int) {
            const int kx = local / T::BM, ci = ci0 + local - kx * T::BM;
            if (kx >= p.k_w || ci >= p.cin) return -1;
            return (tap_row * p.k_w + kx) * p.cin + ci;
        },
        nullptr, dw + static_cast<size_t>(blockIdx.z) * taps * p.cin * p.cout);
}

// Every kernel of this file: (name, pass, tile).
#define VX_HALO_KERNELS(X)                                                                   \
    X(conv3d_fwd_bf16_halo128, vx_halo_forward, VxHaloN128<VxBf16>)                          \
    X(conv3d_fwd_bf16_halo64, vx_halo_forward, VxHaloN64<VxBf16>)                            \
    X(conv3d_fwd_bf16_halo32, vx_halo_forward, VxHaloN32<VxBf16>)                            \
    X(conv3d_bwd_data_bf16_halo128, vx_halo_backward_data, VxHaloN128<VxBf16>)               \
    X(conv3d_bwd_data_bf16_halo64, vx_halo_backward_data, VxHaloN64<VxBf16>)                 \
    X(conv3d_bwd_data_bf16_halo32, vx_halo_backward_data, VxHaloN32<VxBf16>)                 \
    X(conv3d_fwd_tf32_halo128, vx_halo_forward, VxHaloN128<VxTf32>)                          \
    X(conv3d_fwd_tf32_halo64, vx_halo_forward, VxHaloN64<VxTf32>)                            \
    X(conv3d_fwd_tf32_halo32, vx_halo_forward, VxHaloN32<VxTf32>)                            \
    X(conv3d_bwd_data_tf32_halo128, vx_halo_backward_data, VxHaloN128<VxTf32>)               \
    X(conv3d_bwd_data_tf32_halo64, vx_halo_backward_data, VxHaloN64<VxTf32>)                 \
    X(conv3d_bwd_data_tf32_halo32, vx_halo_backward_data, VxHaloN32<VxTf32>)                 \
    X(conv3d_bwd_weight_bf16_halo32x32, vx_halo_backward_weights, VxHaloWeights32x32<VxBf16>) \
    X(conv3d_bwd_weight_bf16_halo64x32, vx_halo_backward_weights, VxHaloWeights64x32<VxBf16>) \
    X(conv3d_bwd_weight_bf16_halo64x64, vx_halo_backward_weights, VxHaloWeights64x64<VxBf16>) \
    X(conv3d_bwd_weight_bf16_halo64x128, vx_halo_backward_weights,                           \
      VxHaloWeights64x128<VxBf16>)                                                           \
    X(conv3d_bwd_weight_tf32_halo32x32, vx_halo_backward_weights, VxHaloWeights32x32<VxTf32>) \
    X(conv3d_bwd_weight_tf32_halo64x32, vx_halo_backward_weights, VxHaloWeights64x32<VxTf32>) \
    X(conv3d_bwd_weight_tf32_halo64x64, vx_halo_backward_weights, VxHaloWeights64x64<VxTf32>) \
    X(conv3d_bwd_weight_tf32_halo64x128, vx_halo_backward_weights, VxHaloWeights64x128<VxTf32>)

VX_HALO_KERNELS(VX_CONV_TC_KERNEL)

#ifndef __CUDACC__
// The harness entry for every conv kernel of this file, by name, on packed operands (as
// emu_conv3d_pipe).
extern "C" int emu_conv3d_halo(const char* name, const EmuDims* d, const Conv3dParams p,
                               const void* a, const void* b, const float* bias, float* out) {
#define VX_HALO_EMU_LAUNCH(kernel, pass, Tile)                                              \
    if (!std::strcmp(name, #kernel))                                                         \
        return emu_launch(*d, kernel, p, static_cast<const Tile::Elem*>(a),                  \
                          static_cast<const Tile::Elem*>(b), bias, out);
    VX_HALO_KERNELS(VX_HALO_EMU_LAUNCH)
#undef VX_HALO_EMU_LAUNCH
    return -2;
}

// The dynamic shared memory the kernel called `name` uses (its ring), -1 for no such
// kernel: what the plans must give its launches.
extern "C" long long emu_conv3d_halo_shared_bytes(const char* name) {
#define VX_HALO_SHARED_BYTES(kernel, pass, Tile) \
    if (!std::strcmp(name, #kernel)) return Tile::STAGES * Tile::STAGE_BYTES;
    VX_HALO_KERNELS(VX_HALO_SHARED_BYTES)
#undef VX_HALO_SHARED_BYTES
    return -1;
}
#endif
