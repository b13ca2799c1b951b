//! Spatial padding and cropping of an NDHWC tensor in one op: each side of D, H, W gains
//! (positive) or loses (negative) cells; new cells take a constant. The backward is the
//! same op with the amounts negated and zero fill.
mod cpu;

use crate::autograd::{BackwardOp, Var};
use crate::backend::BackendBase;
use crate::error::{Error, Result};
use crate::tensor::{Shape, Tensor};
use crate::tensor_ops::Backend;

/// Output cell (z, y, x) reads input cell (z - before[0], y - before[1], x - before[2]);
/// outside the input it takes the fill value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct Pad3dGeometry {
    pub batch: usize,
    pub channels: usize,
    /// Input D, H, W.
    pub input: [usize; 3],
    /// Output D, H, W.
    pub output: [usize; 3],
    /// Cells added (negative: removed) before the first input cell, per axis.
    pub before: [i64; 3],
}

impl Pad3dGeometry {
    fn new(x: &Shape, before: [isize; 3], after: [isize; 3]) -> Result<Self> {
        let op = "pad3d";
        let [batch, d, h, w, channels] = x.ndhwc(op)?;
        let input = [d, h, w];
        let mut output = [0; 3];
        for a in 0..3 {
            let size = input[a] as isize + before[a] + after[a];
            if size <= 0 {
                return Err(Error::shape(
                    op,
                    format!(
                        "padding {before:?} before and {after:?} after leaves nothing of input {x}"
                    ),
                ));
            }
            output[a] = size as usize;
        }
        Ok(Self {
            batch,
            channels,
            input,
            output,
            before: before.map(|b| b as i64),
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
    /// The geometry that maps this op's output back onto its input.
    pub fn inverse(&self) -> Self {
        Self {
            batch: self.batch,
            channels: self.channels,
            input: self.output,
            output: self.input,
            before: self.before.map(|b| -b),
        }
    }
}

pub trait PadKernel: BackendBase {
    /// See [`Pad3dGeometry`]; cells outside the input take `value`.
    fn pad3d(&self, x: &Self::Storage, g: Pad3dGeometry, value: f64) -> Result<Self::Storage>;
}

/// Pads (positive) or crops (negative) each side of D, H, W, without recording.
pub fn pad3d<B: Backend>(
    x: &Tensor<B>,
    before: [isize; 3],
    after: [isize; 3],
    value: f64,
) -> Result<Tensor<B>> {
    let g = Pad3dGeometry::new(x.shape(), before, after)?;
    let y = x.backend().pad3d(x.storage(), g, value)?;
    Tensor::from_storage(x.backend(), g.output_shape(), y)
}

/// Saves the geometry: the gradient is the output's gradient cropped/padded back.
struct PadBackward {
    geometry: Pad3dGeometry,
}

impl<B: Backend> BackwardOp<B> for PadBackward {
    fn backward(
        self: Box<Self>,
        grad: &Tensor<B>,
        _needs: &[bool],
    ) -> Result<Vec<Option<Tensor<B>>>> {
        let be = grad.backend();
        let inverse = self.geometry.inverse();
        let dx = be.pad3d(grad.storage(), inverse, 0.0)?;
        Ok(vec![Some(Tensor::from_storage(
            be,
            inverse.output_shape(),
            dx,
        )?)])
    }
}

impl<B: Backend> Var<B> {
    /// Spatial pad (positive) or crop (negative) per side: `before[i]`, `after[i]` for D, H, W;
    /// padded cells take `value`.
    pub fn pad3d(&self, before: [isize; 3], after: [isize; 3], value: f64) -> Result<Var<B>> {
        let geometry = Pad3dGeometry::new(self.shape(), before, after)?;
        let y = pad3d(self.value(), before, after, value)?;
        Ok(Var::from_op("pad3d", y, &[self], || PadBackward {
            geometry,
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
    fn pads_one_axis_with_a_value() {
        let x = var([1, 1, 1, 2, 2], &[1.0, 2.0, 3.0, 4.0]);
        let y = x.pad3d([0, 0, 1], [0, 0, 2], -1.0).unwrap();
        assert_eq!(y.dims(), &[1, 1, 1, 5, 2]);
        assert_eq!(
            y.value().to_vec().unwrap(),
            vec![-1.0, -1.0, 1.0, 2.0, 3.0, 4.0, -1.0, -1.0, -1.0, -1.0]
        );
    }

    #[test]
    fn mixed_pad_and_crop_per_side() {
        // 1x3x2x4x2 holding 1000 z + 100 y + 10 x + c.
        let dims = [3, 2, 4];
        let mut data = Vec::new();
        for z in 0..3 {
            for y in 0..2 {
                for x in 0..4 {
                    for c in 0..2 {
                        data.push((1000 * z + 100 * y + 10 * x + c) as f32);
                    }
                }
            }
        }
        let x = var([1, dims[0], dims[1], dims[2], 2], &data);
        // D: crop 1 before, pad 1 after; H: pad 2 before, crop 1 after; W: crop 1 each side.
        let y = x.pad3d([-1, 2, -1], [1, -1, -1], 7.0).unwrap();
        assert_eq!(y.dims(), &[1, 3, 3, 2, 2]);
        let mut want = Vec::new();
        for z in 1..4 {
            for yy in -2..1 {
                for xx in 1..3 {
                    for c in 0..2 {
                        let inside = z < 3 && yy >= 0;
                        want.push(if inside {
                            (1000 * z + 100 * yy + 10 * xx + c) as f32
                        } else {
                            7.0
                        });
                    }
                }
            }
        }
        assert_eq!(y.value().to_vec().unwrap(), want);
    }

    #[test]
    fn pad_then_crop_returns_the_input() {
        let x = Var::constant(wavy([2, 5, 3, 4, 3]));
        let y = x
            .pad3d([2, 0, 1], [1, 3, 2], 0.5)
            .unwrap()
            .pad3d([-2, 0, -1], [-1, -3, -2], 0.0)
            .unwrap();
        assert_eq!(y.dims(), x.dims());
        assert_eq!(y.value().to_vec().unwrap(), x.value().to_vec().unwrap());
    }

    #[test]
    fn gradients_of_pad_and_crop() {
        let x = wavy([2, 5, 3, 4, 3]);
        for (before, after) in [
            ([1, 2, 0], [2, 0, 1]),
            ([-1, -1, 0], [-2, 0, -3]),
            ([-2, 1, 2], [1, -2, -1]),
        ] {
            check_gradients(
                std::slice::from_ref(&x),
                |v| weighted_sum(&v[0].pad3d(before, after, 0.25)?),
                1e-6,
                1e-7,
                usize::MAX,
            )
            .unwrap_or_else(|e| panic!("pad {before:?} {after:?}: {e}"));
        }
    }

    #[test]
    fn bad_arguments_are_errors_naming_the_op_and_shape() {
        let x = var([1, 2, 2, 2, 1], &[0.0; 8]);
        let err = x
            .pad3d([0, -1, 0], [0, -1, 0], 0.0)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("pad3d") && err.contains("[1, 2, 2, 2, 1]"),
            "{err}"
        );
        let flat = var([2, 2, 2], &[0.0; 8]);
        let rank = flat.pad3d([1; 3], [1; 3], 0.0).unwrap_err().to_string();
        assert!(
            rank.contains("pad3d") && rank.contains("[2, 2, 2]"),
            "{rank}"
        );
    }
}
