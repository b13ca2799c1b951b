//! Resampling of the D, H, W axes of an NDHWC tensor: nearest-neighbour by integer factors
//! and trilinear to any size (PyTorch `align_corners=False`).
mod cpu;

use crate::autograd::{BackwardOp, Var};
use crate::backend::BackendBase;
use crate::error::{Error, Result};
use crate::tensor::{Shape, Tensor};
use crate::tensor_ops::Backend;

/// Input and output sizes of one resampling call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct Resample3dGeometry {
    pub batch: usize,
    pub channels: usize,
    /// Input D, H, W.
    pub input: [usize; 3],
    /// Output D, H, W; a whole multiple of `input` for nearest-neighbour.
    pub output: [usize; 3],
}

impl Resample3dGeometry {
    /// Resampling an NDHWC tensor of shape `x` to spatial size `output`.
    fn new(op: &'static str, x: &Shape, output: [usize; 3]) -> Result<Self> {
        let [batch, d, h, w, channels] = x.ndhwc(op)?;
        if x.numel() == 0 || output.contains(&0) {
            return Err(Error::shape(
                op,
                format!("cannot resample input {x} to spatial size {output:?}"),
            ));
        }
        Ok(Self {
            batch,
            channels,
            input: [d, h, w],
            output,
        })
    }
    pub fn input_shape(&self) -> Shape {
        let [d, h, w] = self.input;
        Shape::new(&[self.batch, d, h, w, self.channels])
    }
    pub fn output_shape(&self) -> Shape {
        let [d, h, w] = self.output;
        Shape::new(&[self.batch, d, h, w, self.channels])
    }
}

/// The two input cells that output cell `o` interpolates between along an axis resampled
/// from `n_in` to `n_out` cells, and the weight of the second. The source coordinate is
/// `(o + 0.5) * n_in / n_out - 0.5`, clamped at 0; past the last cell both are the last.
pub fn linear_taps(o: usize, n_in: usize, n_out: usize) -> (usize, usize, f64) {
    let src = ((o as f64 + 0.5) * n_in as f64 / n_out as f64 - 0.5).max(0.0);
    let i0 = (src as usize).min(n_in - 1);
    let i1 = (i0 + 1).min(n_in - 1);
    (i0, i1, src - i0 as f64)
}

pub trait UpsampleKernel: BackendBase {
    /// out[n, z, y, x, c] = in[n, z / fd, y / fh, x / fw, c], f = output / input per axis.
    fn upsample_nearest3d_forward(
        &self,
        x: &Self::Storage,
        g: Resample3dGeometry,
    ) -> Result<Self::Storage>;
    /// dx: the sum of dy over each input cell's fd x fh x fw block.
    fn upsample_nearest3d_backward(
        &self,
        dy: &Self::Storage,
        g: Resample3dGeometry,
    ) -> Result<Self::Storage>;
    /// Trilinear interpolation with the weights of [`linear_taps`] per axis.
    fn upsample_trilinear3d_forward(
        &self,
        x: &Self::Storage,
        g: Resample3dGeometry,
    ) -> Result<Self::Storage>;
    /// dx: each output cell's gradient spread over its eight source cells by the same weights.
    fn upsample_trilinear3d_backward(
        &self,
        dy: &Self::Storage,
        g: Resample3dGeometry,
    ) -> Result<Self::Storage>;
}

fn nearest_geometry(x: &Shape, factor: [usize; 3]) -> Result<Resample3dGeometry> {
    let op = "upsample_nearest3d";
    if factor.contains(&0) {
        return Err(Error::shape(
            op,
            format!("factors {factor:?} must be positive (input {x})"),
        ));
    }
    let [_, d, h, w, _] = x.ndhwc(op)?;
    Resample3dGeometry::new(op, x, [d * factor[0], h * factor[1], w * factor[2]])
}

