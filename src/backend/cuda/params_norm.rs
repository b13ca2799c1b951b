//! Parameters of the normalisation kernels (mirrors of kernels/params_norm.h) and their
//! launch plan, shared by the device launchers (norm.rs) and the harness tests.
use super::conv_plan::{ConvPack, ConvPackKind, ConvPrecision};
use super::launch::{elementwise, ReducePlan};
use super::params::{LaunchDims, ReduceParams};
use crate::tensor_ops::norm::{NormKind, NormParams};
use crate::tensor_ops::reduce::Axis1;

/// The input viewed as `[outer, mid, c]`: batch norm is `[1, N * spatial, C]` with one
/// statistic per channel, group norm `[N, spatial, C]` with one per example and group of
/// `cpg` channels.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct NormKernelParams {
    pub outer: u64,
    pub mid: u64,
    pub c: u64,
    /// Channels per statistic.
    pub cpg: u64,
    pub eps: f64,
    /// The fused activation's slope below zero, in f32 as the CPU applies it.
    pub neg_slope: f32,
    pub has_gamma: u32,
    pub has_beta: u32,
    pub fixed_stats: u32,
}

/// The pack a tensor-core convolution at `precision` makes of an activation a norm writes
/// (rows of `c` channels, `conv_plan::ConvPack` of kind Rows): its output, the next
/// convolution's input, or its input's gradient, the previous convolution's dy. The norm
/// writes it alongside (kernels/norm.cu, `norm_apply_*_pack`, `norm_backward_dx_*_pack`)
/// when `c` is a whole number of 16-byte chunks, so that the pack is the activation's bits
/// converted with no padding. None otherwise, and for f32.
pub fn norm_pack(
    p: &NormKernelParams,
    precision: ConvPrecision,
    target_blocks: u32,
) -> Option<ConvPack> {
    let c = p.c as usize;
    let whole_chunks =
        precision != ConvPrecision::F32 && c.is_multiple_of(precision.channel_multiple());
    let rows = (p.outer * p.mid) as usize;
    whole_chunks
        .then(|| ConvPack::new(ConvPackKind::Rows, precision, [rows, 1, c], target_blocks).ok())
        .flatten()
}

impl NormKernelParams {
    /// The kernels' view of `p`, which must have whole groups (the launchers check).
    pub fn new(p: &NormParams, has_gamma: bool, has_beta: bool) -> Self {
        let (outer, cpg) = match p.kind {
            NormKind::Batch => (1, 1),
            NormKind::Group => (p.n, p.c / p.groups.max(1)),
        };
        Self {
            outer: outer as u64,
            mid: (p.n / outer.max(1) * p.spatial) as u64,
            c: p.c as u64,
            cpg: cpg.max(1) as u64,
            eps: p.eps,
            neg_slope: p.neg_slope as f32,
            has_gamma: has_gamma.into(),
            has_beta: has_beta.into(),
            fixed_stats: p.fixed_stats.into(),
        }
    }
    pub fn numel(&self) -> usize {
        (self.outer * self.mid * self.c) as usize
    }
    /// Means (and variances): `p.stats_len()` of the CPU's `NormParams`.
    pub fn stats_len(&self) -> usize {
        (self.outer * (self.c / self.cpg)) as usize
    }
    /// (outer slice, channel) pairs: the length of one coefficient plane.
    pub fn pairs(&self) -> usize {
        (self.outer * self.c) as usize
    }
    fn view(&self) -> Axis1 {
        Axis1 {
            outer: self.outer as usize,
            mid: self.mid as usize,
            inner: self.c as usize,
        }
    }
}

/// What `norm_backward_finish` writes: bits of its `grads` argument (params_norm.h).
pub const NORM_GRAD_DX: u32 = 1;
pub const NORM_GRAD_GAMMA: u32 = 2;
pub const NORM_GRAD_BETA: u32 = 4;

/// The `grads` bits of a backward that needs `[dx, dgamma, dbeta]`.
pub fn norm_grad_bits(needs: [bool; 3]) -> u32 {
    [NORM_GRAD_DX, NORM_GRAD_GAMMA, NORM_GRAD_BETA]
        .into_iter()
        .zip(needs)
        .filter(|&(_, need)| need)
        .fold(0, |bits, (bit, _)| bits | bit)
}

