//! Layers: parameters plus the op they apply. Each layer names its parameters with a dotted
//! prefix so checkpoints say which layer a tensor belongs to.
use super::{Buffer, Ctx, Init, Param};
use crate::autograd::Var;
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::rng::Rng;
use crate::tensor::Tensor;
use crate::tensor_ops::conv::{Conv3dSpec, ConvTranspose3dSpec};
use crate::tensor_ops::norm::update_moving_stats;
use crate::tensor_ops::UnaryOp;

fn bias_param<B: Backend>(backend: &B, name: &str, n: usize) -> Result<Param<B>> {
    Ok(Param::new(
        format!("{name}.bias"),
        Tensor::zeros(backend, [n])?,
        false,
    ))
}

/// A convolution kernel mapping `cin` to `cout` channels, drawn from `init` with fans that
/// count the kernel volume; stored `[kd, kh, kw, cin, cout]`, or `[kd, kh, kw, cout, cin]`
/// for a transposed convolution (Keras' layouts).
fn kernel_param<B: Backend>(
    backend: &B,
    name: &str,
    kernel: [usize; 3],
    [cin, cout]: [usize; 2],
    transposed: bool,
    init: Init,
    rng: &mut Rng,
) -> Result<Param<B>> {
    let kvol: usize = kernel.iter().product();
    let w = init.sample(kvol * cin * cout, kvol * cin, kvol * cout, rng);
    let (a, b) = if transposed { (cout, cin) } else { (cin, cout) };
    let shape = [kernel[0], kernel[1], kernel[2], a, b];
    Ok(Param::new(
        format!("{name}.weight"),
        Tensor::from_f32(backend, shape, &w)?,
        true,
    ))
}

fn optional_bias<B: Backend>(
    backend: &B,
    name: &str,
    n: usize,
    bias: bool,
) -> Result<Option<Param<B>>> {
    bias.then(|| bias_param(backend, name, n)).transpose()
}

/// The parameters of a layer with a weight and an optional bias (conv, transposed conv,
/// dense), weight first.
fn weight_and_bias<'a, B: Backend>(
    weight: &'a Param<B>,
    bias: &'a Option<Param<B>>,
) -> Vec<&'a Param<B>> {
    std::iter::once(weight).chain(bias.as_ref()).collect()
}

fn weight_and_bias_mut<'a, B: Backend>(
    weight: &'a mut Param<B>,
    bias: &'a mut Option<Param<B>>,
) -> Vec<&'a mut Param<B>> {
    std::iter::once(weight).chain(bias.as_mut()).collect()
}

/// The weight and the optional bias as variables of the context's tape.
fn weight_and_bias_vars<B: Backend>(
    weight: &Param<B>,
    bias: &Option<Param<B>>,
    ctx: &Ctx<B>,
) -> (Var<B>, Option<Var<B>>) {
    (
        weight.var(ctx.tape()),
        bias.as_ref().map(|b| b.var(ctx.tape())),
    )
}

/// 3D convolution, weight `[kd, kh, kw, cin, cout]`.
pub struct Conv3d<B: Backend> {
    pub weight: Param<B>,
    pub bias: Option<Param<B>>,
    pub spec: Conv3dSpec,
}

impl<B: Backend> Conv3d<B> {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        backend: &B,
        name: &str,
        cin: usize,
        cout: usize,
        kernel: [usize; 3],
        spec: Conv3dSpec,
        bias: bool,
        init: Init,
        rng: &mut Rng,
    ) -> Result<Self> {
        let weight = kernel_param(backend, name, kernel, [cin, cout], false, init, rng)?;
        let bias = optional_bias(backend, name, cout, bias)?;
        Ok(Self { weight, bias, spec })
    }
    pub fn forward(&self, x: &Var<B>, ctx: &Ctx<B>) -> Result<Var<B>> {
        let (w, b) = weight_and_bias_vars(&self.weight, &self.bias, ctx);
        x.conv3d(&w, b.as_ref(), &self.spec)
    }
    pub fn params(&self) -> Vec<&Param<B>> {
        weight_and_bias(&self.weight, &self.bias)
    }
    pub fn params_mut(&mut self) -> Vec<&mut Param<B>> {
        weight_and_bias_mut(&mut self.weight, &mut self.bias)
    }
}

/// Transposed 3D convolution (learned upsampling), weight `[kd, kh, kw, cout, cin]`.
pub struct ConvTranspose3d<B: Backend> {
    pub weight: Param<B>,
    pub bias: Option<Param<B>>,
    pub kernel: [usize; 3],
    pub stride: [usize; 3],
}

