// Shared by the spatial kernels (pool, upsample, concat, pad, flip, ssim): their launch
// bounds, and index helpers: a flat element index of an NDHWC tensor split into
// coordinates, and voxel offsets back. 32-bit: the launchers check that every tensor
// passed to these kernels has fewer than 2^32 elements.
#pragma once
#include "common.h"

// Blocks of 256 threads (launch::elementwise), at least four per SM, which caps registers
// at 64. With the thread count alone, ptxas for sm_90 picks a tighter cap of its own and
// spills.
#define VX_SPATIAL_BOUNDS __launch_bounds__(256, 4)

struct VxCell {
    unsigned n, z, y, x, c;
};

// Coordinates of element e of a [batch, d, h, w, c] tensor (channels fastest).
__device__ __forceinline__ VxCell vx_cell(unsigned e, unsigned d, unsigned h, unsigned w,
                                          unsigned c) {
    VxCell r;
    r.c = e % c;
    e /= c;
    r.x = e % w;
    e /= w;
    r.y = e % h;
    e /= h;
    r.z = e % d;
    r.n = e / d;
    return r;
}

// Voxel index of (n, z, y, x) in a [batch, d, h, w] grid; times the channel count it is
// the offset of the voxel's first channel.
__device__ __forceinline__ unsigned vx_voxel(unsigned n, unsigned z, unsigned y, unsigned x,
                                             unsigned d, unsigned h, unsigned w) {
    return ((n * d + z) * h + y) * w + x;
}

// Elements of a [batch, d, h, w, c] tensor given as the 64-bit fields of a geometry.
__device__ __forceinline__ unsigned long long vx_numel(unsigned long long batch,
                                                       const unsigned long long* dhw,
                                                       unsigned long long c) {
    return batch * dhw[0] * dhw[1] * dhw[2] * c;
}
