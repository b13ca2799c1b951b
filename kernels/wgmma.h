// Hopper's warpgroup tensor-core instructions (wgmma, sm_90a) behind thin wrappers, with
// emulated twins for the CPU harness, as mma.h does for mma.sync.
//
// wgmma.mma_async (PTX ISA, "Asynchronous Warpgroup Level Matrix Multiply-Accumulate"):
// the 128 threads of a warpgroup (4 consecutive warps, the first a multiple of 4) compute
// D (64 x N, f32 in registers) += A (64 x K) B (K x N), K = 16 for bf16 and 8 for tf32,
// both operands read from shared memory through 64-bit matrix descriptors, in the
// 128-byte swizzle: rows of 128 bytes, 8 rows to a 1024-byte atom whose byte address bits
// [4:6] (the 16-byte chunk) are XORed with bits [7:9] (the row in the atom), taken from the
// shared-memory address itself, so atoms start at 1024-byte boundaries; or, K-major only,
// in the 64-byte swizzle: rows of 64 bytes, 8 rows to a 512-byte atom, address bits [4:5]
// XORed with bits [7:8] (a pair of rows), SBO = 512. Two layouts:
//   - K-major (rows of A and columns of B with K contiguous, [row][k] tiles; bf16 and
//     tf32): a row is 128 bytes of K; atoms follow each other along M (or N) every
//     SBO = 1024 bytes (LBO unused); the k-th K step of 16 bf16 / 8 tf32 (32 bytes) starts
//     32 k bytes into row 0.
//   - MN-major (imm-trans = 1, bf16 only; [k][mn] tiles): a row is 64 elements of M (or N)
//     at one k; blocks of 64 along MN follow each other every LBO bytes, groups of 8 k rows
//     every SBO = 1024 bytes, so the k-th K step of 16 starts 2048 k bytes in.
// Descriptor: bits 0-13 start address >> 4, 16-29 LBO >> 4, 32-45 SBO >> 4, 49-51 base
// offset (0: atoms aligned), 62-63 swizzle (1: 128 bytes, 2: 64 bytes).
// D fragments: warp w of the warpgroup holds rows 16 w + g and 16 w + g + 8 (g = lane / 4,
// t = lane % 4), d[4 j + e] = D[16 w + g + 8 (e / 2)][8 j + 2 t + e % 2]: per warp, the
// m16n8 accumulator layout of mma.sync repeated over the N / 8 column blocks.
//
// Order of a step: the operands' stores (cp.async here) complete, then
// fence.proxy.async.shared::cta makes them visible to the tensor core's (async proxy)
// reads, a barrier publishes them to the block, wgmma.fence orders the accumulator
// registers, the wgmmas issue, commit_group closes them, and wait_group retires them before
// the registers are read or the stage is overwritten.
#pragma once
#include "mma.h"

// Bytes of one 128-byte-swizzle atom: 8 rows of 128 bytes.
constexpr unsigned VX_WGMMA_ATOM_BYTES = 1024;

// Bytes of one 64-byte-swizzle atom: 8 rows of 64 bytes.
constexpr unsigned VX_WGMMA_ATOM64_BYTES = 512;

// The high word of a descriptor in the 128-byte swizzle (SBO one atom), and in the 64-byte
// one (the swizzle is in that word's bits 30-31).
constexpr unsigned VX_WGMMA_DESC_HIGH = (VX_WGMMA_ATOM_BYTES >> 4) | 1u << 30;
constexpr unsigned VX_WGMMA_DESC_HIGH_SW64 = (VX_WGMMA_ATOM64_BYTES >> 4) | 2u << 30;

// The low word of the descriptor of a 128-byte-swizzled operand at shared address
// `address` with the given LBO. Operands `offset` bytes further on have the low word plus
// offset >> 4: shared addresses stay below 256 KB, so the 14-bit address field never
// carries into the LBO.
__device__ __forceinline__ unsigned vx_wgmma_desc_low(unsigned address, unsigned lbo) {
    return ((address & 0x3FFFF) >> 4) | ((lbo & 0x3FFFF) >> 4) << 16;
}

// The descriptor whose low word is `low`, in the swizzle of SWIZZLE_BYTES (128 or 64).
template <int SWIZZLE_BYTES = 128>
__device__ __forceinline__ unsigned long long vx_wgmma_desc_of(unsigned low) {
    static_assert(SWIZZLE_BYTES == 128 || SWIZZLE_BYTES == 64, "the swizzles the tiles use");
    constexpr unsigned HIGH = SWIZZLE_BYTES == 128 ? VX_WGMMA_DESC_HIGH : VX_WGMMA_DESC_HIGH_SW64;
    return static_cast<unsigned long long>(HIGH) << 32 | low;
}

