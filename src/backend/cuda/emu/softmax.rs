//! Harness entry points of kernels/softmax.cu.
use super::{need, status, EmuResult};
use crate::backend::cuda::params::LaunchDims;
use crate::backend::cuda::params_softmax::SoftmaxKernelParams;
use std::ffi::c_int;

extern "C" {
    fn emu_softmax_forward(
        d: *const LaunchDims,
        p: SoftmaxKernelParams,
        x: *const f32,
        y: *mut f32,
    ) -> c_int;
    fn emu_softmax_backward(
        d: *const LaunchDims,
        p: SoftmaxKernelParams,
        y: *const f32,
        dy: *const f32,
        dx: *mut f32,
    ) -> c_int;
}

pub fn forward(d: &LaunchDims, p: SoftmaxKernelParams, x: &[f32], y: &mut [f32]) -> EmuResult {
    let n = p.rows * p.channels;
    need("x", x.len(), n)?;
    need("y", y.len(), n)?;
    // SAFETY: the slices cover the rows * channels elements the kernel indexes.
    status(unsafe { emu_softmax_forward(d, p, x.as_ptr(), y.as_mut_ptr()) })
}

pub fn backward(
    d: &LaunchDims,
    p: SoftmaxKernelParams,
    y: &[f32],
    dy: &[f32],
    dx: &mut [f32],
) -> EmuResult {
    let n = p.rows * p.channels;
    need("y", y.len(), n)?;
    need("dy", dy.len(), n)?;
    need("dx", dx.len(), n)?;
    // SAFETY: the slices cover the rows * channels elements the kernel indexes.
    status(unsafe { emu_softmax_backward(d, p, y.as_ptr(), dy.as_ptr(), dx.as_mut_ptr()) })
}
