// voxseg-arch: sm_90a
// voxseg-variant: l1 VX_GATHER_L1
// 3D convolution on Hopper's warpgroup tensor-core instructions (wgmma, kernels/wgmma.h):
// forward and backward data in BF16 or TF32, backward weights in BF16 on 128 or 64 columns
// (its tiles are mn-major, which wgmma reads only for 16-bit types and blocks of 64), and
// in TF32 over operands packed channel-major (k-major tiles,
// vx_tma_backward_weights_kmajor). The loaders, packed operands and store are those of the
// mma.sync kernels (conv3d_pipe.h; packs from conv3d_pipe.cu), with tiles laid out for
// wgmma. Built for sm_90a only (the first line tells build.rs and ptxas-check.sh), so it
// loads on compute capability 9.0 devices and nowhere else.
//
// A block of two warpgroups computes a 128 x BN tile (BN = 128, 64, or 32 in forward and
// backward data; 64 also as a pair of blocks per SM with a shorter ring), a block of four a
// 256 x 128 tile: warpgroup w rows 64 w .. 64 w + 63, all BN columns (VxWgmmaTmaCols, a
// 64-column result computed transposed: 64 rows, columns 128 w .. 128 w + 127), one wgmma
// per K step of 16 bf16 / 8 tf32, four per reduction step of 128 bytes per row. Tiles are in the
// 128-byte swizzle (chunk c of a 128-byte row r at chunk c ^ (r % 8)): k-major in forward
// and backward data (a row is 64 bf16 / 32 tf32 of the reduction), mn-major in backward
// weights (a row is 64 rows or columns of the result at one voxel of the reduction, the BK
// voxel rows of each block of 64 following each other), in a ring of STAGES stages that
// starts at a 1024-byte boundary of the shared window, filled by 16-byte cp.async
// STAGES - 2 steps ahead. Per step i: this thread's copies of step i land
// (cp.async.wait_group), are made visible to the tensor cores (fence.proxy.async) and to
// the block (barrier), step i's wgmmas issue behind step i - 1's, which may still run, the
// copies of step i + STAGES - 2 issue into the stage of step i - 2, and step i - 1's wgmmas
// complete (wait_group 1) before the next barrier lets any thread overwrite their stage.
// The tensor cores thus always have the next step queued while the block waits at a barrier
// or issues its copies: with a step of the previous design (wait_group 0 before each
// barrier, two blocks per SM) they were busy about half the time on an H100 (Nsight
// Compute, 2026-11-26).
#include "conv3d_pipe.h"
#include "mbarrier.h"
#include "tma.h"
#include "wgmma.h"

template <bool MN_MAJOR>
struct VxWgmmaLoop;
template <bool MN_MAJOR>
struct VxWgmmaWsLoop;
template <bool MN_MAJOR>
struct VxWgmmaTmaLoop;

template <class P, int BN_, int STAGES_, int MIN_BLOCKS_, int WARPGROUPS_ = 2>
struct VxWgmmaTile {
    using Prec = P;
    using Elem = typename P::Elem;
    using KMajorLoop = VxWgmmaLoop<false>;
    using MnMajorLoop = VxWgmmaLoop<true>;
    static constexpr int WARPGROUPS = WARPGROUPS_;
    // The warpgroups split the rows (VxWgmmaTmaCols: the columns).
    static constexpr bool SPLIT_N = false;
    static constexpr int THREADS = 128 * WARPGROUPS;
    // Every thread copies and multiplies (conv3d_pipe.h), but in VxWgmmaWsOf.
    static constexpr int LOAD_THREADS = THREADS;
    __device__ __forceinline__ static int mma_thread() { return threadIdx.x; }
    // The accumulators as conv3d_pipe.h stores them: each warp 16 rows of m16n8 tiles.
    static constexpr int WARPS_M = 4 * WARPGROUPS, WARPS_N = 1, WM = 16, WN = BN_;
    static constexpr int BM = WARPS_M * WM, BN = BN_;
    // The block's columns (VxWgmmaTmaCols: those of all its warpgroups).
    static constexpr int COLS = BN;
    static constexpr int MT = 1, NT = BN / 8;
    static constexpr int ROW_BYTES = VX_CONV_WGMMA_STEP_BYTES;
    static constexpr int ROW_CHUNKS = ROW_BYTES / 16;
    static constexpr int BK = ROW_BYTES / static_cast<int>(sizeof(Elem));
    static constexpr int K_STEPS = BK / P::MMA_K;  // wgmmas per step
    // A stage holds each operand as one tile of ROW_BYTES rows (VxWgmmaSw64Of: two, one
    // after the other, of SUB_K elements a row) in the swizzle of SWIZZLE_BYTES.
    static constexpr int SWIZZLE_BYTES = ROW_BYTES, SUBTILES = 1, SUB_K = BK;
    static constexpr int STAGES = STAGES_;
    static_assert(STAGES >= 3, "a stage in the tensor cores' hands, one being copied, one ahead");
    // Blocks per SM: one for the rings of 64 and 128 columns, two (at most 128 registers)
    // for 32 columns, whose shallow reductions mostly store, and for the 64-column pair.
    static constexpr int MIN_BLOCKS = MIN_BLOCKS_;
    // Well under the register cap: the loaders may keep more per thread (vx_gather_rows,
    // VxPipeBackwardWeights).
    static constexpr bool SPARE_REGISTERS = true;
    static constexpr int A_BYTES = BM * ROW_BYTES, B_BYTES = BN * ROW_BYTES;
    static constexpr int A_SUB_BYTES = A_BYTES / SUBTILES, B_SUB_BYTES = B_BYTES / SUBTILES;
    static constexpr int STAGE_BYTES = A_BYTES + B_BYTES;
    static_assert((BM == VX_CONV_TC_BM && THREADS == VX_CONV_WGMMA_THREADS) ||
                      (BM == VX_CONV_WGMMA_M256_BM && THREADS == VX_CONV_WGMMA_M256_THREADS),
                  "params_conv.h");
    static_assert(ROW_BYTES == 128 && STAGE_BYTES % VX_WGMMA_ATOM_BYTES == 0 &&
                      A_BYTES % VX_WGMMA_ATOM_BYTES == 0,
                  "128-byte swizzle rows; every tile and warpgroup slice at an atom boundary");
    static_assert(VX_CONV_WGMMA_ALIGN == VX_WGMMA_ATOM_BYTES, "params_conv.h");

    // Chunk c of row r: the 128-byte swizzle, given that the tile starts at an atom.
    __device__ __forceinline__ static int k_major_offset(int r, int c) {
        return r * ROW_BYTES + ((c ^ (r & 7)) << 4);
    }
    // Chunk c (of CHUNKS along the rows or columns) of k row r: blocks of 8 chunks (64
    // elements), each BK rows of 128 bytes.
    static constexpr int MN_BLOCK_BYTES = BK * ROW_BYTES;
    template <int CHUNKS>
    __device__ __forceinline__ static int mn_major_offset(int r, int c) {
        return (c >> 3) * MN_BLOCK_BYTES + k_major_offset(r, c & 7);
    }
    // Chunk c of k-major row r of an operand of `rows` rows (A's BM, B's BN).
    __device__ __forceinline__ static int operand_offset(int, int r, int c) {
        return k_major_offset(r, c);
    }
};

// A k-major tile (filled by the tensor memory accelerator only: VxWgmmaTmaOf) whose stage
// holds each operand as two sub-tiles of 64-byte rows in the 64-byte swizzle (32 bf16 of
// the reduction a row), A's two then B's two, each at a 1024-byte boundary: a reduction
// step is two boxes of 32 channels, so a layer whose channels fill no 128-byte row (32 a
// tap) still takes boxes, and the wgmmas and the stage's bytes are the Base's.
template <class Base>
struct VxWgmmaSw64Of : Base {
    static constexpr int SWIZZLE_BYTES = 64, SUBTILES = Base::ROW_BYTES / SWIZZLE_BYTES;
    static constexpr int SUB_K = Base::BK / SUBTILES;
    static constexpr int A_SUB_BYTES = Base::A_BYTES / SUBTILES;
    static constexpr int B_SUB_BYTES = Base::B_BYTES / SUBTILES;
    static_assert(A_SUB_BYTES % VX_WGMMA_ATOM_BYTES == 0 &&
                      B_SUB_BYTES % VX_WGMMA_ATOM_BYTES == 0 &&
                      (!Base::SPLIT_N ||
                       B_SUB_BYTES / Base::WARPGROUPS % VX_WGMMA_ATOM_BYTES == 0) &&
                      Base::K_STEPS % SUBTILES == 0,
                  "whole wgmma K steps in each sub-tile, every sub-tile (and warpgroup's "
                  "columns of one) at a 1024-byte boundary");
    // The cp.async loaders place chunks by the 128-byte swizzle: not for these tiles.
    __device__ static int k_major_offset(int, int) = delete;
    template <int CHUNKS>
    __device__ static int mn_major_offset(int, int) = delete;
    __device__ __forceinline__ static int operand_offset(int rows, int r, int c) {
        return (c >> 2) * rows * SWIZZLE_BYTES + r * SWIZZLE_BYTES +
               (((c & 3) ^ ((r >> 1) & 3)) << 4);
    }
};

template <class P>
using VxWgmmaN128 = VxWgmmaTile<P, 128, VX_CONV_WGMMA_STAGES_N128, 1>;
template <class P>
using VxWgmmaN64 = VxWgmmaTile<P, 64, VX_CONV_WGMMA_STAGES_N64, 1>;
// 64 columns, two blocks per SM (a shorter ring, at most 128 registers): on a grid of many
// tiles one block issues its copies while the other's wgmmas run.
template <class P>
using VxWgmmaN64Pair = VxWgmmaTile<P, 64, VX_CONV_WGMMA_STAGES_N64_PAIR, 2>;
// 256 rows by 128 columns, four warpgroups: a step copies 48 KB for twice the 128 x 128
// tile's work, so a quarter less shared-memory filling and L2 traffic per multiply-add;
// the accumulators stay 64 registers per thread, within the 128 that 512 threads allow.
template <class P>
using VxWgmmaM256 = VxWgmmaTile<P, VX_CONV_WGMMA_M256_BN, VX_CONV_WGMMA_STAGES_M256, 1, 4>;
// A two-warpgroup tile (128 x 128 or 128 x 64, its ring and one block per SM),
// warp-specialized: LOADERS more warpgroups (the first threads) only copy and the other two
// only multiply, handing each stage over by a pair of mbarriers (VxWgmmaWsLoop). No warp
// waits at a block-wide barrier per step, and the warps that issue the wgmmas issue no
// copies. The 64-column tile has two copying warpgroups: its step's tensor-core work is
// half the 128-column one's, for three quarters of the copies.
template <class Base, int LOADERS, int THREADS_>
struct VxWgmmaWsOf : Base {
    using KMajorLoop = VxWgmmaWsLoop<false>;
    using MnMajorLoop = VxWgmmaWsLoop<true>;
    static constexpr int LOAD_THREADS = 128 * LOADERS;
    static constexpr int THREADS = LOAD_THREADS + Base::THREADS;
    static_assert(THREADS == THREADS_ && Base::MIN_BLOCKS == 1, "params_conv.h");
    __device__ __forceinline__ static int mma_thread() {
        return static_cast<int>(threadIdx.x) - LOAD_THREADS;
    }
};
template <class P>
using VxWgmmaWs128 = VxWgmmaWsOf<VxWgmmaN128<P>, 1, VX_CONV_WGMMA_WS128_THREADS>;
template <class P>
using VxWgmmaWs64 = VxWgmmaWsOf<VxWgmmaN64<P>, 2, VX_CONV_WGMMA_WS64_THREADS>;
// 32 columns (a first layer's forward over few input channels), k-major only: an mn-major
// block is 64 wide.
template <class P>
using VxWgmmaN32 = VxWgmmaTile<P, 32, VX_CONV_WGMMA_STAGES_N32, 2>;

// This thread's warpgroup among those that multiply, as lane 0 has it, which is every
// lane's: the compiler then knows it is the same across the warp and keeps A's descriptors
// in uniform registers, as wgmma takes them.
template <class T>
__device__ __forceinline__ unsigned vx_wgmma_group() {
    return __shfl_sync(0xffffffffu, static_cast<unsigned>(T::mma_thread()) / 128, 0);
}

