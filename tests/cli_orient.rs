//! Cases stored in different orientations through the CLI: training reorients them to the
//! training cases' most common orientation and records it, and prediction writes each result
//! back on its input's own grid, so a case stored with its axes permuted and flipped gets
//! the same segmentation, in its own layout, as the case it was made from.
mod cli_common;

use cli_common::{
    read_json, s, temp_dir, train_tiny, voxseg, write_lesion_case, write_lesion_manifest, Outcome,
};
use std::path::{Path, PathBuf};
use voxseg::data::nifti::{NiftiFile, NiftiHeaderInfo};
use voxseg::data::orient::{orientation, AxisMap};

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
        let id = format!("c{c}");
        let (image, label) = (map.apply(DIMS, 1, &image), map.apply(DIMS, 1, &label));
        entries.push(write_lesion_case(&data, &id, &header, &image, &label));
    }
    let split = serde_json::json!({"train": ["c0", "c1", "c2"], "val": [], "test": []});
    std::fs::write(dir.join("split.json"), split.to_string()).unwrap();
    write_lesion_manifest(&data, entries)
}

/// Trains a tiny CPU model into `dir/run` on the manifest's three cases (all training
/// cases, per `dir/split.json`), with `extra` flags; returns the run folder and what
/// training printed.
fn train_with(dir: &Path, manifest: &Path, extra: &[&str]) -> (PathBuf, Outcome) {
    let (run, split) = (dir.join("run"), dir.join("split.json"));
    let mut args = vec!["--split-file", s(&split)];
    args.extend_from_slice(extra);
    let r = train_tiny(manifest, &run, &args);
    (run, r)
}

/// `train_with` for one epoch of `iters` steps.
fn train(dir: &Path, manifest: &Path, iters: &str) -> (PathBuf, Outcome) {
    train_with(
        dir,
        manifest,
        &["--epochs", "1", "--iters-per-epoch", iters],
    )
}

