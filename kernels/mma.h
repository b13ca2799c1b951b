// Tensor-core instructions behind thin wrappers: inline PTX for nvcc (sm_80 and later), and
// for the CPU harness an emulated twin of each that follows the PTX ISA's fragment layouts
// (which lane holds which element) and rounds exactly as the conversion instructions do.
// With them, the two instructions that feed the tensor cores from shared memory:
// cp.async (16-byte global -> shared copies in commit groups) and ldmatrix (8 x 8 b16
// matrices from shared memory into fragment registers).
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
//
// ldmatrix.m8n8.xN.b16 (PTX ISA, "Warp-level matrix load instruction: ldmatrix"): lanes
// 8i..8i+7 give the row addresses (16 bytes each) of matrix i < N; register i of lane
// (g, t) receives row g, columns 2t and 2t + 1 of matrix i (the lower column in the low
// half), or with .trans column g, rows 2t and 2t + 1 (the lower row low). So a [m][k]
// tile gives A fragments and a [n][k] tile B fragments without .trans, and [k][m] and
// [k][n] tiles give them with .trans.
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

// The shared-state-space address of a generic pointer into shared memory.
__device__ __forceinline__ unsigned vx_shared_address(const void* p) {
    return static_cast<unsigned>(__cvta_generic_to_shared(p));
}

// Copies 16 bytes from global `src` to shared `dst` asynchronously (cp.async.cg: through
// L2 only); when !valid nothing is read and `dst` gets zeros (src-size 0). Both addresses
// are 16-byte aligned.
__device__ __forceinline__ void vx_cp_async16(void* dst, const void* src, bool valid) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(vx_shared_address(dst)),
                 "l"(src), "r"(valid ? 16 : 0)
                 : "memory");
}

// As vx_cp_async16, for the gathered activations of a convolution, which the next taps
// read again (their windows overlap): in the build variant that defines VX_GATHER_L1
// (the modules `<name>_l1`, see build.rs) through L1 as well (cp.async.ca), so those reads
// may hit it instead of L2.
__device__ __forceinline__ void vx_cp_async16_activation(void* dst, const void* src, bool valid) {
#ifdef VX_GATHER_L1
    asm volatile("cp.async.ca.shared.global [%0], [%1], 16, %2;" ::"r"(vx_shared_address(dst)),
                 "l"(src), "r"(valid ? 16 : 0)
                 : "memory");
#else
    vx_cp_async16(dst, src, valid);
#endif
}

// Closes the group of this thread's copies issued since the previous commit.
__device__ __forceinline__ void vx_cp_async_commit() {
    asm volatile("cp.async.commit_group;" ::: "memory");
}

// Waits until at most PENDING of this thread's committed groups are still in flight.
template <int PENDING>
__device__ __forceinline__ void vx_cp_async_wait() {
    asm volatile("cp.async.wait_group %0;" ::"n"(PENDING) : "memory");
}

// ldmatrix of N (1, 2 or 4) matrices, transposed when TRANS; `row` is this lane's row
// address (see the layout at the top).
template <int N, bool TRANS>
__device__ __forceinline__ void vx_ldmatrix(unsigned (&r)[N], const void* row) {
    static_assert(N == 1 || N == 2 || N == 4, "ldmatrix loads 1, 2 or 4 matrices");
    const unsigned a = vx_shared_address(row);
    if constexpr (N == 1 && !TRANS) {
        asm volatile("ldmatrix.sync.aligned.m8n8.x1.shared.b16 {%0}, [%1];"
                     : "=r"(r[0])
                     : "r"(a)
                     : "memory");
    } else if constexpr (N == 1) {
        asm volatile("ldmatrix.sync.aligned.m8n8.x1.trans.shared.b16 {%0}, [%1];"
                     : "=r"(r[0])
                     : "r"(a)
                     : "memory");
    } else if constexpr (N == 2 && !TRANS) {
        asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0, %1}, [%2];"
                     : "=r"(r[0]), "=r"(r[1])
                     : "r"(a)
                     : "memory");
    } else if constexpr (N == 2) {
        asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0, %1}, [%2];"
                     : "=r"(r[0]), "=r"(r[1])
                     : "r"(a)
                     : "memory");
    } else if constexpr (!TRANS) {
        asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];"
                     : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                     : "r"(a)
                     : "memory");
    } else {
        asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];"
                     : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                     : "r"(a)
                     : "memory");
    }
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

namespace vx_cp_async_emu {

// A 16-byte copy (src null: a zero fill) as it waits in its commit group.
struct Copy {
    void* dst;
    const void* src;
    static constexpr int KIND = EMU_DEFER_COPIES;
    // Copies issued for steps past a loop's last are never waited for, as on a GPU.
    static constexpr const char* UNRETIRED = nullptr;
    void operator()() const {
        if (src != nullptr) {
            std::memcpy(dst, src, 16);
        } else {
            std::memset(dst, 0, 16);
        }
    }
};
using Queue = EmuAsyncQueue<Copy>;

}  // namespace vx_cp_async_emu

// cp.async checks its address when issued (a read outside the launch's buffers fails the
// launch) and copies, or zero-fills, when the wait_group that retires its group runs
// (EmuAsyncQueue): a slot read before that wait, or overwritten while a warp still reads
// it, shows up as a wrong result.
inline void vx_cp_async16(void* dst, const void* src, bool valid) {
    const bool reads = valid && emu_check_global_read(src, 16);
    vx_cp_async_emu::Queue::issue({dst, reads ? src : nullptr});
}
inline void vx_cp_async16_activation(void* dst, const void* src, bool valid) {
    vx_cp_async16(dst, src, valid);
}
inline void vx_cp_async_commit() { vx_cp_async_emu::Queue::commit(); }
template <int PENDING>
inline void vx_cp_async_wait() {
    vx_cp_async_emu::Queue::retire(PENDING);
}

namespace vx_ldmatrix_emu {

// Each lane's row address, one slot per lane of every warp of the running block (shared
// by the block's fibers like vx_mma_emu::posted).
inline thread_local const unsigned char* rows[32][32];

inline unsigned b16_at(const unsigned char* row, int col) {
    unsigned short v;
    std::memcpy(&v, row + 2 * col, sizeof v);
    return v;
}

}  // namespace vx_ldmatrix_emu

// Every lane posts its row address, the warp meets, each lane reads its elements of every
// matrix from the posted rows by the PTX layout, and the warp meets again before the
// slots can be reused.
template <int N, bool TRANS>
inline void vx_ldmatrix(unsigned (&r)[N], const void* row) {
    static_assert(N == 1 || N == 2 || N == 4, "ldmatrix loads 1, 2 or 4 matrices");
    using namespace vx_ldmatrix_emu;
    const unsigned tid = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
    const unsigned char** warp = rows[tid / 32];
    const int lane = static_cast<int>(tid % 32);
    warp[lane] = static_cast<const unsigned char*>(row);
    __syncwarp();
    const int g = lane >> 2, t = lane & 3;
    for (int i = 0; i < N; ++i) {
        const unsigned char* const* m = warp + 8 * i;
        r[i] = TRANS ? b16_at(m[2 * t], g) | b16_at(m[2 * t + 1], g) << 16
                     : b16_at(m[g], 2 * t) | b16_at(m[g], 2 * t + 1) << 16;
    }
    __syncwarp();
}

#endif
