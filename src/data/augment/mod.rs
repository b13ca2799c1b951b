//! Data augmentation for training patches. `AugmentSpec` says which transforms may happen and
//! how likely each is (nnU-Net's defaults, or `none()`); `AugmentSpec::draw` turns a seeded
//! generator into an `AugmentPlan`: one spatial map (applied while the patch is extracted, see
//! `spatial`) and a list of intensity changes applied afterwards, in nnU-Net's order (noise,
//! blur, brightness, contrast, low resolution, inverted gamma, gamma).
//!
//! A patch much shorter along one axis than along the others (anisotropic data: a few thick
//! slices) is augmented in-plane, as nnU-Net's "dummy 2D" augmentation does: rotation only
//! about that axis (up to +-180 degrees by default), scaling only across it, and simulated low
//! resolution leaving it alone.
pub mod intensity;
#[cfg(test)]
mod nnunet_reference_tests;
pub mod spatial;

pub use spatial::{elastic_field, extract, Displacement, GridView, SpatialTransform};

use crate::error::{Error, Result};
use crate::rng::Rng;
use serde::{Deserialize, Serialize};

/// A patch whose longest side is more than this many times its shortest is augmented
/// in-plane (nnU-Net's threshold).
pub const ANISOTROPY_THRESHOLD: f64 = 3.0;

/// The axis of `patch` (x, y, z) across which it is augmented in-plane: its shortest, when
/// both other sides are more than ANISOTROPY_THRESHOLD times longer (a slab of few slices);
/// None for patches closer to a cube, and for pencils, which have no plane to rotate in.
pub fn slice_axis(patch: [usize; 3]) -> Option<usize> {
    let (axis, &shortest) = patch.iter().enumerate().min_by_key(|&(_, &d)| d)?;
    let slab = (0..3)
        .filter(|&a| a != axis)
        .all(|a| patch[a] as f64 > ANISOTROPY_THRESHOLD * shortest as f64);
    slab.then_some(axis)
}

