//! Adam (L2 term in the gradient), AdamW (decoupled weight decay) and LazyAdam (sparse
//! updates), sharing one state layout and the multi-tensor `adam_step_multi` kernel.
//!
//! The update is Kingma & Ba's algorithm 1: `p -= lr * m_hat / (sqrt(v_hat) + eps)` with
//! bias-corrected moments (PyTorch places eps the same way; Keras adds its eps to
//! `sqrt(v)` before the bias correction, a difference of order eps).
use super::state::OptimState;
use super::{params_of, with_gradients, Optimizer};
use crate::autograd::Gradients;
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::nn::Param;
use crate::tensor::Tensor;
use crate::tensor_ops::optim_step::{AdamHyper, AdamSlot};

const SLOTS: [&str; 2] = ["exp_avg", "exp_avg_sq"];

/// The coefficients every Adam variant shares.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Betas {
    beta1: f64,
    beta2: f64,
    eps: f64,
}

impl Betas {
    fn new(kind: &str, beta1: f64, beta2: f64, eps: f64) -> Result<Self> {
        for (name, b) in [("beta1", beta1), ("beta2", beta2)] {
            if !(0.0..1.0).contains(&b) {
                return Err(Error::config(
                    format!("{kind} {name}"),
                    format!("{b} (must be in [0, 1))"),
                ));
            }
        }
        if !(eps > 0.0 && eps.is_finite()) {
            return Err(Error::config(
                format!("{kind} eps"),
                format!("{eps} (must be positive)"),
            ));
        }
        Ok(Self { beta1, beta2, eps })
    }
}

fn check_decay(kind: &str, weight_decay: f64) -> Result<()> {
    if !(weight_decay >= 0.0 && weight_decay.is_finite()) {
        return Err(Error::config(
            format!("{kind} weight_decay"),
            format!("{weight_decay} (must be >= 0)"),
        ));
    }
    Ok(())
}

/// How the variant decays weights and which entries it updates.
#[derive(Clone, Copy)]
struct Variant {
    l2: f64,
    decoupled_decay: f64,
    lazy: bool,
}

/// All parameters in one multi-tensor update (one launch on a device).
fn adam_family_step<B: Backend>(
    kind: &'static str,
    state: &mut OptimState<B>,
    betas: Betas,
    variant: Variant,
    params: &mut [&mut Param<B>],
    grads: &Gradients<B>,
    lr: f64,
) -> Result<()> {
    super::check_lr(kind, lr)?;
    state.check(kind, params, grads, &SLOTS)?;
    state.begin_step(params.first().map(|p| p.value.backend()))?;
    let Some(backend) = params.first().map(|p| p.value.backend().clone()) else {
        return Ok(());
    };
    let t = state.step as i32;
    let hyper = AdamHyper {
        lr,
        beta1: betas.beta1,
        beta2: betas.beta2,
        eps: betas.eps,
        l2: variant.l2,
        decoupled_decay: variant.decoupled_decay,
        bias_correction1: 1.0 - betas.beta1.powi(t),
        bias_correction2: 1.0 - betas.beta2.powi(t),
        lazy: u32::from(variant.lazy),
    };
    let mut pairs = with_gradients(params, grads);
    let mut m = state.take_all(&params_of(&pairs), SLOTS[0])?;
    let mut v = match state.take_all(&params_of(&pairs), SLOTS[1]) {
        Ok(v) => v,
        Err(e) => {
            state.put_all(&params_of(&pairs), SLOTS[0], m);
            return Err(e);
        }
    };
    let result = update(&backend, &mut pairs, &mut m, &mut v, hyper);
    state.put_all(&params_of(&pairs), SLOTS[0], m);
    state.put_all(&params_of(&pairs), SLOTS[1], v);
    result
}

/// One `adam_step_multi` over `pairs` with their moments `m`, `v` (in order).
fn update<B: Backend>(
    backend: &B,
    pairs: &mut [(&mut Param<B>, &Tensor<B>)],
    m: &mut [Tensor<B>],
    v: &mut [Tensor<B>],
    hyper: AdamHyper,
) -> Result<()> {
    let mut slots = Vec::with_capacity(pairs.len());
    for (((p, g), m), v) in pairs.iter_mut().zip(m).zip(v) {
        slots.push(AdamSlot {
            param: p.value.storage_mut()?,
            m: m.storage_mut()?,
            v: v.storage_mut()?,
            grad: g.storage(),
            decay: p.decay,
        });
    }
    backend.adam_step_multi(&mut slots, hyper)
}

/// Adam with an optional L2 term added to the gradient (PyTorch's `Adam(weight_decay)`).
pub struct Adam<B: Backend> {
    betas: Betas,
    weight_decay: f64,
    state: OptimState<B>,
}

impl<B: Backend> Adam<B> {
    pub fn new(beta1: f64, beta2: f64, eps: f64, weight_decay: f64) -> Result<Self> {
        check_decay("adam", weight_decay)?;
        Ok(Self {
            betas: Betas::new("adam", beta1, beta2, eps)?,
            weight_decay,
            state: OptimState::default(),
        })
    }
}

