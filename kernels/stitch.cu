// Sliding-window stitching, as StitchKernel for the CPU backend (src/tensor_ops/stitch):
// one launch per window, in the order of the batch, so the windows of a batch that overlap
// add into a voxel in a fixed order and no two threads of a launch touch the same value.
// __fmul_rn keeps the product out of a fused multiply-add: acc + w * logit rounds twice,
// as the CPU does, and the results are the CPU's bit for bit.
#include "common.h"

// One thread per (cell of the window inside the volume, channel); the channel-0 thread
// also adds the cell's weight into norm.
extern "C" __global__ void __launch_bounds__(256)
    stitch_accumulate(const StitchParams p, const float* __restrict__ logits,
                      const float* __restrict__ weights, float* __restrict__ acc,
                      float* __restrict__ norm) {
    const unsigned k = p.channels;
    const unsigned ed = p.extent[0], eh = p.extent[1], ew = p.extent[2];
    const unsigned long long total = static_cast<unsigned long long>(ed) * eh * ew * k;
    const unsigned window_cells = p.patch[0] * p.patch[1] * p.patch[2];
    for (unsigned long long i = vx_thread_index(); i < total; i += vx_thread_stride()) {
        unsigned e = unsigned(i);
        const unsigned c = e % k;
        e /= k;
        const unsigned x = e % ew;
        e /= ew;
        const unsigned y = e % eh;
        const unsigned z = e / eh;
        const unsigned cell = (z * p.patch[1] + y) * p.patch[2] + x;
        const unsigned voxel =
            ((p.start[0] + z) * p.volume[1] + p.start[1] + y) * p.volume[2] + p.start[2] + x;
        const float w = weights[cell];
        const float logit = logits[(p.window * window_cells + cell) * k + c];
        acc[voxel * k + c] = acc[voxel * k + c] + __fmul_rn(w, logit);
        if (c == 0) norm[voxel] = norm[voxel] + w;
    }
}
VX_EMU_ENTRY(stitch_accumulate,
             (const StitchParams p, const float* logits, const float* weights, float* acc,
              float* norm),
             (p, logits, weights, acc, norm))

// acc[v, c] /= norm[v]: IEEE division, as the CPU's.
extern "C" __global__ void __launch_bounds__(256)
    stitch_divide(const StitchDivideParams p, const float* __restrict__ norm,
                  float* __restrict__ acc) {
    const unsigned long long total = p.voxels * p.channels;
    for (unsigned long long i = vx_thread_index(); i < total; i += vx_thread_stride()) {
        const unsigned e = unsigned(i);
        acc[e] = acc[e] / norm[e / p.channels];
    }
}
VX_EMU_ENTRY(stitch_divide, (const StitchDivideParams p, const float* norm, float* acc),
             (p, norm, acc))
