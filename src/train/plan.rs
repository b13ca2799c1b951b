//! Planning, like nnU-Net: from the dataset's median cropped shape and the device, choose
//! the patch, batch and network width so that a user need not know what fits.
use crate::error::{Error, Result};
use crate::nn::fcn::FcnConfig;
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
    /// A GPU with this much free memory (bytes).
    Gpu { free_bytes: u64 },
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Plan {
    pub patch: [usize; 3],
    pub batch: usize,
    pub base_features: usize,
    pub max_features: usize,
    /// Resolution stages of the U-Net.
    pub depth: usize,
    /// Estimated cost of one training step (forward + backward), GFLOP.
    pub step_gflop: f64,
    /// Estimated activation memory of one training step, bytes.
    pub activation_bytes: u64,
    pub device: String,
}

/// Stages such that the bottleneck keeps at least 4 voxels per axis (nnU-Net's rule), at most 6.
pub fn depth_for(patch: [usize; 3]) -> usize {
    let smallest = *patch.iter().min().unwrap_or(&1);
    let mut depth = 1;
    while depth < 6 && smallest >> depth >= 4 {
        depth += 1;
    }
    depth
}

/// Width of stage `s`: `base` doubled `s` times, at most `max`; in f64 so that no width
/// (an absurd `--features` included) can overflow.
fn stage_width(base: usize, max: usize, s: usize) -> f64 {
    (base as f64 * 2f64.powi(s as i32)).min(max as f64)
}

