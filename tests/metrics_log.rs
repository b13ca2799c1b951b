//! Files other tools read: writes a TensorBoard event file, checkpoints, metrics.jsonl, an
//! evaluation report, a picture and a prediction NIfTI beside its reference image, checks
//! them from Rust, and leaves them for `scripts/check_interop.py` (TensorBoard's
//! EventAccumulator, Python safetensors, nibabel).
//!
//! Also checks Dice, HD95, the surface they measure from, sensitivity and specificity
//! against medpy's (the reference voxseg follows) on the mask pairs of
//! `fixtures/metrics_reference.json`, written by `scripts/metrics_reference.py`.
//!
//! The files stay in `$VOXSEG_INTEROP_DIR`, or `<target>/tmp/interop` when unset:
//! `run/` (events, checkpoints, metrics), `pred/case_001.nii.gz`, `ref_t1.nii.gz`; `run/`
//! and `pred/` there are replaced on each run.
use ndarray::{Array3, ShapeBuilder};
use nifti::NiftiObject;
use std::collections::BTreeMap;
use std::path::PathBuf;
use voxseg::log::{overlay_slices, write_png, EventWriter, JsonlWriter};
use voxseg::metrics::{
    distance, score_case, score_masks, Confusion, EmptyHd95, EvalReport, Region, LEGACY_EMPTY_HD95,
};
use voxseg::train::checkpoint::{load_checkpoint, save_checkpoint};

const DIMS: [usize; 3] = [12, 10, 8];
const SPACING: [f64; 3] = [1.2, 1.0, 2.5];

