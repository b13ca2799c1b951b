//! Harness entry point of kernels/dropout.cu.
use super::{need, status, EmuResult};
use crate::backend::cuda::params::LaunchDims;
use crate::backend::cuda::params_dropout::DropoutKernelParams;
use std::ffi::c_int;

extern "C" {
    fn emu_dropout_apply(
        d: *const LaunchDims,
        p: DropoutKernelParams,
        x: *const f32,
        y: *mut f32,
    ) -> c_int;
}

pub fn apply(d: &LaunchDims, p: DropoutKernelParams, x: &[f32], y: &mut [f32]) -> EmuResult {
    if p.spatial != 0 && (p.channels == 0 || p.example_len == 0) {
        return Err(format!("{p:?}: spatial dropout without channels"));
    }
    need("x", x.len(), p.n)?;
    need("y", y.len(), p.n)?;
    // SAFETY: the slices cover the p.n elements the kernel indexes.
    status(unsafe { emu_dropout_apply(d, p, x.as_ptr(), y.as_mut_ptr()) })
}
