//! The three sums soft Dice needs, fused: one pass over NDHWC probabilities `p` and targets
//! `t` gives, per row (sample, or the whole batch) and channel, `sum(p t)`, `sum(p)` and
//! `sum(t)`; one pass gives the gradient with respect to `p`. The targets are constants
//! (labels): they get no gradient.
mod cpu;

use crate::autograd::{BackwardOp, Var};
use crate::backend::BackendBase;
use crate::error::{Error, Result};
use crate::tensor::{Shape, Tensor};
use crate::tensor_ops::Backend;

/// Which sums: `n` samples of `voxels` voxels and `c` channels (NDHWC flattened to
/// `[n, voxels, c]`), one row of sums per sample or one for the whole batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DiceSumsShape {
    pub n: usize,
    pub voxels: usize,
    pub c: usize,
    /// One row per sample (`n` rows) instead of one row for the batch.
    pub per_sample: bool,
}

impl DiceSumsShape {
    /// The shape of NDHWC `dims`.
    pub fn of(dims: [usize; 5], per_sample: bool) -> Self {
        let [n, d, h, w, c] = dims;
        Self {
            n,
            voxels: d * h * w,
            c,
            per_sample,
        }
    }
    /// Rows of sums: `n`, or 1 for the batch.
    pub fn rows(&self) -> usize {
        if self.per_sample {
            self.n
        } else {
            1
        }
    }
    /// Voxels that add into one row.
    pub fn row_voxels(&self) -> usize {
        self.n * self.voxels / self.rows().max(1)
    }
    /// Elements of `p` (and of `t`).
    pub fn numel(&self) -> usize {
        self.n * self.voxels * self.c
    }
    /// Elements of the sums `[rows, c, 3]`.
    pub fn sums_len(&self) -> usize {
        self.rows() * self.c * 3
    }
    /// Fails unless `p` and `t` have `numel` elements and `sums` (the sums or their
    /// gradient, when given) has `sums_len`.
    pub fn check(&self, p: usize, t: usize, sums: Option<usize>) -> Result<()> {
        let sums_ok = sums.is_none_or(|s| s == self.sums_len());
        if p != self.numel() || t != self.numel() || !sums_ok {
            return Err(Error::shape(
                "dice_sums",
                format!(
                    "{self:?} needs {} elements of probabilities and targets and {} sums, \
                     got {p}, {t} and {sums:?}",
                    self.numel(),
                    self.sums_len()
                ),
            ));
        }
        Ok(())
    }
}

/// Where each of the three sums sits in the last axis of the `[rows, c, 3]` result.
pub const SUM_PT: usize = 0;
pub const SUM_P: usize = 1;
pub const SUM_T: usize = 2;

pub trait DiceSumsKernel: BackendBase {
    /// `[rows, c, 3]`: `sum(p t)`, `sum(p)`, `sum(t)` over each row's voxels, per channel.
    fn dice_sums(
        &self,
        p: &Self::Storage,
        t: &Self::Storage,
        shape: DiceSumsShape,
    ) -> Result<Self::Storage>;
    /// `dp = g_pt t + g_p` per element, with `grad` the `[rows, c, 3]` gradient of the sums
    /// (its `sum(t)` entries are not read: `t` is a constant).
    fn dice_sums_backward(
        &self,
        t: &Self::Storage,
        grad: &Self::Storage,
        shape: DiceSumsShape,
    ) -> Result<Self::Storage>;
}

/// Saves only the targets: the gradient is linear in `t` and does not involve `p`.
struct DiceSumsBackward<B: Backend> {
    t: Tensor<B>,
    shape: DiceSumsShape,
    p_shape: Shape,
}

impl<B: Backend> BackwardOp<B> for DiceSumsBackward<B> {
    fn backward(
        self: Box<Self>,
        grad: &Tensor<B>,
        _needs: &[bool],
    ) -> Result<Vec<Option<Tensor<B>>>> {
        let be = self.t.backend();
        let dp = be.dice_sums_backward(self.t.storage(), grad.storage(), self.shape)?;
        Ok(vec![Some(Tensor::from_storage(be, self.p_shape, dp)?)])
    }
}

