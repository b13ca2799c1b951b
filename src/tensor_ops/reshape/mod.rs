//! Viewing a tracked value with another shape of equal size. No kernel: the buffer is
//! shared, and the backward views the gradient with the input's shape.
use crate::autograd::{BackwardOp, Var};
use crate::error::Result;
use crate::tensor::{Shape, Tensor};
use crate::tensor_ops::Backend;

/// Saves the input's shape.
struct ReshapeBackward {
    input_shape: Shape,
}

impl<B: Backend> BackwardOp<B> for ReshapeBackward {
    fn backward(
        self: Box<Self>,
        grad: &Tensor<B>,
        _needs: &[bool],
    ) -> Result<Vec<Option<Tensor<B>>>> {
        Ok(vec![Some(grad.reshape(self.input_shape)?)])
    }
}

impl<B: Backend> Var<B> {
    /// The same buffer with another shape of equal element count.
    pub fn reshape(&self, shape: impl Into<Shape>) -> Result<Var<B>> {
        let y = self.value().reshape(shape)?;
        Ok(Var::from_op("reshape", y, &[self], || ReshapeBackward {
            input_shape: self.shape().clone(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::autograd::check_gradients;
    use crate::backend::cpu::Cpu;
    use crate::tensor_ops::test_inputs::{wavy, weighted_sum};

    #[test]
    fn reshape_shares_the_buffer() {
        let x = Var::constant(Tensor::<Cpu>::zeros(&Cpu::new(), [2, 3, 4]).unwrap());
        let y = x.reshape([6, 4]).unwrap();
        assert_eq!(y.dims(), &[6, 4]);
        assert!(y.value().same_storage(x.value()));
        let err = x.reshape([5, 5]).unwrap_err().to_string();
        assert!(
            err.contains("reshape") && err.contains("[2, 3, 4]") && err.contains("[5, 5]"),
            "{err}"
        );
    }

    #[test]
    fn gradient_of_reshape() {
        // The square makes the gradient depend on each input value, so it must reach
        // its element in the input's shape.
        check_gradients(
            &[wavy([2, 5, 3, 4, 3])],
            |v| weighted_sum(&v[0].reshape([10, 36])?.square()?),
            1e-6,
            1e-7,
            usize::MAX,
        )
        .unwrap();
    }
}
