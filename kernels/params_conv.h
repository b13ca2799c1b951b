// Tile shapes of the convolution kernels (kernels/conv3d.cu, kernels/conv3d_tc.cu), which
// the Rust launch plans (src/backend/cuda/conv_plan.rs) mirror; tests/cuda_harness_conv.rs
// compares the two through vx_launch_constant().
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
// Tensor-core tiles: VX_CONV_TC_BM rows, 64 or 32 columns, VX_CONV_TC_BK reduction step.
constexpr int VX_CONV_TC_BM = 128;
constexpr int VX_CONV_TC_BK = 32;
