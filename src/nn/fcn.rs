//! The plain fully convolutional baseline of the Keras course: conv blocks with max-pool
//! downsampling, then a single learned upsampling straight back to full resolution (no skips).
use super::layers::{Activation, Conv3d, ConvBlock, ConvTranspose3d, NormKind};
use super::{Buffer, Ctx, Init, Param};
use crate::autograd::Var;
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::rng::Rng;
use crate::tensor_ops::conv::{Conv3dSpec, Padding};
use crate::tensor_ops::pool::{Pool3dSpec, PoolPadding};

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FcnConfig {
    pub in_channels: usize,
    pub out_channels: usize,
    /// Width at full resolution, doubled after each downsampling.
    pub features: usize,
    /// Number of 2x downsamplings before the single upsampling.
    pub levels: usize,
    pub blocks_per_level: usize,
    pub norm: NormKind,
    pub activation: Activation,
    pub dropout: f64,
    pub init: Init,
}

impl FcnConfig {
    pub fn validate(&self) -> Result<()> {
        if self.in_channels == 0
            || self.out_channels == 0
            || self.features == 0
            || self.blocks_per_level == 0
        {
            return Err(Error::config(
                "fcn",
                "channels, features and blocks per level must be positive",
            ));
        }
        if self.levels > 5 {
            return Err(Error::config("fcn", "at most 5 downsampling levels"));
        }
        Ok(())
    }
}

pub struct Fcn<B: Backend> {
    pub config: FcnConfig,
    levels: Vec<Vec<ConvBlock<B>>>,
    up: Option<ConvTranspose3d<B>>,
    head: Conv3d<B>,
}

impl<B: Backend> Fcn<B> {
    pub fn new(backend: &B, config: FcnConfig, seed: u64) -> Result<Self> {
        config.validate()?;
        let mut rng = Rng::new(seed);
        let c = &config;
        let mut levels = Vec::new();
        let mut cin = c.in_channels;
        for l in 0..=c.levels {
            let width = c.features << l;
            let blocks = (0..c.blocks_per_level)
                .map(|i| {
                    let ci = if i == 0 { cin } else { width };
                    ConvBlock::new(
                        backend,
                        &format!("level.{l}.block{i}"),
                        ci,
                        width,
                        [3; 3],
                        [1; 3],
                        c.norm,
                        c.activation,
                        c.dropout,
                        c.init,
                        &mut rng,
                    )
                })
                .collect::<Result<Vec<_>>>()?;
            levels.push(blocks);
            cin = width;
        }
        let factor = 1 << c.levels;
        let up = (c.levels > 0)
            .then(|| {
                ConvTranspose3d::new(
                    backend,
                    "up",
                    cin,
                    c.features,
                    [factor; 3],
                    [factor; 3],
                    true,
                    c.init,
                    &mut rng,
                )
            })
            .transpose()?;
        let head_in = if c.levels > 0 { c.features } else { cin };
        let spec = Conv3dSpec {
            stride: [1; 3],
            padding: Padding::Valid,
        };
        let head = Conv3d::new(
            backend,
            "head",
            head_in,
            c.out_channels,
            [1, 1, 1],
            spec,
            true,
            c.init,
            &mut rng,
        )?;
        Ok(Self {
            config,
            levels,
            up,
            head,
        })
    }

    pub fn forward(&mut self, x: &Var<B>, ctx: &Ctx<B>) -> Result<Vec<Var<B>>> {
        let [_, d, h, w, c] = x.shape().ndhwc("fcn")?;
        if c != self.config.in_channels {
            return Err(Error::shape(
                "fcn",
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
        let mut y = x.clone();
        for (l, blocks) in self.levels.iter_mut().enumerate() {
            if l > 0 {
                y = y.max_pool3d(&pool)?;
            }
            for b in blocks {
                y = b.forward(&y, ctx)?;
            }
        }
        if let Some(up) = &self.up {
            y = up.forward_to(&y, [d, h, w], ctx)?;
        }
        Ok(vec![self.head.forward(&y, ctx)?])
    }

    pub fn params(&self) -> Vec<&Param<B>> {
        let mut p: Vec<&Param<B>> = self
            .levels
            .iter()
            .flatten()
            .flat_map(|b| b.params())
            .collect();
        if let Some(up) = &self.up {
            p.extend(up.params());
        }
        p.extend(self.head.params());
        p
    }
    pub fn params_mut(&mut self) -> Vec<&mut Param<B>> {
        let mut p: Vec<&mut Param<B>> = self
            .levels
            .iter_mut()
            .flatten()
            .flat_map(|b| b.params_mut())
            .collect();
        if let Some(up) = &mut self.up {
            p.extend(up.params_mut());
        }
        p.extend(self.head.params_mut());
        p
    }
    pub fn buffers(&self) -> Vec<&Buffer<B>> {
        self.levels
            .iter()
            .flatten()
            .flat_map(|b| b.norm.buffers())
            .collect()
    }
    pub fn buffers_mut(&mut self) -> Vec<&mut Buffer<B>> {
        self.levels
            .iter_mut()
            .flatten()
            .flat_map(|b| b.norm.buffers_mut())
            .collect()
    }
}