// The low words of warpgroup wg's descriptors of a stage whose A and B tiles start at
// shared addresses a and b: A from the warpgroup's 64 rows, B from all BN columns (SPLIT_N:
// A all 64 rows, B the warpgroup's BN of the COLS columns), at K step 0 (vx_wgmma_step adds
// the steps).
template <class T, bool MN_MAJOR>
__device__ __forceinline__ void vx_wgmma_stage_descs(unsigned wg, unsigned a, unsigned b,
                                                     unsigned& a_low, unsigned& b_low) {
    if constexpr (T::SPLIT_N && MN_MAJOR) {
        static_assert(T::BM == 64, "one block of 64 rows, shared by the warpgroups");
        a_low = vx_wgmma_desc_low(a, T::MN_BLOCK_BYTES);
        b_low = vx_wgmma_desc_low(b + wg * (T::BN / 64) * T::MN_BLOCK_BYTES, T::MN_BLOCK_BYTES);
    } else if constexpr (T::SPLIT_N) {
        a_low = vx_wgmma_desc_low(a, 16);
        b_low = vx_wgmma_desc_low(b + wg * (T::B_SUB_BYTES / T::WARPGROUPS), 16);
    } else if constexpr (MN_MAJOR) {
        a_low = vx_wgmma_desc_low(a + wg * T::MN_BLOCK_BYTES, T::MN_BLOCK_BYTES);
        b_low = vx_wgmma_desc_low(b, T::MN_BLOCK_BYTES);
    } else {
        a_low = vx_wgmma_desc_low(a + wg * (T::A_SUB_BYTES / T::WARPGROUPS), 16);
        b_low = vx_wgmma_desc_low(b, 16);
    }
}

// One warpgroup's wgmma over K step k of the stage whose descriptors' low words are a_low
// and b_low (vx_wgmma_stage_descs): a K step is 32 bytes into the rows of a K-major tile
// (its sub-tile's, in order), 16 rows of 128 bytes down an MN-major one.
template <class T, bool MN_MAJOR>
__device__ __forceinline__ void vx_wgmma_step(float (&d)[T::BN / 2], unsigned a_low,
                                              unsigned b_low, int k) {
    if constexpr (MN_MAJOR) {
        static_assert(T::Prec::PER_CHUNK == 8, "wgmma reads mn-major tiles of 16-bit types only");
        constexpr unsigned K_STEP = 2 * VX_WGMMA_ATOM_BYTES >> 4;
        vx_wgmma_bf16<T::BN, true>(d, vx_wgmma_desc_of(a_low + k * K_STEP),
                                   vx_wgmma_desc_of(b_low + k * K_STEP));
    } else {
        constexpr int PER_SUB = T::K_STEPS / T::SUBTILES;
        const int sub = k / PER_SUB, within = k % PER_SUB;
        const unsigned a_offset = (sub * T::A_SUB_BYTES + within * 32) >> 4;
        const unsigned b_offset = (sub * T::B_SUB_BYTES + within * 32) >> 4;
        const unsigned long long ad = vx_wgmma_desc_of<T::SWIZZLE_BYTES>(a_low + a_offset);
        const unsigned long long bd = vx_wgmma_desc_of<T::SWIZZLE_BYTES>(b_low + b_offset);
        if constexpr (T::Prec::PER_CHUNK == 8) {
            vx_wgmma_bf16<T::BN, false>(d, ad, bd);
        } else {
            vx_wgmma_tf32<T::BN>(d, ad, bd);
        }
    }
}

// The stage after `stage` in a ring of STAGES; with `lap`, the parity of the laps the ring
// has completed (an mbarrier phase's), flipped as it wraps.
template <int STAGES>
__device__ __forceinline__ void vx_ring_next(int& stage) {
    stage = stage + 1 == STAGES ? 0 : stage + 1;
}
template <int STAGES>
__device__ __forceinline__ void vx_ring_next(int& stage, unsigned& lap) {
    vx_ring_next<STAGES>(stage);
    lap ^= stage == 0;
}

// One warpgroup's wgmmas over the whole reduction step held in ring stage `stage`, whose
// descriptors are stage 0's (a_low0, b_low0) plus the stage's offset, as one commit group.
template <class T, bool MN_MAJOR>
__device__ __forceinline__ void vx_wgmma_stage(float (&d)[T::BN / 2], unsigned a_low0,
                                               unsigned b_low0, int stage) {
    const unsigned offset = stage * (T::STAGE_BYTES >> 4);
    vx_wgmma_fence();
#pragma unroll
    for (int k = 0; k < T::K_STEPS; ++k)
        vx_wgmma_step<T, MN_MAJOR>(d, a_low0 + offset, b_low0 + offset, k);
    vx_wgmma_commit();
}

// Dynamic shared memory from its first 1024-byte boundary (VX_CONV_WGMMA_ALIGN bytes are
// reserved for the skip).
__device__ __forceinline__ unsigned char* vx_wgmma_shared() {
    VX_DYNAMIC_SHARED(unsigned char, raw);
    const unsigned misalign = vx_shared_address(raw) % VX_WGMMA_ATOM_BYTES;
    return raw + (misalign ? VX_WGMMA_ATOM_BYTES - misalign : 0);
}

template <bool MN_MAJOR>
struct VxWgmmaLoop {
    template <class T, class Loader>
    __device__ __forceinline__ static void run(Loader& ld, int steps, VxPipeAcc<T>& acc) {
        unsigned char* smem = vx_wgmma_shared();
        // The warp-major accumulator array is, per thread, the wgmma D fragment.
        float(&d)[T::BN / 2] = reinterpret_cast<float(&)[T::BN / 2]>(acc[0]);
        constexpr int AHEAD = T::STAGES - 2;
        vx_ring_prologue<T, AHEAD>(ld, smem, steps);
        // Nothing but the wgmmas touches the accumulators until the last wait: a hold (an
        // asm that defines them) while one is in flight would make ptxas serialize them.
        vx_wgmma_hold(d);
        // The descriptors of stage 0; stage s's are s * STAGE_BYTES further. The stages of
        // step i and of step i + AHEAD run round the ring without a division.
        unsigned a_low0, b_low0;
        const unsigned ring = vx_shared_address(smem);
        vx_wgmma_stage_descs<T, MN_MAJOR>(vx_wgmma_group<T>(), ring, ring + T::A_BYTES, a_low0,
                                          b_low0);
        int stage = 0, next_stage = AHEAD;
        for (int i = 0; i < steps; ++i) {
            vx_cp_async_wait<AHEAD - 1>();
            vx_fence_proxy_async_shared();
            // Step i is in shared memory for the whole block, and every warpgroup's wgmmas
            // of step i - 2 have completed: their stage can be refilled.
            __syncthreads();
            vx_wgmma_stage<T, MN_MAJOR>(d, a_low0, b_low0, stage);
            // The copies of a later step (into step i - 2's stage) issue while the tensor
            // cores work.
            const int next = i + AHEAD;
            if (next < steps) {
                unsigned char* tiles = smem + next_stage * T::STAGE_BYTES;
                ld.load(next, tiles, tiles + T::A_BYTES);
            }
            vx_cp_async_commit();
            ld.ahead(i);
            vx_ring_next<T::STAGES>(stage);
            vx_ring_next<T::STAGES>(next_stage);
            vx_wgmma_wait<1>();
        }
        vx_wgmma_wait<0>();
        vx_wgmma_hold(d);
    }
};

// The multiplying warps' loop of the warp-specialized tiles: per step, wait for the
// stage's `full`, issue its wgmmas behind the previous step's, and once those have completed
// (wait_group 1, which the warpgroup passes together) release the previous step's stage on
// its `empty` (lane 0 of each warp arrives); the last step's stage once all have completed.
// The ring position (stage, lap) carries over to the next call (vx_tma_gather_loop's
// next tile).
template <class T, bool MN_MAJOR>
__device__ __forceinline__ void vx_wgmma_consume_at(int steps, unsigned char* smem,
                                                    unsigned long long* full,
                                                    unsigned long long* empty,
                                                    VxPipeAcc<T>& acc, int& stage,
                                                    unsigned& lap) {
    float(&d)[T::BN / 2] = reinterpret_cast<float(&)[T::BN / 2]>(acc[0]);
    vx_wgmma_hold(d);
    unsigned a_low0, b_low0;
    const unsigned ring = vx_shared_address(smem);
    vx_wgmma_stage_descs<T, MN_MAJOR>(vx_wgmma_group<T>(), ring, ring + T::A_BYTES, a_low0,
                                      b_low0);
    int previous = stage;
    const bool signals = threadIdx.x % 32 == 0;
    for (int i = 0; i < steps; ++i) {
        vx_mbar_wait(&full[stage], lap);
        vx_wgmma_stage<T, MN_MAJOR>(d, a_low0, b_low0, stage);
        vx_wgmma_wait<1>();
        if (i > 0 && signals) vx_mbar_arrive(&empty[previous]);
        previous = stage;
        vx_ring_next<T::STAGES>(stage, lap);
    }
    vx_wgmma_wait<0>();
    if (steps > 0 && signals) vx_mbar_arrive(&empty[previous]);
    vx_wgmma_hold(d);
}

template <class T, bool MN_MAJOR>
__device__ __forceinline__ void vx_wgmma_consume(int steps, unsigned char* smem,
                                                 unsigned long long* full,
                                                 unsigned long long* empty, VxPipeAcc<T>& acc) {
    int stage = 0;
    unsigned lap = 0;
    vx_wgmma_consume_at<T, MN_MAJOR>(steps, smem, full, empty, acc, stage, lap);
}

// The warp-specialized main loop (VxWgmmaWsOf). Per stage, `full` completes when every
// copying thread's copies of the stage's step have landed and been fenced for the tensor
// cores, and `empty` when every multiplying warp has seen the step's wgmmas complete.
// A copying thread keeps LAG steps of copies in flight before it publishes the oldest
// (cp.async.wait_group, fence.proxy.async, arrive), and waits for a stage's `empty` before
// refilling it; a multiplying warp waits for `full`, issues the step's wgmmas behind the
// previous step's, and releases the previous step's stage once those have completed
// (wait_group 1, which the warpgroup passes together; lane 0 arrives).
template <bool MN_MAJOR>
struct VxWgmmaWsLoop {
    // Refilling for step s waits for step s - STAGES + 1 to be multiplied, which the copying
    // warps published at step s - STAGES + 1 + LAG: LAG = STAGES - 3 leaves the multiplying
    // warps one published step beyond the one they need (STAGES - 2 would deadlock-free
    // leave none), and 3 (128 columns) or 4 (64) steps of copies in flight per thread.
    template <class T>
    static constexpr int LAG = T::STAGES - 3;

    template <class T, class Loader>
    __device__ __forceinline__ static void run(Loader& ld, int steps, VxPipeAcc<T>& acc) {
        static_assert(LAG<T> >= 2, "a ring of at least 5 stages");
        VX_SHARED(unsigned long long, full, [T::STAGES]);
        VX_SHARED(unsigned long long, empty, [T::STAGES]);
        unsigned char* smem = vx_wgmma_shared();
        const bool copies = T::mma_thread() < 0;
        if (copies) ld.begin();
        if (threadIdx.x == 0) {
            for (int s = 0; s < T::STAGES; ++s) {
                vx_mbar_init(&full[s], T::LOAD_THREADS);
                vx_mbar_init(&empty[s], (T::THREADS - T::LOAD_THREADS) / 32);
            }
        }
        __syncthreads();
        if (copies) {
            produce<T>(ld, steps, smem, full, empty);
        } else {
            vx_wgmma_consume<T, MN_MAJOR>(steps, smem, full, empty, acc);
        }
    }

    template <class T, class Loader>
    __device__ __forceinline__ static void produce(Loader& ld, int steps, unsigned char* smem,
                                                   unsigned long long* full,
                                                   unsigned long long* empty) {
        // The stage of step s and the parity of s / STAGES; the stage of step s - LAG.
        int stage = 0, published = 0;
        unsigned lap = 0;
        for (int s = 0; s < steps; ++s) {
            // Step s - STAGES's wgmmas have completed (passes at once in the first lap).
            vx_mbar_wait(&empty[stage], lap ^ 1);
            // The tables ahead(s - 2) wrote are published; ahead(s - 1) may overwrite
            // the one load(s - 1) read.
            if constexpr (Loader::STEP_TABLES) vx_named_barrier(1, T::LOAD_THREADS);
            unsigned char* tiles = smem + stage * T::STAGE_BYTES;
            ld.load(s, tiles, tiles + T::A_BYTES);
            vx_cp_async_commit();
            if (s > 0) ld.ahead(s - 1);
            if (s >= LAG<T>) {
                vx_cp_async_wait<LAG<T>>();
                vx_fence_proxy_async_shared();
                vx_mbar_arrive(&full[published]);
                vx_ring_next<T::STAGES>(published);
            }
            vx_ring_next<T::STAGES>(stage, lap);
        }
        vx_cp_async_wait<0>();
        vx_fence_proxy_async_shared();
        for (int s = steps < LAG<T> ? 0 : steps - LAG<T>; s < steps; ++s) {
            vx_mbar_arrive(&full[published]);
            vx_ring_next<T::STAGES>(published);
        }
    }
};

