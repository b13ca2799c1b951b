//! Parameters of the sliding-window stitching (mirror of kernels/params_stitch.h) and
//! their launch plans, shared by the device launchers and the harness. The kernels index
//! in 32 bits: the constructors refuse volumes and batches whose element counts do not fit.
use super::launch::elementwise;
use super::params::LaunchDims;
use crate::error::{Error, Result};
use crate::tensor_ops::stitch::{check_divide_lengths, StitchGeometry};

/// One window of a batch added into the volume.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StitchParams {
    pub volume: [u32; 3],
    pub patch: [u32; 3],
    pub start: [u32; 3],
    /// The window's part inside the volume: min(patch, volume - start) per axis.
    pub extent: [u32; 3],
    pub channels: u32,
    pub window: u32,
}

fn too_large(op: &'static str, what: String) -> Error {
    Error::shape(
        op,
        format!("{what} exceeds the CUDA kernels' 32-bit indices"),
    )
}

impl StitchParams {
    /// Window `window` of `g`, checked against the kernel's 32-bit indices.
    pub fn new(g: &StitchGeometry, window: usize) -> Result<Self> {
        let op = "accumulate_windows";
        let limit = u32::MAX as usize;
        let volume_len = g.voxels().checked_mul(g.channels);
        let logits_len = g
            .window_cells()
            .checked_mul(g.channels)
            .and_then(|v| v.checked_mul(g.starts.len()));
        if volume_len.is_none_or(|n| n > limit) || logits_len.is_none_or(|n| n > limit) {
            return Err(too_large(
                op,
                format!(
                    "a volume of {:?} x {} channels or {} windows of {:?}",
                    g.volume,
                    g.channels,
                    g.starts.len(),
                    g.patch
                ),
            ));
        }
        let u = |a: [usize; 3]| a.map(|v| v as u32);
        Ok(Self {
            volume: u(g.volume),
            patch: u(g.patch),
            start: u(g.starts[window]),
            extent: u(g.extent(window)),
            channels: g.channels as u32,
            window: window as u32,
        })
    }

    /// Threads' worth of work: cells inside the volume times channels.
    pub fn elements(&self) -> usize {
        self.extent.iter().map(|&e| e as usize).product::<usize>() * self.channels as usize
    }

    /// Voxels of the volume (elements of `norm`).
    pub fn voxels(&self) -> usize {
        self.volume.iter().map(|&e| e as usize).product()
    }

    /// Elements of `acc`.
    pub fn acc_len(&self) -> usize {
        self.voxels() * self.channels as usize
    }

    /// Cells of one window.
    pub fn window_cells(&self) -> usize {
        self.patch.iter().map(|&e| e as usize).product()
    }

    /// Whether the window's cells stay inside both the window and the volume (what the
    /// kernel assumes).
    pub fn in_bounds(&self) -> bool {
        (0..3).all(|a| {
            self.extent[a] <= self.patch[a]
                && self.start[a] as u64 + self.extent[a] as u64 <= self.volume[a] as u64
        })
    }

    /// A grid-stride launch over the window's elements, at most `max_blocks` blocks.
    pub fn dims(&self, max_blocks: u32) -> LaunchDims {
        elementwise(self.elements(), max_blocks)
    }
}

/// `acc [voxels, channels]` divided by `norm [voxels]`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StitchDivideParams {
    pub voxels: u64,
    pub channels: u32,
    pub pad_: u32,
}

impl StitchDivideParams {
    /// Checks the lengths and the kernel's 32-bit indices.
    pub fn new(acc_len: usize, norm_len: usize, channels: usize) -> Result<Self> {
        check_divide_lengths(acc_len, norm_len, channels)?;
        if acc_len > u32::MAX as usize {
            return Err(too_large(
                "divide_by_weights",
                format!("{acc_len} elements"),
            ));
        }
        Ok(Self {
            voxels: norm_len as u64,
            channels: channels as u32,
            pad_: 0,
        })
    }

    pub fn elements(&self) -> usize {
        self.voxels as usize * self.channels as usize
    }

    pub fn dims(&self, max_blocks: u32) -> LaunchDims {
        elementwise(self.elements(), max_blocks)
    }
}

// SAFETY: plain #[repr(C)] data without pointers or padding, passed by value as kernel
// arguments whose C++ types have the same layout (checked by tests/cuda_harness_stitch.rs).
unsafe impl cudarc::driver::DeviceRepr for StitchParams {}
unsafe impl cudarc::driver::DeviceRepr for StitchDivideParams {}