/// A transform that happens with probability `p` and draws a factor uniformly from `range`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct RangeChance {
    pub p: f64,
    pub range: [f64; 2],
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Rotation {
    pub p: f64,
    /// Angles about x, y and z, each uniform in +-`max_degrees`.
    pub max_degrees: f64,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Translation {
    pub p: f64,
    /// Whole-voxel shift per axis, uniform in +-`max_voxels`.
    pub max_voxels: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Elastic {
    pub p: f64,
    /// Distance between the control points of the random field, in voxels.
    pub control_spacing: f64,
    /// Standard deviation of the control-point displacements, in voxels.
    pub magnitude: f64,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Noise {
    pub p: f64,
    /// The noise's standard deviation is uniform in [0, max_variance], the same for all
    /// channels: named after nnU-Net's `noise_variance`, whose draw it too uses as the std.
    pub max_variance: f64,
}

/// A per-channel transform: happens to a sample with `p`, then to each channel with
/// `p_per_channel`, with its own factor from `range`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChannelChance {
    pub p: f64,
    pub p_per_channel: f64,
    pub range: [f64; 2],
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Gamma {
    pub p: f64,
    pub p_inverted: f64,
    /// Half the draws take gamma below 1 (from range[0] to 1), half above (1 to range[1]).
    pub range: [f64; 2],
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AugmentSpec {
    /// Probability of mirroring each axis.
    pub mirror_p: f64,
    pub rotation: Rotation,
    /// The rotation of a patch augmented in-plane (see `slice_axis`): about its slice axis
    /// only. None augments every patch in 3D (as configurations from before it did, which
    /// read as None).
    #[serde(default)]
    pub in_plane_rotation: Option<Rotation>,
    /// Isotropic scale of the sampled region (above 1 samples a larger region); in-plane
    /// patches are not scaled across their slice axis.
    pub scaling: RangeChance,
    pub translation: Translation,
    pub elastic: Elastic,
    pub noise: Noise,
    /// Sigma in voxels, drawn per channel and axis.
    pub blur: ChannelChance,
    pub brightness: ChannelChance,
    pub contrast: ChannelChance,
    /// Zoom factor of the simulated coarse scan.
    pub low_res: ChannelChance,
    pub gamma: Gamma,
}

impl Default for AugmentSpec {
    /// nnU-Net's 3D defaults.
    fn default() -> Self {
        Self {
            mirror_p: 0.5,
            rotation: Rotation {
                p: 0.2,
                max_degrees: 30.0,
            },
            in_plane_rotation: Some(Rotation {
                p: 0.2,
                max_degrees: 180.0,
            }),
            scaling: RangeChance {
                p: 0.2,
                range: [0.7, 1.4],
            },
            translation: Translation {
                p: 0.0,
                max_voxels: 0,
            },
            elastic: Elastic {
                p: 0.0,
                control_spacing: 24.0,
                magnitude: 2.0,
            },
            noise: Noise {
                p: 0.1,
                max_variance: 0.1,
            },
            blur: ChannelChance {
                p: 0.2,
                p_per_channel: 0.5,
                range: [0.5, 1.0],
            },
            brightness: ChannelChance {
                p: 0.15,
                p_per_channel: 1.0,
                range: [0.75, 1.25],
            },
            contrast: ChannelChance {
                p: 0.15,
                p_per_channel: 1.0,
                range: [0.75, 1.25],
            },
            low_res: ChannelChance {
                p: 0.25,
                p_per_channel: 0.5,
                range: [0.5, 1.0],
            },
            gamma: Gamma {
                p: 0.3,
                p_inverted: 0.1,
                range: [0.7, 1.5],
            },
        }
    }
}

/// One intensity change to one channel of a patch.
#[derive(Clone, Debug, PartialEq)]
pub enum IntensityOp {
    Noise {
        channel: usize,
        std: f32,
        seed: u64,
    },
    Blur {
        channel: usize,
        sigma: [f64; 3],
    },
    Brightness {
        channel: usize,
        factor: f32,
    },
    Contrast {
        channel: usize,
        factor: f32,
    },
    LowRes {
        channel: usize,
        zoom: f64,
        /// The slice axis of an in-plane patch, left at its resolution.
        keep: Option<usize>,
    },
    Gamma {
        channel: usize,
        gamma: f64,
        inverted: bool,
    },
}

/// Everything drawn for one sample.
#[derive(Clone, Debug, PartialEq)]
pub struct AugmentPlan {
    pub spatial: SpatialTransform,
    pub intensity: Vec<IntensityOp>,
}

impl AugmentSpec {
    /// No augmentation at all.
    pub fn none() -> Self {
        let off = ChannelChance {
            p: 0.0,
            p_per_channel: 0.0,
            range: [1.0, 1.0],
        };
        Self {
            mirror_p: 0.0,
            rotation: Rotation {
                p: 0.0,
                max_degrees: 0.0,
            },
            in_plane_rotation: None,
            scaling: RangeChance {
                p: 0.0,
                range: [1.0, 1.0],
            },
            translation: Translation {
                p: 0.0,
                max_voxels: 0,
            },
            elastic: Elastic {
                p: 0.0,
                control_spacing: 24.0,
                magnitude: 0.0,
            },
            noise: Noise {
                p: 0.0,
                max_variance: 0.0,
            },
            blur: off,
            brightness: off,
            contrast: off,
            low_res: off,
            gamma: Gamma {
                p: 0.0,
                p_inverted: 0.0,
                range: [1.0, 1.0],
            },
        }
    }

    /// Fails, naming the field, on a value the transforms cannot use: a probability outside
    /// [0, 1], a range whose ends are reversed, not finite, or outside what its transform
    /// takes (a configuration file sets every field; the defaults pass).
    pub fn validate(&self) -> Result<()> {
        let bad = |field: &str, msg: String| Err(Error::config(format!("augment.{field}"), msg));
        let mut chances = vec![
            ("mirror_p", self.mirror_p),
            ("rotation.p", self.rotation.p),
            ("scaling.p", self.scaling.p),
            ("translation.p", self.translation.p),
            ("elastic.p", self.elastic.p),
            ("noise.p", self.noise.p),
            ("blur.p", self.blur.p),
            ("blur.p_per_channel", self.blur.p_per_channel),
            ("brightness.p", self.brightness.p),
            ("brightness.p_per_channel", self.brightness.p_per_channel),
            ("contrast.p", self.contrast.p),
            ("contrast.p_per_channel", self.contrast.p_per_channel),
            ("low_res.p", self.low_res.p),
            ("low_res.p_per_channel", self.low_res.p_per_channel),
            ("gamma.p", self.gamma.p),
            ("gamma.p_inverted", self.gamma.p_inverted),
        ];
        if let Some(r) = self.in_plane_rotation {
            chances.push(("in_plane_rotation.p", r.p));
        }
        for (field, p) in chances {
            if !(0.0..=1.0).contains(&p) {
                return bad(field, format!("{p} is not a probability in [0, 1]"));
            }
        }
        let mut amounts = vec![
            ("rotation.max_degrees", self.rotation.max_degrees),
            ("elastic.magnitude", self.elastic.magnitude),
            ("noise.max_variance", self.noise.max_variance),
        ];
        if let Some(r) = self.in_plane_rotation {
            amounts.push(("in_plane_rotation.max_degrees", r.max_degrees));
        }
        for (field, v) in amounts {
            if !(v >= 0.0 && v.is_finite()) {
                return bad(field, format!("{v} must be a finite number >= 0"));
            }
        }
        let spacing = self.elastic.control_spacing;
        if !(spacing > 0.0 && spacing.is_finite()) {
            return bad(
                "elastic.control_spacing",
                format!("{spacing} must be a positive number of voxels"),
            );
        }
        // A range's ends must be finite, in order, and each one its transform can take.
        let range = |field: &str, [lo, hi]: [f64; 2], allowed: fn(f64) -> bool, words: &str| {
            if lo.is_finite() && hi.is_finite() && lo <= hi && allowed(lo) && allowed(hi) {
                Ok(())
            } else {
                bad(
                    field,
                    format!("[{lo}, {hi}] must be finite, low to high, and {words}"),
                )
            }
        };
        range("scaling.range", self.scaling.range, |v| v > 0.0, "above 0")?;
        range("blur.range", self.blur.range, |v| v >= 0.0, "at least 0")?;
        range(
            "brightness.range",
            self.brightness.range,
            |v| v >= 0.0,
            "at least 0",
        )?;
        range(
            "contrast.range",
            self.contrast.range,
            |v| v >= 0.0,
            "at least 0",
        )?;
        range(
            "low_res.range",
            self.low_res.range,
            |v| v > 0.0 && v <= 1.0,
            "in (0, 1]",
        )?;
        let [lo, hi] = self.gamma.range;
        if !(lo > 0.0 && lo <= 1.0 && hi >= 1.0 && hi.is_finite()) {
            return bad(
                "gamma.range",
                format!(
                    "[{lo}, {hi}] must run from a gamma in (0, 1] to one of at least 1 \
                     (half the draws fall below 1, half above)"
                ),
            );
        }
        Ok(())
    }

    /// Draws the plan for one sample of `channels` channels and patch size `patch` (x, y, z),
    /// in a fixed order from `rng`, so the same generator state gives the same plan.
    pub fn draw(&self, patch: [usize; 3], channels: usize, rng: &mut Rng) -> AugmentPlan {
        // In-plane patches draw the same numbers from `rng`, so a cube-like patch's plan does
        // not depend on this branch.
        let slice = self.in_plane_rotation.and_then(|_| slice_axis(patch));
        let across = |axis: usize| slice.is_none_or(|s| s != axis);
        let mirror = [0, 1, 2].map(|_| rng.bernoulli(self.mirror_p));
        let rotation = match (slice, self.in_plane_rotation) {
            (Some(_), Some(in_plane)) => in_plane,
            _ => self.rotation,
        };
        let rotate = rng.bernoulli(rotation.p);
        let max = rotation.max_degrees.to_radians();
        let angles = [0, 1, 2].map(|_| rng.uniform_range(-max, max));
        let angles = match slice {
            _ if !rotate => [0.0; 3],
            Some(axis) => [0, 1, 2].map(|a| if a == axis { angles[a] } else { 0.0 }),
            None => angles,
        };
        let scale = draw_factor(self.scaling.p, self.scaling.range, rng).unwrap_or(1.0);
        let scale = [0, 1, 2].map(|a| if across(a) { scale } else { 1.0 });
        let shift = if rng.bernoulli(self.translation.p) {
            let m = self.translation.max_voxels;
            [0, 1, 2].map(|_| rng.below(2 * m + 1) as f64 - m as f64)
        } else {
            [0.0; 3]
        };
        let mut spatial = SpatialTransform::compose(mirror, scale, angles, shift);
        if rng.bernoulli(self.elastic.p) {
            let e = &self.elastic;
            spatial.displacement = Some(elastic_field(patch, e.control_spacing, e.magnitude, rng));
        }

        let mut ops = Vec::new();
        if rng.bernoulli(self.noise.p) {
            let std = rng.uniform_range(0.0, self.noise.max_variance) as f32;
            ops.extend((0..channels).map(|channel| IntensityOp::Noise {
                channel,
                std,
                seed: rng.next_u64(),
            }));
        }
        ops.extend(draw_per_channel(
            &self.blur,
            channels,
            rng,
            |channel, [lo, hi], r| IntensityOp::Blur {
                channel,
                sigma: [0, 1, 2].map(|_| r.uniform_range(lo, hi)),
            },
        ));
        ops.extend(draw_per_channel(
            &self.brightness,
            channels,
            rng,
            |channel, [lo, hi], r| IntensityOp::Brightness {
                channel,
                factor: r.uniform_range(lo, hi) as f32,
            },
        ));
        ops.extend(draw_per_channel(
            &self.contrast,
            channels,
            rng,
            |channel, [lo, hi], r| IntensityOp::Contrast {
                channel,
                factor: r.uniform_range(lo, hi) as f32,
            },
        ));
        ops.extend(draw_per_channel(
            &self.low_res,
            channels,
            rng,
            |channel, [lo, hi], r| IntensityOp::LowRes {
                channel,
                zoom: r.uniform_range(lo, hi),
                keep: slice,
            },
        ));
        for (p, inverted) in [(self.gamma.p_inverted, true), (self.gamma.p, false)] {
            if rng.bernoulli(p) {
                for channel in 0..channels {
                    let gamma = draw_gamma(self.gamma.range, rng);
                    ops.push(IntensityOp::Gamma {
                        channel,
                        gamma,
                        inverted,
                    });
                }
            }
        }
        AugmentPlan {
            spatial,
            intensity: ops,
        }
    }
}

/// The ops of a per-channel transform: none unless the sample is hit, then one per channel hit.
fn draw_per_channel(
    spec: &ChannelChance,
    channels: usize,
    rng: &mut Rng,
    make: impl Fn(usize, [f64; 2], &mut Rng) -> IntensityOp,
) -> Vec<IntensityOp> {
    let mut ops = Vec::new();
    if rng.bernoulli(spec.p) {
        for channel in 0..channels {
            if rng.bernoulli(spec.p_per_channel) {
                ops.push(make(channel, spec.range, rng));
            }
        }
    }
    ops
}

/// A factor from `range` with probability `p`.
fn draw_factor(p: f64, range: [f64; 2], rng: &mut Rng) -> Option<f64> {
    let hit = rng.bernoulli(p);
    let v = rng.uniform_range(range[0], range[1]);
    hit.then_some(v)
}

fn draw_gamma(range: [f64; 2], rng: &mut Rng) -> f64 {
    if rng.bernoulli(0.5) && range[0] < 1.0 {
        rng.uniform_range(range[0], 1.0)
    } else {
        rng.uniform_range(range[0].max(1.0), range[1])
    }
}

/// Applies the intensity changes to a channel-major patch (`dims` = (x, y, z)).
pub fn apply_intensity(
    ops: &[IntensityOp],
    images: &mut [f32],
    dims: [usize; 3],
    scratch: &mut Vec<f32>,
) {
    let plane = dims[0] * dims[1] * dims[2];
    for op in ops {
        let (IntensityOp::Noise { channel, .. }
        | IntensityOp::Blur { channel, .. }
        | IntensityOp::Brightness { channel, .. }
        | IntensityOp::Contrast { channel, .. }
        | IntensityOp::LowRes { channel, .. }
        | IntensityOp::Gamma { channel, .. }) = *op;
        let values = &mut images[channel * plane..(channel + 1) * plane];
        match *op {
            IntensityOp::Noise { std, seed, .. } => intensity::add_noise(values, std, seed),
            IntensityOp::Blur { sigma, .. } => {
                intensity::gaussian_blur(values, dims, sigma, scratch)
            }
            IntensityOp::Brightness { factor, .. } => intensity::scale_brightness(values, factor),
            IntensityOp::Contrast { factor, .. } => intensity::adjust_contrast(values, factor),
            IntensityOp::LowRes { zoom, keep, .. } => {
                intensity::simulate_low_resolution(values, dims, zoom, keep)
            }
            IntensityOp::Gamma {
                gamma, inverted, ..
            } => intensity::gamma(values, gamma, inverted),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn none_draws_nothing_and_the_default_draws_at_about_its_rates() {
        let mut rng = Rng::new(1);
        for _ in 0..50 {
            let plan = AugmentSpec::none().draw([8, 8, 8], 2, &mut rng);
            assert_eq!(plan.spatial, SpatialTransform::identity());
            assert!(plan.intensity.is_empty());
        }
        let spec = AugmentSpec::default();
        let n = 4000;
        let (mut mirrored_x, mut rotated, mut gamma_samples) = (0, 0, 0);
        for _ in 0..n {
            let plan = spec.draw([8, 8, 8], 2, &mut rng);
            let m = plan.spatial.matrix;
            mirrored_x += (m[0][0] < 0.0 && m[1][0] == 0.0) as usize;
            rotated += (m[1][0] != 0.0) as usize;
            gamma_samples += plan.intensity.iter().any(|op| {
                matches!(
                    op,
                    IntensityOp::Gamma {
                        inverted: false,
                        ..
                    }
                )
            }) as usize;
        }
        let rate = |k: usize| k as f64 / n as f64;
        assert!(
            (rate(rotated) - 0.2).abs() < 0.03,
            "rotation {}",
            rate(rotated)
        );
        assert!(
            (rate(mirrored_x) - 0.5 * 0.8).abs() < 0.03,
            "mirror {}",
            rate(mirrored_x)
        );
        assert!(
            (rate(gamma_samples) - 0.3).abs() < 0.03,
            "gamma {}",
            rate(gamma_samples)
        );
        let json = serde_json::to_string(&spec).unwrap();
        assert_eq!(serde_json::from_str::<AugmentSpec>(&json).unwrap(), spec);
    }

    #[test]
    fn patches_much_shorter_along_one_axis_are_augmented_in_plane() {
        assert_eq!(slice_axis([160, 160, 40]), Some(2));
        assert_eq!(slice_axis([20, 80, 64]), Some(0));
        assert_eq!(slice_axis([96, 96, 32]), None, "3 times is not more than 3");
        assert_eq!(slice_axis([128, 128, 128]), None);
        assert_eq!(slice_axis([16, 16, 64]), None, "a pencil");
        let spec = AugmentSpec {
            in_plane_rotation: Some(Rotation {
                p: 1.0,
                max_degrees: 180.0,
            }),
            scaling: RangeChance {
                p: 1.0,
                range: [0.7, 1.4],
            },
            low_res: ChannelChance {
                p: 1.0,
                p_per_channel: 1.0,
                range: [0.5, 0.9],
            },
            ..AugmentSpec::default()
        };
        let mut rng = Rng::new(3);
        let mut beyond_34_degrees = 0;
        for _ in 0..200 {
            let plan = spec.draw([64, 16, 64], 1, &mut rng);
            let m = plan.spatial.matrix;
            // The slice axis (y) maps onto itself, unscaled; x and z only mix in-plane.
            assert_eq!(m[1][1].abs(), 1.0, "{m:?}");
            for a in [0, 2] {
                assert_eq!((m[1][a], m[a][1]), (0.0, 0.0), "{m:?}");
            }
            let in_plane_scale = (m[0][0] * m[2][2] - m[0][2] * m[2][0]).abs().sqrt();
            assert!((0.7 - 1e-9..=1.4 + 1e-9).contains(&in_plane_scale), "{m:?}");
            // The angle folded into [0, 90] degrees by mirroring: beyond 34 degrees for
            // about 62% of angles uniform in +-180, never for +-30.
            beyond_34_degrees += (m[2][0].abs().atan2(m[0][0].abs()) > 0.6) as usize;
            assert!(plan.intensity.iter().all(|op| match op {
                IntensityOp::LowRes { keep, .. } => *keep == Some(1),
                _ => true,
            }));
        }
        assert!(
            (90..160).contains(&beyond_34_degrees),
            "{beyond_34_degrees} of 200 beyond 34 degrees"
        );
        // A configuration from before in-plane augmentation reads as none: 3D for every patch.
        let mut old = serde_json::to_value(AugmentSpec::default()).unwrap();
        old.as_object_mut().unwrap().remove("in_plane_rotation");
        let old: AugmentSpec = serde_json::from_value(old).unwrap();
        assert_eq!(old.in_plane_rotation, None);
        assert_eq!(
            old,
            AugmentSpec {
                in_plane_rotation: None,
                ..AugmentSpec::default()
            }
        );
        // A cube-like patch draws what it drew before in-plane patches existed: whatever the
        // in-plane rotation says, the same generator state gives the same plan.
        let wider = AugmentSpec {
            in_plane_rotation: Some(Rotation {
                p: 1.0,
                max_degrees: 90.0,
            }),
            ..AugmentSpec::default()
        };
        for seed in 0..20 {
            let cube = [16, 16, 16];
            let plan = AugmentSpec::default().draw(cube, 2, &mut Rng::new(seed));
            assert_eq!(wider.draw(cube, 2, &mut Rng::new(seed)), plan);
            assert!(plan
                .intensity
                .iter()
                .all(|op| !matches!(op, IntensityOp::LowRes { keep: Some(_), .. })));
        }
    }

    #[test]
    fn validation_passes_the_defaults_and_names_each_bad_field() {
        assert!(AugmentSpec::default().validate().is_ok());
        assert!(AugmentSpec::none().validate().is_ok());
        let refused = |change: fn(&mut AugmentSpec), field: &str| {
            let mut spec = AugmentSpec::default();
            change(&mut spec);
            let msg = spec.validate().expect_err(field).to_string();
            assert!(msg.contains(&format!("augment.{field}")), "{field}: {msg}");
        };
        refused(|s| s.mirror_p = -1.0, "mirror_p");
        refused(|s| s.mirror_p = 3.0, "mirror_p");
        refused(|s| s.rotation.p = 5.0, "rotation.p");
        refused(|s| s.gamma.p_inverted = f64::NAN, "gamma.p_inverted");
        refused(
            |s| {
                s.in_plane_rotation = Some(Rotation {
                    p: 2.0,
                    max_degrees: 10.0,
                })
            },
            "in_plane_rotation.p",
        );
        refused(|s| s.noise.max_variance = -5.0, "noise.max_variance");
        refused(
            |s| s.rotation.max_degrees = f64::INFINITY,
            "rotation.max_degrees",
        );
        refused(
            |s| s.elastic.control_spacing = 0.0,
            "elastic.control_spacing",
        );
        refused(|s| s.scaling.range = [1.4, 0.7], "scaling.range");
        refused(|s| s.scaling.range = [-1.0, 0.0], "scaling.range");
        refused(|s| s.scaling.range = [0.0, 0.0], "scaling.range");
        refused(|s| s.blur.range = [-1.0, 1.0], "blur.range");
        refused(|s| s.contrast.range = [0.5, f64::NAN], "contrast.range");
        refused(|s| s.low_res.range = [0.5, 2.0], "low_res.range");
        refused(|s| s.gamma.range = [-1.0, 1.5], "gamma.range");
        refused(|s| s.gamma.range = [0.5, 0.8], "gamma.range");
        let mut edge = AugmentSpec::default();
        edge.gamma.range = [1.0, 1.0];
        edge.scaling.range = [1.0, 1.0];
        edge.blur.range = [0.0, 0.0];
        assert!(edge.validate().is_ok());
    }

    #[test]
    fn same_seed_same_plan() {
        let spec = AugmentSpec {
            elastic: Elastic {
                p: 1.0,
                control_spacing: 4.0,
                magnitude: 1.0,
            },
            ..AugmentSpec::default()
        };
        let a = spec.draw([8, 8, 8], 3, &mut Rng::new(5));
        let b = spec.draw([8, 8, 8], 3, &mut Rng::new(5));
        assert_eq!(a, b);
        assert!(a.spatial.displacement.is_some());
    }
}