#ifdef __CUDACC__

__device__ __forceinline__ void vx_fence_proxy_async_shared() {
    asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
}
__device__ __forceinline__ void vx_wgmma_fence() {
    asm volatile("wgmma.fence.sync.aligned;" ::: "memory");
}
__device__ __forceinline__ void vx_wgmma_commit() {
    asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory");
}
template <int PENDING>
__device__ __forceinline__ void vx_wgmma_wait() {
    asm volatile("wgmma.wait_group.sync.aligned %0;" ::"n"(PENDING) : "memory");
}
// Keeps the compiler from moving reads or writes of the accumulators across a wgmma
// fence or wait (the asm statements order memory, not registers).
template <int R>
__device__ __forceinline__ void vx_wgmma_hold(float (&d)[R]) {
#pragma unroll
    for (int i = 0; i < R; ++i) asm volatile("" : "+f"(d[i])::"memory");
}

// d += A B for one warpgroup: A 64 x 16 bf16 (descriptor a), B 16 x N (descriptor b), both
// K-major, or both MN-major.
template <int N, bool MN_MAJOR>
__device__ __forceinline__ void vx_wgmma_bf16(float (&d)[N / 2], unsigned long long a,
                                              unsigned long long b);
// d += A B with A 64 x 8 tf32, B 8 x N, both K-major (the only layout tf32 has).
template <int N>
__device__ __forceinline__ void vx_wgmma_tf32(float (&d)[N / 2], unsigned long long a,
                                              unsigned long long b);

template <>
__device__ __forceinline__ void vx_wgmma_bf16<128, false>(float (&d)[64], unsigned long long a,
                                            unsigned long long b) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 "
        "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
        "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "
        "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, "
        "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, "
        "%64, %65, p, 1, 1, 0, 0;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]),
          "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]),
          "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]),
          "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
          "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]),
          "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]),
          "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]),
          "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]),
          "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]),
          "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]),
          "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
        : "l"(a), "l"(b), "r"(1));
}

template <>
__device__ __forceinline__ void vx_wgmma_bf16<64, false>(float (&d)[32], unsigned long long a,
                                            unsigned long long b) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 "
        "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
        "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, "
        "%32, %33, p, 1, 1, 0, 0;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]),
          "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]),
          "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]),
          "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
          "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]),
          "+f"(d[30]), "+f"(d[31])
        : "l"(a), "l"(b), "r"(1));
}

template <>
__device__ __forceinline__ void vx_wgmma_bf16<32, false>(float (&d)[16], unsigned long long a,
                                            unsigned long long b) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %18, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n32k16.f32.bf16.bf16 "
        "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15}, "
        "%16, %17, p, 1, 1, 0, 0;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]),
          "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]),
          "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15])
        : "l"(a), "l"(b), "r"(1));
}

template <>
__device__ __forceinline__ void vx_wgmma_bf16<128, true>(float (&d)[64], unsigned long long a,
                                            unsigned long long b) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 "
        "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
        "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "
        "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, "
        "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, "
        "%64, %65, p, 1, 1, 1, 1;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]),
          "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]),
          "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]),
          "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
          "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]),
          "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]),
          "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]),
          "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]),
          "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]),
          "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]),
          "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
        : "l"(a), "l"(b), "r"(1));
}

template <>
__device__ __forceinline__ void vx_wgmma_bf16<64, true>(float (&d)[32], unsigned long long a,
                                            unsigned long long b) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 "
        "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
        "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, "
        "%32, %33, p, 1, 1, 1, 1;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]),
          "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]),
          "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]),
          "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
          "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]),
          "+f"(d[30]), "+f"(d[31])
        : "l"(a), "l"(b), "r"(1));
}

template <>
__device__ __forceinline__ void vx_wgmma_tf32<128>(float (&d)[64], unsigned long long a,
                                            unsigned long long b) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n128k8.f32.tf32.tf32 "
        "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
        "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "
        "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, "
        "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, "
        "%64, %65, p, 1, 1;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]),
          "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]),
          "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]),
          "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
          "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]),
          "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]),
          "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]),
          "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]),
          "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]),
          "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]),
          "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
        : "l"(a), "l"(b), "r"(1));
}