impl<B: Backend> ConvTranspose3d<B> {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        backend: &B,
        name: &str,
        cin: usize,
        cout: usize,
        kernel: [usize; 3],
        stride: [usize; 3],
        bias: bool,
        init: Init,
        rng: &mut Rng,
    ) -> Result<Self> {
        let weight = kernel_param(backend, name, kernel, [cin, cout], true, init, rng)?;
        let bias = optional_bias(backend, name, cout, bias)?;
        Ok(Self {
            weight,
            bias,
            kernel,
            stride,
        })
    }
    /// Upsamples `x` to exactly `target` (D, H, W), e.g. the size of the skip connection.
    pub fn forward_to(&self, x: &Var<B>, target: [usize; 3], ctx: &Ctx<B>) -> Result<Var<B>> {
        let [_, d, h, w, _] = x.shape().ndhwc("conv_transpose3d")?;
        let spec = ConvTranspose3dSpec::to_size(self.kernel, self.stride, [d, h, w], target)?;
        let (w, b) = weight_and_bias_vars(&self.weight, &self.bias, ctx);
        x.conv_transpose3d(&w, b.as_ref(), &spec)
    }
    pub fn params(&self) -> Vec<&Param<B>> {
        weight_and_bias(&self.weight, &self.bias)
    }
    pub fn params_mut(&mut self) -> Vec<&mut Param<B>> {
        weight_and_bias_mut(&mut self.weight, &mut self.bias)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NormKind {
    Instance,
    Batch,
    None,
}

#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    Relu,
    LeakyRelu { slope: f64 },
    Elu { alpha: f64 },
}

impl Activation {
    pub fn op(self) -> UnaryOp {
        match self {
            Activation::Relu => UnaryOp::Relu,
            Activation::LeakyRelu { slope } => UnaryOp::LeakyRelu(slope),
            Activation::Elu { alpha } => UnaryOp::Elu(alpha),
        }
    }
    /// Whether the norm kernels can apply it in the same pass.
    fn fusable(self) -> bool {
        !matches!(self, Activation::Elu { .. })
    }
}

/// Instance or batch norm with an affine transform, followed by an activation (fused when
/// the kernels support it). Batch norm keeps moving statistics for eval mode.
pub struct NormAct<B: Backend> {
    pub kind: NormKind,
    pub gamma: Option<Param<B>>,
    pub beta: Option<Param<B>>,
    pub moving_mean: Option<Buffer<B>>,
    pub moving_var: Option<Buffer<B>>,
    pub act: Activation,
    pub eps: f64,
    pub momentum: f64,
}

impl<B: Backend> NormAct<B> {
    pub fn new(
        backend: &B,
        name: &str,
        kind: NormKind,
        channels: usize,
        act: Activation,
    ) -> Result<Self> {
        let affine = kind != NormKind::None;
        let gamma = if affine {
            Some(Param::new(
                format!("{name}.gamma"),
                Tensor::full(backend, [channels], 1.0)?,
                false,
            ))
        } else {
            None
        };
        let beta = if affine {
            Some(Param::new(
                format!("{name}.beta"),
                Tensor::zeros(backend, [channels])?,
                false,
            ))
        } else {
            None
        };
        let (moving_mean, moving_var) = if kind == NormKind::Batch {
            (
                Some(Buffer {
                    name: format!("{name}.moving_mean"),
                    value: Tensor::zeros(backend, [channels])?,
                }),
                Some(Buffer {
                    name: format!("{name}.moving_var"),
                    value: Tensor::full(backend, [channels], 1.0)?,
                }),
            )
        } else {
            (None, None)
        };
        // eps/momentum: nnU-Net's instance norm eps 1e-5; Keras batch norm eps 1e-3, momentum 0.99.
        let (eps, momentum) = match kind {
            NormKind::Batch => (1e-3, 0.99),
            _ => (1e-5, 0.0),
        };
        Ok(Self {
            kind,
            gamma,
            beta,
            moving_mean,
            moving_var,
            act,
            eps,
            momentum,
        })
    }

