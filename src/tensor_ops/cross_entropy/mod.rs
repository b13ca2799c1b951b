//! Softmax cross-entropy with integer class labels, fused: the softmax is recomputed in the
//! backward instead of stored, and no one-hot target is built. Labels are class indices
//! stored as floats, one per row of logits. Also `one_hot`, which turns such labels into
//! 0/1 channels (for Dice on softmax outputs).
mod cpu;

use crate::autograd::{BackwardOp, Var};
use crate::backend::BackendBase;
use crate::error::{Error, Result};
use crate::tensor::{Shape, Tensor};
use crate::tensor_ops::Backend;

pub trait CrossEntropyKernel: BackendBase {
    /// For rows of `classes` logits and one label per row, the one-element buffers
    /// `(sum_r w[y_r] * nll_r / W, W)` with `W = sum_r w[y_r]` (`w = 1` without weights).
    /// Fails on a label that is not an integer in `0..classes`.
    fn cross_entropy_forward(
        &self,
        logits: &Self::Storage,
        labels: &Self::Storage,
        class_weights: Option<&Self::Storage>,
        classes: usize,
    ) -> Result<(Self::Storage, Self::Storage)>;
    /// d logits = dy * w[y] / W * (softmax(row) - onehot(y)); `total_weight` is the W
    /// from the forward, `dy` the one-element upstream gradient.
    fn cross_entropy_backward(
        &self,
        logits: &Self::Storage,
        labels: &Self::Storage,
        class_weights: Option<&Self::Storage>,
        total_weight: &Self::Storage,
        dy: &Self::Storage,
        classes: usize,
    ) -> Result<Self::Storage>;
    /// `labels.len() * classes` values: row r is 1 at column `labels[r]`, 0 elsewhere.
    /// Fails on a label that is not an integer in `0..classes`.
    fn one_hot(&self, labels: &Self::Storage, classes: usize) -> Result<Self::Storage>;
}

/// Checks that `labels` has `logits`' shape without its last axis; returns the class count.
fn check_label_shape(op: &'static str, logits: &Shape, labels: &Shape) -> Result<usize> {
    let ld = logits.dims();
    if ld.is_empty() || ld[..ld.len() - 1] != *labels.dims() || logits.last() == 0 {
        return Err(Error::shape(
            op,
            format!("labels of shape {labels} do not fit logits of shape {logits} (labels are the logits' shape without the class axis)"),
        ));
    }
    Ok(logits.last())
}

/// 0/1 channels from class indices: `[.., K]` from `[..]`.
pub fn one_hot<B: Backend>(labels: &Tensor<B>, classes: usize) -> Result<Tensor<B>> {
    if classes == 0 {
        return Err(Error::shape("one_hot", "zero classes"));
    }
    let out = labels.backend().one_hot(labels.storage(), classes)?;
    let mut dims = labels.dims().to_vec();
    dims.push(classes);
    Tensor::from_storage(labels.backend(), Shape(dims), out)
}

struct CrossEntropyBackward<B: Backend> {
    logits: Tensor<B>,
    labels: Tensor<B>,
    class_weights: Option<Tensor<B>>,
    total_weight: Tensor<B>,
}

impl<B: Backend> BackwardOp<B> for CrossEntropyBackward<B> {
    fn backward(
        self: Box<Self>,
        grad: &Tensor<B>,
        _needs: &[bool],
    ) -> Result<Vec<Option<Tensor<B>>>> {
        let be = self.logits.backend();
        let dx = be.cross_entropy_backward(
            self.logits.storage(),
            self.labels.storage(),
            self.class_weights.as_ref().map(|w| w.storage()),
            self.total_weight.storage(),
            grad.storage(),
            self.logits.shape().last(),
        )?;
        Ok(vec![Some(Tensor::from_storage(
            be,
            self.logits.shape().clone(),
            dx,
        )?)])
    }
}

