//! Convolution geometry: padding rules, output sizes and the validated [`ConvGeometry`]
//! every kernel receives. A transposed convolution is described by the geometry of the
//! convolution it reverses (its output is that convolution's input).
use crate::error::{Error, Result};
use crate::tensor::Shape;

/// How a convolution pads its input, per spatial axis.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Padding {
    /// Keras 'same': output = ceil(in / stride); the total padding
    /// max((out - 1) * stride + k - in, 0) is split with the smaller half before.
    Same,
    /// Keras 'valid': no padding, output = floor((in - k) / stride) + 1.
    Valid,
    /// `[before, after]` for D, H and W.
    Explicit([[usize; 2]; 3]),
}

/// Stride and padding of a 3D convolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv3dSpec {
    pub stride: [usize; 3],
    pub padding: Padding,
}

impl Default for Conv3dSpec {
    fn default() -> Self {
        Self {
            stride: [1; 3],
            padding: Padding::Same,
        }
    }
}

/// Stride, cropping and extra output of a 3D transposed convolution. Output size per axis:
/// (in - 1) * stride + k - pad_before - pad_after + output_padding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvTranspose3dSpec {
    pub stride: [usize; 3],
    /// `[before, after]` for D, H and W: what is cropped from the full output.
    pub padding: [[usize; 2]; 3],
    /// Extra voxels at the end of each axis; each must be smaller than the stride.
    pub output_padding: [usize; 3],
}

impl ConvTranspose3dSpec {
    /// The spec that makes a transposed convolution of `kernel` and `stride` map an input of
    /// spatial size `input` to exactly `target` (e.g. a skip connection's size). Cropping is
    /// split with the smaller half before, as 'same' padding is; a target beyond the full
    /// output is reached with output padding. Fails when no spec reaches `target` without
    /// cropping a whole kernel's extent from one side or padding by a stride or more.
    pub fn to_size(
        kernel: [usize; 3],
        stride: [usize; 3],
        input: [usize; 3],
        target: [usize; 3],
    ) -> Result<Self> {
        let mut spec = Self {
            stride,
            padding: [[0; 2]; 3],
            output_padding: [0; 3],
        };
        for a in 0..3 {
            let (k, s, i, t) = (kernel[a], stride[a], input[a], target[a]);
            let impossible = |why: &str| {
                Error::shape(
                    "conv_transpose3d",
                    format!(
                        "cannot map input {input:?} to {target:?} with kernel {kernel:?} and stride {stride:?}: {why}"
                    ),
                )
            };
            if k == 0 || s == 0 || i == 0 || t == 0 {
                return Err(impossible("sizes, kernel and stride must be positive"));
            }
            let full = (i - 1) * s + k;
            if t >= full {
                let extra = t - full;
                if extra >= s {
                    return Err(impossible(&format!(
                        "axis {a} would need output padding {extra}, which is not below the stride"
                    )));
                }
                spec.output_padding[a] = extra;
            } else {
                let crop = full - t;
                let before = crop / 2;
                let after = crop - before;
                if after >= k {
                    return Err(impossible(&format!(
                        "axis {a} would need cropping {before} + {after}, a whole kernel extent"
                    )));
                }
                spec.padding[a] = [before, after];
            }
        }
        Ok(spec)
    }
}

/// Everything a convolution kernel needs, validated. For a transposed convolution this is
/// the geometry of the convolution it reverses: `input` is the transposed output, `output`
/// the transposed input, `cin`/`cout` swapped likewise. Shared in layout with CUDA kernels.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvGeometry {
    pub n: usize,
    /// Input D, H, W.
    pub input: [usize; 3],
    pub cin: usize,
    /// Output D, H, W.
    pub output: [usize; 3],
    pub cout: usize,
    pub kernel: [usize; 3],
    pub stride: [usize; 3],
    /// Zero padding before each axis (the padding after follows from the sizes).
    pub pad_before: [usize; 3],
}

