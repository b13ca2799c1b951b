// Resampling of D, H, W of NDHWC tensors, forward and backward, with the semantics of
// UpsampleKernel for the CPU backend (src/tensor_ops/upsample): nearest-neighbour by
// integer factors, and trilinear with PyTorch's align_corners=False source coordinates,
// computed in f64 exactly as `linear_taps` does (once per call, into a table). The
// backward passes are gathers: each input element adds, in output order, the gradients
// of the output cells that read it.
#include "spatial.h"

__device__ __forceinline__ VxCell vx_resample_output_cell(const Resample3dGeometry& g,
                                                          unsigned e) {
    return vx_cell(e, unsigned(g.output[0]), unsigned(g.output[1]), unsigned(g.output[2]),
                   unsigned(g.channels));
}

__device__ __forceinline__ VxCell vx_resample_input_cell(const Resample3dGeometry& g,
                                                         unsigned e) {
    return vx_cell(e, unsigned(g.input[0]), unsigned(g.input[1]), unsigned(g.input[2]),
                   unsigned(g.channels));
}

extern "C" __global__ void VX_SPATIAL_BOUNDS
    upsample_nearest3d_forward(const Resample3dGeometry g, const float* __restrict__ x,
                               float* __restrict__ y) {
    const unsigned c = unsigned(g.channels);
    const unsigned id = unsigned(g.input[0]), ih = unsigned(g.input[1]),
                   iw = unsigned(g.input[2]);
    const unsigned fd = unsigned(g.output[0]) / id, fh = unsigned(g.output[1]) / ih,
                   fw = unsigned(g.output[2]) / iw;
    const unsigned long long total = vx_numel(g.batch, g.output, g.channels);
    for (unsigned long long i = vx_thread_index(); i < total; i += vx_thread_stride()) {
        const unsigned e = unsigned(i);
        const VxCell o = vx_resample_output_cell(g, e);
        y[e] = x[vx_voxel(o.n, o.z / fd, o.y / fh, o.x / fw, id, ih, iw) * c + o.c];
    }
}
VX_EMU_ENTRY(upsample_nearest3d_forward, (const Resample3dGeometry g, const float* x, float* y),
             (g, x, y))

extern "C" __global__ void VX_SPATIAL_BOUNDS
    upsample_nearest3d_backward(const Resample3dGeometry g, const float* __restrict__ dy,
                                float* __restrict__ dx) {
    const unsigned c = unsigned(g.channels);
    const unsigned od = unsigned(g.output[0]), oh = unsigned(g.output[1]),
                   ow = unsigned(g.output[2]);
    const unsigned fd = od / unsigned(g.input[0]), fh = oh / unsigned(g.input[1]),
                   fw = ow / unsigned(g.input[2]);
    const unsigned long long total = vx_numel(g.batch, g.input, g.channels);
    for (unsigned long long i = vx_thread_index(); i < total; i += vx_thread_stride()) {
        const unsigned e = unsigned(i);
        const VxCell p = vx_resample_input_cell(g, e);
        float acc = 0.0f;
        for (unsigned oz = p.z * fd; oz < (p.z + 1) * fd; ++oz)
            for (unsigned oy = p.y * fh; oy < (p.y + 1) * fh; ++oy)
                for (unsigned ox = p.x * fw; ox < (p.x + 1) * fw; ++ox)
                    acc += dy[vx_voxel(p.n, oz, oy, ox, od, oh, ow) * c + p.c];
        dx[e] = acc;
    }
}
VX_EMU_ENTRY(upsample_nearest3d_backward,
             (const Resample3dGeometry g, const float* dy, float* dx), (g, dy, dx))

