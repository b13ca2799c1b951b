//! What a loss compares the network output with.
use super::DiceMode;
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::tensor::{Shape, Tensor};

#[derive(Clone)]
pub enum Target<B: Backend> {
    /// One channel per region with 0/1 values, the logits' shape: sigmoid outputs,
    /// overlapping regions (BraTS WT/TC/ET). Regression losses (MSE, MAE, SSIM) read it as
    /// the dense target values.
    Regions(Tensor<B>),
    /// One class index per voxel, `[N, D, H, W]` stored as floats: softmax outputs over
    /// the logits' K channels, classes exclusive.
    Classes(Tensor<B>),
}

impl<B: Backend> Target<B> {
    /// The activation this kind of target implies for the logits.
    pub fn mode(&self) -> DiceMode {
        match self {
            Target::Regions(_) => DiceMode::Sigmoid,
            Target::Classes(_) => DiceMode::Softmax,
        }
    }

    pub fn tensor(&self) -> &Tensor<B> {
        match self {
            Target::Regions(t) | Target::Classes(t) => t,
        }
    }

    /// Fails unless the target fits logits of shape `logits` (naming the loss `op`).
    pub fn check_fits(&self, op: &'static str, logits: &Shape) -> Result<()> {
        let fits = match self {
            Target::Regions(t) => t.shape() == logits,
            Target::Classes(t) => {
                let ld = logits.dims();
                !ld.is_empty() && t.dims() == &ld[..ld.len() - 1]
            }
        };
        if fits {
            return Ok(());
        }
        let kind = match self {
            Target::Regions(_) => "region channels (the logits' shape)",
            Target::Classes(_) => "class indices (the logits' shape without channels)",
        };
        Err(Error::shape(
            op,
            format!(
                "target of shape {} does not fit logits of shape {logits}: expected {kind}",
                self.tensor().shape()
            ),
        ))
    }
}
