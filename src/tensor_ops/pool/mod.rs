//! Max and average pooling over the D, H, W axes of an NDHWC tensor, with Keras 'valid' and
//! 'same' padding. Padded cells never take part: a max ignores them and an average divides
//! by the number of real cells in its window.
mod cpu;

use crate::autograd::{BackwardOp, Var};
use crate::backend::BackendBase;
use crate::error::{Error, Result};
use crate::tensor::{Shape, Tensor};
use crate::tensor_ops::Backend;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PoolPadding {
    /// Only windows that lie inside the input: out = floor((in - k) / stride) + 1.
    Valid,
    /// out = ceil(in / stride); the padding needed is split floor before, ceil after.
    Same,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pool3dSpec {
    /// Window size per D, H, W.
    pub kernel: [usize; 3],
    pub stride: [usize; 3],
    pub padding: PoolPadding,
}

/// Everything a pooling kernel needs to know about one call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct Pool3dGeometry {
    pub batch: usize,
    pub channels: usize,
    /// Input D, H, W.
    pub input: [usize; 3],
    /// Output D, H, W.
    pub output: [usize; 3],
    pub kernel: [usize; 3],
    pub stride: [usize; 3],
    /// Padded cells before the first input cell per axis (non-zero only for 'same').
    pub pad_before: [usize; 3],
}

impl Pool3dSpec {
    /// The geometry of pooling an NDHWC tensor of shape `x`, or an error naming `op`.
    pub fn geometry(&self, op: &'static str, x: &Shape) -> Result<Pool3dGeometry> {
        let [batch, d, h, w, channels] = x.ndhwc(op)?;
        let input = [d, h, w];
        if self.kernel.contains(&0) || self.stride.contains(&0) {
            return Err(Error::shape(
                op,
                format!(
                    "kernel {:?} and stride {:?} must be positive (input {x})",
                    self.kernel, self.stride
                ),
            ));
        }
        if x.numel() == 0 {
            return Err(Error::shape(op, format!("empty input {x}")));
        }
        let mut output = [0; 3];
        let mut pad_before = [0; 3];
        for a in 0..3 {
            let (n, k, s) = (input[a], self.kernel[a], self.stride[a]);
            match self.padding {
                PoolPadding::Valid => {
                    if n < k {
                        return Err(Error::shape(
                            op,
                            format!(
                                "'valid' window {:?} does not fit the spatial size of input {x}",
                                self.kernel
                            ),
                        ));
                    }
                    output[a] = (n - k) / s + 1;
                }
                PoolPadding::Same => {
                    output[a] = n.div_ceil(s);
                    pad_before[a] = ((output[a] - 1) * s + k).saturating_sub(n) / 2;
                }
            }
        }
        Ok(Pool3dGeometry {
            batch,
            channels,
            input,
            output,
            kernel: self.kernel,
            stride: self.stride,
            pad_before,
        })
    }
}

impl Pool3dGeometry {
    pub fn input_shape(&self) -> Shape {
        let [d, h, w] = self.input;
        Shape::new(&[self.batch, d, h, w, self.channels])
    }
    pub fn output_shape(&self) -> Shape {
        let [d, h, w] = self.output;
        Shape::new(&[self.batch, d, h, w, self.channels])
    }
    /// The input cells `[lo, hi)` along `axis` in the window of output cell `o`, padding excluded.
    pub fn window(&self, axis: usize, o: usize) -> (usize, usize) {
        let start = (o * self.stride[axis]) as isize - self.pad_before[axis] as isize;
        let end = start + self.kernel[axis] as isize;
        (
            start.max(0) as usize,
            end.min(self.input[axis] as isize) as usize,
        )
    }
    /// The output cells `[lo, hi)` along `axis` whose windows contain input cell `i`.
    pub fn covering(&self, axis: usize, i: usize) -> (usize, usize) {
        let (k, s) = (self.kernel[axis], self.stride[axis]);
        let t = i + self.pad_before[axis];
        let lo = (t + 1).saturating_sub(k).div_ceil(s);
        let hi = (t / s + 1).min(self.output[axis]);
        (lo, hi.max(lo))
    }
}

