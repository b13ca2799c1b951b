// Parameter structs of every kernel, passed by value as the first kernel argument.
// Each one is mirrored field for field by a #[repr(C)] struct in src/backend/cuda/params.rs;
// tests/cuda_harness.rs checks sizes and offsets through vx_param_layout() (emu/layout.cpp).
// Only fixed-size scalars, ordered so that no implicit padding appears.
#pragma once

// Launch shapes the Rust plans (src/backend/cuda/launch.rs) assume; the harness tests
// compare them with the Rust constants through vx_launch_constant().
constexpr int VX_REDUCE_THREADS = 256;  // threads of a reduction block
#include "params_conv.h"

// Element-wise unary op codes (UnaryOp in src/tensor_ops/unary).
enum UnaryCode {
    UNARY_RELU = 0,
    UNARY_LEAKY_RELU = 1,
    UNARY_ELU = 2,
    UNARY_SIGMOID = 3,
    UNARY_TANH = 4,
    UNARY_EXP = 5,
    UNARY_LOG = 6,
    UNARY_NEG = 7,
    UNARY_ABS = 8,
    UNARY_SQUARE = 9,
    UNARY_SQRT = 10,
    UNARY_SCALE = 11,
    UNARY_ADD_SCALAR = 12,
};

struct UnaryParams {
    unsigned long long n;  // elements
    int op;                // a UnaryCode
    float arg;             // the op's constant (slope, alpha, factor, addend), as f32
};

// Binary op codes (BinaryOp in src/tensor_ops/binary).
enum BinaryCode {
    BINARY_ADD = 0,
    BINARY_SUB = 1,
    BINARY_MUL = 2,
    BINARY_DIV = 3,
};

struct BinaryParams {
    unsigned long long n;   // elements of a and of the output
    unsigned long long nb;  // elements of b, which repeats over a (nb divides n)
    int op;                 // a BinaryCode
    int pad_;               // keeps the size a multiple of 8 on both sides
};

// A sum over the middle axis of [outer, mid, inner]. The output columns q = o * inner + i
// are split into blocks of `cols` columns; grid.y splits `mid` into `splits` slices of
// `mid_per_split` rows, each writing its own partial: out[(o * splits + s) * inner + i].
struct ReduceParams {
    unsigned long long outer;
    unsigned long long mid;
    unsigned long long inner;
    unsigned long long mid_per_split;
    unsigned int cols;    // columns per block, a power of two <= 32
    unsigned int splits;  // == gridDim.y
};

// out[o, m, i] = x[o, i] for the [outer, mid, inner] view.
struct BroadcastParams {
    unsigned long long outer;
    unsigned long long mid;
    unsigned long long inner;
};

// out[i] = uniform_at(seed, stream, offset + i), as src/rng.rs computes it.
struct UniformParams {
    unsigned long long seed;
    unsigned long long offset;
    unsigned long long n;
    unsigned int stream;
    unsigned int pad_;
};

// A 3D convolution, NDHWC activations and [kd, kh, kw, cin, cout] weights.
// Output voxel o reads input voxel o * stride - pad + k along each axis; reads outside
// the input are zeros. The output size is given, so 'same' and 'valid' both fit.
struct Conv3dParams {
    int n;
    int in_d, in_h, in_w, cin;
    int out_d, out_h, out_w, cout;
    int k_d, k_h, k_w;
    int stride_d, stride_h, stride_w;
    int pad_d, pad_h, pad_w;
    // The reduction is split into `splits` slices of `split_len` (a multiple of the
    // kernel's K step), one per grid.z (times the stride phases for backward data), each
    // writing a partial result that a second pass sums. The reduction runs over the output
    // voxels for backward weights and over (tap, channel) for forward and backward data.
    int splits;
    int split_len;
};

// A tensor map of the tensor memory accelerator (CUtensorMap): 128 opaque bytes at a
// 128-byte boundary (CUDA 13's CUtensorMap; the driver asks for 64), written by the driver
// (cuTensorMapEncodeTiled) or, for the harness, by emu_tensor_map_encode_tiled
// (kernels/conv3d_wgmma.cu).
struct alignas(128) VxTensorMap {
    unsigned long long words[16];
};

// A convolution pass on the tensor memory accelerator (conv3d_wgmma.cu, *_tma*): tensor
// maps over its packed operands a and b, whose boxes tile the samples' output in boxes of
// box_d x box_h x box_w voxels, boxes_d x boxes_h x boxes_w per sample, each box read at
// its windows in x, taken every stride voxels (dimensions innermost first: channels, w, h,
// d, n).
// - Forward: a is x [n][in_d][in_h][in_w][cin_p], b the weights [cout][taps * cin_p] (a
//   [cout][tap][cin_p] pack); a block's rows are one box, a reduction step is a tap and a
//   row's bytes (128) of its channels (on the 64-byte-swizzle tiles, two boxes of 64 bytes:
//   the next two (tap, channels)); `conv.split_len` splits the reduction as the other
//   kernels do.
// - Backward weights: a is x, b is dy [n][out_d][out_h][out_w][cout_p]; a reduction step is
//   one box of 64 voxels by 64 channels, and each split takes conv.split_len / 64 of the
//   samples' boxes in order.
// - Backward weights at tf32 (k-major: voxels contiguous): a is x, b is dy, each packed
//   channel-major, [channels][row_len] (ConvChannelMajorPackParams), into grids of
//   grid_d x grid_h x grid_w voxels a sample, the samples' grids one after another
//   (grid_voxels in all): dy's at 0, x's one per stride phase; the maps are
//   [row_len][channels] (innermost first; the rest 1), a reduction step is 32 voxels of the
//   grid, and each split takes conv.split_len / 32 steps in order. The box fields are
//   unused.
struct Conv3dTmaParams {
    VxTensorMap a;
    VxTensorMap b;
    Conv3dParams conv;
    int box_d, box_h, box_w;
    int boxes_d, boxes_h, boxes_w;
    int grid_h, grid_w, grid_voxels;
    int pad_[3];  // to the maps' 128-byte alignment
};

// Pooling, resampling, channel ranges, padding, flips and the SSIM window filter.
#include "params_spatial.h"
// One header per op family.
#include "params_norm.h"
#include "params_dropout.h"
#include "params_matmul.h"
#include "params_softmax.h"
#include "params_bce.h"
#include "params_cross_entropy.h"
#include "params_optim_step.h"
#include "params_dice.h"
#include "params_confusion.h"
#include "params_stitch.h"
