//! The local window average SSIM is built from: a separable filter with the same 1D taps
//! along depth, height and width of an NDHWC tensor, channel by channel, 'valid' (the
//! window stays inside the volume, so each spatial size shrinks by `taps - 1`). SSIM
//! itself is composed from this and element-wise ops in `loss::ssim`.
mod cpu;

use crate::autograd::{BackwardOp, Var};
use crate::backend::BackendBase;
use crate::error::{Error, Result};
use crate::tensor::{Shape, Tensor};
use crate::tensor_ops::Backend;

pub trait SsimWindowKernel: BackendBase {
    /// `y[n, d, h, w, c] = sum_{i,j,k} taps[i] taps[j] taps[k] x[n, d+i, h+j, w+k, c]`
    /// for `x` of dims `[N, D, H, W, C]`.
    fn window_filter_forward(
        &self,
        x: &Self::Storage,
        dims: [usize; 5],
        taps: &[f64],
    ) -> Result<Self::Storage>;
    /// The adjoint: the gradient for an input of dims `dims` from the output gradient.
    fn window_filter_backward(
        &self,
        dy: &Self::Storage,
        dims: [usize; 5],
        taps: &[f64],
    ) -> Result<Self::Storage>;
}

struct WindowFilterBackward {
    dims: [usize; 5],
    taps: Vec<f64>,
}

impl<B: Backend> BackwardOp<B> for WindowFilterBackward {
    fn backward(
        self: Box<Self>,
        grad: &Tensor<B>,
        _needs: &[bool],
    ) -> Result<Vec<Option<Tensor<B>>>> {
        let be = grad.backend();
        let dx = be.window_filter_backward(grad.storage(), self.dims, &self.taps)?;
        Ok(vec![Some(Tensor::from_storage(
            be,
            Shape::new(&self.dims),
            dx,
        )?)])
    }
}

impl<B: Backend> Var<B> {
    /// The separable 'valid' window filter with 1D `taps` over the three spatial axes of an
    /// NDHWC tensor: `[N, D, H, W, C]` -> `[N, D-k+1, H-k+1, W-k+1, C]` for k taps.
    pub fn window_filter(&self, taps: &[f64]) -> Result<Var<B>> {
        let dims = self.shape().ndhwc("window_filter")?;
        let k = taps.len();
        if k == 0 || dims[1] < k || dims[2] < k || dims[3] < k {
            return Err(Error::shape(
                "window_filter",
                format!(
                    "a window of {k} taps does not fit inside the spatial axes of {}",
                    self.shape()
                ),
            ));
        }
        let out = [
            dims[0],
            dims[1] - k + 1,
            dims[2] - k + 1,
            dims[3] - k + 1,
            dims[4],
        ];
        let y = self
            .backend()
            .window_filter_forward(self.value().storage(), dims, taps)?;
        let y = Tensor::from_storage(self.backend(), Shape::new(&out), y)?;
        Ok(Var::from_op("window_filter", y, &[self], || {
            WindowFilterBackward {
                dims,
                taps: taps.to_vec(),
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::autograd::check_gradients;
    use crate::backend::cpu::Cpu64;

    #[test]
    fn filter_matches_a_direct_triple_sum() {
        // The second shape's W pass has more rows than one CPU task holds.
        for dims in [[2, 4, 3, 5, 2], [1, 5, 40, 100, 1]] {
            check_filter_against_triple_sum(dims);
        }
    }

    fn check_filter_against_triple_sum(dims: [usize; 5]) {
        let b = Cpu64::new();
        let [batch, depth, height, width, channels] = dims;
        let n: usize = dims.iter().product();
        let data: Vec<f64> = (0..n).map(|i| (i as f64 * 0.29).sin()).collect();
        let taps = [0.25, 0.5, 0.25];
        let x = Var::constant(Tensor::from_host(&b, dims, &data).unwrap());
        let y = x.window_filter(&taps).unwrap();
        let (od, oh, ow) = (depth - 2, height - 2, width - 2);
        assert_eq!(y.dims(), &[batch, od, oh, ow, channels]);
        let y = y.value().to_vec().unwrap();
        let at = |n: usize, d: usize, h: usize, w: usize, c: usize| {
            data[(((n * depth + d) * height + h) * width + w) * channels + c]
        };
        let mut idx = 0;
        for n in 0..batch {
            for d in 0..od {
                for h in 0..oh {
                    for w in 0..ow {
                        for c in 0..channels {
                            let mut want = 0.0;
                            for (i, ti) in taps.iter().enumerate() {
                                for (j, tj) in taps.iter().enumerate() {
                                    for (k, tk) in taps.iter().enumerate() {
                                        want += ti * tj * tk * at(n, d + i, h + j, w + k, c);
                                    }
                                }
                            }
                            assert!(
                                (y[idx] - want).abs() < 1e-12,
                                "{dims:?} {idx}: {} vs {want}",
                                y[idx]
                            );
                            idx += 1;
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn a_window_larger_than_the_volume_is_an_error() {
        let b = Cpu64::new();
        let x = Var::constant(Tensor::zeros(&b, [1, 8, 2, 8, 1]).unwrap());
        let err = x.window_filter(&[1.0; 3]).unwrap_err().to_string();
        assert!(
            err.contains("window_filter") && err.contains("[1, 8, 2, 8, 1]"),
            "{err}"
        );
    }

    #[test]
    fn gradient_of_the_filter() {
        let b = Cpu64::new();
        let dims = [1, 4, 4, 3, 2];
        let n: usize = dims.iter().product();
        let x: Vec<f64> = (0..n).map(|i| (i as f64 * 0.61).cos()).collect();
        let x = Tensor::from_host(&b, dims, &x).unwrap();
        let report = check_gradients(
            &[x],
            |v| v[0].window_filter(&[0.2, 0.7, 0.1])?.square()?.sum(),
            1e-6,
            1e-7,
            200,
        )
        .unwrap();
        assert_eq!(report.checked, n);
    }
}
