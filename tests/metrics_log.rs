//! Files other tools read: writes a TensorBoard event file, checkpoints, metrics.jsonl, an
//! evaluation report, a picture and a prediction NIfTI beside its reference image, checks
//! them from Rust, and leaves them for `scripts/check_interop.py` (TensorBoard's
//! EventAccumulator, Python safetensors, nibabel).
//!
//! The files stay in `$VOXSEG_INTEROP_DIR`, or `<target>/tmp/interop` when unset:
//! `run/` (events, checkpoints, metrics), `pred/case_001.nii.gz`, `ref_t1.nii.gz`; `run/`
//! and `pred/` there are replaced on each run.
use ndarray::{Array3, ShapeBuilder};
use nifti::NiftiObject;
use std::collections::BTreeMap;
use std::path::PathBuf;
use voxseg::log::{overlay_slices, write_png, EventWriter, JsonlWriter};
use voxseg::metrics::{score_case, EvalReport, Region};
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
