// Backward data of a convolution whose taps do not overlap, on the tensor cores (mma.sync,
// BF16 or TF32): kernel == stride along every axis, no padding, and an input the output
// tiles exactly (in = out * stride). That is the forward of a transposed convolution whose
// kernel equals its stride, the U-Net's 2x2x2 stride-2 up-convolutions. Each dx voxel
// then takes exactly one tap: dx[o * s + t][ci] = sum_co dy[o][co] w[t][ci][co], one
// GEMM of dy's rows by the taps' weights, its results scattered across dx.
//
// Why a kernel of its own: the gathering kernels (conv3d_pipe.cu, conv3d_wgmma.cu) run
// this as one launch over the stride phases, each block one (phase, 64 columns) tile
// whose reduction is a single tap's channels (128 for the BraTS decoder's dec1.up): the
// block fills its ring, multiplies a few steps, writes its tile and ends, and nothing
// overlaps its loads with its store. The pass writes far more than it reads (each dy row
// becomes taps x cin results in f32), so its time is the store's. Here a block copies its
// 128 dy rows' whole reduction into shared memory once and then runs every (tap, 64
// columns) tile of its share from it: while one tile's results drain to memory, the next
// tile's weights are already arriving and its mmas run.
//
// Operands (packed as conv3d_pipe.cu's backward data):
//   a = dy [row][cout_p]      b = w as [cin][tap][cout_p]
// Shared memory: A, the block's rows over at most VX_CONV_PHASE_MAX_STEPS steps of 64
// bytes (each step a swizzled [128][64 bytes] tile, as the gathering kernels' stages),
// then two B buffers of the same steps over 64 rows (input channels). Grid: x over dy's
// rows in blocks of 128, y over shares of the tiles (tile j is tap j % taps, channel block
// j / taps), so that small passes still fill the device.
#include "conv3d_sync.h"

template <class P>
struct VxPhaseTile : VxSyncWarps<P, 2, 2, 64, 32, 3> {
    static constexpr int BM = VX_CONV_TC_BM, BN = VX_CONV_PHASE_BN;
    static constexpr int MAX_STEPS = VX_CONV_PHASE_MAX_STEPS;
    static constexpr int A_STEP_BYTES = BM * VX_CONV_PIPE_STEP_BYTES;
    static constexpr int B_STEP_BYTES = BN * VX_CONV_PIPE_STEP_BYTES;
    static constexpr int A_BYTES = MAX_STEPS * A_STEP_BYTES;
    static constexpr int B_BYTES = MAX_STEPS * B_STEP_BYTES;
    static constexpr int SHARED_BYTES = A_BYTES + 2 * B_BYTES;
    static_assert(BM == 2 * 64 && BN == 2 * 32, "the warps cover the tile");
};

// Copies `rows` rows of `steps` steps (`chunks` 16-byte chunks of each row real, the rest
// zeros) into a tile of `step_bytes` per step; row r reads src_row(r), or nothing where
// that is null (zeros then). A copy that reads nothing is given `buffer`, an address
// inside the operand, as the gathering kernels do.
template <class T, class SrcRow>
__device__ __forceinline__ void vx_phase_copy(unsigned char* tile, int step_bytes, int rows,
                                              int steps, int chunks,
                                              const typename T::Elem* buffer, SrcRow src_row) {
    using E = typename T::Elem;
    const int row_chunks = steps * T::ROW_CHUNKS;
    for (int i = threadIdx.x; i < rows * row_chunks; i += T::THREADS) {
        const int r = i / row_chunks, q = i - r * row_chunks;
        const E* row = src_row(r);
        const bool ok = row != nullptr && q < chunks;
        const int s = q / T::ROW_CHUNKS, c = q - s * T::ROW_CHUNKS;
        vx_cp_async16(tile + s * step_bytes + vx_swizzle<T::ROW_CHUNKS>(r, c),
                      ok ? row + q * T::Prec::PER_CHUNK : buffer, ok);
    }
}