/// Output size and padding before, per axis, of a convolution, or why there is none.
fn resolve(
    input: [usize; 3],
    kernel: [usize; 3],
    spec: &Conv3dSpec,
) -> std::result::Result<([usize; 3], [usize; 3]), String> {
    let mut out = [0; 3];
    let mut before = [0; 3];
    for a in 0..3 {
        let (i, k, s) = (input[a], kernel[a], spec.stride[a]);
        if s == 0 {
            return Err(format!("stride {:?} has a zero", spec.stride));
        }
        if k == 0 || i == 0 {
            return Err(format!(
                "input {input:?} and kernel {kernel:?} must have no zero size"
            ));
        }
        let (padded, pb) = match spec.padding {
            Padding::Same => {
                let o = i.div_ceil(s);
                let total = ((o - 1) * s + k).saturating_sub(i);
                (i + total, total / 2)
            }
            Padding::Valid => (i, 0),
            Padding::Explicit(p) => (i + p[a][0] + p[a][1], p[a][0]),
        };
        if k > padded {
            return Err(format!(
                "kernel {kernel:?} is larger than the padded input on axis {a} (input {input:?}, padding {:?})",
                spec.padding
            ));
        }
        out[a] = (padded - k) / s + 1;
        before[a] = pb;
    }
    Ok((out, before))
}

/// Output D, H, W of a convolution of `kernel` over `input` (Keras rules for Same/Valid).
pub fn conv3d_output_size(
    input: [usize; 3],
    kernel: [usize; 3],
    spec: &Conv3dSpec,
) -> Result<[usize; 3]> {
    resolve(input, kernel, spec)
        .map(|(out, _)| out)
        .map_err(|msg| Error::shape("conv3d", msg))
}

/// Output D, H, W of a transposed convolution of `kernel` over `input`.
pub fn conv_transpose3d_output_size(
    input: [usize; 3],
    kernel: [usize; 3],
    spec: &ConvTranspose3dSpec,
) -> Result<[usize; 3]> {
    transposed_size(input, kernel, spec).map_err(|msg| Error::shape("conv_transpose3d", msg))
}

fn transposed_size(
    input: [usize; 3],
    kernel: [usize; 3],
    spec: &ConvTranspose3dSpec,
) -> std::result::Result<[usize; 3], String> {
    let mut out = [0; 3];
    for a in 0..3 {
        let (i, k, s) = (input[a], kernel[a], spec.stride[a]);
        let [pb, pa] = spec.padding[a];
        let op = spec.output_padding[a];
        if s == 0 || k == 0 || i == 0 {
            return Err(format!(
                "input {input:?}, kernel {kernel:?} and stride {:?} must have no zero",
                spec.stride
            ));
        }
        if op >= s {
            return Err(format!(
                "output padding {:?} must be smaller than the stride {:?}",
                spec.output_padding, spec.stride
            ));
        }
        let full = (i - 1) * s + k + op;
        if pb + pa >= full {
            return Err(format!(
                "cropping {:?} leaves nothing of the output (input {input:?}, kernel {kernel:?})",
                spec.padding
            ));
        }
        out[a] = full - pb - pa;
    }
    Ok(out)
}

fn dhw(d: [usize; 5]) -> [usize; 3] {
    [d[1], d[2], d[3]]
}

fn weight_dims(op: &'static str, w: &Shape) -> Result<[usize; 5]> {
    match w.dims() {
        &[kd, kh, kw, a, b] => Ok([kd, kh, kw, a, b]),
        _ => Err(Error::shape(
            op,
            format!("expected a weight of rank 5 [kd, kh, kw, in, out], got {w}"),
        )),
    }
}

