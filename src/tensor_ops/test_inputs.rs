//! Inputs and losses shared by the op families' gradient checks.
use crate::autograd::Var;
use crate::backend::cpu::Cpu64;
use crate::error::Result;
use crate::rng::Rng;
use crate::tensor::{Shape, Tensor};

/// An f64 tensor of smooth, non-repeating values.
pub(crate) fn wavy(shape: impl Into<Shape>) -> Tensor<Cpu64> {
    let shape = shape.into();
    let data: Vec<f64> = (0..shape.numel())
        .map(|i| (i as f64 * 0.731).sin() + 0.1 * (i as f64 * 0.173).cos())
        .collect();
    Tensor::from_host(&Cpu64::new(), shape, &data).expect("length matches the shape")
}

/// An f64 tensor whose values are pairwise at least 0.1 apart, in shuffled order, so a
/// central-difference step of 1e-6 never changes which element of a window is largest.
pub(crate) fn distinct(shape: impl Into<Shape>, seed: u64) -> Tensor<Cpu64> {
    let shape = shape.into();
    let n = shape.numel();
    let mut data: Vec<f64> = (0..n).map(|i| 0.1 * i as f64 - 0.05 * n as f64).collect();
    Rng::new(seed).shuffle(&mut data);
    Tensor::from_host(&Cpu64::new(), shape, &data).expect("length matches the shape")
}

/// sum(y * w) with fixed weights w that differ per element, so a gradient routed to the
/// wrong output element shows up in the check.
pub(crate) fn weighted_sum(y: &Var<Cpu64>) -> Result<Var<Cpu64>> {
    let w: Vec<f64> = (0..y.value().numel())
        .map(|i| 0.5 + (i as f64 * 1.37).cos())
        .collect();
    let w = Tensor::from_host(y.backend(), y.shape().clone(), &w)?;
    y.mul(&Var::constant(w))?.sum()
}
