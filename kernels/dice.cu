// Fused soft-Dice sums, as DiceSumsKernel in src/tensor_ops/dice_sums: per row and channel,
// sum(p t), sum(p) and sum(t) in one pass over p and t (f64 partials per block, combined by
// a fixed tree inside the block and added in split order by a second, small launch: no
// atomics, the same bits on every run); and the gradient dp = g_pt t + g_p in one pass.
#include "common.h"

// The voxel range and channel of this thread (see DiceKernelParams). `active` is false for
// the threads beyond the last whole group and for lanes past the last channel.
struct DiceLane {
    unsigned long long first, end, channel, row;
    unsigned group, groups;
    bool active;
};

__device__ __forceinline__ DiceLane vx_dice_lane(const DiceKernelParams& p) {
    DiceLane l;
    const unsigned cw = p.chunk_channels;
    l.groups = VX_DICE_THREADS / cw;
    l.group = threadIdx.x / cw;
    l.channel = static_cast<unsigned long long>(blockIdx.z) * cw + threadIdx.x % cw;
    l.row = blockIdx.y;
    const unsigned long long begin = static_cast<unsigned long long>(blockIdx.x) * p.voxels_per_split;
    l.end = begin + p.voxels_per_split < p.row_voxels ? begin + p.voxels_per_split : p.row_voxels;
    l.first = begin + l.group;
    l.active = l.group < l.groups && l.channel < p.channels;
    return l;
}

// partial (see params_dice.h) = this block's sums per channel of its chunk.
extern "C" __global__ void __launch_bounds__(VX_DICE_THREADS)
    dice_sums_partial(const DiceKernelParams p, const float* __restrict__ prob,
                      const float* __restrict__ target, double* __restrict__ partial) {
    VX_SHARED(double, sums, [3][VX_DICE_THREADS]);
    const DiceLane l = vx_dice_lane(p);
    double acc[3] = {0.0, 0.0, 0.0};
    if (l.active) {
        const unsigned long long base = l.row * p.row_voxels;
        for (unsigned long long v = l.first; v < l.end; v += l.groups) {
            const unsigned long long i = (base + v) * p.channels + l.channel;
            const double pv = static_cast<double>(prob[i]), tv = static_cast<double>(target[i]);
            acc[0] += pv * tv;
            acc[1] += pv;
            acc[2] += tv;
        }
    }
#pragma unroll
    for (int j = 0; j < 3; ++j) sums[j][threadIdx.x] = acc[j];
    __syncthreads();
    // A fixed tree over the groups of each lane: group g adds group g + half.
    unsigned half = 1;
    while (2 * half < l.groups) half *= 2;
    for (; half > 0; half /= 2) {
        if (l.group < half && l.group + half < l.groups) {
#pragma unroll
            for (int j = 0; j < 3; ++j)
                sums[j][threadIdx.x] += sums[j][threadIdx.x + half * p.chunk_channels];
        }
        __syncthreads();
    }
    if (l.group == 0 && l.channel < p.channels) {
#pragma unroll
        for (int j = 0; j < 3; ++j)
            partial[((l.row * p.channels + l.channel) * 3 + j) * p.splits + blockIdx.x] =
                sums[j][threadIdx.x];
    }
}
VX_EMU_ENTRY(dice_sums_partial,
             (const DiceKernelParams p, const float* prob, const float* target, double* partial),
             (p, prob, target, partial))

// out[q] = the sum of the `splits` partials of output q, in split order.
extern "C" __global__ void __launch_bounds__(VX_DICE_THREADS)
    dice_sums_finish(const DiceKernelParams p, const double* __restrict__ partial,
                     float* __restrict__ out) {
    const unsigned long long outputs = p.rows * p.channels * 3;
    for (unsigned long long q = vx_thread_index(); q < outputs; q += vx_thread_stride()) {
        double s = 0.0;
        for (unsigned k = 0; k < p.splits; ++k) s += partial[q * p.splits + k];
        out[q] = static_cast<float>(s);
    }
}
VX_EMU_ENTRY(dice_sums_finish, (const DiceKernelParams p, const double* partial, float* out),
             (p, partial, out))

// dp = g_pt t + g_p, with grad the [rows, channels, 3] gradient of the sums; each thread's
// two gradient values are loaded once.
extern "C" __global__ void __launch_bounds__(VX_DICE_THREADS)
    dice_sums_backward(const DiceKernelParams p, const float* __restrict__ target,
                       const float* __restrict__ grad, float* __restrict__ dp) {
    const DiceLane l = vx_dice_lane(p);
    if (!l.active) return;
    const unsigned long long g = (l.row * p.channels + l.channel) * 3;
    const double g_pt = static_cast<double>(grad[g]), g_p = static_cast<double>(grad[g + 1]);
    const unsigned long long base = l.row * p.row_voxels;
    for (unsigned long long v = l.first; v < l.end; v += l.groups) {
        const unsigned long long i = (base + v) * p.channels + l.channel;
        dp[i] = static_cast<float>(g_pt * static_cast<double>(target[i]) + g_p);
    }
}
VX_EMU_ENTRY(dice_sums_backward,
             (const DiceKernelParams p, const float* target, const float* grad, float* dp),
             (p, target, grad, dp))
