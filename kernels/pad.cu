// Spatial padding and cropping of NDHWC tensors in one op, as PadKernel for the CPU
// backend (src/tensor_ops/pad): output cell (z, y, x) copies input cell
// (z - before[0], y - before[1], x - before[2]) or, outside the input, takes `fill`.
// A pure copy: bit-identical to the CPU's.
#include "spatial.h"

extern "C" __global__ void VX_SPATIAL_BOUNDS
    pad3d(const Pad3dGeometry g, const float fill, const float* __restrict__ x,
          float* __restrict__ y) {
    const unsigned c = unsigned(g.channels);
    const long long id = (long long)(g.input[0]), ih = (long long)(g.input[1]),
                    iw = (long long)(g.input[2]);
    const unsigned long long total = vx_numel(g.batch, g.output, g.channels);
    for (unsigned long long i = vx_thread_index(); i < total; i += vx_thread_stride()) {
        const unsigned e = unsigned(i);
        const VxCell o =
            vx_cell(e, unsigned(g.output[0]), unsigned(g.output[1]), unsigned(g.output[2]), c);
        // Source coordinates in 64 bits: an offset and a coordinate may each be near 2^31.
        const long long z = o.z - g.before[0], yy = o.y - g.before[1], xx = o.x - g.before[2];
        const bool inside = z >= 0 && z < id && yy >= 0 && yy < ih && xx >= 0 && xx < iw;
        y[e] = inside ? x[vx_voxel(o.n, unsigned(z), unsigned(yy), unsigned(xx), unsigned(id),
                                   unsigned(ih), unsigned(iw)) *
                              c +
                          o.c]
                      : fill;
    }
}
VX_EMU_ENTRY(pad3d, (const Pad3dGeometry g, const float fill, const float* x, float* y),
             (g, fill, x, y))
