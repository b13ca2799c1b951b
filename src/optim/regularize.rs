//! L1/L2 penalties on the weights, added to the loss so their gradient flows.
use crate::autograd::{Tape, Var};
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::nn::Param;
use crate::tensor::Tensor;

/// `l1 * sum |w| + l2 * sum w^2` over the parameters with `decay == true` (Keras'
/// `L1L2` regulariser: no factor 1/2, so the L2 gradient is `2 l2 w`), recorded on `tape`
/// so its gradient reaches them. 0 when no parameter decays; `params` must not be empty.
pub fn l1_l2_penalty<B: Backend>(
    params: &[&Param<B>],
    tape: &Tape<B>,
    l1: f64,
    l2: f64,
) -> Result<Var<B>> {
    let Some(first) = params.first() else {
        return Err(Error::config("l1/l2 penalty", "no parameters given"));
    };
    let weights: Vec<Var<B>> = params
        .iter()
        .filter(|p| p.decay)
        .map(|p| p.var(Some(tape)))
        .collect();
    if weights.is_empty() {
        return Ok(Var::constant(Tensor::scalar(first.value.backend(), 0.0)?));
    }
    l1_l2_penalty_of(&weights, l1, l2)
}

/// `l1 * sum |w| + l2 * sum w^2` over `weights` (at least one); both coefficients >= 0.
pub fn l1_l2_penalty_of<B: Backend>(weights: &[Var<B>], l1: f64, l2: f64) -> Result<Var<B>> {
    for (name, c) in [("l1", l1), ("l2", l2)] {
        if !(c >= 0.0 && c.is_finite()) {
            return Err(Error::config(
                format!("{name} coefficient"),
                format!("{c} (must be >= 0)"),
            ));
        }
    }
    let Some(first) = weights.first() else {
        return Err(Error::config("l1/l2 penalty", "no weights given"));
    };
    let mut total = Var::constant(Tensor::scalar(first.backend(), 0.0)?);
    for w in weights {
        // Zero coefficients add nothing: skip their ops.
        if l1 > 0.0 {
            total = total.add(&w.abs()?.sum()?.scale(l1)?)?;
        }
        if l2 > 0.0 {
            total = total.add(&w.square()?.sum()?.scale(l2)?)?;
        }
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::autograd::check_gradients;
    use crate::backend::cpu::Cpu64;

    #[test]
    fn gradient_check_away_from_zero() {
        let b = Cpu64::new();
        let w1 = Tensor::from_host(&b, [2, 3], &[0.5, -1.2, 2.0, -0.3, 0.8, -0.05]).unwrap();
        let w2 = Tensor::from_host(&b, [4], &[1.5, -0.7, 0.2, -2.2]).unwrap();
        let report = check_gradients(
            &[w1, w2],
            |v| l1_l2_penalty_of(v, 0.3, 0.07),
            1e-6,
            1e-8,
            64,
        )
        .unwrap();
        assert_eq!(report.checked, 10);
    }

    #[test]
    fn penalty_on_decaying_params_only_with_keras_gradients() {
        let b = Cpu64::new();
        let kernel = Param::new(
            "conv.weight",
            Tensor::from_host(&b, [3], &[0.5, -2.0, 1.0]).unwrap(),
            true,
        );
        let bias = Param::new(
            "conv.bias",
            Tensor::from_host(&b, [1], &[3.0]).unwrap(),
            false,
        );
        let tape = Tape::new();
        let penalty = l1_l2_penalty(&[&kernel, &bias], &tape, 0.1, 0.01).unwrap();
        // 0.1 * 3.5 + 0.01 * 5.25
        assert!((penalty.value().item().unwrap() - 0.4025).abs() < 1e-12);
        let grads = tape.backward(&penalty).unwrap();
        let g = grads.get(kernel.id).unwrap().to_vec().unwrap();
        let want = [0.1 + 0.02 * 0.5, -0.1 - 0.02 * 2.0, 0.1 + 0.02];
        for (a, w) in g.iter().zip(want) {
            assert!((a - w).abs() < 1e-12, "{g:?}");
        }
        assert!(grads.get(bias.id).is_none());
        let tape = Tape::new();
        let zero = l1_l2_penalty(&[&bias], &tape, 0.1, 0.01).unwrap();
        assert_eq!(zero.value().item().unwrap(), 0.0);
        assert!(l1_l2_penalty::<Cpu64>(&[], &tape, 0.1, 0.0).is_err());
        assert!(l1_l2_penalty(&[&kernel], &tape, -0.1, 0.0).is_err());
    }
}
