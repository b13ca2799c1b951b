//! `#[repr(C)]` mirrors of kernels/params.h, field for field, plus `LaunchDims` (the
//! harness's `EmuDims`). tests/cuda_harness.rs compares every size and offset with the C++
//! side, and the launch constants with params.h.
use crate::error::{Error, Result};
use crate::tensor_ops::{BinaryOp, UnaryOp};

/// Threads of a reduction block (`VX_REDUCE_THREADS`).
pub const REDUCE_THREADS: u32 = 256;
/// Threads of an element-wise block (the kernels' `__launch_bounds__(256)`).
pub const ELEMENTWISE_THREADS: u32 = 256;

/// Grid and block of one launch, and its dynamic shared memory.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LaunchDims {
    pub grid: [u32; 3],
    pub block: [u32; 3],
    pub shared_bytes: u32,
}

impl LaunchDims {
    /// A one-dimensional block of `threads` over a grid of `grid` blocks.
    pub fn linear(grid: [u32; 3], threads: u32) -> Self {
        Self {
            grid,
            block: [threads, 1, 1],
            shared_bytes: 0,
        }
    }
}

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct UnaryParams {
    pub n: u64,
    pub op: i32,
    pub arg: f32,
}

impl UnaryParams {
    /// The op's code (`UnaryCode`) and its constant in f32, as the f32 CPU kernel rounds it.
    pub fn new(op: UnaryOp, n: usize) -> Self {
        let (code, arg) = match op {
            UnaryOp::Relu => (0, 0.0),
            UnaryOp::LeakyRelu(s) => (1, s),
            UnaryOp::Elu(a) => (2, a),
            UnaryOp::Sigmoid => (3, 0.0),
            UnaryOp::Tanh => (4, 0.0),
            UnaryOp::Exp => (5, 0.0),
            UnaryOp::Log => (6, 0.0),
            UnaryOp::Neg => (7, 0.0),
            UnaryOp::Abs => (8, 0.0),
            UnaryOp::Square => (9, 0.0),
            UnaryOp::Sqrt => (10, 0.0),
            UnaryOp::Scale(c) => (11, c),
            UnaryOp::AddScalar(c) => (12, c),
        };
        Self {
            n: n as u64,
            op: code,
            arg: arg as f32,
        }
    }
}

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BinaryParams {
    pub n: u64,
    pub nb: u64,
    pub op: i32,
    pub pad_: i32,
}

impl BinaryParams {
    /// `op` over `n` elements of a with `nb` elements of b repeating.
    pub fn new(op: BinaryOp, n: usize, nb: usize) -> Self {
        let code = match op {
            BinaryOp::Add => 0,
            BinaryOp::Sub => 1,
            BinaryOp::Mul => 2,
            BinaryOp::Div => 3,
        };
        Self {
            n: n as u64,
            nb: nb as u64,
            op: code,
            pad_: 0,
        }
    }
}

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReduceParams {
    pub outer: u64,
    pub mid: u64,
    pub inner: u64,
    pub mid_per_split: u64,
    pub cols: u32,
    pub splits: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BroadcastParams {
    pub outer: u64,
    pub mid: u64,
    pub inner: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UniformParams {
    pub seed: u64,
    pub offset: u64,
    pub n: u64,
    pub stream: u32,
    pub pad_: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv3dParams {
    pub n: i32,
    pub in_d: i32,
    pub in_h: i32,
    pub in_w: i32,
    pub cin: i32,
    pub out_d: i32,
    pub out_h: i32,
    pub out_w: i32,
    pub cout: i32,
    pub k_d: i32,
    pub k_h: i32,
    pub k_w: i32,
    pub stride_d: i32,
    pub stride_h: i32,
    pub stride_w: i32,
    pub pad_d: i32,
    pub pad_h: i32,
    pub pad_w: i32,
    pub splits: i32,
    pub split_len: i32,
}

/// A tensor map of the tensor memory accelerator (`CUtensorMap`): 128 opaque bytes at a
/// 128-byte boundary, as CUDA 13 declares it, that the driver's `cuTensorMapEncodeTiled`
/// (or the harness's twin) writes.
#[repr(C, align(128))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TensorMap {
    pub words: [u64; 16],
}

/// A convolution pass on the tensor memory accelerator: tensor maps over its packed
/// operands and the boxes that tile its output (kernels/params.h says how).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv3dTmaParams {
    pub a: TensorMap,
    pub b: TensorMap,
    pub conv: Conv3dParams,
    pub box_d: i32,
    pub box_h: i32,
    pub box_w: i32,
    pub boxes_d: i32,
    pub boxes_h: i32,
    pub boxes_w: i32,
    pub grid_h: i32,
    pub grid_w: i32,
    pub grid_voxels: i32,
    pub pad_: [i32; 3],
}

/// The sizes of a 3D convolution, NDHWC, weights `[kd, kh, kw, cin, cout]`; spatial
/// triples are (d, h, w).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv3dShape {
    pub n: usize,
    pub input: [usize; 3],
    pub cin: usize,
    pub output: [usize; 3],
    pub cout: usize,
    pub kernel: [usize; 3],
    pub stride: [usize; 3],
    pub pad_before: [usize; 3],
}

