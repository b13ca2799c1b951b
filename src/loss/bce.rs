//! Binary cross-entropy on logits, optionally weighted per class and per voxel.
use super::check_finite;
use crate::autograd::Var;
use crate::backend::Backend;
use crate::error::Result;

/// Mean over elements of `w * (max(x, 0) - x t + log(1 + exp(-|x|)))`, with the positive
/// term multiplied by `pos_weight` (TensorFlow's `weighted_cross_entropy_with_logits`:
/// `pos_weight > 1` favours recall of a rare foreground). `weight_map` is either the
/// logits' shape (one weight per element) or `[N, D, H, W, 1]` (one weight per voxel,
/// shared by all channels): the weighted BCE that makes small lesions count. The mean
/// divides by the element count, not by the sum of weights.
pub fn bce_with_logits<B: Backend>(
    logits: &Var<B>,
    targets: &Var<B>,
    pos_weight: Option<f64>,
    weight_map: Option<&Var<B>>,
) -> Result<Var<B>> {
    let loss = logits.bce_with_logits(targets, pos_weight.unwrap_or(1.0), weight_map)?;
    check_finite("bce_with_logits", loss)
}
