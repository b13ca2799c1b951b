//! Sliding-window inference against nnU-Net v2's own functions:
//! tests/fixtures/nnunet_reference.json, written by scripts/nnunet_reference.py
//! (`compute_steps_for_sliding_window` after `pad_nd_image`, `compute_gaussian`, the
//! mirrorings of `_internal_maybe_mirror_and_predict`). Patch axes are (d, h, w) = (z, y, x)
//! on both sides.
use super::sliding_window::{gaussian_weights, mirrorings, window_offset, window_starts};
use crate::fixture_json::{list, usizes};
use serde_json::Value;

fn fixture() -> Value {
    serde_json::from_str(include_str!("../../tests/fixtures/nnunet_reference.json")).unwrap()
}

/// Window starts along one axis in the image's own coordinates, as `predict_volume` places
/// them: on the image padded to the patch, shifted back by the padding before it.
fn image_starts(size: usize, patch: usize, overlap: f64) -> Vec<isize> {
    let before = window_offset(size, patch);
    window_starts(size.max(patch), patch, overlap)
        .into_iter()
        .map(|s| s as isize - before as isize)
        .collect()
}

#[test]
fn window_starts_match_nnunet_including_images_smaller_than_the_patch() {
    let fx = fixture();
    let rows = list(&fx["window_starts"]["rows"]);
    assert!(rows.len() > 500);
    for row in rows {
        let (size, patch) = (row[0].as_u64().unwrap(), row[1].as_u64().unwrap());
        let step = row[2].as_f64().unwrap();
        let mut want: Vec<isize> = list(&row[3])
            .iter()
            .map(|v| v.as_i64().unwrap() as isize)
            .collect();
        if patch as f64 * step < 1.0 {
            // A step under one voxel: nnU-Net repeats positions (each repeat weighs the
            // same windows again, which the average undoes); voxseg steps by one voxel.
            want.dedup();
        }
        let got = image_starts(size as usize, patch as usize, 1.0 - step);
        assert_eq!(got, want, "size {size}, patch {patch}, tile step {step}");
    }
}

fn check_close(what: &str, got: f64, want: f64) {
    assert!(
        (got - want).abs() <= 1e-6 * want.abs(),
        "{what}: voxseg {got:e}, nnU-Net {want:e}"
    );
}

#[test]
fn gaussian_matches_nnunet_on_odd_axes_and_is_recentred_on_even_ones() {
    let fx = fixture();
    for entry in list(&fx["gaussian"]) {
        let patch: [usize; 3] = usizes(&entry["patch_zyx"]).try_into().unwrap();
        let want: Vec<f64> = list(&entry["values"])
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        let got = gaussian_weights(patch);
        assert_eq!(got.len(), want.len());
        if patch.iter().all(|n| n % 2 == 1) {
            for (i, (&g, &w)) in got.iter().zip(&want).enumerate() {
                check_close(&format!("{patch:?}[{i}]"), g as f64, w);
            }
        }
        // nnU-Net centres an even axis of n on voxel n / 2, voxseg between n / 2 - 1 and
        // n / 2 (symmetric under mirroring). With a = i - n / 2, voxseg's exponent
        // (a + 1/2)^2 is the mean of nnU-Net's at i and at the mirror image n - 1 - i,
        // less 1/4: so voxseg^2 = nnU-Net(i) * nnU-Net(mirror i) * exp(1 / (4 sigma^2)) per
        // even axis (sigma = n / 8); on an odd axis both maps are symmetric and equal.
        let lift: f64 = patch
            .iter()
            .filter(|&&n| n % 2 == 0)
            .map(|&n| (1.0 / (4.0 * (n as f64 / 8.0).powi(2))).exp())
            .product();
        let [pd, ph, pw] = patch;
        for z in 0..pd {
            for y in 0..ph {
                for x in 0..pw {
                    let i = (z * ph + y) * pw + x;
                    let m = ((pd - 1 - z) * ph + ph - 1 - y) * pw + pw - 1 - x;
                    check_close(
                        &format!("{patch:?} at ({z}, {y}, {x}), squared"),
                        (got[i] as f64).powi(2),
                        want[i] * want[m] * lift,
                    );
                }
            }
        }
    }
    // nnU-Net's predictor keeps the map in float16 (peak 10), where the far corners of a
    // 128^3 patch underflow and are raised to the smallest value; voxseg's f32 map has no
    // zeros to raise there (the corners, about 5.5e-11, are its smallest values).
    let half = &fx["gaussian_predictor_float16"];
    assert!(half["at_smallest"].as_u64().unwrap() > 1000);
    let g = gaussian_weights([128; 3]);
    let smallest = g.iter().copied().fold(f32::INFINITY, f32::min);
    assert!(smallest > 0.0 && smallest == g[0], "{smallest:e}");
}

#[test]
fn test_time_mirroring_averages_the_same_eight_flips_as_nnunet() {
    let fx = fixture();
    let mirror = &fx["mirroring"];
    let mut want: Vec<[bool; 3]> = list(&mirror["flips_zyx"])
        .iter()
        .map(|f| [0, 1, 2].map(|a| f[a].as_bool().unwrap()))
        .collect();
    // nnU-Net divides the sum of every pass by their number: each weighs 1 / 8.
    assert_eq!(mirror["mean_of_ones"].as_f64(), Some(1.0));
    let mut got = mirrorings(true);
    want.sort();
    got.sort();
    assert_eq!(got, want);
    assert_eq!(mirrorings(false), vec![[false; 3]]);
}