// A wgmma tile (128 x 128, 128 x 64 or 256 x 128, its ring and one block per SM) whose
// stages the tensor memory accelerator fills: one more warpgroup, after those that
// multiply, of which one thread waits for each stage's `empty`, arms its `full` with the
// stage's bytes and issues the step's box copies (VxWgmmaTmaLoop). A whole warpgroup, not
// a warp, so the block stays whole warpgroups; its other threads have nothing to do.
template <class Base, int THREADS_>
struct VxWgmmaTmaOf : Base {
    using KMajorLoop = VxWgmmaTmaLoop<false>;
    using MnMajorLoop = VxWgmmaTmaLoop<true>;
    static constexpr int THREADS = Base::THREADS + 128;
    static_assert(THREADS == THREADS_ && Base::MIN_BLOCKS == 1, "params_conv.h");
    __device__ __forceinline__ static int mma_thread() {
        const int tid = static_cast<int>(threadIdx.x);
        return tid < Base::THREADS ? tid : -1;
    }
};
template <class P>
using VxWgmmaTma128 = VxWgmmaTmaOf<VxWgmmaN128<P>, VX_CONV_WGMMA_TMA_THREADS>;
template <class P>
using VxWgmmaTma64 = VxWgmmaTmaOf<VxWgmmaN64<P>, VX_CONV_WGMMA_TMA_THREADS>;
// Four warpgroups of 64 rows multiply, as VxWgmmaM256: with the copies off their warps,
// 640 threads leave each at most 96 registers, and its accumulators take 64.
template <class P>
using VxWgmmaTma256 = VxWgmmaTmaOf<VxWgmmaM256<P>, VX_CONV_WGMMA_TMA256_THREADS>;
// 128 x 128 and 128 x 64 over 32 channels a box (forward and backward data, bf16).
template <class P>
using VxWgmmaTma128Sw64 = VxWgmmaSw64Of<VxWgmmaTma128<P>>;
template <class P>
using VxWgmmaTma64Sw64 = VxWgmmaSw64Of<VxWgmmaTma64<P>>;

// A result of 64-channel blocks computed transposed, on the tensor memory accelerator: the
// block's 64 result channels are the rows (A, one box), 256 columns (B) follow, and its two
// multiplying warpgroups take 128 columns each, so that their wgmmas are m64n128 where the
// 128 x 64 tile's are m64n64 (three quarters of the shared-memory reads per multiply-add);
// the producer warpgroup is VxWgmmaTmaOf's. Backward weights: dw^T, 64 output channels (a
// box of dy) by 256 (tap, input channel) columns (four boxes of x), at bf16 mn-major
// (vx_tma_backward_weights), at tf32 k-major over channel-major packs
// (vx_tma_backward_weights_kmajor). Forward and backward data (k-major, vx_tma_gather_pass):
// y^T (dx^T), 64 result channels (a box of the weights) by one box of 256 voxels (x's; dy's),
// a row of the reduction's channels per step (VxWgmmaSw64Of: two boxes of half a row).
template <class P>
struct VxWgmmaTmaCols {
    using Prec = P;
    using Elem = typename P::Elem;
    using KMajorLoop = VxWgmmaTmaLoop<false>;
    using MnMajorLoop = VxWgmmaTmaLoop<true>;
    static constexpr int WARPGROUPS = 2;
    static constexpr bool SPLIT_N = true;
    static constexpr int THREADS = 128 * WARPGROUPS + 128;
    static_assert(THREADS == VX_CONV_WGMMA_TMA_THREADS, "params_conv.h");
    __device__ __forceinline__ static int mma_thread() {
        const int tid = static_cast<int>(threadIdx.x);
        return tid < 128 * WARPGROUPS ? tid : -1;
    }
    // Per warpgroup: 64 rows by BN columns; the block's B holds COLS.
    static constexpr int BM = 64, BN = 128, COLS = WARPGROUPS * BN;
    static constexpr int MT = 1, NT = BN / 8;
    static constexpr int ROW_BYTES = VX_CONV_WGMMA_STEP_BYTES;
    static constexpr int BK = ROW_BYTES / static_cast<int>(sizeof(Elem));
    static constexpr int K_STEPS = BK / P::MMA_K;
    static constexpr int SWIZZLE_BYTES = ROW_BYTES, SUBTILES = 1, SUB_K = BK;
    // An mn-major block: 64 elements by BK rows (bf16: one box of 64 voxels by 64 channels).
    static constexpr int MN_BLOCK_BYTES = BK * ROW_BYTES;
    // Rows of 128 bytes either way: k-major rows are the result's rows or columns, mn-major
    // ones (bf16) the BK reduction voxels of each block of 64.
    static constexpr int A_BYTES = BM * ROW_BYTES, B_BYTES = COLS * ROW_BYTES;
    static constexpr int A_SUB_BYTES = A_BYTES, B_SUB_BYTES = B_BYTES;
    static constexpr int STAGE_BYTES = A_BYTES + B_BYTES;
    static constexpr int STAGES = VX_CONV_WGMMA_STAGES_N128;
    static_assert(ROW_BYTES == 128 && A_BYTES % VX_WGMMA_ATOM_BYTES == 0 &&
                      (B_SUB_BYTES / WARPGROUPS) % VX_WGMMA_ATOM_BYTES == 0,
                  "128-byte rows; each warpgroup's columns at an atom boundary");
};
// The same over boxes of 32 bf16 channels, two a step (forward and backward data).
template <class P>
using VxWgmmaTmaColsSw64 = VxWgmmaSw64Of<VxWgmmaTmaCols<P>>;

// The main loop of VxWgmmaTmaOf: stage s's `full` completes when its one arrival (the
// copying thread's, which armed it with the loader's stage_bytes()) and the bytes of the
// step's boxes are in; its `empty` as VxWgmmaWsLoop's.
template <bool MN_MAJOR>
struct VxWgmmaTmaLoop {
    template <class T, class Loader>
    __device__ __forceinline__ static void run(Loader& ld, int steps, VxPipeAcc<T>& acc) {
        VX_SHARED(unsigned long long, full, [T::STAGES]);
        VX_SHARED(unsigned long long, empty, [T::STAGES]);
        unsigned char* smem = vx_wgmma_shared();
        if (threadIdx.x == 0) {
            for (int s = 0; s < T::STAGES; ++s) {
                vx_mbar_init(&full[s], 1);
                vx_mbar_init(&empty[s], T::WARPGROUPS * 4);
            }
            vx_fence_mbarrier_init();
        }
        __syncthreads();
        if (T::mma_thread() >= 0) {
            vx_wgmma_consume<T, MN_MAJOR>(steps, smem, full, empty, acc);
        } else if (threadIdx.x == T::THREADS - 128) {
            int stage = 0;
            unsigned lap = 0;
            for (int s = 0; s < steps; ++s) {
                // Step s - STAGES's wgmmas have completed (passes at once in the first lap).
                vx_mbar_wait(&empty[stage], lap ^ 1);
                vx_mbar_arrive_expect_tx(&full[stage], ld.stage_bytes());
                unsigned char* tiles = smem + stage * T::STAGE_BYTES;
                ld.load(tiles, tiles + T::A_BYTES, &full[stage]);
                vx_ring_next<T::STAGES>(stage, lap);
            }
        }
    }
};

// Box `box` of the boxes that tile the samples' results (Conv3dTmaParams), in order: its
// sample and its place (z, y, x) in boxes.
__device__ __forceinline__ void vx_tma_box_of(const Conv3dTmaParams& tp, int box, int& n,
                                              int& z, int& y, int& x) {
    vx_split_voxel(box, tp.boxes_d, tp.boxes_h, tp.boxes_w, n, z, y, x);
}

// The forward's operands as boxes (Conv3dTmaParams), or backward data's over one stride
// phase (DATA; VxPhase, the only one at stride 1): the block's voxels are one box of
// result voxels (BM, or COLS on VxWgmmaTmaCols: box_d x box_h x box_w of y, or of the
// phase's grid of dx voxels), step s is reduction step s of the split: tap t of the window
// (the kernel's taps; the phase's) and BK of the reduction's padded channels (x's; dy's).
// The box's windows at t
// (the forward's x at corner * stride - pad + t, taken every stride voxels; backward data's
// dy at corner + lo + t; zeros outside the tensor) are A, and the weights of the block's
// W_ROWS result channels at the kernel tap of t and those channels (packed
// [cout][tap][cin_p], or [cin][tap][cout_p], as [rows][taps * channels]; zeros past the
// last row) are B; on VxWgmmaTmaCols (SPLIT_N, the result computed transposed) the weights
// are A and the voxels B. Both land as k-major tiles in the 128-byte swizzle, the voxels'
// rows in the box's order; on VxWgmmaSw64Of, as its sub-tiles, each a box of SUB_K
// channels at the next (tap, channels), zeros past the window's last tap (an odd number of
// them at 32 channels: both boxes read past the channels).
template <class T, bool DATA>
struct VxTmaGather {
    static constexpr int W_ROWS = T::SPLIT_N ? T::BM : T::COLS;
    static constexpr int X_SUB_BYTES = T::SPLIT_N ? T::B_SUB_BYTES : T::A_SUB_BYTES;
    static constexpr int W_SUB_BYTES = T::SPLIT_N ? T::A_SUB_BYTES : T::B_SUB_BYTES;
    const Conv3dTmaParams& tp;
    const VxPhase& ph;
    int chunks, channels;
    // The window's taps along d, h and w (the kernel's; the phase's).
    int taps_d, taps_h, taps_w;
    // The next step's tap (z, y, x) of the window and channel chunk.
    int tz, ty, tx, chunk;
    // The block's box: sample n, the window corner of its first voxel.
    int n, iz, iy, ix;
    // The first weight row (column) of the block's column block.
    int w_row;

    // The loader of box `box` (of the boxes that tile the result) and column block
    // `column_block`, from reduction step `step` on.
    __device__ __forceinline__ VxTmaGather(const Conv3dTmaParams& tp_, const VxPhase& ph_,
                                           int step, int box, int column_block)
        : tp(tp_), ph(ph_), w_row(column_block * W_ROWS) {
        const Conv3dParams& p = tp.conv;
        channels = vx_pad<typename T::Prec>(DATA ? p.cout : p.cin);
        chunks = channels / T::SUB_K;
        taps_d = DATA ? ph.taps[0] : p.k_d;
        taps_h = DATA ? ph.taps[1] : p.k_h;
        taps_w = DATA ? ph.taps[2] : p.k_w;
        const int sub = step * T::SUBTILES;
        const int tap = sub / chunks;
        chunk = sub - tap * chunks;
        vx_split3(tap, taps_h, taps_w, tz, ty, tx);
        int bz, by, bx;
        vx_tma_box_of(tp, box, n, bz, by, bx);
        if constexpr (DATA) {
            iz = bz * tp.box_d + ph.lo[0];
            iy = by * tp.box_h + ph.lo[1];
            ix = bx * tp.box_w + ph.lo[2];
        } else {
            iz = bz * tp.box_d * p.stride_d - p.pad_d;
            iy = by * tp.box_h * p.stride_h - p.pad_h;
            ix = bx * tp.box_w * p.stride_w - p.pad_w;
        }
    }

    __device__ __forceinline__ unsigned stage_bytes() const { return T::STAGE_BYTES; }

    __device__ __forceinline__ void load(unsigned char* a_tile, unsigned char* b_tile,
                                         unsigned long long* full) {
        const Conv3dParams& p = tp.conv;
        unsigned char* x_tile = T::SPLIT_N ? b_tile : a_tile;
        unsigned char* w_tile = T::SPLIT_N ? a_tile : b_tile;
#pragma unroll
        for (int j = 0; j < T::SUBTILES; ++j) {
            // Past the window's last tap, channel `channels` of x (dy) and column
            // `taps * channels` of the weights are outside both maps.
            const bool inside = tz < taps_d;
            const int c0 = inside ? chunk * T::SUB_K : channels;
            vx_tma_load_5d(x_tile + j * X_SUB_BYTES, &tp.a, c0, ix + tx, iy + ty, iz + tz, n,
                           full);
            const int tap =
                DATA ? vx_phase_kernel_tap(p, ph, tz, ty, tx) : (tz * p.k_h + ty) * p.k_w + tx;
            const int column = inside ? tap * channels + c0 : p.k_d * p.k_h * p.k_w * channels;
            vx_tma_load_5d(w_tile + j * W_SUB_BYTES, &tp.b, column, w_row, 0, 0, 0, full);
            if (++chunk == chunks) {
                chunk = 0;
                vx_next_tap(tz, ty, tx, taps_h, taps_w);
            }
        }
    }
};