/// Planes of the backward's per-pair coefficients (`norm_backward_finish`): k1, k2, k3, k4
/// of dx and the forward's a, b.
pub const NORM_BACKWARD_COEF_PLANES: usize = 6;

/// `moving = momentum * moving + (1 - momentum) * correction * batch`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct NormMovingParams {
    pub n: u64,
    pub momentum: f64,
    pub correction: f64,
}

/// Every launch of one normalisation's forward or backward.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct NormPlan {
    pub params: NormKernelParams,
    /// The first pass of the statistics and of the backward: two planes of f64 partial
    /// sums, `[outer, splits, c]` each.
    pub reduce: ReduceParams,
    pub reduce_dims: LaunchDims,
    /// One thread per statistic (`norm_stats_finish`).
    pub stats_dims: LaunchDims,
    /// One thread per (outer slice, channel) (`norm_affine`).
    pub pairs_dims: LaunchDims,
    /// One thread per statistic or channel, whichever are more (`norm_backward_finish`).
    pub finish_dims: LaunchDims,
    /// Grid-stride over the elements (`norm_apply`, `norm_backward_dx`).
    pub element_dims: LaunchDims,
}

impl NormPlan {
    /// Splits the rows so that about `target_blocks` reduction blocks run; element-wise
    /// launches use at most `max_blocks` blocks.
    pub fn new(params: NormKernelParams, target_blocks: u32, max_blocks: u32) -> Self {
        let reduce = ReducePlan::new(params.view(), target_blocks);
        Self {
            params,
            reduce: reduce.first,
            reduce_dims: reduce.first_dims,
            stats_dims: elementwise(params.stats_len(), max_blocks),
            pairs_dims: elementwise(params.pairs(), max_blocks),
            finish_dims: elementwise(params.stats_len().max(params.c as usize), max_blocks),
            element_dims: elementwise(params.numel(), max_blocks),
        }
    }
    /// f64 values of the partial-sum buffer (both planes).
    pub fn partial_len(&self) -> usize {
        2 * (self.reduce.outer * self.reduce.splits as u64 * self.reduce.inner) as usize
    }
}

// SAFETY: plain #[repr(C)] data without pointers or padding, passed by value as a kernel
// argument whose C++ type has the same layout (checked by tests/cuda_harness_ops_a.rs).
unsafe impl cudarc::driver::DeviceRepr for NormKernelParams {}
unsafe impl cudarc::driver::DeviceRepr for NormMovingParams {}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(kind: NormKind, groups: usize) -> NormParams {
        NormParams {
            n: 2,
            spatial: 30,
            c: 6,
            groups,
            eps: 1e-5,
            neg_slope: 0.01,
            kind,
            fixed_stats: false,
        }
    }

    #[test]
    fn batch_and_group_views_have_the_cpu_statistics() {
        for (kind, groups, outer, mid, cpg) in [
            (NormKind::Batch, 1, 1, 60, 1),
            (NormKind::Group, 6, 2, 30, 1),
            (NormKind::Group, 2, 2, 30, 3),
            (NormKind::Group, 1, 2, 30, 6),
        ] {
            let p = params(kind, groups);
            let k = NormKernelParams::new(&p, true, false);
            assert_eq!((k.outer, k.mid, k.cpg), (outer, mid, cpg), "{p:?}");
            assert_eq!(k.stats_len(), p.stats_len());
            assert_eq!(k.numel(), p.numel());
            assert_eq!(k.mid * k.cpg, p.stats_count() as u64);
            assert_eq!((k.has_gamma, k.has_beta, k.neg_slope), (1, 0, 0.01f32));
        }
    }

    #[test]
    fn plan_covers_the_view() {
        let k = NormKernelParams::new(&params(NormKind::Group, 2), false, false);
        let plan = NormPlan::new(k, 16, 4);
        assert_eq!(
            (plan.reduce.outer, plan.reduce.mid, plan.reduce.inner),
            (2, 30, 6)
        );
        assert_eq!(plan.reduce_dims.grid[1], plan.reduce.splits);
        assert_eq!(plan.partial_len(), 2 * 2 * 6 * plan.reduce.splits as usize);
        assert_eq!(plan.element_dims.grid, [2, 1, 1], "360 elements");
    }
}