// Along each axis, output cell o interpolates between input cells i0 and
// i1 = min(i0 + 1, n_in - 1) with weights w0 and w1: `linear_taps` in
// src/tensor_ops/upsample, in the same f64 operations, the weights rounded to f32 as the
// CPU kernel's E::of does (LinearTap in params_spatial.h). One entry per output cell of D,
// then H, then W, computed once per call by linear_taps_table (so the f64 division, with
// its slow-path call, stays out of the loops that read the taps).
extern "C" __global__ void VX_SPATIAL_BOUNDS
    linear_taps_table(const Resample3dGeometry g, LinearTap* __restrict__ table) {
    const unsigned long long total = g.output[0] + g.output[1] + g.output[2];
    for (unsigned long long i = vx_thread_index(); i < total; i += vx_thread_stride()) {
        const unsigned od = unsigned(g.output[0]), oh = unsigned(g.output[1]);
        unsigned o = unsigned(i), n_in, n_out;
        if (o < od) {
            n_in = unsigned(g.input[0]);
            n_out = od;
        } else if (o < od + oh) {
            o -= od;
            n_in = unsigned(g.input[1]);
            n_out = oh;
        } else {
            o -= od + oh;
            n_in = unsigned(g.input[2]);
            n_out = unsigned(g.output[2]);
        }
        const double src =
            fmax((double(o) + 0.5) * double(n_in) / double(n_out) - 0.5, 0.0);
        LinearTap t;
        t.i0 = min(unsigned(src), n_in - 1);
        const double w1 = src - double(t.i0);
        t.w0 = float(1.0 - w1);
        t.w1 = float(w1);
        table[i] = t;
    }
}
VX_EMU_ENTRY(linear_taps_table, (const Resample3dGeometry g, LinearTap* table), (g, table))

extern "C" __global__ void VX_SPATIAL_BOUNDS
    upsample_trilinear3d_forward(const Resample3dGeometry g,
                                 const LinearTap* __restrict__ table,
                                 const float* __restrict__ x, float* __restrict__ y) {
    const unsigned c = unsigned(g.channels);
    const unsigned id = unsigned(g.input[0]), ih = unsigned(g.input[1]),
                   iw = unsigned(g.input[2]);
    const unsigned od = unsigned(g.output[0]), oh = unsigned(g.output[1]);
    const unsigned long long total = vx_numel(g.batch, g.output, g.channels);
    for (unsigned long long i = vx_thread_index(); i < total; i += vx_thread_stride()) {
        const unsigned e = unsigned(i);
        const VxCell o = vx_resample_output_cell(g, e);
        const LinearTap tz = table[o.z], ty = table[od + o.y], tx = table[od + oh + o.x];
        const unsigned zs[2] = {tz.i0, min(tz.i0 + 1, id - 1)};
        const unsigned ys[2] = {ty.i0, min(ty.i0 + 1, ih - 1)};
        const unsigned xs[2] = {tx.i0, min(tx.i0 + 1, iw - 1)};
        const float wzs[2] = {tz.w0, tz.w1}, wys[2] = {ty.w0, ty.w1}, wxs[2] = {tx.w0, tx.w1};
        // All eight corners in (z, y, x) order, zero weights included, as the CPU sums them.
        float acc = 0.0f;
#pragma unroll
        for (int a = 0; a < 2; ++a)
#pragma unroll
            for (int b = 0; b < 2; ++b)
#pragma unroll
                for (int d = 0; d < 2; ++d) {
                    const float w = wzs[a] * wys[b] * wxs[d];
                    acc += w * x[vx_voxel(o.n, zs[a], ys[b], xs[d], id, ih, iw) * c + o.c];
                }
        y[e] = acc;
    }
}
VX_EMU_ENTRY(upsample_trilinear3d_forward,
             (const Resample3dGeometry g, const LinearTap* table, const float* x, float* y),
             (g, table, x, y))

