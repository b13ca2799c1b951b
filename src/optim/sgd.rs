//! Stochastic gradient descent with (Nesterov) momentum, PyTorch semantics.
use super::state::OptimState;
use super::{params_of, with_gradients, Optimizer};
use crate::autograd::Gradients;
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::nn::Param;
use crate::tensor::Tensor;
use crate::tensor_ops::optim_step::{SgdHyper, SgdSlot};

const MOMENTUM_SLOT: &str = "momentum_buffer";

/// `g = grad + weight_decay * p` (decay params only); with momentum
/// `buf = momentum * buf + g` (the first step gives `buf = g`) and the update direction is
/// `g + momentum * buf` (Nesterov) or `buf`; `p -= lr * direction`.
pub struct Sgd<B: Backend> {
    momentum: f64,
    nesterov: bool,
    weight_decay: f64,
    state: OptimState<B>,
}

impl<B: Backend> Sgd<B> {
    pub fn new(momentum: f64, nesterov: bool, weight_decay: f64) -> Result<Self> {
        if !(0.0..1.0).contains(&momentum) {
            return Err(Error::config(
                "sgd momentum",
                format!("{momentum} (must be in [0, 1))"),
            ));
        }
        if nesterov && momentum == 0.0 {
            return Err(Error::config(
                "sgd nesterov",
                "Nesterov momentum needs momentum > 0",
            ));
        }
        if !(weight_decay >= 0.0 && weight_decay.is_finite()) {
            return Err(Error::config(
                "sgd weight_decay",
                format!("{weight_decay} (must be >= 0)"),
            ));
        }
        Ok(Self {
            momentum,
            nesterov,
            weight_decay,
            state: OptimState::default(),
        })
    }

    fn slots(&self) -> &'static [&'static str] {
        if self.momentum == 0.0 {
            &[]
        } else {
            &[MOMENTUM_SLOT]
        }
    }
}

impl<B: Backend> Optimizer<B> for Sgd<B> {
    /// All parameters in one multi-tensor update (one launch on a device).
    fn step(&mut self, params: &mut [&mut Param<B>], grads: &Gradients<B>, lr: f64) -> Result<()> {
        super::check_lr("sgd", lr)?;
        let slots = self.slots();
        self.state.check("sgd", params, grads, slots)?;
        self.state
            .begin_step(params.first().map(|p| p.value.backend()))?;
        let Some(backend) = params.first().map(|p| p.value.backend().clone()) else {
            return Ok(());
        };
        let hyper = SgdHyper {
            lr,
            momentum: self.momentum,
            weight_decay: self.weight_decay,
            nesterov: u32::from(self.nesterov),
        };
        let mut pairs = with_gradients(params, grads);
        let mut buffers = match slots {
            [] => Vec::new(),
            _ => self.state.take_all(&params_of(&pairs), MOMENTUM_SLOT)?,
        };
        let result = update(&backend, &mut pairs, &mut buffers, hyper);
        if !slots.is_empty() {
            self.state
                .put_all(&params_of(&pairs), MOMENTUM_SLOT, buffers);
        }
        result
    }

    fn state(&self) -> Vec<(String, Tensor<B>)> {
        self.state.export()
    }

    fn load_state(&mut self, state: Vec<(String, Tensor<B>)>) -> Result<()> {
        let slots = self.slots();
        self.state.import("sgd", state, slots)
    }

    fn kind(&self) -> &'static str {
        "sgd"
    }
}