template <>
__device__ __forceinline__ void vx_wgmma_tf32<64>(float (&d)[32], unsigned long long a,
                                            unsigned long long b) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n64k8.f32.tf32.tf32 "
        "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
        "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, "
        "%32, %33, p, 1, 1;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]),
          "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]),
          "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]),
          "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
          "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]),
          "+f"(d[30]), "+f"(d[31])
        : "l"(a), "l"(b), "r"(1));
}

template <>
__device__ __forceinline__ void vx_wgmma_tf32<32>(float (&d)[16], unsigned long long a,
                                            unsigned long long b) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %18, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n32k8.f32.tf32.tf32 "
        "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15}, "
        "%16, %17, p, 1, 1;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]),
          "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]),
          "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15])
        : "l"(a), "l"(b), "r"(1));
}

#else  // The harness twins.

namespace vx_wgmma_emu {

// The shared-state address the harness gives byte 0 of a block's dynamic shared memory:
// like a GPU's, it is not a multiple of 1024 (static shared memory comes first), so the
// kernels' alignment of their ring is exercised.
constexpr unsigned SHARED_ORIGIN = 0x410;

// An operand of one wgmma, K-major or MN-major, its descriptor decoded once: the value of
// element k < K of its row `row` (of M or N), or NaN (and a failed launch) for a descriptor
// this emulation does not model or an element outside dynamic shared memory.
template <int K, int ELEM_BYTES, bool MN_MAJOR>
class Operand {
  public:
    explicit Operand(unsigned long long desc)
        : swizzle_(static_cast<unsigned>(desc >> 62)),
          start_(static_cast<unsigned>(desc & 0x3FFF) << 4),
          lbo_(static_cast<unsigned>((desc >> 16) & 0x3FFF) << 4),
          sbo_(static_cast<unsigned>((desc >> 32) & 0x3FFF) << 4),
          // Rows of 128 bytes (swizzle 1) or, K-major only, 64 (swizzle 2); the atom's rows
          // XOR the chunk with address bits [7:9] or [7:8].
          row_bytes_(swizzle_ == 2 ? 64 : 128),
          swizzle_bits_(swizzle_ == 2 ? 3 : 7),
          shared_(static_cast<const unsigned char*>(emu_dynamic_shared())),
          shared_bytes_(emu_dynamic_shared_bytes()) {
        const unsigned base_offset = static_cast<unsigned>((desc >> 49) & 7);
        const unsigned atom = 8 * row_bytes_;
        const bool k_in_row =
            start_ % atom < row_bytes_ && start_ % row_bytes_ + K * ELEM_BYTES <= row_bytes_;
        const bool modelled = MN_MAJOR ? swizzle_ == 1 && start_ % atom == 0 : k_in_row;
        modelled_ = (swizzle_ == 1 || swizzle_ == 2) && base_offset == 0 && modelled;
        if (!modelled_)
            emu_fail("wgmma: only operands in the 128-byte swizzle (or, K-major, the 64-byte "
                     "one) from 8-row atoms at their boundaries (K-major: K steps inside the "
                     "rows) are emulated");
    }

    bool modelled() const { return modelled_; }

    float at(int row, int k) const {
        const unsigned logical =
            MN_MAJOR ? start_ + (row / 64) * lbo_ + (k / 8) * sbo_ + (k % 8) * 128 +
                           (row % 64) * ELEM_BYTES
                     : start_ + (row / 8) * sbo_ + (row % 8) * row_bytes_ + k * ELEM_BYTES;
        const unsigned physical = logical ^ (((logical >> 7) & swizzle_bits_) << 4);
        const size_t offset = physical - SHARED_ORIGIN;
        if (physical < SHARED_ORIGIN || offset + ELEM_BYTES > shared_bytes_) {
            emu_fail("wgmma: an operand outside dynamic shared memory");
            return NAN;
        }
        const unsigned char* p = shared_ + offset;
        if constexpr (ELEM_BYTES == 2) {
            unsigned short bits;
            std::memcpy(&bits, p, 2);
            return __uint_as_float(static_cast<unsigned>(bits) << 16);
        } else {
            unsigned bits;
            std::memcpy(&bits, p, 4);
            return __uint_as_float(bits & 0xFFFFE000u);  // the tensor core reads 19 bits of tf32
        }
    }