// Floats a column of VxWgmmaTmaCols' staged result takes in shared memory (vx_store_cols):
// 64 channels and 4 more, so that a warp's fragment writes (8 channels of each of 4
// columns, 2 apart) fall in 32 different banks.
constexpr int VX_COLS_STAGED_STRIDE = 68;

// Writes the accumulators of a tile computed transposed (VxWgmmaTmaCols), as vx_pipe_store
// writes the others': result channel c (the block's row, blockIdx.y BM + 16 (warp % 4) + g
// (+ 8) in warpgroup w's D fragment) of the block's column `local` (128 w + 8 j + 2 t (+ 1);
// GEMM row r = blockIdx.x COLS + local) goes to out[out_row(local, r) * cols + c] (skipped
// where out_row < 0), plus bias[c] when there is a bias. Once every warpgroup's wgmmas
// have read the ring, the fragments are staged there column by column, and each warp
// writes 32 columns a row at a time (lane i finds column i's row): 256 contiguous bytes a
// store, where storing the fragments would write 32-byte pieces of 4 columns.
template <class T, class OutRow>
__device__ __forceinline__ void vx_store_cols(const VxPipeAcc<T>& acc, int cols, OutRow out_row,
                                              const float* bias, float* out) {
    constexpr int STRIDE = VX_COLS_STAGED_STRIDE, WARPS = 4 * T::WARPGROUPS;
    static_assert(T::BM == 64 && T::COLS == 32 * WARPS &&
                      T::COLS * STRIDE * 4 <= T::STAGES * T::STAGE_BYTES,
                  "a warp's 32 columns of 64 channels; the staged result fits in the ring");
    const int tid = T::mma_thread();
    if (tid < 0) return;
    float* staged = reinterpret_cast<float*>(vx_wgmma_shared());
    // The warp-major accumulator array is, per thread, the wgmma D fragment.
    const float* d = &acc[0][0][0];
    const int warp = tid / 32, lane = tid % 32, g = lane >> 2, t = lane & 3;
    // The ring's last reads were the tensor cores' (the async proxy): ordered before this
    // thread's writes to it, then every warpgroup's wgmmas are past.
    vx_fence_proxy_async_shared();
    vx_named_barrier(1, 128 * T::WARPGROUPS);
    const int row0 = 16 * (warp % 4) + g, local0 = (warp / 4) * T::BN + 2 * t;
#pragma unroll
    for (int j = 0; j < T::BN / 8; ++j)
#pragma unroll
        for (int e = 0; e < 2; ++e)
#pragma unroll
            for (int h = 0; h < 2; ++h)
                staged[(local0 + 8 * j + e) * STRIDE + row0 + 8 * h] = d[4 * j + 2 * h + e];
    vx_named_barrier(1, 128 * T::WARPGROUPS);
    const int first = 32 * warp;
    const int mine = out_row(first + lane, static_cast<int>(blockIdx.x) * T::COLS + first + lane);
    const int c = blockIdx.y * T::BM + 2 * lane;
    const bool has0 = c < cols, has1 = c + 1 < cols, pairs = has1 && cols % 2 == 0;
    const float add0 = bias && has0 ? bias[c] : 0.0f, add1 = bias && has1 ? bias[c + 1] : 0.0f;
    for (int i = 0; i < 32; ++i) {
        const int o = __shfl_sync(0xffffffffu, mine, i);
        if (o < 0 || !has0) continue;
        const VxF2 v = *reinterpret_cast<const VxF2*>(staged + (first + i) * STRIDE + 2 * lane);
        float* dst = out + static_cast<size_t>(o) * cols + c;
        if (pairs) {
            *reinterpret_cast<VxF2*>(dst) = VxF2{v.x + add0, v.y + add1};
        } else {
            dst[0] = v.x + add0;
            if (has1) dst[1] = v.y + add1;
        }
    }
}

// The result voxel (y's; at DATA dx's) of row `local` of the box whose first voxel is
// (bz, by, bx) of sample n in the result's grid (at DATA the phase's), or -1 past that grid.
template <bool DATA>
__device__ __forceinline__ int vx_tma_result_voxel(const Conv3dTmaParams& tp, const VxPhase& ph,
                                                   int n, int bz, int by, int bx, int local) {
    const Conv3dParams& p = tp.conv;
    int z, y, x;
    vx_split3(local, tp.box_h, tp.box_w, z, y, x);
    z += bz, y += by, x += bx;
    if constexpr (DATA) {
        if (z >= ph.grid[0] || y >= ph.grid[1] || x >= ph.grid[2]) return -1;
        z = z * p.stride_d + ph.r[0];
        y = y * p.stride_h + ph.r[1];
        x = x * p.stride_w + ph.r[2];
        return ((n * p.in_d + z) * p.in_h + y) * p.in_w + x;
    } else {
        if (z >= p.out_d || y >= p.out_h || x >= p.out_w) return -1;
        return ((n * p.out_d + z) * p.out_h + y) * p.out_w + x;
    }
}

// Box `box` of the boxes that tile a gather pass's result, at DATA in stride phase
// `phase`: its sample n and first voxel (bz, by, bx) in the result's grid (the phase's),
// the taps of its window, and whether it lies inside that grid (where the phases' grids
// differ, sizes not a multiple of the stride, the boxes of the largest may lie past a
// smaller one's).
template <bool DATA>
struct VxGatherBox {
    VxPhase ph;
    int n, bz, by, bx, taps;
    bool inside;

    __device__ __forceinline__ VxGatherBox(const Conv3dTmaParams& tp, int box, int phase) {
        const Conv3dParams& p = tp.conv;
        ph = {};
        int grid_d = p.out_d, grid_h = p.out_h, grid_w = p.out_w;
        taps = p.k_d * p.k_h * p.k_w;
        if constexpr (DATA) {
            ph = vx_phase(p, phase);
            grid_d = ph.grid[0], grid_h = ph.grid[1], grid_w = ph.grid[2];
            taps = ph.taps[0] * ph.taps[1] * ph.taps[2];
        }
        vx_tma_box_of(tp, box, n, bz, by, bx);
        bz *= tp.box_d, by *= tp.box_h, bx *= tp.box_w;
        inside = bz < grid_d && by < grid_h && bx < grid_w;
    }

    // The result voxel of the box's row `local` (vx_tma_result_voxel).
    __device__ __forceinline__ int voxel(const Conv3dTmaParams& tp, int local) const {
        return vx_tma_result_voxel<DATA>(tp, ph, n, bz, by, bx, local);
    }
};

// The forward (y from x), or backward data (DATA: dx from dy; grid.z runs over (split,
// stride phase), phase fastest, and the boxes tile the largest phase's grid), on the tensor
// memory accelerator; row `local` of a block is voxel `local` of its box, and none past the
// result (the phase's grid) is stored. A phase whose window has no taps (a kernel smaller
// than the stride) stores zeros, or the bias.
template <class T, bool DATA>
__device__ __forceinline__ void vx_tma_gather_pass(const Conv3dTmaParams& tp, const float* bias,
                                                   float* out) {
    const Conv3dParams& p = tp.conv;
    const int phases = DATA ? p.stride_d * p.stride_h * p.stride_w : 1;
    const int split = static_cast<int>(blockIdx.z) / phases;
    const VxGatherBox<DATA> b(tp, static_cast<int>(blockIdx.x),
                              static_cast<int>(blockIdx.z) - split * phases);
    if (!b.inside) return;
    const int k_total = b.taps * vx_pad<typename T::Prec>(DATA ? p.cout : p.cin);
    int k_begin, k_end;
    vx_split_range(p, split, k_total, k_begin, k_end);
    VxPipeAcc<T> acc = {};
    if (k_begin < k_end) {
        VxTmaGather<T, DATA> ld(tp, b.ph, k_begin / T::BK, static_cast<int>(blockIdx.x),
                                static_cast<int>(blockIdx.y));
        T::KMajorLoop::template run<T>(ld, (k_end - k_begin + T::BK - 1) / T::BK, acc);
    }
    const int d = DATA ? p.in_d : p.out_d, h = DATA ? p.in_h : p.out_h;
    const int w = DATA ? p.in_w : p.out_w, cols = DATA ? p.cin : p.cout;
    const auto voxel = [&](int local, int) { return b.voxel(tp, local); };
    const float* split_bias = split == 0 ? bias : nullptr;
    float* split_out = out + static_cast<size_t>(split) * p.n * d * h * w * cols;
    if constexpr (T::SPLIT_N) {
        vx_store_cols<T>(acc, cols, voxel, split_bias, split_out);
    } else {
        vx_pipe_store<T>(acc, static_cast<int>(gridDim.x) * T::BM, cols, voxel, split_bias,
                         split_out);
    }
}

template <class T>
__device__ __forceinline__ void vx_tma_forward(const Conv3dTmaParams& tp, const float* bias,
                                               float* y) {
    vx_tma_gather_pass<T, false>(tp, bias, y);
}

template <class T>
__device__ __forceinline__ void vx_tma_backward_data(const Conv3dTmaParams& tp,
                                                     const float* bias, float* dx) {
    vx_tma_gather_pass<T, true>(tp, bias, dx);
}

// Writes the accumulators of a tile computed transposed (VxWgmmaTmaCols) straight from the
// fragments, leaving the ring to the next tile's copies: result channel c = `column_block`
// BM + 16 (warp % 4) + g (+ 8) of the block's column local = 128 (warp / 4) + 8 j + 2 t
// (+ 1) goes to out[voxels[local] * cols + c] (skipped where voxels[local] < 0), plus
// bias[c] when there is a bias. A warp's store writes 8 channels of 4 columns: four
// 32-byte pieces.
template <class T>
__device__ __forceinline__ void vx_store_cols_direct(const VxPipeAcc<T>& acc, int cols,
                                                     int column_block, const int* voxels,
                                                     const float* bias, float* out) {
    const int tid = T::mma_thread();
    if (tid < 0) return;
    const float* d = &acc[0][0][0];
    const int warp = tid / 32, lane = tid % 32, g = lane >> 2, t = lane & 3;
    const int c0 = column_block * T::BM + 16 * (warp % 4) + g;
    const int local0 = (warp / 4) * T::BN + 2 * t;
    bool has[2];
    float add[2];
#pragma unroll
    for (int h = 0; h < 2; ++h) {
        has[h] = c0 + 8 * h < cols;
        add[h] = bias && has[h] ? bias[c0 + 8 * h] : 0.0f;
    }
#pragma unroll
    for (int j = 0; j < T::BN / 8; ++j)
#pragma unroll
        for (int e = 0; e < 2; ++e) {
            const int o = voxels[local0 + 8 * j + e];
            if (o < 0) continue;
            float* dst = out + static_cast<size_t>(o) * cols + c0;
#pragma unroll
            for (int h = 0; h < 2; ++h)
                if (has[h]) dst[8 * h] = d[4 * j + 2 * h + e] + add[h];
        }
}

