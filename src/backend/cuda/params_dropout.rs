//! Parameters of the dropout kernel (mirror of kernels/params_dropout.h).
use crate::tensor_ops::dropout::DropoutParams;

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DropoutKernelParams {
    pub seed: u64,
    pub n: u64,
    pub channels: u64,
    pub example_len: u64,
    pub threshold: f32,
    /// `1 / (1 - p)` in f32, as the f32 CPU kernel rounds it.
    pub scale: f32,
    pub stream: u32,
    pub spatial: u32,
}

impl DropoutKernelParams {
    /// The mask of `p` over `n` elements.
    pub fn new(p: &DropoutParams, n: usize) -> Self {
        Self {
            seed: p.seed,
            n: n as u64,
            channels: p.channels as u64,
            example_len: p.example_len as u64,
            threshold: p.threshold,
            scale: p.scale as f32,
            stream: p.stream,
            spatial: p.spatial.into(),
        }
    }
}

// SAFETY: plain #[repr(C)] data without pointers or padding, passed by value as a kernel
// argument whose C++ type has the same layout (checked by tests/cuda_harness_ops_a.rs).
unsafe impl cudarc::driver::DeviceRepr for DropoutKernelParams {}
