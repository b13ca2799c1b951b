//! Finite-difference gradient checks in f64, used by the test suite for every op and loss.
use super::{LeafId, Tape, Var};
use crate::backend::cpu::Cpu64;
use crate::error::{Error, Result};
use crate::tensor::Tensor;

#[derive(Debug, Clone)]
pub struct GradcheckReport {
    /// Number of (input, element) pairs compared.
    pub checked: usize,
    pub max_abs_err: f64,
}

/// Compares the tape's gradient of the scalar `f(inputs)` with central differences
/// `(f(x + eps) - f(x - eps)) / 2 eps` for every element of every input (at most
/// `max_elems_per_input`, spread evenly). Passes when `|analytic - numeric| <= tol * (1 + |numeric|)`.
pub fn check_gradients<F>(
    inputs: &[Tensor<Cpu64>],
    f: F,
    eps: f64,
    tol: f64,
    max_elems_per_input: usize,
) -> Result<GradcheckReport>
where
    F: Fn(&[Var<Cpu64>]) -> Result<Var<Cpu64>>,
{
    let tape = Tape::new();
    let ids: Vec<LeafId> = inputs.iter().map(|_| LeafId::fresh()).collect();
    let vars: Vec<Var<Cpu64>> = inputs
        .iter()
        .zip(&ids)
        .map(|(t, id)| tape.leaf(t.clone(), *id))
        .collect();
    let loss = f(&vars)?;
    let grads = tape.backward(&loss)?;

    let eval = |replaced: usize, data: &[f64]| -> Result<f64> {
        let consts: Vec<Var<Cpu64>> = inputs
            .iter()
            .enumerate()
            .map(|(i, t)| {
                if i == replaced {
                    Tensor::from_host(t.backend(), t.shape().clone(), data).map(Var::constant)
                } else {
                    Ok(Var::constant(t.clone()))
                }
            })
            .collect::<Result<_>>()?;
        f(&consts)?.value().item()
    };

    let mut report = GradcheckReport {
        checked: 0,
        max_abs_err: 0.0,
    };
    for (i, (input, id)) in inputs.iter().zip(&ids).enumerate() {
        let analytic = match grads.get(*id) {
            Some(g) => g.to_vec()?,
            None => vec![0.0; input.numel()],
        };
        let mut data = input.to_vec()?;
        let n = data.len();
        let step = n.div_ceil(max_elems_per_input.max(1)).max(1);
        for j in (0..n).step_by(step) {
            let orig = data[j];
            data[j] = orig + eps;
            let plus = eval(i, &data)?;
            data[j] = orig - eps;
            let minus = eval(i, &data)?;
            data[j] = orig;
            let numeric = (plus - minus) / (2.0 * eps);
            let err = (analytic[j] - numeric).abs();
            report.max_abs_err = report.max_abs_err.max(err);
            report.checked += 1;
            // NaN errors fail too.
            if err.is_nan() || err > tol * (1.0 + numeric.abs()) {
                return Err(Error::shape(
                    "gradcheck",
                    format!(
                        "input {i} (shape {}), element {j}: analytic {} vs numeric {numeric} (error {err:e}, tolerance {tol:e})",
                        input.shape(),
                        analytic[j]
                    ),
                ));
            }
        }
    }
    Ok(report)
}
