//! Parameters of the fused optimiser updates (mirrors of kernels/params_optim_step.h).
use crate::tensor_ops::optim_step::{AdamHyper, SgdHyper};

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SgdKernelParams {
    pub n: u64,
    pub lr: f64,
    pub momentum: f64,
    pub weight_decay: f64,
    pub nesterov: u32,
    pub pad_: u32,
}

impl SgdKernelParams {
    pub fn new(h: &SgdHyper, n: usize) -> Self {
        Self {
            n: n as u64,
            lr: h.lr,
            momentum: h.momentum,
            weight_decay: h.weight_decay,
            nesterov: h.nesterov,
            pad_: 0,
        }
    }
}

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamKernelParams {
    pub n: u64,
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub l2: f64,
    pub decoupled_decay: f64,
    pub bias_correction1: f64,
    pub bias_correction2: f64,
    pub lazy: u32,
    pub pad_: u32,
}

impl AdamKernelParams {
    pub fn new(h: &AdamHyper, n: usize) -> Self {
        Self {
            n: n as u64,
            lr: h.lr,
            beta1: h.beta1,
            beta2: h.beta2,
            eps: h.eps,
            l2: h.l2,
            decoupled_decay: h.decoupled_decay,
            bias_correction1: h.bias_correction1,
            bias_correction2: h.bias_correction2,
            lazy: h.lazy,
            pad_: 0,
        }
    }
}

// SAFETY: plain #[repr(C)] data without pointers or padding, passed by value as a kernel
// argument whose C++ type has the same layout (checked by tests/cuda_harness_ops_a.rs).
unsafe impl cudarc::driver::DeviceRepr for SgdKernelParams {}
unsafe impl cudarc::driver::DeviceRepr for AdamKernelParams {}