impl Conv3dParams {
    /// Kernel parameters for `s`, checking what the kernels assume: positive sizes and
    /// strides, voxel counts, patch lengths and weight counts within i32.
    pub fn new(s: &Conv3dShape) -> Result<Self> {
        let err = |msg: String| Error::shape("conv3d (cuda)", format!("{s:?}: {msg}"));
        let fits = |v: usize| i32::try_from(v).is_ok();
        let dims = [s.n, s.cin, s.cout]
            .into_iter()
            .chain(s.input)
            .chain(s.output)
            .chain(s.kernel)
            .chain(s.stride);
        if dims.clone().any(|v| v == 0) {
            return Err(err("every size and stride must be positive".into()));
        }
        let taps = s.kernel.iter().product::<usize>();
        let counts = [
            s.n * s.input.iter().product::<usize>(),
            s.n * s.output.iter().product::<usize>(),
            taps * s.cin * s.cout,
        ];
        if !dims.chain(s.pad_before).chain(counts).all(fits) {
            return Err(err(
                "sizes exceed the kernels' 32-bit voxel and weight indices".into(),
            ));
        }
        let i = |v: usize| v as i32;
        Ok(Self {
            n: i(s.n),
            in_d: i(s.input[0]),
            in_h: i(s.input[1]),
            in_w: i(s.input[2]),
            cin: i(s.cin),
            out_d: i(s.output[0]),
            out_h: i(s.output[1]),
            out_w: i(s.output[2]),
            cout: i(s.cout),
            k_d: i(s.kernel[0]),
            k_h: i(s.kernel[1]),
            k_w: i(s.kernel[2]),
            stride_d: i(s.stride[0]),
            stride_h: i(s.stride[1]),
            stride_w: i(s.stride[2]),
            pad_d: i(s.pad_before[0]),
            pad_h: i(s.pad_before[1]),
            pad_w: i(s.pad_before[2]),
            splits: 1,
            split_len: 0,
        })
    }

    /// Output voxels (rows of the forward GEMM).
    pub fn output_voxels(&self) -> usize {
        (self.n * self.out_d * self.out_h * self.out_w) as usize
    }
    /// Input voxels (rows of the backward-data GEMM).
    pub fn input_voxels(&self) -> usize {
        (self.n * self.in_d * self.in_h * self.in_w) as usize
    }
    /// Whether the stride exceeds 1 along some axis.
    pub fn strided(&self) -> bool {
        self.stride_d > 1 || self.stride_h > 1 || self.stride_w > 1
    }
    /// Patch length kd * kh * kw * cin (rows of the weight gradient).
    pub fn patch_len(&self) -> usize {
        (self.k_d * self.k_h * self.k_w * self.cin) as usize
    }
    pub fn weight_len(&self) -> usize {
        self.patch_len() * self.cout as usize
    }
}

// SAFETY: plain #[repr(C)] data without pointers or padding, passed by value as a kernel
// argument whose C++ type has the same layout (checked by tests/cuda_harness.rs).
unsafe impl cudarc::driver::DeviceRepr for UnaryParams {}
unsafe impl cudarc::driver::DeviceRepr for BinaryParams {}
unsafe impl cudarc::driver::DeviceRepr for ReduceParams {}
unsafe impl cudarc::driver::DeviceRepr for BroadcastParams {}
unsafe impl cudarc::driver::DeviceRepr for UniformParams {}
unsafe impl cudarc::driver::DeviceRepr for Conv3dParams {}
unsafe impl cudarc::driver::DeviceRepr for Conv3dTmaParams {}
unsafe impl cudarc::driver::DeviceRepr for TensorMap {}
