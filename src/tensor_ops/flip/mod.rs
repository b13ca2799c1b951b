//! Mirroring an NDHWC tensor along any of D, H, W (test-time augmentation, mirroring
//! augmentation). A flip is its own inverse, so the backward flips the gradient.
mod cpu;

use crate::autograd::{BackwardOp, Var};
use crate::backend::BackendBase;
use crate::error::Result;
use crate::tensor::{Shape, Tensor};
use crate::tensor_ops::Backend;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct Flip3dGeometry {
    pub batch: usize,
    pub channels: usize,
    /// D, H, W.
    pub dims: [usize; 3],
    /// 1 where the axis is mirrored, 0 where it is kept.
    pub mirror: [usize; 3],
}

impl Flip3dGeometry {
    fn new(x: &Shape, axes: [bool; 3]) -> Result<Self> {
        let [batch, d, h, w, channels] = x.ndhwc("flip3d")?;
        Ok(Self {
            batch,
            channels,
            dims: [d, h, w],
            mirror: axes.map(usize::from),
        })
    }
    pub fn shape(&self) -> Shape {
        let [d, h, w] = self.dims;
        Shape::new(&[self.batch, d, h, w, self.channels])
    }
}

pub trait FlipKernel: BackendBase {
    /// out[n, z, y, x] = in[n, z', y', x'] with i' = size - 1 - i on mirrored axes.
    fn flip3d(&self, x: &Self::Storage, g: Flip3dGeometry) -> Result<Self::Storage>;
}

/// Mirrors the axes of D, H, W flagged in `axes`, without recording.
pub fn flip3d<B: Backend>(x: &Tensor<B>, axes: [bool; 3]) -> Result<Tensor<B>> {
    let g = Flip3dGeometry::new(x.shape(), axes)?;
    let y = x.backend().flip3d(x.storage(), g)?;
    Tensor::from_storage(x.backend(), g.shape(), y)
}

/// Saves the geometry: the gradient is flipped back the same way.
struct FlipBackward {
    geometry: Flip3dGeometry,
}

impl<B: Backend> BackwardOp<B> for FlipBackward {
    fn backward(
        self: Box<Self>,
        grad: &Tensor<B>,
        _needs: &[bool],
    ) -> Result<Vec<Option<Tensor<B>>>> {
        let be = grad.backend();
        let dx = be.flip3d(grad.storage(), self.geometry)?;
        Ok(vec![Some(Tensor::from_storage(
            be,
            self.geometry.shape(),
            dx,
        )?)])
    }
}

impl<B: Backend> Var<B> {
    /// Mirrors D, H and/or W of an NDHWC tensor.
    pub fn flip3d(&self, axes: [bool; 3]) -> Result<Var<B>> {
        let geometry = Flip3dGeometry::new(self.shape(), axes)?;
        let y = flip3d(self.value(), axes)?;
        Ok(Var::from_op("flip3d", y, &[self], || FlipBackward {
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

    #[test]
    fn mirrors_each_axis_keeping_channels_together() {
        // 1x2x2x2x2 holding 100 z + 10 y + x at channel 0 and its negative at channel 1.
        let mut data = Vec::new();
        for z in 0..2 {
            for y in 0..2 {
                for x in 0..2 {
                    let v = (100 * z + 10 * y + x) as f32;
                    data.extend([v, -v]);
                }
            }
        }
        let x = Var::constant(Tensor::from_host(&Cpu::new(), [1, 2, 2, 2, 2], &data).unwrap());
        let at = |v: &[f32], z: usize, y: usize, x: usize| v[((z * 2 + y) * 2 + x) * 2];
        let w = x
            .flip3d([false, false, true])
            .unwrap()
            .value()
            .to_vec()
            .unwrap();
        assert_eq!((at(&w, 0, 0, 0), at(&w, 1, 0, 1)), (1.0, 100.0));
        assert_eq!(w[1], -1.0);
        let h = x
            .flip3d([false, true, false])
            .unwrap()
            .value()
            .to_vec()
            .unwrap();
        assert_eq!((at(&h, 0, 0, 0), at(&h, 1, 1, 0)), (10.0, 100.0));
        let all = x
            .flip3d([true, true, true])
            .unwrap()
            .value()
            .to_vec()
            .unwrap();
        assert_eq!((at(&all, 0, 0, 0), at(&all, 1, 1, 1)), (111.0, 0.0));
        let none = x.flip3d([false; 3]).unwrap().value().to_vec().unwrap();
        assert_eq!(none, data);
    }

    #[test]
    fn flipping_twice_is_the_identity() {
        let x = Var::constant(wavy([2, 5, 3, 4, 3]));
        for axes in [
            [true, false, false],
            [false, true, true],
            [true, true, true],
        ] {
            let once = x.flip3d(axes).unwrap();
            assert_ne!(once.value().to_vec().unwrap(), x.value().to_vec().unwrap());
            let twice = once.flip3d(axes).unwrap();
            assert_eq!(twice.value().to_vec().unwrap(), x.value().to_vec().unwrap());
        }
    }

    #[test]
    fn gradients_of_flips() {
        let x = wavy([2, 5, 3, 4, 3]);
        for axes in [
            [true, false, false],
            [false, true, false],
            [true, false, true],
        ] {
            check_gradients(
                std::slice::from_ref(&x),
                |v| weighted_sum(&v[0].flip3d(axes)?),
                1e-6,
                1e-7,
                usize::MAX,
            )
            .unwrap_or_else(|e| panic!("flip {axes:?}: {e}"));
        }
    }

    #[test]
    fn wrong_rank_is_an_error_naming_the_op_and_shape() {
        let x = Var::constant(Tensor::<Cpu>::zeros(&Cpu::new(), [2, 3, 4]).unwrap());
        let err = x.flip3d([true; 3]).unwrap_err().to_string();
        assert!(err.contains("flip3d") && err.contains("[2, 3, 4]"), "{err}");
    }
}
