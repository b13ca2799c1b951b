//! What `check`, `preprocess` and `train` make of the data they are given, through the
//! binary: exact zeros inside the object are normalised as tissue, `check` reports every
//! missing file and needs only the selected modalities, split files (ours and nnU-Net's
//! `splits_final.json`), nnU-Net raw layout checks, NaN voxels and spacings as written, and
//! a stale cache named by its modification times.
use std::path::{Path, PathBuf};
use voxseg::data::nifti::{write_label_map, write_nifti, NiftiHeaderInfo, VoxelData};
use voxseg::data::synth::SynthLayout;

mod cli_common;

use cli_common::{brats_id, preprocess, read_json, s, synth, temp_dir, voxseg, Outcome};

const CT: [usize; 3] = [16, 16, 16];

/// A one-modality "CT" manifest: tissue of about 400 in [2, 14)^3, zero outside it, and a
/// block [6, 10)^3 of exactly 0 inside the tissue, which is the labelled structure.
fn ct_manifest(dir: &Path, spacing: [f64; 3]) -> (PathBuf, Vec<f32>) {
    let header = NiftiHeaderInfo::new(CT, spacing);
    let mut image = vec![0.0f32; CT.iter().product()];
    let mut label = vec![0u8; image.len()];
    for z in 2..14 {
        for y in 2..14 {
            for x in 2..14 {
                let i = x + 16 * (y + 16 * z);
                let hole = [x, y, z].iter().all(|c| (6..10).contains(c));
                image[i] = if hole {
                    0.0
                } else {
                    390.0 + (i % 7) as f32 * 3.0
                };
                label[i] = u8::from(hole);
            }
        }
    }
    write_nifti(
        &dir.join("c0.nii.gz"),
        &header,
        1,
        VoxelData::Float32(&image),
        (1.0, 0.0),
    )
    .unwrap();
    write_label_map(&dir.join("c0_seg.nii.gz"), &header, &label).unwrap();
    let manifest = dir.join("manifest.json");
    let json = serde_json::json!({
        "format": "voxseg-manifest", "version": 1, "modalities": ["ct"],
        "labels": [{"name": "background", "value": 0}, {"name": "water", "value": 1}],
        "cases": [{"id": "c0", "images": {"ct": "c0.nii.gz"}, "label": "c0_seg.nii.gz"}],
    });
    std::fs::write(&manifest, serde_json::to_vec(&json).unwrap()).unwrap();
    (manifest, image)
}