template <class T>
__device__ __forceinline__ void vx_phase_backward_data(const Conv3dParams& p,
                                                       const typename T::Elem* dy,
                                                       const typename T::Elem* w,
                                                       const float* bias, float* dx) {
    using E = typename T::Elem;
    using P = typename T::Prec;
    VX_DYNAMIC_SHARED(unsigned char, smem);
    unsigned char* const a_tile = smem;
    unsigned char* const b_tiles = smem + T::A_BYTES;
    // dx's voxel of tap 0 for each of the block's rows, -1 past the last row.
    VX_SHARED(int, base, [T::BM]);

    const int rows = p.n * p.out_d * p.out_h * p.out_w;
    const int kp = vx_pad<P>(p.cout);
    const int chunks = kp / P::PER_CHUNK;
    const int steps = (kp + T::BK - 1) / T::BK;
    const int taps = p.k_d * p.k_h * p.k_w;
    const int tiles = taps * ((p.cin + T::BN - 1) / T::BN);
    const int share = (tiles + static_cast<int>(gridDim.y) - 1) / static_cast<int>(gridDim.y);
    const int first = static_cast<int>(blockIdx.y) * share;
    const int last = min(tiles, first + share);
    const int row0 = static_cast<int>(blockIdx.x) * T::BM;
    VX_EMU_EXPECT(steps <= T::MAX_STEPS && p.k_d == p.stride_d && p.k_h == p.stride_h &&
                      p.k_w == p.stride_w && p.pad_d == 0 && p.pad_h == 0 && p.pad_w == 0 &&
                      p.in_d == p.out_d * p.stride_d && p.in_h == p.out_h * p.stride_h &&
                      p.in_w == p.out_w * p.stride_w,
                  "a reduction the block keeps, taps that tile the input (ConvPlan::phase)");
    // A grid of more shares than tiles (the plans make none) leaves the last ones empty.
    if (first >= last) return;

    for (int r = threadIdx.x; r < T::BM; r += T::THREADS) {
        int v = -1;
        if (row0 + r < rows) {
            int nn, z, y, x;
            vx_split_voxel(row0 + r, p.out_d, p.out_h, p.out_w, nn, z, y, x);
            v = ((nn * p.in_d + z * p.stride_d) * p.in_h + y * p.stride_h) * p.in_w +
                x * p.stride_w;
        }
        base[r] = v;
    }
    // Tile j's weights: B row n is input channel (j / taps) * BN + n at tap j % taps.
    const auto load_b = [&](int j, unsigned char* tile) {
        const int tap = j % taps, ci0 = (j / taps) * T::BN;
        vx_phase_copy<T>(tile, T::B_STEP_BYTES, T::BN, steps, chunks, w, [&](int n) -> const E* {
            const int ci = ci0 + n;
            return ci < p.cin ? w + (static_cast<size_t>(ci) * taps + tap) * kp : nullptr;
        });
    };
    vx_phase_copy<T>(a_tile, T::A_STEP_BYTES, T::BM, steps, chunks, dy, [&](int r) -> const E* {
        return row0 + r < rows ? dy + static_cast<size_t>(row0 + r) * kp : nullptr;
    });
    load_b(first, b_tiles);
    vx_cp_async_commit();
    if (first + 1 < last) load_b(first + 1, b_tiles + T::B_BYTES);
    vx_cp_async_commit();

    for (int j = first; j < last; ++j) {
        unsigned char* const b_tile = b_tiles + ((j - first) & 1) * T::B_BYTES;
        // Tile j's group (and A, with the first) has landed; only tile j + 1's may not.
        vx_cp_async_wait<1>();
        __syncthreads();
        VxPipeAcc<T> acc = {};
        for (int s = 0; s < steps; ++s)
            vx_pipe_multiply<T, VxKMajorFrags<T>>(a_tile + s * T::A_STEP_BYTES,
                                                  b_tile + s * T::B_STEP_BYTES, acc);
        // Every warp is done with this buffer before tile j + 2's copies overwrite it.
        __syncthreads();
        if (j + 2 < last) load_b(j + 2, b_tile);
        vx_cp_async_commit();
        int kz, ky, kx;
        vx_split3(j % taps, p.k_h, p.k_w, kz, ky, kx);
        const int tap_offset = vx_tap_offset(kz, ky, kx, p.in_h, p.in_w);
        vx_pipe_store_at<T>(
            acc, rows, p.cin, (j / taps) * T::BN,
            [&](int local, int) { return base[local] < 0 ? -1 : base[local] + tap_offset; },
            bias, dx);
    }
}

// Every kernel of this file: (name, pass, tile).
#define VX_PHASE_KERNELS(X)                                                       \
    X(conv3d_bwd_data_bf16_phase64, vx_phase_backward_data, VxPhaseTile<VxBf16>) \
    X(conv3d_bwd_data_tf32_phase64, vx_phase_backward_data, VxPhaseTile<VxTf32>)

VX_PHASE_KERNELS(VX_CONV_TC_KERNEL)

#ifndef __CUDACC__
// The harness entry for every kernel of this file, by name, on packed operands (as
// emu_conv3d_pipe).
extern "C" int emu_conv3d_phase(const char* name, const EmuDims* d, const Conv3dParams p,
                                const void* a, const void* b, const float* bias, float* out) {
#define VX_PHASE_EMU_LAUNCH(kernel, pass, Tile)                             \
    if (!std::strcmp(name, #kernel))                                        \
        return emu_launch(*d, kernel, p, static_cast<const Tile::Elem*>(a), \
                          static_cast<const Tile::Elem*>(b), bias, out);
    VX_PHASE_KERNELS(VX_PHASE_EMU_LAUNCH)
#undef VX_PHASE_EMU_LAUNCH
    return -2;
}

// The dynamic shared memory the kernel called `name` uses, -1 for no such kernel: what the
// plans must give its launches.
extern "C" long long emu_conv3d_phase_shared_bytes(const char* name) {
#define VX_PHASE_SHARED_BYTES(kernel, pass, Tile) \
    if (!std::strcmp(name, #kernel)) return Tile::SHARED_BYTES;
    VX_PHASE_KERNELS(VX_PHASE_SHARED_BYTES)
#undef VX_PHASE_SHARED_BYTES
    return -1;
}
#endif
