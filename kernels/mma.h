// Tensor-core instructions behind thin wrappers: inline PTX for nvcc (sm_80 and later), and
// for the CPU harness an emulated twin of each that follows the PTX ISA's fragment layouts
// (which lane holds which element) and rounds exactly as the conversion instructions do.
//
// Fragments (PTX ISA, "Matrix Fragments for mma.m16n8k8 / m16n8k16"), with
// g = lane >> 2 and t = lane & 3:
//   m16n8k8 .tf32   A (16 x 8, row): a0 (g, t), a1 (g + 8, t), a2 (g, t + 4), a3 (g + 8, t + 4)
//                   B (8 x 8, col):  b0 (t, g), b1 (t + 4, g)
//   m16n8k16 .bf16  A (16 x 16): a0 (g, 2t..2t+1), a1 (g + 8, 2t..), a2 (g, 2t+8..2t+9),
//                   a3 (g + 8, 2t+8..); each register holds two elements, the lower column
//                   in the low half
//                   B (16 x 8): b0 (2t..2t+1, g), b1 (2t+8..2t+9, g), the lower row low
//   C / D (16 x 8, f32): c0 (g, 2t), c1 (g, 2t + 1), c2 (g + 8, 2t), c3 (g + 8, 2t + 1)
#pragma once

#ifdef __CUDACC__

// f32 -> tf32 rounded to nearest, ties away from zero (cvt.rna); the low 13 bits are zero.
__device__ __forceinline__ unsigned vx_tf32(float x) {
    unsigned r;
    asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(r) : "f"(x));
    return r;
}

// Two f32 -> bf16 rounded to nearest even, `lo` in the low half (cvt.rn.bf16x2.f32 puts its
// first source in the high half).
__device__ __forceinline__ unsigned vx_bf16x2(float lo, float hi) {
    unsigned r;
    asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
    return r;
}

// d += A (16 x 8 tf32) B (8 x 8 tf32), f32 accumulation.
__device__ __forceinline__ void vx_mma_tf32(float (&d)[4], const unsigned (&a)[4],
                                            const unsigned (&b)[2]) {
    asm("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0, %1, %2, %3}, "
        "{%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

// d += A (16 x 16 bf16) B (16 x 8 bf16), f32 accumulation.
__device__ __forceinline__ void vx_mma_bf16(float (&d)[4], const unsigned (&a)[4],
                                            const unsigned (&b)[2]) {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, "
        "{%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

#else  // The harness twins.

// Adds half an ulp of the 10-bit mantissa to the magnitude, then truncates: nearest, ties
// away from zero. Infinities and NaN pass through.
inline unsigned vx_tf32(float x) {
    const unsigned u = __float_as_uint(x);
    if ((u & 0x7F800000u) == 0x7F800000u) return u;
    return (u + 0x1000u) & 0xFFFFE000u;
}

// Nearest even: add 0x7FFF plus the lowest kept bit, then truncate. NaN becomes the
// canonical bf16 NaN, as the hardware conversion gives.
inline unsigned vx_bf16_bits(float x) {
    const unsigned u = __float_as_uint(x);
    if ((u & 0x7FFFFFFFu) > 0x7F800000u) return 0x7FFFu;
    return (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
}

inline unsigned vx_bf16x2(float lo, float hi) {
    return vx_bf16_bits(lo) | (vx_bf16_bits(hi) << 16);
}

namespace vx_mma_emu {

struct Fragments {
    unsigned a[4];
    unsigned b[2];
};

// One slot per lane of every warp of the running block. The block's threads are fibers of
// this OS thread, so a thread_local is shared by them exactly like __shared__ memory.
inline thread_local Fragments posted[32][32];

// The operands as the tensor core reads them: a tf32 is the upper 19 bits of its register.
inline float tf32_value(unsigned w) { return __uint_as_float(w & 0xFFFFE000u); }
inline float bf16_value(unsigned w, int high) {
    return __uint_as_float(high ? w & 0xFFFF0000u : w << 16);
}

// Every lane posts its fragments, the warp meets, each lane computes its four elements of D
// from all lanes' fragments, and the warp meets again before the slots can be reused.
// `element(lanes, row, col, acc)` returns acc + sum_k A[row][k] B[k][col].
template <class Element>
inline void run(float (&d)[4], const unsigned (&a)[4], const unsigned (&b)[2],
                Element element) {
    const unsigned tid = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
    Fragments* warp = posted[tid / 32];
    const int lane = static_cast<int>(tid % 32);
    for (int i = 0; i < 4; ++i) warp[lane].a[i] = a[i];
    for (int i = 0; i < 2; ++i) warp[lane].b[i] = b[i];
    __syncwarp();
    const int g = lane >> 2, t = lane & 3;
    for (int i = 0; i < 4; ++i) d[i] = element(warp, g + 8 * (i >> 1), 2 * t + (i & 1), d[i]);
    __syncwarp();
}

}  // namespace vx_mma_emu

inline void vx_mma_tf32(float (&d)[4], const unsigned (&a)[4], const unsigned (&b)[2]) {
    using namespace vx_mma_emu;
    run(d, a, b, [](const Fragments* lanes, int row, int col, float acc) {
        for (int k = 0; k < 8; ++k) {
            const float av = tf32_value(lanes[(row % 8) * 4 + k % 4].a[row / 8 + 2 * (k / 4)]);
            const float bv = tf32_value(lanes[col * 4 + k % 4].b[k / 4]);
            acc = fmaf(av, bv, acc);
        }
        return acc;
    });
}

inline void vx_mma_bf16(float (&d)[4], const unsigned (&a)[4], const unsigned (&b)[2]) {
    using namespace vx_mma_emu;
    run(d, a, b, [](const Fragments* lanes, int row, int col, float acc) {
        for (int k = 0; k < 16; ++k) {
            const int lane_a = (row % 8) * 4 + (k % 8) / 2;
            const float av = bf16_value(lanes[lane_a].a[row / 8 + 2 * (k / 8)], k % 2);
            const float bv = bf16_value(lanes[col * 4 + (k % 8) / 2].b[k / 8], k % 2);
            acc = fmaf(av, bv, acc);
        }
        return acc;
    });
}

#endif
