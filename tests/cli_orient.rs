//! Cases stored in different orientations through the CLI: training reorients them to the
//! training cases' most common orientation and records it, and prediction writes each result
//! back on its input's own grid, so a case stored with its axes permuted and flipped gets
//! the same segmentation, in its own layout, as the case it was made from.
use std::path::{Path, PathBuf};
use std::process::Command;
use voxseg::data::nifti::{write_label_map, write_nifti, NiftiFile, NiftiHeaderInfo, VoxelData};
use voxseg::data::orient::{orientation, AxisMap};

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("voxseg-cli-orient-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

const DIMS: [usize; 3] = [14, 12, 10];
const SPACING: [f64; 3] = [1.0, 1.5, 2.0];

/// Case `c` as stored in RAS: an off-centre box (label 1, brighter) in noisy tissue.
fn ras_case(c: usize) -> (Vec<f32>, Vec<u8>) {
    let mut image = Vec::new();
    let mut label = Vec::new();
    for z in 0..DIMS[2] {
        for y in 0..DIMS[1] {
            for x in 0..DIMS[0] {
                let inside =
                    (3 + c..9 + c).contains(&x) && (2..6).contains(&y) && (4..9).contains(&z);
                label.push(inside as u8);
                let noise = ((x * 7 + y * 13 + z * 29 + c * 5) % 11) as f32;
                image.push(100.0 + 80.0 * inside as u8 as f32 + noise);
            }
        }
    }
    (image, label)
}

/// The header of the RAS grid's voxels stored as `map` lays them out: every voxel keeps
/// its world position.
fn header_for(map: &AxisMap) -> NiftiHeaderInfo {
    let world = |v: [usize; 3]| [0, 1, 2].map(|a| SPACING[a] * v[a] as f64);
    let mut h = NiftiHeaderInfo::new(map.axes(DIMS), map.axes(SPACING));
    let origin = world(map.source_voxel([0; 3], DIMS));
    for axis in 0..3 {
        let mut step = [0; 3];
        step[axis] = 1;
        let next = world(map.source_voxel(step, DIMS));
        for w in 0..3 {
            h.srow[w][axis] = (next[w] - origin[w]) as f32;
        }
    }
    for (w, row) in h.srow.iter_mut().enumerate() {
        row[3] = origin[w] as f32;
    }
    h.qform_code = 0;
    h
}

/// A manifest of c0 and c1 stored in RAS and c2, c0's voxels stored in `stored`.
fn dataset(dir: &Path, stored: &str) -> PathBuf {
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    let mut entries = Vec::new();
    for c in 0..3 {
        let (image, label) = ras_case(if c == 2 { 0 } else { c });
        let code = if c == 2 { stored } else { "RAS" };
        let map = AxisMap::between("RAS", code).unwrap();
        let header = header_for(&map);
        assert_eq!(orientation(&header.affine()), code);
        let (img, seg) = (format!("c{c}.nii.gz"), format!("c{c}_seg.nii.gz"));
        let image = map.apply(DIMS, 1, &image);
        write_nifti(
            &data.join(&img),
            &header,
            1,
            VoxelData::Float32(&image),
            (1.0, 0.0),
        )
        .unwrap();
        write_label_map(&data.join(&seg), &header, &map.apply(DIMS, 1, &label)).unwrap();
        entries
            .push(serde_json::json!({"id": format!("c{c}"), "images": {"mr": img}, "label": seg}));
    }
    let manifest = serde_json::json!({
        "format": "voxseg-manifest",
        "version": 1,
        "modalities": ["mr"],
        "labels": [{"name": "background", "value": 0}, {"name": "lesion", "value": 1}],
        "cases": entries,
    });
    std::fs::write(data.join("manifest.json"), manifest.to_string()).unwrap();
    let split = serde_json::json!({"train": ["c0", "c1", "c2"], "val": [], "test": []});
    std::fs::write(dir.join("split.json"), split.to_string()).unwrap();
    data.join("manifest.json")
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

#[test]
fn a_case_stored_in_another_orientation_is_trained_and_predicted_as_its_twin() {
    let dir = temp_dir("twin");
    let manifest = dataset(&dir, "PSL");
    let (m, run) = (manifest.to_str().unwrap(), dir.join("run"));
    let (r, split) = (run.to_str().unwrap(), dir.join("split.json"));
    #[rustfmt::skip]
    let (_, stderr) = voxseg(&[
        "train", "--data", m, "--out", r, "--target", "classes", "--device", "cpu",
        "--split-file", split.to_str().unwrap(), "--features", "4", "--max-features", "8",
        "--batch", "1", "--workers", "1", "--epochs", "1", "--iters-per-epoch", "2",
        "--no-augment",
    ]);
    assert!(
        stderr.contains("cases differ in orientation") && stderr.contains("this run trains in RAS"),
        "{stderr}"
    );
    let card: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("model.json")).unwrap()).unwrap();
    assert_eq!(card["preprocess"]["orientation"], "RAS", "{card}");

    let out = dir.join("pred");
    #[rustfmt::skip]
    voxseg(&[
        "predict", "--model", r, "--data", m, "--out", out.to_str().unwrap(), "--split", "all",
        "--device", "cpu", "--checkpoint", "last",
    ]);
    let read = |c: usize| NiftiFile::open(&out.join(format!("c{c}.nii.gz"))).unwrap();
    let input = NiftiFile::open(&manifest.with_file_name("c2.nii.gz")).unwrap();
    let (twin, original) = (read(2), read(0));
    // Written on c2's own grid...
    assert_eq!(twin.header().dims, input.header().dims);
    assert_eq!(twin.header().affine(), input.header().affine());
    assert_eq!(orientation(&twin.header().affine()), "PSL");
    // ...with c0's segmentation: the network saw the same voxels.
    let back = AxisMap::between("PSL", "RAS").unwrap();
    let twin_in_ras = back.apply(twin.header().dims, 1, &twin.channel(0).unwrap());
    let original = original.channel(0).unwrap();
    assert_eq!(twin_in_ras, original);
    assert!(
        original.iter().any(|&v| v != original[0]),
        "a segmentation, not a constant"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn cases_that_share_an_orientation_are_left_as_stored() {
    let dir = temp_dir("same");
    let manifest = dataset(&dir, "RAS");
    let (m, run) = (manifest.to_str().unwrap(), dir.join("run"));
    let (r, split) = (run.to_str().unwrap(), dir.join("split.json"));
    #[rustfmt::skip]
    let (_, stderr) = voxseg(&[
        "train", "--data", m, "--out", r, "--target", "classes", "--device", "cpu",
        "--split-file", split.to_str().unwrap(), "--features", "4", "--max-features", "8",
        "--batch", "1", "--workers", "1", "--epochs", "1", "--iters-per-epoch", "1",
        "--no-augment",
    ]);
    assert!(!stderr.contains("orientation"), "{stderr}");
    let card: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("model.json")).unwrap()).unwrap();
    assert_eq!(
        card["preprocess"]["orientation"],
        serde_json::Value::Null,
        "{card}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