impl<B: Backend> Var<B> {
    /// `[rows, C, 3]` holding `sum(p t)`, `sum(p)`, `sum(t)` (indices [`SUM_PT`],
    /// [`SUM_P`], [`SUM_T`]) per channel of NDHWC `self` (= p) and `targets` (same shape),
    /// over each sample's voxels (`per_sample`, rows = N) or the whole batch (rows = 1).
    /// Gradients flow to `self` only.
    pub fn dice_sums(&self, targets: &Tensor<B>, per_sample: bool) -> Result<Var<B>> {
        self.shape().expect_eq(targets.shape(), "dice_sums")?;
        let shape = DiceSumsShape::of(self.shape().ndhwc("dice_sums")?, per_sample);
        let p = self.value();
        let sums = p
            .backend()
            .dice_sums(p.storage(), targets.storage(), shape)?;
        let y = Tensor::from_storage(p.backend(), [shape.rows(), shape.c, 3].into(), sums)?;
        Ok(Var::from_op("dice_sums", y, &[self], || DiceSumsBackward {
            t: targets.clone(),
            shape,
            p_shape: self.shape().clone(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::autograd::check_gradients;
    use crate::backend::cpu::Cpu;
    use crate::tensor_ops::test_inputs::{wavy, weighted_sum};

    fn naive(p: &[f64], t: &[f64], s: DiceSumsShape) -> Vec<f64> {
        let mut out = vec![0.0; s.sums_len()];
        for i in 0..s.numel() {
            let (voxel, ch) = (i / s.c, i % s.c);
            let row = if s.per_sample { voxel / s.voxels } else { 0 };
            let o = (row * s.c + ch) * 3;
            out[o + SUM_PT] += p[i] * t[i];
            out[o + SUM_P] += p[i];
            out[o + SUM_T] += t[i];
        }
        out
    }

    #[test]
    fn known_sums_per_sample_and_for_the_batch() {
        let b = Cpu::new();
        // Two samples, two voxels, two channels.
        let p = [0.5f32, 0.25, 1.0, 0.0, 0.2, 0.8, 0.6, 0.4];
        let t = [1.0f32, 0.0, 1.0, 1.0, 0.0, 1.0, 1.0, 0.0];
        let pv = Var::constant(Tensor::from_host(&b, [2, 1, 1, 2, 2], &p).unwrap());
        let tt = Tensor::from_host(&b, [2, 1, 1, 2, 2], &t).unwrap();
        let per = pv.dice_sums(&tt, true).unwrap();
        assert_eq!(per.dims(), &[2, 2, 3]);
        assert_eq!(
            per.value().to_vec().unwrap(),
            vec![1.5, 1.5, 2.0, 0.0, 0.25, 1.0, 0.6, 0.8, 1.0, 0.8, 1.2, 1.0]
        );
        let batch = pv.dice_sums(&tt, false).unwrap();
        assert_eq!(batch.dims(), &[1, 2, 3]);
        let got = batch.value().to_vec().unwrap();
        let want = [2.1f32, 2.3, 3.0, 0.8, 1.45, 2.0];
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-6, "{got:?}");
        }
    }

    #[test]
    fn matches_a_naive_sum_across_chunk_boundaries() {
        // More voxels per row than one CPU chunk, an odd channel count.
        let dims = [2, 3, 37, 41, 3];
        let pt = wavy(dims);
        let s = DiceSumsShape::of(dims, true);
        let t: Vec<f64> = (0..s.numel()).map(|i| f64::from(i % 7 < 3)).collect();
        let tt = Tensor::from_host(pt.backend(), dims, &t).unwrap();
        let p = pt.to_vec().unwrap();
        for per_sample in [true, false] {
            let s = DiceSumsShape { per_sample, ..s };
            let got = Var::constant(pt.clone())
                .dice_sums(&tt, per_sample)
                .unwrap()
                .value()
                .to_vec()
                .unwrap();
            let want = naive(&p, &t, s);
            assert_eq!(got.len(), want.len());
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert!((g - w).abs() < 1e-9 * w.abs().max(1.0), "{i}: {g} vs {w}");
            }
        }
    }

    #[test]
    fn gradient_flows_to_the_probabilities() {
        let dims = [2, 2, 1, 3, 3];
        let p = wavy(dims);
        let t: Vec<f64> = (0..p.numel()).map(|i| f64::from((i * 5 % 7) < 3)).collect();
        let t = Tensor::from_host(p.backend(), dims, &t).unwrap();
        for per_sample in [true, false] {
            check_gradients(
                std::slice::from_ref(&p),
                |v| weighted_sum(&v[0].dice_sums(&t, per_sample)?),
                1e-6,
                1e-8,
                64,
            )
            .unwrap_or_else(|e| panic!("per_sample {per_sample}: {e}"));
        }
    }

    #[test]
    fn bad_shapes_are_errors_naming_the_op() {
        let b = Cpu::new();
        let p = Var::constant(Tensor::zeros(&b, [1, 1, 2, 2, 2]).unwrap());
        let other = Tensor::zeros(&b, [1, 1, 2, 2, 1]).unwrap();
        let err = p.dice_sums(&other, true).unwrap_err().to_string();
        assert!(
            err.contains("dice_sums") && err.contains("[1, 1, 2, 2, 1]"),
            "{err}"
        );
        let flat = Var::constant(Tensor::zeros(&b, [8]).unwrap());
        let flat_t = Tensor::zeros(&b, [8]).unwrap();
        assert!(flat
            .dice_sums(&flat_t, true)
            .unwrap_err()
            .to_string()
            .contains("dice_sums"));
        let s = DiceSumsShape::of([1, 1, 2, 2, 2], true);
        let err = b
            .dice_sums_backward(&vec![0.0; 8], &vec![0.0; 5], s)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("dice_sums") && err.contains("Some(5)"),
            "{err}"
        );
    }
}
