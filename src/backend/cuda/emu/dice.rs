//! Harness entry points of kernels/dice.cu.
use super::{need, status, EmuResult};
use crate::backend::cuda::params::LaunchDims;
use crate::backend::cuda::params_dice::{DiceKernelParams, DICE_THREADS};
use std::ffi::c_int;

extern "C" {
    fn emu_dice_sums_partial(
        d: *const LaunchDims,
        p: DiceKernelParams,
        prob: *const f32,
        target: *const f32,
        partial: *mut f64,
    ) -> c_int;
    fn emu_dice_sums_finish(
        d: *const LaunchDims,
        p: DiceKernelParams,
        partial: *const f64,
        out: *mut f32,
    ) -> c_int;
    fn emu_dice_sums_backward(
        d: *const LaunchDims,
        p: DiceKernelParams,
        target: *const f32,
        grad: *const f32,
        dp: *mut f32,
    ) -> c_int;
}

fn elements(p: &DiceKernelParams) -> u64 {
    p.rows * p.row_voxels * p.channels
}

fn sums(p: &DiceKernelParams) -> u64 {
    p.rows * p.channels * 3
}

/// Checks that the grid is the one the kernels index with (a wrong grid would read or
/// write outside the slices checked here).
fn grid(d: &LaunchDims, p: &DiceKernelParams) -> EmuResult {
    let chunks = p.channels.div_ceil(p.chunk_channels.max(1) as u64).max(1);
    let want = [p.splits as u64, p.rows, chunks];
    let covered = p.voxels_per_split * p.splits as u64 >= p.row_voxels;
    if d.grid.map(u64::from) != want || d.block != [DICE_THREADS, 1, 1] || !covered {
        return Err(format!("{d:?} is not the grid of {p:?}"));
    }
    Ok(())
}

pub fn sums_partial(
    d: &LaunchDims,
    p: DiceKernelParams,
    prob: &[f32],
    target: &[f32],
    partial: &mut [f64],
) -> EmuResult {
    grid(d, &p)?;
    need("prob", prob.len(), elements(&p))?;
    need("target", target.len(), elements(&p))?;
    need("partial", partial.len(), sums(&p) * p.splits as u64)?;
    // SAFETY: lengths and grid checked above.
    status(unsafe {
        emu_dice_sums_partial(d, p, prob.as_ptr(), target.as_ptr(), partial.as_mut_ptr())
    })
}

pub fn sums_finish(
    d: &LaunchDims,
    p: DiceKernelParams,
    partial: &[f64],
    out: &mut [f32],
) -> EmuResult {
    need("partial", partial.len(), sums(&p) * p.splits as u64)?;
    need("out", out.len(), sums(&p))?;
    // SAFETY: lengths checked above.
    status(unsafe { emu_dice_sums_finish(d, p, partial.as_ptr(), out.as_mut_ptr()) })
}

pub fn backward(
    d: &LaunchDims,
    p: DiceKernelParams,
    target: &[f32],
    grad: &[f32],
    dp: &mut [f32],
) -> EmuResult {
    grid(d, &p)?;
    need("target", target.len(), elements(&p))?;
    need("grad", grad.len(), sums(&p))?;
    need("dp", dp.len(), elements(&p))?;
    // SAFETY: lengths and grid checked above.
    status(unsafe { emu_dice_sums_backward(d, p, target.as_ptr(), grad.as_ptr(), dp.as_mut_ptr()) })
}
