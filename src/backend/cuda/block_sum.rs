//! The launch plan of the block-sum reductions of kernels/block_sum.h (the losses in
//! bce.cu and cross_entropy.cu): per-block f64 partial sums, then one block adds them.
use super::params::LaunchDims;

/// Threads of every block-sum block (`VX_SUM_THREADS`).
pub const SUM_THREADS: u32 = 256;

/// A sum over `n` items: `blocks` grid-stride blocks write one partial each (per plane),
/// then a single block adds the partials.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockSumPlan {
    pub partial_dims: LaunchDims,
    pub finish_dims: LaunchDims,
    /// Partials per plane (the grid of the first launch).
    pub blocks: u32,
}

impl BlockSumPlan {
    /// At most `max_blocks` partials; at least one, so an empty sum is 0.
    pub fn new(n: usize, max_blocks: u32) -> Self {
        let blocks = n
            .div_ceil(SUM_THREADS as usize)
            .clamp(1, max_blocks.max(1) as usize) as u32;
        Self {
            partial_dims: LaunchDims::linear([blocks, 1, 1], SUM_THREADS),
            finish_dims: LaunchDims::linear([1, 1, 1], SUM_THREADS),
            blocks,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partials_are_capped_and_never_zero() {
        assert_eq!(BlockSumPlan::new(0, 64).blocks, 1);
        assert_eq!(BlockSumPlan::new(257, 64).blocks, 2);
        let big = BlockSumPlan::new(1 << 30, 64);
        assert_eq!((big.blocks, big.partial_dims.grid), (64, [64, 1, 1]));
        assert_eq!(big.finish_dims.grid, [1, 1, 1]);
    }
}