// The output cells along one axis that read input cell i: every reader has its lower tap
// at i - 1 or i, and lower taps never decrease with o, so they are the cells from the
// first whose lower tap is at least i - 1 up to the last whose lower tap is at most i.
// `ratio` = n_out / n_in gives a first guess; the walk to the exact boundary uses the
// table.
__device__ __forceinline__ unsigned vx_first_reader(const LinearTap* taps, unsigned i,
                                                    unsigned n_out, float ratio) {
    if (i == 0) return 0;
    const float guess = (float(i) - 0.5f) * ratio - 0.5f;
    unsigned o = guess <= 0.0f ? 0u : min(unsigned(guess), n_out - 1);
    while (o > 0 && taps[o - 1].i0 + 1 >= i) --o;
    while (o < n_out && taps[o].i0 + 1 < i) ++o;
    return o;
}

extern "C" __global__ void VX_SPATIAL_BOUNDS
    upsample_trilinear3d_backward(const Resample3dGeometry g,
                                  const LinearTap* __restrict__ table,
                                  const float* __restrict__ dy, float* __restrict__ dx) {
    const unsigned c = unsigned(g.channels);
    const unsigned id = unsigned(g.input[0]), ih = unsigned(g.input[1]),
                   iw = unsigned(g.input[2]);
    const unsigned od = unsigned(g.output[0]), oh = unsigned(g.output[1]),
                   ow = unsigned(g.output[2]);
    const LinearTap* const taps_z = table;
    const LinearTap* const taps_y = table + od;
    const LinearTap* const taps_x = table + od + oh;
    const float rz = float(od) / float(id), ry = float(oh) / float(ih),
                rx = float(ow) / float(iw);
    const unsigned long long total = vx_numel(g.batch, g.input, g.channels);
    for (unsigned long long i = vx_thread_index(); i < total; i += vx_thread_stride()) {
        const unsigned e = unsigned(i);
        const VxCell p = vx_resample_input_cell(g, e);
        const unsigned z_first = vx_first_reader(taps_z, p.z, od, rz);
        const unsigned y_first = vx_first_reader(taps_y, p.y, oh, ry);
        const unsigned x_first = vx_first_reader(taps_x, p.x, ow, rx);
        // The CPU's reader lists: output cells in order, each with its lower tap then its
        // upper tap where that lands on this cell with a non-zero weight.
        float acc = 0.0f;
        for (unsigned oz = z_first; oz < od && taps_z[oz].i0 <= p.z; ++oz) {
            const LinearTap tz = taps_z[oz];
            for (int a = 0; a < 2; ++a) {
                const unsigned iz = a == 0 ? tz.i0 : min(tz.i0 + 1, id - 1);
                const float wz = a == 0 ? tz.w0 : tz.w1;
                if (iz != p.z || wz == 0.0f) continue;
                for (unsigned oy = y_first; oy < oh && taps_y[oy].i0 <= p.y; ++oy) {
                    const LinearTap ty = taps_y[oy];
                    for (int b = 0; b < 2; ++b) {
                        const unsigned iy = b == 0 ? ty.i0 : min(ty.i0 + 1, ih - 1);
                        const float wy = b == 0 ? ty.w0 : ty.w1;
                        if (iy != p.y || wy == 0.0f) continue;
                        for (unsigned ox = x_first; ox < ow && taps_x[ox].i0 <= p.x; ++ox) {
                            const LinearTap tx = taps_x[ox];
                            for (int d = 0; d < 2; ++d) {
                                const unsigned ix = d == 0 ? tx.i0 : min(tx.i0 + 1, iw - 1);
                                const float wx = d == 0 ? tx.w0 : tx.w1;
                                if (ix != p.x || wx == 0.0f) continue;
                                const float w = wz * wy * wx;
                                acc += w * dy[vx_voxel(p.n, oz, oy, ox, od, oh, ow) * c + p.c];
                            }
                        }
                    }
                }
            }
        }
        dx[e] = acc;
    }
}
VX_EMU_ENTRY(upsample_trilinear3d_backward,
             (const Resample3dGeometry g, const LinearTap* table, const float* dy, float* dx),
             (g, table, dy, dx))
