// Shared by the f32 (conv3d.cu) and tensor-core (conv3d_pipe.cu) convolution kernels: index
// helpers, the stride phases of backward data, vector types and the reduction main loop.
//
// The three passes as GEMMs (NDHWC activations, [kd, kh, kw, cin, cout] weights):
//   forward          y[m, co]  = sum_k X[m, k] W[k, co]       m: output voxel, k: (tap, ci)
//   backward data    dx[v, ci] = sum_k G[v, k] W'[k, ci]      v: input voxel of one stride
//                                                             phase, k: (tap of the phase, co)
//   backward weights dW[k, co] = sum_m X[m, k] dy[m, co]      split over m, partials summed
// Every kernel has the same arguments: (params, a, b, bias, out), where a is the gathered
// operand (x, dy, x), b the other (w, w, dy) and bias may be null (never read by backward
// weights). With p.splits > 1, grid.z slice s writes its partial at out + s * (result size).
#pragma once

#include "common.h"

// A coordinate far outside any volume: rows past the problem read only zeros.
constexpr int VX_OUTSIDE = -(1 << 20);

// CUDA's vector types (16- and 8-byte accesses), and their host stand-ins.
#ifdef __CUDACC__
typedef float4 VxF4;
typedef float2 VxF2;
typedef uint4 VxU4;
typedef uint2 VxU2;
#else
struct alignas(16) VxF4 {
    float x, y, z, w;
};
struct alignas(8) VxF2 {
    float x, y;
};
struct alignas(16) VxU4 {
    unsigned x, y, z, w;
};
struct alignas(8) VxU2 {
    unsigned x, y;
};
#endif

// base + a * b with a and b unsigned 32-bit: one wide multiply-add. Written out in PTX
// because from C++ the compiler widens a selected operand first and multiplies in 64 bits.
__device__ __forceinline__ const char* vx_mad_wide(unsigned a, unsigned b, const char* base) {
#ifdef __CUDACC__
    const char* r;
    asm("mad.wide.u32 %0, %1, %2, %3;" : "=l"(r) : "r"(a), "r"(b), "l"(base));
    return r;
#else
    return base + static_cast<unsigned long long>(a) * b;
#endif
}

// Four consecutive floats at p, which must be 16-byte aligned.
__device__ __forceinline__ VxF4 vx_load4(const float* p) {
    return *reinterpret_cast<const VxF4*>(p);
}

__device__ __forceinline__ bool vx_inside(int z, int y, int x, int d, int h, int w) {
    return static_cast<unsigned>(z) < static_cast<unsigned>(d) &&
           static_cast<unsigned>(y) < static_cast<unsigned>(h) &&
           static_cast<unsigned>(x) < static_cast<unsigned>(w);
}

// Splits i of a (.., h, w) grid into (rest, y, x): i = (rest * h + y) * w + x.
__device__ __forceinline__ void vx_split3(int i, int h, int w, int& rest, int& y, int& x) {
    x = i % w;
    const int t = i / w;
    y = t % h;
    rest = t / h;
}

// Splits a voxel index of an [n, d, h, w] grid into (sample, z, y, x).
__device__ __forceinline__ void vx_split_voxel(int v, int d, int h, int w, int& nn, int& z,
                                               int& y, int& x) {
    int t;
    vx_split3(v, h, w, t, y, x);
    z = t % d;
    nn = t / d;
}

// The first row of a voxel's window and its coordinates: forward rows read the input at
// corner + tap, with corner = output voxel * stride - pad. `corner` is the corner's linear
// voxel index in the source ((sample * d + z) * h + y) * w + x, which may lie outside the
// volume: tap (tz, ty, tx) then reads voxel corner + vx_tap_offset(..), one addition per row
// rather than a multiply-add chain (the gathers' address arithmetic is most of their
// instructions).
struct alignas(16) VxRow {
    int corner;
    int z, y, x;
};

// The linear offset of tap (tz, ty, tx) in a volume of rows of h x w voxels; computed in
// unsigned arithmetic because an invalid tap's tz is VX_OUTSIDE (the offset is then unused).
__device__ __forceinline__ int vx_tap_offset(int tz, int ty, int tx, int h, int w) {
    const unsigned plane = static_cast<unsigned>(tz) * static_cast<unsigned>(h) +
                           static_cast<unsigned>(ty);
    return static_cast<int>(plane * static_cast<unsigned>(w) + static_cast<unsigned>(tx));
}

