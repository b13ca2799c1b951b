// Tile shapes of the convolution kernels (kernels/conv3d.cu, conv3d_pipe.cu),
// which the Rust launch plans (src/backend/cuda/conv_plan.rs) mirror;
// tests/cuda_harness_conv.rs compares the two through vx_launch_constant().
#pragma once

constexpr int VX_CONV_THREADS = 128;  // threads of every conv block
// f32 (CUDA-core) tiles, all VX_CONV_SIMT_BM rows: wide for most layers, narrow when the
// output has at most 8 channels (1x1x1 heads), shallow when the reduction has at most 4
// (tap, channel) pairs (the data gradient of a head with few outputs).
constexpr int VX_CONV_SIMT_BM = 64;
constexpr int VX_CONV_WIDE_BN = 32;
constexpr int VX_CONV_WIDE_BK = 16;
constexpr int VX_CONV_NARROW_BN = 8;
constexpr int VX_CONV_NARROW_BK = 16;
constexpr int VX_CONV_SHALLOW_BN = 32;
constexpr int VX_CONV_SHALLOW_BK = 4;
// Tensor-core kernels (conv3d_pipe.cu, BF16 and TF32): VX_CONV_TC_BM rows, 128, 64 or 32
// columns (VX_CONV_THREADS threads; VX_CONV_PIPE_NARROW_THREADS for 32 in backward
// weights); a reduction step of VX_CONV_PIPE_STEP_BYTES per row (32 bf16 or 16 tf32); a
// ring of VX_CONV_PIPE_STAGES shared-memory stages.
constexpr int VX_CONV_TC_BM = 128;
constexpr int VX_CONV_PIPE_STEP_BYTES = 64;
constexpr int VX_CONV_PIPE_NARROW_THREADS = 64;
constexpr int VX_CONV_PIPE_STAGES = 4;
// Hopper wgmma kernels (conv3d_wgmma.cu, sm_90a; all but TF32 backward weights and
// backward weights into 32 columns): VX_CONV_TC_BM rows by 128, 64 or 32 columns, two
// warpgroups (VX_CONV_WGMMA_THREADS), a reduction step of VX_CONV_WGMMA_STEP_BYTES per row
// (the 128-byte swizzle's row: 64 bf16 or 32 tf32), a ring of VX_CONV_WGMMA_STAGES_N128,
// _N64 or _N32 stages (one block per SM at 128 and 64 columns, two at 32; _N64_PAIR for
// the 64-column tile that runs two blocks per SM) that starts at a
// 1024-byte boundary of the shared window (the swizzle repeats every 8 rows of 128 bytes),
// VX_CONV_WGMMA_ALIGN bytes of dynamic shared memory being reserved for that.
constexpr int VX_CONV_WGMMA_THREADS = 256;
constexpr int VX_CONV_WGMMA_STEP_BYTES = 128;
constexpr int VX_CONV_WGMMA_STAGES_N128 = 5;
constexpr int VX_CONV_WGMMA_STAGES_N64 = 6;
constexpr int VX_CONV_WGMMA_STAGES_N32 = 5;
constexpr int VX_CONV_WGMMA_STAGES_N64_PAIR = 4;
constexpr int VX_CONV_WGMMA_ALIGN = 1024;
// The warp-specialized wgmma tiles, 128 x 128 and 128 x 64: one or two warpgroups that
// copy and the two of VX_CONV_WGMMA_THREADS that multiply, the rings of
// VX_CONV_WGMMA_STAGES_N128 and _N64.
constexpr int VX_CONV_WGMMA_WS128_THREADS = 384;
constexpr int VX_CONV_WGMMA_WS64_THREADS = 512;
// The wgmma tiles of 128 x 128 and 128 x 64 whose stages the tensor memory accelerator
// fills (backward weights, bf16): the two warpgroups that multiply and one more, one of
// whose threads issues the copies; the 256 x 128 one, four that multiply and one more.
constexpr int VX_CONV_WGMMA_TMA_THREADS = 384;
constexpr int VX_CONV_WGMMA_TMA256_THREADS = 640;
// Voxels of a 16-byte chunk of tf32 backward weights' channel-major packs, where a box's
// innermost coordinate must fall (kernels/tma.h), and the most copies of x they hold.
constexpr int VX_TMA_GRID_CHUNK_VOXELS = 4;
// The 256 x 128 wgmma tile: VX_CONV_WGMMA_M256_BM rows by VX_CONV_WGMMA_M256_BN columns,
// four warpgroups (VX_CONV_WGMMA_M256_THREADS), one block per SM, a ring of
// VX_CONV_WGMMA_STAGES_M256.
constexpr int VX_CONV_WGMMA_M256_BM = 256;
constexpr int VX_CONV_WGMMA_M256_BN = 128;
constexpr int VX_CONV_WGMMA_M256_THREADS = 512;
constexpr int VX_CONV_WGMMA_STAGES_M256 = 4;

