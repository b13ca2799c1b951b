// voxseg-variant: l1 VX_GATHER_L1
// 3D convolution on the tensor cores, in BF16 or TF32: the implicit GEMMs of
// conv3d_common.h on operands packed once per call, fed through a cp.async shared-memory
// ring. One set of templates serves both precisions through a precision policy (VxBf16,
// VxTf32: element bytes, elements per 16-byte chunk, rounding, mma shape).
//
// Packing (conv3d_pack_*): f32 -> bf16 (nearest even) or tf32 (cvt.rna, kept in 32 bits)
// with the channel dimension padded by zeros to whole 16-byte chunks (8 bf16 or 4 tf32),
// so every row of every operand is whole chunks and a chunk is channels of one voxel and
// one tap (wholly inside or outside the volume):
//   forward          a = x  [voxel][cin_p]     b = w as [cout][tap][cin_p]
//   backward data    a = dy [voxel][cout_p]    b = w as [cin][tap][cout_p]
//   backward weights a = x  [voxel][cin_p]     b = dy [voxel][cout_p]
// The GEMM's reduction index runs over the padded channels (their zeros add nothing).
//
// Main loops: a block computes a 128 x BN tile (BN = 128 with 4 warps of 64 x 64, 64 with
// 4 warps of 64 x 32, 32 with 4 warps of 32 x 32, or 2 of 64 x 32 in backward weights) in
// steps of 64 bytes of reduction per row (32 bf16 or 16 tf32: two mma k steps either way).
// Every step's tiles arrive by 16-byte cp.async (zero fill for padding and rows past the
// problem) into a ring of VX_CONV_PIPE_STAGES stages in dynamic shared memory, three
// steps ahead of the mma; one barrier per step. Forward and backward data hold both tiles
// k-major ([row][k]) and take fragments with ldmatrix.x4: a b16 8 x 8 matrix is 8 rows of
// 16 bytes, so at TF32 it is 8 rows x 4 tf32 and a lane's register (row g, b16 columns
// 2t, 2t+1) is tf32 (g, t), the m16n8k8 .tf32 fragment element (mma.h). Backward weights
// hold both tiles mn-major ([k][row]), since there the reduction (voxels) is the slow
// index of both operands: BF16 reads them with ldmatrix.trans; ldmatrix.trans transposes
// 16-bit elements and cannot serve 32-bit ones, so TF32 reads each fragment register with
// a 32-bit shared load (the swizzle keeps a warp's 32 loads on 32 banks). Tiles are
// swizzled (the 16-byte chunk index XOR bits of the row) so that the rows of an ldmatrix,
// the words of a fragment and the chunks a quarter warp copies hit distinct banks.
// Accumulation is f32; split partials go to their own slices.
#include "conv3d_sync.h"

// ---------------------------------------------------------------------------------------
// Packing

// dst [b][a][padded] from src [a][b][c]: one 16-byte chunk per thread and step, handed to
// store(element offset in one copy, values) (VxPackStore, VxBf16x3Store).
template <class P, class Store>
__device__ __forceinline__ void vx_pack_rows(const ConvPackParams& p, const float* src,
                                             const Store& store) {
    const unsigned chunks_per_row = static_cast<unsigned>(p.padded) / P::PER_CHUNK;
    const unsigned chunks =
        static_cast<unsigned>(p.a) * static_cast<unsigned>(p.b) * chunks_per_row;
    for (unsigned i = static_cast<unsigned>(vx_thread_index()); i < chunks;
         i += static_cast<unsigned>(vx_thread_stride())) {
        // The common shapes (b == 1, one chunk per row or no padding) need no division.
        const unsigned row = chunks_per_row == 1 ? i : i / chunks_per_row;
        const int c0 = P::PER_CHUNK * static_cast<int>(i - row * chunks_per_row);
        unsigned src_row = row;
        if (p.b != 1) {
            const unsigned bi = row / static_cast<unsigned>(p.a);
            src_row = (row - bi * static_cast<unsigned>(p.a)) * static_cast<unsigned>(p.b) + bi;
        }
        float v[P::PER_CHUNK];
        vx_load_chunk(src + static_cast<size_t>(src_row) * p.c, c0, p.c, v);
        store(static_cast<size_t>(row) * p.padded + c0, v);
    }
}