// vx_tma_gather_pass on the transposed tiles (VxWgmmaTmaCols, unsplit), persistent: block b
// runs tiles b, b + gridDim.x, ... of the grid the plan would otherwise launch (boxes
// fastest, then column blocks, then stride phases). The producer thread runs on into the
// next tile's stages while the warpgroups store the last tile's results, which they write
// from their fragments (vx_store_cols_direct) so that the ring stays the copies'; the ring
// position carries over from tile to tile on both sides.
template <class T, bool DATA>
__device__ __forceinline__ void vx_tma_gather_loop(const Conv3dTmaParams& tp, const float* bias,
                                                   float* out) {
    static_assert(T::SPLIT_N && T::COLS == 128 * T::WARPGROUPS,
                  "the transposed tiles: a column per multiplying thread");
    const Conv3dParams& p = tp.conv;
    const int phases = DATA ? p.stride_d * p.stride_h * p.stride_w : 1;
    const int boxes = p.n * tp.boxes_d * tp.boxes_h * tp.boxes_w;
    const int cols = DATA ? p.cin : p.cout;
    const int column_blocks = (cols + T::BM - 1) / T::BM;
    const int tiles = boxes * column_blocks * phases;
    const int channels = vx_pad<typename T::Prec>(DATA ? p.cout : p.cin);
    VX_EMU_EXPECT(p.splits == 1, "an unsplit reduction (ConvPlan::persistent)");
    VX_SHARED(unsigned long long, full, [T::STAGES]);
    VX_SHARED(unsigned long long, empty, [T::STAGES]);
    // The result voxel of each of the tile's columns (vx_store_cols_direct).
    VX_SHARED(int, voxels, [T::COLS]);
    unsigned char* smem = vx_wgmma_shared();
    if (threadIdx.x == 0) {
        for (int s = 0; s < T::STAGES; ++s) {
            vx_mbar_init(&full[s], 1);
            vx_mbar_init(&empty[s], T::WARPGROUPS * 4);
        }
        vx_fence_mbarrier_init();
    }
    __syncthreads();
    // Tile t: its box (of the phase), column block, and reduction steps, or -1 where the
    // box lies past the phase's grid.
    struct Tile {
        int box, column_block, steps;
        VxGatherBox<DATA> b;
    };
    const auto tile_at = [&](int t) {
        const int box = t % boxes, rest = t / boxes;
        const VxGatherBox<DATA> b(tp, box, rest / column_blocks);
        const int steps = b.inside ? (b.taps * channels + T::BK - 1) / T::BK : -1;
        return Tile{box, rest % column_blocks, steps, b};
    };
    int stage = 0;
    unsigned lap = 0;
    const int first = static_cast<int>(blockIdx.x), step = static_cast<int>(gridDim.x);
    // The warpgroup's role, warp-uniform as far as ptxas can tell: under a branch on
    // threadIdx it serializes the wgmmas of a loop over tiles (its C7518 advice).
    const int warpgroup = __shfl_sync(0xffffffffu, static_cast<int>(threadIdx.x) / 128, 0);
    if (warpgroup < T::WARPGROUPS) {
        const int tid = T::mma_thread();
        for (int t = first; t < tiles; t += step) {
            const Tile tl = tile_at(t);
            if (tl.steps < 0) continue;
            VxPipeAcc<T> acc = {};
            vx_wgmma_consume_at<T, false>(tl.steps, smem, full, empty, acc, stage, lap);
            // Every warp is done with the last tile's voxels.
            vx_named_barrier(1, 128 * T::WARPGROUPS);
            voxels[tid] = tl.b.voxel(tp, tid);
            vx_named_barrier(1, 128 * T::WARPGROUPS);
            vx_store_cols_direct<T>(acc, cols, tl.column_block, voxels, bias, out);
        }
    } else if (threadIdx.x == T::THREADS - 128) {
        for (int t = first; t < tiles; t += step) {
            const Tile tl = tile_at(t);
            if (tl.steps <= 0) continue;
            VxTmaGather<T, DATA> ld(tp, tl.b.ph, 0, tl.box, tl.column_block);
            for (int s = 0; s < tl.steps; ++s) {
                // Step s - STAGES (of this tile or the last) has been multiplied.
                vx_mbar_wait(&empty[stage], lap ^ 1);
                vx_mbar_arrive_expect_tx(&full[stage], ld.stage_bytes());
                unsigned char* tiles_at = smem + stage * T::STAGE_BYTES;
                ld.load(tiles_at, tiles_at + T::A_BYTES, &full[stage]);
                vx_ring_next<T::STAGES>(stage, lap);
            }
        }
    }
}

template <class T>
__device__ __forceinline__ void vx_tma_forward_loop(const Conv3dTmaParams& tp, const float* bias,
                                                    float* y) {
    vx_tma_gather_loop<T, false>(tp, bias, y);
}

template <class T>
__device__ __forceinline__ void vx_tma_backward_data_loop(const Conv3dTmaParams& tp,
                                                          const float* bias, float* dx) {
    vx_tma_gather_loop<T, true>(tp, bias, dx);
}

// The block of 64 backward-weights rows (tap, padded input channel) from `row` (one tap's):
// its first channel, or -1 past the last tap, and the tap's kernel index (kz, ky, kx).
template <class T>
__device__ __forceinline__ int vx_weight_block(const Conv3dParams& p, int row, int& kz, int& ky,
                                               int& kx) {
    const int cin_p = vx_pad<typename T::Prec>(p.cin);
    const int tap = row / cin_p;
    vx_split3(tap, p.k_h, p.k_w, kz, ky, kx);
    return tap < p.k_d * p.k_h * p.k_w ? row - tap * cin_p : -1;
}

// Backward weights' operands as boxes (Conv3dTmaParams): step s is box s of the split:
// x's 64-row blocks (one tap, 64 of its padded channels) at the box's window corner plus
// the tap, and dy's blocks of 64 channels at the box. On the tiles whose warpgroups split
// the rows, x's blocks are A (the block's BM rows of (tap, channel)) and dy's B (its BN
// output channels); on VxWgmmaTmaCols (SPLIT_N, dw computed transposed) dy's one block is A
// and x's four are B. Each box lands as one mn-major block of the tile (64 elements by 64
// voxel rows of 128 bytes, in the 128-byte swizzle), its voxels in the same order in both.
// Blocks of taps past the last are not copied (nor armed): their rows hold what the stage
// held before and are never stored, so no copy of a box wholly outside x is needed.
template <class T>
struct VxTmaBackwardWeights {
    // The block's (tap, channel) rows and output channels, as x's and dy's blocks.
    static constexpr int X_ROWS = T::SPLIT_N ? T::COLS : T::BM;
    static constexpr int DY_ROWS = T::SPLIT_N ? T::BM : T::COLS;
    static constexpr int X_BOXES = X_ROWS / 64, DY_BOXES = DY_ROWS / 64;
    static_assert(T::MN_BLOCK_BYTES == 64 * 128 && T::BK == 64,
                  "a box is one mn-major block of 64 voxels by 64 bf16");
    const Conv3dTmaParams& tp;
    // x's coordinates of block j relative to a box's output corner (times the strides);
    // x_c[j] < 0 past the last tap.
    int x_c[X_BOXES], x_z[X_BOXES], x_y[X_BOXES], x_x[X_BOXES];
    int dy_c0;
    // The bytes of a step's copies.
    unsigned bytes;
    // The output corner of the next box, in boxes: sample n, (z, y, x).
    int n, z, y, x;

    __device__ __forceinline__ VxTmaBackwardWeights(const Conv3dTmaParams& tp_, int box)
        : tp(tp_) {
        const Conv3dParams& p = tp.conv;
        bytes = T::STAGE_BYTES;
#pragma unroll
        for (int j = 0; j < X_BOXES; ++j) {
            int kz, ky, kx;
            x_c[j] = vx_weight_block<T>(p, blockIdx.x * X_ROWS + 64 * j, kz, ky, kx);
            if (x_c[j] < 0) bytes -= T::MN_BLOCK_BYTES;
            x_z[j] = kz - p.pad_d;
            x_y[j] = ky - p.pad_h;
            x_x[j] = kx - p.pad_w;
        }
        dy_c0 = blockIdx.y * DY_ROWS;
        vx_tma_box_of(tp, box, n, z, y, x);
    }

    __device__ __forceinline__ unsigned stage_bytes() const { return bytes; }

    // The next step's boxes into a_tile and b_tile, completing on `full`; then the box after.
    __device__ __forceinline__ void load(unsigned char* a_tile, unsigned char* b_tile,
                                         unsigned long long* full) {
        const Conv3dParams& p = tp.conv;
        unsigned char* x_tile = T::SPLIT_N ? b_tile : a_tile;
        unsigned char* dy_tile = T::SPLIT_N ? a_tile : b_tile;
        const int oz = z * tp.box_d, oy = y * tp.box_h, ox = x * tp.box_w;
#pragma unroll
        for (int j = 0; j < X_BOXES; ++j)
            if (x_c[j] >= 0)
                vx_tma_load_5d(x_tile + j * T::MN_BLOCK_BYTES, &tp.a, x_c[j],
                               ox * p.stride_w + x_x[j], oy * p.stride_h + x_y[j],
                               oz * p.stride_d + x_z[j], n, full);
#pragma unroll
        for (int j = 0; j < DY_BOXES; ++j)
            vx_tma_load_5d(dy_tile + j * T::MN_BLOCK_BYTES, &tp.b, dy_c0 + 64 * j, ox, oy, oz,
                           n, full);
        vx_advance_voxel(n, z, y, x, 0, 0, 0, 1, tp.boxes_d, tp.boxes_h, tp.boxes_w);
    }
};

// Writes backward weights' accumulators, rows (tap, padded channel), into this split's
// partial of dw [tap][cin][cout]: transposed on VxWgmmaTmaCols (dw^T's rows are the output
// channels), else as the mma.sync tiles do.
template <class T>
__device__ __forceinline__ void vx_store_weights(const VxPipeAcc<T>& acc, const Conv3dParams& p,
                                                 float* dw) {
    if constexpr (T::SPLIT_N) {
        const int cin_p = vx_pad<typename T::Prec>(p.cin);
        const int taps = p.k_d * p.k_h * p.k_w;
        vx_store_cols<T>(
            acc, p.cout,
            [&](int, int r) { return r < taps * cin_p ? vx_weight_row(p, cin_p, r) : -1; },
            nullptr, dw + static_cast<size_t>(blockIdx.z) * taps * p.cin * p.cout);
    } else {
        vx_pipe_store_weights<T>(acc, p, dw);
    }
}

template <class T>
__device__ __forceinline__ void vx_tma_backward_weights(const Conv3dTmaParams& tp, const float*,
                                                        float* dw) {
    const Conv3dParams& p = tp.conv;
    const int boxes = p.n * tp.boxes_d * tp.boxes_h * tp.boxes_w;
    const int per_split = p.split_len / T::BK;
    const int begin = blockIdx.z * per_split;
    const int end = begin + per_split < boxes ? begin + per_split : boxes;
    VxTmaBackwardWeights<T> ld(tp, begin);
    VxPipeAcc<T> acc = {};
    T::MnMajorLoop::template run<T>(ld, end - begin, acc);
    vx_store_weights<T>(acc, p, dw);
}

// Kernel index k along an axis of padding `pad` and `stride`, as the grid reads it: x's
// phase r and the phase grid's offset q + before (VxTmaBackwardWeightsKMajor).
__device__ __forceinline__ void vx_grid_tap(int k, int pad, int stride, int& offset, int& r) {
    const int before = (pad + stride - 1) / stride;
    const int t = k - pad + before * stride;  // >= 0
    offset = t / stride;
    r = t - offset * stride;
}

// Backward weights at tf32, whose operands wgmma reads k-major only (Conv3dTmaParams): x
// and dy packed channel-major (conv3d_pack_channel_major_tf32) into grids of the same
// shape, dy at the grid's voxels (z, y, x) < out and x split into its stride phases, so
// that dw[tap][ci][co] = sum over the grid's voxels v of x[ci][offset(tap) + v] dy[co][v].
// Along an axis, tap t reads x at stride o + t - pad = stride (o + q) + r (0 <= r <
// stride): phase r's grid at o + q + before, before = ceil(pad / stride) making it at
// least 0; offset(tap) is phase r's first voxel (r grid_voxels, phases rz slowest) plus
// the flat offset of (q + before) per axis. Where dy is not zero every tap's neighbour is
// the window's (zeros outside x: the border); elsewhere dy is zero. Step s is 32 voxels of
// the grid from v = 32 s: A's 64-row blocks (one tap, 64 of its channels) a box of x's 64
// channels at offset(tap) + v, B one box of dy's BN channels at v (VxWgmmaTmaCols: dy's 64
// channels are A and x's four blocks B), each landing as k-major
// rows of 128 bytes (32 voxels) in the 128-byte swizzle. A box starts only at a 16-byte
// chunk (kernels/tma.h) and the grid's rows are whole chunks, so a tap whose offset is
// r = offset % 4 voxels into a chunk reads x's copy r (packed r voxels further on) at
// offset - r. Blocks of taps past the last are neither copied nor armed (as
// VxTmaBackwardWeights); reads past the pack's rows arrive as zeros.
template <class T>
struct VxTmaBackwardWeightsKMajor {
    // The block's (tap, channel) rows and output channels, as x's and dy's boxes (on
    // VxWgmmaTmaCols, SPLIT_N: dw computed transposed, dy's box is A and x's B).
    static constexpr int X_ROWS = T::SPLIT_N ? T::COLS : T::BM;
    static constexpr int DY_ROWS = T::SPLIT_N ? T::BM : T::COLS;
    static constexpr int X_BOXES = X_ROWS / 64;
    static constexpr int BLOCK_BYTES = 64 * T::ROW_BYTES;
    static_assert(T::BK == 32 &&
                      (T::SPLIT_N ? T::B_BYTES : T::A_BYTES) == X_BOXES * BLOCK_BYTES &&
                      (T::SPLIT_N ? T::A_BYTES : T::B_BYTES) == DY_ROWS * T::ROW_BYTES,
                  "a step is one 128-byte row of 32 tf32 voxels per channel");
    const Conv3dTmaParams& tp;
    // Block j's tap offset in the grid, down to a chunk, and its copy of x (the offset's
    // remainder); its first channel, x_c[j] < 0 past the last tap.
    int x_offset[X_BOXES], x_shift[X_BOXES], x_c[X_BOXES];
    int dy_c0;
    unsigned bytes;
    // The next step's first voxel of the grid.
    int v;

