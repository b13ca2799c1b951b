//! Planning, like nnU-Net: from the dataset's median cropped shape and the device, choose
//! the patch, batch and network width so that a user need not know what fits.
use crate::error::{Error, Result};
use crate::nn::fcn::FcnConfig;
use crate::nn::unet::{Stages, UNetConfig};
use crate::nn::ModelSpec;

/// What planning needs to know about the data.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DataSummary {
    /// Median cropped case size (D, H, W) = (z, y, x).
    pub median_shape: [usize; 3],
    /// Smallest cropped size per axis over the training cases: a patch never exceeds it.
    pub min_shape: [usize; 3],
    pub median_spacing: [f64; 3],
    pub in_channels: usize,
    pub out_channels: usize,
}

/// Where training runs, as planning sees it.
#[derive(Clone, Debug, PartialEq)]
pub enum PlanDevice {
    /// A CPU: plan for a compute budget per training step (GFLOP).
    Cpu { step_gflop_budget: f64 },
    /// A GPU with this much free memory (bytes), whose convolutions convert their inputs
    /// to `packed_bytes` per element (2 at bf16, 4 at tf32, 0 at fp32), which the tape keeps
    /// in the inputs' place (src/backend/cuda/storage.rs, `gpu_step_peak_bytes`).
    Gpu { free_bytes: u64, packed_bytes: u32 },
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Plan {
    pub patch: [usize; 3],
    pub batch: usize,
    pub base_features: usize,
    pub max_features: usize,
    /// Resolution stages of the U-Net.
    pub depth: usize,
    /// Per-stage downsampling strides (D, H, W), as [`UNetConfig::strides`] stores them
    /// (empty: 2 on every axis).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub strides: Vec<[usize; 3]>,
    /// Per-stage convolution kernels (D, H, W), as [`UNetConfig::kernels`] stores them
    /// (empty: 3x3x3).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kernels: Vec<[usize; 3]>,
    /// Estimated cost of one training step (forward + backward), GFLOP.
    pub step_gflop: f64,
    /// Estimated activation memory of one training step, bytes.
    pub activation_bytes: u64,
    pub device: String,
}

impl Plan {
    /// The U-Net stages this plan holds.
    pub fn stages(&self) -> Stages {
        Stages::from_stored(self.depth, &self.strides, &self.kernels)
    }
    pub fn set_stages(&mut self, stages: &Stages) {
        self.depth = stages.depth();
        (self.strides, self.kernels) = stages.stored();
    }
    /// A CPU plan of these sizes with isotropic stages and no estimates (for tests that
    /// need a plan's sizes only).
    #[cfg(test)]
    pub(crate) fn of_sizes(
        patch: [usize; 3],
        batch: usize,
        [base_features, max_features]: [usize; 2],
        depth: usize,
    ) -> Self {
        Self {
            patch,
            batch,
            base_features,
            max_features,
            depth,
            strides: Vec::new(),
            kernels: Vec::new(),
            step_gflop: 0.0,
            activation_bytes: 0,
            device: "cpu".into(),
        }
    }
    /// nnU-Net's U-Net with this plan's widths and stages.
    pub fn unet(&self, in_channels: usize, out_channels: usize) -> UNetConfig {
        UNetConfig {
            base_features: self.base_features,
            max_features: self.max_features,
            ..UNetConfig::nnunet(in_channels, out_channels)
        }
        .with_stages(&self.stages())
    }
}

/// The most resolution stages planned (nnU-Net's in 3D).
const MAX_STAGES: usize = 6;
/// The smallest edge a pooled axis keeps at the deepest stage (nnU-Net's).
const MIN_EDGE: usize = 4;

/// The U-Net's stages for `patch` (D, H, W) of data at `spacing` mm (D, H, W), by nnU-Net's
/// rule (`get_pool_and_conv_props`): at each downsampling, of the axes of at least 8 voxels,
/// those whose current spacing is under twice the finest of them are halved, rounding up as
/// the strided convolutions do (a lone axis only while it has 12 voxels); the others keep
/// stride 1, and their spacing catches up as the finer axes' doubles. A stage's kernel is 3
/// on an axis once its spacing is under twice the finest, 1 before; the deepest stage's is 3
/// on every axis. An axis of one voxel always has kernel 1 (3 would only read padding). At
/// most 6 stages, where nnU-Net has no limit.
/// Isotropic data halves every axis together, as long as the smallest allows.
pub fn stages_for(patch: [usize; 3], spacing: [f64; 3]) -> Stages {
    stages_up_to(patch, spacing, MAX_STAGES)
}

fn stages_up_to(patch: [usize; 3], spacing: [f64; 3], max_stages: usize) -> Stages {
    // A missing or nonsensical spacing plans as isotropic.
    let mut spacing = spacing.map(|s| if s.is_finite() && s > 0.0 { s } else { 1.0 });
    let mut size = patch;
    let mut kernel = [1; 3];
    let mut stages = Stages {
        strides: vec![[1; 3]],
        kernels: Vec::new(),
    };
    loop {
        let finest = spacing.iter().copied().fold(f64::INFINITY, f64::min);
        for a in 0..3 {
            if spacing[a] < 2.0 * finest && size[a] > 1 {
                kernel[a] = 3;
            }
        }
        stages.kernels.push(kernel);
        let fits: Vec<usize> = (0..3).filter(|&a| size[a] >= 2 * MIN_EDGE).collect();
        let finest_fit = fits
            .iter()
            .map(|&a| spacing[a])
            .fold(f64::INFINITY, f64::min);
        let pooled: Vec<usize> = fits
            .into_iter()
            .filter(|&a| spacing[a] < 2.0 * finest_fit)
            .collect();
        let deepest = match pooled[..] {
            [] => true,
            [a] => size[a] < 3 * MIN_EDGE,
            _ => false,
        };
        if deepest || stages.depth() >= max_stages {
            let last = stages.kernels.last_mut().expect("a stage was pushed");
            for (k, &side) in last.iter_mut().zip(&size) {
                *k = if side > 1 { 3 } else { 1 };
            }
            return stages;
        }
        let mut stride = [1; 3];
        for a in pooled {
            stride[a] = 2;
            size[a] = size[a].div_ceil(2);
            spacing[a] *= 2.0;
        }
        stages.strides.push(stride);
    }
}

/// The smallest patch (D, H, W) that allows `depth` stages under [`stages_for`]'s rule for
/// data at `spacing`: 4 voxels times 2 per downsampling on each pooled axis.
pub fn min_patch_for_depth(depth: usize, spacing: [f64; 3]) -> [usize; 3] {
    // With room on every axis, only the spacings decide which axes are pooled.
    let unbounded = stages_up_to([1 << 30; 3], spacing, depth.max(1));
    let mut patch = [0, 1, 2].map(|a| {
        let pools = unbounded.strides.iter().filter(|s| s[a] > 1).count() as u32;
        if pools == 0 {
            1
        } else {
            MIN_EDGE * 2usize.pow(pools)
        }
    });
    // A lone pooled axis needs more room (see `stages_for`): grow the pooled axes until
    // the depth fits.
    while stages_for(patch, spacing).depth() < depth.min(MAX_STAGES) {
        for (p, pooled) in patch.iter_mut().zip(0..3) {
            if unbounded.strides.iter().any(|s| s[pooled] > 1) {
                *p *= 2;
            }
        }
    }
    patch
}

/// The device pool's peak in a training step whose kept activations [`estimate`] puts at
/// `activation_bytes`, with convolution operands packed to `packed_bytes` per element (0
/// at fp32, 2 at bf16, 4 at tf32). Beside the activations the pool holds the packs that
/// the tape keeps in place of the tensor-core convolutions' inputs (bordered ones for the
/// halo kernels), workspaces, weights and optimiser state. Fitted to the pool peaks of the
/// BraTS step (batch 2, 128^3, widths 32 to 320: 7.14 GB of activations; BENCHMARKS.md):
/// 8.78 GB at fp32 (an H100, 2026-11-26; 8.29 on an H200), 9.44 GB at bf16 and 12.05 GB at
/// tf32 (an H200, 2026-11-28, the tape keeping packs), 1.23, 1.32 and 1.69 times the
/// activations, rounded up. Not linear in the packed bytes: at tf32 the kept pack is as
/// large as the input it replaces. With `VOXSEG_SAVE_PACKED_INPUTS=0` the tape keeps the
/// inputs too, and the peak is 1.58 times at bf16 (11.31 GB) and 1.99 at tf32 (14.19 GB),
/// within `GPU_PEAK_SHARE`'s slack.
pub fn gpu_step_peak_bytes(activation_bytes: u64, packed_bytes: u32) -> f64 {
    let per_activation_byte = match packed_bytes {
        0 => 1.25,
        2 => 1.34,
        _ => 1.71,
    };
    activation_bytes as f64 * per_activation_byte
}

/// The share of a GPU's free memory a planned step's pool peak may take; the rest is the
/// pool's slack (whole size classes), validation's windows and the driver's own.
pub const GPU_PEAK_SHARE: f64 = 0.75;

/// Width of stage `s`: `base` doubled `s` times, at most `max`; in f64 so that no width
/// (an absurd `--features` included) can overflow.
fn stage_width(base: usize, max: usize, s: usize) -> f64 {
    (base as f64 * 2f64.powi(s as i32)).min(max as f64)
}

/// FLOPs and activation bytes of one training step of `net` (two convolutions per stage,
/// transposed-conv upsampling) on `batch` patches of `patch`; backward costs about twice
/// the forward.
pub fn estimate(patch: [usize; 3], batch: usize, net: &UNetConfig) -> (f64, u64) {
    let (base, max, depth) = (net.base_features, net.max_features, net.depth);
    let (cin, cout) = (net.in_channels, net.out_channels);
    let feat = |s: usize| stage_width(base, max, s);
    let volume = |v: [usize; 3]| v.iter().product::<usize>() as f64;
    let mut flops = 0.0;
    let mut act = 0.0;
    let mut reduction = [1usize; 3];
    for s in 0..depth {
        for (r, st) in reduction.iter_mut().zip(net.stride(s)) {
            *r = r.saturating_mul(st);
        }
        let vox = (0..3)
            .map(|a| (patch[a] / reduction[a]).max(1) as f64)
            .product::<f64>()
            * batch as f64;
        let taps = volume(net.kernel(s));
        let ci = if s == 0 { cin as f64 } else { feat(s - 1) };
        let enc = 2.0 * vox * taps * (ci * feat(s) + feat(s) * feat(s));
        // conv outputs and norm outputs are kept for backward
        act += vox * feat(s) * 2.0 * 2.0;
        flops += enc;
        if s + 1 < depth {
            let up = volume(net.stride(s + 1));
            let dec = 2.0 * vox * taps * (2.0 * feat(s) * feat(s) + feat(s) * feat(s))
                + 2.0 * vox * up * feat(s + 1) * feat(s) / up;
            act += vox * feat(s) * 2.0 * 3.0;
            flops += dec;
        }
    }
    let head = 2.0
        * patch.iter().map(|&s| s as f64).product::<f64>()
        * batch as f64
        * feat(0)
        * cout as f64;
    ((flops + head) * 3.0 / 1e9, (act * 4.0) as u64)
}

/// Weights of `net` (two convolutions per stage, transposed-conv upsampling, 1x1x1 heads
/// at every decoder level); norms and biases are left out.
pub fn unet_parameters(net: &UNetConfig) -> f64 {
    let feat = |s: usize| stage_width(net.base_features, net.max_features, s);
    let volume = |v: [usize; 3]| v.iter().product::<usize>() as f64;
    let (cin, cout) = (net.in_channels as f64, net.out_channels as f64);
    let mut n = 0.0;
    for s in 0..net.depth {
        let taps = volume(net.kernel(s));
        let ci = if s == 0 { cin } else { feat(s - 1) };
        n += taps * (ci * feat(s) + feat(s) * feat(s));
        if s + 1 < net.depth {
            n += volume(net.stride(s + 1)) * feat(s + 1) * feat(s)
                + taps * 3.0 * feat(s) * feat(s)
                + feat(s) * cout;
        }
    }
    if net.depth == 1 {
        n += feat(0) * cout;
    }
    n
}

/// Weights of an FCN (3x3x3 convolution blocks per level, one transposed convolution back
/// to full resolution, a 1x1x1 head); norms and biases are left out.
pub fn fcn_parameters(c: &FcnConfig) -> f64 {
    let width = |l: usize| c.features as f64 * 2f64.powi(l as i32);
    let blocks = c.blocks_per_level as f64;
    let mut n = 0.0;
    let mut cin = c.in_channels as f64;
    for l in 0..=c.levels {
        n += 27.0 * (cin * width(l) + (blocks - 1.0) * width(l) * width(l));
        cin = width(l);
    }
    let head_in = if c.levels > 0 {
        n += cin * width(0) * 8f64.powi(c.levels as i32);
        width(0)
    } else {
        cin
    };
    n + head_in * c.out_channels as f64
}

/// Activation bytes (f32) one training step of the FCN `c` keeps for backward, from its
/// layer shapes: at each level, the pooled input (levels after the first; max pooling with
/// "same" padding rounds sizes up), each block's convolution and normalisation outputs (and
/// its dropout output when dropout is on), then the upsampled features and the logits at
/// full resolution.
pub fn fcn_activation_bytes(c: &FcnConfig, patch: [usize; 3], batch: usize) -> u64 {
    let width = |l: usize| c.features as f64 * 2f64.powi(l as i32);
    let per_block = if c.dropout > 0.0 { 3.0 } else { 2.0 };
    let full = patch.iter().map(|&s| s as f64).product::<f64>() * batch as f64;
    let mut dims = patch;
    let mut act = 0.0;
    for l in 0..=c.levels {
        if l > 0 {
            dims = dims.map(|s| s.div_ceil(2));
        }
        let vox = dims.iter().map(|&s| s as f64).product::<f64>() * batch as f64;
        if l > 0 {
            act += vox * width(l - 1);
        }
        act += vox * width(l) * per_block * c.blocks_per_level as f64;
    }
    if c.levels > 0 {
        act += full * width(0);
    }
    act += full * c.out_channels as f64;
    (act * 4.0).min(u64::MAX as f64) as u64
}

/// GFLOP of one FCN training step (forward and the two backward products of every
/// convolution, as [`estimate`] counts the U-Net's): the 3x3x3 blocks of each level, the
/// single transposed convolution back to full resolution and the 1x1x1 head.
pub fn fcn_step_gflop(c: &FcnConfig, patch: [usize; 3], batch: usize) -> f64 {
    let width = |l: usize| c.features as f64 * 2f64.powi(l as i32);
    let full = patch.iter().map(|&s| s as f64).product::<f64>() * batch as f64;
    let mut dims = patch;
    let mut flops = 0.0;
    let mut cin = c.in_channels as f64;
    let mut vox = full;
    for l in 0..=c.levels {
        if l > 0 {
            dims = dims.map(|s| s.div_ceil(2));
        }
        vox = dims.iter().map(|&s| s as f64).product::<f64>() * batch as f64;
        let w = width(l);
        flops += 2.0 * vox * 27.0 * (cin * w + (c.blocks_per_level as f64 - 1.0) * w * w);
        cin = w;
    }
    let head_in = if c.levels > 0 {
        // Kernel = stride = 2^levels: each low-resolution voxel feeds 8^levels outputs.
        flops += 2.0 * vox * cin * width(0) * 8f64.powi(c.levels as i32);
        width(0)
    } else {
        cin
    };
    flops += 2.0 * full * head_in * c.out_channels as f64;
    3.0 * flops / 1e9
}

/// GFLOP of one training step of `spec` and the activation bytes it keeps for backward
/// ([`estimate`] for the U-Net, [`fcn_step_gflop`] and [`fcn_activation_bytes`] for the FCN).
pub fn model_estimate(spec: &ModelSpec, patch: [usize; 3], batch: usize) -> (f64, u64) {
    match spec {
        ModelSpec::Unet(u) => estimate(patch, batch, u),
        ModelSpec::Fcn(f) => (
            fcn_step_gflop(f, patch, batch),
            fcn_activation_bytes(f, patch, batch),
        ),
    }
}

/// Weights of the model `spec` describes, about (see [`unet_parameters`],
/// [`fcn_parameters`]), without building it.
pub fn model_parameters(spec: &ModelSpec) -> f64 {
    match spec {
        ModelSpec::Unet(u) => unet_parameters(u),
        ModelSpec::Fcn(f) => fcn_parameters(f),
    }
}

/// Memory one training step of `spec` holds at its peak, about, in bytes: the activations
/// kept for backward ([`estimate`] for the U-Net, [`fcn_activation_bytes`] for the FCN),
/// the weights with their
/// gradients and `optimizer_slots` state tensors each, and `queued_batches` batches of
/// images and labels in the loader. In f64, saturating at `u64::MAX`.
pub fn step_memory_bytes(
    p: &Plan,
    spec: &ModelSpec,
    optimizer_slots: usize,
    queued_batches: usize,
) -> u64 {
    let cin = spec.in_channels();
    let activations = model_estimate(spec, p.patch, p.batch).1;
    let weights = model_parameters(spec) * 4.0 * (2.0 + optimizer_slots as f64);
    let voxels = p.patch.iter().map(|&s| s as f64).product::<f64>() * p.batch as f64;
    let batches = voxels * (4.0 * cin as f64 + 1.0) * queued_batches as f64;
    (activations as f64 + weights + batches).min(u64::MAX as f64) as u64
}

fn round_down_to(v: usize, m: usize) -> usize {
    (v / m * m).max(m)
}

pub fn plan(data: &DataSummary, device: &PlanDevice) -> Result<Plan> {
    if data.min_shape.contains(&0) {
        return Err(Error::data("plan", "the dataset has an empty case"));
    }
    let (cap, base, max, batch, name) = match device {
        PlanDevice::Gpu { .. } => (128, 32, 320, 2, "gpu"),
        PlanDevice::Cpu { .. } => (64, 8, 64, 2, "cpu"),
    };
    // Start from the median shape (capped), keep the patch inside the smallest case,
    // then shrink the largest axis until the step fits the budget.
    let mut patch = [0; 3];
    for (p, (&median, &min)) in patch
        .iter_mut()
        .zip(data.median_shape.iter().zip(&data.min_shape))
    {
        let want = median.min(cap).min(min);
        *p = if want >= 16 {
            round_down_to(want, 8)
        } else {
            want
        };
    }
    loop {
        let stages = stages_for(patch, data.median_spacing);
        let net = UNetConfig {
            base_features: base,
            max_features: max,
            ..UNetConfig::nnunet(data.in_channels, data.out_channels)
        }
        .with_stages(&stages);
        let (gflop, bytes) = estimate(patch, batch, &net);
        let fits = match device {
            PlanDevice::Cpu { step_gflop_budget } => gflop <= *step_gflop_budget,
            PlanDevice::Gpu {
                free_bytes,
                packed_bytes,
            } => gpu_step_peak_bytes(bytes, *packed_bytes) <= GPU_PEAK_SHARE * *free_bytes as f64,
        };
        let largest = (0..3).max_by_key(|&a| patch[a]).unwrap_or(0);
        if fits || patch[largest] <= 16 {
            return Ok(Plan {
                patch,
                batch,
                base_features: base,
                max_features: max,
                depth: net.depth,
                strides: net.strides,
                kernels: net.kernels,
                step_gflop: gflop,
                activation_bytes: bytes,
                device: name.to_string(),
            });
        }
        patch[largest] -= 8;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn brats_like() -> DataSummary {
        DataSummary {
            median_shape: [140, 170, 138],
            min_shape: [120, 150, 120],
            median_spacing: [1.0; 3],
            in_channels: 4,
            out_channels: 3,
        }
    }

    #[test]
    fn gpu_with_room_gets_nnunet_settings() {
        let full = DataSummary {
            min_shape: [130, 150, 130],
            ..brats_like()
        };
        let p = plan(
            &full,
            &PlanDevice::Gpu {
                free_bytes: 80 << 30,
                packed_bytes: 2,
            },
        )
        .unwrap();
        assert_eq!(
            (p.patch, p.batch, p.base_features, p.max_features, p.depth),
            ([128, 128, 128], 2, 32, 320, 6)
        );
        // A smallest case of 120 voxels caps the patch; halving rounds up, as the strided
        // convolutions do (120, 60, 30, 15, 8, 4), so it keeps 6 stages, as nnU-Net plans.
        let p = plan(
            &brats_like(),
            &PlanDevice::Gpu {
                free_bytes: 80 << 30,
                packed_bytes: 2,
            },
        )
        .unwrap();
        assert_eq!((p.patch, p.depth), ([120, 128, 120], 6));
    }

    /// The pool peaks measured for the BraTS step (BENCHMARKS.md, `pool_peak_bytes` of
    /// `unet_step` with the default kernels: fp32 on an H100, 2026-11-26; bf16 and tf32 on
    /// an H200, 2026-11-28) are below the model, by at most 3%.
    #[test]
    fn gpu_peak_model_covers_the_measured_pool_peaks() {
        let net = UNetConfig {
            base_features: 32,
            max_features: 320,
            ..UNetConfig::nnunet(4, 3)
        }
        .with_stages(&stages_for([128; 3], [1.0; 3]));
        let (_, bytes) = estimate([128; 3], 2, &net);
        for (packed_bytes, measured) in [
            (0, 8_778_835_456u64),
            (2, 9_438_812_672),
            (4, 12_049_586_688),
        ] {
            let model = gpu_step_peak_bytes(bytes, packed_bytes);
            assert!(
                model >= measured as f64 && model <= 1.03 * measured as f64,
                "{packed_bytes} bytes per packed element: model {model}, measured {measured}"
            );
        }
    }

    #[test]
    fn small_gpu_and_cpu_get_smaller_patches_within_budget() {
        let small = plan(
            &brats_like(),
            &PlanDevice::Gpu {
                free_bytes: 2 << 30,
                packed_bytes: 2,
            },
        )
        .unwrap();
        assert!(small.patch.iter().product::<usize>() < 120 * 128 * 120);
        assert!(
            gpu_step_peak_bytes(small.activation_bytes, 2) <= GPU_PEAK_SHARE * (2u64 << 30) as f64
        );
        let cpu = plan(
            &brats_like(),
            &PlanDevice::Cpu {
                step_gflop_budget: 20.0,
            },
        )
        .unwrap();
        assert!(cpu.step_gflop <= 20.0 && cpu.base_features == 8, "{cpu:?}");
    }

    #[test]
    fn parameter_estimate_is_close_to_the_built_unet() {
        use crate::nn::{Model, ModelSpec};
        let thin = stages_for([1, 32, 32], [1.0; 3]);
        let coarse_z = stages_for([10, 32, 32], [5.0, 1.0, 1.0]);
        for (base, max, stages) in [
            (4, 8, Stages::isotropic(1)),
            (4, 16, Stages::isotropic(3)),
            (8, 32, Stages::isotropic(4)),
            (4, 16, thin),
            (8, 32, coarse_z),
        ] {
            let net = UNetConfig {
                base_features: base,
                max_features: max,
                ..UNetConfig::nnunet(4, 3)
            }
            .with_stages(&stages);
            let depth = net.depth;
            let estimated = unet_parameters(&net);
            let built = Model::new(&crate::backend::cpu::Cpu::new(), &ModelSpec::Unet(net), 1)
                .unwrap()
                .parameter_count() as f64;
            // Norm scales, biases and the deepest auxiliary head are left out.
            assert!(
                (estimated - built).abs() <= 0.05 * built,
                "{base}/{max}/{depth}: estimated {estimated}, built {built}"
            );
        }
        assert_eq!(min_patch_for_depth(2, [1.0; 3]), [8; 3]);
        assert_eq!(stages_for([16; 3], [1.0; 3]).depth(), 3);
        assert_eq!(min_patch_for_depth(3, [1.0; 3]), [16; 3]);
    }

    #[test]
    fn fcn_step_gflop_counts_every_convolution_three_times() {
        use crate::nn::layers::{Activation, NormKind};
        use crate::nn::Init;
        let fcn = |levels, features, cin| FcnConfig {
            in_channels: cin,
            out_channels: if levels == 0 { 2 } else { 1 },
            features,
            levels,
            blocks_per_level: 1,
            norm: NormKind::Instance,
            activation: Activation::Relu,
            dropout: 0.0,
            init: Init::HeNormal,
        };
        // 4^3 voxels, 2 -> 3 channels, 3x3x3; a 1x1x1 head 3 -> 2.
        let flat = 2.0 * 64.0 * 27.0 * 6.0 + 2.0 * 64.0 * 3.0 * 2.0;
        assert!((fcn_step_gflop(&fcn(0, 3, 2), [4; 3], 1) - 3.0 * flat / 1e9).abs() < 1e-15);
        // One level: 1 -> 2 at 4^3, 2 -> 4 at 2^3, a 4 -> 2 transposed conv of kernel 2
        // (8 outputs per input voxel), a 2 -> 1 head.
        let pooled = 2.0 * 64.0 * 27.0 * 2.0
            + 2.0 * 8.0 * 27.0 * 8.0
            + 2.0 * 8.0 * 4.0 * 2.0 * 8.0
            + 2.0 * 64.0 * 2.0;
        assert!((fcn_step_gflop(&fcn(1, 2, 1), [4; 3], 1) - 3.0 * pooled / 1e9).abs() < 1e-15);
    }

    #[test]
    fn fcn_parameters_match_the_built_fcn_and_huge_widths_saturate() {
        use crate::nn::fcn::FcnConfig;
        use crate::nn::{Model, ModelSpec};
        for levels in [0, 2] {
            let spec = ModelSpec::Fcn(FcnConfig::of_sizes([4, 3], 4, levels, 2));
            let built = Model::new(&crate::backend::cpu::Cpu::new(), &spec, 1)
                .unwrap()
                .parameter_count() as f64;
            let estimated = model_parameters(&spec);
            // Norm scales and biases are left out.
            assert!(
                (estimated - built).abs() <= 0.05 * built,
                "levels {levels}: estimated {estimated}, built {built}"
            );
        }
        let huge = 10_000_000_000;
        let p = Plan::of_sizes([16; 3], 2, [huge, huge], 5);
        let spec = ModelSpec::Unet(crate::nn::unet::UNetConfig {
            base_features: huge,
            max_features: huge,
            depth: 5,
            ..crate::nn::unet::UNetConfig::nnunet(4, 3)
        });
        assert_eq!(step_memory_bytes(&p, &spec, 2, 7), u64::MAX);
    }

    #[test]
    fn patch_never_exceeds_the_smallest_case() {
        let d = DataSummary {
            median_shape: [40, 50, 60],
            min_shape: [30, 50, 20],
            median_spacing: [1.0; 3],
            in_channels: 1,
            out_channels: 1,
        };
        let p = plan(
            &d,
            &PlanDevice::Gpu {
                free_bytes: 80 << 30,
                packed_bytes: 2,
            },
        )
        .unwrap();
        assert!(
            p.patch[0] <= 30 && p.patch[1] <= 50 && p.patch[2] <= 20,
            "{p:?}"
        );
        assert_eq!(stages_for(p.patch, d.median_spacing).depth(), p.depth);
    }

    fn cpu() -> PlanDevice {
        PlanDevice::Cpu {
            step_gflop_budget: 24.0,
        }
    }

    #[test]
    fn coarse_z_is_kept_at_the_first_stages_and_pooled_once_comparable() {
        // 32x32x10 voxels of 1x1x5 mm: halving x and y twice brings them to 4 mm, within 2x
        // of z's 5 mm, so z is pooled from the third downsampling on.
        let d = DataSummary {
            median_shape: [10, 32, 32],
            min_shape: [10, 32, 32],
            median_spacing: [5.0, 1.0, 1.0],
            in_channels: 1,
            out_channels: 2,
        };
        let p = plan(&d, &cpu()).unwrap();
        assert_eq!(p.patch, [10, 32, 32]);
        assert_eq!(p.depth, 4);
        assert_eq!(p.strides, [[1, 1, 1], [1, 2, 2], [1, 2, 2], [2, 2, 2]]);
        assert_eq!(p.kernels, [[1, 3, 3], [1, 3, 3], [3, 3, 3], [3, 3, 3]]);
        assert_eq!(p.unet(1, 2).stages(), p.stages());
        // The smallest patch for 4 stages at this spacing: z is pooled once.
        assert_eq!(min_patch_for_depth(4, d.median_spacing), [8, 32, 32]);
        assert_eq!(stages_for([8, 32, 32], d.median_spacing).depth(), 4);
    }

    #[test]
    fn a_single_slice_plans_a_2d_network() {
        for spacing in [[1.0; 3], [5.0, 0.8, 0.8]] {
            let d = DataSummary {
                median_shape: [1, 32, 32],
                min_shape: [1, 32, 32],
                median_spacing: spacing,
                in_channels: 1,
                out_channels: 2,
            };
            let p = plan(&d, &cpu()).unwrap();
            assert_eq!((p.patch, p.depth), ([1, 32, 32], 4), "{spacing:?}");
            assert_eq!(p.strides, [[1, 1, 1], [1, 2, 2], [1, 2, 2], [1, 2, 2]]);
            assert_eq!(p.kernels, [[1, 3, 3]; 4]);
        }
        // A lone axis is pooled only while it has 12 voxels (nnU-Net's rule).
        assert_eq!(
            stages_for([1, 1, 24], [1.0; 3]).strides,
            [[1, 1, 1], [1, 1, 2], [1, 1, 2]]
        );
        assert_eq!(stages_for([1, 1, 11], [1.0; 3]).depth(), 1);
    }

    /// The planner before per-axis pooling: every axis halved together while the smallest
    /// keeps 4 voxels.
    /// Stages of isotropic data: one more while the smallest side has 8 voxels to halve
    /// (rounding up), at most 6.
    fn isotropic_depth(patch: [usize; 3]) -> usize {
        let mut side = *patch.iter().min().unwrap();
        let mut depth = 1;
        while depth < MAX_STAGES && side >= 2 * MIN_EDGE {
            side = side.div_ceil(2);
            depth += 1;
        }
        depth
    }

    #[test]
    fn isotropic_data_plans_an_isotropic_network() {
        let mut devices = vec![cpu()];
        devices.extend((0..8).map(|t| PlanDevice::Cpu {
            step_gflop_budget: 12.0 * (1 << t) as f64,
        }));
        devices.extend((0..8).map(|g| PlanDevice::Gpu {
            free_bytes: (1u64 << g) << 30,
            packed_bytes: [0, 2, 4][g % 3],
        }));
        let shapes = [
            brats_like(),
            DataSummary {
                min_shape: [130, 150, 130],
                ..brats_like()
            },
            DataSummary {
                median_shape: [24, 24, 24],
                min_shape: [20, 24, 22],
                ..brats_like()
            },
        ];
        for d in &shapes {
            for device in &devices {
                let p = plan(d, device).unwrap();
                assert_eq!(p.stages(), Stages::isotropic(p.depth), "{device:?}: {p:?}");
                assert!(p.strides.is_empty() && p.kernels.is_empty());
                assert_eq!(p.depth, isotropic_depth(p.patch), "{device:?}: {p:?}");
            }
        }
        // Every cubic patch too (but a single voxel, whose kernels are now 1x1x1), and the
        // estimate of an isotropic network is unchanged.
        for side in 2..=160 {
            let stages = stages_for([side; 3], [1.0; 3]);
            assert_eq!(
                stages,
                Stages::isotropic(isotropic_depth([side; 3])),
                "{side}"
            );
        }
        let net = UNetConfig {
            base_features: 32,
            max_features: 320,
            ..UNetConfig::nnunet(4, 3)
        };
        let (gflop, bytes) = estimate([128; 3], 2, &net);
        // The values of the isotropic-only estimate this one replaced, to the last bit.
        assert_eq!((gflop, bytes), (5792.814071808, 7_144_079_360));
    }

    /// `stages_for` against nnU-Net v2's `get_pool_and_conv_props` on 165 spacings and
    /// patches (tests/fixtures/plan_reference.json, from scripts/plan_reference.py): the same
    /// strides and kernels, except where voxseg stops at 6 stages (the 6th then being the
    /// deepest, kernel 3 everywhere) and on an axis of one voxel (kernel 1: 3 reads padding).
    #[test]
    fn stages_are_nnunets() {
        #[derive(serde::Deserialize)]
        struct Case {
            spacing: [f64; 3],
            patch: [usize; 3],
            strides: Vec<[usize; 3]>,
            kernels: Vec<[usize; 3]>,
        }
        #[derive(serde::Deserialize)]
        struct Fixture {
            cases: Vec<Case>,
        }
        let fixture: Fixture =
            serde_json::from_str(include_str!("../../tests/fixtures/plan_reference.json")).unwrap();
        assert_eq!(fixture.cases.len(), 165);
        let mut capped = 0;
        for c in &fixture.cases {
            let ours = stages_for(c.patch, c.spacing);
            let depth = c.strides.len().min(MAX_STAGES);
            let mut want = Stages {
                strides: c.strides[..depth].to_vec(),
                kernels: c.kernels[..depth].to_vec(),
            };
            if c.strides.len() > MAX_STAGES {
                want.kernels[depth - 1] = [3; 3];
                capped += 1;
            }
            for k in &mut want.kernels {
                for (k, &side) in k.iter_mut().zip(&c.patch) {
                    if side == 1 {
                        *k = 1;
                    }
                }
            }
            assert_eq!(ours, want, "spacing {:?}, patch {:?}", c.spacing, c.patch);
        }
        // The cap and the single-voxel axis are both exercised.
        assert!(capped >= 5, "{capped}");
        assert!(fixture.cases.iter().any(|c| c.patch.contains(&1)));
    }
}
