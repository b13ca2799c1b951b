//! Element-wise functions of two tensors. The right operand may be broadcast: its shape
//! must equal the left's or be a suffix of it (a scalar, a per-channel vector `[C]`, ...),
//! and it repeats over the leading elements.
mod cpu;

use crate::autograd::{BackwardOp, Var};
use crate::backend::{BackendBase, Element};
use crate::error::{Error, Result};
use crate::tensor::{Shape, Tensor};
use crate::tensor_ops::Backend;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinaryOp {
    Add,
    Sub,
    Mul,
    Div,
}

impl BinaryOp {
    pub fn apply<E: Element>(self, a: E, b: E) -> E {
        match self {
            BinaryOp::Add => a + b,
            BinaryOp::Sub => a - b,
            BinaryOp::Mul => a * b,
            BinaryOp::Div => a / b,
        }
    }
    /// (d/da, d/db) at (a, b).
    pub fn partials<E: Element>(self, a: E, b: E) -> (E, E) {
        let one = E::one();
        match self {
            BinaryOp::Add => (one, one),
            BinaryOp::Sub => (one, -one),
            BinaryOp::Mul => (b, a),
            BinaryOp::Div => (one / b, -a / (b * b)),
        }
    }
}

pub trait BinaryKernel: BackendBase {
    /// out[i] = a[i] op b[i % b.len()]; `b.len()` divides `a.len()`.
    fn binary_forward(
        &self,
        op: BinaryOp,
        a: &Self::Storage,
        b: &Self::Storage,
    ) -> Result<Self::Storage>;
    /// Gradients of `binary_forward` for the inputs flagged in `needs`; the gradient of a
    /// broadcast `b` is summed over its repeats.
    #[allow(clippy::type_complexity)]
    fn binary_backward(
        &self,
        op: BinaryOp,
        a: &Self::Storage,
        b: &Self::Storage,
        dy: &Self::Storage,
        needs: [bool; 2],
    ) -> Result<(Option<Self::Storage>, Option<Self::Storage>)>;
}

/// Fails unless `b` elements tile `a` whole (an empty `b` tiles only an empty `a`): the
/// storage-level check every backend's binary kernels make.
pub(crate) fn check_tiling(a: usize, b: usize) -> Result<()> {
    let tiles = if b == 0 { a == 0 } else { a.is_multiple_of(b) };
    if !tiles {
        return Err(Error::shape(
            "binary",
            format!("right operand of {b} elements does not tile {a}"),
        ));
    }
    Ok(())
}

fn check_broadcast(op: BinaryOp, a: &Shape, b: &Shape) -> Result<()> {
    let (ad, bd) = (a.dims(), b.dims());
    if bd.len() <= ad.len() && ad[ad.len() - bd.len()..] == *bd {
        return Ok(());
    }
    Err(Error::shape(
        "binary",
        format!(
            "{op:?}: right operand of shape {b} is neither the left's shape {a} nor a suffix of it"
        ),
    ))
}

/// `a op b` without recording.
pub fn binary<B: Backend>(op: BinaryOp, a: &Tensor<B>, b: &Tensor<B>) -> Result<Tensor<B>> {
    check_broadcast(op, a.shape(), b.shape())?;
    let out = a.backend().binary_forward(op, a.storage(), b.storage())?;
    Tensor::from_storage(a.backend(), a.shape().clone(), out)
}

/// Element-wise sum of two tensors of one shape (also used to accumulate gradients).
pub fn add<B: Backend>(a: &Tensor<B>, b: &Tensor<B>) -> Result<Tensor<B>> {
    binary(BinaryOp::Add, a, b)
}

struct BinaryBackward<B: Backend> {
    op: BinaryOp,
    a: Tensor<B>,
    b: Tensor<B>,
}

impl<B: Backend> BackwardOp<B> for BinaryBackward<B> {
    fn backward(
        self: Box<Self>,
        grad: &Tensor<B>,
        needs: &[bool],
    ) -> Result<Vec<Option<Tensor<B>>>> {
        let be = self.a.backend();
        let (da, db) = be.binary_backward(
            self.op,
            self.a.storage(),
            self.b.storage(),
            grad.storage(),
            [needs[0], needs[1]],
        )?;
        let da = da
            .map(|s| Tensor::from_storage(be, self.a.shape().clone(), s))
            .transpose()?;
        let db = db
            .map(|s| Tensor::from_storage(be, self.b.shape().clone(), s))
            .transpose()?;
        Ok(vec![da, db])
    }
}

