//! Augmentation against nnU-Net v2 (nnunetv2 2.8.1, batchgeneratorsv2 0.3.6):
//! tests/fixtures/augment_reference.json, written by scripts/augment_reference.py (whose header
//! holds the transform-by-transform comparison table). Deterministic transforms must agree to
//! 1e-5 relative (to values of at least 1: the inputs are of order 1); the defaults must be the
//! ones `nnUNetTrainer.get_training_transforms` builds.
use super::intensity::gamma;
use super::spatial::{extract, GridView, SpatialTransform};
use super::{apply_intensity, AugmentSpec, IntensityOp, ANISOTROPY_THRESHOLD};
use crate::fixture_json::floats;
use crate::rng::Rng;
use serde_json::Value;

const REL: f64 = 1e-5;

fn fixture() -> Value {
    serde_json::from_str(include_str!(
        "../../../tests/fixtures/augment_reference.json"
    ))
    .unwrap()
}

fn pair(v: &Value) -> [f64; 2] {
    floats(v).try_into().unwrap()
}

/// Three sizes (x, y, z).
fn sizes(v: &Value) -> [usize; 3] {
    let v: Vec<usize> = floats(v).iter().map(|&d| d as usize).collect();
    v.try_into().unwrap()
}

fn dims(f: &Value) -> [usize; 3] {
    sizes(&f["dims"])
}

/// The channels of a fixture array, concatenated (channel-major, x fastest) as f32.
fn channels(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .flat_map(|c| floats(c).into_iter().map(|x| x as f32))
        .collect()
}

/// Fails unless every value is within REL of nnU-Net's, relative to max(|want|, 1).
fn assert_close(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    let worst = got
        .iter()
        .zip(want)
        .enumerate()
        .map(|(i, (&g, &w))| (i, (g as f64 - w as f64).abs() / (w as f64).abs().max(1.0)))
        .fold((0, 0.0), |a, b| if b.1 > a.1 { b } else { a });
    let (i, rel) = worst;
    assert!(
        rel <= REL,
        "{what}: voxel {i}: voxseg {}, nnU-Net {} (relative {rel:e})",
        got[i],
        want[i]
    );
}

/// Applies one op per channel, built from that channel's parameter, to the fixture's input.
fn run_ops(f: &Value, op: impl Fn(usize) -> IntensityOp) -> Vec<f32> {
    let mut images = channels(&f["input"]);
    let ops: Vec<IntensityOp> = (0..2).map(op).collect();
    apply_intensity(&ops, &mut images, dims(f), &mut Vec::new());
    images
}

