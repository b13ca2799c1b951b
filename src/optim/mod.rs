//! Optimisers, learning-rate schedules, gradient clipping and regularisation.
//!
//! Optimisers update `nn::Param`s in place from a tape's `Gradients`, through the fused
//! kernels of `tensor_ops::optim_step`. Their state (moments, momentum buffers, the step
//! count) is a list of named tensors keyed by parameter name, so a checkpoint restores it
//! exactly. Weight decay (SGD, Adam's L2 term, AdamW's decoupled decay) applies only to
//! parameters with `decay == true`.
mod adam;
mod clip;
mod regularize;
mod schedule;
mod sgd;
mod spec;
mod state;

#[cfg(test)]
mod convergence_tests;
#[cfg(test)]
mod test_util;
#[cfg(test)]
mod torch_reference_tests;

pub use adam::{Adam, AdamW, LazyAdam};
pub use clip::clip_grad_norm;
pub use regularize::{l1_l2_penalty, l1_l2_penalty_of};
pub use schedule::{LrSchedule, PlateauState};
pub use sgd::Sgd;
pub use spec::OptimizerSpec;

use crate::autograd::Gradients;
use crate::backend::Backend;
use crate::error::Result;
use crate::nn::Param;
use crate::tensor::Tensor;

pub trait Optimizer<B: Backend> {
    /// One update of every parameter that has a gradient in `grads` (others are left as
    /// they are) with learning rate `lr`. Shapes are checked before anything changes.
    fn step(&mut self, params: &mut [&mut Param<B>], grads: &Gradients<B>, lr: f64) -> Result<()>;
    /// The state as named tensors: `step` (a scalar holding the step count, exact up to
    /// 2^24 steps in f32) and `<param name>.<slot>` per parameter. Empty before the first step.
    fn state(&self) -> Vec<(String, Tensor<B>)>;
    /// Restores what `state` returned (fails on names this optimiser does not use).
    fn load_state(&mut self, state: Vec<(String, Tensor<B>)>) -> Result<()>;
    /// "sgd", "adam", "adamw" or "lazy_adam".
    fn kind(&self) -> &'static str;
}

/// The parameters that have a gradient in `grads`, each with it, in order.
fn with_gradients<'a, B: Backend>(
    params: &'a mut [&mut Param<B>],
    grads: &'a Gradients<B>,
) -> Vec<(&'a mut Param<B>, &'a Tensor<B>)> {
    params
        .iter_mut()
        .filter_map(|p| {
            let g = grads.get(p.id)?;
            Some((&mut **p, g))
        })
        .collect()
}

/// The parameters of `with_gradients`'s pairs, for the state's slot lookups.
fn params_of<'a, B: Backend>(pairs: &'a [(&mut Param<B>, &Tensor<B>)]) -> Vec<&'a Param<B>> {
    pairs.iter().map(|(p, _)| &**p).collect()
}

/// Fails unless the learning rate is finite and non-negative.
fn check_lr(kind: &str, lr: f64) -> Result<()> {
    if !(lr >= 0.0 && lr.is_finite()) {
        return Err(crate::error::Error::config(
            format!("{kind} learning rate"),
            format!("{lr} (must be finite and >= 0)"),
        ));
    }
    Ok(())
}
