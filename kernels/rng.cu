// Counter-based random fills: out[i] = uniform_at(seed, stream, offset + i).
#include "philox.h"

extern "C" __global__ void __launch_bounds__(256)
    uniform_fill(const UniformParams p, float* __restrict__ out) {
    for (unsigned long long i = vx_thread_index(); i < p.n; i += vx_thread_stride())
        out[i] = vx_uniform_at(p.seed, p.stream, p.offset + i);
}
VX_EMU_ENTRY(uniform_fill, (const UniformParams p, float* out), (p, out))