impl<B: Backend> Var<B> {
    /// Cross-entropy of softmax(`self`) (logits `[.., K]`) against class indices `labels`
    /// (`[..]`, floats), the weighted mean `sum w[y] nll / sum w[y]` as in PyTorch.
    /// Gradients flow to the logits only.
    pub fn cross_entropy(
        &self,
        labels: &Tensor<B>,
        class_weights: Option<&[f64]>,
    ) -> Result<Var<B>> {
        let classes = check_label_shape("cross_entropy", self.shape(), labels.shape())?;
        let be = self.backend();
        let weights = match class_weights {
            Some(w) if w.len() != classes => {
                return Err(Error::shape(
                    "cross_entropy",
                    format!("{} class weights for {classes} classes", w.len()),
                ))
            }
            Some(w) if w.iter().any(|v| !v.is_finite() || *v < 0.0) => {
                return Err(Error::config(
                    "class weights",
                    format!("{w:?} (must be finite and non-negative)"),
                ))
            }
            Some(w) => Some(Tensor::from_host(
                be,
                [classes],
                &w.iter()
                    .map(|&v| crate::backend::Element::of(v))
                    .collect::<Vec<_>>(),
            )?),
            None => None,
        };
        let (loss, total) = be.cross_entropy_forward(
            self.value().storage(),
            labels.storage(),
            weights.as_ref().map(|w| w.storage()),
            classes,
        )?;
        let loss = Tensor::from_storage(be, Shape::scalar(), loss)?;
        let total_weight = Tensor::from_storage(be, Shape::scalar(), total)?;
        Ok(Var::from_op("cross_entropy", loss, &[self], || {
            CrossEntropyBackward {
                logits: self.value().clone(),
                labels: labels.clone(),
                class_weights: weights,
                total_weight,
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::autograd::check_gradients;
    use crate::backend::cpu::{Cpu, Cpu64};

    #[test]
    fn uniform_logits_give_ln_k() {
        let b = Cpu::new();
        for k in [2usize, 3, 7] {
            let x = Var::constant(Tensor::full(&b, [2, 1, 2, 2, k], 0.37).unwrap());
            let labels: Vec<f32> = (0..8).map(|i| (i % k) as f32).collect();
            let y = Tensor::from_host(&b, [2, 1, 2, 2], &labels).unwrap();
            let l = x.cross_entropy(&y, None).unwrap().value().item().unwrap();
            assert!((l - (k as f64).ln()).abs() < 1e-6, "K {k}: {l}");
        }
    }

    #[test]
    fn weighted_mean_known_value() {
        let b = Cpu64::new();
        let x = Var::constant(Tensor::from_host(&b, [2, 2], &[2.0, 0.0, 0.0, 1.0]).unwrap());
        let y = Tensor::from_host(&b, [2], &[0.0, 0.0]).unwrap();
        let nll0 = (1.0 + (-2f64).exp()).ln();
        let nll1 = (1.0 + 1f64.exp()).ln();
        let plain = x.cross_entropy(&y, None).unwrap().value().item().unwrap();
        assert!((plain - (nll0 + nll1) / 2.0).abs() < 1e-12);
        let y = Tensor::from_host(&b, [2], &[0.0, 1.0]).unwrap();
        let nll1 = (1.0 + (-1f64).exp()).ln();
        let w = x
            .cross_entropy(&y, Some(&[1.0, 3.0]))
            .unwrap()
            .value()
            .item()
            .unwrap();
        assert!((w - (nll0 + 3.0 * nll1) / 4.0).abs() < 1e-12, "{w}");
    }

    #[test]
    fn bad_labels_and_shapes_are_errors() {
        let b = Cpu::new();
        let x = Var::constant(Tensor::zeros(&b, [1, 1, 1, 2, 3]).unwrap());
        for bad in [3.0f32, -1.0, 1.5, f32::NAN] {
            let y = Tensor::from_host(&b, [1, 1, 1, 2], &[0.0, bad]).unwrap();
            let err = x.cross_entropy(&y, None).unwrap_err().to_string();
            assert!(
                err.contains("cross_entropy") && err.contains("label"),
                "{err}"
            );
            let err = one_hot(&y, 3).unwrap_err().to_string();
            assert!(err.contains("one_hot"), "{err}");
        }
        let y = Tensor::zeros(&b, [1, 1, 2, 1]).unwrap();
        let err = x.cross_entropy(&y, None).unwrap_err().to_string();
        assert!(
            err.contains("[1, 1, 2, 1]") && err.contains("[1, 1, 1, 2, 3]"),
            "{err}"
        );
        let y = Tensor::zeros(&b, [1, 1, 1, 2]).unwrap();
        let err = x
            .cross_entropy(&y, Some(&[1.0, 2.0]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("2 class weights for 3 classes"), "{err}");
    }

    #[test]
    fn one_hot_known_values() {
        let b = Cpu::new();
        let y = Tensor::from_host(&b, [1, 1, 1, 3], &[2.0f32, 0.0, 1.0]).unwrap();
        let h = one_hot(&y, 3).unwrap();
        assert_eq!(h.dims(), &[1, 1, 1, 3, 3]);
        assert_eq!(
            h.to_vec().unwrap(),
            vec![0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        );
    }

    #[test]
    fn gradients_with_and_without_class_weights() {
        let b = Cpu64::new();
        let x: Vec<f64> = (0..36).map(|i| (i as f64 * 0.53).sin() * 2.5).collect();
        let x = Tensor::from_host(&b, [1, 2, 2, 3, 3], &x).unwrap();
        let y: Vec<f64> = (0..12).map(|i| ((i * 7) % 3) as f64).collect();
        let y = Tensor::from_host(&b, [1, 2, 2, 3], &y).unwrap();
        for w in [None, Some([0.2, 1.0, 3.5])] {
            check_gradients(
                std::slice::from_ref(&x),
                |v| v[0].cross_entropy(&y, w.as_ref().map(|w| &w[..])),
                1e-6,
                1e-7,
                64,
            )
            .unwrap_or_else(|e| panic!("weights {w:?}: {e}"));
        }
    }
}
