//! Element-wise functions of one tensor: activations and simple math.
mod cpu;

use crate::autograd::{BackwardOp, Var};
use crate::backend::{BackendBase, Element};
use crate::error::Result;
use crate::tensor::Tensor;
use crate::tensor_ops::Backend;

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum UnaryOp {
    Relu,
    /// max(x, slope * x); Keras' default slope is 0.3, nnU-Net's 0.01.
    LeakyRelu(f64),
    /// x for x > 0, alpha * (exp(x) - 1) otherwise.
    Elu(f64),
    Sigmoid,
    Tanh,
    Exp,
    /// Natural logarithm; the caller keeps inputs positive.
    Log,
    Neg,
    Abs,
    Square,
    Sqrt,
    /// x * c.
    Scale(f64),
    /// x + c.
    AddScalar(f64),
}

impl UnaryOp {
    pub fn apply<E: Element>(self, x: E) -> E {
        let zero = E::zero();
        let one = E::one();
        match self {
            UnaryOp::Relu => x.max(zero),
            UnaryOp::LeakyRelu(s) => {
                if x > zero {
                    x
                } else {
                    x * E::of(s)
                }
            }
            UnaryOp::Elu(a) => {
                if x > zero {
                    x
                } else {
                    E::of(a) * (x.exp() - one)
                }
            }
            UnaryOp::Sigmoid => sigmoid(x),
            UnaryOp::Tanh => x.tanh(),
            UnaryOp::Exp => x.exp(),
            UnaryOp::Log => x.ln(),
            UnaryOp::Neg => -x,
            UnaryOp::Abs => x.abs(),
            UnaryOp::Square => x * x,
            UnaryOp::Sqrt => x.sqrt(),
            UnaryOp::Scale(c) => x * E::of(c),
            UnaryOp::AddScalar(c) => x + E::of(c),
        }
    }

    /// f'(x), given x and y = f(x).
    pub fn derivative<E: Element>(self, x: E, y: E) -> E {
        let zero = E::zero();
        let one = E::one();
        match self {
            UnaryOp::Relu => {
                if x > zero {
                    one
                } else {
                    zero
                }
            }
            UnaryOp::LeakyRelu(s) => {
                if x > zero {
                    one
                } else {
                    E::of(s)
                }
            }
            UnaryOp::Elu(a) => {
                if x > zero {
                    one
                } else {
                    y + E::of(a)
                }
            }
            UnaryOp::Sigmoid => y * (one - y),
            UnaryOp::Tanh => one - y * y,
            UnaryOp::Exp => y,
            UnaryOp::Log => one / x,
            UnaryOp::Neg => -one,
            UnaryOp::Abs => {
                if x > zero {
                    one
                } else if x < zero {
                    -one
                } else {
                    zero
                }
            }
            UnaryOp::Square => x + x,
            UnaryOp::Sqrt => E::of(0.5) / y,
            UnaryOp::Scale(c) => E::of(c),
            UnaryOp::AddScalar(_) => one,
        }
    }
}

/// Logistic function, written to avoid overflow of exp for large |x|.
pub fn sigmoid<E: Element>(x: E) -> E {
    let one = E::one();
    if x >= E::zero() {
        one / (one + (-x).exp())
    } else {
        let e = x.exp();
        e / (one + e)
    }
}

pub trait UnaryKernel: BackendBase {
    fn unary_forward(&self, op: UnaryOp, x: &Self::Storage) -> Result<Self::Storage>;
    /// dx = dy * f'(x), where y = f(x).
    fn unary_backward(
        &self,
        op: UnaryOp,
        x: &Self::Storage,
        y: &Self::Storage,
        dy: &Self::Storage,
    ) -> Result<Self::Storage>;
}

/// `op` applied to every element of a tensor, without recording.
pub fn unary<B: Backend>(op: UnaryOp, x: &Tensor<B>) -> Result<Tensor<B>> {
    let out = x.backend().unary_forward(op, x.storage())?;
    Tensor::from_storage(x.backend(), x.shape().clone(), out)
}

struct UnaryBackward<B: Backend> {
    op: UnaryOp,
    x: Tensor<B>,
    y: Tensor<B>,
}

impl<B: Backend> BackwardOp<B> for UnaryBackward<B> {
    fn backward(
        self: Box<Self>,
        grad: &Tensor<B>,
        _needs: &[bool],
    ) -> Result<Vec<Option<Tensor<B>>>> {
        let dx = self.x.backend().unary_backward(
            self.op,
            self.x.storage(),
            self.y.storage(),
            grad.storage(),
        )?;
        Ok(vec![Some(Tensor::from_storage(
            self.x.backend(),
            self.x.shape().clone(),
            dx,
        )?)])
    }
}

