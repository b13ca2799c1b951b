//! Parameters of the validation counts (mirror of kernels/params_confusion.h).
use crate::tensor_ops::confusion::{ClassSet, ConfusionSpec, Decision, MAX_CHANNELS, MAX_REGIONS};

/// Threads of a `region_confusion` block (`VX_CONFUSION_THREADS`).
pub const CONFUSION_THREADS: u32 = 256;

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConfusionKernelParams {
    pub voxels: u64,
    pub region_classes: [ClassSet; MAX_REGIONS],
    pub channels: u32,
    pub regions: u32,
    pub argmax: u32,
    pub pad_: u32,
    pub paint: [u32; MAX_CHANNELS],
}

impl ConfusionKernelParams {
    /// `spec`'s `regions` (at most MAX_REGIONS of them) over `voxels` voxels; the spec must
    /// have passed `ConfusionSpec::check`.
    pub fn new(spec: &ConfusionSpec, regions: &[ClassSet], voxels: usize) -> Self {
        let mut region_classes = [ClassSet::default(); MAX_REGIONS];
        region_classes[..regions.len()].copy_from_slice(regions);
        let mut paint = [0u32; MAX_CHANNELS];
        if let Decision::Paint(p) = &spec.decision {
            for (dst, &src) in paint.iter_mut().zip(p) {
                *dst = src.into();
            }
        }
        Self {
            voxels: voxels as u64,
            region_classes,
            channels: spec.channels as u32,
            regions: regions.len() as u32,
            argmax: (spec.decision == Decision::Argmax).into(),
            pad_: 0,
            paint,
        }
    }
    /// Length of the u64 count buffer.
    pub fn counts_len(&self) -> usize {
        3 * self.regions as usize
    }
}

// SAFETY: plain #[repr(C)] data without pointers or padding, passed by value as a kernel
// argument whose C++ type has the same layout (checked by tests/cuda_harness_dice.rs).
unsafe impl cudarc::driver::DeviceRepr for ConfusionKernelParams {}