// The source voxel that `row` reads at tap (tz, ty, tx), whose linear offset is
// `tap_offset`, in a (d, h, w) volume; -1 where that lies outside (padding).
__device__ __forceinline__ int vx_tap_voxel(const VxRow& row, int tz, int ty, int tx,
                                            int tap_offset, int d, int h, int w) {
    return vx_inside(row.z + tz, row.y + ty, row.x + tx, d, h, w) ? row.corner + tap_offset
                                                                   : -1;
}

// A row of a (sample, z, y, x) corner in a (d, h, w) volume; rows past the GEMM's end
// (!valid) are outside at every tap. The corner is computed in unsigned arithmetic: it fits
// an int for every valid row, and an invalid row's (its sample past the last) is never read.
__device__ __forceinline__ VxRow vx_row(int nn, int z, int y, int x, int d, int h, int w,
                                        bool valid) {
    using U = unsigned;
    VxRow row;
    row.corner = static_cast<int>(((U(nn) * U(d) + U(z)) * U(h) + U(y)) * U(w) + U(x));
    row.z = valid ? z : VX_OUTSIDE;
    row.y = y;
    row.x = x;
    return row;
}

// Backward data, stride phase r (per axis): input voxels i = g * stride + r, g over the
// phase grid, are reached only by kernel indices k = first + j' * stride. With the phase's
// taps ordered by decreasing k (tap t has k = first + (taps - 1 - t) * stride), voxel g
// reads dy at g + lo + t, lo = (r + pad) / stride - taps + 1: a forward-like gather over
// dy with no multiply-add spent on taps that cannot reach the voxel.
struct VxPhase {
    int r[3];      // phase offset per axis (d, h, w)
    int grid[3];   // phase voxels per axis
    int taps[3];   // taps reaching the phase per axis
    int first[3];  // smallest kernel index reaching it
    int lo[3];
};

__device__ __forceinline__ void vx_phase_axis(VxPhase& ph, int a, int r, int stride, int pad,
                                              int k, int in) {
    ph.r[a] = r;
    ph.grid[a] = r < in ? (in - r + stride - 1) / stride : 0;
    ph.first[a] = (r + pad) % stride;
    ph.taps[a] = ph.first[a] < k ? (k - ph.first[a] + stride - 1) / stride : 0;
    ph.lo[a] = (r + pad) / stride - ph.taps[a] + 1;
}

// Phase `phase` of the row-major (stride_d, stride_h, stride_w) grid of phases.
__device__ __forceinline__ VxPhase vx_phase(const Conv3dParams& p, int phase) {
    VxPhase ph;
    int rz, ry, rx;
    vx_split3(phase, p.stride_h, p.stride_w, rz, ry, rx);
    vx_phase_axis(ph, 0, rz, p.stride_d, p.pad_d, p.k_d, p.in_d);
    vx_phase_axis(ph, 1, ry, p.stride_h, p.pad_h, p.k_h, p.in_h);
    vx_phase_axis(ph, 2, rx, p.stride_w, p.pad_w, p.k_w, p.in_w);
    return ph;
}

__device__ __forceinline__ int vx_phase_rows(const Conv3dParams& p, const VxPhase& ph) {
    return p.n * ph.grid[0] * ph.grid[1] * ph.grid[2];
}

// Row m of a phase: where it gathers dy from (corner lo + g) and the dx voxel it writes.
__device__ __forceinline__ VxRow vx_phase_row(const Conv3dParams& p, const VxPhase& ph, int m,
                                              int rows, int& dx_voxel) {
    int nn, gz, gy, gx;
    vx_split_voxel(m, ph.grid[0], ph.grid[1], ph.grid[2], nn, gz, gy, gx);
    dx_voxel = ((nn * p.in_d + gz * p.stride_d + ph.r[0]) * p.in_h + gy * p.stride_h + ph.r[1]) *
                   p.in_w +
               gx * p.stride_w + ph.r[2];
    return vx_row(nn, gz + ph.lo[0], gy + ph.lo[1], gx + ph.lo[2], p.out_d, p.out_h, p.out_w,
                  m < rows);
}

