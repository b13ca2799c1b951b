// Included first by every kernels/*.cu: the parameter structs, the CPU harness when the
// file is compiled as host C++, and small helpers shared by the kernels.
#pragma once

#ifndef __CUDACC__
#include "emu/cuda_emu.h"
#endif

#include "params.h"

#define VX_UNPAREN(...) __VA_ARGS__

// VX_EMU_ENTRY(kernel, (typed params), (names)) gives the host build of a kernel an
// `extern "C" int emu_<kernel>(const EmuDims*, params...)` that src/backend/cuda/emu.rs
// calls; it returns 0 or -1 with emu_last_error() set. It expands to nothing for nvcc.
#ifdef __CUDACC__
#define VX_EMU_ENTRY(kernel, params, args)
#define VX_DYNAMIC_SHARED(T, name)                                    \
    extern __shared__ __align__(16) unsigned char vx_dynamic_shared_[]; \
    T* name = reinterpret_cast<T*>(vx_dynamic_shared_)
#else
#define VX_EMU_ENTRY(kernel, params, args)                          \
    extern "C" int emu_##kernel(const EmuDims* d, VX_UNPAREN params) { \
        return emu_launch(*d, kernel, VX_UNPAREN args);              \
    }
#define VX_DYNAMIC_SHARED(T, name) T* name = static_cast<T*>(emu_dynamic_shared())
#endif

// VX_SHARED(type, name, dims): static shared memory `__shared__ type name dims;` (dims is
// empty or array bounds such as [2][32]). In the harness it is a buffer per declaration
// that each block finds poisoned, as a GPU's holds garbage (cuda_emu.h).
#ifdef __CUDACC__
#define VX_SHARED(type, name, dims) __shared__ type name dims
#else
#define VX_SHARED(type, name, dims)                                              \
    static thread_local EmuSharedSlot name##_emu_slot_;                          \
    using name##_emu_type_ = type dims;                                          \
    name##_emu_type_& name = *static_cast<name##_emu_type_*>(emu_static_shared(  \
        name##_emu_slot_, sizeof(name##_emu_type_), alignof(name##_emu_type_)))
#endif

// VX_EMU_EXPECT(cond, msg): a contract the kernel's code relies on but does not check on a
// GPU, where checking would cost instructions; the harness fails the launch with msg when
// cond is false. Nothing for nvcc.
#ifdef __CUDACC__
#define VX_EMU_EXPECT(cond, msg)
#else
#define VX_EMU_EXPECT(cond, msg) \
    do {                         \
        if (!(cond)) emu_fail(msg); \
    } while (0)
#endif

// Position of this thread in a one-dimensional grid-stride loop.
__device__ __forceinline__ unsigned long long vx_thread_index() {
    return static_cast<unsigned long long>(blockIdx.x) * blockDim.x + threadIdx.x;
}

__device__ __forceinline__ unsigned long long vx_thread_stride() {
    return static_cast<unsigned long long>(gridDim.x) * blockDim.x;
}
