// Parameters of the spatial kernels: pooling (pool.cu), resampling (upsample.cu), channel
// ranges (concat.cu), padding (pad.cu), mirroring (flip.cu) and the SSIM window filter
// (ssim.cu). The geometry structs mirror the #[repr(C)] structs of src/tensor_ops, whose
// usize fields are 64-bit; the launchers (src/backend/cuda/params_spatial.rs) check that
// every size fits the kernels' 32-bit index arithmetic. tests/cuda_harness_ops_b.rs
// compares sizes and offsets with the Rust side.
#pragma once

// Most taps of a window filter: the taps travel in the parameter struct.
constexpr int VX_WINDOW_MAX_TAPS = 32;

// Pool3dGeometry (src/tensor_ops/pool). Output cell o reads input cells
// [o * stride - pad_before, + kernel) along each axis, clipped to the input.
struct Pool3dGeometry {
    unsigned long long batch;
    unsigned long long channels;
    unsigned long long input[3];   // D, H, W
    unsigned long long output[3];  // D, H, W
    unsigned long long kernel[3];
    unsigned long long stride[3];
    unsigned long long pad_before[3];
};

// Resample3dGeometry (src/tensor_ops/upsample).
struct Resample3dGeometry {
    unsigned long long batch;
    unsigned long long channels;
    unsigned long long input[3];   // D, H, W
    unsigned long long output[3];  // D, H, W
};

// ChannelRange (src/tensor_ops/concat): channels [start, end) of [rows, channels].
struct ChannelRange {
    unsigned long long rows;
    unsigned long long channels;
    unsigned long long start;
    unsigned long long end;
};

// Pad3dGeometry (src/tensor_ops/pad): output cell (z, y, x) reads input cell
// (z - before[0], y - before[1], x - before[2]), or takes the fill value outside it.
struct Pad3dGeometry {
    unsigned long long batch;
    unsigned long long channels;
    unsigned long long input[3];   // D, H, W
    unsigned long long output[3];  // D, H, W
    long long before[3];
};

// Flip3dGeometry (src/tensor_ops/flip): mirror[a] != 0 mirrors axis a.
struct Flip3dGeometry {
    unsigned long long batch;
    unsigned long long channels;
    unsigned long long dims[3];  // D, H, W
    unsigned long long mirror[3];
};

// Trilinear taps of one output cell along one axis (upsample.cu): it interpolates between
// input cells i0 and min(i0 + 1, n_in - 1) with weights w0 and w1.
struct LinearTap {
    unsigned i0;
    float w0;
    float w1;
};

// One pass of the separable window filter over a tensor viewed as [outer, len, inner]:
// y[o, i, j] = sum_t taps[t] x[o, i + t, j] for i < len - k + 1, and its adjoint.
struct WindowAxisParams {
    unsigned outer;
    unsigned len;  // of the unfiltered axis
    unsigned inner;
    unsigned k;    // taps in use, 1..VX_WINDOW_MAX_TAPS
    float taps[VX_WINDOW_MAX_TAPS];
};
