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
    /// Per stage, (D, H, W): the stride of the downsampling into the stage (stage 0's is
    /// [1, 1, 1]); the transposed convolution back up mirrors it. Empty: 2 on every axis
    /// (the isotropic network, and that of model files written before per-axis pooling).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub strides: Vec<[usize; 3]>,
    /// Per stage, (D, H, W): the kernel of its convolutions, in the encoder and the decoder.
    /// Empty: 3x3x3 everywhere.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kernels: Vec<[usize; 3]>,
}

/// The per-stage shape of a U-Net, (D, H, W) per stage: the stride of the downsampling
/// into the stage (stage 0's is [1, 1, 1]) and the kernel of its convolutions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stages {
    pub strides: Vec<[usize; 3]>,
    pub kernels: Vec<[usize; 3]>,
}

impl Stages {
    /// `depth` stages, each after the first downsampled by 2 on every axis, 3x3x3 kernels.
    pub fn isotropic(depth: usize) -> Self {
        Self {
            strides: (0..depth)
                .map(|s| if s == 0 { [1; 3] } else { [2; 3] })
                .collect(),
            kernels: vec![[3; 3]; depth],
        }
    }
    pub fn depth(&self) -> usize {
        self.strides.len()
    }
    /// The first `depth` stages.
    pub fn truncated(mut self, depth: usize) -> Self {
        self.strides.truncate(depth);
        self.kernels.truncate(depth);
        self
    }
    /// The lists as configuration files store them: empty where they are the isotropic
    /// network's, so that such files read as they did before per-axis pooling.
    pub fn stored(&self) -> (Vec<[usize; 3]>, Vec<[usize; 3]>) {
        let iso = Self::isotropic(self.depth());
        let keep = |list: &Vec<[usize; 3]>, iso: &Vec<[usize; 3]>| {
            if list == iso {
                Vec::new()
            } else {
                list.clone()
            }
        };
        (
            keep(&self.strides, &iso.strides),
            keep(&self.kernels, &iso.kernels),
        )
    }
    /// The stages that `depth` and the stored lists (see [`Stages::stored`]) describe.
    pub fn from_stored(depth: usize, strides: &[[usize; 3]], kernels: &[[usize; 3]]) -> Self {
        let iso = Self::isotropic(depth);
        let pick = |list: &[[usize; 3]], iso: Vec<[usize; 3]>| {
            if list.is_empty() {
                iso
            } else {
                list.to_vec()
            }
        };
        Self {
            strides: pick(strides, iso.strides),
            kernels: pick(kernels, iso.kernels),
        }
    }
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
            strides: Vec::new(),
            kernels: Vec::new(),
        }
    }
    /// This configuration with `stages` (and their depth).
    pub fn with_stages(mut self, stages: &Stages) -> Self {
        self.depth = stages.depth();
        (self.strides, self.kernels) = stages.stored();
        self
    }
    pub fn stages(&self) -> Stages {
        Stages::from_stored(self.depth, &self.strides, &self.kernels)
    }
    /// The downsampling stride into stage `s` (D, H, W).
    pub fn stride(&self, s: usize) -> [usize; 3] {
        match self.strides.get(s) {
            Some(&st) => st,
            None if s == 0 => [1; 3],
            None => [2; 3],
        }
    }
    /// Whether decoder stage `s` has an output head: the full resolution's, and with deep
    /// supervision every stage but the two deepest.
    pub fn has_head(&self, s: usize) -> bool {
        s == 0 || (self.deep_supervision && s + 2 < self.depth)
    }

    /// The spatial size of each output the training loss scores for a `patch`: those of
    /// the stages that have a head (`has_head`), the full resolution first.
    pub fn supervised_sizes(&self, patch: [usize; 3]) -> Vec<[usize; 3]> {
        let mut size = patch;
        let mut sizes = Vec::new();
        for s in 0..self.depth {
            let stride = self.stride(s);
            // 'same' padding rounds up, in the strided convolutions and the pooling alike.
            size = [0, 1, 2].map(|a| size[a].div_ceil(stride[a].max(1)));
            if self.has_head(s) {
                sizes.push(size);
            }
        }
        sizes
    }

    /// The convolution kernel of stage `s` (D, H, W).
    pub fn kernel(&self, s: usize) -> [usize; 3] {
        self.kernels.get(s).copied().unwrap_or([3; 3])
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
        for (name, list) in [("strides", &self.strides), ("kernels", &self.kernels)] {
            if !list.is_empty() && list.len() != self.depth {
                return Err(Error::config(
                    "unet",
                    format!(
                        "{name} lists {} stages, the depth is {}",
                        list.len(),
                        self.depth
                    ),
                ));
            }
        }
        if self.strides.iter().flatten().any(|&s| s == 0) || self.stride(0) != [1; 3] {
            return bad("strides must be positive and the first stage's must be [1, 1, 1]");
        }
        if self.kernels.iter().flatten().any(|&k| k % 2 == 0) {
            return bad("kernel sizes must be odd");
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
    kernel: [usize; 3],
    first_stride: [usize; 3],
    rng: &mut Rng,
) -> Result<Stage<B>> {
    let blocks = (0..cfg.convs_per_stage)
        .map(|i| {
            let (ci, stride) = if i == 0 {
                (cin, first_stride)
            } else {
                (cout, [1; 3])
            };
            ConvBlock::new(
                backend,
                &format!("{name}.block{i}"),
                ci,
                cout,
                kernel,
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
            let stride = if strided { cfg.stride(s) } else { [1; 3] };
            encoder.push(stage(
                backend,
                &format!("encoder.{s}"),
                cfg,
                cin,
                cfg.features(s),
                cfg.kernel(s),
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
                    cfg.stride(s + 1),
                    cfg.stride(s + 1),
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
                cfg.kernel(s),
                [1; 3],
                &mut rng,
            )?);
            if cfg.has_head(s) {
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
    /// lower-resolution outputs, each downsampled by the next stage's strides.
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
        let mut skips = Vec::new();
        let mut h = x.clone();
        for (s, st) in self.encoder.iter_mut().enumerate() {
            if s > 0 && self.config.downsample == Downsample::MaxPool {
                let stride = self.config.stride(s);
                h = h.max_pool3d(&Pool3dSpec {
                    kernel: stride,
                    stride,
                    padding: PoolPadding::Same,
                })?;
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The loss scores the full resolution and, with deep supervision, every stage with a
    /// head (all but the two deepest), each the patch over the strides down to it.
    #[test]
    fn supervised_sizes_follow_the_heads_and_strides() {
        let mut net = UNetConfig::nnunet(4, 3);
        net.depth = 5;
        net.strides = vec![[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2], [2, 2, 2]];
        assert_eq!(
            net.supervised_sizes([32, 64, 64]),
            vec![[32, 64, 64], [32, 32, 32], [16, 16, 16]]
        );
        net.deep_supervision = false;
        assert_eq!(net.supervised_sizes([32, 64, 64]), vec![[32, 64, 64]]);
        // Odd sizes round up, as the network's 'same' padding does.
        net.deep_supervision = true;
        assert_eq!(
            net.supervised_sizes([29, 29, 29]),
            vec![[29, 29, 29], [29, 15, 15], [15, 8, 8]]
        );
    }
    use crate::autograd::{check_gradients, Tape};
    use crate::backend::cpu::{Cpu, Cpu64};
    use crate::tensor::Tensor;
    use std::cell::RefCell;

    /// 3 stages: z kept at the first downsampling and pooled at the second, kernels 1 on z
    /// in the first stage (as planned for 1x1x2.5 mm data).
    fn anisotropic(norm: NormKind) -> UNetConfig {
        UNetConfig {
            base_features: 2,
            max_features: 4,
            depth: 3,
            norm,
            ..UNetConfig::nnunet(1, 2)
        }
        .with_stages(&Stages {
            strides: vec![[1, 1, 1], [1, 2, 2], [2, 2, 2]],
            kernels: vec![[1, 3, 3], [3, 3, 3], [3, 3, 3]],
        })
    }

    fn input<B: Backend>(b: &B, dims: [usize; 5], seed: u64) -> Tensor<B> {
        let mut rng = Rng::new(seed);
        let v: Vec<f32> = (0..dims.iter().product::<usize>())
            .map(|_| rng.normal() as f32)
            .collect();
        Tensor::from_f32(b, dims, &v).unwrap()
    }

    #[test]
    fn per_axis_strides_shape_the_weights_and_the_outputs() {
        let b = Cpu::new();
        let mut stages = anisotropic(NormKind::Instance).stages();
        stages.strides.push([2, 2, 2]);
        stages.kernels.push([3, 3, 3]);
        let cfg = anisotropic(NormKind::Instance).with_stages(&stages);
        let mut net = UNet::new(&b, cfg, 3).unwrap();
        let shape = |name: &str| {
            let p = net.params().into_iter().find(|p| p.name == name).unwrap();
            p.value.dims().to_vec()
        };
        assert_eq!(shape("encoder.0.block0.conv.weight"), [1, 3, 3, 1, 2]);
        assert_eq!(shape("encoder.1.block0.conv.weight"), [3, 3, 3, 2, 4]);
        assert_eq!(shape("up.0.weight"), [1, 2, 2, 2, 4]);
        assert_eq!(shape("up.1.weight"), [2, 2, 2, 4, 4]);
        assert_eq!(shape("decoder.0.block1.conv.weight"), [1, 3, 3, 2, 2]);
        let x = Var::constant(input(&b, [1, 6, 12, 10, 1], 1));
        let outs = net.forward(&x, &Ctx::train(Tape::new(), 0)).unwrap();
        let dims: Vec<Vec<usize>> = outs.iter().map(|o| o.dims().to_vec()).collect();
        // The auxiliary output of stage 1 keeps z: only H and W were downsampled into it
        // (like nnU-Net, the output of the stage above the bottleneck is not supervised).
        assert_eq!(dims, [vec![1, 6, 12, 10, 2], vec![1, 6, 6, 5, 2]]);
    }

    #[test]
    fn kernels_of_one_on_an_unpooled_axis_keep_its_slices_apart() {
        // Without a norm (instance norm pools statistics over all slices) and with z never
        // pooled and kernel 1 on z, each z slice is segmented on its own, as by a 2D U-Net.
        let b = Cpu::new();
        let cfg = anisotropic(NormKind::None).with_stages(&Stages {
            strides: vec![[1, 1, 1], [1, 2, 2], [1, 2, 2]],
            kernels: vec![[1, 3, 3]; 3],
        });
        let mut net = UNet::new(&b, cfg, 5).unwrap();
        let x = input(&b, [1, 2, 8, 8, 1], 2);
        let mut v = x.to_vec().unwrap();
        for e in &mut v[64..] {
            *e += 1.0;
        }
        let changed = Tensor::from_f32(&b, [1, 2, 8, 8, 1], &v).unwrap();
        let run = |net: &mut UNet<Cpu>, t: Tensor<Cpu>| {
            net.forward(&Var::constant(t), &Ctx::eval()).unwrap()[0]
                .value()
                .to_vec()
                .unwrap()
        };
        let (a, c) = (run(&mut net, x), run(&mut net, changed));
        // Slice z = 0 (the first 8 * 8 * 2 logits) is untouched, slice z = 1 changes.
        assert_eq!(a[..128], c[..128]);
        assert!(a[128..].iter().zip(&c[128..]).any(|(p, q)| p != q));
    }

    #[test]
    fn input_gradient_through_an_anisotropic_unet_matches_central_differences_f64() {
        let b = Cpu64::new();
        for downsample in [Downsample::StridedConv, Downsample::MaxPool] {
            let cfg = UNetConfig {
                downsample,
                ..anisotropic(NormKind::Instance)
            };
            let net = RefCell::new(UNet::new(&b, cfg, 9).unwrap());
            let mut rng = Rng::new(4);
            let x: Vec<f64> = (0..3 * 5 * 4).map(|_| rng.normal()).collect();
            let x = Tensor::from_host(&b, [1, 3, 5, 4, 1], &x).unwrap();
            let report = check_gradients(
                &[x],
                |v| {
                    let out = net.borrow_mut().forward(&v[0], &Ctx::eval())?;
                    out[0].square()?.mean()
                },
                1e-6,
                1e-5,
                60,
            )
            .unwrap();
            assert_eq!(report.checked, 60, "{downsample:?}");
        }
    }

    #[test]
    fn isotropic_stages_are_stored_empty_and_old_files_read_as_isotropic() {
        let cfg = UNetConfig::nnunet(4, 3).with_stages(&Stages::isotropic(4));
        assert!(cfg.depth == 4 && cfg.strides.is_empty() && cfg.kernels.is_empty());
        assert_eq!(cfg.stages(), Stages::isotropic(4));
        let text = serde_json::to_string(&cfg).unwrap();
        assert!(
            !text.contains("strides") && !text.contains("kernels"),
            "{text}"
        );
        let back: UNetConfig = serde_json::from_str(&text).unwrap();
        assert_eq!(
            (back.stride(0), back.stride(3), back.kernel(2)),
            ([1; 3], [2; 3], [3; 3])
        );
        let aniso = anisotropic(NormKind::Instance);
        let text = serde_json::to_string(&aniso).unwrap();
        assert!(
            text.contains("\"strides\":[[1,1,1],[1,2,2],[2,2,2]]"),
            "{text}"
        );
        assert_eq!(serde_json::from_str::<UNetConfig>(&text).unwrap(), aniso);
        let shallower = aniso.stages().truncated(2);
        assert_eq!(shallower.stored().0, vec![[1, 1, 1], [1, 2, 2]]);
        assert_eq!(Stages::isotropic(5).truncated(3).stored(), (vec![], vec![]));
    }

    #[test]
    fn bad_strides_and_kernels_are_refused() {
        let base = anisotropic(NormKind::Instance);
        let msg = |c: UNetConfig| c.validate().unwrap_err().to_string();
        let short = UNetConfig {
            strides: vec![[1; 3], [2; 3]],
            ..base.clone()
        };
        assert!(msg(short).contains("strides lists 2 stages, the depth is 3"));
        let first = UNetConfig {
            strides: vec![[2; 3]; 3],
            ..base.clone()
        };
        assert!(msg(first).contains("first stage's must be [1, 1, 1]"));
        let even = UNetConfig {
            kernels: vec![[2, 3, 3]; 3],
            ..base
        };
        assert!(msg(even).contains("odd"));
    }
}