  private:
    unsigned swizzle_, start_, lbo_, sbo_, row_bytes_, swizzle_bits_;
    const unsigned char* shared_;
    size_t shared_bytes_;
    bool modelled_ = false;
};

// This thread's accumulators += A B by the D fragment layout, K elements of ELEM_BYTES.
// Accumulator i is row 16 warp + g + 8 ((i % 4) / 2), column 8 (i / 4) + 2 t + i % 2: the
// thread's two rows of A are read once, and each column of B once for the four
// accumulators that share it (the harness spends most of its time here).
template <int N, int K, int ELEM_BYTES, bool MN_MAJOR>
inline void run(float (&d)[N / 2], unsigned long long a, unsigned long long b) {
    const unsigned tid = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
    if (blockDim.x * blockDim.y * blockDim.z % 128 != 0) {
        emu_fail("wgmma in a block that is not whole warpgroups");
        return;
    }
    const Operand<K, ELEM_BYTES, MN_MAJOR> a_op(a), b_op(b);
    if (!a_op.modelled() || !b_op.modelled()) {
        for (float& v : d) v = NAN;
        return;
    }
    const int warp = static_cast<int>(tid % 128 / 32), lane = static_cast<int>(tid % 32);
    const int g = lane >> 2, t = lane & 3;
    float rows[2][K];
    for (int h = 0; h < 2; ++h)
        for (int k = 0; k < K; ++k) rows[h][k] = a_op.at(16 * warp + g + 8 * h, k);
    for (int j = 0; j < N / 8; ++j) {
        float cols[2][K];
        for (int c = 0; c < 2; ++c)
            for (int k = 0; k < K; ++k) cols[c][k] = b_op.at(8 * j + 2 * t + c, k);
        for (int q = 0; q < 4; ++q) {
            const int h = q / 2, c = q % 2;
            float acc = d[4 * j + q];
            for (int k = 0; k < K; ++k) acc = fmaf(rows[h][k], cols[c][k], acc);
            d[4 * j + q] = acc;
        }
    }
}

// This thread's share of a wgmma, as it waits in its commit group.
struct Pending {
    void (*run)(float*, unsigned long long, unsigned long long);
    float* d;
    unsigned long long a, b;
    static constexpr int KIND = EMU_DEFER_READS;
    static constexpr const char* UNRETIRED =
        "wgmma: a thread ended with wgmmas that no wait_group retired";
    void operator()() const { run(d, a, b); }
};
using Queue = EmuAsyncQueue<Pending>;

template <int N, int K, int ELEM_BYTES, bool MN_MAJOR>
inline void run_pending(float* d, unsigned long long a, unsigned long long b) {
    run<N, K, ELEM_BYTES, MN_MAJOR>(*reinterpret_cast<float(*)[N / 2]>(d), a, b);
}

}  // namespace vx_wgmma_emu

inline unsigned vx_shared_address(const void* p) {
    return vx_wgmma_emu::SHARED_ORIGIN +
           static_cast<unsigned>(static_cast<const unsigned char*>(p) -
                                 static_cast<const unsigned char*>(emu_dynamic_shared()));
}

// A wgmma computes (reads its operands from shared memory and adds to the accumulators)
// when the wait_group that retires its group runs (EmuAsyncQueue), the latest moment a GPU
// allows: a stage released or refilled before that wait, or accumulators read before it,
// show up as wrong results. A missing fence.proxy.async or wgmma.fence cannot show here
// (the GPU parity tests cover them); they do nothing. wgmma.wait_group is .sync, and when
// it returns the warp's retired wgmmas have completed, for all its lanes: here each lane
// runs its share as it reaches the wait, then the warp meets, so no lane goes on (to release
// the stage they read, say) before every lane's share has read it, and a warp's lanes
// never drift apart by a whole phase of the mbarriers they wait on between waits. The other
// .sync wgmma instructions run per thread.
inline void vx_fence_proxy_async_shared() {}
inline void vx_wgmma_fence() {}
inline void vx_wgmma_commit() { vx_wgmma_emu::Queue::commit(); }
template <int PENDING>
inline void vx_wgmma_wait() {
    vx_wgmma_emu::Queue::retire(PENDING);
    emu_sync_warp();
}
template <int R>
inline void vx_wgmma_hold(float (&)[R]) {}

template <int N, bool MN_MAJOR>
inline void vx_wgmma_bf16(float (&d)[N / 2], unsigned long long a, unsigned long long b) {
    vx_wgmma_emu::Queue::issue({vx_wgmma_emu::run_pending<N, 16, 2, MN_MAJOR>, d, a, b});
}
template <int N>
inline void vx_wgmma_tf32(float (&d)[N / 2], unsigned long long a, unsigned long long b) {
    vx_wgmma_emu::Queue::issue({vx_wgmma_emu::run_pending<N, 8, 4, false>, d, a, b});
}

#endif
