// The tensor memory accelerator (sm_90): one thread copies a box of a tensor, described by
// a tensor map (VxTensorMap, params.h), into shared memory; the copy completes as
// transaction bytes on an mbarrier (kernels/mbarrier.h) that a thread armed with the bytes
// to expect. Coordinates are signed: elements outside the tensor arrive as zeros. Each
// function has a harness twin (below) that copies when issued from a map that
// emu_tensor_map_encode_tiled (kernels/conv3d_wgmma.cu) wrote.
#pragma once
#include "mbarrier.h"
#include "params.h"
#include "wgmma.h"

#ifdef __CUDACC__

// Makes the mbarriers this thread initialised visible to the tensor memory accelerator,
// which completes transactions on them (before the barrier that publishes them).
__device__ __forceinline__ void vx_fence_mbarrier_init() {
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
}

// Arrives at `bar` after adding `bytes` to the transaction bytes its phase waits for.
__device__ __forceinline__ void vx_mbar_arrive_expect_tx(unsigned long long* bar,
                                                         unsigned bytes) {
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(
                     vx_shared_address(bar)),
                 "r"(bytes)
                 : "memory");
}

// Copies the box of `map` at coordinates (c0 innermost .. c4) to `dst` (128-byte aligned;
// 1024 for the 128-byte swizzle, 512 for the 64-byte one), completing its bytes on `bar`.
// `map` is a kernel parameter (__grid_constant__). c0 times the element's bytes must be a
// multiple of 16: an H200 raises CUDA_ERROR_ILLEGAL_INSTRUCTION on any other (call 8,
// 2026-11-28), which the harness twin reports as a failed launch.
__device__ __forceinline__ void vx_tma_load_5d(void* dst, const VxTensorMap* map, int c0,
                                               int c1, int c2, int c3, int c4,
                                               unsigned long long* bar) {
    asm volatile(
        "cp.async.bulk.tensor.5d.shared::cluster.global.tile.mbarrier::complete_tx::bytes "
        "[%0], [%1, {%2, %3, %4, %5, %6}], [%7];" ::"r"(vx_shared_address(dst)),
        "l"(reinterpret_cast<unsigned long long>(map)), "r"(c0), "r"(c1), "r"(c2), "r"(c3),
        "r"(c4), "r"(vx_shared_address(bar))
        : "memory");
}

#else  // The harness twins.

namespace vx_tma_emu {

// What the harness keeps in a VxTensorMap's bytes: the arguments of
// cuTensorMapEncodeTiled that the copies need, behind a mark that says the harness wrote
// them.
struct Map {
    unsigned mark;
    unsigned char rank, elem_bytes, swizzle;
    const unsigned char* base;
    unsigned long long dims[5];
    unsigned long long strides[4];  // bytes, of dimensions 1..4
    unsigned short box[5];
    unsigned char element_strides[5];
};
static_assert(sizeof(Map) <= sizeof(VxTensorMap), "a Map fits a tensor map's bytes");
constexpr unsigned MARK = 0x564D4150;  // "VMAP"
constexpr unsigned SWIZZLE_64B = 2;    // CU_TENSOR_MAP_SWIZZLE_64B
constexpr unsigned SWIZZLE_128B = 3;   // CU_TENSOR_MAP_SWIZZLE_128B

// Bytes of a swizzle's atom (8 of its rows), or 128 (a destination's alignment) unswizzled.
inline unsigned swizzle_atom(unsigned swizzle) {
    return swizzle == SWIZZLE_128B ? 1024 : swizzle == SWIZZLE_64B ? 512 : 128;
}

// Shared address `a` of a box's byte placed by the swizzle: its 16-byte chunk XORed with
// address bits [7:9] (128-byte) or [7:8] (64-byte), as wgmma reads them (kernels/wgmma.h).
inline unsigned swizzled(unsigned swizzle, unsigned a) {
    if (swizzle == SWIZZLE_128B) return a ^ ((a >> 7) & 7) << 4;
    if (swizzle == SWIZZLE_64B) return a ^ ((a >> 7) & 3) << 4;
    return a;
}

// Completes `bytes` transaction bytes on `bar`. A GPU lets a phase's bytes complete before
// they are expected; here copies complete at issue, and a kernel arms the mbarrier first,
// so bytes beyond those armed mean an expect_tx too small (the phase would complete with
// copies still in flight): the launch fails.
inline void complete_tx(unsigned long long* bar, unsigned bytes) {
    vx_mbar_emu::State s = vx_mbar_emu::initialised(
        bar, "a tensor copy completing on an mbarrier that was never initialised");
    if (s.tx < static_cast<int>(bytes))
        emu_fail("tma: a copy completed more bytes than its mbarrier's phase was armed with");
    s.tx -= static_cast<int>(bytes);
    vx_mbar_emu::store(bar, s);
    emu_progress();
}

}  // namespace vx_tma_emu