impl<B: Backend> Var<B> {
    pub fn unary(&self, op: UnaryOp) -> Result<Var<B>> {
        let y = unary(op, self.value())?;
        Ok(Var::from_op("unary", y.clone(), &[self], || {
            UnaryBackward {
                op,
                x: self.value().clone(),
                y,
            }
        }))
    }
    pub fn relu(&self) -> Result<Var<B>> {
        self.unary(UnaryOp::Relu)
    }
    pub fn leaky_relu(&self, slope: f64) -> Result<Var<B>> {
        self.unary(UnaryOp::LeakyRelu(slope))
    }
    pub fn elu(&self, alpha: f64) -> Result<Var<B>> {
        self.unary(UnaryOp::Elu(alpha))
    }
    pub fn sigmoid(&self) -> Result<Var<B>> {
        self.unary(UnaryOp::Sigmoid)
    }
    pub fn tanh(&self) -> Result<Var<B>> {
        self.unary(UnaryOp::Tanh)
    }
    pub fn exp(&self) -> Result<Var<B>> {
        self.unary(UnaryOp::Exp)
    }
    pub fn log(&self) -> Result<Var<B>> {
        self.unary(UnaryOp::Log)
    }
    pub fn neg(&self) -> Result<Var<B>> {
        self.unary(UnaryOp::Neg)
    }
    pub fn abs(&self) -> Result<Var<B>> {
        self.unary(UnaryOp::Abs)
    }
    pub fn square(&self) -> Result<Var<B>> {
        self.unary(UnaryOp::Square)
    }
    pub fn sqrt(&self) -> Result<Var<B>> {
        self.unary(UnaryOp::Sqrt)
    }
    pub fn scale(&self, c: f64) -> Result<Var<B>> {
        self.unary(UnaryOp::Scale(c))
    }
    pub fn add_scalar(&self, c: f64) -> Result<Var<B>> {
        self.unary(UnaryOp::AddScalar(c))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::autograd::check_gradients;
    use crate::backend::cpu::{Cpu, Cpu64};

    #[test]
    fn activations_known_values() {
        let b = Cpu::new();
        let x = Tensor::from_host(&b, [4], &[-2.0f32, -0.5, 0.0, 3.0]).unwrap();
        let v = Var::constant(x);
        assert_eq!(
            v.relu().unwrap().value().to_vec().unwrap(),
            vec![0.0, 0.0, 0.0, 3.0]
        );
        assert_eq!(
            v.leaky_relu(0.3).unwrap().value().to_vec().unwrap(),
            vec![-0.6, -0.15, 0.0, 3.0]
        );
        let s = v.sigmoid().unwrap().value().to_vec().unwrap();
        assert!((s[2] - 0.5).abs() < 1e-7 && (s[3] - 0.952_574_1).abs() < 1e-6);
        let e = v.elu(1.0).unwrap().value().to_vec().unwrap();
        assert!((e[0] - (-0.864_664_7)).abs() < 1e-6);
        assert!(sigmoid(-1000.0f32).is_finite() && sigmoid(1000.0f32) == 1.0);
    }

    #[test]
    fn gradients_of_every_unary_op() {
        let b = Cpu64::new();
        // Values kept away from the kinks of relu/abs so central differences are valid.
        let data = [-1.7, -0.6, 0.45, 1.3, 2.2, -0.25, 0.8];
        let positive = [0.3, 0.9, 1.7, 2.5, 0.6, 1.1, 3.0];
        let ops = [
            UnaryOp::Relu,
            UnaryOp::LeakyRelu(0.01),
            UnaryOp::Elu(1.3),
            UnaryOp::Sigmoid,
            UnaryOp::Tanh,
            UnaryOp::Exp,
            UnaryOp::Log,
            UnaryOp::Neg,
            UnaryOp::Abs,
            UnaryOp::Square,
            UnaryOp::Sqrt,
            UnaryOp::Scale(-2.5),
            UnaryOp::AddScalar(0.7),
        ];
        for op in ops {
            let src = if matches!(op, UnaryOp::Log | UnaryOp::Sqrt) {
                &positive
            } else {
                &data
            };
            let x = Tensor::from_host(&b, [7], src).unwrap();
            let w = Tensor::from_host(&b, [7], &[0.3, -1.1, 0.7, 2.0, -0.4, 1.5, 0.9]).unwrap();
            let report = check_gradients(
                &[x],
                |v| v[0].unary(op)?.mul(&Var::constant(w.clone()))?.sum(),
                1e-6,
                1e-6,
                64,
            )
            .unwrap_or_else(|e| panic!("{op:?}: {e}"));
            assert_eq!(report.checked, 7);
        }
    }
}
