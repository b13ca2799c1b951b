//! Parameters and launch plan of the matrix product (mirrors of kernels/params_matmul.h).
use super::launch::ReducePlan;
use super::params::LaunchDims;
use crate::error::{Error, Result};
use crate::tensor_ops::matmul::MatmulParams;
use crate::tensor_ops::reduce::Axis1;

/// Output rows and columns per block, reduction step, threads per block
/// (`VX_MATMUL_BM`, `VX_MATMUL_BN`, `VX_MATMUL_BK`, `VX_MATMUL_THREADS`).
pub const MATMUL_BM: u32 = 64;
pub const MATMUL_BN: u32 = 64;
pub const MATMUL_BK: u32 = 16;
pub const MATMUL_THREADS: u32 = 256;

/// A k slice covers at least this many reduction steps.
const MIN_STEPS_PER_SPLIT: u64 = 8;
const MAX_GRID_X: u64 = i32::MAX as u64;
const MAX_GRID_YZ: u64 = 65_535;

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MatmulKernelParams {
    pub m: u64,
    pub n: u64,
    pub k: u64,
    pub k_per_split: u64,
    pub trans_a: u32,
    pub trans_b: u32,
    pub has_bias: u32,
    pub pad_: u32,
}

/// The product's launch: 64 x 64 output tiles over grid (x, y), k split over grid.z when
/// the tiles alone leave the device idle (small outputs of long products, like the
/// weight gradient of a dense layer over every voxel). With splits, the kernel writes
/// `splits` partial products and `sum` adds them (`sum_axis1` over `[1, splits, m * n]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MatmulPlan {
    pub params: MatmulKernelParams,
    pub dims: LaunchDims,
    pub sum: Option<ReducePlan>,
}

impl MatmulPlan {
    /// Aims at `target_blocks` blocks; fails when the output needs more tiles than a grid
    /// holds.
    pub fn new(p: &MatmulParams, has_bias: bool, target_blocks: u32) -> Result<Self> {
        let (m, n, k) = (p.m as u64, p.n as u64, p.k as u64);
        let bk = MATMUL_BK as u64;
        let row_tiles = m.div_ceil(MATMUL_BM as u64).max(1);
        let col_tiles = n.div_ceil(MATMUL_BN as u64).max(1);
        if row_tiles > MAX_GRID_X || col_tiles > MAX_GRID_YZ {
            return Err(Error::shape(
                "matmul (cuda)",
                format!("{p:?}: the output has more tiles than a launch grid holds"),
            ));
        }
        let useful = k.div_ceil(bk * MIN_STEPS_PER_SPLIT).max(1);
        let splits = (target_blocks as u64)
            .div_ceil(row_tiles * col_tiles)
            .min(useful)
            .clamp(1, MAX_GRID_YZ);
        let k_per_split = (k.div_ceil(splits).div_ceil(bk) * bk).max(bk);
        let splits = k.div_ceil(k_per_split).max(1);
        let params = MatmulKernelParams {
            m,
            n,
            k,
            k_per_split,
            trans_a: p.trans_a.into(),
            trans_b: p.trans_b.into(),
            has_bias: has_bias.into(),
            pad_: 0,
        };
        let sum = (splits > 1).then(|| {
            ReducePlan::new(
                Axis1 {
                    outer: 1,
                    mid: splits as usize,
                    inner: p.m * p.n,
                },
                1,
            )
        });
        Ok(Self {
            params,
            dims: LaunchDims::linear(
                [row_tiles as u32, col_tiles as u32, splits as u32],
                MATMUL_THREADS,
            ),
            sum,
        })
    }
    pub fn splits(&self) -> usize {
        self.dims.grid[2] as usize
    }
    /// Length of the buffer the kernel writes: the product, or the stacked partials.
    pub fn workspace_len(&self) -> usize {
        (self.params.m * self.params.n) as usize * self.splits()
    }
}

// SAFETY: plain #[repr(C)] data without pointers or padding, passed by value as a kernel
// argument whose C++ type has the same layout (checked by tests/cuda_harness_ops_a.rs).
unsafe impl cudarc::driver::DeviceRepr for MatmulKernelParams {}

#[cfg(test)]
mod tests {
    use super::*;

    fn product(m: usize, n: usize, k: usize) -> MatmulParams {
        MatmulParams {
            m,
            n,
            k,
            trans_a: true,
            trans_b: false,
        }
    }

    #[test]
    fn long_products_with_small_outputs_split_k_in_whole_steps() {
        // The weight gradient of a dense layer over 2^22 voxels: [32, 2^22] x [2^22, 3].
        let plan = MatmulPlan::new(&product(32, 3, 1 << 22), true, 528).unwrap();
        let p = plan.params;
        assert_eq!(plan.splits(), 528);
        assert_eq!(p.k_per_split % MATMUL_BK as u64, 0);
        assert!(p.k_per_split * plan.splits() as u64 >= p.k);
        assert!(p.k_per_split * (plan.splits() as u64 - 1) < p.k);
        assert_eq!(plan.sum.unwrap().first.mid, 528);
        assert_eq!(plan.workspace_len(), 32 * 3 * 528);
        assert_eq!((p.trans_a, p.trans_b, p.has_bias), (1, 0, 1));
    }

    #[test]
    fn large_outputs_and_empty_k_do_not_split() {
        let plan = MatmulPlan::new(&product(1 << 20, 64, 32), false, 528).unwrap();
        assert_eq!((plan.dims.grid, plan.sum), ([1 << 14, 1, 1], None));
        let empty = MatmulPlan::new(&product(5, 7, 0), true, 528).unwrap();
        assert_eq!((empty.splits(), empty.params.k_per_split), (1, 16));
        assert!(MatmulPlan::new(&product(1, 64 << 16, 1), false, 1).is_err());
    }
}
