// The C++ side of the parameter-layout contract: sizes and field offsets of every struct
// in params.h (and EmuDims), and the launch constants, for tests/cuda_harness.rs to
// compare with the #[repr(C)] mirrors in src/backend/cuda/params.rs.
#include <cstddef>
#include <cstring>

#include "../params.h"
#include "cuda_emu.h"

#define VX_SIZE(T) \
    if (!std::strcmp(type, #T) && field == nullptr) return static_cast<long long>(sizeof(T));
#define VX_FIELD(T, f)                                                  \
    if (!std::strcmp(type, #T) && field != nullptr && !std::strcmp(field, #f)) \
        return static_cast<long long>(offsetof(T, f));

// sizeof(type) when field is null, else offsetof(type, field); -1 for an unknown name.
extern "C" long long vx_param_layout(const char* type, const char* field) {
    VX_SIZE(UnaryParams)
    VX_FIELD(UnaryParams, n)
    VX_FIELD(UnaryParams, op)
    VX_FIELD(UnaryParams, arg)
    VX_SIZE(BinaryParams)
    VX_FIELD(BinaryParams, n)
    VX_FIELD(BinaryParams, nb)
    VX_FIELD(BinaryParams, op)
    VX_FIELD(BinaryParams, pad_)
    VX_SIZE(ReduceParams)
    VX_FIELD(ReduceParams, outer)
    VX_FIELD(ReduceParams, mid)
    VX_FIELD(ReduceParams, inner)
    VX_FIELD(ReduceParams, mid_per_split)
    VX_FIELD(ReduceParams, cols)
    VX_FIELD(ReduceParams, splits)
    VX_SIZE(BroadcastParams)
    VX_FIELD(BroadcastParams, outer)
    VX_FIELD(BroadcastParams, mid)
    VX_FIELD(BroadcastParams, inner)
    VX_SIZE(UniformParams)
    VX_FIELD(UniformParams, seed)
    VX_FIELD(UniformParams, offset)
    VX_FIELD(UniformParams, n)
    VX_FIELD(UniformParams, stream)
    VX_FIELD(UniformParams, pad_)
    VX_SIZE(VxTensorMap)
    VX_FIELD(VxTensorMap, words)
    VX_SIZE(Conv3dTmaParams)
    VX_FIELD(Conv3dTmaParams, a)
    VX_FIELD(Conv3dTmaParams, b)
    VX_FIELD(Conv3dTmaParams, conv)
    VX_FIELD(Conv3dTmaParams, box_d)
    VX_FIELD(Conv3dTmaParams, box_h)
    VX_FIELD(Conv3dTmaParams, box_w)
    VX_FIELD(Conv3dTmaParams, boxes_d)
    VX_FIELD(Conv3dTmaParams, boxes_h)
    VX_FIELD(Conv3dTmaParams, boxes_w)
    VX_FIELD(Conv3dTmaParams, grid_h)
    VX_FIELD(Conv3dTmaParams, grid_w)
    VX_FIELD(Conv3dTmaParams, grid_voxels)
    VX_FIELD(Conv3dTmaParams, pad_)
    VX_SIZE(Conv3dParams)
    VX_FIELD(Conv3dParams, n)
    VX_FIELD(Conv3dParams, in_d)
    VX_FIELD(Conv3dParams, in_h)
    VX_FIELD(Conv3dParams, in_w)
    VX_FIELD(Conv3dParams, cin)
    VX_FIELD(Conv3dParams, out_d)
    VX_FIELD(Conv3dParams, out_h)
    VX_FIELD(Conv3dParams, out_w)
    VX_FIELD(Conv3dParams, cout)
    VX_FIELD(Conv3dParams, k_d)
    VX_FIELD(Conv3dParams, k_h)
    VX_FIELD(Conv3dParams, k_w)
    VX_FIELD(Conv3dParams, stride_d)
    VX_FIELD(Conv3dParams, stride_h)
    VX_FIELD(Conv3dParams, stride_w)
    VX_FIELD(Conv3dParams, pad_d)
    VX_FIELD(Conv3dParams, pad_h)
    VX_FIELD(Conv3dParams, pad_w)
    VX_FIELD(Conv3dParams, splits)
    VX_FIELD(Conv3dParams, split_len)
    VX_SIZE(ConvPackParams)
    VX_FIELD(ConvPackParams, a)
    VX_FIELD(ConvPackParams, b)
    VX_FIELD(ConvPackParams, c)
    VX_FIELD(ConvPackParams, padded)
    VX_SIZE(ConvBorderPackParams)
    VX_FIELD(ConvBorderPackParams, n)
    VX_FIELD(ConvBorderPackParams, d)
    VX_FIELD(ConvBorderPackParams, h)
    VX_FIELD(ConvBorderPackParams, w)
    VX_FIELD(ConvBorderPackParams, c)
    VX_FIELD(ConvBorderPackParams, padded)
    VX_FIELD(ConvBorderPackParams, before_d)
    VX_FIELD(ConvBorderPackParams, before_h)
    VX_FIELD(ConvBorderPackParams, before_w)
    VX_FIELD(ConvBorderPackParams, out_d)
    VX_FIELD(ConvBorderPackParams, out_h)
    VX_FIELD(ConvBorderPackParams, out_w)
    VX_SIZE(ConvBf16x3PackParams)
    VX_FIELD(ConvBf16x3PackParams, pack)
    VX_FIELD(ConvBf16x3PackParams, residual_copies)
    VX_SIZE(ConvBorderBf16x3PackParams)
    VX_FIELD(ConvBorderBf16x3PackParams, pack)
    VX_FIELD(ConvBorderBf16x3PackParams, residual_copies)
    VX_SIZE(ConvChannelMajorPackParams)
    VX_FIELD(ConvChannelMajorPackParams, grid)
    VX_FIELD(ConvChannelMajorPackParams, stride_d)
    VX_FIELD(ConvChannelMajorPackParams, stride_h)
    VX_FIELD(ConvChannelMajorPackParams, stride_w)
    VX_FIELD(ConvChannelMajorPackParams, phase_len)
    VX_FIELD(ConvChannelMajorPackParams, shifts)
    VX_SIZE(EmuDims)
    VX_FIELD(EmuDims, grid)
    VX_FIELD(EmuDims, block)
    VX_FIELD(EmuDims, shared_bytes)
    // Spatial kernels (params_spatial.h).
    VX_SIZE(Pool3dGeometry)
    VX_FIELD(Pool3dGeometry, batch)
    VX_FIELD(Pool3dGeometry, channels)
    VX_FIELD(Pool3dGeometry, input)
    VX_FIELD(Pool3dGeometry, output)
    VX_FIELD(Pool3dGeometry, kernel)
    VX_FIELD(Pool3dGeometry, stride)
    VX_FIELD(Pool3dGeometry, pad_before)
    VX_SIZE(Resample3dGeometry)
    VX_FIELD(Resample3dGeometry, batch)
    VX_FIELD(Resample3dGeometry, channels)
    VX_FIELD(Resample3dGeometry, input)
    VX_FIELD(Resample3dGeometry, output)
    VX_SIZE(ChannelRange)
    VX_FIELD(ChannelRange, rows)
    VX_FIELD(ChannelRange, channels)
    VX_FIELD(ChannelRange, start)
    VX_FIELD(ChannelRange, end)
    VX_SIZE(Pad3dGeometry)
    VX_FIELD(Pad3dGeometry, batch)
    VX_FIELD(Pad3dGeometry, channels)
    VX_FIELD(Pad3dGeometry, input)
    VX_FIELD(Pad3dGeometry, output)
    VX_FIELD(Pad3dGeometry, before)
    VX_SIZE(Flip3dGeometry)
    VX_FIELD(Flip3dGeometry, batch)
    VX_FIELD(Flip3dGeometry, channels)
    VX_FIELD(Flip3dGeometry, dims)
    VX_FIELD(Flip3dGeometry, mirror)
    VX_SIZE(LinearTap)
    VX_FIELD(LinearTap, i0)
    VX_FIELD(LinearTap, w0)
    VX_FIELD(LinearTap, w1)
    VX_SIZE(WindowAxisParams)
    VX_FIELD(WindowAxisParams, outer)
    VX_FIELD(WindowAxisParams, len)
    VX_FIELD(WindowAxisParams, inner)
    VX_FIELD(WindowAxisParams, k)
    VX_FIELD(WindowAxisParams, taps)
    VX_SIZE(NormKernelParams)
    VX_FIELD(NormKernelParams, outer)
    VX_FIELD(NormKernelParams, mid)
    VX_FIELD(NormKernelParams, c)
    VX_FIELD(NormKernelParams, cpg)
    VX_FIELD(NormKernelParams, eps)
    VX_FIELD(NormKernelParams, neg_slope)
    VX_FIELD(NormKernelParams, has_gamma)
    VX_FIELD(NormKernelParams, has_beta)
    VX_FIELD(NormKernelParams, fixed_stats)
    VX_SIZE(NormMovingParams)
    VX_FIELD(NormMovingParams, n)
    VX_FIELD(NormMovingParams, momentum)
    VX_FIELD(NormMovingParams, correction)
    VX_SIZE(DropoutKernelParams)
    VX_FIELD(DropoutKernelParams, seed)
    VX_FIELD(DropoutKernelParams, n)
    VX_FIELD(DropoutKernelParams, channels)
    VX_FIELD(DropoutKernelParams, example_len)
    VX_FIELD(DropoutKernelParams, threshold)
    VX_FIELD(DropoutKernelParams, scale)
    VX_FIELD(DropoutKernelParams, stream)
    VX_FIELD(DropoutKernelParams, spatial)
    VX_SIZE(MatmulKernelParams)
    VX_FIELD(MatmulKernelParams, m)
    VX_FIELD(MatmulKernelParams, n)
    VX_FIELD(MatmulKernelParams, k)
    VX_FIELD(MatmulKernelParams, k_per_split)
    VX_FIELD(MatmulKernelParams, trans_a)
    VX_FIELD(MatmulKernelParams, trans_b)
    VX_FIELD(MatmulKernelParams, has_bias)
    VX_FIELD(MatmulKernelParams, pad_)
    VX_SIZE(SoftmaxKernelParams)
    VX_FIELD(SoftmaxKernelParams, rows)
    VX_FIELD(SoftmaxKernelParams, channels)
    VX_FIELD(SoftmaxKernelParams, log)
    VX_FIELD(SoftmaxKernelParams, pad_)
    VX_SIZE(BceKernelParams)
    VX_FIELD(BceKernelParams, n)
    VX_FIELD(BceKernelParams, weight_group)
    VX_FIELD(BceKernelParams, pos_weight)
    VX_FIELD(BceKernelParams, scale)
    VX_FIELD(BceKernelParams, has_weight)
    VX_FIELD(BceKernelParams, pad_)
    VX_SIZE(CrossEntropyKernelParams)
    VX_FIELD(CrossEntropyKernelParams, rows)
    VX_FIELD(CrossEntropyKernelParams, classes)
    VX_FIELD(CrossEntropyKernelParams, has_weights)
    VX_FIELD(CrossEntropyKernelParams, pad_)
    VX_SIZE(OptimTensor)
    VX_FIELD(OptimTensor, param)
    VX_FIELD(OptimTensor, grad)
    VX_FIELD(OptimTensor, state0)
    VX_FIELD(OptimTensor, state1)
    VX_FIELD(OptimTensor, n)
    VX_FIELD(OptimTensor, first_chunk)
    VX_FIELD(OptimTensor, decay)
    VX_FIELD(OptimTensor, pad_)
    VX_SIZE(OptimTableParams)
    VX_FIELD(OptimTableParams, chunk)
    VX_FIELD(OptimTableParams, tensors)
    VX_FIELD(OptimTableParams, chunks)
    VX_SIZE(SgdKernelParams)
    VX_FIELD(SgdKernelParams, table)
    VX_FIELD(SgdKernelParams, lr)
    VX_FIELD(SgdKernelParams, momentum)
    VX_FIELD(SgdKernelParams, weight_decay)
    VX_FIELD(SgdKernelParams, nesterov)
    VX_FIELD(SgdKernelParams, pad_)
    VX_SIZE(AdamKernelParams)
    VX_FIELD(AdamKernelParams, table)
    VX_FIELD(AdamKernelParams, lr)
    VX_FIELD(AdamKernelParams, beta1)
    VX_FIELD(AdamKernelParams, beta2)
    VX_FIELD(AdamKernelParams, eps)
    VX_FIELD(AdamKernelParams, l2)
    VX_FIELD(AdamKernelParams, decoupled_decay)
    VX_FIELD(AdamKernelParams, bias_correction1)
    VX_FIELD(AdamKernelParams, bias_correction2)
    VX_FIELD(AdamKernelParams, lazy)
    VX_FIELD(AdamKernelParams, pad_)
    VX_SIZE(ScaleKernelParams)
    VX_FIELD(ScaleKernelParams, table)
    VX_FIELD(ScaleKernelParams, factor)
    VX_FIELD(ScaleKernelParams, pad_)
    VX_SIZE(DiceKernelParams)
    VX_FIELD(DiceKernelParams, rows)
    VX_FIELD(DiceKernelParams, row_voxels)
    VX_FIELD(DiceKernelParams, channels)
    VX_FIELD(DiceKernelParams, voxels_per_split)
    VX_FIELD(DiceKernelParams, splits)
    VX_FIELD(DiceKernelParams, chunk_channels)
    VX_SIZE(ConfusionKernelParams)
    VX_FIELD(ConfusionKernelParams, voxels)
    VX_FIELD(ConfusionKernelParams, region_classes)
    VX_FIELD(ConfusionKernelParams, channels)
    VX_FIELD(ConfusionKernelParams, regions)
    VX_FIELD(ConfusionKernelParams, argmax)
    VX_FIELD(ConfusionKernelParams, pad_)
    VX_FIELD(ConfusionKernelParams, paint)
    VX_SIZE(StitchParams)
    VX_FIELD(StitchParams, volume)
    VX_FIELD(StitchParams, patch)
    VX_FIELD(StitchParams, start)
    VX_FIELD(StitchParams, extent)
    VX_FIELD(StitchParams, channels)
    VX_FIELD(StitchParams, window)
    VX_SIZE(StitchDivideParams)
    VX_FIELD(StitchDivideParams, voxels)
    VX_FIELD(StitchDivideParams, channels)
    VX_FIELD(StitchDivideParams, pad_)
    return -1;
}

// The value of a launch constant from params.h; -1 for an unknown name.
extern "C" long long vx_launch_constant(const char* name) {
    if (!std::strcmp(name, "VX_REDUCE_THREADS")) return VX_REDUCE_THREADS;
    if (!std::strcmp(name, "VX_CONV_THREADS")) return VX_CONV_THREADS;
    if (!std::strcmp(name, "VX_WINDOW_MAX_TAPS")) return VX_WINDOW_MAX_TAPS;
    if (!std::strcmp(name, "VX_MATMUL_BM")) return VX_MATMUL_BM;
    if (!std::strcmp(name, "VX_MATMUL_BN")) return VX_MATMUL_BN;
    if (!std::strcmp(name, "VX_MATMUL_BK")) return VX_MATMUL_BK;
    if (!std::strcmp(name, "VX_MATMUL_THREADS")) return VX_MATMUL_THREADS;
    if (!std::strcmp(name, "VX_SUM_THREADS")) return VX_SUM_THREADS;
    if (!std::strcmp(name, "VX_NORM_GRAD_DX")) return VX_NORM_GRAD_DX;
    if (!std::strcmp(name, "VX_NORM_GRAD_GAMMA")) return VX_NORM_GRAD_GAMMA;
    if (!std::strcmp(name, "VX_NORM_GRAD_BETA")) return VX_NORM_GRAD_BETA;
    if (!std::strcmp(name, "VX_OPTIM_THREADS")) return VX_OPTIM_THREADS;
    if (!std::strcmp(name, "VX_DICE_THREADS")) return VX_DICE_THREADS;
    if (!std::strcmp(name, "VX_CONFUSION_THREADS")) return VX_CONFUSION_THREADS;
    if (!std::strcmp(name, "VX_CONFUSION_MAX_CHANNELS")) return VX_CONFUSION_MAX_CHANNELS;
    if (!std::strcmp(name, "VX_CONFUSION_MAX_REGIONS")) return VX_CONFUSION_MAX_REGIONS;
    if (!std::strcmp(name, "VX_CONFUSION_MAX_CLASSES")) return VX_CONFUSION_MAX_CLASSES;
    if (!std::strcmp(name, "VX_CONV_SIMT_BM")) return VX_CONV_SIMT_BM;
    if (!std::strcmp(name, "VX_CONV_WIDE_BN")) return VX_CONV_WIDE_BN;
    if (!std::strcmp(name, "VX_CONV_WIDE_BK")) return VX_CONV_WIDE_BK;
    if (!std::strcmp(name, "VX_CONV_NARROW_BN")) return VX_CONV_NARROW_BN;
    if (!std::strcmp(name, "VX_CONV_NARROW_BK")) return VX_CONV_NARROW_BK;
    if (!std::strcmp(name, "VX_CONV_SHALLOW_BN")) return VX_CONV_SHALLOW_BN;
    if (!std::strcmp(name, "VX_CONV_SHALLOW_BK")) return VX_CONV_SHALLOW_BK;
    if (!std::strcmp(name, "VX_CONV_TC_BM")) return VX_CONV_TC_BM;
    if (!std::strcmp(name, "VX_CONV_PIPE_STEP_BYTES")) return VX_CONV_PIPE_STEP_BYTES;
    if (!std::strcmp(name, "VX_CONV_PIPE_NARROW_THREADS")) return VX_CONV_PIPE_NARROW_THREADS;
    if (!std::strcmp(name, "VX_CONV_PIPE_STAGES")) return VX_CONV_PIPE_STAGES;
    if (!std::strcmp(name, "VX_CONV_WGMMA_THREADS")) return VX_CONV_WGMMA_THREADS;
    if (!std::strcmp(name, "VX_CONV_WGMMA_STEP_BYTES")) return VX_CONV_WGMMA_STEP_BYTES;
    if (!std::strcmp(name, "VX_CONV_WGMMA_STAGES_N128")) return VX_CONV_WGMMA_STAGES_N128;
    if (!std::strcmp(name, "VX_CONV_WGMMA_STAGES_N64")) return VX_CONV_WGMMA_STAGES_N64;
    if (!std::strcmp(name, "VX_CONV_WGMMA_STAGES_N32")) return VX_CONV_WGMMA_STAGES_N32;
    if (!std::strcmp(name, "VX_CONV_WGMMA_STAGES_N64_PAIR")) return VX_CONV_WGMMA_STAGES_N64_PAIR;
    if (!std::strcmp(name, "VX_CONV_WGMMA_M256_BM")) return VX_CONV_WGMMA_M256_BM;
    if (!std::strcmp(name, "VX_CONV_WGMMA_M256_BN")) return VX_CONV_WGMMA_M256_BN;
    if (!std::strcmp(name, "VX_CONV_WGMMA_M256_THREADS")) return VX_CONV_WGMMA_M256_THREADS;
    if (!std::strcmp(name, "VX_CONV_WGMMA_STAGES_M256")) return VX_CONV_WGMMA_STAGES_M256;
    if (!std::strcmp(name, "VX_CONV_WGMMA_WS128_THREADS")) return VX_CONV_WGMMA_WS128_THREADS;
    if (!std::strcmp(name, "VX_CONV_WGMMA_WS64_THREADS")) return VX_CONV_WGMMA_WS64_THREADS;
    if (!std::strcmp(name, "VX_CONV_WGMMA_TMA_THREADS")) return VX_CONV_WGMMA_TMA_THREADS;
    if (!std::strcmp(name, "VX_CONV_WGMMA_TMA256_THREADS")) return VX_CONV_WGMMA_TMA256_THREADS;
    if (!std::strcmp(name, "VX_TMA_GRID_CHUNK_VOXELS")) return VX_TMA_GRID_CHUNK_VOXELS;
    if (!std::strcmp(name, "VX_CONV_HALO_ROWS")) return VX_CONV_HALO_ROWS;
    if (!std::strcmp(name, "VX_CONV_HALO_MAX_KW")) return VX_CONV_HALO_MAX_KW;
    if (!std::strcmp(name, "VX_CONV_HALO_STAGES_N128")) return VX_CONV_HALO_STAGES_N128;
    if (!std::strcmp(name, "VX_CONV_HALO_STAGES_N64")) return VX_CONV_HALO_STAGES_N64;
    if (!std::strcmp(name, "VX_CONV_HALO_STAGES_N32")) return VX_CONV_HALO_STAGES_N32;
    if (!std::strcmp(name, "VX_CONV_HALO_WEIGHT_EXTRA_ROWS")) return VX_CONV_HALO_WEIGHT_EXTRA_ROWS;
    if (!std::strcmp(name, "VX_CONV_HALO_WEIGHT_STAGES")) return VX_CONV_HALO_WEIGHT_STAGES;
    if (!std::strcmp(name, "VX_CONV_PHASE_MAX_STEPS")) return VX_CONV_PHASE_MAX_STEPS;
    if (!std::strcmp(name, "VX_CONV_PHASE_BN")) return VX_CONV_PHASE_BN;
    if (!std::strcmp(name, "VX_CONV_WGMMA_ALIGN")) return VX_CONV_WGMMA_ALIGN;
    return -1;
}