// Halo kernels (conv3d_halo.cu, mma.sync, stride 1, forward and backward data): the
// 128-row tiles of VX_CONV_THREADS threads by 128, 64 or 32 columns, whose stage holds one
// A tile of VX_CONV_HALO_ROWS rows (the block's rows and the k_w - 1 after them, k_w at
// most VX_CONV_HALO_MAX_KW) and the B tiles of the k_w taps along w, 64 bytes of reduction
// per row; rings of VX_CONV_HALO_STAGES_N128, _N64, _N32 stages.
constexpr int VX_CONV_HALO_MAX_KW = 3;
constexpr int VX_CONV_HALO_ROWS = VX_CONV_TC_BM + VX_CONV_HALO_MAX_KW - 1;
constexpr int VX_CONV_HALO_STAGES_N128 = 3;
constexpr int VX_CONV_HALO_STAGES_N64 = 4;
constexpr int VX_CONV_HALO_STAGES_N32 = 4;
// Backward weights on the halo (conv3d_halo.cu): a block's rows are the channels
// VX_CONV_HALO_MAX_KW taps along w, one warp row per tap; its A tile holds the step's
// reduction rows (64 bytes of elements: 32 bf16 or 16 tf32 voxels) and
// VX_CONV_HALO_WEIGHT_EXTRA_ROWS more; a ring of VX_CONV_HALO_WEIGHT_STAGES stages.
constexpr int VX_CONV_HALO_WEIGHT_EXTRA_ROWS = 8;
constexpr int VX_CONV_HALO_WEIGHT_STAGES = 4;
// Phase kernels (conv3d_phase.cu, mma.sync): backward data of a convolution whose taps do
// not overlap (kernel == stride, no padding; a transposed convolution's 2x2x2 stride-2
// forward). A block of VX_CONV_THREADS threads keeps its VX_CONV_TC_BM rows' whole
// reduction in shared memory, at most VX_CONV_PHASE_MAX_STEPS steps of
// VX_CONV_PIPE_STEP_BYTES per row, and runs every (tap, VX_CONV_PHASE_BN columns) tile of
// its grid.y share from it, each tile's B in one of two buffers of that many steps.
constexpr int VX_CONV_PHASE_MAX_STEPS = 4;
constexpr int VX_CONV_PHASE_BN = 64;
// The tensor-core convolutions' operand packing (conv3d_pipe.cu): f32 source [a][b][c] to
// bf16 or tf32, the padded dimension rounded up with zeros to whole 16-byte chunks (a
// multiple of 8 bf16 or 4 tf32).
//   conv3d_pack_rows_*:       dst [b][a][padded], padded >= c (b == 1: a plain row pad)
//   conv3d_pack_transposed_*: dst [c][a][padded], padded >= b
// The chunk count (packed length / elements per chunk) fits an int.
struct ConvPackParams {
    int a, b, c;
    int padded;
};

// The halo kernels' bordered pack (conv3d_halo.cu): f32 activations [n][d][h][w][c] to
// bf16 or tf32 [n][out_d][out_h][out_w][padded], voxel (z, y, x) of the result holding the
// source voxel (z - before_d, y - before_h, x - before_w) and zeros where that is outside
// the source (before may be negative: the source is cropped), channels padded with zeros
// to whole 16-byte chunks. The chunk count fits an int.
struct ConvBorderPackParams {
    int n, d, h, w, c;
    int padded;
    int before_d, before_h, before_w;
    int out_d, out_h, out_w;
};

// tf32 backward weights on the bf16 kernels (conv3d_pack_rows_bf16x3,
// conv3d_pack_bordered_bf16x3): the pack's layout (rows or bordered, bf16) three times over,
// copy after copy, each a value's bf16 rounding hi or, in the copies whose bit
// residual_copies sets, the rounding of its residual x - hi (VxBf16x3Store). The bf16
// kernel runs on the three copies as one batch of 3 n samples. padded * rows * 3 fits a
// size_t, the chunk count of one copy an int.
struct ConvBf16x3PackParams {
    ConvPackParams pack;
    int residual_copies;
};

struct ConvBorderBf16x3PackParams {
    ConvBorderPackParams pack;
    int residual_copies;
};

// The channel-major pack of tf32 backward weights on wgmma (conv3d_wgmma.cu): f32
// activations [n][d][h][w][c] (grid's source) to tf32 [c][grid.padded], each channel's
// row one grid of phase_len = n out_d out_h out_w voxels (grid's bordered volume) per
// stride phase (rz, ry, rx), the phases in order (rz slowest): voxel (z, y, x) of sample
// nn in phase r holds source voxel (stride_d (z - before_d) + rz, ..), zeros outside the
// source and past the last phase. At stride 1 that is the bordered pack's layout,
// channel-major. `shifts` copies (1 to VX_TMA_GRID_CHUNK_VOXELS), copy s's rows starting s
// voxels further on: [shift][c][padded]. padded * c * shifts fits a size_t, padded an int.
struct ConvChannelMajorPackParams {
    ConvBorderPackParams grid;
    int stride_d, stride_h, stride_w;
    int phase_len;
    int shifts;
};