    __device__ __forceinline__ VxTmaBackwardWeightsKMajor(const Conv3dTmaParams& tp_, int step)
        : tp(tp_) {
        const Conv3dParams& p = tp.conv;
        bytes = T::STAGE_BYTES;
#pragma unroll
        for (int j = 0; j < X_BOXES; ++j) {
            int kz, ky, kx;
            x_c[j] = vx_weight_block<T>(p, blockIdx.x * X_ROWS + 64 * j, kz, ky, kx);
            if (x_c[j] < 0) bytes -= BLOCK_BYTES;
            int qz, rz, qy, ry, qx, rx;
            vx_grid_tap(kz, p.pad_d, p.stride_d, qz, rz);
            vx_grid_tap(ky, p.pad_h, p.stride_h, qy, ry);
            vx_grid_tap(kx, p.pad_w, p.stride_w, qx, rx);
            const int phase = (rz * p.stride_h + ry) * p.stride_w + rx;
            const int offset = phase * tp.grid_voxels + (qz * tp.grid_h + qy) * tp.grid_w + qx;
            x_shift[j] = offset % VX_TMA_GRID_CHUNK_VOXELS;
            x_offset[j] = offset - x_shift[j];
        }
        dy_c0 = blockIdx.y * DY_ROWS;
        v = step * T::BK;
    }

    __device__ __forceinline__ unsigned stage_bytes() const { return bytes; }

    __device__ __forceinline__ void load(unsigned char* a_tile, unsigned char* b_tile,
                                         unsigned long long* full) {
        unsigned char* x_tile = T::SPLIT_N ? b_tile : a_tile;
        unsigned char* dy_tile = T::SPLIT_N ? a_tile : b_tile;
#pragma unroll
        for (int j = 0; j < X_BOXES; ++j)
            if (x_c[j] >= 0)
                vx_tma_load_5d(x_tile + j * BLOCK_BYTES, &tp.a, v + x_offset[j], x_c[j],
                               x_shift[j], 0, 0, full);
        vx_tma_load_5d(dy_tile, &tp.b, v, dy_c0, 0, 0, 0, full);
        v += T::BK;
    }
};

template <class T>
__device__ __forceinline__ void vx_tma_backward_weights_kmajor(const Conv3dTmaParams& tp,
                                                               const float*, float* dw) {
    const Conv3dParams& p = tp.conv;
    const int steps = (tp.grid_voxels + T::BK - 1) / T::BK;
    const int per_split = p.split_len / T::BK;
    const int begin = blockIdx.z * per_split;
    const int end = begin + per_split < steps ? begin + per_split : steps;
    VxTmaBackwardWeightsKMajor<T> ld(tp, begin);
    VxPipeAcc<T> acc = {};
    T::KMajorLoop::template run<T>(ld, end - begin, acc);
    vx_store_weights<T>(acc, p, dw);
}

// The channel-major pack of tf32 backward weights on wgmma (ConvChannelMajorPackParams):
// element v of channel ch's row of copy s is voxel v + s of the phases' grids, in order. A
// block transposes 64 voxels by 32 channels through shared memory, so that both its reads
// (a voxel's channels) and its writes (a channel's voxels) are rows. It reads the 64 +
// shifts - 1 voxels its copies span once and writes every copy from them. A warp splits
// only its first voxel's index and steps through its run of voxels with carries: the
// divisions of a split per voxel made the pack bound by integer instructions.
constexpr int VX_CHANNEL_MAJOR_VOXELS = 64, VX_CHANNEL_MAJOR_CHANNELS = 32;
constexpr int VX_CHANNEL_MAJOR_THREADS = 256;
extern "C" __global__ void __launch_bounds__(VX_CHANNEL_MAJOR_THREADS)
    conv3d_pack_channel_major_tf32(const ConvChannelMajorPackParams p,
                                   const float* __restrict__ src, unsigned* __restrict__ dst) {
    constexpr int TV = VX_CHANNEL_MAJOR_VOXELS, TC = VX_CHANNEL_MAJOR_CHANNELS;
    constexpr int WARPS = VX_CHANNEL_MAJOR_THREADS / 32;
    constexpr int MAX_ROWS = TV + VX_TMA_GRID_CHUNK_VOXELS - 1;
    constexpr int WARP_ROWS = (MAX_ROWS + WARPS - 1) / WARPS;
    VX_SHARED(float, tile, [MAX_ROWS][TC + 1]);
    const ConvBorderPackParams& g = p.grid;
    const int voxels = p.phase_len * p.stride_d * p.stride_h * p.stride_w;
    const int v0 = static_cast<int>(blockIdx.x) * TV, c0 = static_cast<int>(blockIdx.y) * TC;
    const int lane = static_cast<int>(threadIdx.x) % 32, warp = static_cast<int>(threadIdx.x) / 32;
    const int c = c0 + lane;
    const int rows = TV + p.shifts - 1;
    const int first = warp * WARP_ROWS;
    const int phase = (v0 + first) / p.phase_len;
    int nn, z, y, x, rz, ry, rx;
    vx_split_voxel(v0 + first - phase * p.phase_len, g.out_d, g.out_h, g.out_w, nn, z, y, x);
    vx_split3(phase, p.stride_h, p.stride_w, rz, ry, rx);
    for (int r = first; r < first + WARP_ROWS && r < rows; ++r) {
        float value = 0.0f;
        if (v0 + r < voxels && c < g.c) {
            const int sz = p.stride_d * (z - g.before_d) + rz;
            const int sy = p.stride_h * (y - g.before_h) + ry;
            const int sx = p.stride_w * (x - g.before_w) + rx;
            if (vx_inside(sz, sy, sx, g.d, g.h, g.w))
                value = src[(((static_cast<size_t>(nn) * g.d + sz) * g.h + sy) * g.w + sx) * g.c +
                            c];
        }
        tile[r][lane] = value;
        vx_advance_voxel(nn, z, y, x, 0, 0, 0, 1, g.out_d, g.out_h, g.out_w);
        if (nn == g.n) {
            // The next phase's grids (past the last phase, masked by `voxels`).
            int wrapped = 0;
            nn = 0;
            vx_advance_voxel(wrapped, rz, ry, rx, 0, 0, 0, 1, p.stride_d, p.stride_h, p.stride_w);
        }
    }
    __syncthreads();
    for (int s = 0; s < p.shifts; ++s)
        for (int r = warp; r < TC; r += WARPS) {
            const int ch = c0 + r;
            if (ch >= g.c) break;
            unsigned* row = dst + (static_cast<size_t>(s) * g.c + ch) * g.padded;
#pragma unroll
            for (int i = 0; i < TV; i += 32) {
                const int v = v0 + i + lane;
                if (v < g.padded) row[v] = vx_tf32(tile[i + lane + s][r]);
            }
        }
}
VX_EMU_ENTRY(conv3d_pack_channel_major_tf32,
             (const ConvChannelMajorPackParams p, const float* src, unsigned* dst),
             (p, src, dst))

// A convolution pass on the tensor memory accelerator (vx_tma_forward,
// vx_tma_backward_data, vx_tma_backward_weights): (params, bias or null, out).
#define VX_CONV_TMA_KERNEL(name, pass, Tile)                                                 \
    extern "C" __global__ void __launch_bounds__(Tile::THREADS, 1)                           \
        name(const __grid_constant__ Conv3dTmaParams p, const float* __restrict__ bias,      \
             float* __restrict__ out) {                                                      \
        pass<Tile>(p, bias, out);                                                            \
    }

VX_CONV_TMA_KERNEL(conv3d_fwd_bf16_tma128, vx_tma_forward, VxWgmmaTma128<VxBf16>)
VX_CONV_TMA_KERNEL(conv3d_fwd_bf16_tma64, vx_tma_forward, VxWgmmaTma64<VxBf16>)
VX_CONV_TMA_KERNEL(conv3d_fwd_bf16_tma256, vx_tma_forward, VxWgmmaTma256<VxBf16>)
VX_CONV_TMA_KERNEL(conv3d_fwd_tf32_tma128, vx_tma_forward, VxWgmmaTma128<VxTf32>)
VX_CONV_TMA_KERNEL(conv3d_fwd_tf32_tma64, vx_tma_forward, VxWgmmaTma64<VxTf32>)
VX_CONV_TMA_KERNEL(conv3d_fwd_tf32_tma256, vx_tma_forward, VxWgmmaTma256<VxTf32>)
VX_CONV_TMA_KERNEL(conv3d_bwd_data_bf16_tma128, vx_tma_backward_data, VxWgmmaTma128<VxBf16>)
VX_CONV_TMA_KERNEL(conv3d_bwd_data_bf16_tma64, vx_tma_backward_data, VxWgmmaTma64<VxBf16>)
VX_CONV_TMA_KERNEL(conv3d_bwd_data_bf16_tma256, vx_tma_backward_data, VxWgmmaTma256<VxBf16>)
VX_CONV_TMA_KERNEL(conv3d_bwd_data_tf32_tma128, vx_tma_backward_data, VxWgmmaTma128<VxTf32>)
VX_CONV_TMA_KERNEL(conv3d_bwd_data_tf32_tma64, vx_tma_backward_data, VxWgmmaTma64<VxTf32>)
VX_CONV_TMA_KERNEL(conv3d_bwd_data_tf32_tma256, vx_tma_backward_data, VxWgmmaTma256<VxTf32>)
VX_CONV_TMA_KERNEL(conv3d_fwd_bf16_tma128s64, vx_tma_forward, VxWgmmaTma128Sw64<VxBf16>)
VX_CONV_TMA_KERNEL(conv3d_fwd_bf16_tma64s64, vx_tma_forward, VxWgmmaTma64Sw64<VxBf16>)
VX_CONV_TMA_KERNEL(conv3d_bwd_data_bf16_tma128s64, vx_tma_backward_data,
                   VxWgmmaTma128Sw64<VxBf16>)
VX_CONV_TMA_KERNEL(conv3d_bwd_data_bf16_tma64s64, vx_tma_backward_data,
                   VxWgmmaTma64Sw64<VxBf16>)
VX_CONV_TMA_KERNEL(conv3d_fwd_bf16_tmacols, vx_tma_forward, VxWgmmaTmaCols<VxBf16>)
VX_CONV_TMA_KERNEL(conv3d_fwd_tf32_tmacols, vx_tma_forward, VxWgmmaTmaCols<VxTf32>)
VX_CONV_TMA_KERNEL(conv3d_fwd_bf16_tmacolss64, vx_tma_forward, VxWgmmaTmaColsSw64<VxBf16>)
VX_CONV_TMA_KERNEL(conv3d_bwd_data_bf16_tmacols, vx_tma_backward_data, VxWgmmaTmaCols<VxBf16>)
VX_CONV_TMA_KERNEL(conv3d_bwd_data_tf32_tmacols, vx_tma_backward_data, VxWgmmaTmaCols<VxTf32>)
VX_CONV_TMA_KERNEL(conv3d_bwd_data_bf16_tmacolss64, vx_tma_backward_data,
                   VxWgmmaTmaColsSw64<VxBf16>)
VX_CONV_TMA_KERNEL(conv3d_fwd_bf16_tmacolsp, vx_tma_forward_loop, VxWgmmaTmaCols<VxBf16>)
VX_CONV_TMA_KERNEL(conv3d_fwd_tf32_tmacolsp, vx_tma_forward_loop, VxWgmmaTmaCols<VxTf32>)
VX_CONV_TMA_KERNEL(conv3d_fwd_bf16_tmacolss64p, vx_tma_forward_loop, VxWgmmaTmaColsSw64<VxBf16>)
VX_CONV_TMA_KERNEL(conv3d_bwd_data_bf16_tmacolsp, vx_tma_backward_data_loop,
                   VxWgmmaTmaCols<VxBf16>)
VX_CONV_TMA_KERNEL(conv3d_bwd_data_tf32_tmacolsp, vx_tma_backward_data_loop,
                   VxWgmmaTmaCols<VxTf32>)
