//! Parameters of the softmax kernels (mirror of kernels/params_softmax.h).
use crate::tensor_ops::SoftmaxOp;

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SoftmaxKernelParams {
    pub rows: u64,
    pub channels: u64,
    pub log: u32,
    pub pad_: u32,
}

impl SoftmaxKernelParams {
    /// `op` over `len / channels` rows (`channels` must be positive).
    pub fn new(op: SoftmaxOp, len: usize, channels: usize) -> Self {
        Self {
            rows: (len / channels.max(1)) as u64,
            channels: channels as u64,
            log: u32::from(op == SoftmaxOp::LogSoftmax),
            pad_: 0,
        }
    }
}

// SAFETY: plain #[repr(C)] data without pointers or padding, passed by value as a kernel
// argument whose C++ type has the same layout (checked by tests/cuda_harness_ops_a.rs).
unsafe impl cudarc::driver::DeviceRepr for SoftmaxKernelParams {}
