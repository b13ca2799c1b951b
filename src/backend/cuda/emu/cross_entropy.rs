//! Harness entry points of kernels/cross_entropy.cu. `bad` is the one-element flag the
//! kernels set to 1 on a label that is not a class index.
use super::{need, status, EmuResult};
use crate::backend::cuda::params::LaunchDims;
use crate::backend::cuda::params_cross_entropy::CrossEntropyKernelParams;
use std::ffi::c_int;

extern "C" {
    fn emu_cross_entropy_forward_partial(
        d: *const LaunchDims,
        p: CrossEntropyKernelParams,
        logits: *const f32,
        labels: *const f32,
        weights: *const f32,
        partial: *mut f64,
        bad: *mut f32,
    ) -> c_int;
    fn emu_cross_entropy_forward_finish(
        d: *const LaunchDims,
        count: u32,
        partial: *const f64,
        loss: *mut f32,
        total: *mut f32,
    ) -> c_int;
    fn emu_cross_entropy_backward(
        d: *const LaunchDims,
        p: CrossEntropyKernelParams,
        logits: *const f32,
        labels: *const f32,
        weights: *const f32,
        total: *const f32,
        dy: *const f32,
        dx: *mut f32,
        bad: *mut f32,
    ) -> c_int;
    fn emu_one_hot(
        d: *const LaunchDims,
        p: CrossEntropyKernelParams,
        labels: *const f32,
        out: *mut f32,
        bad: *mut f32,
    ) -> c_int;
}

/// Checks logits, labels and (per its flag) the class weights; returns the weights' pointer.
fn inputs(
    p: &CrossEntropyKernelParams,
    logits: &[f32],
    labels: &[f32],
    weights: Option<&[f32]>,
    bad: &[f32],
) -> Result<*const f32, String> {
    need("logits", logits.len(), p.rows * p.classes)?;
    need("labels", labels.len(), p.rows)?;
    need("bad", bad.len(), 1)?;
    match weights {
        Some(w) if p.has_weights != 0 => {
            // Labels index the weights only after the kernel checked them against classes.
            need("weights", w.len(), p.classes)?;
            Ok(w.as_ptr())
        }
        None if p.has_weights == 0 => Ok(std::ptr::null()),
        _ => Err("weights and has_weights disagree".into()),
    }
}

pub fn forward_partial(
    d: &LaunchDims,
    p: CrossEntropyKernelParams,
    logits: &[f32],
    labels: &[f32],
    weights: Option<&[f32]>,
    partial: &mut [f64],
    bad: &mut [f32],
) -> EmuResult {
    let w = inputs(&p, logits, labels, weights, bad)?;
    need("partial", partial.len(), 2 * d.grid[0] as u64)?;
    // SAFETY: lengths checked above: two planes of one partial per block.
    status(unsafe {
        emu_cross_entropy_forward_partial(
            d,
            p,
            logits.as_ptr(),
            labels.as_ptr(),
            w,
            partial.as_mut_ptr(),
            bad.as_mut_ptr(),
        )
    })
}

pub fn forward_finish(
    d: &LaunchDims,
    count: u32,
    partial: &[f64],
    loss: &mut [f32],
    total: &mut [f32],
) -> EmuResult {
    need("partial", partial.len(), 2 * count as u64)?;
    need("loss", loss.len(), 1)?;
    need("total", total.len(), 1)?;
    // SAFETY: lengths checked above.
    status(unsafe {
        emu_cross_entropy_forward_finish(
            d,
            count,
            partial.as_ptr(),
            loss.as_mut_ptr(),
            total.as_mut_ptr(),
        )
    })
}

#[allow(clippy::too_many_arguments)]
pub fn backward(
    d: &LaunchDims,
    p: CrossEntropyKernelParams,
    logits: &[f32],
    labels: &[f32],
    weights: Option<&[f32]>,
    total: &[f32],
    dy: &[f32],
    dx: &mut [f32],
    bad: &mut [f32],
) -> EmuResult {
    let w = inputs(&p, logits, labels, weights, bad)?;
    need("total", total.len(), 1)?;
    need("dy", dy.len(), 1)?;
    need("dx", dx.len(), p.rows * p.classes)?;
    // SAFETY: lengths checked above.
    status(unsafe {
        emu_cross_entropy_backward(
            d,
            p,
            logits.as_ptr(),
            labels.as_ptr(),
            w,
            total.as_ptr(),
            dy.as_ptr(),
            dx.as_mut_ptr(),
            bad.as_mut_ptr(),
        )
    })
}

pub fn one_hot(
    d: &LaunchDims,
    p: CrossEntropyKernelParams,
    labels: &[f32],
    out: &mut [f32],
    bad: &mut [f32],
) -> EmuResult {
    need("labels", labels.len(), p.rows)?;
    need("out", out.len(), p.rows * p.classes)?;
    need("bad", bad.len(), 1)?;
    // SAFETY: lengths checked above.
    status(unsafe { emu_one_hot(d, p, labels.as_ptr(), out.as_mut_ptr(), bad.as_mut_ptr()) })
}
