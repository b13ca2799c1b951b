// Parameters of the fused Dice sums (kernels/dice.cu); mirrored, with the launch plan, by
// src/backend/cuda/params_dice.rs.
#pragma once

// Threads of every dice.cu block.
constexpr int VX_DICE_THREADS = 256;

// Probabilities and targets viewed as [rows, row_voxels, channels]. The sums and backward
// launches have grid (splits, rows, channel chunks): block (s, r, k) covers voxels
// [s * voxels_per_split, (s + 1) * voxels_per_split) of row r and channels
// [k * chunk_channels, (k + 1) * chunk_channels). Its threads are VX_DICE_THREADS /
// chunk_channels groups of chunk_channels lanes; lane l keeps channel k * chunk_channels + l,
// group g takes every groups-th voxel from the first + g, so a warp reads consecutive floats.
// Partial sums: partial[((r * channels + c) * 3 + j) * splits + s], j = p t, p, t.
struct DiceKernelParams {
    unsigned long long rows;
    unsigned long long row_voxels;
    unsigned long long channels;
    unsigned long long voxels_per_split;
    unsigned int splits;          // == gridDim.x
    unsigned int chunk_channels;  // min(channels, VX_DICE_THREADS), at least 1
};
