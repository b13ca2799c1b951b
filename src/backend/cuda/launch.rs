//! Launch plans: grid shapes and the parameters that depend on them. Pure functions, used
//! by the device launchers and by the harness tests alike, so the emulated runs exercise
//! the same splits and tiles as the GPU.
use super::params::{
    Conv3dParams, LaunchDims, ReduceParams, CONV_BK, CONV_BM, CONV_BN, CONV_THREADS,
    ELEMENTWISE_THREADS, REDUCE_THREADS,
};
use crate::tensor_ops::reduce::Axis1;

/// Each reduction thread adds at least this many rows before a split is worth it.
const MIN_ROWS_PER_THREAD: u64 = 8;
/// A weight-gradient split covers at least this many reduction steps.
const MIN_STEPS_PER_SPLIT: u64 = 8;
const MAX_GRID_YZ: u64 = 65_535;

/// A grid-stride launch over `n` elements with at most `max_blocks` blocks.
pub fn elementwise(n: usize, max_blocks: u32) -> LaunchDims {
    let blocks = n
        .div_ceil(ELEMENTWISE_THREADS as usize)
        .clamp(1, max_blocks.max(1) as usize);
    LaunchDims::linear([blocks as u32, 1, 1], ELEMENTWISE_THREADS)
}

/// A sum over the middle of `view`: a first launch that writes `splits` partials per
/// output (the result itself when there is one split) and the launch that adds them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReducePlan {
    pub first: ReduceParams,
    pub first_dims: LaunchDims,
    /// Sums the f64 partials, viewed as `[outer, splits, inner]`.
    pub finish: ReduceParams,
    pub finish_dims: LaunchDims,
}

impl ReducePlan {
    /// Splits the rows so that about `target_blocks` blocks run (a few per SM).
    pub fn new(view: Axis1, target_blocks: u32) -> Self {
        let (first, first_dims) = reduce_launch(view, target_blocks);
        let partials = Axis1 {
            outer: view.outer,
            mid: first.splits as usize,
            inner: view.inner,
        };
        let (finish, finish_dims) = reduce_launch(partials, 1);
        Self {
            first,
            first_dims,
            finish,
            finish_dims,
        }
    }
    pub fn splits(&self) -> usize {
        self.first.splits as usize
    }
    /// Length of the f64 partial buffer.
    pub fn partial_len(&self) -> usize {
        (self.first.outer * self.first.inner) as usize * self.splits()
    }
}

fn reduce_launch(view: Axis1, target_blocks: u32) -> (ReduceParams, LaunchDims) {
    let (outer, mid, inner) = (view.outer as u64, view.mid as u64, view.inner as u64);
    // Wide rows get one column per lane; short rows put more columns in a block so that
    // its rows of threads are not mostly idle.
    let by_inner = inner.max(1).next_power_of_two().min(32);
    let by_mid = (REDUCE_THREADS as u64 / mid.max(1).next_power_of_two().min(256)).min(32);
    let cols = by_inner.max(by_mid);
    let rows = REDUCE_THREADS as u64 / cols;
    let col_blocks = (outer * inner).div_ceil(cols).max(1);
    let useful = mid.div_ceil(rows * MIN_ROWS_PER_THREAD).max(1);
    let wanted = (target_blocks as u64).div_ceil(col_blocks);
    let splits = wanted.min(useful).clamp(1, MAX_GRID_YZ);
    let mid_per_split = mid.div_ceil(splits);
    let splits = if mid_per_split == 0 {
        1
    } else {
        mid.div_ceil(mid_per_split)
    };
    let params = ReduceParams {
        outer,
        mid,
        inner,
        mid_per_split,
        cols: cols as u32,
        splits: splits as u32,
    };
    let dims = LaunchDims::linear([col_blocks as u32, splits as u32, 1], REDUCE_THREADS);
    (params, dims)
}

fn conv_dims(rows: usize, cols: usize, splits: u32) -> LaunchDims {
    LaunchDims::linear(
        [
            rows.div_ceil(CONV_BM as usize) as u32,
            cols.div_ceil(CONV_BN as usize) as u32,
            splits,
        ],
        CONV_THREADS,
    )
}

/// The forward convolution: output voxels x cout.
pub fn conv3d_forward(p: &Conv3dParams) -> LaunchDims {
    conv_dims(p.output_voxels(), p.cout as usize, 1)
}

/// The data gradient: input voxels x cin.
pub fn conv3d_backward_data(p: &Conv3dParams) -> LaunchDims {
    conv_dims(p.input_voxels(), p.cin as usize, 1)
}

/// The weight gradient: (tap, ci) x cout tiles, the output voxels split over grid.z so
/// that about `target_blocks` blocks run. With more than one split the kernel writes
/// `splits` partial gradients and `sum` adds them (`sum_axis1` over `[1, splits, K*cout]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvWeightsPlan {
    pub params: Conv3dParams,
    pub dims: LaunchDims,
    pub sum: Option<ReducePlan>,
}