/// One `sgd_step_multi` over `pairs`, with their momentum buffers when given (in order).
fn update<B: Backend>(
    backend: &B,
    pairs: &mut [(&mut Param<B>, &Tensor<B>)],
    buffers: &mut [Tensor<B>],
    hyper: SgdHyper,
) -> Result<()> {
    let mut buffers = buffers.iter_mut();
    let mut slots = Vec::with_capacity(pairs.len());
    for (p, g) in pairs.iter_mut() {
        let momentum_buf = buffers.next().map(|b| b.storage_mut()).transpose()?;
        slots.push(SgdSlot {
            param: p.value.storage_mut()?,
            momentum_buf,
            grad: g.storage(),
            decay: p.decay,
        });
    }
    backend.sgd_step_multi(&mut slots, hyper)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::Cpu64;
    use crate::optim::test_util::gradients;

    /// Runs SGD on a one-element parameter with the gradients `gs`, one per step.
    fn run(sgd: &mut Sgd<Cpu64>, p: &mut Param<Cpu64>, gs: &[f64]) -> Vec<f64> {
        let b = Cpu64::new();
        gs.iter()
            .map(|&g| {
                let grads = gradients(&b, &[(p.id, &[g])]);
                sgd.step(&mut [&mut *p], &grads, 0.1).unwrap();
                p.value.item().unwrap()
            })
            .collect()
    }

    fn param(decay: bool) -> Param<Cpu64> {
        Param::new(
            "w",
            Tensor::from_host(&Cpu64::new(), [1], &[1.0]).unwrap(),
            decay,
        )
    }

    fn assert_close(got: &[f64], want: &[f64]) {
        for (a, w) in got.iter().zip(want) {
            assert!((a - w).abs() < 1e-12, "{got:?} vs {want:?}");
        }
    }

    #[test]
    fn momentum_by_hand() {
        // lr 0.1, momentum 0.9, gradients 0.5, -0.2, 0.1:
        // buf 0.5, 0.25, 0.325 -> p 0.95, 0.925, 0.8925.
        let mut sgd = Sgd::new(0.9, false, 0.0).unwrap();
        assert_close(
            &run(&mut sgd, &mut param(true), &[0.5, -0.2, 0.1]),
            &[0.95, 0.925, 0.8925],
        );
        let state = sgd.state();
        assert_eq!(state[0].0, "step");
        assert_eq!(state[0].1.item().unwrap(), 3.0);
        assert_eq!(state[1].0, "w.momentum_buffer");
        assert!((state[1].1.item().unwrap() - 0.325).abs() < 1e-12);
    }

    #[test]
    fn nesterov_by_hand() {
        // Directions g + 0.9 buf: 0.95, 0.025, 0.3925 -> p 0.905, 0.9025, 0.86325.
        let mut sgd = Sgd::new(0.9, true, 0.0).unwrap();
        assert_close(
            &run(&mut sgd, &mut param(true), &[0.5, -0.2, 0.1]),
            &[0.905, 0.9025, 0.86325],
        );
    }

    #[test]
    fn weight_decay_joins_the_gradient_of_decaying_params_only() {
        // g = grad + 0.01 p: 0.51 -> buf 0.51, p 0.949; -0.19051 -> buf 0.26849, p 0.922151.
        let mut sgd = Sgd::new(0.9, false, 0.01).unwrap();
        assert_close(
            &run(&mut sgd, &mut param(true), &[0.5, -0.2]),
            &[0.949, 0.922151],
        );
        let mut sgd = Sgd::new(0.9, false, 0.01).unwrap();
        assert_close(
            &run(&mut sgd, &mut param(false), &[0.5, -0.2]),
            &[0.95, 0.925],
        );
    }

    #[test]
    fn plain_sgd_and_shape_errors_change_nothing() {
        let b = Cpu64::new();
        let mut sgd = Sgd::new(0.0, false, 0.0).unwrap();
        assert_close(
            &run(&mut sgd, &mut param(true), &[0.5, -0.2]),
            &[0.95, 0.97],
        );
        assert_eq!(sgd.state().len(), 1, "no momentum buffer without momentum");
        let mut p = param(true);
        let mut q = Param::new("q", Tensor::zeros(&b, [2]).unwrap(), true);
        let grads = gradients(&b, &[(p.id, &[1.0]), (q.id, &[1.0, 2.0, 3.0])]);
        let err = sgd
            .step(&mut [&mut p, &mut q], &grads, 0.1)
            .unwrap_err()
            .to_string();
        assert!(err.contains("parameter q"), "{err}");
        assert_eq!(
            p.value.item().unwrap(),
            1.0,
            "a failed step updates nothing"
        );
        assert!(sgd.step(&mut [&mut p], &grads, f64::NAN).is_err());
    }
}
