//! Anisotropic and thin data through the CLI: `plan` pools a coarse axis only once the
//! finer ones have caught up (and a single slice like a 2D image), and a U-Net with such
//! per-axis strides trains and predicts on the original grid.
mod cli_common;

use cli_common::{train_tiny, write_lesion_case, write_lesion_manifest};
use std::path::{Path, PathBuf};
use std::process::Command;
use voxseg::data::nifti::{NiftiFile, NiftiHeaderInfo};

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("voxseg-cli-aniso-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A one-modality manifest of `cases` cases of `dims` (x, y, z) voxels at `spacing` mm:
/// an ellipsoid (label 1, brighter) in tissue that is nowhere zero, so nothing is cropped.
fn dataset(dir: &Path, cases: usize, dims: [usize; 3], spacing: [f64; 3]) -> PathBuf {
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    let header = NiftiHeaderInfo::new(dims, spacing);
    let mut entries = Vec::new();
    for c in 0..cases {
        let mut image = Vec::new();
        let mut label = Vec::new();
        for z in 0..dims[2] {
            for y in 0..dims[1] {
                for x in 0..dims[0] {
                    // In mm from the centre, shifted a little per case.
                    let mm = |i: usize, a: usize| {
                        (i as f64 - dims[a] as f64 / 2.0 + c as f64 * 0.5) * spacing[a]
                    };
                    let r = (mm(x, 0) / 9.0).powi(2)
                        + (mm(y, 1) / 7.0).powi(2)
                        + (mm(z, 2) / 12.0).powi(2);
                    let inside = r < 1.0;
                    label.push(inside as u8);
                    let noise = ((x * 7 + y * 13 + z * 29 + c * 5) % 11) as f32;
                    image.push(100.0 + 80.0 * inside as u8 as f32 + noise);
                }
            }
        }
        entries.push(write_lesion_case(
            &data,
            &format!("c{c}"),
            &header,
            &image,
            &label,
        ));
    }
    write_lesion_manifest(&data, entries)
}

fn voxseg(args: &[&str]) -> (String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_voxseg"))
        .args(args)
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(out.status.success(), "voxseg {args:?}:\n{stdout}{stderr}");
    (stdout, stderr)
}

fn plan(manifest: &Path) -> serde_json::Value {
    let m = manifest.to_str().unwrap();
    let args = [
        "plan", "--data", m, "--target", "classes", "--device", "cpu",
    ];
    serde_json::from_str(&voxseg(&args).0).unwrap()
}

fn stages(v: &serde_json::Value) -> Vec<[usize; 3]> {
    serde_json::from_value(v.clone()).unwrap()
}

#[test]
fn a_thin_slab_plans_per_axis_pooling_and_a_single_slice_plans_a_2d_network() {
    let dir = temp_dir("plan");
    // 32x32x10 voxels of 1x1x5 mm: z is kept until x and y reach 4 mm.
    let p = plan(&dataset(
        &dir.join("slab"),
        3,
        [32, 32, 10],
        [1.0, 1.0, 5.0],
    ));
    assert_eq!(p["patch"], serde_json::json!([10, 32, 32]), "{p}");
    assert_eq!(p["depth"], 4, "{p}");
    assert_eq!(
        stages(&p["strides"]),
        [[1, 1, 1], [1, 2, 2], [1, 2, 2], [2, 2, 2]]
    );
    assert_eq!(
        stages(&p["kernels"]),
        [[1, 3, 3], [1, 3, 3], [3, 3, 3], [3, 3, 3]]
    );
    // One slice of 32x32: z is never pooled nor convolved across.
    let p = plan(&dataset(&dir.join("flat"), 3, [32, 32, 1], [1.0, 1.0, 1.0]));
    assert_eq!(p["depth"], 4, "{p}");
    assert_eq!(
        stages(&p["strides"]),
        [[1, 1, 1], [1, 2, 2], [1, 2, 2], [1, 2, 2]]
    );
    assert_eq!(stages(&p["kernels"]), [[1, 3, 3]; 4]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn an_anisotropic_unet_trains_and_predicts_on_the_original_grid() {
    let dir = temp_dir("train");
    // Planned patch 9x16x24 (z, y, x), smaller than the cases: the sliding window overlaps.
    let manifest = dataset(&dir, 4, [26, 20, 9], [0.8, 0.8, 4.0]);
    let (m, run) = (manifest.to_str().unwrap(), dir.join("run"));
    let r = run.to_str().unwrap();
    train_tiny(
        &manifest,
        &run,
        &["--epochs", "1", "--iters-per-epoch", "2"],
    );
    let card: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("model.json")).unwrap()).unwrap();
    let model = &card["model"];
    assert_eq!(model["depth"], 3, "{model}");
    assert_eq!(stages(&model["strides"]), [[1, 1, 1], [1, 2, 2], [1, 2, 2]]);
    assert_eq!(stages(&model["kernels"]), [[1, 3, 3], [1, 3, 3], [3, 3, 3]]);
    assert_eq!(card["plan"]["strides"], model["strides"]);

    let out = dir.join("pred");
    let o = out.to_str().unwrap();
    #[rustfmt::skip]
    voxseg(&[
        "predict", "--model", r, "--data", m, "--out", o, "--split", "all", "--device", "cpu",
        "--checkpoint", "last", "--png",
    ]);
    for c in 0..4 {
        let pred = NiftiFile::open(&out.join(format!("c{c}.nii.gz"))).unwrap();
        assert_eq!(pred.header().dims, [26, 20, 9]);
        assert_eq!(pred.header().spacing, [0.8f32 as f64, 0.8f32 as f64, 4.0]);
    }
    // The picture's panels have square pixels in mm: its 9 slices of 4 mm span 45 rows of
    // 0.8 mm (the in-plane panels 20), so it is the size the library draws for this spacing.
    let file = std::io::BufReader::new(std::fs::File::open(out.join("c0.png")).unwrap());
    let info = png::Decoder::new(file).read_info().unwrap().info().clone();
    let size = |spacing: [f64; 3]| {
        let voxels = 26 * 20 * 9;
        let labels = vec![0u8; voxels];
        let classes = ["background", "lesion"].map(String::from);
        let (_, w, h) = voxseg::log::captioned_overlay(
            &vec![0.0; voxels],
            [26, 20, 9],
            spacing,
            Some(&labels),
            Some(&labels),
            &classes,
        )
        .unwrap();
        (w as u32, h as u32)
    };
    assert_eq!((info.width, info.height), size([0.8, 0.8, 4.0]));
    assert_ne!(size([0.8, 0.8, 4.0]), size([1.0; 3]));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_resumed_run_keeps_the_stages_of_its_checkpoint() {
    // A run trained while the planner pooled every axis together (here: isotropic voxels),
    // resumed once its data plan per-axis pooling (the same voxels, now 1x1x5 mm).
    let dir = temp_dir("resume");
    let manifest = dataset(&dir, 3, [16, 16, 16], [1.0, 1.0, 1.0]);
    let run = dir.join("run");
    let r = run.to_str().unwrap();
    train_tiny(
        &manifest,
        &run,
        &["--epochs", "1", "--iters-per-epoch", "1"],
    );
    let isotropic = std::fs::read(run.join("model.json")).unwrap();
    assert!(!String::from_utf8_lossy(&isotropic).contains("strides"));
    dataset(&dir, 3, [16, 16, 16], [1.0, 1.0, 5.0]);
    let p = plan(&manifest);
    assert!(p["strides"].is_array(), "{p}");
    voxseg(&["train", "--out", r, "--resume", "--epochs", "2"]);
    let card = String::from_utf8(std::fs::read(run.join("model.json")).unwrap()).unwrap();
    assert!(!card.contains("strides"), "{card}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn check_warns_of_cases_in_another_orientation_and_spacing() {
    let dir = temp_dir("check");
    let manifest = dataset(&dir, 3, [16, 16, 16], [1.0, 1.0, 5.0]);
    let m = manifest.to_str().unwrap();
    let (same, _) = voxseg(&["check", "--data", m]);
    assert!(!same.contains("warning"), "{same}");
    // Case c2 stored with x and z swapped: its x axis runs superior in 5 mm steps; its
    // y axis has 2 mm voxels where the others have 1.
    let mut header = NiftiHeaderInfo::new([16, 16, 16], [5.0, 2.0, 1.0]);
    header.qform_code = 0;
    header.srow = [
        [0.0, 0.0, 1.0, 0.0],
        [0.0, 2.0, 0.0, 0.0],
        [5.0, 0.0, 0.0, 0.0],
    ];
    let image: Vec<f32> = (0..16 * 16 * 16).map(|i| 100.0 + (i % 7) as f32).collect();
    let label: Vec<u8> = (0..16 * 16 * 16).map(|i| (i % 5 == 0) as u8).collect();
    write_lesion_case(manifest.parent().unwrap(), "c2", &header, &image, &label);
    let (mixed, _) = voxseg(&["check", "--data", m]);
    let warnings: Vec<&str> = mixed.lines().filter(|l| l.contains("warning")).collect();
    assert_eq!(warnings.len(), 2, "{mixed}");
    assert!(
        warnings[0].contains("orientation") && warnings[0].contains("2 RAS (c0, c1), 1 SAR (c2)")
    );
    // Spacings are compared as training sees them, in the most common orientation.
    assert!(
        warnings[1].contains("(axes as in RAS), from 1x1x5 mm (c0, c1) to 1x2x5 mm (c2)"),
        "{}",
        warnings[1]
    );
    assert!(warnings[1].contains("target_spacing"));
    // Training warns of the spacings with the same line (over its training and validation
    // cases), and notes the orientation it reorients to: the most common of those cases.
    let split = dir.join("split.json");
    std::fs::write(
        &split,
        r#"{"train": ["c0", "c2"], "val": ["c1"], "test": []}"#,
    )
    .unwrap();
    #[rustfmt::skip]
    let stderr = train_tiny(&manifest, &dir.join("run"), &[
        "--epochs", "1", "--iters-per-epoch", "1", "--split-file", split.to_str().unwrap(),
    ])
    .stderr;
    let trained: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("warning"))
        .collect();
    assert_eq!(trained, &warnings[1..], "{stderr}");
    assert!(
        stderr.contains("note: cases differ in orientation") && stderr.contains("trains in RAS"),
        "{stderr}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