/// Nearest-neighbour upsampling by integer factors per D, H, W, without recording.
pub fn upsample_nearest3d<B: Backend>(x: &Tensor<B>, factor: [usize; 3]) -> Result<Tensor<B>> {
    let g = nearest_geometry(x.shape(), factor)?;
    let y = x.backend().upsample_nearest3d_forward(x.storage(), g)?;
    Tensor::from_storage(x.backend(), g.output_shape(), y)
}

/// Trilinear resampling to spatial size `out_dhw`, without recording.
pub fn upsample_trilinear3d<B: Backend>(x: &Tensor<B>, out_dhw: [usize; 3]) -> Result<Tensor<B>> {
    let g = Resample3dGeometry::new("upsample_trilinear3d", x.shape(), out_dhw)?;
    let y = x.backend().upsample_trilinear3d_forward(x.storage(), g)?;
    Tensor::from_storage(x.backend(), g.output_shape(), y)
}

/// Saves only the geometry: both resamplings are linear with fixed weights.
struct ResampleBackward {
    geometry: Resample3dGeometry,
    trilinear: bool,
}

impl<B: Backend> BackwardOp<B> for ResampleBackward {
    fn backward(
        self: Box<Self>,
        grad: &Tensor<B>,
        _needs: &[bool],
    ) -> Result<Vec<Option<Tensor<B>>>> {
        let be = grad.backend();
        let dx = if self.trilinear {
            be.upsample_trilinear3d_backward(grad.storage(), self.geometry)?
        } else {
            be.upsample_nearest3d_backward(grad.storage(), self.geometry)?
        };
        Ok(vec![Some(Tensor::from_storage(
            be,
            self.geometry.input_shape(),
            dx,
        )?)])
    }
}