/// Adam with decoupled weight decay (Loshchilov & Hutter): `p *= 1 - lr * weight_decay`
/// besides the Adam step, so the decay is not rescaled by the second moment.
pub struct AdamW<B: Backend> {
    betas: Betas,
    weight_decay: f64,
    state: OptimState<B>,
}

impl<B: Backend> AdamW<B> {
    pub fn new(beta1: f64, beta2: f64, eps: f64, weight_decay: f64) -> Result<Self> {
        check_decay("adamw", weight_decay)?;
        Ok(Self {
            betas: Betas::new("adamw", beta1, beta2, eps)?,
            weight_decay,
            state: OptimState::default(),
        })
    }
}

/// Adam that updates an entry (its moments and its value) only where the gradient is
/// non-zero, as TensorFlow Addons' LazyAdam does for the rows of a sparse gradient. On a
/// gradient without exact zeros it equals Adam; bias corrections use the global step count.
/// eps sits where Adam's does (LazyAdam and PyTorch's SparseAdam add it to `sqrt(v)` before
/// the bias correction, as Keras' Adam: a difference of order eps).
pub struct LazyAdam<B: Backend> {
    betas: Betas,
    state: OptimState<B>,
}

impl<B: Backend> LazyAdam<B> {
    pub fn new(beta1: f64, beta2: f64, eps: f64) -> Result<Self> {
        Ok(Self {
            betas: Betas::new("lazy_adam", beta1, beta2, eps)?,
            state: OptimState::default(),
        })
    }
}

impl<B: Backend> Adam<B> {
    fn variant(&self) -> Variant {
        Variant {
            l2: self.weight_decay,
            decoupled_decay: 0.0,
            lazy: false,
        }
    }
}

impl<B: Backend> AdamW<B> {
    fn variant(&self) -> Variant {
        Variant {
            l2: 0.0,
            decoupled_decay: self.weight_decay,
            lazy: false,
        }
    }
}

impl<B: Backend> LazyAdam<B> {
    fn variant(&self) -> Variant {
        Variant {
            l2: 0.0,
            decoupled_decay: 0.0,
            lazy: true,
        }
    }
}

/// The `Optimizer` impl of an Adam variant `$ty` named `$kind`: the shared step with the
/// variant's decay and sparsity.
macro_rules! adam_optimizer {
    ($ty:ident, $kind:literal) => {
        impl<B: Backend> Optimizer<B> for $ty<B> {
            fn step(
                &mut self,
                params: &mut [&mut Param<B>],
                grads: &Gradients<B>,
                lr: f64,
            ) -> Result<()> {
                let variant = self.variant();
                adam_family_step(
                    $kind,
                    &mut self.state,
                    self.betas,
                    variant,
                    params,
                    grads,
                    lr,
                )
            }
            fn state(&self) -> Vec<(String, Tensor<B>)> {
                self.state.export()
            }
            fn load_state(&mut self, state: Vec<(String, Tensor<B>)>) -> Result<()> {
                self.state.import($kind, state, &SLOTS)
            }
            fn kind(&self) -> &'static str {
                $kind
            }
        }
    };
}

