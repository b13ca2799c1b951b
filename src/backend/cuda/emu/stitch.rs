//! Harness entry points of kernels/stitch.cu.
use super::{need, status, EmuResult};
use crate::backend::cuda::params::LaunchDims;
use crate::backend::cuda::params_stitch::{StitchDivideParams, StitchParams};
use std::ffi::c_int;

extern "C" {
    fn emu_stitch_accumulate(
        d: *const LaunchDims,
        p: StitchParams,
        logits: *const f32,
        weights: *const f32,
        acc: *mut f32,
        norm: *mut f32,
    ) -> c_int;
    fn emu_stitch_divide(
        d: *const LaunchDims,
        p: StitchDivideParams,
        norm: *const f32,
        acc: *mut f32,
    ) -> c_int;
}

/// Adds window `p.window` of `logits`, weighted, into `acc` and its weights into `norm`.
pub fn accumulate(
    d: &LaunchDims,
    p: StitchParams,
    logits: &[f32],
    weights: &[f32],
    acc: &mut [f32],
    norm: &mut [f32],
) -> EmuResult {
    if !p.in_bounds() {
        return Err(format!("{p:?}: the extent leaves the window or the volume"));
    }
    let cells = p.window_cells() as u64;
    let k = p.channels as u64;
    need("logits", logits.len(), (p.window as u64 + 1) * cells * k)?;
    need("weights", weights.len(), cells)?;
    need("acc", acc.len(), p.acc_len() as u64)?;
    need("norm", norm.len(), p.voxels() as u64)?;
    // SAFETY: the extent stays inside the window and the volume (checked above), so the
    // kernel indexes below the lengths checked above.
    status(unsafe {
        emu_stitch_accumulate(
            d,
            p,
            logits.as_ptr(),
            weights.as_ptr(),
            acc.as_mut_ptr(),
            norm.as_mut_ptr(),
        )
    })
}

/// Divides each row of `channels` values of `acc` by its voxel's `norm`.
pub fn divide(d: &LaunchDims, p: StitchDivideParams, norm: &[f32], acc: &mut [f32]) -> EmuResult {
    need("norm", norm.len(), p.voxels)?;
    need("acc", acc.len(), p.elements() as u64)?;
    // SAFETY: lengths checked above.
    status(unsafe { emu_stitch_divide(d, p, norm.as_ptr(), acc.as_mut_ptr()) })
}
