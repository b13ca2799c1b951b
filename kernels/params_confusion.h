// Parameters of the validation counts (kernels/confusion.cu); mirrored by
// src/backend/cuda/params_confusion.rs.
#pragma once

constexpr int VX_CONFUSION_THREADS = 256;
constexpr int VX_CONFUSION_MAX_CHANNELS = 16;  // MAX_CHANNELS in src/tensor_ops/confusion
constexpr int VX_CONFUSION_MAX_REGIONS = 16;   // MAX_REGIONS
constexpr int VX_CONFUSION_MAX_CLASSES = 256;  // MAX_CLASSES: every u8 label
constexpr int VX_CONFUSION_CLASS_WORDS = VX_CONFUSION_MAX_CLASSES / 64;

// Logits [voxels, channels] decided per voxel (argmax of the softmax, or sigmoid > 0.5
// painting paint[k] in channel order), labels [voxels] as class indices; counts[3 r + j]
// (u64, zeroed before the launch) = true positives, false positives, false negatives of
// region r, whose classes are the set bits of region_classes[r] (class c: bit c % 64 of word
// c / 64). paint[] is read only when painting.
struct ConfusionKernelParams {
    unsigned long long voxels;
    unsigned long long region_classes[VX_CONFUSION_MAX_REGIONS][VX_CONFUSION_CLASS_WORDS];
    unsigned int channels;
    unsigned int regions;
    unsigned int argmax;  // 1: argmax, 0: painting
    unsigned int pad_;
    unsigned int paint[VX_CONFUSION_MAX_CHANNELS];
};