impl<B: Backend> Var<B> {
    /// `self op rhs`, with `rhs` broadcast when its shape is a suffix of `self`'s.
    pub fn binary(&self, op: BinaryOp, rhs: &Var<B>) -> Result<Var<B>> {
        let y = binary(op, self.value(), rhs.value())?;
        Ok(Var::from_op("binary", y, &[self, rhs], || BinaryBackward {
            op,
            a: self.value().clone(),
            b: rhs.value().clone(),
        }))
    }
    /// Sum; either side may be the broadcast one.
    pub fn add(&self, rhs: &Var<B>) -> Result<Var<B>> {
        if rhs.value().numel() > self.value().numel() {
            return rhs.binary(BinaryOp::Add, self);
        }
        self.binary(BinaryOp::Add, rhs)
    }
    pub fn sub(&self, rhs: &Var<B>) -> Result<Var<B>> {
        self.binary(BinaryOp::Sub, rhs)
    }
    /// Product; either side may be the broadcast one.
    pub fn mul(&self, rhs: &Var<B>) -> Result<Var<B>> {
        if rhs.value().numel() > self.value().numel() {
            return rhs.binary(BinaryOp::Mul, self);
        }
        self.binary(BinaryOp::Mul, rhs)
    }
    pub fn div(&self, rhs: &Var<B>) -> Result<Var<B>> {
        self.binary(BinaryOp::Div, rhs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::autograd::check_gradients;
    use crate::backend::cpu::{Cpu, Cpu64};

    #[test]
    fn broadcast_forward_values() {
        let b = Cpu::new();
        let x = Var::constant(
            Tensor::from_host(&b, [2, 3], &[1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0]).unwrap(),
        );
        let c = Var::constant(Tensor::from_host(&b, [3], &[10.0f32, 20.0, 30.0]).unwrap());
        assert_eq!(
            x.add(&c).unwrap().value().to_vec().unwrap(),
            vec![11.0, 22.0, 33.0, 14.0, 25.0, 36.0]
        );
        assert_eq!(
            c.mul(&x).unwrap().value().to_vec().unwrap(),
            vec![10.0, 40.0, 90.0, 40.0, 100.0, 180.0]
        );
        let bad = Var::constant(Tensor::from_host(&b, [2], &[1.0f32, 2.0]).unwrap());
        let err = x.sub(&bad).unwrap_err().to_string();
        assert!(err.contains("[2]") && err.contains("[2, 3]"), "{err}");
    }

    #[test]
    fn gradients_with_and_without_broadcast() {
        let b = Cpu64::new();
        let a = Tensor::from_host(
            &b,
            [2, 2, 3],
            &[
                0.5, -1.2, 2.0, 1.1, 0.3, -0.7, 1.9, -2.2, 0.6, 0.8, 1.4, -0.9,
            ],
        )
        .unwrap();
        let full = Tensor::from_host(
            &b,
            [2, 2, 3],
            &[
                1.5, 2.2, -1.0, 0.9, 1.3, 2.7, -1.9, 1.2, 0.6, 1.8, -1.4, 0.95,
            ],
        )
        .unwrap();
        let chan = Tensor::from_host(&b, [3], &[1.3, -0.8, 2.1]).unwrap();
        for op in [BinaryOp::Add, BinaryOp::Sub, BinaryOp::Mul, BinaryOp::Div] {
            for rhs in [&full, &chan] {
                check_gradients(
                    &[a.clone(), rhs.clone()],
                    |v| v[0].binary(op, &v[1])?.square()?.sum(),
                    1e-6,
                    1e-6,
                    64,
                )
                .unwrap_or_else(|e| panic!("{op:?} rhs {}: {e}", rhs.shape()));
            }
        }
    }

    #[test]
    fn a_value_used_twice_accumulates_its_gradient() {
        let b = Cpu64::new();
        let x = Tensor::from_host(&b, [3], &[1.0, -2.0, 0.5]).unwrap();
        // d/dx sum(x*x + x) = 2x + 1
        let tape = crate::autograd::Tape::new();
        let id = crate::autograd::LeafId::fresh();
        let v = tape.leaf(x, id);
        let loss = v.mul(&v).unwrap().add(&v).unwrap().sum().unwrap();
        let g = tape.backward(&loss).unwrap();
        assert_eq!(g.get(id).unwrap().to_vec().unwrap(), vec![3.0, -3.0, 2.0]);
        assert!(tape.is_empty(), "backward consumes the tape");
    }
}