impl ConvGeometry {
    /// The geometry of `x [N, D, H, W, Cin]` convolved with `w [kd, kh, kw, Cin, Cout]`.
    pub fn conv3d(x: &Shape, w: &Shape, spec: &Conv3dSpec) -> Result<Self> {
        let xd = x.ndhwc("conv3d")?;
        let [kd, kh, kw, wci, cout] = weight_dims("conv3d", w)?;
        if wci != xd[4] {
            return Err(Error::shape(
                "conv3d",
                format!(
                    "input {x} has {} channels but the weight {w} expects {wci}",
                    xd[4]
                ),
            ));
        }
        let kernel = [kd, kh, kw];
        let (output, pad_before) = resolve(dhw(xd), kernel, spec)
            .map_err(|msg| Error::shape("conv3d", format!("input {x}, weight {w}: {msg}")))?;
        Self {
            n: xd[0],
            input: dhw(xd),
            cin: xd[4],
            output,
            cout,
            kernel,
            stride: spec.stride,
            pad_before,
        }
        .checked("conv3d")
    }

    /// The geometry of the convolution that `x [N, D, H, W, Cin]` transposed-convolved with
    /// `w [kd, kh, kw, Cout, Cin]` reverses: its input is the transposed output.
    pub fn conv_transpose3d(x: &Shape, w: &Shape, spec: &ConvTranspose3dSpec) -> Result<Self> {
        let xd = x.ndhwc("conv_transpose3d")?;
        let [kd, kh, kw, cout, wci] = weight_dims("conv_transpose3d", w)?;
        if wci != xd[4] {
            return Err(Error::shape(
                "conv_transpose3d",
                format!(
                    "input {x} has {} channels but the weight {w} expects {wci}",
                    xd[4]
                ),
            ));
        }
        let kernel = [kd, kh, kw];
        let out = transposed_size(dhw(xd), kernel, spec).map_err(|msg| {
            Error::shape("conv_transpose3d", format!("input {x}, weight {w}: {msg}"))
        })?;
        Self {
            n: xd[0],
            input: out,
            cin: cout,
            output: dhw(xd),
            cout: wci,
            kernel,
            stride: spec.stride,
            pad_before: [spec.padding[0][0], spec.padding[1][0], spec.padding[2][0]],
        }
        .checked("conv_transpose3d")
    }

    fn checked(self, op: &'static str) -> Result<Self> {
        self.validate(op)?;
        Ok(self)
    }

    /// Rejects geometries a kernel cannot run: a zero size, stride or channel count.
    pub fn validate(&self, op: &'static str) -> Result<()> {
        let sizes = [self.input, self.output, self.kernel, self.stride];
        if self.n == 0 || self.cin == 0 || self.cout == 0 || sizes.iter().flatten().any(|&v| v == 0)
        {
            return Err(Error::shape(
                op,
                format!("geometry with a zero size, stride or channel count: {self:?}"),
            ));
        }
        Ok(())
    }

    pub fn kernel_volume(&self) -> usize {
        self.kernel.iter().product()
    }
    pub fn input_voxels(&self) -> usize {
        self.input.iter().product()
    }
    pub fn output_voxels(&self) -> usize {
        self.output.iter().product()
    }
    /// `[N, D, H, W, Cin]`.
    pub fn input_shape(&self) -> Shape {
        let [d, h, w] = self.input;
        Shape::new(&[self.n, d, h, w, self.cin])
    }
    /// `[N, D', H', W', Cout]`.
    pub fn output_shape(&self) -> Shape {
        let [d, h, w] = self.output;
        Shape::new(&[self.n, d, h, w, self.cout])
    }
    /// `[kd, kh, kw, Cin, Cout]` (for a transposed convolution this is also its weight shape,
    /// read as `[kd, kh, kw, Cout_t, Cin_t]`).
    pub fn weight_shape(&self) -> Shape {
        let [kd, kh, kw] = self.kernel;
        Shape::new(&[kd, kh, kw, self.cin, self.cout])
    }
    /// Floating-point operations of one pass (forward, backward-data or backward-weight):
    /// 2 * N * output voxels * Cout * Cin * kernel volume.
    pub fn flops(&self) -> f64 {
        2.0 * self.n as f64
            * self.output_voxels() as f64
            * self.cout as f64
            * self.cin as f64
            * self.kernel_volume() as f64
    }
}
