// Parameters of the sliding-window stitching (kernels/stitch.cu); mirrored by
// src/backend/cuda/params_stitch.rs. 32-bit sizes: the launchers check that the volume's
// and the logits batch's element counts fit.
#pragma once

// One window of a batch added into the volume (StitchKernel::accumulate_windows): its
// cells (z, y, x) < extent, at voxel start + (z, y, x) of the volume, read logits row
// (window, cell) and weight[cell]. extent = min(patch, volume - start) per axis.
struct StitchParams {
    unsigned int volume[3];  // D, H, W of acc [D, H, W, K] and norm [D, H, W]
    unsigned int patch[3];   // D, H, W of a window (logits [windows, patch, K], weights)
    unsigned int start[3];
    unsigned int extent[3];
    unsigned int channels;   // K
    unsigned int window;     // index of the window in the logits batch
};

// acc [voxels, channels] divided row by row by norm [voxels] (divide_by_weights).
struct StitchDivideParams {
    unsigned long long voxels;
    unsigned int channels;
    unsigned int pad_;
};
