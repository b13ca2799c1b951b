//! 3D convolution and transposed convolution, NDHWC activations, DHWIO weights.
//!
//! The kernel trait has the three passes of a convolution. A transposed convolution is the
//! same three passes with roles exchanged: its forward is the backward-data of the
//! convolution it reverses, its input gradient that convolution's forward, and its weight
//! gradient that convolution's backward-weight with x and dy swapped.
mod cpu;
mod geometry;
mod product;

pub use cpu::{bf16_products_available, conv_engine_name};
pub use geometry::{
    conv3d_output_size, conv_transpose3d_output_size, Conv3dSpec, ConvGeometry,
    ConvTranspose3dSpec, Padding,
};

use crate::autograd::{BackwardOp, Var};
use crate::backend::BackendBase;
use crate::error::{Error, Result};
use crate::tensor::{Shape, Tensor};
use crate::tensor_ops::reduce::{sum_axis1, Axis1};
use crate::tensor_ops::Backend;

pub trait Conv3dKernel: BackendBase {
    /// `y [N, D', H', W', Cout] = x [N, D, H, W, Cin] * w [kd, kh, kw, Cin, Cout]`, plus
    /// `bias [Cout]` on every voxel when given.
    fn conv3d_forward(
        &self,
        x: &Self::Storage,
        w: &Self::Storage,
        bias: Option<&Self::Storage>,
        g: &ConvGeometry,
    ) -> Result<Self::Storage>;
    /// The gradient `dx [N, D, H, W, Cin]` of the forward given `dy [N, D', H', W', Cout]`;
    /// with `bias [Cin]` it is a transposed convolution's forward.
    fn conv3d_backward_data(
        &self,
        dy: &Self::Storage,
        w: &Self::Storage,
        bias: Option<&Self::Storage>,
        g: &ConvGeometry,
    ) -> Result<Self::Storage>;
    /// The gradient `dw [kd, kh, kw, Cin, Cout]` of the forward. `x` (or, for a transposed
    /// convolution, `dy`) may be what `conv3d_saved_input` returned.
    fn conv3d_backward_weight(
        &self,
        x: &Self::Storage,
        dy: &Self::Storage,
        g: &ConvGeometry,
    ) -> Result<Self::Storage>;
    /// What the tape keeps of a convolution's input `x` for the weight gradient (of a
    /// transposed one if `transposed`: its input is that gradient's dy). None, the default,
    /// keeps `x` itself. A backend whose weight gradient reads `x` converted may return the
    /// conversion alone, for `conv3d_backward_weight` to take in `x`'s place, so that `x`
    /// is freed once nothing else holds it.
    fn conv3d_saved_input(
        &self,
        _x: &Self::Storage,
        _g: &ConvGeometry,
        _transposed: bool,
    ) -> Result<Option<Self::Storage>> {
        Ok(None)
    }
}

fn check_bias<B: Backend>(
    op: &'static str,
    bias: Option<&Tensor<B>>,
    channels: usize,
) -> Result<()> {
    match bias {
        Some(b) if b.dims() != [channels] => Err(Error::shape(
            op,
            format!("bias of shape {} for {channels} output channels", b.shape()),
        )),
        _ => Ok(()),
    }
}

/// `x [N, D, H, W, Cin]` convolved with `w [kd, kh, kw, Cin, Cout]` (+ `bias [Cout]`),
/// without recording.
pub fn conv3d<B: Backend>(
    x: &Tensor<B>,
    w: &Tensor<B>,
    bias: Option<&Tensor<B>>,
    spec: &Conv3dSpec,
) -> Result<Tensor<B>> {
    let g = ConvGeometry::conv3d(x.shape(), w.shape(), spec)?;
    conv3d_with(&g, x, w, bias)
}

fn conv3d_with<B: Backend>(
    g: &ConvGeometry,
    x: &Tensor<B>,
    w: &Tensor<B>,
    bias: Option<&Tensor<B>>,
) -> Result<Tensor<B>> {
    check_bias("conv3d", bias, g.cout)?;
    let y = x
        .backend()
        .conv3d_forward(x.storage(), w.storage(), bias.map(|b| b.storage()), g)?;
    Tensor::from_storage(x.backend(), g.output_shape(), y)
}