// dst [c][a][padded] from src [a][b][c]. Consecutive threads take consecutive c, so the
// strided gather of a chunk's values of b is coalesced across the warp.
template <class P, class Store>
__device__ __forceinline__ void vx_pack_transposed(const ConvPackParams& p, const float* src,
                                                   const Store& store) {
    const unsigned chunks_per_row = static_cast<unsigned>(p.padded) / P::PER_CHUNK;
    const unsigned c = static_cast<unsigned>(p.c);
    const unsigned chunks = static_cast<unsigned>(p.a) * chunks_per_row * c;
    for (unsigned i = static_cast<unsigned>(vx_thread_index()); i < chunks;
         i += static_cast<unsigned>(vx_thread_stride())) {
        const unsigned rest = i / c, ci = i - rest * c;
        const unsigned ai = rest / chunks_per_row;
        const int b0 = P::PER_CHUNK * static_cast<int>(rest - ai * chunks_per_row);
        const float* s = src + static_cast<size_t>(ai) * p.b * p.c + ci;
        float v[P::PER_CHUNK];
#pragma unroll
        for (int j = 0; j < P::PER_CHUNK; ++j)
            v[j] = b0 + j < p.b ? s[static_cast<size_t>(b0 + j) * p.c] : 0.0f;
        store((static_cast<size_t>(ci) * p.a + ai) * p.padded + b0, v);
    }
}

#define VX_CONV_PACK(name, pack, Precision)                                              \
    extern "C" __global__ void __launch_bounds__(256)                                      \
        name(const ConvPackParams p, const float* __restrict__ src,                        \
             Precision::Elem* __restrict__ dst) {                                          \
        pack<Precision>(p, src, VxPackStore<Precision>{dst});                              \
    }                                                                                      \
    VX_EMU_ENTRY(name, (const ConvPackParams p, const float* src, Precision::Elem* dst), \
                 (p, src, dst))

VX_CONV_PACK(conv3d_pack_rows_bf16, vx_pack_rows, VxBf16)
VX_CONV_PACK(conv3d_pack_transposed_bf16, vx_pack_transposed, VxBf16)
VX_CONV_PACK(conv3d_pack_rows_tf32, vx_pack_rows, VxTf32)
VX_CONV_PACK(conv3d_pack_transposed_tf32, vx_pack_transposed, VxTf32)

// The rows pack of tf32 backward weights on the bf16 kernels: three copies
// (params_conv.h, ConvBf16x3PackParams).
extern "C" __global__ void __launch_bounds__(256)
    conv3d_pack_rows_bf16x3(const ConvBf16x3PackParams p, const float* __restrict__ src,
                            VxBf16Bits* __restrict__ dst) {
    const size_t copy_len = static_cast<size_t>(p.pack.a) * p.pack.b * p.pack.padded;
    vx_pack_rows<VxBf16>(p.pack, src, VxBf16x3Store{dst, copy_len, p.residual_copies});
}
VX_EMU_ENTRY(conv3d_pack_rows_bf16x3,
             (const ConvBf16x3PackParams p, const float* src, VxBf16Bits* dst), (p, src, dst))

// ---------------------------------------------------------------------------------------
// Kernels (tiles and main loops: conv3d_sync.h)

VX_CONV_TC_KERNEL(conv3d_fwd_bf16_n128, vx_pipe_forward, VxPipeN128<VxBf16>)
VX_CONV_TC_KERNEL(conv3d_fwd_bf16_n64, vx_pipe_forward, VxPipeN64<VxBf16>)
VX_CONV_TC_KERNEL(conv3d_fwd_bf16_n32, vx_pipe_forward, VxPipeN32<VxBf16>)
VX_CONV_TC_KERNEL(conv3d_bwd_data_bf16_n128, vx_pipe_backward_data, VxPipeN128<VxBf16>)
VX_CONV_TC_KERNEL(conv3d_bwd_data_bf16_n64, vx_pipe_backward_data, VxPipeN64<VxBf16>)
VX_CONV_TC_KERNEL(conv3d_bwd_data_bf16_n32, vx_pipe_backward_data, VxPipeN32<VxBf16>)
VX_CONV_TC_KERNEL(conv3d_bwd_weight_bf16_n128, vx_pipe_backward_weights, VxPipeN128<VxBf16>)
VX_CONV_TC_KERNEL(conv3d_bwd_weight_bf16_n64, vx_pipe_backward_weights, VxPipeN64<VxBf16>)
VX_CONV_TC_KERNEL(conv3d_bwd_weight_bf16_n32, vx_pipe_backward_weights, VxPipeN32Narrow<VxBf16>)
VX_CONV_TC_KERNEL(conv3d_fwd_tf32_n128, vx_pipe_forward, VxPipeN128<VxTf32>)
VX_CONV_TC_KERNEL(conv3d_fwd_tf32_n64, vx_pipe_forward, VxPipeN64<VxTf32>)
VX_CONV_TC_KERNEL(conv3d_fwd_tf32_n32, vx_pipe_forward, VxPipeN32<VxTf32>)
VX_CONV_TC_KERNEL(conv3d_bwd_data_tf32_n128, vx_pipe_backward_data, VxPipeN128<VxTf32>)
VX_CONV_TC_KERNEL(conv3d_bwd_data_tf32_n64, vx_pipe_backward_data, VxPipeN64<VxTf32>)
VX_CONV_TC_KERNEL(conv3d_bwd_data_tf32_n32, vx_pipe_backward_data, VxPipeN32<VxTf32>)
VX_CONV_TC_KERNEL(conv3d_bwd_weight_tf32_n128, vx_pipe_backward_weights, VxPipeN128<VxTf32>)
VX_CONV_TC_KERNEL(conv3d_bwd_weight_tf32_n64, vx_pipe_backward_weights, VxPipeN64<VxTf32>)
VX_CONV_TC_KERNEL(conv3d_bwd_weight_tf32_n32, vx_pipe_backward_weights, VxPipeN32Narrow<VxTf32>)

