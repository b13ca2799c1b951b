// Channel ranges of a tensor viewed as [rows, channels], as ConcatKernel for the CPU
// backend (src/tensor_ops/concat): taking a range out, placing a part into its range of
// a wider tensor (one launch per part of a concatenation), and placing it among zeros.
// Pure copies: the results are bit-identical to the CPU's.
#include "spatial.h"

// part[row, j] = x[row, start + j].
extern "C" __global__ void VX_SPATIAL_BOUNDS
    channels_slice(const ChannelRange r, const float* __restrict__ x, float* __restrict__ part) {
    const unsigned channels = unsigned(r.channels), start = unsigned(r.start);
    const unsigned width = unsigned(r.end - r.start);
    const unsigned long long total = r.rows * (r.end - r.start);
    for (unsigned long long i = vx_thread_index(); i < total; i += vx_thread_stride()) {
        const unsigned e = unsigned(i);
        const unsigned row = e / width;
        part[e] = x[row * channels + start + (e - row * width)];
    }
}
VX_EMU_ENTRY(channels_slice, (const ChannelRange r, const float* x, float* part), (r, x, part))

// out[row, start + j] = part[row, j]; the other channels of out are left as they are.
extern "C" __global__ void VX_SPATIAL_BOUNDS
    channels_place(const ChannelRange r, const float* __restrict__ part, float* __restrict__ out) {
    const unsigned channels = unsigned(r.channels), start = unsigned(r.start);
    const unsigned width = unsigned(r.end - r.start);
    const unsigned long long total = r.rows * (r.end - r.start);
    for (unsigned long long i = vx_thread_index(); i < total; i += vx_thread_stride()) {
        const unsigned e = unsigned(i);
        const unsigned row = e / width;
        out[row * channels + start + (e - row * width)] = part[e];
    }
}
VX_EMU_ENTRY(channels_place, (const ChannelRange r, const float* part, float* out),
             (r, part, out))

// out[row, ch] = part[row, ch - start] inside the range, 0 outside it.
extern "C" __global__ void VX_SPATIAL_BOUNDS
    channels_embed(const ChannelRange r, const float* __restrict__ part, float* __restrict__ out) {
    const unsigned channels = unsigned(r.channels), start = unsigned(r.start),
                   end = unsigned(r.end);
    const unsigned width = end - start;
    const unsigned long long total = r.rows * r.channels;
    for (unsigned long long i = vx_thread_index(); i < total; i += vx_thread_stride()) {
        const unsigned e = unsigned(i);
        const unsigned row = e / channels;
        const unsigned ch = e - row * channels;
        out[e] = ch >= start && ch < end ? part[row * width + ch - start] : 0.0f;
    }
}
VX_EMU_ENTRY(channels_embed, (const ChannelRange r, const float* part, float* out),
             (r, part, out))