#[test]
fn defaults_are_the_ones_nnunet_trains_with() {
    let f = fixture();
    let d = &f["defaults"];
    let s = AugmentSpec::default();
    let p = |v: &Value| v.as_f64().unwrap();
    assert_eq!(ANISOTROPY_THRESHOLD, p(&d["aniso_threshold"]));
    assert_eq!(s.mirror_p, p(&d["mirror_p_per_axis"]));
    assert_eq!(floats(&d["mirror_axes"]), [0.0, 1.0, 2.0]);
    assert_eq!(s.rotation.p, p(&d["rotation"]["p"]));
    assert!((s.rotation.max_degrees - p(&d["rotation"]["max_degrees"])).abs() < 1e-9);
    let in_plane = s.in_plane_rotation.unwrap();
    assert_eq!(in_plane.p, p(&d["in_plane_rotation"]["p"]));
    assert_eq!(
        in_plane.max_degrees,
        p(&d["in_plane_rotation"]["max_degrees"])
    );
    assert_eq!(s.scaling.p, p(&d["scaling"]["p"]));
    assert_eq!(s.scaling.range, pair(&d["scaling"]["range"]));
    assert_eq!(s.elastic.p, p(&d["elastic_p"]));
    assert_eq!(
        s.translation.p, 0.0,
        "nnU-Net centres the patch it augments"
    );
    assert_eq!(s.noise.p, p(&d["noise"]["p"]));
    assert_eq!(
        [0.0, s.noise.max_variance],
        pair(&d["noise"]["noise_variance"])
    );
    for (ours, theirs) in [
        (s.blur, &d["blur"]),
        (s.brightness, &d["brightness"]),
        (s.contrast, &d["contrast"]),
        (s.low_res, &d["low_res"]),
    ] {
        assert_eq!(ours.p, p(&theirs["p"]), "{theirs}");
        assert_eq!(ours.p_per_channel, p(&theirs["p_per_channel"]), "{theirs}");
        assert_eq!(ours.range, pair(&theirs["range"]), "{theirs}");
    }
    assert_eq!(d["contrast"]["preserve_range"], true);
    assert_eq!(s.gamma.p, p(&d["gamma"]["p"]));
    assert_eq!(s.gamma.p_inverted, p(&d["gamma"]["p_inverted"]));
    assert_eq!(s.gamma.range, pair(&d["gamma"]["range"]));

    // The intensity changes come in nnU-Net's order (the spatial map, mirroring included,
    // is applied while the patch is extracted, before all of them).
    let mut all = AugmentSpec {
        noise: super::Noise { p: 1.0, ..s.noise },
        gamma: super::Gamma {
            p: 1.0,
            p_inverted: 1.0,
            ..s.gamma
        },
        ..s
    };
    for c in [
        &mut all.blur,
        &mut all.brightness,
        &mut all.contrast,
        &mut all.low_res,
    ] {
        (c.p, c.p_per_channel) = (1.0, 1.0);
    }
    let plan = all.draw([16; 3], 1, &mut Rng::new(4));
    let kinds: Vec<&str> = plan
        .intensity
        .iter()
        .map(|op| match op {
            IntensityOp::Noise { .. } => "GaussianNoiseTransform",
            IntensityOp::Blur { .. } => "GaussianBlurTransform",
            IntensityOp::Brightness { .. } => "MultiplicativeBrightnessTransform",
            IntensityOp::Contrast { .. } => "ContrastTransform",
            IntensityOp::LowRes { .. } => "SimulateLowResolutionTransform",
            IntensityOp::Gamma { inverted: true, .. } => "GammaTransform (inverted)",
            IntensityOp::Gamma { .. } => "GammaTransform",
        })
        .collect();
    let order: Vec<&str> = d["order"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let mut theirs: Vec<&str> = order[1..order.len() - 2].to_vec();
    // nnU-Net's first gamma transform is the inverted one (p_invert_image 1).
    let first_gamma = theirs.iter().position(|&t| t == "GammaTransform").unwrap();
    theirs[first_gamma] = "GammaTransform (inverted)";
    assert_eq!(
        (order[0], &order[order.len() - 2..]),
        (
            "SpatialTransform",
            &["MirrorTransform", "RemoveLabelTransform"][..]
        )
    );
    assert_eq!(kinds, theirs);
}

#[test]
fn noise_draws_its_standard_deviation_from_the_range_as_nnunet_does() {
    let f = fixture();
    // nnU-Net's "noise_variance" is the standard deviation of the noise it adds.
    let std = f["noise_std_for_variance_0.09"].as_f64().unwrap();
    assert!((std - 0.09).abs() < 1e-3, "{std}");
    let spec = AugmentSpec {
        noise: super::Noise {
            p: 1.0,
            max_variance: 0.1,
        },
        ..AugmentSpec::none()
    };
    let mut rng = Rng::new(8);
    let stds: Vec<f32> = (0..2000)
        .map(|_| match spec.draw([8; 3], 2, &mut rng).intensity[..] {
            [IntensityOp::Noise { std: a, .. }, IntensityOp::Noise { std: b, .. }] => {
                assert_eq!(a, b, "one std for all channels");
                a
            }
            ref other => panic!("{other:?}"),
        })
        .collect();
    let max = stds.iter().copied().fold(0.0, f32::max);
    let mean = stds.iter().sum::<f32>() / stds.len() as f32;
    assert!((0.099..=0.1).contains(&max), "largest std {max}");
    assert!((mean - 0.05).abs() < 0.003, "mean std {mean}");
}

#[test]
fn contrast_and_brightness_match_nnunet() {
    let f = fixture();
    let c = &f["contrast"];
    let factors = floats(&c["factors"]);
    let got = run_ops(&f, |channel| IntensityOp::Contrast {
        channel,
        factor: factors[channel] as f32,
    });
    assert_close("contrast", &got, &channels(&c["output"]));
    let b = &f["brightness"];
    let factors = floats(&b["factors"]);
    let got = run_ops(&f, |channel| IntensityOp::Brightness {
        channel,
        factor: factors[channel] as f32,
    });
    assert_close("brightness", &got, &channels(&b["output"]));
}

#[test]
fn gamma_matches_nnunet_inverted_or_not() {
    let f = fixture();
    let g = &f["gamma"];
    let gammas = floats(&g["gammas"]);
    let inverted: Vec<bool> = g["inverted"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_bool().unwrap())
        .collect();
    let got = run_ops(&f, |channel| IntensityOp::Gamma {
        channel,
        gamma: gammas[channel],
        inverted: inverted[channel],
    });
    assert_close("gamma", &got, &channels(&g["output"]));
    // The same through the function itself, which the op must be a thin call of.
    let plane = got.len() / 2;
    let mut one = channels(&f["input"])[..plane].to_vec();
    gamma(&mut one, gammas[0], inverted[0]);
    assert_eq!(one, got[..plane]);
}

#[test]
fn blur_matches_nnunet_per_channel_and_axis() {
    let f = fixture();
    let b = &f["blur"];
    let sigmas: Vec<[f64; 3]> = b["sigmas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| floats(s).try_into().unwrap())
        .collect();
    let got = run_ops(&f, |channel| IntensityOp::Blur {
        channel,
        sigma: sigmas[channel],
    });
    assert_close("blur", &got, &channels(&b["output"]));
}

#[test]
fn low_resolution_matches_nnunet() {
    let f = fixture();
    let l = &f["low_res"];
    let zooms = floats(&l["zooms"]);
    let keep: Vec<Option<usize>> = l["keep"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_u64().map(|a| a as usize))
        .collect();
    let got = run_ops(&f, |channel| IntensityOp::LowRes {
        channel,
        zoom: zooms[channel],
        keep: keep[channel],
    });
    assert_close("low resolution", &got, &channels(&l["output"]));
}

/// The fixture's input as a case grid with the given label, zero outside as in nnU-Net.
fn extract_from_input(
    f: &Value,
    transform: &SpatialTransform,
    centre: [f64; 3],
    patch: [usize; 3],
    label: &[u8],
) -> (Vec<f32>, Vec<u8>) {
    let input = channels(&f["input"]);
    let plane: usize = dims(f).iter().product();
    let src = GridView {
        dims: dims(f),
        channels: input.chunks(plane).collect(),
        label,
        background: 0.0,
    };
    let n: usize = patch.iter().product();
    let (mut images, mut labels) = (vec![0.0; 2 * n], vec![0; n]);
    extract(&src, centre, transform, patch, &mut images, &mut labels);
    (images, labels)
}

#[test]
fn mirroring_matches_nnunet() {
    let f = fixture();
    let m = &f["mirror"];
    let axes: Vec<bool> = m["axes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_bool().unwrap())
        .collect();
    let d = dims(&f);
    let transform =
        SpatialTransform::compose(axes.try_into().unwrap(), [1.0; 3], [0.0; 3], [0.0; 3]);
    let label = vec![0u8; d.iter().product()];
    let centre = d.map(|v| (v as f64 - 1.0) / 2.0);
    let (images, _) = extract_from_input(&f, &transform, centre, d, &label);
    assert_eq!(images, channels(&m["output"]));
}

#[test]
fn rotation_scaling_and_mirroring_match_nnunet() {
    let f = fixture();
    let s = &f["spatial"];
    let angles: [f64; 3] = floats(&s["angles"]).try_into().unwrap();
    let scale = s["scale"].as_f64().unwrap();
    let patch = sizes(&s["patch"]);
    let centre: [f64; 3] = floats(&s["centre"]).try_into().unwrap();
    let mirror: [bool; 3] = s["mirror"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_bool().unwrap())
        .collect::<Vec<_>>()
        .try_into()
        .unwrap();
    let transform = SpatialTransform::compose(mirror, [scale; 3], angles, [0.0; 3]);
    // Where each patch voxel samples the case: centre + matrix * (offset from patch centre).
    let want: Vec<Vec<f64>> = s["positions"]
        .as_array()
        .unwrap()
        .iter()
        .map(floats)
        .collect();
    let [pw, ph, _] = patch;
    for (i, _) in want[0].iter().enumerate() {
        let voxel = [i % pw, i / pw % ph, i / (pw * ph)];
        let o = [0, 1, 2].map(|a| voxel[a] as f64 - (patch[a] as f64 - 1.0) / 2.0);
        for a in 0..3 {
            let at: f64 = centre[a] + (0..3).map(|b| transform.matrix[a][b] * o[b]).sum::<f64>();
            assert!(
                (at - want[a][i]).abs() < 1e-5,
                "voxel {voxel:?} axis {a}: {at} vs {}",
                want[a][i]
            );
        }
    }
    let label: Vec<u8> = floats(&s["label_input"]).iter().map(|&v| v as u8).collect();
    let (images, labels) = extract_from_input(&f, &transform, centre, patch, &label);
    assert_close("rotated and scaled", &images, &channels(&s["output"]));
    // The labels sampled as nnU-Net does (one-hot linear, the largest share wins): on this
    // label of four values in stripes, nnU-Net's differ from the nearest voxel's at about a
    // tenth of the patch (the fixture's label_nnunet_differs_from_nearest).
    let nnunet: Vec<u8> = floats(&s["label_nnunet"])
        .iter()
        .map(|&v| v as u8)
        .collect();
    assert!(s["label_nnunet_differs_from_nearest"].as_u64().unwrap() > 0);
    assert_eq!(labels, nnunet);
}
