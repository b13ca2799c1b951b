//! Softmax cross-entropy against class indices.
use super::check_finite;
use crate::autograd::Var;
use crate::backend::Backend;
use crate::error::Result;
use crate::tensor::Tensor;

/// Cross-entropy of softmax(`logits`) (`[N, D, H, W, K]`) against `labels` (`[N, D, H, W]`,
/// class indices as floats), the weighted mean `sum w_y nll / sum w_y` as in PyTorch
/// (`class_weights` has K entries; without it every voxel weighs 1). A label outside
/// `0..K` or not an integer is an error.
pub fn cross_entropy<B: Backend>(
    logits: &Var<B>,
    labels: &Tensor<B>,
    class_weights: Option<&[f64]>,
) -> Result<Var<B>> {
    check_finite(
        "cross_entropy",
        logits.cross_entropy(labels, class_weights)?,
    )
}