    pub fn forward(&mut self, x: &Var<B>, ctx: &Ctx<B>) -> Result<Var<B>> {
        let g = self.gamma.as_ref().map(|p| p.var(ctx.tape()));
        let b = self.beta.as_ref().map(|p| p.var(ctx.tape()));
        let fused = self.act.fusable().then(|| self.act.op());
        let y = match self.kind {
            NormKind::Instance => x.instance_norm(g.as_ref(), b.as_ref(), self.eps, fused)?,
            NormKind::Batch => {
                let (Some(mm), Some(mv)) = (self.moving_mean.as_mut(), self.moving_var.as_mut())
                else {
                    return Err(Error::shape("batch_norm", "moving statistics missing"));
                };
                if ctx.is_train() {
                    let (y, mean, var) =
                        x.batch_norm_train(g.as_ref(), b.as_ref(), self.eps, fused)?;
                    let count = x.value().numel() / x.shape().last().max(1);
                    update_moving_stats(
                        &mut mm.value,
                        &mut mv.value,
                        &mean,
                        &var,
                        count,
                        self.momentum,
                    )?;
                    y
                } else {
                    x.batch_norm_eval(
                        g.as_ref(),
                        b.as_ref(),
                        &mm.value,
                        &mv.value,
                        self.eps,
                        fused,
                    )?
                }
            }
            NormKind::None => match fused {
                Some(op) => x.unary(op)?,
                None => x.clone(),
            },
        };
        if fused.is_none() {
            return y.unary(self.act.op());
        }
        Ok(y)
    }
    pub fn params(&self) -> Vec<&Param<B>> {
        self.gamma.iter().chain(self.beta.iter()).collect()
    }
    pub fn params_mut(&mut self) -> Vec<&mut Param<B>> {
        self.gamma.iter_mut().chain(self.beta.iter_mut()).collect()
    }
    pub fn buffers(&self) -> Vec<&Buffer<B>> {
        self.moving_mean
            .iter()
            .chain(self.moving_var.iter())
            .collect()
    }
    pub fn buffers_mut(&mut self) -> Vec<&mut Buffer<B>> {
        self.moving_mean
            .iter_mut()
            .chain(self.moving_var.iter_mut())
            .collect()
    }
}

/// Fully connected layer on the last axis, weight `[in, out]`.
pub struct Dense<B: Backend> {
    pub weight: Param<B>,
    pub bias: Option<Param<B>>,
}

impl<B: Backend> Dense<B> {
    pub fn new(
        backend: &B,
        name: &str,
        fan_in: usize,
        fan_out: usize,
        bias: bool,
        init: Init,
        rng: &mut Rng,
    ) -> Result<Self> {
        let w = init.sample(fan_in * fan_out, fan_in, fan_out, rng);
        let weight = Param::new(
            format!("{name}.weight"),
            Tensor::from_f32(backend, [fan_in, fan_out], &w)?,
            true,
        );
        let bias = optional_bias(backend, name, fan_out, bias)?;
        Ok(Self { weight, bias })
    }
    pub fn forward(&self, x: &Var<B>, ctx: &Ctx<B>) -> Result<Var<B>> {
        let (w, b) = weight_and_bias_vars(&self.weight, &self.bias, ctx);
        x.dense(&w, b.as_ref())
    }
    pub fn params(&self) -> Vec<&Param<B>> {
        weight_and_bias(&self.weight, &self.bias)
    }
    pub fn params_mut(&mut self) -> Vec<&mut Param<B>> {
        weight_and_bias_mut(&mut self.weight, &mut self.bias)
    }
}

/// conv -> norm -> activation (-> dropout in training): the building block of both models.
pub struct ConvBlock<B: Backend> {
    pub conv: Conv3d<B>,
    pub norm: NormAct<B>,
    pub dropout: f64,
}

impl<B: Backend> ConvBlock<B> {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        backend: &B,
        name: &str,
        cin: usize,
        cout: usize,
        kernel: [usize; 3],
        stride: [usize; 3],
        norm: NormKind,
        act: Activation,
        dropout: f64,
        init: Init,
        rng: &mut Rng,
    ) -> Result<Self> {
        let spec = Conv3dSpec {
            stride,
            ..Conv3dSpec::default()
        };
        // A bias before a normalisation is cancelled by its mean subtraction.
        let bias = norm == NormKind::None;
        let conv = Conv3d::new(
            backend,
            &format!("{name}.conv"),
            cin,
            cout,
            kernel,
            spec,
            bias,
            init,
            rng,
        )?;
        let norm = NormAct::new(backend, &format!("{name}.norm"), norm, cout, act)?;
        Ok(Self {
            conv,
            norm,
            dropout,
        })
    }
    pub fn forward(&mut self, x: &Var<B>, ctx: &Ctx<B>) -> Result<Var<B>> {
        let y = self.norm.forward(&self.conv.forward(x, ctx)?, ctx)?;
        if ctx.is_train() && self.dropout > 0.0 {
            return y.dropout(self.dropout, ctx.seed(), ctx.dropout_stream(), false);
        }
        Ok(y)
    }
    pub fn params(&self) -> Vec<&Param<B>> {
        let mut p = self.conv.params();
        p.extend(self.norm.params());
        p
    }
    pub fn params_mut(&mut self) -> Vec<&mut Param<B>> {
        let mut p = self.conv.params_mut();
        p.extend(self.norm.params_mut());
        p
    }
}