// The forward row of output voxel (nn, oz, oy, ox): its window corner in x.
__device__ __forceinline__ VxRow vx_forward_row_at(const Conv3dParams& p, int nn, int oz, int oy,
                                                   int ox, bool valid) {
    return vx_row(nn, oz * p.stride_d - p.pad_d, oy * p.stride_h - p.pad_h,
                  ox * p.stride_w - p.pad_w, p.in_d, p.in_h, p.in_w, valid);
}

// Row m of the forward: output voxel m's window corner in x.
__device__ __forceinline__ VxRow vx_forward_row(const Conv3dParams& p, int m, int rows) {
    int nn, oz, oy, ox;
    vx_split_voxel(m, p.out_d, p.out_h, p.out_w, nn, oz, oy, ox);
    return vx_forward_row_at(p, nn, oz, oy, ox, m < rows);
}

// Adds (dn, dz, dy, dx), a step split into the [n, d, h, w] grid's radices (dz < d,
// dy < h, dx < w), to the voxel (nn, z, y, x) with carries: a few compares instead of the
// divisions that split a voxel index.
__device__ __forceinline__ void vx_advance_voxel(int& nn, int& z, int& y, int& x, int dn, int dz,
                                                 int dy, int dx, int d, int h, int w) {
    x += dx;
    int carry = x >= w;
    x -= carry ? w : 0;
    y += dy + carry;
    carry = y >= h;
    y -= carry ? h : 0;
    z += dz + carry;
    carry = z >= d;
    z -= carry ? d : 0;
    nn += dn + carry;
}

// The kernel index (kd, kh, kw) of tap (tz, ty, tx) of a phase.
__device__ __forceinline__ int vx_phase_kernel_tap(const Conv3dParams& p, const VxPhase& ph,
                                                   int tz, int ty, int tx) {
    const int kz = ph.first[0] + (ph.taps[0] - 1 - tz) * p.stride_d;
    const int ky = ph.first[1] + (ph.taps[1] - 1 - ty) * p.stride_h;
    const int kx = ph.first[2] + (ph.taps[2] - 1 - tx) * p.stride_w;
    return (kz * p.k_h + ky) * p.k_w + kx;
}

// The slice [begin, end) of a reduction of length `total` that split `split` covers.
__device__ __forceinline__ void vx_split_range(const Conv3dParams& p, int split, int total,
                                               int& begin, int& end) {
    begin = min(total, split * p.split_len);
    end = min(total, begin + p.split_len);
}

// The reduction over [k_begin, k_end) in steps of `bk`. The loader gathers a step into
// registers (fetch), writes them to shared memory (store) and may stage per-step indices
// in shared memory (prepare, double-buffered by `buf`) before its fetch; `multiply` adds
// the shared tiles' product to the accumulators. The next step's global loads are issued
// before the current step's multiply.
template <class Loader, class Multiply>
__device__ __forceinline__ void vx_mainloop(Loader& ld, int k_begin, int k_end, int bk,
                                            Multiply multiply) {
    ld.prepare(k_begin, 0);
    __syncthreads();
    ld.fetch(k_begin, 0);
    int buf = 0;
    for (int k0 = k_begin; k0 < k_end; k0 += bk) {
        ld.store();
        const bool more = k0 + bk < k_end;
        if (more) ld.prepare(k0 + bk, buf ^ 1);
        __syncthreads();
        if (more) ld.fetch(k0 + bk, buf ^ 1);
        multiply();
        __syncthreads();
        buf ^= 1;
    }
}

// Per-step output-voxel coordinates for backward weights, shared by the block and written
// by its first BK threads.
template <int BK>
struct VxVoxelSteps {
    VxRow row[2][BK];

    __device__ __forceinline__ void prepare(const Conv3dParams& p, int m0, int m_end, int buf) {
        const int t = static_cast<int>(threadIdx.x);
        if (t >= BK) return;
        row[buf][t] = vx_forward_row(p, m0 + t, m_end);
    }
};
