//! Launch plans: grid shapes and the parameters that depend on them. Pure functions, used
//! by the device launchers and by the harness tests alike, so the emulated runs exercise
//! the same splits and tiles as the GPU.
use super::params::{LaunchDims, ReduceParams, ELEMENTWISE_THREADS, REDUCE_THREADS};
use crate::tensor_ops::reduce::Axis1;

/// Each reduction thread adds at least this many rows before a split is worth it.
const MIN_ROWS_PER_THREAD: u64 = 8;
const MAX_GRID_YZ: u64 = 65_535;

/// A grid-stride launch over `n` elements with at most `max_blocks` blocks.
pub fn elementwise(n: usize, max_blocks: u32) -> LaunchDims {
    let blocks = n
        .div_ceil(ELEMENTWISE_THREADS as usize)
        .clamp(1, max_blocks.max(1) as usize);
    LaunchDims::linear([blocks as u32, 1, 1], ELEMENTWISE_THREADS)
}

/// Middle axes up to this long are summed one thread per output whatever the outputs'
/// count: e.g. the partials of a split convolution.
const COLUMN_SUM_MAX_MID: usize = 16;

/// The launch of `sum_axis1_columns` (one thread per output, rows added in order, at most
/// `max_blocks` blocks) where it suits `view`: a short middle axis, or outputs that fill a
/// wave of those blocks. None where the block reduction ([`ReducePlan`]) is needed: few
/// outputs over long rows.
pub fn column_sum(view: Axis1, max_blocks: u32) -> Option<(ReduceParams, LaunchDims)> {
    let outputs = view.outer * view.inner;
    let wave = max_blocks as usize * ELEMENTWISE_THREADS as usize;
    (view.mid <= COLUMN_SUM_MAX_MID || outputs >= wave).then(|| {
        let params = ReduceParams {
            outer: view.outer as u64,
            mid: view.mid as u64,
            inner: view.inner as u64,
            mid_per_split: view.mid as u64,
            cols: 1,
            splits: 1,
        };
        (params, elementwise(outputs, max_blocks))
    })
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

#[cfg(test)]
mod tests {
    use super::*;

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
    fn column_sums_take_short_columns_and_outputs_that_fill_the_device() {
        let view = |outer, mid, inner| Axis1 { outer, mid, inner };
        let (p, dims) = column_sum(view(1, 3, 1 << 21), 1056).unwrap();
        assert_eq!((p.outer, p.mid, p.inner, p.splits), (1, 3, 1 << 21, 1));
        assert_eq!(dims.grid, [1056, 1, 1]);
        assert!(column_sum(view(1 << 22, 4, 1), 1056).is_some());
        assert!(
            column_sum(view(2, 1 << 20, 1 << 20), 1056).is_some(),
            "a wave of outputs"
        );
        assert!(
            column_sum(view(3, 1000, 77), 1056).is_none(),
            "few outputs, long rows"
        );
        assert!(column_sum(view(1, 1 << 27, 1), 1056).is_none());
        let (empty, dims) = column_sum(view(5, 0, 3), 1056).unwrap();
        assert_eq!((empty.mid, dims.grid), (0, [1, 1, 1]));
    }

    #[test]
    fn elementwise_grid_is_capped() {
        assert_eq!(elementwise(0, 64).grid, [1, 1, 1]);
        assert_eq!(elementwise(1000, 64).grid, [4, 1, 1]);
        assert_eq!(elementwise(1 << 30, 64).grid, [64, 1, 1]);
    }
}
