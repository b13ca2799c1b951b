//! Fused in-place parameter updates over many tensors at once: one pass over every
//! parameter, its gradient and its optimiser state per step, with no temporaries (one launch
//! on a device), and the sum of squares and scaling that gradient clipping needs. The
//! optimisers in `crate::optim` decide the hyper-parameters (learning rate, bias
//! corrections) and call these kernels.
mod cpu;

use crate::backend::BackendBase;
use crate::error::{Error, Result};

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

impl SgdHyper {
    /// The hyper-parameters of one tensor: weight decay only where `decay` is set.
    pub fn for_tensor(&self, decay: bool) -> Self {
        Self {
            weight_decay: if decay { self.weight_decay } else { 0.0 },
            ..*self
        }
    }
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

impl AdamHyper {
    /// The hyper-parameters of one tensor: `l2` and `decoupled_decay` only where `decay` is set.
    pub fn for_tensor(&self, decay: bool) -> Self {
        let rate = |r: f64| if decay { r } else { 0.0 };
        Self {
            l2: rate(self.l2),
            decoupled_decay: rate(self.decoupled_decay),
            ..*self
        }
    }
}

/// One tensor of a multi-tensor SGD update; `S` is a backend's storage.
pub struct SgdSlot<'a, S: ?Sized> {
    pub param: &'a mut S,
    /// Required when `momentum != 0`; updated in place.
    pub momentum_buf: Option<&'a mut S>,
    pub grad: &'a S,
    /// Whether `SgdHyper::weight_decay` applies to this tensor.
    pub decay: bool,
}

/// One tensor of a multi-tensor Adam update: the parameter and its moments `m`, `v`.
pub struct AdamSlot<'a, S: ?Sized> {
    pub param: &'a mut S,
    pub m: &'a mut S,
    pub v: &'a mut S,
    pub grad: &'a S,
    /// Whether `AdamHyper::{l2, decoupled_decay}` apply to this tensor.
    pub decay: bool,
}

