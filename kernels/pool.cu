// Max and average pooling over D, H, W of NDHWC tensors, forward and backward, with the
// semantics of PoolKernel for the CPU backend (src/tensor_ops/pool/cpu.rs): padded cells
// never take part; a window's maximum is its first largest cell in (z, y, x) order (a
// NaN first cell stays the maximum, later NaNs are passed over, as `v > best` does); an
// average divides by the real cells of its window. The backward passes are gathers: each
// input element adds the gradients of the windows that cover it, in (oz, oy, ox) order as
// the CPU does, so no two threads write one element and no atomics are needed.
#include "spatial.h"

// Input cells [lo, hi) along axis a in the window of output cell o (padding excluded).
struct VxSpan {
    unsigned lo, hi;
};

__device__ __forceinline__ VxSpan vx_pool_window(const Pool3dGeometry& g, int a, unsigned o) {
    const int start = int(o * unsigned(g.stride[a])) - int(g.pad_before[a]);
    const int end = start + int(g.kernel[a]);
    return {unsigned(max(start, 0)), unsigned(min(end, int(g.input[a])))};
}

// Output cells [lo, hi) along axis a whose windows contain input cell i.
__device__ __forceinline__ VxSpan vx_pool_covering(const Pool3dGeometry& g, int a, unsigned i) {
    const unsigned k = unsigned(g.kernel[a]);
    const unsigned s = unsigned(g.stride[a]);
    const unsigned t = i + unsigned(g.pad_before[a]);
    const unsigned lo = t + 1 >= k ? (t + 1 - k + s - 1) / s : 0;
    const unsigned hi = min(t / s + 1, unsigned(g.output[a]));
    return {lo, max(hi, lo)};
}

__device__ __forceinline__ unsigned long long vx_pool_outputs(const Pool3dGeometry& g) {
    return vx_numel(g.batch, g.output, g.channels);
}

__device__ __forceinline__ unsigned long long vx_pool_inputs(const Pool3dGeometry& g) {
    return vx_numel(g.batch, g.input, g.channels);
}

struct VxArgmax {
    float best;
    unsigned at;  // spatial offset (z * H + y) * W + x within the sample
};

// The maximum of channel o.c over the window of output cell o, and where it is first.
__device__ __forceinline__ VxArgmax vx_window_max(const Pool3dGeometry& g, const float* x,
                                                  const VxCell& o) {
    const unsigned c = unsigned(g.channels);
    const unsigned id = unsigned(g.input[0]), ih = unsigned(g.input[1]),
                   iw = unsigned(g.input[2]);
    const VxSpan wz = vx_pool_window(g, 0, o.z);
    const VxSpan wy = vx_pool_window(g, 1, o.y);
    const VxSpan wx = vx_pool_window(g, 2, o.x);
    const float* sample = x + o.n * id * ih * iw * c + o.c;
    VxArgmax r;
    r.at = (wz.lo * ih + wy.lo) * iw + wx.lo;
    r.best = sample[r.at * c];
    for (unsigned z = wz.lo; z < wz.hi; ++z)
        for (unsigned y = wy.lo; y < wy.hi; ++y)
            for (unsigned xx = wx.lo; xx < wx.hi; ++xx) {
                const unsigned pos = (z * ih + y) * iw + xx;
                const float v = sample[pos * c];
                if (v > r.best) {
                    r.best = v;
                    r.at = pos;
                }
            }
    return r;
}

__device__ __forceinline__ VxCell vx_pool_output_cell(const Pool3dGeometry& g, unsigned e) {
    return vx_cell(e, unsigned(g.output[0]), unsigned(g.output[1]), unsigned(g.output[2]),
                   unsigned(g.channels));
}

__device__ __forceinline__ VxCell vx_pool_input_cell(const Pool3dGeometry& g, unsigned e) {
    return vx_cell(e, unsigned(g.input[0]), unsigned(g.input[1]), unsigned(g.input[2]),
                   unsigned(g.channels));
}

extern "C" __global__ void VX_SPATIAL_BOUNDS
    max_pool3d_forward(const Pool3dGeometry g, const float* __restrict__ x,
                       float* __restrict__ y) {
    const unsigned long long total = vx_pool_outputs(g);
    for (unsigned long long i = vx_thread_index(); i < total; i += vx_thread_stride()) {
        const unsigned e = unsigned(i);
        y[e] = vx_window_max(g, x, vx_pool_output_cell(g, e)).best;
    }
}
VX_EMU_ENTRY(max_pool3d_forward, (const Pool3dGeometry g, const float* x, float* y), (g, x, y))

// First pass of the max-pool backward: where each window's maximum is, per output element.
extern "C" __global__ void VX_SPATIAL_BOUNDS
    max_pool3d_argmax(const Pool3dGeometry g, const float* __restrict__ x,
                      unsigned* __restrict__ winner) {
    const unsigned long long total = vx_pool_outputs(g);
    for (unsigned long long i = vx_thread_index(); i < total; i += vx_thread_stride()) {
        const unsigned e = unsigned(i);
        winner[e] = vx_window_max(g, x, vx_pool_output_cell(g, e)).at;
    }
}
VX_EMU_ENTRY(max_pool3d_argmax, (const Pool3dGeometry g, const float* x, unsigned* winner),
             (g, x, winner))

