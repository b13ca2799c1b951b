//! Sums over the middle axis of a tensor viewed as `[outer, mid, inner]`: with the right
//! split this is a full sum, a sum to channels, a per-sample per-channel sum over space, or
//! a per-voxel sum over channels. Its backward broadcasts back over the same axis.
mod cpu;

pub(crate) use cpu::sum_to_cols;

use crate::autograd::{BackwardOp, Var};
use crate::backend::BackendBase;
use crate::error::{Error, Result};
use crate::tensor::{Shape, Tensor};
use crate::tensor_ops::Backend;

/// The `[outer, mid, inner]` view of a tensor for a reduction over `mid`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Axis1 {
    pub outer: usize,
    pub mid: usize,
    pub inner: usize,
}

impl Axis1 {
    pub fn numel(&self) -> usize {
        self.outer * self.mid * self.inner
    }
}

pub trait ReduceKernel: BackendBase {
    /// out[o, i] = sum_m x[o, m, i].
    fn sum_axis1(&self, x: &Self::Storage, view: Axis1) -> Result<Self::Storage>;
    /// out[o, m, i] = x[o, i].
    fn broadcast_axis1(&self, x: &Self::Storage, view: Axis1) -> Result<Self::Storage>;
}

/// Sums `x` over the middle of `view`, giving a tensor of shape `out`.
pub fn sum_axis1<B: Backend>(x: &Tensor<B>, view: Axis1, out: Shape) -> Result<Tensor<B>> {
    if view.numel() != x.numel() || out.numel() != view.outer * view.inner {
        return Err(Error::shape(
            "sum",
            format!("cannot reduce {} as {view:?} into {out}", x.shape()),
        ));
    }
    let s = x.backend().sum_axis1(x.storage(), view)?;
    Tensor::from_storage(x.backend(), out, s)
}

struct SumBackward {
    view: Axis1,
    input_shape: Shape,
}

impl<B: Backend> BackwardOp<B> for SumBackward {
    fn backward(
        self: Box<Self>,
        grad: &Tensor<B>,
        _needs: &[bool],
    ) -> Result<Vec<Option<Tensor<B>>>> {
        let dx = grad.backend().broadcast_axis1(grad.storage(), self.view)?;
        Ok(vec![Some(Tensor::from_storage(
            grad.backend(),
            self.input_shape,
            dx,
        )?)])
    }
}

impl<B: Backend> Var<B> {
    /// Sum over the middle of `view`, shaped `out`.
    pub fn sum_axis1(&self, view: Axis1, out: impl Into<Shape>) -> Result<Var<B>> {
        let y = sum_axis1(self.value(), view, out.into())?;
        Ok(Var::from_op("sum", y, &[self], || SumBackward {
            view,
            input_shape: self.shape().clone(),
        }))
    }
    /// Sum of all elements, as a scalar.
    pub fn sum(&self) -> Result<Var<B>> {
        self.sum_axis1(
            Axis1 {
                outer: 1,
                mid: self.value().numel(),
                inner: 1,
            },
            Shape::scalar(),
        )
    }
    pub fn mean(&self) -> Result<Var<B>> {
        let n = self.value().numel().max(1);
        self.sum()?.scale(1.0 / n as f64)
    }
    /// NDHWC `[N, D, H, W, C]` summed over space: `[N, C]`.
    pub fn sum_spatial(&self) -> Result<Var<B>> {
        let [n, d, h, w, c] = self.shape().ndhwc("sum_spatial")?;
        self.sum_axis1(
            Axis1 {
                outer: n,
                mid: d * h * w,
                inner: c,
            },
            [n, c],
        )
    }
    /// Any tensor summed over all but its last axis: `[C]`.
    pub fn sum_to_channels(&self) -> Result<Var<B>> {
        let c = self.shape().last();
        self.sum_axis1(
            Axis1 {
                outer: 1,
                mid: self.value().numel() / c.max(1),
                inner: c,
            },
            [c],
        )
    }
    /// Any tensor summed over its last axis: the shape without it.
    pub fn sum_channels(&self) -> Result<Var<B>> {
        let c = self.shape().last();
        let dims = self.dims();
        let out = Shape::new(&dims[..dims.len().saturating_sub(1)]);
        self.sum_axis1(
            Axis1 {
                outer: self.value().numel() / c.max(1),
                mid: c,
                inner: 1,
            },
            out,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::autograd::check_gradients;
    use crate::backend::cpu::{Cpu, Cpu64};

    #[test]
    fn sums_known_values() {
        let b = Cpu::new();
        let data: Vec<f32> = (0..24).map(|v| v as f32).collect();
        let x = Var::constant(Tensor::from_host(&b, [2, 1, 3, 1, 4], &data).unwrap());
        assert_eq!(x.sum().unwrap().value().item().unwrap(), 276.0);
        assert_eq!(
            x.sum_spatial().unwrap().value().to_vec().unwrap(),
            vec![12.0, 15.0, 18.0, 21.0, 48.0, 51.0, 54.0, 57.0]
        );
        assert_eq!(
            x.sum_to_channels().unwrap().value().to_vec().unwrap(),
            vec![60.0, 66.0, 72.0, 78.0]
        );
        assert_eq!(x.sum_channels().unwrap().dims(), &[2, 1, 3, 1]);
    }

    #[test]
    fn column_sums_of_every_width_match_a_plain_loop() {
        for cols in [1, 2, 3, 5, 16, 17, 40] {
            for rows in [1, 7, 63, 64, 65, 1000, 4099] {
                let x: Vec<f64> = (0..rows * cols)
                    .map(|i| ((i * 7919) % 1013) as f64 / 64.0 - 7.0)
                    .collect();
                let mut expected = vec![0.0f64; cols];
                for row in x.chunks_exact(cols) {
                    for (e, v) in expected.iter_mut().zip(row) {
                        *e += v;
                    }
                }
                // Multiples of 1/64 below 2^53 add exactly in any order.
                assert_eq!(sum_to_cols(&x, cols), expected, "{rows} x {cols}");
            }
        }
    }

    #[test]
    fn broadcasts_over_tasks_of_many_rows_match_a_plain_loop() {
        let b = Cpu::new();
        for (outer, mid, inner) in [(1, 40_000, 1), (3, 7_000, 1), (2, 5_000, 3), (2, 3, 40)] {
            let v = Axis1 { outer, mid, inner };
            let x: Vec<f32> = (0..outer * inner).map(|i| i as f32 + 0.5).collect();
            let y = b.broadcast_axis1(&x, v).unwrap();
            let expected: Vec<f32> = (0..outer)
                .flat_map(|o| (0..mid).flat_map(move |_| (0..inner).map(move |i| o * inner + i)))
                .map(|i| i as f32 + 0.5)
                .collect();
            assert_eq!(y, expected, "{v:?}");
        }
    }

    #[test]
    fn gradients_of_sums() {
        let b = Cpu64::new();
        let x = Tensor::from_host(
            &b,
            [2, 1, 2, 3, 2],
            &(0..24).map(|v| (v as f64 * 0.37).sin()).collect::<Vec<_>>(),
        )
        .unwrap();
        for which in 0..4 {
            check_gradients(
                std::slice::from_ref(&x),
                |v| {
                    let s = match which {
                        0 => v[0].sum()?,
                        1 => v[0].sum_spatial()?.square()?.sum()?,
                        2 => v[0].sum_to_channels()?.square()?.sum()?,
                        _ => v[0].sum_channels()?.square()?.mean()?,
                    };
                    Ok(s)
                },
                1e-6,
                1e-6,
                64,
            )
            .unwrap();
        }
    }
}
