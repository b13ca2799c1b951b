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

/// The most 2x downsamplings (a depth of 6, as `--depth` counts the FCN: levels + 1).
pub const MAX_LEVELS: usize = 5;

/// The deepest FCN (levels + 1) a patch allows: each level halves every axis, and the
/// deepest keeps at least 4 voxels on each, as the U-Net's deepest stage does.
pub fn depth_for_patch(patch: [usize; 3]) -> usize {
    let shortest = patch.into_iter().min().unwrap_or(0);
    1 + (1..=MAX_LEVELS).take_while(|&l| shortest >= 4 << l).count()
}

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
    /// An FCN of these sizes with instance norm, LeakyReLU(0.01), no dropout and He
    /// initialisation (for tests that vary only the sizes).
    #[cfg(test)]
    pub(crate) fn of_sizes(
        [in_channels, out_channels]: [usize; 2],
        features: usize,
        levels: usize,
        blocks_per_level: usize,
    ) -> Self {
        Self {
            in_channels,
            out_channels,
            features,
            levels,
            blocks_per_level,
            norm: NormKind::Instance,
            activation: Activation::LeakyRelu { slope: 0.01 },
            dropout: 0.0,
            init: Init::HeNormal,
        }
    }

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
        if self.levels > MAX_LEVELS {
            return Err(Error::config(
                "fcn",
                format!("at most {MAX_LEVELS} downsampling levels"),
            ));
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::autograd::Tape;
    use crate::backend::cpu::Cpu;
    use crate::nn::ModelSpec;
    use crate::tensor::Tensor;
    use crate::train::plan::{
        estimate, fcn_activation_bytes, model_parameters, step_memory_bytes, Plan,
    };

    #[test]
    fn the_shortest_axis_decides_the_depth_a_patch_allows() {
        assert_eq!(depth_for_patch([16; 3]), 3);
        assert_eq!(depth_for_patch([31, 64, 64]), 3);
        assert_eq!(depth_for_patch([32, 64, 64]), 4);
        assert_eq!(depth_for_patch([7, 128, 128]), 1);
        assert_eq!(depth_for_patch([1024; 3]), MAX_LEVELS + 1);
    }

    /// The estimate against the elements the real layers output in a training forward,
    /// counted layer by layer: exact (tolerance 0), odd sizes included.
    #[test]
    fn activation_estimate_counts_the_real_layer_outputs_and_is_not_the_unets() {
        let config = FcnConfig::of_sizes([2, 3], 4, 2, 2);
        let (patch, batch) = ([9, 12, 10], 2);
        let b = Cpu::new();
        let mut fcn = Fcn::new(&b, config.clone(), 1).unwrap();
        let shape = [batch, patch[0], patch[1], patch[2], 2];
        let x = Tensor::from_f32(&b, shape, &vec![0.5; shape.iter().product()]).unwrap();
        let ctx = Ctx::train(Tape::new(), 0);
        let pool = Pool3dSpec {
            kernel: [2; 3],
            stride: [2; 3],
            padding: PoolPadding::Same,
        };
        let mut y = Var::constant(x);
        let mut counted = 0;
        for (l, blocks) in fcn.levels.iter_mut().enumerate() {
            if l > 0 {
                y = y.max_pool3d(&pool).unwrap();
                counted += y.shape().numel();
            }
            for block in blocks {
                let conv = block.conv.forward(&y, &ctx).unwrap();
                y = block.norm.forward(&conv, &ctx).unwrap();
                counted += conv.shape().numel() + y.shape().numel();
            }
        }
        let up = fcn.up.as_ref().unwrap();
        y = up.forward_to(&y, patch, &ctx).unwrap();
        counted += y.shape().numel();
        counted += fcn.head.forward(&y, &ctx).unwrap().shape().numel();
        let estimated = fcn_activation_bytes(&config, patch, batch);
        assert_eq!(estimated, 4 * counted as u64);

        let plan = Plan::of_sizes(patch, batch, [4, 16], 3);
        let (_, unet) = estimate(patch, batch, &plan.unet(2, 3));
        assert_ne!(estimated, unet);
        // The memory check counts these activations, plus weights, gradients and two
        // optimiser slots (4 bytes each) and no queued batches.
        let spec = ModelSpec::Fcn(config);
        let step = step_memory_bytes(&plan, &spec, 2, 0);
        let weights = model_parameters(&spec) * 4.0 * 4.0;
        assert!(
            ((step - estimated) as f64 - weights).abs() <= 1.0,
            "{step} {estimated} {weights}"
        );
    }
}
