//! Helpers for the optimiser tests: gradients with chosen values.
use crate::autograd::{Gradients, LeafId, Tape, Var};
use crate::backend::{Backend, Element};
use crate::tensor::Tensor;

/// Gradients equal to the given values: those of `sum_i sum(x_i * values_i)` with the
/// leaves `x_i` registered under the given ids.
pub fn gradients<B: Backend>(backend: &B, entries: &[(LeafId, &[f64])]) -> Gradients<B> {
    let tape = Tape::new();
    let mut loss = Var::constant(Tensor::scalar(backend, 0.0).unwrap());
    for (id, values) in entries {
        let data: Vec<B::E> = values.iter().map(|&v| B::E::of(v)).collect();
        let x = tape.leaf(Tensor::zeros(backend, [values.len()]).unwrap(), *id);
        let c = Var::constant(Tensor::from_host(backend, [values.len()], &data).unwrap());
        loss = loss.add(&x.mul(&c).unwrap().sum().unwrap()).unwrap();
    }
    tape.backward(&loss).unwrap()
}
