// Validation counts, as ConfusionKernel in src/tensor_ops/confusion: each voxel's class
// decided from its logits with the host's f32 formulas, counted per scored region against
// the label. Integer counts: shared-memory atomics per block, then one global atomic add
// per counter and block; integer sums do not depend on their order, so the counts are
// exact and the same on every run.
#include "common.h"

// The logistic function as UnaryOp::Sigmoid computes it (unary.cu, src/tensor_ops/unary).
__device__ __forceinline__ float vx_confusion_sigmoid(float x) {
    if (x >= 0.0f) return 1.0f / (1.0f + expf(-x));
    const float e = expf(x);
    return e / (1.0f + e);
}

// The class one voxel's logits decide (ConfusionSpec::decide).
__device__ __forceinline__ unsigned vx_decide(const ConfusionKernelParams& p, const float* row) {
    if (p.argmax) {
        float max = -INFINITY;
        for (unsigned k = 0; k < p.channels; ++k) max = fmaxf(max, row[k]);
        float sum = 0.0f;
        for (unsigned k = 0; k < p.channels; ++k) sum += expf(row[k] - max);
        unsigned best = 0;
        float best_p = expf(row[0] - max) / sum;
        for (unsigned k = 1; k < p.channels; ++k) {
            const float prob = expf(row[k] - max) / sum;
            if (prob > best_p) {
                best = k;
                best_p = prob;
            }
        }
        return best;
    }
    unsigned cls = 0;
    for (unsigned k = 0; k < p.channels; ++k)
        if (vx_confusion_sigmoid(row[k]) > 0.5f) cls = p.paint[k];
    return cls;
}

// A label's class, or VX_CONFUSION_MAX_CLASSES (no region) when it is not one (label_class).
__device__ __forceinline__ unsigned vx_label_class(float label) {
    const bool is_class = label >= 0.0f && label < static_cast<float>(VX_CONFUSION_MAX_CLASSES) &&
                          label == floorf(label);
    return is_class ? static_cast<unsigned>(label) : VX_CONFUSION_MAX_CLASSES;
}

__device__ __forceinline__ bool vx_in_region(
    const unsigned long long (&classes)[VX_CONFUSION_CLASS_WORDS], unsigned cls) {
    return cls < VX_CONFUSION_MAX_CLASSES && ((classes[cls >> 6] >> (cls & 63)) & 1ull);
}

// The minimum of 4 blocks per SM is only a hint to ptxas: without it, it spills 16 bytes
// around the division's slow path to keep 32 registers (sm_90, nvcc 13.0).
extern "C" __global__ void __launch_bounds__(VX_CONFUSION_THREADS, 4)
    region_confusion(const ConfusionKernelParams p, const float* __restrict__ logits,
                     const float* __restrict__ labels, unsigned long long* __restrict__ counts) {
    VX_SHARED(unsigned int, block_counts, [3 * VX_CONFUSION_MAX_REGIONS]);
    for (unsigned i = threadIdx.x; i < 3 * VX_CONFUSION_MAX_REGIONS; i += blockDim.x)
        block_counts[i] = 0;
    __syncthreads();
    for (unsigned long long v = vx_thread_index(); v < p.voxels; v += vx_thread_stride()) {
        const unsigned pred = vx_decide(p, logits + v * p.channels);
        const unsigned truth = vx_label_class(labels[v]);
        for (unsigned r = 0; r < p.regions; ++r) {
            const bool in_pred = vx_in_region(p.region_classes[r], pred);
            const bool in_truth = vx_in_region(p.region_classes[r], truth);
            if (in_pred || in_truth)
                atomicAdd(&block_counts[3 * r + (in_pred ? (in_truth ? 0 : 1) : 2)], 1u);
        }
    }
    __syncthreads();
    for (unsigned i = threadIdx.x; i < 3 * p.regions; i += blockDim.x)
        if (block_counts[i] != 0)
            atomicAdd(&counts[i], static_cast<unsigned long long>(block_counts[i]));
}
VX_EMU_ENTRY(region_confusion,
             (const ConfusionKernelParams p, const float* logits, const float* labels,
              unsigned long long* counts),
             (p, logits, labels, counts))
