//! Harness entry point of kernels/confusion.cu.
use super::{need, status, EmuResult};
use crate::backend::cuda::params::LaunchDims;
use crate::backend::cuda::params_confusion::ConfusionKernelParams;
use crate::tensor_ops::confusion::{MAX_CHANNELS, MAX_REGIONS};
use std::ffi::c_int;

extern "C" {
    fn emu_region_confusion(
        d: *const LaunchDims,
        p: ConfusionKernelParams,
        logits: *const f32,
        labels: *const f32,
        counts: *mut u64,
    ) -> c_int;
}

/// Adds the counts of `logits` against `labels` into `counts` (3 per region).
pub fn region_confusion(
    d: &LaunchDims,
    p: ConfusionKernelParams,
    logits: &[f32],
    labels: &[f32],
    counts: &mut [u64],
) -> EmuResult {
    if (p.argmax == 0 && p.channels as usize > MAX_CHANNELS) || p.regions as usize > MAX_REGIONS {
        return Err(format!("{p:?}: too many channels or regions"));
    }
    need("logits", logits.len(), p.voxels * p.channels as u64)?;
    need("labels", labels.len(), p.voxels)?;
    need("counts", counts.len(), p.counts_len() as u64)?;
    // SAFETY: lengths checked above; the kernel indexes regions and channels below the
    // fixed array sizes checked above.
    status(unsafe {
        emu_region_confusion(d, p, logits.as_ptr(), labels.as_ptr(), counts.as_mut_ptr())
    })
}
