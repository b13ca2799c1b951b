//! Parameters of the binary cross-entropy kernels (mirror of kernels/params_bce.h).
use crate::tensor_ops::bce::BceParams;

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BceKernelParams {
    pub n: u64,
    pub weight_group: u64,
    pub pos_weight: f64,
    pub scale: f64,
    pub has_weight: u32,
    pub pad_: u32,
}

impl BceKernelParams {
    /// `p` over `n` logits, with or without a weight map.
    pub fn new(p: &BceParams, n: usize, has_weight: bool) -> Self {
        Self {
            n: n as u64,
            weight_group: p.weight_group.max(1),
            pos_weight: p.pos_weight,
            scale: p.scale,
            has_weight: has_weight.into(),
            pad_: 0,
        }
    }
}

// SAFETY: plain #[repr(C)] data without pointers or padding, passed by value as a kernel
// argument whose C++ type has the same layout (checked by tests/cuda_harness_ops_a.rs).
unsafe impl cudarc::driver::DeviceRepr for BceKernelParams {}
