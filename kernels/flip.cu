// Mirroring NDHWC tensors along any of D, H, W, as FlipKernel for the CPU backend
// (src/tensor_ops/flip): out[n, z, y, x] = in[n, z', y', x'] with i' = size - 1 - i on
// mirrored axes. A pure copy: bit-identical to the CPU's.
#include "spatial.h"

extern "C" __global__ void VX_SPATIAL_BOUNDS
    flip3d(const Flip3dGeometry g, const float* __restrict__ x, float* __restrict__ y) {
    const unsigned c = unsigned(g.channels);
    const unsigned d = unsigned(g.dims[0]), h = unsigned(g.dims[1]), w = unsigned(g.dims[2]);
    const bool mz = g.mirror[0] != 0, my = g.mirror[1] != 0, mx = g.mirror[2] != 0;
    const unsigned long long total = vx_numel(g.batch, g.dims, g.channels);
    for (unsigned long long i = vx_thread_index(); i < total; i += vx_thread_stride()) {
        const unsigned e = unsigned(i);
        const VxCell o = vx_cell(e, d, h, w, c);
        const unsigned z = mz ? d - 1 - o.z : o.z;
        const unsigned yy = my ? h - 1 - o.y : o.y;
        const unsigned xx = mx ? w - 1 - o.x : o.x;
        y[e] = x[vx_voxel(o.n, z, yy, xx, d, h, w) * c + o.c];
    }
}
VX_EMU_ENTRY(flip3d, (const Flip3dGeometry g, const float* x, float* y), (g, x, y))