/// FLOPs and activation bytes of one training step of the default U-Net (two 3x3x3 convs
/// per stage, transposed-conv upsampling); backward costs about twice the forward.
pub fn estimate(
    patch: [usize; 3],
    batch: usize,
    base: usize,
    max: usize,
    depth: usize,
    cin: usize,
    cout: usize,
) -> (f64, u64) {
    let feat = |s: usize| stage_width(base, max, s);
    let mut flops = 0.0;
    let mut act = 0.0;
    for s in 0..depth {
        let vox = patch
            .iter()
            .map(|&p| (p >> s).max(1) as f64)
            .product::<f64>()
            * batch as f64;
        let ci = if s == 0 { cin as f64 } else { feat(s - 1) };
        let enc = 2.0 * vox * 27.0 * (ci * feat(s) + feat(s) * feat(s));
        // conv outputs and norm outputs are kept for backward
        act += vox * feat(s) * 2.0 * 2.0;
        flops += enc;
        if s + 1 < depth {
            let dec = 2.0 * vox * 27.0 * (2.0 * feat(s) * feat(s) + feat(s) * feat(s))
                + 2.0 * vox * 8.0 * feat(s + 1) * feat(s) / 8.0;
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

/// The smallest patch side that allows `depth` stages under [`depth_for`]'s rule.
pub fn min_side_for_depth(depth: usize) -> usize {
    4 << depth.saturating_sub(1)
}

/// Weights of the default U-Net (two 3x3x3 convolutions per stage, transposed-conv
/// upsampling, 1x1x1 heads at every decoder level); norms and biases are left out.
pub fn unet_parameters(base: usize, max: usize, depth: usize, cin: usize, cout: usize) -> f64 {
    let feat = |s: usize| stage_width(base, max, s);
    let (cin, cout) = (cin as f64, cout as f64);
    let mut n = 0.0;
    for s in 0..depth {
        let ci = if s == 0 { cin } else { feat(s - 1) };
        n += 27.0 * (ci * feat(s) + feat(s) * feat(s));
        if s + 1 < depth {
            n += 8.0 * feat(s + 1) * feat(s) + 27.0 * 3.0 * feat(s) * feat(s) + feat(s) * cout;
        }
    }
    if depth == 1 {
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

/// Weights of the model `spec` describes, about (see [`unet_parameters`],
/// [`fcn_parameters`]), without building it.
pub fn model_parameters(spec: &ModelSpec) -> f64 {
    match spec {
        ModelSpec::Unet(u) => unet_parameters(
            u.base_features,
            u.max_features,
            u.depth,
            u.in_channels,
            u.out_channels,
        ),
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
    let (cin, cout) = (spec.in_channels(), spec.out_channels());
    let activations = match spec {
        ModelSpec::Unet(_) => {
            estimate(
                p.patch,
                p.batch,
                p.base_features,
                p.max_features,
                p.depth,
                cin,
                cout,
            )
            .1
        }
        ModelSpec::Fcn(f) => fcn_activation_bytes(f, p.patch, p.batch),
    };
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
        let depth = depth_for(patch);
        let (gflop, bytes) = estimate(
            patch,
            batch,
            base,
            max,
            depth,
            data.in_channels,
            data.out_channels,
        );
        let fits = match device {
            PlanDevice::Cpu { step_gflop_budget } => gflop <= *step_gflop_budget,
            // Workspace, weights, optimiser state and the pool's slack: keep activations under 60%.
            PlanDevice::Gpu { free_bytes } => (bytes as f64) <= 0.6 * *free_bytes as f64,
        };
        let largest = (0..3).max_by_key(|&a| patch[a]).unwrap_or(0);
        if fits || patch[largest] <= 16 {
            return Ok(Plan {
                patch,
                batch,
                base_features: base,
                max_features: max,
                depth,
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
            },
        )
        .unwrap();
        assert_eq!(
            (p.patch, p.batch, p.base_features, p.max_features, p.depth),
            ([128, 128, 128], 2, 32, 320, 6)
        );
        // A smallest case of 120 voxels caps the patch, and 120 / 2^5 < 4 leaves 5 stages.
        let p = plan(
            &brats_like(),
            &PlanDevice::Gpu {
                free_bytes: 80 << 30,
            },
        )
        .unwrap();
        assert_eq!((p.patch, p.depth), ([120, 128, 120], 5));
    }

    #[test]
    fn small_gpu_and_cpu_get_smaller_patches_within_budget() {
        let small = plan(
            &brats_like(),
            &PlanDevice::Gpu {
                free_bytes: 2 << 30,
            },
        )
        .unwrap();
        assert!(small.patch.iter().product::<usize>() < 120 * 128 * 120);
        assert!(small.activation_bytes as f64 <= 0.6 * (2u64 << 30) as f64);
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
        use crate::nn::unet::UNetConfig;
        use crate::nn::{Model, ModelSpec};
        for (base, max, depth) in [(4, 8, 1), (4, 16, 3), (8, 32, 4)] {
            let spec = ModelSpec::Unet(UNetConfig {
                in_channels: 4,
                out_channels: 3,
                base_features: base,
                max_features: max,
                depth,
                ..UNetConfig::nnunet(4, 3)
            });
            let built = Model::new(&crate::backend::cpu::Cpu::new(), &spec, 1)
                .unwrap()
                .parameter_count() as f64;
            let estimated = unet_parameters(base, max, depth, 4, 3);
            // Norm scales, biases and the deepest auxiliary head are left out.
            assert!(
                (estimated - built).abs() <= 0.05 * built,
                "{base}/{max}/{depth}: estimated {estimated}, built {built}"
            );
        }
        assert_eq!(min_side_for_depth(1), 4);
        assert_eq!(depth_for([16; 3]), 3);
        assert_eq!(min_side_for_depth(3), 16);
    }

    #[test]
    fn fcn_parameters_match_the_built_fcn_and_huge_widths_saturate() {
        use crate::nn::fcn::FcnConfig;
        use crate::nn::layers::{Activation, NormKind};
        use crate::nn::{Init, Model, ModelSpec};
        for levels in [0, 2] {
            let spec = ModelSpec::Fcn(FcnConfig {
                in_channels: 4,
                out_channels: 3,
                features: 4,
                levels,
                blocks_per_level: 2,
                norm: NormKind::Instance,
                activation: Activation::LeakyRelu { slope: 0.01 },
                dropout: 0.0,
                init: Init::HeNormal,
            });
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
        let p = Plan {
            patch: [16; 3],
            batch: 2,
            base_features: huge,
            max_features: huge,
            depth: 5,
            step_gflop: 0.0,
            activation_bytes: 0,
            device: "cpu".into(),
        };
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
            },
        )
        .unwrap();
        assert!(
            p.patch[0] <= 30 && p.patch[1] <= 50 && p.patch[2] <= 20,
            "{p:?}"
        );
        assert_eq!(depth_for(p.patch), p.depth);
    }
}