#[test]
fn a_case_stored_in_another_orientation_is_trained_and_predicted_as_its_twin() {
    let dir = temp_dir("twin");
    let manifest = dataset(&dir, "PSL");
    let (run, trained) = train(&dir, &manifest, "2");
    assert!(
        trained.stderr.contains("cases differ in orientation")
            && trained.stderr.contains("this run trains in RAS"),
        "{}",
        trained.stderr
    );
    let card = read_json(&run.join("model.json"));
    assert_eq!(card["preprocess"]["orientation"], "RAS", "{card}");

    let out = dir.join("pred");
    #[rustfmt::skip]
    let predicted = voxseg(&[
        "predict", "--model", s(&run), "--data", s(&manifest), "--out", s(&out),
        "--split", "all", "--device", "cpu", "--checkpoint", "last",
    ]);
    assert!(predicted.ok, "{}{}", predicted.stdout, predicted.stderr);
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
fn cases_that_share_an_orientation_are_left_as_stored_and_it_is_recorded() {
    let dir = temp_dir("same");
    let manifest = dataset(&dir, "RAS");
    let (run, trained) = train(&dir, &manifest, "1");
    assert!(
        !trained.stderr.contains("orientation"),
        "{}",
        trained.stderr
    );
    // Recorded all the same: prediction brings an input stored otherwise to it.
    let card = read_json(&run.join("model.json"));
    assert_eq!(card["preprocess"]["orientation"], "RAS", "{card}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn resuming_keeps_the_orientation_the_run_recorded_or_its_absence() {
    let dir = temp_dir("resume");
    let manifest = dataset(&dir, "PSL");
    // The config the run started from leaves the orientation open: resuming with it again
    // is not a change, though the run recorded the orientation it chose.
    let config = dir.join("config.json");
    std::fs::write(&config, r#"{"preprocess": {"background_value": 0.0}}"#).unwrap();
    let run = dir.join("run");
    let train = |extra: &[&str]| {
        let flags = ["--config", s(&config), "--iters-per-epoch", "1"];
        train_with(&dir, &manifest, &[&flags, extra].concat())
    };
    train(&["--epochs", "1"]);
    train(&["--resume", "--epochs", "2"]);
    let orientation_of =
        |file: &str| read_json(&run.join(file))["preprocess"]["orientation"].clone();
    assert_eq!(orientation_of("model.json"), "RAS");
    // A run whose config.json predates recorded orientations resumes with its cases as
    // stored, as it started.
    let mut saved = read_json(&run.join("config.json"));
    saved["preprocess"]
        .as_object_mut()
        .unwrap()
        .remove("orientation");
    std::fs::write(run.join("config.json"), saved.to_string()).unwrap();
    let r = voxseg(&["train", "--out", s(&run), "--resume", "--epochs", "3"]);
    assert!(r.ok, "{}{}", r.stdout, r.stderr);
    assert_eq!(orientation_of("model.json"), serde_json::Value::Null);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A cache made without a named orientation keeps each case as stored: training from one
/// whose cases differ in orientation is refused, naming the orientations and the fix;
/// remade in one orientation, it trains.
#[test]
fn training_refuses_a_cache_of_mixed_orientations() {
    let dir = temp_dir("cache");
    let manifest = dataset(&dir, "PSL");
    let split = dir.join("split.json");
    let mixed = dir.join("mixed");
    let made = voxseg(&["preprocess", "--data", s(&manifest), "--out", s(&mixed)]);
    assert!(made.ok, "{}", made.stderr);
    assert!(made.stderr.contains("2 orientations"), "{}", made.stderr);
    let sidecar = read_json(&mixed.join("c2.json"));
    assert_eq!(sidecar["orientation"], "PSL", "{sidecar}");
    let run = dir.join("run");
    #[rustfmt::skip]
    let refused = voxseg(&[
        "train", "--data", s(&manifest), "--out", s(&run), "--cache", s(&mixed),
        "--split-file", s(&split), "--target", "classes", "--device", "cpu",
        "--epochs", "1", "--iters-per-epoch", "1",
    ]);
    assert!(!refused.ok, "{}", refused.stdout);
    for part in [
        "PSL (1)",
        "RAS (2)",
        "\"orientation\": \"RAS\"",
        "without --cache",
    ] {
        assert!(refused.stderr.contains(part), "{part}: {}", refused.stderr);
    }

    let config = dir.join("ras.json");
    std::fs::write(&config, r#"{"preprocess": {"orientation": "RAS"}}"#).unwrap();
    let ras = dir.join("ras");
    #[rustfmt::skip]
    let made = voxseg(&[
        "preprocess", "--data", s(&manifest), "--out", s(&ras), "--config", s(&config),
    ]);
    assert!(made.ok, "{}", made.stderr);
    assert_eq!(read_json(&ras.join("c2.json"))["orientation"], "RAS");
    #[rustfmt::skip]
    train_tiny(&manifest, &run, &[
        "--cache", s(&ras), "--config", s(&config), "--split-file", s(&split),
        "--epochs", "1", "--iters-per-epoch", "1",
    ]);
    let card = read_json(&run.join("model.json"));
    assert_eq!(card["preprocess"]["orientation"], "RAS", "{card}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Training from a cache whose cases were kept as stored, all in one orientation, records
/// that orientation as training without the cache does, and resumes from the same cache.
#[test]
fn training_from_a_cache_records_the_orientation_its_cases_share() {
    let dir = temp_dir("shared");
    let manifest = dataset(&dir, "RAS");
    let cache = dir.join("cache");
    let made = voxseg(&["preprocess", "--data", s(&manifest), "--out", s(&cache)]);
    assert!(made.ok, "{}", made.stderr);
    assert_eq!(
        read_json(&cache.join("cache.json"))["spec"]["orientation"],
        serde_json::Value::Null
    );
    let train = |extra: &[&str]| {
        let flags = ["--cache", s(&cache), "--iters-per-epoch", "1"];
        train_with(&dir, &manifest, &[&flags, extra].concat()).0
    };
    let run = train(&["--epochs", "1"]);
    for file in ["model.json", "config.json"] {
        let recorded = read_json(&run.join(file))["preprocess"]["orientation"].clone();
        assert_eq!(recorded, "RAS", "{file}");
    }
    train(&["--resume", "--epochs", "2"]);
    std::fs::remove_dir_all(&dir).unwrap();
}
