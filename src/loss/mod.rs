//! Training losses built on the tape, each returning a scalar `Var` whose gradient flows
//! back to the logits: BCE with logits (optionally weighted), softmax cross-entropy, soft
//! Dice, Dice + CE (nnU-Net's default), MSE, MAE and 3D SSIM. Inputs are NDHWC.
//! `LossSpec` names one of them in a configuration; `Target` carries what it compares to.
mod bce;
mod cross_entropy;
mod dice;
mod regression;
mod spec;
mod ssim;
mod target;

pub use bce::bce_with_logits;
pub use cross_entropy::cross_entropy;
pub use dice::{dice_ce, dice_loss_from_logits, soft_dice, DiceMode, DiceOptions};
pub use regression::{mae, mse};
pub use spec::LossSpec;
pub use ssim::{ssim3d, SsimOptions, SsimWindow};
pub use target::Target;

use crate::autograd::Var;
use crate::backend::Backend;
use crate::error::{Error, Result};

/// Passes `loss` through when its value is finite; otherwise `Error::NonFinite` naming it.
pub fn check_finite<B: Backend>(name: &str, loss: Var<B>) -> Result<Var<B>> {
    let value = loss.value().to_vec_f64()?;
    if let Some(bad) = value.iter().find(|v| !v.is_finite()) {
        return Err(Error::NonFinite {
            what: format!("loss {name}"),
            detail: format!("value {bad}"),
        });
    }
    Ok(loss)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::Cpu;
    use crate::tensor::Tensor;

    #[test]
    fn check_finite_names_the_loss() {
        let b = Cpu::new();
        let ok = Var::constant(Tensor::scalar(&b, 0.25).unwrap());
        assert_eq!(
            check_finite("dice", ok).unwrap().value().item().unwrap(),
            0.25
        );
        for bad in [f64::NAN, f64::INFINITY] {
            let v = Var::constant(Tensor::scalar(&b, bad).unwrap());
            let err = check_finite("dice_ce", v).unwrap_err();
            assert!(matches!(err, Error::NonFinite { .. }));
            assert!(err.to_string().contains("loss dice_ce"), "{err}");
        }
    }
}