pub trait PoolKernel: BackendBase {
    fn max_pool3d_forward(&self, x: &Self::Storage, g: Pool3dGeometry) -> Result<Self::Storage>;
    /// dx: each window's gradient goes to the first largest real cell of the window
    /// (first in D, then H, then W order), per channel.
    fn max_pool3d_backward(
        &self,
        x: &Self::Storage,
        dy: &Self::Storage,
        g: Pool3dGeometry,
    ) -> Result<Self::Storage>;
    fn avg_pool3d_forward(&self, x: &Self::Storage, g: Pool3dGeometry) -> Result<Self::Storage>;
    /// dx: each window's gradient divided evenly among its real cells.
    fn avg_pool3d_backward(&self, dy: &Self::Storage, g: Pool3dGeometry) -> Result<Self::Storage>;
}

/// Max pooling of an NDHWC tensor, without recording.
pub fn max_pool3d<B: Backend>(x: &Tensor<B>, spec: &Pool3dSpec) -> Result<Tensor<B>> {
    let g = spec.geometry("max_pool3d", x.shape())?;
    let y = x.backend().max_pool3d_forward(x.storage(), g)?;
    Tensor::from_storage(x.backend(), g.output_shape(), y)
}

/// Average pooling of an NDHWC tensor, without recording.
pub fn avg_pool3d<B: Backend>(x: &Tensor<B>, spec: &Pool3dSpec) -> Result<Tensor<B>> {
    let g = spec.geometry("avg_pool3d", x.shape())?;
    let y = x.backend().avg_pool3d_forward(x.storage(), g)?;
    Tensor::from_storage(x.backend(), g.output_shape(), y)
}

/// Saves the input: the backward recomputes each window's argmax rather than keeping indices.
struct MaxPoolBackward<B: Backend> {
    x: Tensor<B>,
    geometry: Pool3dGeometry,
}

impl<B: Backend> BackwardOp<B> for MaxPoolBackward<B> {
    fn backward(
        self: Box<Self>,
        grad: &Tensor<B>,
        _needs: &[bool],
    ) -> Result<Vec<Option<Tensor<B>>>> {
        let be = self.x.backend();
        let dx = be.max_pool3d_backward(self.x.storage(), grad.storage(), self.geometry)?;
        Ok(vec![Some(Tensor::from_storage(
            be,
            self.geometry.input_shape(),
            dx,
        )?)])
    }
}

/// Saves only the geometry: the average's gradient does not depend on the input.
struct AvgPoolBackward {
    geometry: Pool3dGeometry,
}

impl<B: Backend> BackwardOp<B> for AvgPoolBackward {
    fn backward(
        self: Box<Self>,
        grad: &Tensor<B>,
        _needs: &[bool],
    ) -> Result<Vec<Option<Tensor<B>>>> {
        let be = grad.backend();
        let dx = be.avg_pool3d_backward(grad.storage(), self.geometry)?;
        Ok(vec![Some(Tensor::from_storage(
            be,
            self.geometry.input_shape(),
            dx,
        )?)])
    }
}

