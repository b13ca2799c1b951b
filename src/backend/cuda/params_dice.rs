//! Parameters and launch plan of the fused Dice sums (mirror of kernels/params_dice.h).
use super::launch::elementwise;
use super::params::LaunchDims;
use crate::error::{Error, Result};
use crate::tensor_ops::dice_sums::DiceSumsShape;

/// Threads of every dice.cu block (`VX_DICE_THREADS`).
pub const DICE_THREADS: u32 = 256;
/// Each thread adds at least this many voxels before another split is worth it.
const MIN_VOXELS_PER_THREAD: u64 = 8;
const MAX_GRID_YZ: u64 = 65_535;

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DiceKernelParams {
    pub rows: u64,
    pub row_voxels: u64,
    pub channels: u64,
    pub voxels_per_split: u64,
    pub splits: u32,
    pub chunk_channels: u32,
}

// SAFETY: plain #[repr(C)] data without pointers or padding, passed by value as a kernel
// argument whose C++ type has the same layout (checked by tests/cuda_harness_dice.rs).
unsafe impl cudarc::driver::DeviceRepr for DiceKernelParams {}

/// The launches of one Dice sum (and of its backward, which covers the same blocks).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DicePlan {
    pub params: DiceKernelParams,
    /// `dice_sums_partial` and `dice_sums_backward`: (splits, rows, channel chunks).
    pub dims: LaunchDims,
    /// `dice_sums_finish`: one thread per output.
    pub finish_dims: LaunchDims,
}

impl DicePlan {
    /// Splits each row's voxels so that about `target_blocks` blocks run in all.
    pub fn new(shape: DiceSumsShape, target_blocks: u32, max_blocks: u32) -> Result<Self> {
        let rows = shape.rows() as u64;
        let channels = shape.c as u64;
        let row_voxels = shape.row_voxels() as u64;
        let chunk = channels.clamp(1, DICE_THREADS as u64);
        let chunks = channels.div_ceil(chunk).max(1);
        if rows > MAX_GRID_YZ || chunks > MAX_GRID_YZ {
            return Err(Error::shape(
                "dice_sums",
                format!("{rows} rows of {chunks} channel chunks exceed the grid ({MAX_GRID_YZ})"),
            ));
        }
        let groups = DICE_THREADS as u64 / chunk;
        let wanted = (target_blocks as u64).div_ceil(rows.max(1) * chunks);
        let useful = row_voxels.div_ceil(groups * MIN_VOXELS_PER_THREAD);
        let splits = wanted.min(useful).clamp(1, u32::MAX as u64);
        let voxels_per_split = row_voxels.div_ceil(splits).max(1);
        let splits = row_voxels.div_ceil(voxels_per_split).max(1);
        let params = DiceKernelParams {
            rows,
            row_voxels,
            channels,
            voxels_per_split,
            splits: splits as u32,
            chunk_channels: chunk as u32,
        };
        Ok(Self {
            params,
            dims: LaunchDims::linear([splits as u32, rows as u32, chunks as u32], DICE_THREADS),
            finish_dims: elementwise(shape.sums_len(), max_blocks),
        })
    }
    /// Length of the f64 partial buffer.
    pub fn partial_len(&self) -> usize {
        let p = &self.params;
        (p.rows * p.channels * 3) as usize * p.splits as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(dims: [usize; 5], per_sample: bool, target: u32) -> DicePlan {
        DicePlan::new(DiceSumsShape::of(dims, per_sample), target, 64).unwrap()
    }

    #[test]
    fn plans_cover_every_voxel_once_and_fill_the_device() {
        for (dims, per_sample, target) in [
            ([2, 128, 128, 128, 3], true, 528),
            ([2, 128, 128, 128, 3], false, 528),
            ([1, 3, 5, 7, 300], true, 528),
            ([3, 1, 1, 1, 1], true, 528),
            ([2, 0, 4, 4, 2], false, 528),
            ([2, 5, 6, 7, 4], true, 3),
        ] {
            let p = plan(dims, per_sample, target);
            let k = p.params;
            assert!(
                k.voxels_per_split * k.splits as u64 >= k.row_voxels,
                "{p:?}"
            );
            assert!(
                k.voxels_per_split * (k.splits as u64 - 1) < k.row_voxels.max(1),
                "{p:?}"
            );
            assert_eq!(p.dims.grid[0], k.splits);
            assert!(k.chunk_channels >= 1 && k.chunk_channels <= DICE_THREADS);
        }
        let big = plan([2, 128, 128, 128, 3], true, 528);
        assert_eq!((big.params.splits, big.dims.grid), (264, [264, 2, 1]));
        assert_eq!(big.params.chunk_channels, 3);
        let wide = plan([1, 3, 5, 7, 300], true, 528);
        assert_eq!((wide.dims.grid[2], wide.params.chunk_channels), (2, 256));
        let tiny = plan([2, 5, 6, 7, 4], true, 3);
        assert_eq!(tiny.params.splits, 1);
    }

    #[test]
    fn too_many_rows_is_an_error() {
        let err = DicePlan::new(DiceSumsShape::of([70_000, 1, 1, 1, 1], true), 528, 64)
            .unwrap_err()
            .to_string();
        assert!(err.contains("dice_sums") && err.contains("70000"), "{err}");
    }
}
