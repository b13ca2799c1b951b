//! Helpers shared by the command-line integration tests (tests/cli_*.rs, tests/e2e.rs,
//! tests/ensemble.rs): running the binary and checking how it ended, temporary folders,
//! synthetic datasets, a small training configuration, crafted label maps and reading a
//! run's files back.
// Each test binary compiles this module and uses only a subset of it.
#![allow(dead_code)]

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;
use voxseg::data::nifti::{write_label_map, NiftiHeaderInfo};
use voxseg::data::synth::{write_dataset, SynthLayout, SynthOptions, SynthStorage};
use voxseg::optim::LrSchedule;
use voxseg::train::TrainConfig;

/// A fresh, empty folder under the system's temporary folder, named after the test binary,
/// `name` and this process.
pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "voxseg-{}-{name}-{}",
        env!("CARGO_CRATE_NAME"),
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A fresh, empty folder under cargo's scratch folder for integration tests, for a static
/// fixture: it is never dropped, so it must not pile up in the system's temporary folder.
pub fn fixture_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// What a run of the binary did.
pub struct Outcome {
    /// The exit code; None when a signal ended the process.
    pub code: Option<i32>,
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

/// An argument list that mixes strings and paths: `&[&"evaluate" as Arg, &path]`.
pub type Arg<'a> = &'a dyn AsRef<OsStr>;

/// Runs the binary with `args` in this process's folder.
pub fn voxseg<S: AsRef<OsStr>>(args: &[S]) -> Outcome {
    outcome(Command::new(env!("CARGO_BIN_EXE_voxseg")).args(args))
}

/// Runs the binary with `args` in the folder `cwd`.
pub fn voxseg_in<S: AsRef<OsStr>>(cwd: &Path, args: &[S]) -> Outcome {
    outcome(
        Command::new(env!("CARGO_BIN_EXE_voxseg"))
            .current_dir(cwd)
            .args(args),
    )
}

fn outcome(command: &mut Command) -> Outcome {
    let out = command.output().unwrap();
    Outcome {
        code: out.status.code(),
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The command was refused: exit code 1 and one line on stderr holding every one of `words`.
pub fn assert_refused(r: &Outcome, words: &[&str]) {
    assert_eq!(r.code, Some(1), "{}{}", r.stdout, r.stderr);
    assert_eq!(r.stderr.trim().lines().count(), 1, "{}", r.stderr);
    for w in words {
        assert!(r.stderr.contains(w), "no '{w}' in: {}", r.stderr);
    }
}

/// `voxseg preprocess --data DATA --out OUT` plus `extra`.
pub fn preprocess(data: &Path, out: &Path, extra: &[&str]) -> Outcome {
    let mut args = vec!["preprocess", "--data", s(data), "--out", s(out)];
    args.extend_from_slice(extra);
    voxseg(&args)
}

/// A path as a `&str` argument.
pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Writes a synthetic dataset of `cases` cubes of side `size`, int16-stored, to `out`.
pub fn synth(out: &Path, layout: SynthLayout, cases: usize, size: usize, seed: u64) {
    write_dataset(&SynthOptions {
        out: out.to_path_buf(),
        cases,
        size: [size; 3],
        seed,
        layout,
        storage: SynthStorage::Int16,
    })
    .unwrap();
}

/// Six synthetic BraTS 2021 cases of `size`^3 in `dir/data`.
pub fn brats_dataset(dir: &Path, size: usize, seed: u64) -> PathBuf {
    let data = dir.join("data");
    synth(&data, SynthLayout::Brats2021, 6, size, seed);
    data
}

/// The id of the synthetic BraTS 2021 case `index`.
pub fn brats_id(index: usize) -> String {
    format!("SynthBraTS2021_{index:05}")
}

/// Copies a folder tree (small test data only).
pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// The names of the entries of `dir`, sorted.
pub fn sorted_entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// A JSON file's contents.
pub fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// A small, fast CPU run: widths 4 to 8, depth 2, 16^3 patches, batch 1, Adam at a
/// constant 1e-2, no augmentation, one epoch of one step on one worker. Tests change what
/// they need with `TrainConfig { .., ..small_config(data, out) }`.
pub fn small_config(data: &Path, out: &Path) -> TrainConfig {
    TrainConfig {
        data: data.to_path_buf(),
        out: out.to_path_buf(),
        device: "cpu".into(),
        features: Some(4),
        max_features: Some(8),
        depth: Some(2),
        patch: Some([16, 16, 16]),
        batch: Some(1),
        optimizer: voxseg::optim::OptimizerSpec::keras_adam(),
        lr: 1e-2,
        schedule: LrSchedule::Constant,
        epochs: 1,
        iters_per_epoch: 1,
        workers: 1,
        augment: voxseg::data::augment::AugmentSpec::none(),
        ..TrainConfig::default()
    }
}

/// The rows of a run's `metrics.jsonl`.
pub fn metrics(run: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The grid of `write_mask`: 10x10x10 voxels of 1 x 1 x 2 mm.
pub fn mask_grid() -> NiftiHeaderInfo {
    NiftiHeaderInfo::new([10, 10, 10], [1.0, 1.0, 2.0])
}

/// A 10x10x10 label map (spacing 1, 1, 2 mm) of boxes [lo, hi) of one value each.
pub fn write_mask(path: &Path, boxes: &[([usize; 3], [usize; 3], u8)]) {
    write_mask_on(path, &mask_grid(), boxes);
}

/// `write_mask` on another 10x10x10 grid than `mask_grid`.
pub fn write_mask_on(
    path: &Path,
    header: &NiftiHeaderInfo,
    boxes: &[([usize; 3], [usize; 3], u8)],
) {
    let mut v = vec![0u8; 1000];
    for (lo, hi, value) in boxes {
        for z in lo[2]..hi[2] {
            for y in lo[1]..hi[1] {
                for x in lo[0]..hi[0] {
                    v[(z * 10 + y) * 10 + x] = *value;
                }
            }
        }
    }
    write_label_map(path, header, &v).unwrap();
}

/// Writes case `id`'s image (one modality, "mr") and label (background 0, lesion 1) as
/// `<id>.nii.gz` and `<id>_seg.nii.gz` on `header` into `data`, returning its manifest
/// entry for [`write_lesion_manifest`].
pub fn write_lesion_case(
    data: &Path,
    id: &str,
    header: &NiftiHeaderInfo,
    image: &[f32],
    label: &[u8],
) -> serde_json::Value {
    let (img, seg) = (format!("{id}.nii.gz"), format!("{id}_seg.nii.gz"));
    voxseg::data::nifti::write_nifti(
        &data.join(&img),
        header,
        1,
        voxseg::data::nifti::VoxelData::Float32(image),
        (1.0, 0.0),
    )
    .unwrap();
    write_label_map(&data.join(&seg), header, label).unwrap();
    serde_json::json!({"id": id, "images": {"mr": img}, "label": seg})
}

/// The manifest of the cases `write_lesion_case` wrote into `data`; returns its path.
pub fn write_lesion_manifest(data: &Path, entries: Vec<serde_json::Value>) -> PathBuf {
    let manifest = serde_json::json!({
        "format": "voxseg-manifest",
        "version": 1,
        "modalities": ["mr"],
        "labels": [{"name": "background", "value": 0}, {"name": "lesion", "value": 1}],
        "cases": entries,
    });
    let path = data.join("manifest.json");
    std::fs::write(&path, manifest.to_string()).unwrap();
    path
}

/// `voxseg train` of a tiny network (4 to 8 features, batch 1, one worker, no augmentation,
/// target classes) on the CPU, from `data` into `run`, plus `extra` (epochs, iterations,
/// split file, ...); it must succeed.
pub fn train_tiny(data: &Path, run: &Path, extra: &[&str]) -> Outcome {
    #[rustfmt::skip]
    let mut args = vec![
        "train", "--data", s(data), "--out", s(run), "--target", "classes", "--device", "cpu",
        "--features", "4", "--max-features", "8", "--batch", "1", "--workers", "1",
        "--no-augment",
    ];
    args.extend_from_slice(extra);
    let r = voxseg(&args);
    assert!(r.ok, "voxseg {args:?}:\n{}{}", r.stdout, r.stderr);
    r
}