// Second pass: each input element sums dy over the covering windows it won.
extern "C" __global__ void VX_SPATIAL_BOUNDS
    max_pool3d_backward(const Pool3dGeometry g, const unsigned* __restrict__ winner,
                        const float* __restrict__ dy, float* __restrict__ dx) {
    const unsigned c = unsigned(g.channels);
    const unsigned ih = unsigned(g.input[1]), iw = unsigned(g.input[2]);
    const unsigned od = unsigned(g.output[0]), oh = unsigned(g.output[1]),
                   ow = unsigned(g.output[2]);
    const unsigned long long total = vx_pool_inputs(g);
    for (unsigned long long i = vx_thread_index(); i < total; i += vx_thread_stride()) {
        const unsigned e = unsigned(i);
        const VxCell p = vx_pool_input_cell(g, e);
        const unsigned pos = (p.z * ih + p.y) * iw + p.x;
        const VxSpan cz = vx_pool_covering(g, 0, p.z);
        const VxSpan cy = vx_pool_covering(g, 1, p.y);
        const VxSpan cx = vx_pool_covering(g, 2, p.x);
        float acc = 0.0f;
        for (unsigned oz = cz.lo; oz < cz.hi; ++oz)
            for (unsigned oy = cy.lo; oy < cy.hi; ++oy)
                for (unsigned ox = cx.lo; ox < cx.hi; ++ox) {
                    const unsigned w = vx_voxel(p.n, oz, oy, ox, od, oh, ow) * c + p.c;
                    if (winner[w] == pos) acc += dy[w];
                }
        dx[e] = acc;
    }
}
VX_EMU_ENTRY(max_pool3d_backward,
             (const Pool3dGeometry g, const unsigned* winner, const float* dy, float* dx),
             (g, winner, dy, dx))

// 1 / (real cells of the window), rounded from f64 as the CPU's E::of(1.0 / count) does.
__device__ __forceinline__ float vx_inverse_count(VxSpan z, VxSpan y, VxSpan x) {
    const unsigned count = (z.hi - z.lo) * (y.hi - y.lo) * (x.hi - x.lo);
    return float(1.0 / double(count));
}

extern "C" __global__ void VX_SPATIAL_BOUNDS
    avg_pool3d_forward(const Pool3dGeometry g, const float* __restrict__ x,
                       float* __restrict__ y) {
    const unsigned c = unsigned(g.channels);
    const unsigned id = unsigned(g.input[0]), ih = unsigned(g.input[1]),
                   iw = unsigned(g.input[2]);
    const unsigned long long total = vx_pool_outputs(g);
    for (unsigned long long i = vx_thread_index(); i < total; i += vx_thread_stride()) {
        const unsigned e = unsigned(i);
        const VxCell o = vx_pool_output_cell(g, e);
        const VxSpan wz = vx_pool_window(g, 0, o.z);
        const VxSpan wy = vx_pool_window(g, 1, o.y);
        const VxSpan wx = vx_pool_window(g, 2, o.x);
        float acc = 0.0f;
        for (unsigned z = wz.lo; z < wz.hi; ++z)
            for (unsigned yy = wy.lo; yy < wy.hi; ++yy)
                for (unsigned xx = wx.lo; xx < wx.hi; ++xx)
                    acc += x[vx_voxel(o.n, z, yy, xx, id, ih, iw) * c + o.c];
        y[e] = acc * vx_inverse_count(wz, wy, wx);
    }
}
VX_EMU_ENTRY(avg_pool3d_forward, (const Pool3dGeometry g, const float* x, float* y), (g, x, y))

// First pass of the average-pool backward: each window's gradient times its 1 / count,
// rounded to f32 as the CPU's `v * scale` is, so the gather below only adds.
extern "C" __global__ void VX_SPATIAL_BOUNDS
    avg_pool3d_scale_gradient(const Pool3dGeometry g, const float* __restrict__ dy,
                              float* __restrict__ scaled) {
    const unsigned long long total = vx_pool_outputs(g);
    for (unsigned long long i = vx_thread_index(); i < total; i += vx_thread_stride()) {
        const unsigned e = unsigned(i);
        const VxCell o = vx_pool_output_cell(g, e);
        scaled[e] = dy[e] * vx_inverse_count(vx_pool_window(g, 0, o.z), vx_pool_window(g, 1, o.y),
                                             vx_pool_window(g, 2, o.x));
    }
}
VX_EMU_ENTRY(avg_pool3d_scale_gradient, (const Pool3dGeometry g, const float* dy, float* scaled),
             (g, dy, scaled))

// Second pass: each input element sums the scaled gradients of the windows covering it.
extern "C" __global__ void VX_SPATIAL_BOUNDS
    avg_pool3d_backward(const Pool3dGeometry g, const float* __restrict__ scaled,
                        float* __restrict__ dx) {
    const unsigned c = unsigned(g.channels);
    const unsigned od = unsigned(g.output[0]), oh = unsigned(g.output[1]),
                   ow = unsigned(g.output[2]);
    const unsigned long long total = vx_pool_inputs(g);
    for (unsigned long long i = vx_thread_index(); i < total; i += vx_thread_stride()) {
        const unsigned e = unsigned(i);
        const VxCell p = vx_pool_input_cell(g, e);
        const VxSpan cz = vx_pool_covering(g, 0, p.z);
        const VxSpan cy = vx_pool_covering(g, 1, p.y);
        const VxSpan cx = vx_pool_covering(g, 2, p.x);
        float acc = 0.0f;
        for (unsigned oz = cz.lo; oz < cz.hi; ++oz)
            for (unsigned oy = cy.lo; oy < cy.hi; ++oy)
                for (unsigned ox = cx.lo; ox < cx.hi; ++ox)
                    acc += scaled[vx_voxel(p.n, oz, oy, ox, od, oh, ow) * c + p.c];
        dx[e] = acc;
    }
}
VX_EMU_ENTRY(avg_pool3d_backward, (const Pool3dGeometry g, const float* scaled, float* dx),
             (g, scaled, dx))