VX_CONV_TMA_KERNEL(conv3d_bwd_data_bf16_tmacolss64p, vx_tma_backward_data_loop,
                   VxWgmmaTmaColsSw64<VxBf16>)
VX_CONV_TMA_KERNEL(conv3d_bwd_weight_bf16_tma128, vx_tma_backward_weights, VxWgmmaTma128<VxBf16>)
VX_CONV_TMA_KERNEL(conv3d_bwd_weight_bf16_tma64, vx_tma_backward_weights, VxWgmmaTma64<VxBf16>)
VX_CONV_TMA_KERNEL(conv3d_bwd_weight_bf16_tma256, vx_tma_backward_weights, VxWgmmaTma256<VxBf16>)
VX_CONV_TMA_KERNEL(conv3d_bwd_weight_bf16_tmacols, vx_tma_backward_weights,
                   VxWgmmaTmaCols<VxBf16>)
VX_CONV_TMA_KERNEL(conv3d_bwd_weight_tf32_tma128, vx_tma_backward_weights_kmajor,
                   VxWgmmaTma128<VxTf32>)
VX_CONV_TMA_KERNEL(conv3d_bwd_weight_tf32_tma64, vx_tma_backward_weights_kmajor,
                   VxWgmmaTma64<VxTf32>)
VX_CONV_TMA_KERNEL(conv3d_bwd_weight_tf32_tma256, vx_tma_backward_weights_kmajor,
                   VxWgmmaTma256<VxTf32>)
VX_CONV_TMA_KERNEL(conv3d_bwd_weight_tf32_tmacols, vx_tma_backward_weights_kmajor,
                   VxWgmmaTmaCols<VxTf32>)

VX_CONV_TC_KERNEL(conv3d_fwd_bf16_wg128, vx_pipe_forward, VxWgmmaN128<VxBf16>)
VX_CONV_TC_KERNEL(conv3d_fwd_bf16_wg64, vx_pipe_forward, VxWgmmaN64<VxBf16>)
VX_CONV_TC_KERNEL(conv3d_bwd_data_bf16_wg128, vx_pipe_backward_data, VxWgmmaN128<VxBf16>)
VX_CONV_TC_KERNEL(conv3d_bwd_data_bf16_wg64, vx_pipe_backward_data, VxWgmmaN64<VxBf16>)
VX_CONV_TC_KERNEL(conv3d_fwd_bf16_wg32, vx_pipe_forward, VxWgmmaN32<VxBf16>)
VX_CONV_TC_KERNEL(conv3d_bwd_data_bf16_wg32, vx_pipe_backward_data, VxWgmmaN32<VxBf16>)
VX_CONV_TC_KERNEL(conv3d_bwd_weight_bf16_wg128, vx_pipe_backward_weights, VxWgmmaN128<VxBf16>)
VX_CONV_TC_KERNEL(conv3d_bwd_weight_bf16_wg64, vx_pipe_backward_weights, VxWgmmaN64<VxBf16>)
VX_CONV_TC_KERNEL(conv3d_fwd_bf16_wg64x2, vx_pipe_forward, VxWgmmaN64Pair<VxBf16>)
VX_CONV_TC_KERNEL(conv3d_bwd_data_bf16_wg64x2, vx_pipe_backward_data, VxWgmmaN64Pair<VxBf16>)
VX_CONV_TC_KERNEL(conv3d_bwd_weight_bf16_wg64x2, vx_pipe_backward_weights, VxWgmmaN64Pair<VxBf16>)
VX_CONV_TC_KERNEL(conv3d_fwd_bf16_wg256, vx_pipe_forward, VxWgmmaM256<VxBf16>)
VX_CONV_TC_KERNEL(conv3d_bwd_data_bf16_wg256, vx_pipe_backward_data, VxWgmmaM256<VxBf16>)
VX_CONV_TC_KERNEL(conv3d_bwd_weight_bf16_wg256, vx_pipe_backward_weights, VxWgmmaM256<VxBf16>)
VX_CONV_TC_KERNEL(conv3d_fwd_bf16_ws128, vx_pipe_forward, VxWgmmaWs128<VxBf16>)
VX_CONV_TC_KERNEL(conv3d_bwd_data_bf16_ws128, vx_pipe_backward_data, VxWgmmaWs128<VxBf16>)
VX_CONV_TC_KERNEL(conv3d_bwd_weight_bf16_ws128, vx_pipe_backward_weights, VxWgmmaWs128<VxBf16>)
VX_CONV_TC_KERNEL(conv3d_fwd_bf16_ws64, vx_pipe_forward, VxWgmmaWs64<VxBf16>)
VX_CONV_TC_KERNEL(conv3d_bwd_data_bf16_ws64, vx_pipe_backward_data, VxWgmmaWs64<VxBf16>)
VX_CONV_TC_KERNEL(conv3d_bwd_weight_bf16_ws64, vx_pipe_backward_weights, VxWgmmaWs64<VxBf16>)
VX_CONV_TC_KERNEL(conv3d_fwd_tf32_wg128, vx_pipe_forward, VxWgmmaN128<VxTf32>)
VX_CONV_TC_KERNEL(conv3d_fwd_tf32_wg64, vx_pipe_forward, VxWgmmaN64<VxTf32>)
VX_CONV_TC_KERNEL(conv3d_bwd_data_tf32_wg128, vx_pipe_backward_data, VxWgmmaN128<VxTf32>)
VX_CONV_TC_KERNEL(conv3d_bwd_data_tf32_wg64, vx_pipe_backward_data, VxWgmmaN64<VxTf32>)
VX_CONV_TC_KERNEL(conv3d_fwd_tf32_wg32, vx_pipe_forward, VxWgmmaN32<VxTf32>)
VX_CONV_TC_KERNEL(conv3d_bwd_data_tf32_wg32, vx_pipe_backward_data, VxWgmmaN32<VxTf32>)
VX_CONV_TC_KERNEL(conv3d_fwd_tf32_wg64x2, vx_pipe_forward, VxWgmmaN64Pair<VxTf32>)
VX_CONV_TC_KERNEL(conv3d_bwd_data_tf32_wg64x2, vx_pipe_backward_data, VxWgmmaN64Pair<VxTf32>)
VX_CONV_TC_KERNEL(conv3d_fwd_tf32_wg256, vx_pipe_forward, VxWgmmaM256<VxTf32>)
VX_CONV_TC_KERNEL(conv3d_bwd_data_tf32_wg256, vx_pipe_backward_data, VxWgmmaM256<VxTf32>)
VX_CONV_TC_KERNEL(conv3d_fwd_tf32_ws128, vx_pipe_forward, VxWgmmaWs128<VxTf32>)
VX_CONV_TC_KERNEL(conv3d_bwd_data_tf32_ws128, vx_pipe_backward_data, VxWgmmaWs128<VxTf32>)
VX_CONV_TC_KERNEL(conv3d_fwd_tf32_ws64, vx_pipe_forward, VxWgmmaWs64<VxTf32>)
VX_CONV_TC_KERNEL(conv3d_bwd_data_tf32_ws64, vx_pipe_backward_data, VxWgmmaWs64<VxTf32>)

// One block of tile T computes out (128 x BN, row-major) = a b^T over one reduction step:
// a (128 x BK) and b (BN x BK) row-major f32, rounded here to T's format, stored in one
// stage k-major (or mn-major when MN_MAJOR) from a 1024-byte boundary of dynamic shared
// memory (reserve 1024 + 256 * 128 bytes), multiplied by both warpgroups' K_STEPS wgmmas as
// the main loop issues them, and stored as the kernels store. Checks descriptors, swizzles,
// K advances, warpgroup slices and the D fragment layout against the harness on a GPU.
template <class T, bool MN_MAJOR>
__device__ __forceinline__ void vx_wgmma_probe(const float* a, const float* b, float* out) {
    constexpr int BYTES = static_cast<int>(sizeof(typename T::Elem)), K = T::BK;
    unsigned char* a_tile = vx_wgmma_shared();
    unsigned char* b_tile = a_tile + T::A_BYTES;
    for (int i = threadIdx.x; i < (T::BM + T::BN) * K; i += T::THREADS) {
        const bool in_a = i < T::BM * K;
        const int row = (in_a ? i : i - T::BM * K) / K, k = i % K;
        const float v = in_a ? a[row * K + k] : b[row * K + k];
        int offset =
            T::operand_offset(in_a ? T::BM : T::BN, row, k * BYTES / 16) + k * BYTES % 16;
        if constexpr (MN_MAJOR) {
            offset = (in_a ? T::template mn_major_offset<T::BM / 8>(k, row / 8)
                           : T::template mn_major_offset<T::BN / 8>(k, row / 8)) +
                     row % 8 * BYTES;
        }
        unsigned char* at = (in_a ? a_tile : b_tile) + offset;
        if constexpr (BYTES == 4) {
            *reinterpret_cast<unsigned*>(at) = vx_tf32(v);
        } else {
            *reinterpret_cast<VxBf16Bits*>(at) = static_cast<VxBf16Bits>(vx_bf16x2(v, 0.0f));
        }
    }
    vx_fence_proxy_async_shared();
    __syncthreads();
    VxPipeAcc<T> acc = {};
    float(&d)[T::BN / 2] = reinterpret_cast<float(&)[T::BN / 2]>(acc[0]);
    vx_wgmma_hold(d);
    vx_wgmma_fence();
    unsigned a_low, b_low;
    vx_wgmma_stage_descs<T, MN_MAJOR>(vx_wgmma_group<T>(), vx_shared_address(a_tile),
                                      vx_shared_address(b_tile), a_low, b_low);
#pragma unroll
    for (int k = 0; k < T::K_STEPS; ++k) vx_wgmma_step<T, MN_MAJOR>(d, a_low, b_low, k);
    vx_wgmma_commit();
    vx_wgmma_wait<0>();
    vx_wgmma_hold(d);
    vx_pipe_store<T>(acc, T::BM, T::BN, [](int, int r) { return r; }, nullptr, out);
}

#define VX_WGMMA_PROBE(name, Tile, mn_major)                                               \
    extern "C" __global__ void __launch_bounds__(Tile::THREADS)                              \
        name(const float* __restrict__ a, const float* __restrict__ b,                       \
             float* __restrict__ out) {                                                      \
        vx_wgmma_probe<Tile, mn_major>(a, b, out);                                           \
    }                                                                                        \
    VX_EMU_ENTRY(name, (const float* a, const float* b, float* out), (a, b, out))

VX_WGMMA_PROBE(wgmma_probe_bf16_n128, VxWgmmaN128<VxBf16>, false)
VX_WGMMA_PROBE(wgmma_probe_bf16_n64, VxWgmmaN64<VxBf16>, false)
VX_WGMMA_PROBE(wgmma_probe_bf16_n32, VxWgmmaN32<VxBf16>, false)
VX_WGMMA_PROBE(wgmma_probe_tf32_n128, VxWgmmaN128<VxTf32>, false)
VX_WGMMA_PROBE(wgmma_probe_tf32_n64, VxWgmmaN64<VxTf32>, false)
VX_WGMMA_PROBE(wgmma_probe_tf32_n32, VxWgmmaN32<VxTf32>, false)
VX_WGMMA_PROBE(wgmma_probe_bf16_mn_n128, VxWgmmaN128<VxBf16>, true)
VX_WGMMA_PROBE(wgmma_probe_bf16_mn_n64, VxWgmmaN64<VxBf16>, true)
VX_WGMMA_PROBE(wgmma_probe_bf16_sw64_n128, VxWgmmaSw64Of<VxWgmmaN128<VxBf16>>, false)
VX_WGMMA_PROBE(wgmma_probe_bf16_sw64_n64, VxWgmmaSw64Of<VxWgmmaN64<VxBf16>>, false)

// The tensor memory accelerator's copy of the box of `map` at (c0 .. c4) into shared memory
// at a 1024-byte boundary (reserve 1024 + bytes), `bytes` (the box's, a multiple of 4) armed
// on an mbarrier, then those shared bytes as the copy left them (zero fill and swizzle
// included) to `out`. Checks the harness's twin of the copies against a GPU's: which element
// lands where, which are zeros, and that a box wholly outside the tensor still completes
// its bytes (else the wait traps).
extern "C" __global__ void __launch_bounds__(128)
    tma_probe(const __grid_constant__ VxTensorMap map, int c0, int c1, int c2, int c3, int c4,
              int bytes, unsigned* __restrict__ out) {
    VX_SHARED(unsigned long long, landed, );
    unsigned char* smem = vx_wgmma_shared();
    if (threadIdx.x == 0) {
        vx_mbar_init(&landed, 1);
        vx_fence_mbarrier_init();
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        vx_mbar_arrive_expect_tx(&landed, static_cast<unsigned>(bytes));
        vx_tma_load_5d(smem, &map, c0, c1, c2, c3, c4, &landed);
    }
    vx_mbar_wait(&landed, 0);
    const unsigned* words = reinterpret_cast<const unsigned*>(smem);
    for (int i = threadIdx.x; i < bytes / 4; i += blockDim.x) out[i] = words[i];
}