pub trait OptimStepKernel: BackendBase {
    /// One SGD update of every slot in place, as `hyper.for_tensor(slot.decay)` describes
    /// (one launch on a device). Every length is checked before anything changes.
    fn sgd_step_multi(
        &self,
        slots: &mut [SgdSlot<'_, Self::Storage>],
        hyper: SgdHyper,
    ) -> Result<()>;
    /// One Adam update of every slot in place, as `hyper.for_tensor(slot.decay)` describes
    /// (one launch on a device). Every length is checked before anything changes.
    fn adam_step_multi(
        &self,
        slots: &mut [AdamSlot<'_, Self::Storage>],
        hyper: AdamHyper,
    ) -> Result<()>;
    /// The sum of the squares of every element of `tensors` (0 for none), accumulated in
    /// f64 in an order fixed by the backend (so the same inputs give the same bits).
    fn sum_squares_multi(&self, tensors: &[&Self::Storage]) -> Result<f64>;
    /// Multiplies every element of `tensors` in place by `factor` rounded to the element
    /// type, as `UnaryOp::Scale` does.
    fn scale_multi(&self, tensors: &mut [&mut Self::Storage], factor: f64) -> Result<()>;
}

fn check_len(op: &str, slot: usize, what: &str, want: usize, got: usize) -> Result<()> {
    if want != got {
        return Err(Error::shape(
            "optim_step",
            format!("{op}: tensor {slot}: {what} has {got} elements, the parameter {want}"),
        ));
    }
    Ok(())
}

/// Checks the slots of a multi-tensor SGD update (`len` gives a storage's length): every
/// gradient and buffer as long as its parameter, and a buffer everywhere with momentum.
pub fn check_sgd_slots<S: ?Sized>(
    slots: &[SgdSlot<'_, S>],
    hyper: &SgdHyper,
    len: impl Fn(&S) -> usize,
) -> Result<()> {
    for (i, s) in slots.iter().enumerate() {
        let n = len(s.param);
        check_len("sgd", i, "the gradient", n, len(s.grad))?;
        match &s.momentum_buf {
            Some(b) => check_len("sgd", i, "the momentum buffer", n, len(b))?,
            None if hyper.momentum != 0.0 => {
                return Err(Error::shape(
                    "optim_step",
                    format!("sgd: tensor {i}: momentum without a momentum buffer"),
                ))
            }
            None => {}
        }
    }
    Ok(())
}

/// Checks the slots of a multi-tensor Adam update: gradient and moments as long as the
/// parameter.
pub fn check_adam_slots<S: ?Sized>(
    slots: &[AdamSlot<'_, S>],
    len: impl Fn(&S) -> usize,
) -> Result<()> {
    for (i, s) in slots.iter().enumerate() {
        let n = len(s.param);
        check_len("adam", i, "the gradient", n, len(s.grad))?;
        check_len("adam", i, "the first moment", n, len(s.m))?;
        check_len("adam", i, "the second moment", n, len(s.v))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::{Cpu, Cpu64};

    fn sgd_hyper() -> SgdHyper {
        SgdHyper {
            lr: 0.1,
            momentum: 0.9,
            weight_decay: 0.01,
            nesterov: 0,
        }
    }

    #[test]
    fn weight_decay_applies_to_decaying_tensors_only() {
        // g = 0.5 + 0.01 * 1 -> buf 0.51, p 0.949; without decay buf 0.5, p 0.95.
        let b = Cpu64::new();
        let (mut p, mut q) = (vec![1.0], vec![1.0]);
        let (mut bp, mut bq) = (vec![0.0], vec![0.0]);
        let g = vec![0.5];
        let mut slots = [
            SgdSlot {
                param: &mut p,
                momentum_buf: Some(&mut bp),
                grad: &g,
                decay: true,
            },
            SgdSlot {
                param: &mut q,
                momentum_buf: Some(&mut bq),
                grad: &g,
                decay: false,
            },
        ];
        b.sgd_step_multi(&mut slots, sgd_hyper()).unwrap();
        assert!((p[0] - 0.949).abs() < 1e-15 && (bp[0] - 0.51).abs() < 1e-15);
        assert_eq!((q[0], bq[0]), (0.95, 0.5));
        let adam = AdamHyper {
            lr: 0.1,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            l2: 0.1,
            decoupled_decay: 0.2,
            bias_correction1: 0.1,
            bias_correction2: 0.001,
            lazy: 0,
        };
        let off = adam.for_tensor(false);
        assert_eq!((off.l2, off.decoupled_decay, off.lr), (0.0, 0.0, 0.1));
        assert_eq!(adam.for_tensor(true), adam);
    }

    #[test]
    fn many_tensors_at_once_equal_one_at_a_time() {
        let b = Cpu::new();
        let lens = [1usize, 5, 0, 300];
        let data = |k: usize, n: usize| -> Vec<f32> {
            (0..n)
                .map(|i| ((i * 7 + k * 3) % 11) as f32 * 0.1 - 0.5)
                .collect()
        };
        let h = AdamHyper {
            lr: 1e-2,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-7,
            l2: 1e-3,
            decoupled_decay: 0.0,
            bias_correction1: 0.1,
            bias_correction2: 0.001,
            lazy: 1,
        };
        let fresh = || -> Vec<[Vec<f32>; 4]> {
            lens.iter()
                .enumerate()
                .map(|(k, &n)| [data(k, n), data(k + 1, n), vec![0.0; n], data(k + 2, n)])
                .collect()
        };
        let (mut all, mut one) = (fresh(), fresh());
        let mut slots: Vec<AdamSlot<'_, Vec<f32>>> = all
            .iter_mut()
            .enumerate()
            .map(|(k, [p, m, v, g])| AdamSlot {
                param: p,
                m,
                v,
                grad: g,
                decay: k % 2 == 0,
            })
            .collect();
        b.adam_step_multi(&mut slots, h).unwrap();
        for (k, [p, m, v, g]) in one.iter_mut().enumerate() {
            let mut slot = [AdamSlot {
                param: p,
                m,
                v,
                grad: g,
                decay: k % 2 == 0,
            }];
            b.adam_step_multi(&mut slot, h).unwrap();
        }
        assert_eq!(all, one);
        assert_ne!(all, fresh());
    }

    #[test]
    fn a_bad_slot_is_an_error_and_changes_nothing() {
        let b = Cpu::new();
        let (mut p, mut q) = (vec![1.0f32; 3], vec![1.0f32; 2]);
        let (g3, g1) = (vec![1.0f32; 3], vec![1.0f32; 1]);
        let mut slots = [
            SgdSlot {
                param: &mut p,
                momentum_buf: None,
                grad: &g3,
                decay: true,
            },
            SgdSlot {
                param: &mut q,
                momentum_buf: None,
                grad: &g1,
                decay: true,
            },
        ];
        let plain = SgdHyper {
            momentum: 0.0,
            ..sgd_hyper()
        };
        let err = b.sgd_step_multi(&mut slots, plain).unwrap_err().to_string();
        assert!(
            err.contains("tensor 1: the gradient has 1 elements"),
            "{err}"
        );
        let err = b
            .sgd_step_multi(&mut slots[..1], sgd_hyper())
            .unwrap_err()
            .to_string();
        assert!(err.contains("momentum without a momentum buffer"), "{err}");
        assert_eq!(p, [1.0; 3]);
        let (mut m, mut v) = (vec![0.0f32; 3], vec![0.0f32; 2]);
        let mut adam = [AdamSlot {
            param: &mut p,
            m: &mut m,
            v: &mut v,
            grad: &g3,
            decay: true,
        }];
        let h = AdamHyper {
            lr: 0.1,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            l2: 0.0,
            decoupled_decay: 0.0,
            bias_correction1: 0.1,
            bias_correction2: 0.001,
            lazy: 0,
        };
        let err = b.adam_step_multi(&mut adam, h).unwrap_err().to_string();
        assert!(err.contains("tensor 0: the second moment has 2"), "{err}");
        assert_eq!(p, [1.0; 3]);
    }

    #[test]
    fn sums_of_squares_and_scaling_over_tensors() {
        let b = Cpu64::new();
        let (mut x, mut y, mut e) = (vec![3.0, 4.0], vec![12.0], Vec::new());
        assert_eq!(b.sum_squares_multi(&[&x, &e, &y]).unwrap(), 169.0);
        assert_eq!(b.sum_squares_multi(&[]).unwrap(), 0.0);
        b.scale_multi(&mut [&mut x, &mut e, &mut y], 0.5).unwrap();
        assert_eq!((x, y), (vec![1.5, 2.0], vec![6.0]));
    }
}
