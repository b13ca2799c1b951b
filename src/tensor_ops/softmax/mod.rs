//! Softmax and log-softmax over the last axis (the channels of an NDHWC tensor): each
//! voxel's row of class scores becomes probabilities (or their logarithms).
mod cpu;

use crate::autograd::{BackwardOp, Var};
use crate::backend::BackendBase;
use crate::error::{Error, Result};
use crate::tensor::Tensor;
use crate::tensor_ops::Backend;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SoftmaxOp {
    /// exp(x_k - max) / sum_j exp(x_j - max).
    Softmax,
    /// x_k - max - log(sum_j exp(x_j - max)).
    LogSoftmax,
}

pub trait SoftmaxKernel: BackendBase {
    /// `op` applied to each row of `channels` contiguous values.
    fn softmax_forward(
        &self,
        op: SoftmaxOp,
        x: &Self::Storage,
        channels: usize,
    ) -> Result<Self::Storage>;
    /// dx from the forward output `y` and `dy`: `y * (dy - sum(dy * y))` for softmax,
    /// `dy - exp(y) * sum(dy)` for log-softmax (sums over each row).
    fn softmax_backward(
        &self,
        op: SoftmaxOp,
        y: &Self::Storage,
        dy: &Self::Storage,
        channels: usize,
    ) -> Result<Self::Storage>;
}

/// `op` over the last axis of `x`, without recording.
pub fn softmax<B: Backend>(op: SoftmaxOp, x: &Tensor<B>) -> Result<Tensor<B>> {
    let channels = x.shape().last();
    if x.shape().rank() == 0 || channels == 0 {
        return Err(Error::shape(
            "softmax",
            format!(
                "{op:?} needs a last axis of at least one element, got shape {}",
                x.shape()
            ),
        ));
    }
    let y = x.backend().softmax_forward(op, x.storage(), channels)?;
    Tensor::from_storage(x.backend(), x.shape().clone(), y)
}

/// Saves the output only: both backward formulas are written in terms of it.
struct SoftmaxBackward<B: Backend> {
    op: SoftmaxOp,
    y: Tensor<B>,
}

impl<B: Backend> BackwardOp<B> for SoftmaxBackward<B> {
    fn backward(
        self: Box<Self>,
        grad: &Tensor<B>,
        _needs: &[bool],
    ) -> Result<Vec<Option<Tensor<B>>>> {
        let be = self.y.backend();
        let dx = be.softmax_backward(
            self.op,
            self.y.storage(),
            grad.storage(),
            self.y.shape().last(),
        )?;
        Ok(vec![Some(Tensor::from_storage(
            be,
            self.y.shape().clone(),
            dx,
        )?)])
    }
}

impl<B: Backend> Var<B> {
    fn softmax_op(&self, op: SoftmaxOp) -> Result<Var<B>> {
        let y = softmax(op, self.value())?;
        Ok(Var::from_op("softmax", y.clone(), &[self], || {
            SoftmaxBackward { op, y }
        }))
    }
    /// Softmax over the last axis (channels).
    pub fn softmax(&self) -> Result<Var<B>> {
        self.softmax_op(SoftmaxOp::Softmax)
    }
    /// Log-softmax over the last axis (channels), stable for large scores.
    pub fn log_softmax(&self) -> Result<Var<B>> {
        self.softmax_op(SoftmaxOp::LogSoftmax)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::autograd::check_gradients;
    use crate::backend::cpu::{Cpu, Cpu64};

    #[test]
    fn known_values_and_large_scores() {
        let b = Cpu64::new();
        let x = Var::constant(
            Tensor::from_host(&b, [2, 3], &[1.0, 2.0, 3.0, 1000.0, 1000.0, -1000.0]).unwrap(),
        );
        let p = x.softmax().unwrap().value().to_vec().unwrap();
        let z = 1.0 + 1f64.exp() + 2f64.exp();
        let want = [1.0 / z, 1f64.exp() / z, 2f64.exp() / z, 0.5, 0.5, 0.0];
        for (a, w) in p.iter().zip(want) {
            assert!((a - w).abs() < 1e-12, "{p:?}");
        }
        let lp = x.log_softmax().unwrap().value().to_vec().unwrap();
        assert!((lp[0] + z.ln()).abs() < 1e-12);
        assert!((lp[3] - 0.5f64.ln()).abs() < 1e-12);
        assert!((lp[5] + 2000.0 + 2f64.ln()).abs() < 1e-9, "{lp:?}");
        let f = Var::constant(Tensor::from_host(&Cpu::new(), [1, 2], &[88.0f32, 100.0]).unwrap());
        let pf = f.softmax().unwrap().value().to_vec().unwrap();
        assert!(pf.iter().all(|v| v.is_finite()) && (pf[0] + pf[1] - 1.0).abs() < 1e-6);
    }

    #[test]
    fn rejects_an_empty_last_axis() {
        let b = Cpu::new();
        let x = Var::constant(Tensor::zeros(&b, [2, 0]).unwrap());
        let err = x.softmax().unwrap_err().to_string();
        assert!(err.contains("softmax") && err.contains("[2, 0]"), "{err}");
    }

    #[test]
    fn gradients_of_softmax_and_log_softmax() {
        let b = Cpu64::new();
        let data: Vec<f64> = (0..24).map(|v| (v as f64 * 0.71).sin() * 2.0).collect();
        let x = Tensor::from_host(&b, [1, 2, 1, 3, 4], &data).unwrap();
        let w: Vec<f64> = (0..24).map(|v| (v as f64 * 0.37).cos()).collect();
        let w = Tensor::from_host(&b, [1, 2, 1, 3, 4], &w).unwrap();
        for op in [SoftmaxOp::Softmax, SoftmaxOp::LogSoftmax] {
            let report = check_gradients(
                std::slice::from_ref(&x),
                |v| v[0].softmax_op(op)?.mul(&Var::constant(w.clone()))?.sum(),
                1e-6,
                1e-7,
                64,
            )
            .unwrap_or_else(|e| panic!("{op:?}: {e}"));
            assert_eq!(report.checked, 24);
        }
    }
}
