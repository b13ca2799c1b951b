//! Parameters of the cross-entropy and one-hot kernels (mirror of
//! kernels/params_cross_entropy.h).

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CrossEntropyKernelParams {
    pub rows: u64,
    pub classes: u64,
    pub has_weights: u32,
    pub pad_: u32,
}

impl CrossEntropyKernelParams {
    pub fn new(rows: usize, classes: usize, has_weights: bool) -> Self {
        Self {
            rows: rows as u64,
            classes: classes as u64,
            has_weights: has_weights.into(),
            pad_: 0,
        }
    }
}

// SAFETY: plain #[repr(C)] data without pointers or padding, passed by value as a kernel
// argument whose C++ type has the same layout (checked by tests/cuda_harness_ops_a.rs).
unsafe impl cudarc::driver::DeviceRepr for CrossEntropyKernelParams {}