// ---------------------------------------------------------------------------------------
// Probes of the wrappers and fragment layouts for tests

// One warp copies src (32 rows of 8 bf16) to shared memory; lane l points at row
// (5 l + 3) % 32, and out[14 l ..] receives the registers of .x1, .x2, .x4, then .x1, .x2,
// .x4 .trans, in that order.
extern "C" __global__ void __launch_bounds__(32)
    ldmatrix_probe(const VxBf16Bits* __restrict__ src, unsigned* __restrict__ out) {
    VX_SHARED(VxU4, tile, [32]);
    const int lane = threadIdx.x;
    tile[lane] = reinterpret_cast<const VxU4*>(src)[lane];
    __syncwarp();
    const VxU4* row = tile + (5 * lane + 3) % 32;
    unsigned* o = out + 14 * lane;
    unsigned r1[1], r2[2], r4[4];
    vx_ldmatrix<1, false>(r1, row);
    vx_ldmatrix<2, false>(r2, row);
    vx_ldmatrix<4, false>(r4, row);
    o[0] = r1[0];
    for (int i = 0; i < 2; ++i) o[1 + i] = r2[i];
    for (int i = 0; i < 4; ++i) o[3 + i] = r4[i];
    vx_ldmatrix<1, true>(r1, row);
    vx_ldmatrix<2, true>(r2, row);
    vx_ldmatrix<4, true>(r4, row);
    o[7] = r1[0];
    for (int i = 0; i < 2; ++i) o[8 + i] = r2[i];
    for (int i = 0; i < 4; ++i) o[10 + i] = r4[i];
}
VX_EMU_ENTRY(ldmatrix_probe, (const VxBf16Bits* src, unsigned* out), (src, out))

// The fragments the main loops read, through the real tiles, swizzles and fragment
// helpers of backward weights' 128 x 128 tile: one warp stores a (16 rows m x BK) and b
// (16 rows n x BK), both row-major in elements, into a stage as k-major tiles and as
// mn-major tiles, then for each mma k step ks reads A of rows 0..15 and B of columns
// 0..15 from both. out[32 lane + 16 ks ..]: k-major A (4), B (4), then mn-major A, B.
template <class P>
__device__ __forceinline__ void vx_fragment_probe(const typename P::Elem* a,
                                                  const typename P::Elem* b, unsigned* out) {
    using T = VxPipeN128<P>;
    using E = typename P::Elem;
    constexpr int MN_CHUNKS = T::BM / P::PER_CHUNK;
    static_assert(T::BM == T::BN, "one mn-major layout for both operands");
    VX_SHARED(VxU4, k_major, [2][16 * 4]);
    VX_SHARED(VxU4, mn_major, [2][T::BK * MN_CHUNKS]);
    const int lane = threadIdx.x;
    for (int i = lane; i < T::BK * MN_CHUNKS; i += 32)
        mn_major[0][i] = mn_major[1][i] = VxU4{0, 0, 0, 0};
    __syncwarp();
    const E* src[2] = {a, b};
    for (int op = 0; op < 2; ++op)
        for (int i = lane; i < 16 * T::BK; i += 32) {
            const int row = i / T::BK, k = i % T::BK;
            const E v = src[op][i];
            unsigned char* km = reinterpret_cast<unsigned char*>(k_major[op]);
            unsigned char* mn = reinterpret_cast<unsigned char*>(mn_major[op]);
            const int e = k % P::PER_CHUNK, f = row % P::PER_CHUNK;
            *reinterpret_cast<E*>(km + vx_swizzle<4>(row, k / P::PER_CHUNK) + e * sizeof(E)) =
                v;
            *reinterpret_cast<E*>(mn + vx_swizzle<MN_CHUNKS>(k, row / P::PER_CHUNK) +
                                  f * sizeof(E)) = v;
        }
    __syncwarp();
    using Km = VxKMajorFrags<T>;
    using Mn = VxMnMajorFrags<T>;
    for (int ks = 0; ks < 2; ++ks) {
        unsigned f[4][4];
        Km::a(f[0], reinterpret_cast<const unsigned char*>(k_major[0]), 0, ks, lane);
        Km::b(f[1], reinterpret_cast<const unsigned char*>(k_major[1]), 0, ks, lane);
        Mn::a(f[2], reinterpret_cast<const unsigned char*>(mn_major[0]), 0, ks, lane);
        Mn::b(f[3], reinterpret_cast<const unsigned char*>(mn_major[1]), 0, ks, lane);
        for (int i = 0; i < 16; ++i) out[32 * lane + 16 * ks + i] = f[i / 4][i % 4];
    }
}

