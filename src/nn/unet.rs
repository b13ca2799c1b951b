//! The configurable 3D U-Net (nnU-Net's design by default): stages of conv blocks whose
//! width doubles up to a cap, strided-conv (or max-pool) downsampling, transposed-conv (or
//! trilinear + conv) upsampling, concatenated skips, optional deep supervision.
use super::layers::{Activation, Conv3d, ConvBlock, ConvTranspose3d, NormKind};
use super::{Buffer, Ctx, Init, Param};
use crate::autograd::Var;
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::rng::Rng;
use crate::tensor_ops::conv::{Conv3dSpec, Padding};
use crate::tensor_ops::pool::{Pool3dSpec, PoolPadding};

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Downsample {
    StridedConv,
    MaxPool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Upsample {
    TransposedConv,
    /// Trilinear resize followed by a 1x1x1 convolution to the narrower width.
    TrilinearConv,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct UNetConfig {
    pub in_channels: usize,
    pub out_channels: usize,
    /// Width of the first stage; doubled per stage up to `max_features`.
    pub base_features: usize,
    pub max_features: usize,
    /// Number of resolution stages (nnU-Net at 128^3: 6).
    pub depth: usize,
    pub convs_per_stage: usize,
    pub norm: NormKind,
    pub activation: Activation,
    pub downsample: Downsample,
    pub upsample: Upsample,
    pub deep_supervision: bool,
    /// Dropout probability after each conv block (0 disables).
    pub dropout: f64,
    pub init: Init,
}

impl UNetConfig {
    /// nnU-Net's 3d_fullres BraTS network for the given channels.
    pub fn nnunet(in_channels: usize, out_channels: usize) -> Self {
        Self {
            in_channels,
            out_channels,
            base_features: 32,
            max_features: 320,
            depth: 6,
            convs_per_stage: 2,
            norm: NormKind::Instance,
            activation: Activation::LeakyRelu { slope: 0.01 },
            downsample: Downsample::StridedConv,
            upsample: Upsample::TransposedConv,
            deep_supervision: true,
            dropout: 0.0,
            init: Init::HeNormal,
        }
    }
    pub fn features(&self, stage: usize) -> usize {
        (self.base_features << stage).min(self.max_features)
    }
    pub fn validate(&self) -> Result<()> {
        let bad = |m: &str| Err(Error::config("unet", m.to_string()));
        if self.in_channels == 0 || self.out_channels == 0 {
            return bad("in and out channels must be positive");
        }
        if self.depth == 0 || self.depth > 8 {
            return bad("depth must be between 1 and 8");
        }
        if self.base_features == 0 || self.convs_per_stage == 0 {
            return bad("features and convs per stage must be positive");
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return bad("dropout must be in [0, 1)");
        }
        Ok(())
    }
}

struct Stage<B: Backend> {
    blocks: Vec<ConvBlock<B>>,
}

impl<B: Backend> Stage<B> {
    fn forward(&mut self, x: &Var<B>, ctx: &Ctx<B>) -> Result<Var<B>> {
        let mut h = x.clone();
        for b in &mut self.blocks {
            h = b.forward(&h, ctx)?;
        }
        Ok(h)
    }
}

enum UpLayer<B: Backend> {
    Transposed(ConvTranspose3d<B>),
    TrilinearConv(Conv3d<B>),
}

pub struct UNet<B: Backend> {
    pub config: UNetConfig,
    encoder: Vec<Stage<B>>,
    up: Vec<UpLayer<B>>,
    decoder: Vec<Stage<B>>,
    /// 1x1x1 output convolutions: heads[0] at full resolution, then one per lower decoder stage.
    heads: Vec<Conv3d<B>>,
}

#[allow(clippy::too_many_arguments)]
fn stage<B: Backend>(
    backend: &B,
    name: &str,
    cfg: &UNetConfig,
    cin: usize,
    cout: usize,
    first_stride: usize,
    rng: &mut Rng,
) -> Result<Stage<B>> {
    let blocks = (0..cfg.convs_per_stage)
        .map(|i| {
            let (ci, stride) = if i == 0 {
                (cin, first_stride)
            } else {
                (cout, 1)
            };
            ConvBlock::new(
                backend,
                &format!("{name}.block{i}"),
                ci,
                cout,
                stride,
                cfg.norm,
                cfg.activation,
                cfg.dropout,
                cfg.init,
                rng,
            )
        })
        .collect::<Result<_>>()?;
    Ok(Stage { blocks })
}

fn head<B: Backend>(
    backend: &B,
    name: &str,
    cin: usize,
    cout: usize,
    init: Init,
    rng: &mut Rng,
) -> Result<Conv3d<B>> {
    let spec = Conv3dSpec {
        stride: [1; 3],
        padding: Padding::Valid,
    };
    Conv3d::new(backend, name, cin, cout, [1, 1, 1], spec, true, init, rng)
}

impl<B: Backend> UNet<B> {
    pub fn new(backend: &B, config: UNetConfig, seed: u64) -> Result<Self> {
        config.validate()?;
        let mut rng = Rng::new(seed);
        let cfg = &config;
        let strided = cfg.downsample == Downsample::StridedConv;
        let mut encoder = Vec::new();
        for s in 0..cfg.depth {
            let cin = if s == 0 {
                cfg.in_channels
            } else {
                cfg.features(s - 1)
            };
            let stride = if s > 0 && strided { 2 } else { 1 };
            encoder.push(stage(
                backend,
                &format!("encoder.{s}"),
                cfg,
                cin,
                cfg.features(s),
                stride,
                &mut rng,
            )?);
        }
        let mut up = Vec::new();
        let mut decoder = Vec::new();
        let mut heads = Vec::new();
        for s in 0..cfg.depth.saturating_sub(1) {
            let (wide, narrow) = (cfg.features(s + 1), cfg.features(s));
            up.push(match cfg.upsample {
                Upsample::TransposedConv => UpLayer::Transposed(ConvTranspose3d::new(
                    backend,
                    &format!("up.{s}"),
                    wide,
                    narrow,
                    [2; 3],
                    [2; 3],
                    false,
                    cfg.init,
                    &mut rng,
                )?),
                Upsample::TrilinearConv => UpLayer::TrilinearConv(head(
                    backend,
                    &format!("up.{s}"),
                    wide,
                    narrow,
                    cfg.init,
                    &mut rng,
                )?),
            });
            decoder.push(stage(
                backend,
                &format!("decoder.{s}"),
                cfg,
                2 * narrow,
                narrow,
                1,
                &mut rng,
            )?);
            if s == 0 || (cfg.deep_supervision && s + 2 < cfg.depth) {
                heads.push(head(
                    backend,
                    &format!("head.{s}"),
                    narrow,
                    cfg.out_channels,
                    cfg.init,
                    &mut rng,
                )?);
            }
        }
        if cfg.depth == 1 {
            heads.push(head(
                backend,
                "head.0",
                cfg.features(0),
                cfg.out_channels,
                cfg.init,
                &mut rng,
            )?);
        }
        Ok(Self {
            config,
            encoder,
            up,
            decoder,
            heads,
        })
    }

    /// Logits at full resolution first, then (with deep supervision, in training) the
    /// lower-resolution outputs, each half the size of the one before.
    pub fn forward(&mut self, x: &Var<B>, ctx: &Ctx<B>) -> Result<Vec<Var<B>>> {
        let [_, _, _, _, c] = x.shape().ndhwc("unet")?;
        if c != self.config.in_channels {
            return Err(Error::shape(
                "unet",
                format!(
                    "input has {c} channels, the model expects {}",
                    self.config.in_channels
                ),
            ));
        }
        let pool = Pool3dSpec {
            kernel: [2; 3],
            stride: [2; 3],
            padding: PoolPadding::Same,
        };
        let mut skips = Vec::new();
        let mut h = x.clone();
        for (s, st) in self.encoder.iter_mut().enumerate() {
            if s > 0 && self.config.downsample == Downsample::MaxPool {
                h = h.max_pool3d(&pool)?;
            }
            h = st.forward(&h, ctx)?;
            skips.push(h.clone());
        }
        skips.pop();
        let mut decoded = Vec::new();
        for s in (0..self.decoder.len()).rev() {
            let skip = &skips[s];
            let [_, d, hh, w, _] = skip.shape().ndhwc("unet")?;
            let upsampled = match &self.up[s] {
                UpLayer::Transposed(t) => t.forward_to(&h, [d, hh, w], ctx)?,
                UpLayer::TrilinearConv(conv) => {
                    conv.forward(&h.upsample_trilinear3d([d, hh, w])?, ctx)?
                }
            };
            h = self.decoder[s].forward(&Var::concat_channels(&[skip, &upsampled])?, ctx)?;
            decoded.push((s, h.clone()));
        }
        if self.decoder.is_empty() {
            return Ok(vec![self.heads[0].forward(&h, ctx)?]);
        }
        let want_aux = ctx.is_train() && self.config.deep_supervision;
        let mut outputs = Vec::new();
        for (s, feat) in decoded.iter().rev() {
            if *s == 0 || (want_aux && *s < self.heads.len()) {
                outputs.push(self.heads[*s].forward(feat, ctx)?);
            }
        }
        Ok(outputs)
    }

    pub fn params(&self) -> Vec<&Param<B>> {
        let mut p = Vec::new();
        for st in self.encoder.iter().chain(&self.decoder) {
            for b in &st.blocks {
                p.extend(b.params());
            }
        }
        for u in &self.up {
            match u {
                UpLayer::Transposed(t) => p.extend(t.params()),
                UpLayer::TrilinearConv(c) => p.extend(c.params()),
            }
        }
        for h in &self.heads {
            p.extend(h.params());
        }
        p
    }
    pub fn params_mut(&mut self) -> Vec<&mut Param<B>> {
        let mut p = Vec::new();
        for st in self.encoder.iter_mut().chain(self.decoder.iter_mut()) {
            for b in &mut st.blocks {
                p.extend(b.params_mut());
            }
        }
        for u in &mut self.up {
            match u {
                UpLayer::Transposed(t) => p.extend(t.params_mut()),
                UpLayer::TrilinearConv(c) => p.extend(c.params_mut()),
            }
        }
        for h in &mut self.heads {
            p.extend(h.params_mut());
        }
        p
    }
    pub fn buffers(&self) -> Vec<&Buffer<B>> {
        self.encoder
            .iter()
            .chain(&self.decoder)
            .flat_map(|st| st.blocks.iter().flat_map(|b| b.norm.buffers()))
            .collect()
    }
    pub fn buffers_mut(&mut self) -> Vec<&mut Buffer<B>> {
        self.encoder
            .iter_mut()
            .chain(self.decoder.iter_mut())
            .flat_map(|st| st.blocks.iter_mut().flat_map(|b| b.norm.buffers_mut()))
            .collect()
    }
}