#ifndef __CUDACC__
// The harness entry of tma_probe, the map by pointer (Rust passes no 128-byte-aligned
// struct by value across the C boundary).
extern "C" int emu_tma_probe(const EmuDims* d, const VxTensorMap* map, int c0, int c1, int c2,
                             int c3, int c4, int bytes, unsigned* out) {
    return emu_launch(*d, tma_probe, *map, c0, c1, c2, c3, c4, bytes, out);
}

// The harness entry for every conv kernel of this file, by name, on packed operands (as
// emu_conv3d_pipe).
extern "C" int emu_conv3d_wgmma(const char* name, const EmuDims* d, const Conv3dParams p,
                                const void* a, const void* b, const float* bias, float* out) {
    static const VxEmuConv<VxBf16Bits> bf16[] = {
        {"conv3d_fwd_bf16_wg128", conv3d_fwd_bf16_wg128},
        {"conv3d_fwd_bf16_wg64", conv3d_fwd_bf16_wg64},
        {"conv3d_bwd_data_bf16_wg128", conv3d_bwd_data_bf16_wg128},
        {"conv3d_bwd_data_bf16_wg64", conv3d_bwd_data_bf16_wg64},
        {"conv3d_fwd_bf16_wg32", conv3d_fwd_bf16_wg32},
        {"conv3d_bwd_data_bf16_wg32", conv3d_bwd_data_bf16_wg32},
        {"conv3d_bwd_weight_bf16_wg128", conv3d_bwd_weight_bf16_wg128},
        {"conv3d_bwd_weight_bf16_wg64", conv3d_bwd_weight_bf16_wg64},
        {"conv3d_fwd_bf16_wg64x2", conv3d_fwd_bf16_wg64x2},
        {"conv3d_bwd_data_bf16_wg64x2", conv3d_bwd_data_bf16_wg64x2},
        {"conv3d_bwd_weight_bf16_wg64x2", conv3d_bwd_weight_bf16_wg64x2},
        {"conv3d_fwd_bf16_wg256", conv3d_fwd_bf16_wg256},
        {"conv3d_bwd_data_bf16_wg256", conv3d_bwd_data_bf16_wg256},
        {"conv3d_bwd_weight_bf16_wg256", conv3d_bwd_weight_bf16_wg256},
        {"conv3d_fwd_bf16_ws128", conv3d_fwd_bf16_ws128},
        {"conv3d_bwd_data_bf16_ws128", conv3d_bwd_data_bf16_ws128},
        {"conv3d_bwd_weight_bf16_ws128", conv3d_bwd_weight_bf16_ws128},
        {"conv3d_fwd_bf16_ws64", conv3d_fwd_bf16_ws64},
        {"conv3d_bwd_data_bf16_ws64", conv3d_bwd_data_bf16_ws64},
        {"conv3d_bwd_weight_bf16_ws64", conv3d_bwd_weight_bf16_ws64},
    };
    static const VxEmuConv<unsigned> tf32[] = {
        {"conv3d_fwd_tf32_wg128", conv3d_fwd_tf32_wg128},
        {"conv3d_fwd_tf32_wg64", conv3d_fwd_tf32_wg64},
        {"conv3d_bwd_data_tf32_wg128", conv3d_bwd_data_tf32_wg128},
        {"conv3d_bwd_data_tf32_wg64", conv3d_bwd_data_tf32_wg64},
        {"conv3d_fwd_tf32_wg32", conv3d_fwd_tf32_wg32},
        {"conv3d_bwd_data_tf32_wg32", conv3d_bwd_data_tf32_wg32},
        {"conv3d_fwd_tf32_wg64x2", conv3d_fwd_tf32_wg64x2},
        {"conv3d_bwd_data_tf32_wg64x2", conv3d_bwd_data_tf32_wg64x2},
        {"conv3d_fwd_tf32_wg256", conv3d_fwd_tf32_wg256},
        {"conv3d_bwd_data_tf32_wg256", conv3d_bwd_data_tf32_wg256},
        {"conv3d_fwd_tf32_ws128", conv3d_fwd_tf32_ws128},
        {"conv3d_bwd_data_tf32_ws128", conv3d_bwd_data_tf32_ws128},
        {"conv3d_fwd_tf32_ws64", conv3d_fwd_tf32_ws64},
        {"conv3d_bwd_data_tf32_ws64", conv3d_bwd_data_tf32_ws64},
    };
    const int r = vx_emu_conv(bf16, name, d, p, a, b, bias, out);
    return r != -2 ? r : vx_emu_conv(tf32, name, d, p, a, b, bias, out);
}

// The harness entry of the tensor-memory-accelerator kernels, by name: the maps in `p` from
// emu_tensor_map_encode_tiled over the packed operands. 0, -1 (emu_last_error()), or -2 for
// no such kernel.
extern "C" int emu_conv3d_tma(const char* name, const EmuDims* d, const Conv3dTmaParams* p,
                              const float* bias, float* out) {
    static const struct {
        const char* name;
        void (*kernel)(Conv3dTmaParams, const float*, float*);
    } kernels[] = {
        {"conv3d_fwd_bf16_tma128", conv3d_fwd_bf16_tma128},
        {"conv3d_fwd_bf16_tma64", conv3d_fwd_bf16_tma64},
        {"conv3d_fwd_bf16_tma256", conv3d_fwd_bf16_tma256},
        {"conv3d_fwd_tf32_tma128", conv3d_fwd_tf32_tma128},
        {"conv3d_fwd_tf32_tma64", conv3d_fwd_tf32_tma64},
        {"conv3d_fwd_tf32_tma256", conv3d_fwd_tf32_tma256},
        {"conv3d_bwd_data_bf16_tma128", conv3d_bwd_data_bf16_tma128},
        {"conv3d_bwd_data_bf16_tma64", conv3d_bwd_data_bf16_tma64},
        {"conv3d_bwd_data_bf16_tma256", conv3d_bwd_data_bf16_tma256},
        {"conv3d_bwd_data_tf32_tma128", conv3d_bwd_data_tf32_tma128},
        {"conv3d_bwd_data_tf32_tma64", conv3d_bwd_data_tf32_tma64},
        {"conv3d_bwd_data_tf32_tma256", conv3d_bwd_data_tf32_tma256},
        {"conv3d_fwd_bf16_tma128s64", conv3d_fwd_bf16_tma128s64},
        {"conv3d_fwd_bf16_tma64s64", conv3d_fwd_bf16_tma64s64},
        {"conv3d_bwd_data_bf16_tma128s64", conv3d_bwd_data_bf16_tma128s64},
        {"conv3d_bwd_data_bf16_tma64s64", conv3d_bwd_data_bf16_tma64s64},
        {"conv3d_fwd_bf16_tmacols", conv3d_fwd_bf16_tmacols},
        {"conv3d_fwd_tf32_tmacols", conv3d_fwd_tf32_tmacols},
        {"conv3d_fwd_bf16_tmacolss64", conv3d_fwd_bf16_tmacolss64},
        {"conv3d_bwd_data_bf16_tmacols", conv3d_bwd_data_bf16_tmacols},
        {"conv3d_bwd_data_tf32_tmacols", conv3d_bwd_data_tf32_tmacols},
        {"conv3d_bwd_data_bf16_tmacolss64", conv3d_bwd_data_bf16_tmacolss64},
        {"conv3d_fwd_bf16_tmacolsp", conv3d_fwd_bf16_tmacolsp},
        {"conv3d_fwd_tf32_tmacolsp", conv3d_fwd_tf32_tmacolsp},
        {"conv3d_fwd_bf16_tmacolss64p", conv3d_fwd_bf16_tmacolss64p},
        {"conv3d_bwd_data_bf16_tmacolsp", conv3d_bwd_data_bf16_tmacolsp},
        {"conv3d_bwd_data_tf32_tmacolsp", conv3d_bwd_data_tf32_tmacolsp},
        {"conv3d_bwd_data_bf16_tmacolss64p", conv3d_bwd_data_bf16_tmacolss64p},
        {"conv3d_bwd_weight_bf16_tma128", conv3d_bwd_weight_bf16_tma128},
        {"conv3d_bwd_weight_bf16_tma64", conv3d_bwd_weight_bf16_tma64},
        {"conv3d_bwd_weight_bf16_tma256", conv3d_bwd_weight_bf16_tma256},
        {"conv3d_bwd_weight_bf16_tmacols", conv3d_bwd_weight_bf16_tmacols},
        {"conv3d_bwd_weight_tf32_tma128", conv3d_bwd_weight_tf32_tma128},
        {"conv3d_bwd_weight_tf32_tma64", conv3d_bwd_weight_tf32_tma64},
        {"conv3d_bwd_weight_tf32_tma256", conv3d_bwd_weight_tf32_tma256},
        {"conv3d_bwd_weight_tf32_tmacols", conv3d_bwd_weight_tf32_tmacols},
    };
    for (const auto& k : kernels)
        if (!std::strcmp(k.name, name)) return emu_launch(*d, k.kernel, *p, bias, out);
    return -2;
}

// cuTensorMapEncodeTiled for the harness (the same arguments, the driver's enum values):
// checks what the driver's documentation requires, and what the harness's copies model
// (no interleave; the 128- and 64-byte swizzles only on rows of exactly 128 and 64 bytes;
// zero fill), then keeps the arguments in `map` for vx_tma_load_5d. 0, or 1
// (CUDA_ERROR_INVALID_VALUE).
extern "C" int emu_tensor_map_encode_tiled(VxTensorMap* map, int data_type, unsigned rank,
                                           const void* address, const unsigned long long* dims,
                                           const unsigned long long* strides,
                                           const unsigned* box, const unsigned* element_strides,
                                           int interleave, int swizzle, int l2_promotion,
                                           int oob_fill) {
    // Element bytes of CU_TENSOR_MAP_DATA_TYPE_UINT8 .. TFLOAT32_FTZ.
    static const unsigned char elem_bytes[] = {1, 2, 4, 4, 8, 8, 2, 4, 8, 2, 4, 4, 4};
    vx_tma_emu::Map m = {};
    const auto at = reinterpret_cast<unsigned long long>(address);
    bool ok = reinterpret_cast<unsigned long long>(map) % 64 == 0 && data_type >= 0 &&
              data_type < 13 && rank >= 1 && rank <= 5 && at % 16 == 0 && interleave == 0 &&
              (swizzle == 0 || swizzle == vx_tma_emu::SWIZZLE_64B ||
               swizzle == vx_tma_emu::SWIZZLE_128B) &&
              l2_promotion >= 0 && l2_promotion <= 3 && oob_fill == 0;
    if (!ok) return 1;
    m.mark = vx_tma_emu::MARK;
    m.rank = static_cast<unsigned char>(rank);
    m.elem_bytes = elem_bytes[data_type];
    m.swizzle = static_cast<unsigned char>(swizzle);
    m.base = static_cast<const unsigned char*>(address);
    for (unsigned i = 0; i < 5; ++i) {
        const bool used = i < rank;
        ok = ok && (!used || (dims[i] >= 1 && dims[i] <= (1ull << 32) && box[i] >= 1 &&
                              box[i] <= 256 && element_strides[i] >= 1 &&
                              element_strides[i] <= 8));
        m.dims[i] = used ? dims[i] : 1;
        m.box[i] = static_cast<unsigned short>(used && ok ? box[i] : 1);
        m.element_strides[i] = static_cast<unsigned char>(used && ok ? element_strides[i] : 1);
        if (i >= 1) {
            m.strides[i - 1] = used ? strides[i - 1] : 0;
            ok = ok && (!used || (strides[i - 1] % 16 == 0 && strides[i - 1] < (1ull << 40)));
        }
    }
    const unsigned inner = m.box[0] * m.elem_bytes;
    ok = ok && inner % 16 == 0 &&
         (swizzle == 0 || inner == (swizzle == vx_tma_emu::SWIZZLE_128B ? 128u : 64u));
    if (!ok) return 1;
    std::memset(map, 0, sizeof *map);
    std::memcpy(map, &m, sizeof m);
    return 0;
}
#endif