impl<B: Backend> Var<B> {
    /// Max pooling over D, H, W of an NDHWC tensor.
    pub fn max_pool3d(&self, spec: &Pool3dSpec) -> Result<Var<B>> {
        let geometry = spec.geometry("max_pool3d", self.shape())?;
        let y = max_pool3d(self.value(), spec)?;
        Ok(Var::from_op("max_pool3d", y, &[self], || MaxPoolBackward {
            x: self.value().clone(),
            geometry,
        }))
    }
    /// Average pooling over D, H, W of an NDHWC tensor (padded cells not counted).
    pub fn avg_pool3d(&self, spec: &Pool3dSpec) -> Result<Var<B>> {
        let geometry = spec.geometry("avg_pool3d", self.shape())?;
        let y = avg_pool3d(self.value(), spec)?;
        Ok(Var::from_op("avg_pool3d", y, &[self], || AvgPoolBackward {
            geometry,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::autograd::{check_gradients, LeafId, Tape};
    use crate::backend::cpu::{Cpu, Cpu64};
    use crate::tensor_ops::test_inputs::{distinct, wavy, weighted_sum};

    fn spec(kernel: [usize; 3], stride: [usize; 3], padding: PoolPadding) -> Pool3dSpec {
        Pool3dSpec {
            kernel,
            stride,
            padding,
        }
    }

    /// 1x4x4x4x1 with value 16 z + 4 y + x at (z, y, x), scaled by `sign` and shifted by `shift`.
    fn ramp(sign: f32, shift: f32) -> Var<Cpu> {
        let data: Vec<f32> = (0..64).map(|i| sign * i as f32 + shift).collect();
        Var::constant(Tensor::from_host(&Cpu::new(), [1, 4, 4, 4, 1], &data).unwrap())
    }

    #[test]
    fn pools_a_ramp_with_valid_windows() {
        let s = spec([2, 2, 2], [2, 2, 2], PoolPadding::Valid);
        let max = ramp(1.0, 0.0).max_pool3d(&s).unwrap();
        assert_eq!(max.dims(), &[1, 2, 2, 2, 1]);
        // Each window's maximum is its far corner (2 oz + 1, 2 oy + 1, 2 ox + 1).
        assert_eq!(
            max.value().to_vec().unwrap(),
            vec![21.0, 23.0, 29.0, 31.0, 53.0, 55.0, 61.0, 63.0]
        );
        // The mean of a linear ramp over a box is its value at the box centre (+0.5 per axis).
        let avg = ramp(1.0, 0.0).avg_pool3d(&s).unwrap();
        assert_eq!(
            avg.value().to_vec().unwrap(),
            vec![10.5, 12.5, 18.5, 20.5, 42.5, 44.5, 50.5, 52.5]
        );
    }

    #[test]
    fn same_padding_ignores_the_padded_cells() {
        // k 3, s 2 on 4 cells: out 2, total padding 1 split 0 before, 1 after, so the
        // windows are cells [0, 3) and [2, 4) plus one padded cell.
        let s = spec([3, 3, 3], [2, 2, 2], PoolPadding::Same);
        let max = ramp(1.0, 0.0).max_pool3d(&s).unwrap();
        assert_eq!(
            max.value().to_vec().unwrap(),
            vec![42.0, 43.0, 46.0, 47.0, 58.0, 59.0, 62.0, 63.0]
        );
        // All values negative: a padded zero taking part would win every second window.
        let neg = ramp(-1.0, -1.0).max_pool3d(&s).unwrap();
        assert_eq!(
            neg.value().to_vec().unwrap(),
            vec![-1.0, -3.0, -9.0, -11.0, -33.0, -35.0, -41.0, -43.0]
        );
        // Real-cell means per axis: 1 for [0, 3), 2.5 for [2, 4).
        let avg = ramp(1.0, 0.0).avg_pool3d(&s).unwrap();
        assert_eq!(
            avg.value().to_vec().unwrap(),
            vec![21.0, 22.5, 27.0, 28.5, 45.0, 46.5, 51.0, 52.5]
        );
    }

    #[test]
    fn output_shapes_for_odd_sizes() {
        let x = Shape::new(&[2, 5, 7, 9, 3]);
        let same = spec([2, 3, 3], [2, 2, 3], PoolPadding::Same)
            .geometry("max_pool3d", &x)
            .unwrap();
        assert_eq!(same.output_shape().dims(), &[2, 3, 4, 3, 3]);
        // Padding totals 1, 2, 0: split floor before.
        assert_eq!(same.pad_before, [0, 1, 0]);
        let valid = spec([2, 3, 3], [2, 2, 3], PoolPadding::Valid)
            .geometry("max_pool3d", &x)
            .unwrap();
        assert_eq!(valid.output_shape().dims(), &[2, 2, 3, 3, 3]);
        assert_eq!(valid.pad_before, [0, 0, 0]);
        let big_stride = spec([1, 1, 1], [4, 4, 4], PoolPadding::Same)
            .geometry("avg_pool3d", &x)
            .unwrap();
        assert_eq!(big_stride.output_shape().dims(), &[2, 2, 2, 3, 3]);
    }

    #[test]
    fn ties_send_the_gradient_to_the_first_cell() {
        let b = Cpu64::new();
        let tape = Tape::new();
        let id = LeafId::fresh();
        let x = tape.leaf(Tensor::full(&b, [1, 2, 2, 2, 2], 1.5).unwrap(), id);
        let y = x
            .max_pool3d(&spec([2, 2, 2], [2, 2, 2], PoolPadding::Valid))
            .unwrap();
        assert_eq!(y.value().to_vec().unwrap(), vec![1.5, 1.5]);
        let g = tape.backward(&y.sum().unwrap()).unwrap();
        let mut want = vec![0.0; 16];
        want[0] = 1.0;
        want[1] = 1.0;
        assert_eq!(g.get(id).unwrap().to_vec().unwrap(), want);
    }

    #[test]
    fn gradients_of_max_and_avg_pools() {
        let cases = [
            spec([2, 2, 2], [2, 2, 2], PoolPadding::Valid),
            spec([2, 2, 2], [2, 2, 2], PoolPadding::Same),
            spec([3, 3, 3], [2, 2, 2], PoolPadding::Same),
            spec([3, 3, 3], [2, 2, 2], PoolPadding::Valid),
            spec([3, 3, 3], [3, 3, 3], PoolPadding::Same),
            spec([3, 2, 2], [3, 3, 3], PoolPadding::Valid),
            spec([3, 2, 1], [1, 2, 3], PoolPadding::Same),
            spec([1, 3, 2], [2, 1, 2], PoolPadding::Valid),
        ];
        let x = distinct([2, 5, 3, 4, 3], 7);
        for s in cases {
            let max = check_gradients(
                std::slice::from_ref(&x),
                |v| weighted_sum(&v[0].max_pool3d(&s)?),
                1e-6,
                1e-7,
                usize::MAX,
            )
            .unwrap_or_else(|e| panic!("max pool {s:?}: {e}"));
            assert_eq!(max.checked, 360);
            check_gradients(
                &[wavy([2, 5, 3, 4, 3])],
                |v| weighted_sum(&v[0].avg_pool3d(&s)?),
                1e-6,
                1e-7,
                usize::MAX,
            )
            .unwrap_or_else(|e| panic!("avg pool {s:?}: {e}"));
        }
    }

    #[test]
    fn bad_arguments_are_errors_naming_the_op_and_shape() {
        let x = ramp(1.0, 0.0);
        let zero_k = x
            .max_pool3d(&spec([2, 0, 2], [2, 2, 2], PoolPadding::Same))
            .unwrap_err()
            .to_string();
        assert!(
            zero_k.contains("max_pool3d") && zero_k.contains("[1, 4, 4, 4, 1]"),
            "{zero_k}"
        );
        let zero_s = x
            .avg_pool3d(&spec([2, 2, 2], [0, 2, 2], PoolPadding::Valid))
            .unwrap_err()
            .to_string();
        assert!(
            zero_s.contains("avg_pool3d") && zero_s.contains("stride"),
            "{zero_s}"
        );
        let too_big = x
            .avg_pool3d(&spec([5, 2, 2], [1, 1, 1], PoolPadding::Valid))
            .unwrap_err()
            .to_string();
        assert!(
            too_big.contains("avg_pool3d") && too_big.contains("[5, 2, 2]"),
            "{too_big}"
        );
        let flat = Var::constant(Tensor::<Cpu>::zeros(&Cpu::new(), [4, 4, 4, 1]).unwrap());
        let rank = flat
            .max_pool3d(&spec([2, 2, 2], [2, 2, 2], PoolPadding::Valid))
            .unwrap_err()
            .to_string();
        assert!(
            rank.contains("max_pool3d") && rank.contains("[4, 4, 4, 1]"),
            "{rank}"
        );
    }
}