adam_optimizer!(Adam, "adam");
adam_optimizer!(AdamW, "adamw");
adam_optimizer!(LazyAdam, "lazy_adam");

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::Cpu64;
    use crate::optim::test_util::gradients;

    fn param(values: &[f64], decay: bool) -> Param<Cpu64> {
        Param::new(
            "w",
            Tensor::from_host(&Cpu64::new(), [values.len()], values).unwrap(),
            decay,
        )
    }

    fn step(opt: &mut dyn Optimizer<Cpu64>, p: &mut Param<Cpu64>, g: &[f64], lr: f64) {
        let grads = gradients(&Cpu64::new(), &[(p.id, g)]);
        opt.step(&mut [&mut *p], &grads, lr).unwrap();
    }

    fn slot(opt: &dyn Optimizer<Cpu64>, name: &str) -> Vec<f64> {
        let state = opt.state();
        let (_, t) = state.iter().find(|(k, _)| k == name).unwrap();
        t.to_vec().unwrap()
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn adam_bias_correction_steps_one_and_two() {
        let eps = 1e-8;
        let mut adam = Adam::new(0.9, 0.999, eps, 0.0).unwrap();
        let mut p = param(&[1.0], true);
        // Step 1, g = 0.5: m = 0.05, v = 0.00025, m_hat = 0.5, v_hat = 0.25.
        step(&mut adam, &mut p, &[0.5], 0.1);
        let p1 = 1.0 - 0.1 * 0.5 / (0.5 + eps);
        assert!(close(p.value.item().unwrap(), p1));
        assert!(close(slot(&adam, "w.exp_avg")[0], 0.05));
        assert!(close(slot(&adam, "w.exp_avg_sq")[0], 0.00025));
        // Step 2, g = -0.2: m = 0.045 - 0.02 = 0.025, v = 0.00024975 + 0.00004 = 0.00028975,
        // bias corrections 1 - 0.9^2 = 0.19 and 1 - 0.999^2 = 0.001999.
        step(&mut adam, &mut p, &[-0.2], 0.1);
        let p2 = p1 - 0.1 * (0.025 / 0.19) / ((0.00028975f64 / 0.001999).sqrt() + eps);
        assert!(
            close(p.value.item().unwrap(), p2),
            "{} vs {p2}",
            p.value.item().unwrap()
        );
        assert!(close(slot(&adam, "w.exp_avg")[0], 0.025));
        assert!(close(slot(&adam, "w.exp_avg_sq")[0], 0.00028975));
        assert!((p2 - 0.865_440).abs() < 1e-6);
    }

    #[test]
    fn adam_weight_decay_is_an_l2_term_in_the_gradient() {
        let mut adam = Adam::new(0.9, 0.999, 1e-8, 0.1).unwrap();
        let mut p = param(&[1.0], true);
        step(&mut adam, &mut p, &[0.5], 0.1);
        // g = 0.5 + 0.1 * 1: m = 0.06, v = 0.00036.
        assert!(close(slot(&adam, "w.exp_avg")[0], 0.06));
        assert!(close(slot(&adam, "w.exp_avg_sq")[0], 0.00036));
    }

    #[test]
    fn adamw_decays_decoupled_from_the_moments() {
        let eps = 1e-8;
        let mut adamw = AdamW::new(0.9, 0.999, eps, 0.1).unwrap();
        let mut p = param(&[1.0], true);
        step(&mut adamw, &mut p, &[0.5], 0.1);
        // p (1 - lr wd) - lr m_hat / (sqrt(v_hat) + eps) = 0.99 - 0.1 * 0.5 / (0.5 + eps).
        assert!(close(
            p.value.item().unwrap(),
            0.99 - 0.1 * 0.5 / (0.5 + eps)
        ));
        assert!(
            close(slot(&adamw, "w.exp_avg")[0], 0.05),
            "the decay stays out of the moments"
        );
        let mut adamw = AdamW::new(0.9, 0.999, eps, 0.1).unwrap();
        let mut bias = param(&[1.0], false);
        step(&mut adamw, &mut bias, &[0.5], 0.1);
        assert!(close(
            bias.value.item().unwrap(),
            1.0 - 0.1 * 0.5 / (0.5 + eps)
        ));
    }

    #[test]
    fn lazy_adam_skips_zero_gradient_entries() {
        let mut lazy = LazyAdam::new(0.9, 0.999, 1e-7).unwrap();
        let mut p = param(&[1.0, 2.0, 3.0], true);
        step(&mut lazy, &mut p, &[0.5, 0.0, -0.2], 0.1);
        let after_one = p.value.to_vec().unwrap();
        let m1 = slot(&lazy, "w.exp_avg");
        step(&mut lazy, &mut p, &[0.0, 0.0, 0.3], 0.1);
        let after_two = p.value.to_vec().unwrap();
        assert_eq!(after_two[1], 2.0, "never-touched entry keeps its value");
        assert_eq!(
            (slot(&lazy, "w.exp_avg")[1], slot(&lazy, "w.exp_avg_sq")[1]),
            (0.0, 0.0)
        );
        assert_eq!(
            after_two[0], after_one[0],
            "entry 0 had no gradient in step 2"
        );
        assert_eq!(slot(&lazy, "w.exp_avg")[0], m1[0]);
        assert_ne!(after_two[2], after_one[2]);
        // Adam keeps moving entry 0 on its momentum.
        let mut adam = Adam::new(0.9, 0.999, 1e-7, 0.0).unwrap();
        let mut q = param(&[1.0, 2.0, 3.0], true);
        step(&mut adam, &mut q, &[0.5, 0.0, -0.2], 0.1);
        step(&mut adam, &mut q, &[0.0, 0.0, 0.3], 0.1);
        assert_ne!(q.value.to_vec().unwrap()[0], after_two[0]);
    }

    #[test]
    fn lazy_adam_equals_adam_on_dense_gradients() {
        let mut lazy = LazyAdam::new(0.9, 0.999, 1e-7).unwrap();
        let mut adam = Adam::new(0.9, 0.999, 1e-7, 0.0).unwrap();
        let mut p = param(&[1.0, -2.0, 0.5], true);
        let mut q = param(&[1.0, -2.0, 0.5], true);
        for g in [[0.5, -0.1, 2.0], [0.3, 0.2, -1.0], [-0.4, 0.7, 0.05]] {
            step(&mut lazy, &mut p, &g, 0.01);
            step(&mut adam, &mut q, &g, 0.01);
        }
        assert_eq!(p.value.to_vec().unwrap(), q.value.to_vec().unwrap());
        assert_eq!(slot(&lazy, "w.exp_avg_sq"), slot(&adam, "w.exp_avg_sq"));
        assert_ne!(p.value.to_vec().unwrap(), vec![1.0, -2.0, 0.5]);
    }
}
