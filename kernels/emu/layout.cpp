// The C++ side of the parameter-layout contract: sizes and field offsets of every struct
// in params.h (and EmuDims), and the launch constants, for tests/cuda_harness.rs to
// compare with the #[repr(C)] mirrors in src/backend/cuda/params.rs.
#include <cstddef>
#include <cstring>

#include "../params.h"
#include "cuda_emu.h"

#define VX_SIZE(T) \
    if (!std::strcmp(type, #T) && field == nullptr) return static_cast<long long>(sizeof(T));
#define VX_FIELD(T, f)                                                  \
    if (!std::strcmp(type, #T) && field != nullptr && !std::strcmp(field, #f)) \
        return static_cast<long long>(offsetof(T, f));

// sizeof(type) when field is null, else offsetof(type, field); -1 for an unknown name.
extern "C" long long vx_param_layout(const char* type, const char* field) {
    VX_SIZE(UnaryParams)
    VX_FIELD(UnaryParams, n)
    VX_FIELD(UnaryParams, op)
    VX_FIELD(UnaryParams, arg)
    VX_SIZE(BinaryParams)
    VX_FIELD(BinaryParams, n)
    VX_FIELD(BinaryParams, nb)
    VX_FIELD(BinaryParams, op)
    VX_FIELD(BinaryParams, pad_)
    VX_SIZE(ReduceParams)
    VX_FIELD(ReduceParams, outer)
    VX_FIELD(ReduceParams, mid)
    VX_FIELD(ReduceParams, inner)
    VX_FIELD(ReduceParams, mid_per_split)
    VX_FIELD(ReduceParams, cols)
    VX_FIELD(ReduceParams, splits)
    VX_SIZE(BroadcastParams)
    VX_FIELD(BroadcastParams, outer)
    VX_FIELD(BroadcastParams, mid)
    VX_FIELD(BroadcastParams, inner)
    VX_SIZE(UniformParams)
    VX_FIELD(UniformParams, seed)
    VX_FIELD(UniformParams, offset)
    VX_FIELD(UniformParams, n)
    VX_FIELD(UniformParams, stream)
    VX_FIELD(UniformParams, pad_)
    VX_SIZE(Conv3dParams)
    VX_FIELD(Conv3dParams, n)
    VX_FIELD(Conv3dParams, in_d)
    VX_FIELD(Conv3dParams, in_h)
    VX_FIELD(Conv3dParams, in_w)
    VX_FIELD(Conv3dParams, cin)
    VX_FIELD(Conv3dParams, out_d)
    VX_FIELD(Conv3dParams, out_h)
    VX_FIELD(Conv3dParams, out_w)
    VX_FIELD(Conv3dParams, cout)
    VX_FIELD(Conv3dParams, k_d)
    VX_FIELD(Conv3dParams, k_h)
    VX_FIELD(Conv3dParams, k_w)
    VX_FIELD(Conv3dParams, stride_d)
    VX_FIELD(Conv3dParams, stride_h)
    VX_FIELD(Conv3dParams, stride_w)
    VX_FIELD(Conv3dParams, pad_d)
    VX_FIELD(Conv3dParams, pad_h)
    VX_FIELD(Conv3dParams, pad_w)
    VX_FIELD(Conv3dParams, splits)
    VX_FIELD(Conv3dParams, split_len)
    VX_SIZE(EmuDims)
    VX_FIELD(EmuDims, grid)
    VX_FIELD(EmuDims, block)
    VX_FIELD(EmuDims, shared_bytes)
    return -1;
}

// The value of a launch constant from params.h; -1 for an unknown name.
extern "C" long long vx_launch_constant(const char* name) {
    if (!std::strcmp(name, "VX_REDUCE_THREADS")) return VX_REDUCE_THREADS;
    if (!std::strcmp(name, "VX_CONV_THREADS")) return VX_CONV_THREADS;
    if (!std::strcmp(name, "VX_CONV_SIMT_BM")) return VX_CONV_SIMT_BM;
    if (!std::strcmp(name, "VX_CONV_WIDE_BN")) return VX_CONV_WIDE_BN;
    if (!std::strcmp(name, "VX_CONV_WIDE_BK")) return VX_CONV_WIDE_BK;
    if (!std::strcmp(name, "VX_CONV_NARROW_BN")) return VX_CONV_NARROW_BN;
    if (!std::strcmp(name, "VX_CONV_NARROW_BK")) return VX_CONV_NARROW_BK;
    if (!std::strcmp(name, "VX_CONV_SHALLOW_BN")) return VX_CONV_SHALLOW_BN;
    if (!std::strcmp(name, "VX_CONV_SHALLOW_BK")) return VX_CONV_SHALLOW_BK;
    if (!std::strcmp(name, "VX_CONV_TC_BM")) return VX_CONV_TC_BM;
    if (!std::strcmp(name, "VX_CONV_TC_BK")) return VX_CONV_TC_BK;
    return -1;
}
