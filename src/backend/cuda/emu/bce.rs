//! Harness entry points of kernels/bce.cu.
use super::{need, status, EmuResult};
use crate::backend::cuda::params::LaunchDims;
use crate::backend::cuda::params_bce::BceKernelParams;
use std::ffi::c_int;

extern "C" {
    fn emu_bce_forward_partial(
        d: *const LaunchDims,
        p: BceKernelParams,
        x: *const f32,
        t: *const f32,
        w: *const f32,
        partial: *mut f64,
    ) -> c_int;
    fn emu_bce_forward_finish(
        d: *const LaunchDims,
        p: BceKernelParams,
        count: u32,
        partial: *const f64,
        loss: *mut f32,
    ) -> c_int;
    fn emu_bce_backward(
        d: *const LaunchDims,
        p: BceKernelParams,
        x: *const f32,
        t: *const f32,
        w: *const f32,
        dy: *const f32,
        targets: u32,
        out: *mut f32,
    ) -> c_int;
    fn emu_bce_backward_weight(
        d: *const LaunchDims,
        p: BceKernelParams,
        x: *const f32,
        t: *const f32,
        dy: *const f32,
        dw: *mut f32,
    ) -> c_int;
}

/// Checks the logits and targets against the params.
fn logits(p: &BceKernelParams, x: &[f32], t: &[f32]) -> EmuResult {
    if p.weight_group == 0 || !p.n.is_multiple_of(p.weight_group) {
        return Err(format!("{p:?}: weight groups do not tile the logits"));
    }
    need("x", x.len(), p.n)?;
    need("t", t.len(), p.n)
}

/// Checks the logits, targets and (per its flag) the weights; returns the weight pointer.
fn inputs(
    p: &BceKernelParams,
    x: &[f32],
    t: &[f32],
    w: Option<&[f32]>,
) -> Result<*const f32, String> {
    logits(p, x, t)?;
    match w {
        Some(w) if p.has_weight != 0 => {
            need("w", w.len(), p.n / p.weight_group)?;
            Ok(w.as_ptr())
        }
        None if p.has_weight == 0 => Ok(std::ptr::null()),
        _ => Err("weights and has_weight disagree".into()),
    }
}

pub fn forward_partial(
    d: &LaunchDims,
    p: BceKernelParams,
    x: &[f32],
    t: &[f32],
    w: Option<&[f32]>,
    partial: &mut [f64],
) -> EmuResult {
    let w = inputs(&p, x, t, w)?;
    need("partial", partial.len(), d.grid[0] as u64)?;
    // SAFETY: lengths checked above: one partial per block.
    status(unsafe {
        emu_bce_forward_partial(d, p, x.as_ptr(), t.as_ptr(), w, partial.as_mut_ptr())
    })
}

pub fn forward_finish(
    d: &LaunchDims,
    p: BceKernelParams,
    count: u32,
    partial: &[f64],
    loss: &mut [f32],
) -> EmuResult {
    need("partial", partial.len(), count as u64)?;
    need("loss", loss.len(), 1)?;
    // SAFETY: lengths checked above.
    status(unsafe { emu_bce_forward_finish(d, p, count, partial.as_ptr(), loss.as_mut_ptr()) })
}

/// dx into `out`, or dt with `targets`.
#[allow(clippy::too_many_arguments)]
pub fn backward(
    d: &LaunchDims,
    p: BceKernelParams,
    x: &[f32],
    t: &[f32],
    w: Option<&[f32]>,
    dy: &[f32],
    targets: bool,
    out: &mut [f32],
) -> EmuResult {
    let w = inputs(&p, x, t, w)?;
    need("dy", dy.len(), 1)?;
    need("out", out.len(), p.n)?;
    // SAFETY: lengths checked above.
    status(unsafe {
        emu_bce_backward(
            d,
            p,
            x.as_ptr(),
            t.as_ptr(),
            w,
            dy.as_ptr(),
            targets.into(),
            out.as_mut_ptr(),
        )
    })
}

pub fn backward_weight(
    d: &LaunchDims,
    p: BceKernelParams,
    x: &[f32],
    t: &[f32],
    dy: &[f32],
    dw: &mut [f32],
) -> EmuResult {
    logits(&p, x, t)?;
    need("dy", dy.len(), 1)?;
    need("dw", dw.len(), p.n / p.weight_group)?;
    // SAFETY: lengths checked above.
    status(unsafe {
        emu_bce_backward_weight(d, p, x.as_ptr(), t.as_ptr(), dy.as_ptr(), dw.as_mut_ptr())
    })
}
