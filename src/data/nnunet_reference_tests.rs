//! Preprocessing against nnU-Net v2's own functions: tests/fixtures/nnunet_reference.json,
//! written by scripts/nnunet_reference.py (`create_nonzero_mask`, `crop_to_nonzero`,
//! `ZScoreNormalization` with the non-zero mask, `CTNormalization`, `compute_new_shape`).
//! The fixture's volumes are nnU-Net's (z, y, x) arrays flattened in C order, which is
//! `Volume`'s x-fastest layout; its sizes and boxes are (z, y, x) and are reversed here.
use super::preprocess::{
    brain_mask, dataset_stats, preprocess, AfterClip, Intensity, PreprocessSpec, Statistics,
};
use super::{CaseData, Volume};
use crate::fixture_json::{floats, list, usizes};
use serde_json::Value;

fn fixture() -> Value {
    serde_json::from_str(include_str!("../../tests/fixtures/nnunet_reference.json")).unwrap()
}

/// A (z, y, x) triple of the fixture as (x, y, z).
fn xyz<T: Copy>(zyx: &[T]) -> [T; 3] {
    [zyx[2], zyx[1], zyx[0]]
}

fn bits(v: &Value) -> Vec<bool> {
    v.as_str().unwrap().bytes().map(|b| b == b'1').collect()
}

fn case_of(entry: &Value) -> CaseData {
    let dims = xyz(&usizes(&entry["shape_zyx"]));
    let channels = list(&entry["channels"])
        .iter()
        .map(|c| {
            let data = floats(c).into_iter().map(|v| v as f32).collect();
            Volume::new(dims, [1.0; 3], data)
        })
        .collect();
    CaseData {
        id: entry["name"].as_str().unwrap_or("case").into(),
        channels,
        label: None,
    }
}

/// Fails unless `|got - want| <= 1e-6 * max(|want|, 1)`: normalised values are of order 1,
/// and those that cancel to about 0 cannot carry relative precision.
fn close(what: &str, got: &[f32], want: &[f64]) -> f64 {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    let mut worst = 0.0f64;
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let r = (g as f64 - w).abs() / w.abs().max(1.0);
        assert!(r <= 1e-6, "{what}[{i}]: voxseg {g:e}, nnU-Net {w:e}");
        worst = worst.max(r);
    }
    worst
}

#[test]
fn nonzero_mask_crop_box_and_masked_zscore_match_nnunet() {
    let fx = fixture();
    let mut worst = 0.0f64;
    for entry in list(&fx["crop"]) {
        let name = entry["name"].as_str().unwrap();
        let case = case_of(entry);
        // The mask: non-zero in any channel, holes (6-connected, as scipy's default
        // structure) filled.
        assert_eq!(
            brain_mask(&case.channels),
            bits(&entry["mask"]),
            "{name}: mask"
        );
        let p = preprocess(&case, &PreprocessSpec::default()).unwrap();
        let bbox: Vec<[usize; 2]> = list(&entry["bbox_zyx"])
            .iter()
            .map(|b| [0, 1].map(|i| b[i].as_u64().unwrap() as usize))
            .collect();
        let start = xyz(&bbox.iter().map(|b| b[0]).collect::<Vec<_>>());
        let end = xyz(&bbox.iter().map(|b| b[1]).collect::<Vec<_>>());
        assert_eq!((p.crop.start, p.crop.end), (start, end), "{name}: box");
        assert_eq!(
            p.dims(),
            xyz(&usizes(&entry["cropped_shape_zyx"])),
            "{name}: cropped size"
        );
        // Outside the mask every channel is 0 and nnU-Net leaves it so: voxseg's default
        // background value is 0 too, so every voxel of the crop compares.
        for (c, want) in list(&entry["zscore"]).iter().enumerate() {
            let w = close(
                &format!("{name} channel {c}"),
                &p.channels[c].data,
                &floats(want),
            );
            worst = worst.max(w);
        }
    }
    println!("z-score: largest difference {worst:e} (relative, floor 1)");
}

#[test]
fn percentile_clip_with_dataset_statistics_matches_nnunet_ct_normalisation() {
    let fx = fixture();
    let ct = &fx["ct_normalisation"];
    let entry = list(&fx["crop"])
        .iter()
        .find(|e| e["name"] == ct["case"])
        .unwrap();
    let case = case_of(entry);
    // One case of fewer mask voxels than the per-case sample, so the dataset's statistics
    // are exact: what nnU-Net's fingerprint gives when its foreground is this mask.
    let stats = dataset_stats([&case]).unwrap();
    for (c, props) in list(&ct["intensity_properties"]).iter().enumerate() {
        let s = &stats.channels[c];
        let f = |k: &str| props[k].as_f64().unwrap();
        assert!(
            (s.mean - f("mean")).abs() <= 1e-12 * f("mean").abs(),
            "{} {}",
            s.mean,
            f("mean")
        );
        assert!((s.std - f("std")).abs() <= 1e-12 * f("std"));
        // numpy's linear percentile; voxseg keeps its table in f32.
        for (p, key) in [(0.5, "percentile_00_5"), (99.5, "percentile_99_5")] {
            let (got, want) = (s.percentile(p) as f64, f(key));
            assert!(
                (got - want).abs() <= 1e-6 * want.abs(),
                "channel {c} {key}: {got} vs {want}"
            );
        }
    }
    let spec = PreprocessSpec {
        intensity: Intensity::PercentileClip {
            lo: 0.5,
            hi: 99.5,
            then: AfterClip::ZScore,
        },
        statistics: Statistics::PerDataset(stats),
        ..PreprocessSpec::default()
    };
    let p = preprocess(&case, &spec).unwrap();
    let inside = bits(&entry["crop_mask"]);
    for (c, want) in list(&ct["normalised"]).iter().enumerate() {
        let want = floats(want);
        let got = &p.channels[c].data;
        // nnU-Net's CT scheme normalises every voxel; voxseg's, like its z-score, only the
        // mask, and sets the rest to the background value (documented).
        let (gi, wi): (Vec<f32>, Vec<f64>) = got
            .iter()
            .zip(&want)
            .zip(&inside)
            .filter(|(_, &m)| m)
            .map(|((&g, &w), _)| (g, w))
            .unzip();
        assert!(wi.len() > 200);
        close(&format!("CT channel {c}"), &gi, &wi);
        let outside: Vec<f32> = got
            .iter()
            .zip(&inside)
            .filter(|(_, &m)| !m)
            .map(|(&g, _)| g)
            .collect();
        assert!(!outside.is_empty() && outside.iter().all(|&v| v == 0.0));
    }
}

#[test]
fn resampled_sizes_follow_nnunet_compute_new_shape() {
    let fx = fixture();
    for entry in list(&fx["resampled_shapes"]) {
        let dims = xyz(&usizes(&entry["shape_zyx"]));
        let spacing = xyz(&floats(&entry["spacing_zyx"]));
        let target = xyz(&floats(&entry["target_zyx"]));
        // Every voxel non-zero, so the crop keeps the whole grid.
        let n = dims.iter().product();
        let case = CaseData {
            id: "grid".into(),
            channels: vec![Volume::new(dims, spacing, vec![1.0; n])],
            label: None,
        };
        let spec = PreprocessSpec {
            target_spacing: Some(target),
            ..PreprocessSpec::default()
        };
        let p = preprocess(&case, &spec).unwrap();
        assert_eq!(
            p.crop.resampled_dims,
            xyz(&usizes(&entry["new_shape_zyx"])),
            "{dims:?} voxels of {spacing:?} mm to {target:?} mm"
        );
    }
}