impl<B: Backend> Var<B> {
    /// Repeats every voxel `factor[0] x factor[1] x factor[2]` times (NDHWC).
    pub fn upsample_nearest3d(&self, factor: [usize; 3]) -> Result<Var<B>> {
        let geometry = nearest_geometry(self.shape(), factor)?;
        let y = upsample_nearest3d(self.value(), factor)?;
        Ok(Var::from_op("upsample_nearest3d", y, &[self], || {
            ResampleBackward {
                geometry,
                trilinear: false,
            }
        }))
    }
    /// Trilinear resampling of an NDHWC tensor to spatial size `out_dhw` (larger or smaller).
    pub fn upsample_trilinear3d(&self, out_dhw: [usize; 3]) -> Result<Var<B>> {
        let y = upsample_trilinear3d(self.value(), out_dhw)?;
        let geometry = Resample3dGeometry::new("upsample_trilinear3d", self.shape(), out_dhw)?;
        Ok(Var::from_op("upsample_trilinear3d", y, &[self], || {
            ResampleBackward {
                geometry,
                trilinear: true,
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::autograd::check_gradients;
    use crate::backend::cpu::Cpu;
    use crate::tensor_ops::test_inputs::{wavy, weighted_sum};

    fn var(shape: impl Into<Shape>, data: &[f32]) -> Var<Cpu> {
        Var::constant(Tensor::from_host(&Cpu::new(), shape, data).unwrap())
    }

    #[test]
    fn nearest_repeats_voxels() {
        let x = var([1, 1, 2, 2, 1], &[1.0, 2.0, 3.0, 4.0]);
        let y = x.upsample_nearest3d([1, 2, 2]).unwrap();
        assert_eq!(y.dims(), &[1, 1, 4, 4, 1]);
        assert_eq!(
            y.value().to_vec().unwrap(),
            vec![1.0, 1.0, 2.0, 2.0, 1.0, 1.0, 2.0, 2.0, 3.0, 3.0, 4.0, 4.0, 3.0, 3.0, 4.0, 4.0]
        );
        // Two channels along D: channels stay together.
        let x = var([1, 2, 1, 1, 2], &[1.0, 2.0, 3.0, 4.0]);
        let y = x.upsample_nearest3d([2, 1, 3]).unwrap();
        assert_eq!(y.dims(), &[1, 4, 1, 3, 2]);
        let mut want = Vec::new();
        for pair in [[1.0, 2.0], [1.0, 2.0], [3.0, 4.0], [3.0, 4.0]] {
            for _ in 0..3 {
                want.extend(pair);
            }
        }
        assert_eq!(y.value().to_vec().unwrap(), want);
    }

    #[test]
    fn trilinear_doubles_a_two_voxel_line_like_pytorch() {
        // align_corners=False, 2 -> 4: sources -0.25 (clamped to 0), 0.25, 0.75, 1.25
        // (past the last cell), so [a, 0.75 a + 0.25 b, 0.25 a + 0.75 b, b].
        let (a, b) = ([1.0f32, -2.0], [5.0f32, 6.0]);
        for axis in 0..3 {
            let mut in_dims = [1, 1, 1, 1, 2];
            in_dims[axis + 1] = 2;
            let mut out = [1, 1, 1];
            out[axis] = 4;
            let x = var(in_dims, &[a[0], a[1], b[0], b[1]]);
            let y = x.upsample_trilinear3d(out).unwrap();
            let mut want = Vec::new();
            for (wa, wb) in [(1.0, 0.0), (0.75, 0.25), (0.25, 0.75), (0.0, 1.0)] {
                want.extend([wa * a[0] + wb * b[0], wa * a[1] + wb * b[1]]);
            }
            assert_eq!(y.value().to_vec().unwrap(), want, "axis {axis}");
        }
    }

    #[test]
    fn trilinear_halving_averages_pairs() {
        // 4 -> 2: sources 0.5 and 2.5.
        let x = var([1, 1, 1, 4, 1], &[1.0, 2.0, 4.0, 8.0]);
        let y = x.upsample_trilinear3d([1, 1, 2]).unwrap();
        assert_eq!(y.value().to_vec().unwrap(), vec![1.5, 6.0]);
    }

    #[test]
    fn trilinear_to_the_same_size_is_the_identity() {
        let x = Var::constant(wavy([2, 5, 3, 4, 3]));
        let y = x.upsample_trilinear3d([5, 3, 4]).unwrap();
        assert_eq!(y.value().to_vec().unwrap(), x.value().to_vec().unwrap());
    }

    #[test]
    fn gradients_of_nearest_and_trilinear() {
        let x = wavy([2, 5, 3, 4, 3]);
        for factor in [[2, 1, 3], [1, 2, 2]] {
            check_gradients(
                std::slice::from_ref(&x),
                |v| weighted_sum(&v[0].upsample_nearest3d(factor)?),
                1e-6,
                1e-7,
                usize::MAX,
            )
            .unwrap_or_else(|e| panic!("nearest {factor:?}: {e}"));
        }
        // Larger, exactly doubled, smaller, and mixed per axis.
        for out in [[9, 7, 8], [10, 6, 8], [3, 2, 3], [7, 2, 5]] {
            check_gradients(
                std::slice::from_ref(&x),
                |v| weighted_sum(&v[0].upsample_trilinear3d(out)?),
                1e-6,
                1e-7,
                usize::MAX,
            )
            .unwrap_or_else(|e| panic!("trilinear to {out:?}: {e}"));
        }
    }

    #[test]
    fn bad_arguments_are_errors_naming_the_op_and_shape() {
        let x = var([1, 1, 2, 2, 1], &[1.0, 2.0, 3.0, 4.0]);
        let zero = x.upsample_nearest3d([2, 0, 2]).unwrap_err().to_string();
        assert!(
            zero.contains("upsample_nearest3d") && zero.contains("[1, 1, 2, 2, 1]"),
            "{zero}"
        );
        let empty = x.upsample_trilinear3d([2, 0, 2]).unwrap_err().to_string();
        assert!(
            empty.contains("upsample_trilinear3d") && empty.contains("[2, 0, 2]"),
            "{empty}"
        );
        let flat = var([2, 2, 1], &[1.0, 2.0, 3.0, 4.0]);
        let rank = flat
            .upsample_trilinear3d([4, 4, 4])
            .unwrap_err()
            .to_string();
        assert!(
            rank.contains("upsample_trilinear3d") && rank.contains("[2, 2, 1]"),
            "{rank}"
        );
    }
}