/// `x [N, D, H, W, Cin]` transposed-convolved with `w [kd, kh, kw, Cout, Cin]`
/// (+ `bias [Cout]`), without recording.
pub fn conv_transpose3d<B: Backend>(
    x: &Tensor<B>,
    w: &Tensor<B>,
    bias: Option<&Tensor<B>>,
    spec: &ConvTranspose3dSpec,
) -> Result<Tensor<B>> {
    let g = ConvGeometry::conv_transpose3d(x.shape(), w.shape(), spec)?;
    conv_transpose3d_with(&g, x, w, bias)
}

fn conv_transpose3d_with<B: Backend>(
    g: &ConvGeometry,
    x: &Tensor<B>,
    w: &Tensor<B>,
    bias: Option<&Tensor<B>>,
) -> Result<Tensor<B>> {
    check_bias("conv_transpose3d", bias, g.cin)?;
    let y =
        x.backend()
            .conv3d_backward_data(x.storage(), w.storage(), bias.map(|b| b.storage()), g)?;
    Tensor::from_storage(x.backend(), g.input_shape(), y)
}

/// What a convolution's backward keeps of its input: the input, or what the backend
/// keeps of it for the weight gradient (`Conv3dKernel::conv3d_saved_input`).
enum SavedInput<B: Backend> {
    Value(Tensor<B>),
    Converted(B::Storage),
}

impl<B: Backend> SavedInput<B> {
    fn storage(&self) -> &B::Storage {
        match self {
            SavedInput::Value(t) => t.storage(),
            SavedInput::Converted(s) => s,
        }
    }
}

/// Saves the input (or its conversion; nothing when the weight takes no gradient) and the
/// weight, each needed for the other's gradient, the input's shape and the geometry.
struct ConvBackward<B: Backend> {
    x: Option<SavedInput<B>>,
    x_shape: Shape,
    w: Tensor<B>,
    geom: ConvGeometry,
    transposed: bool,
}

impl<B: Backend> BackwardOp<B> for ConvBackward<B> {
    fn backward(
        self: Box<Self>,
        grad: &Tensor<B>,
        needs: &[bool],
    ) -> Result<Vec<Option<Tensor<B>>>> {
        let be = grad.backend();
        let g = &self.geom;
        let dx = if needs[0] {
            let s = if self.transposed {
                be.conv3d_forward(grad.storage(), self.w.storage(), None, g)?
            } else {
                be.conv3d_backward_data(grad.storage(), self.w.storage(), None, g)?
            };
            Some(Tensor::from_storage(be, self.x_shape.clone(), s)?)
        } else {
            None
        };
        let dw = if needs[1] {
            // Recorded with an untracked weight, the op is never asked for its gradient.
            let x = self.x.as_ref().ok_or_else(|| Error::Backend {
                backend: "autograd",
                msg: "conv3d: a weight gradient asked of a convolution recorded without one".into(),
            })?;
            let s = if self.transposed {
                be.conv3d_backward_weight(grad.storage(), x.storage(), g)?
            } else {
                be.conv3d_backward_weight(x.storage(), grad.storage(), g)?
            };
            Some(Tensor::from_storage(be, self.w.shape().clone(), s)?)
        } else {
            None
        };
        let mut out = vec![dx, dw];
        if needs.len() > 2 {
            let db = if needs[2] {
                let c = grad.shape().last();
                let view = Axis1 {
                    outer: 1,
                    mid: grad.numel() / c,
                    inner: c,
                };
                Some(sum_axis1(grad, view, Shape::new(&[c]))?)
            } else {
                None
            };
            out.push(db);
        }
        Ok(out)
    }
}

impl<B: Backend> Var<B> {
    /// `self [N, D, H, W, Cin]` convolved with `w [kd, kh, kw, Cin, Cout]` (+ `bias [Cout]`):
    /// `[N, D', H', W', Cout]`.
    pub fn conv3d(&self, w: &Var<B>, bias: Option<&Var<B>>, spec: &Conv3dSpec) -> Result<Var<B>> {
        let geom = ConvGeometry::conv3d(self.shape(), w.shape(), spec)?;
        let y = conv3d_with(&geom, self.value(), w.value(), bias.map(|b| b.value()))?;
        self.record_conv("conv3d", y, w, bias, geom, false)
    }

