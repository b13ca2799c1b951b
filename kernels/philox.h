// Philox 4x32-10 and uniform_at, bit for bit as src/rng.rs computes them, so kernels
// (dropout, noise) draw the same numbers as the CPU for the same (seed, stream, index).
#pragma once
#include "common.h"

__device__ __forceinline__ void vx_philox4x32_10(unsigned c[4], unsigned k0, unsigned k1) {
    const unsigned m0 = 0xD2511F53u, m1 = 0xCD9E8D57u;
    const unsigned w0 = 0x9E3779B9u, w1 = 0xBB67AE85u;
#pragma unroll
    for (int round = 0; round < 10; ++round) {
        if (round > 0) {
            k0 += w0;
            k1 += w1;
        }
        const unsigned hi0 = __umulhi(m0, c[0]), lo0 = m0 * c[0];
        const unsigned hi1 = __umulhi(m1, c[2]), lo1 = m1 * c[2];
        const unsigned n0 = hi1 ^ c[1] ^ k0;
        const unsigned n2 = hi0 ^ c[3] ^ k1;
        c[0] = n0;
        c[1] = lo1;
        c[2] = n2;
        c[3] = lo0;
    }
}

// Uniform in [0, 1) from the top 24 bits of the first Philox word.
__device__ __forceinline__ float vx_uniform_at(unsigned long long seed, unsigned stream,
                                               unsigned long long index) {
    unsigned c[4] = {static_cast<unsigned>(index), static_cast<unsigned>(index >> 32), stream, 0u};
    vx_philox4x32_10(c, static_cast<unsigned>(seed), static_cast<unsigned>(seed >> 32));
    return static_cast<float>(c[0] >> 8) * (1.0f / 16777216.0f);
}
