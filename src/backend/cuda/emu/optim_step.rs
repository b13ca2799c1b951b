//! Harness entry points of kernels/optim_step.cu (in-place updates).
use super::{need, status, EmuResult};
use crate::backend::cuda::params::LaunchDims;
use crate::backend::cuda::params_optim_step::{AdamKernelParams, SgdKernelParams};
use std::ffi::c_int;

extern "C" {
    fn emu_sgd_step(
        d: *const LaunchDims,
        p: SgdKernelParams,
        param: *mut f32,
        grad: *const f32,
    ) -> c_int;
    fn emu_sgd_momentum_step(
        d: *const LaunchDims,
        p: SgdKernelParams,
        param: *mut f32,
        buffer: *mut f32,
        grad: *const f32,
    ) -> c_int;
    fn emu_adam_step(
        d: *const LaunchDims,
        p: AdamKernelParams,
        param: *mut f32,
        m: *mut f32,
        v: *mut f32,
        grad: *const f32,
    ) -> c_int;
}

/// `sgd_step`, or `sgd_momentum_step` when a buffer is given.
pub fn sgd(
    d: &LaunchDims,
    p: SgdKernelParams,
    param: &mut [f32],
    buffer: Option<&mut [f32]>,
    grad: &[f32],
) -> EmuResult {
    need("param", param.len(), p.n)?;
    need("grad", grad.len(), p.n)?;
    // SAFETY (both calls): the slices cover the p.n elements the kernel indexes.
    status(match buffer {
        Some(b) => {
            need("buffer", b.len(), p.n)?;
            unsafe {
                emu_sgd_momentum_step(d, p, param.as_mut_ptr(), b.as_mut_ptr(), grad.as_ptr())
            }
        }
        None => unsafe { emu_sgd_step(d, p, param.as_mut_ptr(), grad.as_ptr()) },
    })
}

pub fn adam(
    d: &LaunchDims,
    p: AdamKernelParams,
    param: &mut [f32],
    m: &mut [f32],
    v: &mut [f32],
    grad: &[f32],
) -> EmuResult {
    for (what, len) in [
        ("param", param.len()),
        ("m", m.len()),
        ("v", v.len()),
        ("grad", grad.len()),
    ] {
        need(what, len, p.n)?;
    }
    // SAFETY: the slices cover the p.n elements the kernel indexes.
    status(unsafe {
        emu_adam_step(
            d,
            p,
            param.as_mut_ptr(),
            m.as_mut_ptr(),
            v.as_mut_ptr(),
            grad.as_ptr(),
        )
    })
}