inline void vx_fence_mbarrier_init() {}

inline void vx_mbar_arrive_expect_tx(unsigned long long* bar, unsigned bytes) {
    vx_mbar_emu::State s = vx_mbar_emu::initialised(
        bar, "an expect_tx arrival at an mbarrier that was never initialised");
    s.tx += static_cast<int>(bytes);
    vx_mbar_emu::store(bar, s);
    vx_mbar_arrive(bar);
}

// The whole box at issue: elements outside the tensor as zeros, the rest read from the
// global buffers the launch registered (emu_check_global_read), each 16-byte chunk placed
// by the map's swizzle on the shared-state address (kernels/wgmma.h), then its bytes
// completed on `bar`.
inline void vx_tma_load_5d(void* dst, const VxTensorMap* map, int c0, int c1, int c2, int c3,
                           int c4, unsigned long long* bar) {
    using namespace vx_tma_emu;
    Map m;
    std::memcpy(&m, map, sizeof m);
    if (m.mark != MARK || m.rank != 5) {
        emu_fail("tma: a 5-dimensional copy from a map the harness did not encode as such");
        return;
    }
    const unsigned origin = vx_shared_address(dst);
    if (origin % swizzle_atom(m.swizzle) != 0) {
        emu_fail("tma: a destination off its 128-byte (swizzled: atom) boundary");
        return;
    }
    // A GPU raises an illegal instruction for a box whose innermost coordinate is not on
    // a 16-byte boundary of the tensor's rows (whatever the map's alignment).
    if ((static_cast<long long>(c0) * m.elem_bytes) % 16 != 0) {
        emu_fail("tma: an innermost coordinate off a 16-byte boundary");
        return;
    }
    const long long c[5] = {c0, c1, c2, c3, c4};
    long long n[5];
    n[0] = m.box[0];
    for (int i = 1; i < 5; ++i) n[i] = (m.box[i] + m.element_strides[i] - 1) / m.element_strides[i];
    const long long row_bytes = n[0] * m.elem_bytes;
    const long long bytes = row_bytes * n[1] * n[2] * n[3] * n[4];
    const unsigned char* window = static_cast<const unsigned char*>(emu_dynamic_shared());
    const size_t start = origin - vx_wgmma_emu::SHARED_ORIGIN;
    if (origin < vx_wgmma_emu::SHARED_ORIGIN ||
        start + static_cast<size_t>(bytes) > emu_dynamic_shared_bytes()) {
        emu_fail("tma: a box past dynamic shared memory");
        return;
    }
    unsigned char row[256 * 16];
    long long row_index = 0;
    for (long long j4 = 0; j4 < n[4]; ++j4)
        for (long long j3 = 0; j3 < n[3]; ++j3)
            for (long long j2 = 0; j2 < n[2]; ++j2)
                for (long long j1 = 0; j1 < n[1]; ++j1, ++row_index) {
                    const long long j[5] = {0, j1, j2, j3, j4};
                    bool inside = true;
                    long long offset = 0;
                    for (int i = 1; i < 5; ++i) {
                        const long long g = c[i] + j[i] * m.element_strides[i];
                        inside = inside && g >= 0 && g < static_cast<long long>(m.dims[i]);
                        offset += g * static_cast<long long>(m.strides[i - 1]);
                    }
                    std::memset(row, 0, static_cast<size_t>(row_bytes));
                    const long long first = c[0] < 0 ? 0 : c[0];
                    const long long last = c[0] + n[0] < static_cast<long long>(m.dims[0])
                                               ? c[0] + n[0]
                                               : static_cast<long long>(m.dims[0]);
                    if (inside && first < last) {
                        const unsigned char* src = m.base + offset + first * m.elem_bytes;
                        const size_t run = static_cast<size_t>((last - first) * m.elem_bytes);
                        if (!emu_check_global_read(src, run)) return;
                        std::memcpy(row + (first - c[0]) * m.elem_bytes, src, run);
                    }
                    for (long long k = 0; k < row_bytes; k += 16) {
                        const unsigned a = swizzled(
                            m.swizzle, origin + static_cast<unsigned>(row_index * row_bytes + k));
                        std::memcpy(const_cast<unsigned char*>(window) +
                                        (a - vx_wgmma_emu::SHARED_ORIGIN),
                                    row + k, 16);
                    }
                }
    complete_tx(bar, static_cast<unsigned>(bytes));
}

#endif