extern "C" __global__ void __launch_bounds__(32)
    fragment_probe_bf16(const VxBf16Bits* __restrict__ a, const VxBf16Bits* __restrict__ b,
                        unsigned* __restrict__ out) {
    vx_fragment_probe<VxBf16>(a, b, out);
}
VX_EMU_ENTRY(fragment_probe_bf16, (const VxBf16Bits* a, const VxBf16Bits* b, unsigned* out),
             (a, b, out))

extern "C" __global__ void __launch_bounds__(32)
    fragment_probe_tf32(const unsigned* __restrict__ a, const unsigned* __restrict__ b,
                        unsigned* __restrict__ out) {
    vx_fragment_probe<VxTf32>(a, b, out);
}
VX_EMU_ENTRY(fragment_probe_tf32, (const unsigned* a, const unsigned* b, unsigned* out),
             (a, b, out))

// One warp computes out = a b + c through one mma, with the fragments taken from
// row-major a (16 x K), b (K x 8) and c (16 x 8) by the layouts of mma.h; K = 8 for TF32,
// 16 for BF16.
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
// The harness entry for every conv kernel of this file, by name, on packed operands (bf16
// or tf32 as the name says): 0, -1 when the launch failed (emu_last_error() says why), -2
// when there is no such kernel.
extern "C" int emu_conv3d_pipe(const char* name, const EmuDims* d, const Conv3dParams p,
                               const void* a, const void* b, const float* bias, float* out) {
    static const VxEmuConv<VxBf16Bits> bf16[] = {
        {"conv3d_fwd_bf16_n128", conv3d_fwd_bf16_n128},
        {"conv3d_fwd_bf16_n64", conv3d_fwd_bf16_n64},
        {"conv3d_fwd_bf16_n32", conv3d_fwd_bf16_n32},
        {"conv3d_bwd_data_bf16_n128", conv3d_bwd_data_bf16_n128},
        {"conv3d_bwd_data_bf16_n64", conv3d_bwd_data_bf16_n64},
        {"conv3d_bwd_data_bf16_n32", conv3d_bwd_data_bf16_n32},
        {"conv3d_bwd_weight_bf16_n128", conv3d_bwd_weight_bf16_n128},
        {"conv3d_bwd_weight_bf16_n64", conv3d_bwd_weight_bf16_n64},
        {"conv3d_bwd_weight_bf16_n32", conv3d_bwd_weight_bf16_n32},
    };
    static const VxEmuConv<unsigned> tf32[] = {
        {"conv3d_fwd_tf32_n128", conv3d_fwd_tf32_n128},
        {"conv3d_fwd_tf32_n64", conv3d_fwd_tf32_n64},
        {"conv3d_fwd_tf32_n32", conv3d_fwd_tf32_n32},
        {"conv3d_bwd_data_tf32_n128", conv3d_bwd_data_tf32_n128},
        {"conv3d_bwd_data_tf32_n64", conv3d_bwd_data_tf32_n64},
        {"conv3d_bwd_data_tf32_n32", conv3d_bwd_data_tf32_n32},
        {"conv3d_bwd_weight_tf32_n128", conv3d_bwd_weight_tf32_n128},
        {"conv3d_bwd_weight_tf32_n64", conv3d_bwd_weight_tf32_n64},
        {"conv3d_bwd_weight_tf32_n32", conv3d_bwd_weight_tf32_n32},
    };
    const int r = vx_emu_conv(bf16, name, d, p, a, b, bias, out);
    return r != -2 ? r : vx_emu_conv(tf32, name, d, p, a, b, bias, out);
}
#endif