    /// Transposed convolution: `self [N, D, H, W, Cin]`, `w [kd, kh, kw, Cout, Cin]`
    /// (+ `bias [Cout]`). Output size per axis:
    /// (in - 1) * stride + k - pad_before - pad_after + output_padding.
    pub fn conv_transpose3d(
        &self,
        w: &Var<B>,
        bias: Option<&Var<B>>,
        spec: &ConvTranspose3dSpec,
    ) -> Result<Var<B>> {
        let geom = ConvGeometry::conv_transpose3d(self.shape(), w.shape(), spec)?;
        let y = conv_transpose3d_with(&geom, self.value(), w.value(), bias.map(|b| b.value()))?;
        self.record_conv("conv_transpose3d", y, w, bias, geom, true)
    }

    fn record_conv(
        &self,
        op: &'static str,
        y: Tensor<B>,
        w: &Var<B>,
        bias: Option<&Var<B>>,
        geom: ConvGeometry,
        transposed: bool,
    ) -> Result<Var<B>> {
        let mut inputs = vec![self, w];
        inputs.extend(bias);
        // The input is read only by the weight gradient: kept when the weight takes one.
        let x = if w.is_tracked() {
            let be = self.backend();
            Some(
                match be.conv3d_saved_input(self.value().storage(), &geom, transposed)? {
                    Some(converted) => SavedInput::Converted(converted),
                    None => SavedInput::Value(self.value().clone()),
                },
            )
        } else {
            None
        };
        Ok(Var::from_op(op, y, &inputs, || ConvBackward {
            x,
            x_shape: self.shape().clone(),
            w: w.value().clone(),
            geom,
            transposed,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::{Cpu, Cpu64};

    fn var<B: Backend>(b: &B, shape: &[usize], data: &[f64]) -> Var<B> {
        let data: Vec<f32> = data.iter().map(|&v| v as f32).collect();
        Var::constant(Tensor::from_f32(b, shape, &data).unwrap())
    }

    fn zeros(shape: &[usize]) -> Var<Cpu> {
        Var::constant(Tensor::zeros(&Cpu::new(), shape).unwrap())
    }

    #[test]
    fn known_answer_5x5_image_3x3_kernel() {
        #[rustfmt::skip]
        let image = [
            1.0, 1.0, 1.0, 0.0, 0.0,
            0.0, 1.0, 1.0, 1.0, 0.0,
            0.0, 0.0, 1.0, 1.0, 1.0,
            0.0, 0.0, 1.0, 1.0, 0.0,
            0.0, 1.0, 1.0, 0.0, 0.0,
        ];
        let kernel = [1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0];
        let want = [4.0, 3.0, 4.0, 2.0, 4.0, 3.0, 2.0, 3.0, 4.0];
        let spec = Conv3dSpec {
            stride: [1; 3],
            padding: Padding::Valid,
        };
        // In f32 (the AVX-512 path where available) and f64 (the generic path).
        let y = var(&Cpu::new(), &[1, 1, 5, 5, 1], &image)
            .conv3d(&var(&Cpu::new(), &[1, 3, 3, 1, 1], &kernel), None, &spec)
            .unwrap();
        assert_eq!(y.dims(), &[1, 1, 3, 3, 1]);
        assert_eq!(y.value().to_vec_f64().unwrap(), want);
        let y = var(&Cpu64::new(), &[1, 1, 5, 5, 1], &image)
            .conv3d(&var(&Cpu64::new(), &[1, 3, 3, 1, 1], &kernel), None, &spec)
            .unwrap();
        assert_eq!(y.value().to_vec_f64().unwrap(), want);
    }

    /// A frozen (untracked) weight: the input's gradient is the one a tracked weight gives,
    /// and the weight gets none (the record keeps no input for it), for both kinds.
    #[test]
    fn a_frozen_weight_still_passes_the_input_its_gradient() {
        use crate::autograd::{LeafId, Tape};
        let b = Cpu::new();
        let data = |len: usize| {
            (0..len)
                .map(|i| ((i * 7) % 5) as f64 - 2.0)
                .collect::<Vec<_>>()
        };
        let (xd, wd) = (data(2 * 3 * 3 * 2 * 2), data(2 * 2 * 2 * 2 * 3));
        for transposed in [false, true] {
            let grads = |freeze: bool| {
                let tape = Tape::new();
                let (x_id, w_id) = (LeafId::fresh(), LeafId::fresh());
                let x = tape.leaf(var(&b, &[2, 3, 3, 2, 2], &xd).into_value(), x_id);
                // [k, k, k, Cin, Cout], or [k, k, k, Cout, Cin] for the transposed.
                let w_dims = if transposed {
                    [2, 2, 2, 3, 2]
                } else {
                    [2, 2, 2, 2, 3]
                };
                let w = var(&b, &w_dims, &wd).into_value();
                let w = if freeze {
                    Var::constant(w)
                } else {
                    tape.leaf(w, w_id)
                };
                let y = if transposed {
                    let spec = ConvTranspose3dSpec {
                        stride: [2; 3],
                        padding: [[0; 2]; 3],
                        output_padding: [0; 3],
                    };
                    x.conv_transpose3d(&w, None, &spec).unwrap()
                } else {
                    x.conv3d(&w, None, &Conv3dSpec::default()).unwrap()
                };
                let loss = y.mul(&y).unwrap().sum().unwrap();
                let g = tape.backward(&loss).unwrap();
                let dx = g.get(x_id).unwrap().to_vec().unwrap();
                (dx, g.get(w_id).is_some())
            };
            let (frozen_dx, frozen_dw) = grads(true);
            let (tracked_dx, tracked_dw) = grads(false);
            assert_eq!(frozen_dx, tracked_dx, "transposed {transposed}");
            assert!(!frozen_dw && tracked_dw, "transposed {transposed}");
        }
    }

    #[test]
    fn bias_is_added_to_every_voxel() {
        let b = Cpu::new();
        let x = var(&b, &[1, 1, 1, 2, 1], &[1.0, 2.0]);
        let w = var(&b, &[1, 1, 1, 1, 2], &[1.0, -1.0]);
        let bias = var(&b, &[2], &[10.0, 20.0]);
        let y = x.conv3d(&w, Some(&bias), &Conv3dSpec::default()).unwrap();
        assert_eq!(y.value().to_vec().unwrap(), vec![11.0, 19.0, 12.0, 18.0]);
    }

    #[test]
    fn same_and_valid_output_sizes_follow_keras() {
        let stride2 = |padding| Conv3dSpec {
            stride: [2; 3],
            padding,
        };
        // 'same': ceil(in / s); 'valid': floor((in - k) / s) + 1.
        for (input, k, same, valid) in [
            ([7, 9, 11], [3, 3, 3], [4, 5, 6], [3, 4, 5]),
            ([5, 6, 13], [3, 1, 2], [3, 3, 7], [2, 3, 6]),
            ([3, 1, 4], [3, 1, 3], [2, 1, 2], [1, 1, 1]),
        ] {
            assert_eq!(
                conv3d_output_size(input, k, &stride2(Padding::Same)).unwrap(),
                same
            );
            assert_eq!(
                conv3d_output_size(input, k, &stride2(Padding::Valid)).unwrap(),
                valid
            );
        }
        // 'same' pads (out - 1) * s + k - in in total, the smaller half before:
        // in 7, k 3, s 2: out 4, total 2 -> [1, 1]; in 6, k 4, s 2: out 3, total 2 -> [1, 1];
        // in 6, k 3, s 2: out 3, total 1 -> [0, 1].
        let x = zeros(&[1, 7, 6, 6, 1]);
        let w = zeros(&[3, 4, 3, 1, 1]);
        let g = ConvGeometry::conv3d(x.shape(), w.shape(), &stride2(Padding::Same)).unwrap();
        assert_eq!(g.output, [4, 3, 3]);
        assert_eq!(g.pad_before, [1, 1, 0]);
        let y = x.conv3d(&w, None, &stride2(Padding::Same)).unwrap();
        assert_eq!(y.dims(), &[1, 4, 3, 3, 1]);
        let explicit = Padding::Explicit([[0, 1], [2, 0], [1, 1]]);
        assert_eq!(
            conv3d_output_size([7, 6, 6], [3, 4, 3], &stride2(explicit)).unwrap(),
            [3, 3, 3]
        );
    }

    #[test]
    fn transposed_output_size_and_to_size() {
        let spec = ConvTranspose3dSpec {
            stride: [2; 3],
            padding: [[0, 0]; 3],
            output_padding: [0; 3],
        };
        assert_eq!(
            conv_transpose3d_output_size([4, 5, 6], [2, 2, 2], &spec).unwrap(),
            [8, 10, 12]
        );
        // Targets below, at and one above the full output (2 * in for k = s = 2).
        let s = ConvTranspose3dSpec::to_size([2, 2, 3], [2; 3], [4, 5, 6], [7, 10, 14]).unwrap();
        assert_eq!(s.padding, [[0, 1], [0, 0], [0, 0]]);
        assert_eq!(s.output_padding, [0, 0, 1]);
        assert_eq!(
            conv_transpose3d_output_size([4, 5, 6], [2, 2, 3], &s).unwrap(),
            [7, 10, 14]
        );
        let x = zeros(&[1, 4, 5, 6, 3]);
        let w = zeros(&[2, 2, 3, 2, 3]);
        let y = x.conv_transpose3d(&w, None, &s).unwrap();
        assert_eq!(y.dims(), &[1, 7, 10, 14, 2]);
        // Two voxels beyond the full output need output padding >= stride.
        let err = ConvTranspose3dSpec::to_size([2; 3], [2; 3], [4; 3], [10, 8, 8]).unwrap_err();
        assert!(err.to_string().contains("conv_transpose3d"), "{err}");
        // Cropping a whole kernel's extent from a side is refused.
        assert!(ConvTranspose3dSpec::to_size([2; 3], [2; 3], [4; 3], [4, 8, 8]).is_err());
    }

    #[test]
    fn errors_name_the_op_and_the_shapes() {
        let spec = Conv3dSpec::default();
        let x = zeros(&[1, 4, 4, 4, 3]);
        let err = x
            .conv3d(&zeros(&[3, 3, 3, 5, 8]), None, &spec)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("conv3d:")
                && err.contains("[1, 4, 4, 4, 3]")
                && err.contains("[3, 3, 3, 5, 8]"),
            "{err}"
        );
        let err = zeros(&[4, 4, 4, 3])
            .conv3d(&zeros(&[3, 3, 3, 3, 8]), None, &spec)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("conv3d:") && err.contains("[4, 4, 4, 3]"),
            "{err}"
        );
        let err = x
            .conv3d(&zeros(&[3, 3, 3, 8]), None, &spec)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("conv3d:") && err.contains("[3, 3, 3, 8]"),
            "{err}"
        );
        let err = x
            .conv3d(
                &zeros(&[5, 3, 3, 3, 8]),
                None,
                &Conv3dSpec {
                    stride: [1; 3],
                    padding: Padding::Valid,
                },
            )
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("conv3d:") && err.contains("larger than the padded input"),
            "{err}"
        );
        let err = x
            .conv3d(
                &zeros(&[3, 3, 3, 3, 8]),
                None,
                &Conv3dSpec {
                    stride: [1, 0, 1],
                    padding: Padding::Same,
                },
            )
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("conv3d:") && err.contains("stride"),
            "{err}"
        );
        let err = x
            .conv3d(&zeros(&[3, 3, 3, 3, 8]), Some(&zeros(&[3])), &spec)
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("conv3d:") && err.contains("bias"), "{err}");
        let t = ConvTranspose3dSpec {
            stride: [2; 3],
            padding: [[0, 0]; 3],
            output_padding: [0; 3],
        };
        let err = x
            .conv_transpose3d(&zeros(&[2, 2, 2, 8, 5]), None, &t)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("conv_transpose3d:") && err.contains("[2, 2, 2, 8, 5]"),
            "{err}"
        );
    }

    #[test]
    fn kernels_reject_buffers_that_do_not_fit_the_geometry() {
        let b = Cpu::new();
        let g = ConvGeometry::conv3d(
            &Shape::new(&[1, 2, 2, 2, 3]),
            &Shape::new(&[1, 1, 1, 3, 4]),
            &Conv3dSpec::default(),
        )
        .unwrap();
        let err = b
            .conv3d_forward(&vec![0.0; 23], &vec![0.0; 12], None, &g)
            .unwrap_err();
        assert!(err.to_string().contains("x has 23 elements"), "{err}");
        let mut zero_stride = g;
        zero_stride.stride = [1, 0, 1];
        assert!(b
            .conv3d_backward_weight(&vec![0.0; 24], &vec![0.0; 32], &zero_stride)
            .is_err());
    }
}