fn out_dir() -> PathBuf {
    std::env::var_os("VOXSEG_INTEROP_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("interop"))
}

/// A bright ellipsoid in a dark volume; labels 2 (outer shell), 1 (core), 4 (centre). The
/// prediction is the same shape shifted by one voxel in x and half a slice in z.
fn synthetic_case() -> (Vec<f32>, Vec<u8>, Vec<u8>) {
    let [nx, ny, nz] = DIMS;
    let mut image = Vec::with_capacity(nx * ny * nz);
    let mut truth = Vec::with_capacity(nx * ny * nz);
    let mut pred = Vec::with_capacity(nx * ny * nz);
    let label = |r: f64| match r {
        r if r < 0.1 => 4,
        r if r < 0.4 => 1,
        r if r < 1.0 => 2,
        _ => 0,
    };
    for z in 0..nz {
        for y in 0..ny {
            for x in 0..nx {
                let radius = |cx: f64, cz: f64| {
                    ((x as f64 - cx) / 4.0).powi(2)
                        + ((y as f64 - 5.0) / 3.5).powi(2)
                        + ((z as f64 - cz) / 2.5).powi(2)
                };
                let r = radius(6.0, 4.0);
                image.push((100.0 * (1.0 - r).max(0.0) + x as f64) as f32);
                truth.push(label(r));
                pred.push(label(radius(7.0, 4.5)));
            }
        }
    }
    (image, truth, pred)
}

fn nifti_header() -> nifti::NiftiHeader {
    let [nx, ny, nz] = DIMS;
    let [sx, sy, sz] = SPACING.map(|s| s as f32);
    nifti::NiftiHeader {
        dim: [3, nx as u16, ny as u16, nz as u16, 1, 1, 1, 1],
        pixdim: [1.0, sx, sy, sz, 1.0, 1.0, 1.0, 1.0],
        sform_code: 1,
        qform_code: 0,
        srow_x: [-sx, 0.0, 0.0, 90.5],
        srow_y: [0.0, sy, 0.0, -126.0],
        srow_z: [0.0, 0.0, sz, -72.25],
        xyzt_units: 2,
        ..Default::default()
    }
}

#[test]
fn writes_files_other_tools_read() {
    let root = out_dir();
    let run = root.join("run");
    let pred_dir = root.join("pred");
    // Only what this test writes is cleared, so that the run holds one event file.
    for dir in [&run, &pred_dir] {
        let _ = std::fs::remove_dir_all(dir);
    }
    std::fs::create_dir_all(run.join("checkpoints")).unwrap();
    std::fs::create_dir_all(&pred_dir).unwrap();
    let (image, truth, pred) = synthetic_case();

    // Evaluation report.
    let regions = [
        Region::new("WT", &[1, 2, 4]),
        Region::new("TC", &[1, 4]),
        Region::new("ET", &[4]),
    ];
    let case = score_case("case_001", &pred, &truth, DIMS, SPACING, &regions).unwrap();
    let report = EvalReport::new(vec![case]);
    let wt = report.mean["WT"];
    assert!(wt.dice > 0.5 && wt.dice < 1.0, "{wt:?}");
    assert!(wt.hd95 >= 1.0 && wt.hd95 < 5.0, "{wt:?}");
    report.write_json(&run.join("eval.json")).unwrap();
    report.write_csv(&run.join("eval.csv")).unwrap();

    // TensorBoard: scalars, an overlay picture, a histogram; the same losses in metrics.jsonl.
    let mut events = EventWriter::create(&run).unwrap();
    let mut jsonl = JsonlWriter::open(&run.join("metrics.jsonl")).unwrap();
    for step in 1..=5u64 {
        let loss = 1.0 / step as f32;
        events.add_scalar("loss/train", loss, step).unwrap();
        jsonl
            .write(&serde_json::json!({"step": step, "loss": loss}))
            .unwrap();
    }
    for (region, s) in &report.mean {
        events
            .add_scalar(&format!("val/dice_{region}"), s.dice as f32, 5)
            .unwrap();
    }
    let (rgb, w, h) =
        overlay_slices(&image, DIMS, [1.0; 3], Some(&pred), Some(&truth), None).unwrap();
    assert_eq!((w, h), (12 + 12 + 10, 2 * 10));
    events.add_image("val/overlay", &rgb, w, h, 5).unwrap();
    write_png(&run.join("overlay.png"), &rgb, w, h).unwrap();
    let weights: Vec<f32> = (0..1000).map(|i| ((i as f32) * 0.37).sin()).collect();
    events
        .add_histogram("weights/enc.0.conv1", &weights, 5)
        .unwrap();
    events.flush().unwrap();

    // Checkpoint.
    let tensors = vec![
        (
            "enc.0.conv1.weight".to_string(),
            vec![3, 3, 3, 4, 8],
            (0..864).map(|i| (i as f32 * 0.01).cos()).collect(),
        ),
        ("enc.0.conv1.bias".to_string(), vec![8], vec![0.0; 8]),
        ("head.weight".to_string(), vec![8, 4], vec![0.5; 32]),
    ];
    let meta: BTreeMap<String, String> = [("step", "5"), ("format", "voxseg-test")]
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .into();
    let ckpt = run.join("checkpoints").join("last.safetensors");
    save_checkpoint(&ckpt, &tensors, &meta).unwrap();
    let (back, back_meta) = load_checkpoint(&ckpt).unwrap();
    assert_eq!(back.len(), 3);
    assert_eq!(back_meta, meta);

    // A reference image, and a prediction written with its header (as prediction does).
    let reference = root.join("ref_t1.nii.gz");
    let image_arr = Array3::from_shape_vec(DIMS.f(), image).unwrap();
    nifti::writer::WriterOptions::new(&reference)
        .reference_header(&nifti_header())
        .write_nifti(&image_arr)
        .unwrap();
    let ref_header = nifti::ReaderOptions::new()
        .read_file(&reference)
        .unwrap()
        .header()
        .clone();
    assert_eq!(ref_header.srow_x, [-1.2, 0.0, 0.0, 90.5]);
    let pred_arr = Array3::from_shape_vec(DIMS.f(), pred).unwrap();
    nifti::writer::WriterOptions::new(pred_dir.join("case_001.nii.gz"))
        .reference_header(&ref_header)
        .write_nifti(&pred_arr)
        .unwrap();
    eprintln!("interop files in {}", root.display());
}

/// Whether `got` is within 1e-9 of `want`, relative (so exactly 0 where medpy has 0).
fn close(got: f64, want: f64) -> bool {
    (got - want).abs() <= 1e-9 * want.abs()
}

/// One fixture case: its name, dims, spacing, prediction and reference masks.
fn fixture_case(case: &serde_json::Value) -> (&str, [usize; 3], [f64; 3], Vec<bool>, Vec<bool>) {
    let dims: [usize; 3] = serde_json::from_value(case["dims"].clone()).unwrap();
    let spacing: [f64; 3] = serde_json::from_value(case["spacing"].clone()).unwrap();
    let voxels = dims.iter().product();
    // Runs [start, length, ...] of x-fastest flat indices, voxseg's own layout.
    let mask = |key: &str| {
        let runs: Vec<usize> = serde_json::from_value(case[key].clone()).unwrap();
        let mut m = vec![false; voxels];
        for run in runs.chunks(2) {
            m[run[0]..run[0] + run[1]].fill(true);
        }
        m
    };
    let name = case["name"].as_str().unwrap();
    (name, dims, spacing, mask("pred"), mask("truth"))
}

#[test]
fn dice_hd95_and_surfaces_match_medpy() {
    let fixture: serde_json::Value =
        serde_json::from_str(include_str!("fixtures/metrics_reference.json")).unwrap();
    let mut scored = 0;
    for case in fixture["cases"].as_array().unwrap() {
        let (name, dims, spacing, pred, truth) = fixture_case(case);
        let medpy = &case["medpy"];
        let Some(want_hd95) = medpy["hd95"].as_f64() else {
            continue; // an empty mask: see empty_masks_follow_the_documented_rule
        };
        let c = Confusion::count(&pred, &truth);
        let want = medpy["dc"].as_f64().unwrap();
        assert!(
            close(c.dice(), want),
            "{name}: Dice {} vs medpy {want}",
            c.dice()
        );
        let got = distance::hd95(&pred, &truth, dims, spacing).unwrap();
        assert!(
            close(got, want_hd95),
            "{name}: HD95 {got} vs medpy {want_hd95}"
        );
        let swapped = distance::hd95(&truth, &pred, dims, spacing).unwrap();
        assert!(close(swapped, want_hd95), "{name}: HD95 of b, a {swapped}");
        let surfaces: [usize; 2] = serde_json::from_value(medpy["surface_voxels"].clone()).unwrap();
        let count = |m: &[bool]| distance::boundary(m, dims).iter().filter(|&&b| b).count();
        assert_eq!(
            [count(&pred), count(&truth)],
            surfaces,
            "{name}: surface voxels"
        );
        let want = medpy["sensitivity"].as_f64().unwrap();
        assert!(
            close(c.sensitivity(), want),
            "{name}: sensitivity {}",
            c.sensitivity()
        );
        if let Some(want) = medpy["specificity"].as_f64() {
            assert!(
                close(c.specificity(), want),
                "{name}: specificity {}",
                c.specificity()
            );
        }
        // These cases would score differently with the spacing on the wrong axes.
        if name.ends_with("strong_aniso") {
            let reversed = [spacing[2], spacing[1], spacing[0]];
            let wrong = distance::hd95(&pred, &truth, dims, reversed).unwrap();
            assert!(
                (wrong - want_hd95).abs() > 0.5 * want_hd95,
                "{name}: {wrong}"
            );
        }
        scored += 1;
    }
    assert_eq!(scored, 33, "cases scored against medpy");
}

/// medpy's hd95 refuses an empty mask, and its dc is NaN for two: voxseg's documented rule
/// applies instead (Dice 1 and HD95 0 for two empty masks; Dice 0 and the empty-mask HD95
/// for one; sensitivity 1 where the reference is empty, where medpy's is 0).
#[test]
fn empty_masks_follow_the_documented_rule() {
    let fixture: serde_json::Value =
        serde_json::from_str(include_str!("fixtures/metrics_reference.json")).unwrap();
    let mut seen = Vec::new();
    for case in fixture["cases"].as_array().unwrap() {
        let (name, dims, spacing, pred, truth) = fixture_case(case);
        if case["medpy"]["hd95"].is_number() {
            continue;
        }
        assert!(case["medpy"]["hd95_error"].is_string(), "{name}");
        let (pred_empty, truth_empty) = (!pred.contains(&true), !truth.contains(&true));
        assert!(pred_empty || truth_empty, "{name}");
        assert_eq!(distance::hd95(&pred, &truth, dims, spacing), None, "{name}");
        // The image's extent, 10 x 8 x 6 voxels of 0.5 x 0.8 x 2.5 mm: 5 x 6.4 x 15 mm.
        let diagonal = EmptyHd95::ImageDiagonal.mm(dims, spacing);
        assert!(
            close(diagonal, (25.0f64 + 40.96 + 225.0).sqrt()),
            "{diagonal}"
        );
        let s = score_masks(&pred, &truth, dims, spacing, diagonal);
        let one_empty = pred_empty != truth_empty;
        let want = if one_empty {
            (0.0, diagonal)
        } else {
            (1.0, 0.0)
        };
        assert_eq!((s.dice, s.hd95), want, "{name}");
        if one_empty {
            assert_eq!(case["medpy"]["dc"].as_f64(), Some(0.0), "{name}");
        }
        let want_sensitivity = if truth_empty { 1.0 } else { 0.0 };
        assert_eq!(s.sensitivity, want_sensitivity, "{name}");
        // The BraTS rule: 373.13 mm, the BraTS volume's diagonal, on any image.
        let labels = |m: &[bool]| m.iter().map(|&v| u8::from(v)).collect::<Vec<_>>();
        let region = [Region::new("WT", &[1])];
        let brats = score_case(
            name,
            &labels(&pred),
            &labels(&truth),
            dims,
            spacing,
            &region,
        )
        .unwrap()
        .regions["WT"];
        let want_hd95 = if one_empty { LEGACY_EMPTY_HD95 } else { 0.0 };
        assert_eq!(brats.hd95, want_hd95, "{name}");
        seen.push(name);
    }
    assert_eq!(seen, ["empty_pred", "empty_truth", "both_empty"]);
    let brats_diagonal = (240.0f64 * 240.0 + 240.0 * 240.0 + 155.0 * 155.0).sqrt();
    assert!((LEGACY_EMPTY_HD95 - brats_diagonal).abs() < 1e-5);
}
