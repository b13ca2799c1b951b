//! Element-wise regression losses for reconstruction tasks.
use super::check_finite;
use crate::autograd::Var;
use crate::backend::Backend;
use crate::error::Result;

/// Mean squared error over all elements.
pub fn mse<B: Backend>(pred: &Var<B>, target: &Var<B>) -> Result<Var<B>> {
    pred.shape().expect_eq(target.shape(), "mse")?;
    check_finite("mse", pred.sub(target)?.square()?.mean()?)
}

/// Mean absolute error over all elements (gradient 0 where prediction equals target).
pub fn mae<B: Backend>(pred: &Var<B>, target: &Var<B>) -> Result<Var<B>> {
    pred.shape().expect_eq(target.shape(), "mae")?;
    check_finite("mae", pred.sub(target)?.abs()?.mean()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::autograd::check_gradients;
    use crate::backend::cpu::Cpu64;
    use crate::tensor::Tensor;

    #[test]
    fn known_values_and_gradients() {
        let b = Cpu64::new();
        let p = Tensor::from_host(&b, [1, 1, 1, 2, 2], &[1.0, -2.0, 0.5, 3.0]).unwrap();
        let t = Tensor::from_host(&b, [1, 1, 1, 2, 2], &[0.0, 1.0, 1.0, 2.5]).unwrap();
        let (pv, tv) = (Var::constant(p.clone()), Var::constant(t.clone()));
        assert!((mse(&pv, &tv).unwrap().value().item().unwrap() - 10.5 / 4.0).abs() < 1e-12);
        assert!((mae(&pv, &tv).unwrap().value().item().unwrap() - 5.0 / 4.0).abs() < 1e-12);
        for f in [mse::<Cpu64>, mae::<Cpu64>] {
            check_gradients(&[p.clone(), t.clone()], |v| f(&v[0], &v[1]), 1e-6, 1e-8, 16).unwrap();
        }
        let bad = Var::constant(Tensor::zeros(&b, [4]).unwrap());
        assert!(mse(&pv, &bad).unwrap_err().to_string().contains("mse"));
    }
}