#[test]
fn exact_zeros_inside_the_object_are_normalised_as_tissue() {
    let dir = temp_dir("ct");
    let (manifest, raw) = ct_manifest(&dir, [1.0; 3]);
    let cache = dir.join("cache");
    let Outcome {
        ok, stderr: err, ..
    } = preprocess(&manifest, &cache, &[]);
    assert!(ok, "{err}");
    let sidecar = read_json(&cache.join("c0.json"));
    assert_eq!(sidecar["crop"]["start"], serde_json::json!([2, 2, 2]));
    assert_eq!(sidecar["dims"], serde_json::json!([12, 12, 12]));
    let bytes = std::fs::read(cache.join("c0.image.f32")).unwrap();
    let grid: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    // The mask is the whole tissue block, the zeros inside included.
    let inside: Vec<f64> = (0..raw.len())
        .filter(|i| {
            let p = [i % 16, (i / 16) % 16, i / 256];
            p.iter().all(|c| (2..14).contains(c))
        })
        .map(|i| raw[i] as f64)
        .collect();
    let n = inside.len() as f64;
    let mean = inside.iter().sum::<f64>() / n;
    let std = (inside.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n).sqrt();
    let at = |x: usize, y: usize, z: usize| grid[(x - 2) + 12 * ((y - 2) + 12 * (z - 2))];
    let hole = at(8, 8, 8);
    assert!(
        (hole as f64 - (0.0 - mean) / std).abs() < 1e-4,
        "hole {hole}, mean {mean}, std {std}"
    );
    assert!(hole < -3.0, "the zero block must stand out: {hole}");
    let tissue = at(4, 4, 4);
    let want = (raw[4 + 16 * (4 + 16 * 4)] as f64 - mean) / std;
    assert!((tissue as f64 - want).abs() < 1e-4, "{tissue} vs {want}");
    assert!(tissue.abs() < 1.0, "{tissue}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A small, fast training run on the CPU.
const SMALL: [&str; 14] = [
    "--device",
    "cpu",
    "--features",
    "4",
    "--max-features",
    "8",
    "--batch",
    "1",
    "--epochs",
    "1",
    "--iters-per-epoch",
    "1",
    "--no-augment",
    "--target=classes",
];

fn brats_file(data: &Path, case: usize, suffix: &str) -> PathBuf {
    let id = brats_id(case);
    data.join(&id).join(format!("{id}_{suffix}.nii.gz"))
}

#[test]
fn check_reports_every_missing_file_and_needs_only_the_selected_modalities() {
    let dir = temp_dir("missing");
    let data = dir.join("data");
    synth(&data, SynthLayout::Brats2021, 4, 16, 3);
    let t2 = brats_file(&data, 1, "t2");
    let flair = brats_file(&data, 3, "flair");
    std::fs::remove_file(&t2).unwrap();
    std::fs::remove_file(&flair).unwrap();

    let Outcome {
        ok,
        stdout: out,
        stderr: err,
        ..
    } = voxseg(&["check", "--data", s(&data)]);
    assert!(!ok, "{out}{err}");
    for (file, what) in [
        (&t2, "missing t2 image file"),
        (&flair, "missing flair image file"),
    ] {
        assert!(
            out.contains(&format!("problem: {}: case", file.display())) && out.contains(what),
            "{out}"
        );
    }
    assert!(
        out.ends_with("4 case(s) checked: 2 readable, 2 with a problem\n"),
        "{out}"
    );

    let Outcome {
        ok,
        stdout: out,
        stderr: err,
        ..
    } = voxseg(&["check", "--data", s(&data), "--modalities", "t1,t1ce"]);
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("4 case(s) checked: 4 readable, 0 with a problem"),
        "{out}"
    );
    let Outcome {
        ok, stdout: out, ..
    } = voxseg(&["check", "--data", s(&data), "--modalities", "t1,t2"]);
    assert!(
        !ok && out.contains("_t2.nii.gz") && !out.contains("_flair.nii.gz"),
        "{out}"
    );

    // Training without --modalities names both files in one line; with t1,t1ce it trains.
    let run = dir.join("run");
    let mut args = vec!["train", "--data", s(&data), "--out", s(&run)];
    args.extend(SMALL);
    let Outcome {
        ok, stderr: err, ..
    } = voxseg(&args);
    assert!(!ok && err.trim().lines().count() == 1, "{err}");
    assert!(
        err.contains("2 files are missing")
            && err.contains(&t2.display().to_string())
            && err.contains(&flair.display().to_string())
            && err.contains("voxseg check"),
        "{err}"
    );
    args.extend(["--modalities", "t1,t1ce"]);
    let Outcome {
        ok,
        stdout: out,
        stderr: err,
        ..
    } = voxseg(&args);
    assert!(ok, "{out}{err}");
    assert!(run.join("checkpoints/last.safetensors").is_file());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn check_reports_every_missing_file_of_a_manifest() {
    let dir = temp_dir("missing-manifest");
    let (manifest, _) = ct_manifest(&dir, [1.0; 3]);
    let mut json = read_json(&manifest);
    let cases = json["cases"].as_array_mut().unwrap();
    cases.push(
        serde_json::json!({"id": "c1", "images": {"ct": "c1.nii.gz"}, "label": "c0_seg.nii.gz"}),
    );
    cases.push(
        serde_json::json!({"id": "c2", "images": {"ct": "c0.nii.gz"}, "label": "c2_seg.nii.gz"}),
    );
    std::fs::write(&manifest, serde_json::to_vec(&json).unwrap()).unwrap();
    let Outcome {
        ok, stdout: out, ..
    } = voxseg(&["check", "--data", s(&manifest)]);
    assert!(!ok, "{out}");
    assert!(
        out.contains("c1.nii.gz: case c1: missing ct image file")
            && out.contains("c2_seg.nii.gz: case c2: missing label file")
            && out.contains("3 case(s) checked: 1 readable, 2 with a problem"),
        "{out}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A manifest that gives one file for two modalities, or a case's label as its image, is
/// refused by check, naming the case.
#[test]
fn check_refuses_a_file_given_twice_in_a_manifest_case() {
    let dir = temp_dir("twice-manifest");
    let (manifest, _) = ct_manifest(&dir, [1.0; 3]);
    let mut json = read_json(&manifest);
    json["cases"].as_array_mut().unwrap().push(
        serde_json::json!({"id": "c1", "images": {"ct": "c0_seg.nii.gz"}, "label": "c0_seg.nii.gz"}),
    );
    std::fs::write(&manifest, serde_json::to_vec(&json).unwrap()).unwrap();
    let Outcome {
        ok, stdout: out, ..
    } = voxseg(&["check", "--data", s(&manifest)]);
    assert!(!ok, "{out}");
    assert!(
        out.contains("case c1: the label file is also its 'ct' image"),
        "{out}"
    );
    let mut json = read_json(&manifest);
    json["modalities"] = serde_json::json!(["ct", "pet"]);
    json["cases"] = serde_json::json!([
        {"id": "c0", "images": {"ct": "c0.nii.gz", "pet": "c0.nii.gz"}, "label": "c0_seg.nii.gz"}
    ]);
    std::fs::write(&manifest, serde_json::to_vec(&json).unwrap()).unwrap();
    let Outcome {
        ok, stdout, stderr, ..
    } = voxseg(&["check", "--data", s(&manifest)]);
    assert!(!ok, "{stdout}");
    assert!(
        stderr.contains("case c0: images 'ct' and 'pet' are the same file"),
        "{stdout}{stderr}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// An MSD `dataset.json` entry is a case whatever its name, but for the macOS metadata
/// files (`._NAME`) MSD's archives hold; a `numTraining` other than the entries listed is
/// said.
#[test]
fn msd_entries_are_cases_but_macos_metadata_and_numtraining_is_checked() {
    let dir = temp_dir("msd-names");
    let data = dir.join("data");
    synth(&data, SynthLayout::Msd, 3, 16, 5);
    let json_path = data.join("dataset.json");
    let mut json = read_json(&json_path);
    let first = json["training"][0]["image"].as_str().unwrap().to_string();
    let renamed = first.replace("imagesTr/", "imagesTr/_");
    std::fs::rename(data.join(&first), data.join(&renamed)).unwrap();
    json["training"][0]["image"] = serde_json::json!(renamed);
    let metadata = first.replace("imagesTr/", "imagesTr/._");
    std::fs::write(data.join(&metadata), b"macOS metadata").unwrap();
    let label = json["training"][0]["label"].clone();
    json["training"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({"image": metadata, "label": label}));
    std::fs::write(&json_path, serde_json::to_vec(&json).unwrap()).unwrap();
    let Outcome {
        ok, stdout, stderr, ..
    } = voxseg(&["check", "--data", s(&data)]);
    assert!(ok, "{stdout}{stderr}");
    assert!(stdout.contains("3 labelled case(s)"), "{stdout}");
    assert!(
        !stderr.contains("warning"),
        "numTraining 3 matches the 3 cases: {stderr}"
    );
    json["numTraining"] = serde_json::json!(5);
    std::fs::write(&json_path, serde_json::to_vec(&json).unwrap()).unwrap();
    let Outcome {
        ok, stdout, stderr, ..
    } = voxseg(&["check", "--data", s(&data)]);
    assert!(ok, "{stdout}{stderr}");
    assert!(
        stderr.contains("numTraining is 5, but 'training' lists 3 case(s)"),
        "{stderr}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn split_files_note_unused_cases_and_accept_nnunet_folds_with_fold() {
    let dir = temp_dir("splits");
    let data = dir.join("data");
    synth(&data, SynthLayout::Brats2021, 6, 16, 3);
    let ids: Vec<String> = (0..6).map(brats_id).collect();
    let train = |out: &str, extra: &[&str]| {
        let run = dir.join(out);
        let mut args = vec!["train", "--data", s(&data), "--out", s(&run)];
        args.extend(SMALL);
        args.extend(extra);
        let Outcome {
            ok, stderr: err, ..
        } = voxseg(&args);
        (ok, err, run)
    };
    let split_of = |run: &Path| read_json(&run.join("split.json"));

    let partial = dir.join("partial.json");
    let lists = serde_json::json!({"train": &ids[..2], "val": [&ids[2]], "test": [&ids[3]]});
    std::fs::write(&partial, lists.to_string()).unwrap();
    let (ok, err, run) = train("partial", &["--split-file", s(&partial)]);
    assert!(ok, "{err}");
    assert!(
        err.contains(
            "partial.json: 2 labelled case(s) are in none of its lists and go unused: \
             SynthBraTS2021_00004, SynthBraTS2021_00005"
        ),
        "{err}"
    );
    assert_eq!(split_of(&run), lists);

    let nnunet = dir.join("splits_final.json");
    let folds = serde_json::json!([
        {"train": &ids[..4], "val": &ids[4..]},
        {"train": &ids[2..], "val": &ids[..2]},
    ]);
    std::fs::write(&nnunet, folds.to_string()).unwrap();
    let (ok, err, run) = train("no-fold", &["--split-file", s(&nnunet)]);
    assert!(!ok && !run.exists(), "{err}");
    assert!(
        err.contains("splits_final.json: holds 2 folds") && err.contains("--fold K (0 to 1)"),
        "{err}"
    );
    let (ok, err, run) = train("fold1", &["--split-file", s(&nnunet), "--fold", "1"]);
    assert!(ok, "{err}");
    assert!(
        err.contains("fold 1: 4 train / 2 val cases; the test set is empty"),
        "{err}"
    );
    assert_eq!(
        split_of(&run),
        serde_json::json!({"train": &ids[2..], "val": &ids[..2], "test": []})
    );
    let (ok, err, run) = train("fold2", &["--split-file", s(&nnunet), "--fold", "2"]);
    assert!(
        !ok && !run.exists() && err.contains("--fold 2: the file holds 2 fold(s)"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A one-channel nnU-Net v2 raw dataset of `cases` 8^3 cases with `dataset.json`'s
/// `numTraining` and `file_ending` as given (the files are always .nii.gz).
fn nnunet_dataset(root: &Path, cases: usize, num_training: usize, ending: &str) {
    let header = NiftiHeaderInfo::new([8, 8, 8], [1.0; 3]);
    let image: Vec<f32> = (0..512).map(|i| 1.0 + (i % 13) as f32).collect();
    let label: Vec<u8> = (0..512).map(|i| u8::from(i % 8 > 4)).collect();
    std::fs::create_dir_all(root.join("imagesTr")).unwrap();
    std::fs::create_dir_all(root.join("labelsTr")).unwrap();
    for c in 0..cases {
        let id = format!("case_{c:03}");
        let path = root.join(format!("imagesTr/{id}_0000.nii.gz"));
        write_nifti(&path, &header, 1, VoxelData::Float32(&image), (1.0, 0.0)).unwrap();
        write_label_map(&root.join(format!("labelsTr/{id}.nii.gz")), &header, &label).unwrap();
    }
    let json = serde_json::json!({
        "channel_names": {"0": "CT"}, "labels": {"background": 0, "liver": 1},
        "numTraining": num_training, "file_ending": ending,
    });
    std::fs::write(root.join("dataset.json"), json.to_string()).unwrap();
}

#[test]
fn nnunet_layout_names_orphan_labels_a_wrong_count_and_a_wrong_file_ending() {
    let dir = temp_dir("nnunet");
    let good = dir.join("Dataset001_Good");
    nnunet_dataset(&good, 3, 3, ".nii.gz");
    let Outcome {
        ok,
        stdout: out,
        stderr: err,
        ..
    } = voxseg(&["check", "--data", s(&good)]);
    assert!(ok && !err.contains("warning"), "{out}{err}");

    // A label whose case has no image.
    std::fs::copy(
        good.join("labelsTr/case_000.nii.gz"),
        good.join("labelsTr/orphan.nii.gz"),
    )
    .unwrap();
    let Outcome {
        ok,
        stdout: out,
        stderr: err,
        ..
    } = voxseg(&["check", "--data", s(&good)]);
    assert!(!ok, "{out}{err}");
    assert!(
        out.contains(
            "orphan_0000.nii.gz: case orphan: missing CT (channel 0000) image file \
             (labelsTr holds a label for this case, imagesTr no image)"
        ),
        "{out}"
    );
    // numTraining is 3, and there are now 4 cases.
    assert!(
        err.contains("numTraining is 3, but imagesTr and labelsTr hold 4 case(s)"),
        "{err}"
    );

    // One case's image stored under the other ending: missing, and the file there named.
    let ending = dir.join("Dataset004_OneNii");
    nnunet_dataset(&ending, 2, 2, ".nii.gz");
    let gz = ending.join("imagesTr/case_001_0000.nii.gz");
    let nii = ending.join("imagesTr/case_001_0000.nii");
    let bytes = std::fs::read(&gz).unwrap();
    let mut decoded = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&bytes[..]), &mut decoded)
        .unwrap();
    std::fs::write(&nii, decoded).unwrap();
    std::fs::remove_file(&gz).unwrap();
    let Outcome {
        ok, stdout: out, ..
    } = voxseg(&["check", "--data", s(&ending)]);
    assert!(!ok, "{out}");
    assert!(
        out.contains(&format!(
            "case case_001: missing CT (channel 0000) image file ({} exists, but \
             dataset.json's file_ending is \".nii.gz\")",
            nii.display()
        )),
        "{out}"
    );

    // A test case named as a training case: predictions and splits go by case id.
    let twice = dir.join("Dataset003_Twice");
    nnunet_dataset(&twice, 2, 2, ".nii.gz");
    std::fs::create_dir_all(twice.join("imagesTs")).unwrap();
    let test_image = twice.join("imagesTs/case_001_0000.nii.gz");
    std::fs::copy(twice.join("imagesTr/case_001_0000.nii.gz"), &test_image).unwrap();
    let Outcome {
        ok, stdout: out, ..
    } = voxseg(&["check", "--data", s(&twice)]);
    assert!(!ok, "{out}");
    assert!(
        out.contains(&format!(
            "{}: case id 'case_001' is in both imagesTr and imagesTs",
            test_image.display()
        )),
        "{out}"
    );

    let nii = dir.join("Dataset002_Ending");
    nnunet_dataset(&nii, 2, 2, ".nii");
    let Outcome {
        ok, stderr: err, ..
    } = voxseg(&["check", "--data", s(&nii)]);
    assert!(!ok, "{err}");
    assert!(
        err.contains(
            "imagesTr: holds 2 .nii.gz file(s) but dataset.json's file_ending is \".nii\"; \
             set \"file_ending\": \".nii.gz\""
        ),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn check_reports_every_layout_problem_then_checks_the_cases() {
    let dir = temp_dir("nnunet-stray");
    let root = dir.join("Dataset003_Stray");
    nnunet_dataset(&root, 3, 3, ".nii.gz");
    // A channel channel_names does not declare, a file not named CASE_XXXX, and a NaN in
    // another case: each is named, and the clean case still passes.
    let first = root.join("imagesTr/case_000_0000.nii.gz");
    let stray = root.join("imagesTr/case_001_0004.nii.gz");
    let odd = root.join("imagesTr/notes.nii.gz");
    std::fs::copy(&first, &stray).unwrap();
    std::fs::copy(&first, &odd).unwrap();
    let header = NiftiHeaderInfo::new([8, 8, 8], [1.0; 3]);
    let mut image = vec![1.0f32; 512];
    image[9] = f32::NAN;
    write_nifti(&first, &header, 1, VoxelData::Float32(&image), (1.0, 0.0)).unwrap();
    let Outcome {
        ok,
        stdout: out,
        stderr: err,
        ..
    } = voxseg(&["check", "--data", s(&root)]);
    assert!(!ok, "{out}{err}");
    for line in [
        format!(
            "problem: {}: case case_001: channel 0004 is not in channel_names (1 channels)",
            stray.display()
        ),
        format!(
            "problem: {}: name is not CASE_XXXX with a 4-digit channel number",
            odd.display()
        ),
        format!(
            "problem: {}: case case_000: 1 NaN/Inf voxel(s)",
            first.display()
        ),
    ] {
        assert!(out.contains(&line), "{line}\n{out}");
    }
    assert!(
        out.ends_with(
            "1 problem(s) in the listing; 3 case(s) checked: 1 readable, 2 with a problem\n"
        ),
        "{out}"
    );
    assert!(
        err.contains(
            "1 problem(s) in the listing, for which training and predict refuse the dataset; 2 case(s) with a problem"
        ),
        "{err}"
    );

    // A NIfTI file is no dataset.
    let Outcome {
        ok, stderr: err, ..
    } = voxseg(&["check", "--data", s(&first)]);
    assert!(!ok, "{err}");
    assert!(
        err.contains(&format!(
            "{}: is a NIfTI file, not a dataset folder or a JSON manifest",
            first.display()
        )),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn check_names_replace_nan_and_prints_spacings_as_written() {
    let dir = temp_dir("nan-spacing");
    let (manifest, mut image) = ct_manifest(&dir, [0.8, 0.8, 3.0]);
    let Outcome {
        ok,
        stdout: out,
        stderr: err,
        ..
    } = voxseg(&["check", "--data", s(&manifest)]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("spacing 0.8x0.8x3 mm"), "{out}");
    image[40] = f32::NAN;
    let header = NiftiHeaderInfo::new(CT, [0.8, 0.8, 3.0]);
    write_nifti(
        &dir.join("c0.nii.gz"),
        &header,
        1,
        VoxelData::Float32(&image),
        (1.0, 0.0),
    )
    .unwrap();
    let Outcome {
        ok, stdout: out, ..
    } = voxseg(&["check", "--data", s(&manifest)]);
    assert!(!ok, "{out}");
    assert!(
        out.contains("1 NaN/Inf voxel(s), the first at (x=8, y=2, z=0); pass --replace-nan"),
        "{out}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_stale_cache_names_the_modification_times_as_dates() {
    let dir = temp_dir("stale");
    let (manifest, _) = ct_manifest(&dir, [1.0; 3]);
    // Training needs two cases: a second one from the same files.
    let mut json = read_json(&manifest);
    let first = json["cases"][0].clone();
    let mut second = first.clone();
    second["id"] = "c1".into();
    json["cases"] = serde_json::json!([first, second]);
    std::fs::write(&manifest, json.to_string()).unwrap();
    let cache = dir.join("cache");
    let Outcome {
        ok, stderr: err, ..
    } = preprocess(&manifest, &cache, &[]);
    assert!(ok, "{err}");
    // 2001-09-09T01:46:40Z, the same size.
    let then = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000_000);
    std::fs::File::options()
        .write(true)
        .open(dir.join("c0.nii.gz"))
        .unwrap()
        .set_modified(then)
        .unwrap();
    let run = dir.join("run");
    let mut args = vec!["train", "--data", s(&manifest), "--out", s(&run)];
    args.extend(["--cache", s(&cache)]);
    args.extend(SMALL);
    let Outcome {
        ok, stderr: err, ..
    } = voxseg(&args);
    assert!(!ok, "{err}");
    assert!(
        err.contains("c0.nii.gz changed since the cache was made (modified 2001-09-09T01:46:40.000Z, the cache recorded 20"),
        "{err}"
    );
    assert!(
        !err.contains("after the epoch") && !err.contains("bytes"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