impl ConvWeightsPlan {
    pub fn new(p: &Conv3dParams, target_blocks: u32) -> Self {
        let voxels = p.output_voxels() as u64;
        let bk = CONV_BK as u64;
        let tiles = (p.patch_len() as u64).div_ceil(CONV_BM as u64)
            * (p.cout as u64).div_ceil(CONV_BN as u64);
        let useful = voxels.div_ceil(bk * MIN_STEPS_PER_SPLIT).max(1);
        let splits = (target_blocks as u64)
            .div_ceil(tiles)
            .min(useful)
            .clamp(1, MAX_GRID_YZ);
        let split_len = voxels.div_ceil(splits).div_ceil(bk) * bk;
        let splits = voxels.div_ceil(split_len.max(1)).max(1);
        let params = Conv3dParams {
            splits: splits as i32,
            split_len: split_len as i32,
            ..*p
        };
        let sum = (splits > 1).then(|| {
            ReducePlan::new(
                Axis1 {
                    outer: 1,
                    mid: splits as usize,
                    inner: p.weight_len(),
                },
                1,
            )
        });
        Self {
            params,
            dims: conv_dims(p.patch_len(), p.cout as usize, splits as u32),
            sum,
        }
    }
    /// Length of the buffer the kernel writes: the gradient, or the stacked partials.
    pub fn workspace_len(&self) -> usize {
        self.params.weight_len() * self.params.splits as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cuda::params::Conv3dShape;

    fn covers(plan: &ReducePlan, mid: u64) {
        let p = plan.first;
        assert!(p.mid_per_split * p.splits as u64 >= mid, "{plan:?}");
        assert!(
            p.mid_per_split * (p.splits as u64 - 1) < mid.max(1),
            "{plan:?}"
        );
        assert_eq!(plan.first_dims.grid[1], p.splits);
        assert_eq!(plan.finish.splits, 1);
        assert_eq!(plan.finish.mid, p.splits as u64);
    }

    #[test]
    fn reduce_plans_cover_every_row_once() {
        let cases = [
            (1, 1 << 27, 1, 528),
            (1, 1 << 22, 32, 528),
            (2, 1 << 21, 4, 528),
            (1 << 22, 4, 1, 528),
            (3, 1000, 5, 2),
            (1, 0, 7, 528),
        ];
        for (outer, mid, inner, target) in cases {
            let plan = ReducePlan::new(Axis1 { outer, mid, inner }, target);
            covers(&plan, mid as u64);
            assert!(plan.first.cols.is_power_of_two() && plan.first.cols <= 32);
        }
        let full = ReducePlan::new(
            Axis1 {
                outer: 1,
                mid: 1 << 27,
                inner: 1,
            },
            528,
        );
        assert_eq!((full.first.cols, full.splits()), (1, 528));
        let per_voxel = ReducePlan::new(
            Axis1 {
                outer: 1 << 22,
                mid: 4,
                inner: 1,
            },
            528,
        );
        assert_eq!(
            (per_voxel.first.cols, per_voxel.splits()),
            (32, 1),
            "short rows: many columns per block, no split"
        );
        assert_eq!(per_voxel.first_dims.grid[0], 1 << 17);
    }

    #[test]
    fn elementwise_grid_is_capped() {
        assert_eq!(elementwise(0, 64).grid, [1, 1, 1]);
        assert_eq!(elementwise(1000, 64).grid, [4, 1, 1]);
        assert_eq!(elementwise(1 << 30, 64).grid, [64, 1, 1]);
    }

    #[test]
    fn weight_gradient_splits_are_whole_steps_and_cover_the_voxels() {
        let p = Conv3dParams::new(&Conv3dShape {
            n: 2,
            input: [64, 64, 64],
            cin: 32,
            output: [64, 64, 64],
            cout: 32,
            kernel: [3, 3, 3],
            stride: [1, 1, 1],
            pad_before: [1, 1, 1],
        })
        .unwrap();
        let plan = ConvWeightsPlan::new(&p, 528);
        let q = plan.params;
        assert_eq!(q.split_len % CONV_BK as i32, 0);
        assert!(q.splits as usize * q.split_len as usize >= p.output_voxels());
        assert!((q.splits as usize - 1) * (q.split_len as usize) < p.output_voxels());
        assert_eq!(plan.dims.grid, [14, 1, q.splits as u32]);
        assert_eq!(plan.sum.unwrap().first.mid, q.splits as u64);
        let single = ConvWeightsPlan::new(&p, 1);
        assert_eq!((single.params.splits, single.sum), (1, None));
    }

    #[test]
    fn conv_params_reject_what_the_kernels_cannot_index() {
        let mut s = Conv3dShape {
            n: 1,
            input: [5, 4, 3],
            cin: 3,
            output: [5, 4, 3],
            cout: 2,
            kernel: [3, 3, 3],
            stride: [1, 1, 1],
            pad_before: [1, 1, 1],
        };
        let p = Conv3dParams::new(&s).unwrap();
        assert_eq!(
            (p.output_voxels(), p.patch_len(), p.weight_len()),
            (60, 81, 162)
        );
        s.stride[1] = 0;
        assert!(Conv3dParams::new(&s).is_err());
        s.stride[1] = 1;
        s.input = [2048, 2048, 1024];
        let e = Conv3dParams::new(&s).unwrap_err().to_string();
        assert!(e.contains("32-bit"), "{e}");
    }
}
