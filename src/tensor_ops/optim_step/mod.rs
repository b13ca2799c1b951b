//! Fused in-place parameter updates: one pass over a parameter, its gradient and its
//! optimiser state per step, with no temporaries. The optimisers in `crate::optim` decide
//! the hyper-parameters (learning rate, bias corrections) and call these kernels.
mod cpu;

use crate::backend::BackendBase;
use crate::error::Result;

/// Hyper-parameters of one SGD update (shared in layout with a device kernel).
///
/// Per element, as PyTorch's SGD with dampening 0:
/// `g = grad + weight_decay * p`; with momentum, `buf = momentum * buf + g` and the step
/// direction is `g + momentum * buf` (Nesterov) or `buf`; without momentum it is `g`;
/// `p -= lr * direction`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SgdHyper {
    pub lr: f64,
    pub momentum: f64,
    pub weight_decay: f64,
    /// 1 for Nesterov momentum, 0 for the classical form.
    pub nesterov: u32,
}

/// Hyper-parameters of one Adam update (shared in layout with a device kernel).
///
/// Per element: if `lazy` and `grad == 0`, nothing changes. Otherwise
/// `g = grad + l2 * p` (Adam's L2 term), `m = beta1 m + (1 - beta1) g`,
/// `v = beta2 v + (1 - beta2) g^2`, and
/// `p = p (1 - lr * decoupled_decay) - lr * (m / bias_correction1) / (sqrt(v / bias_correction2) + eps)`
/// (the first factor is AdamW's decoupled decay).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamHyper {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// L2 coefficient added to the gradient (Adam's `weight_decay`).
    pub l2: f64,
    /// Decoupled decay rate (AdamW's `weight_decay`), applied as `p *= 1 - lr * rate`.
    pub decoupled_decay: f64,
    /// `1 - beta1^t` for step t (counted from 1).
    pub bias_correction1: f64,
    /// `1 - beta2^t`.
    pub bias_correction2: f64,
    /// 1 to skip entries whose gradient is exactly zero (LazyAdam), 0 to update all.
    pub lazy: u32,
}

pub trait OptimStepKernel: BackendBase {
    /// One SGD update of `param` in place; `momentum_buf` is required when
    /// `hyper.momentum != 0` and is updated in place.
    fn sgd_step(
        &self,
        param: &mut Self::Storage,
        momentum_buf: Option<&mut Self::Storage>,
        grad: &Self::Storage,
        hyper: SgdHyper,
    ) -> Result<()>;
    /// One Adam update of `param` and its moments `m`, `v` in place.
    fn adam_step(
        &self,
        param: &mut Self::Storage,
        m: &mut Self::Storage,
        v: &mut Self::Storage,
        grad: &Self::Storage,
        hyper: AdamHyper,
    ) -> Result<()>;
}
