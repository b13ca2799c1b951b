//! Dataset I/O end to end: synthetic datasets in every layout, detected and loaded back
//! voxel for voxel, and bad input of every kind refused with an error that names the case
//! and the file.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;
use voxseg::data::case::{load_case, NanPolicy};
use voxseg::data::inspect::inspect_file;
use voxseg::data::labels::LabelSpec;
use voxseg::data::layout::{detect, LayoutKind};
use voxseg::data::nifti::{
    write_label_map, write_nifti, write_probability_map, NiftiFile, NiftiHeaderInfo, VoxelData,
    VoxelType,
};
use voxseg::data::orient::{orientation, AxisMap};
use voxseg::data::synth::{
    generate_case, write_dataset, SynthCase, SynthLayout, SynthOptions, SynthStorage, ENHANCING,
    NECROSIS, OEDEMA,
};

/// Size as (z, y, x); distinct sizes so a transposition cannot pass.
const SIZE: [usize; 3] = [12, 14, 16];

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("voxseg-dataio-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn synth(dir: &Path, cases: usize, layout: SynthLayout, storage: SynthStorage) {
    write_dataset(&SynthOptions {
        out: dir.to_path_buf(),
        cases,
        size: SIZE,
        seed: 11,
        layout,
        storage,
    })
    .unwrap();
}

fn err_text<T: std::fmt::Debug>(r: voxseg::Result<T>) -> String {
    r.unwrap_err().to_string()
}

fn assert_mentions(err: &str, parts: &[&str]) {
    for p in parts {
        assert!(err.contains(p), "error {err:?} should mention {p:?}");
    }
}

fn brats_file(root: &Path, index: usize, suffix: &str) -> PathBuf {
    let id = format!("SynthBraTS2021_{index:05}");
    root.join(&id).join(format!("{id}_{suffix}.nii.gz"))
}

#[test]
fn synthetic_brats_int16_loads_back_voxel_for_voxel_with_scaling() {
    let tmp = TempDir::new("brats");
    synth(&tmp.0, 3, SynthLayout::Brats2021, SynthStorage::Int16);
    let ds = detect(&tmp.0).unwrap();
    assert_eq!(ds.layout, LayoutKind::Brats2021);
    assert_eq!(ds.modalities, ["t1", "t1ce", "t2", "flair"]);
    assert_eq!(ds.cases.len(), 3);
    ds.require_labels().unwrap();
    let all = ds.all_modalities();
    for (index, case) in ds.cases.iter().enumerate() {
        let truth = generate_case(SIZE, 11, index);
        let (data, header) = load_case(&ds, case, &all, NanPolicy::Error).unwrap();
        assert_eq!(data.id, format!("SynthBraTS2021_{index:05}"));
        assert_eq!(data.dims(), [16, 14, 12], "x, y, z from a (z, y, x) size");
        assert_eq!(header.dims, [16, 14, 12]);
        assert_eq!(header.spacing, [1.0; 3]);
        let raw = NiftiFile::open(&case.images[0].path).unwrap();
        let slope = raw.header().scl_slope;
        assert_eq!(slope, [1.0, 2.0, 0.5][index]);
        for (m, channel) in data.channels.iter().enumerate() {
            for (got, want) in channel.data.iter().zip(&truth.images[m]) {
                assert!((got - want).abs() <= slope / 2.0 + 1e-3, "{got} vs {want}");
            }
        }
        // Background stays exactly 0 through the intercept.
        assert_eq!(data.channels[0].data[0], 0.0);
        assert_eq!(data.label.unwrap().data, truth.labels);
        let a = header.affine();
        assert!(a[0][0] < -0.9 && a[1][1] < -0.9 && a[0][1] != 0.0, "{a:?}");
    }
}

#[test]
fn synthetic_msd_float32_loads_selected_modalities_in_requested_order() {
    let tmp = TempDir::new("msd");
    synth(&tmp.0, 2, SynthLayout::Msd, SynthStorage::Float32);
    // A macOS resource-fork file beside the real ones is skipped.
    std::fs::write(tmp.0.join("imagesTr/._SynthBrain_001.nii.gz"), b"junk").unwrap();
    let ds = detect(&tmp.0).unwrap();
    assert_eq!(ds.layout, LayoutKind::Msd);
    assert_eq!(ds.modalities, ["FLAIR", "T1w", "t1gd", "T2w"]);
    assert_eq!(ds.cases.len(), 2);
    let regions: Vec<(&str, &[u8])> = ds
        .label_spec
        .regions()
        .iter()
        .map(|r| (r.name.as_str(), r.classes.as_slice()))
        .collect();
    assert_eq!(
        regions,
        [
            ("WT", &[1, 2, 3][..]),
            ("TC", &[2, 3][..]),
            ("ET", &[3][..])
        ]
    );
    let selected = ds
        .select_modalities(&["t1", "t1ce", "t2", "flair"])
        .unwrap();
    assert_eq!(selected, [1, 2, 3, 0]);
    let truth: SynthCase = generate_case(SIZE, 11, 1);
    let (data, _) = load_case(&ds, &ds.cases[1], &selected, NanPolicy::Error).unwrap();
    for m in 0..4 {
        assert_eq!(data.channels[m].data, truth.images[m], "modality {m}");
    }
    assert_eq!(data.label.unwrap().data, msd_numbering(&truth.labels));
    let (two, _) = load_case(&ds, &ds.cases[0], &[2], NanPolicy::Error).unwrap();
    assert_eq!(two.channels.len(), 1);
    assert_eq!(two.channels[0].data, generate_case(SIZE, 11, 0).images[1]);
}

/// Synthetic tissue classes in MSD's numbering, which nnU-Net's BraTS conversion shares:
/// 1 oedema, 2 non-enhancing/necrotic, 3 enhancing.
fn msd_numbering(classes: &[u8]) -> Vec<u8> {
    classes
        .iter()
        .map(|&c| match c {
            OEDEMA => 1,
            NECROSIS => 2,
            ENHANCING => 3,
            _ => 0,
        })
        .collect()
}

#[test]
fn synthetic_nnunet_reads_back_as_nnunets_brats_conversion() {
    let tmp = TempDir::new("nnunet-synth");
    synth(&tmp.0, 2, SynthLayout::NnUnet, SynthStorage::Float32);
    let ds = detect(&tmp.0).unwrap();
    assert_eq!(ds.layout, LayoutKind::NnUnet);
    assert_eq!(ds.modalities, ["T1", "T1ce", "T2", "FLAIR"]);
    assert_eq!(ds.cases.len(), 2);
    // Region-based labels with regions_class_order [1, 2, 3]: WT paints oedema (1), TC
    // necrosis (2), ET enhancing (3).
    let regions: Vec<(&str, &[u8], u8)> = ds
        .label_spec
        .regions()
        .iter()
        .map(|r| (r.name.as_str(), r.classes.as_slice(), r.paint))
        .collect();
    assert_eq!(
        regions,
        [
            ("whole tumor", &[1, 2, 3][..], 1),
            ("tumor core", &[2, 3][..], 2),
            ("enhancing tumor", &[3][..], 3)
        ]
    );
    let truth = generate_case(SIZE, 11, 1);
    let (data, _) = load_case(&ds, &ds.cases[1], &ds.all_modalities(), NanPolicy::Error).unwrap();
    for m in 0..4 {
        assert_eq!(data.channels[m].data, truth.images[m], "modality {m}");
    }
    assert_eq!(data.label.unwrap().data, msd_numbering(&truth.labels));
}

#[test]
fn loading_and_inspecting_never_modify_input_files() {
    let tmp = TempDir::new("readonly");
    synth(&tmp.0, 2, SynthLayout::Brats2021, SynthStorage::Int16);
    let snapshot = |root: &Path| -> BTreeMap<PathBuf, (Vec<u8>, SystemTime)> {
        let mut out = BTreeMap::new();
        // The case folders (the root also holds synth's .voxseg-synth marker).
        let cases = std::fs::read_dir(root).unwrap().map(|e| e.unwrap().path());
        for case in cases.filter(|p| p.is_dir()) {
            for f in std::fs::read_dir(case).unwrap() {
                let p = f.unwrap().path();
                let meta = std::fs::metadata(&p).unwrap();
                out.insert(
                    p.clone(),
                    (std::fs::read(&p).unwrap(), meta.modified().unwrap()),
                );
            }
        }
        out
    };
    let before = snapshot(&tmp.0);
    assert_eq!(before.len(), 10);
    let ds = detect(&tmp.0).unwrap();
    for case in &ds.cases {
        load_case(&ds, case, &ds.all_modalities(), NanPolicy::ReplaceWithZero).unwrap();
        inspect_file(&case.images[0].path).unwrap();
    }
    assert_eq!(snapshot(&tmp.0), before);
}

#[test]
fn inspect_reports_the_synthetic_grid() {
    let tmp = TempDir::new("inspect");
    synth(&tmp.0, 1, SynthLayout::Msd, SynthStorage::Int16);
    let v = inspect_file(&tmp.0.join("imagesTr/SynthBrain_001.nii.gz")).unwrap();
    assert_eq!(v["shape"], serde_json::json!([16, 14, 12, 4]));
    assert_eq!(v["datatype"], "int16");
    assert_eq!(v["min"], serde_json::json!(0.0));
    let truth = generate_case(SIZE, 11, 0);
    let max = truth.images.iter().flatten().fold(0.0f32, |a, &b| a.max(b)) as f64;
    assert!(
        (v["max"].as_f64().unwrap() - max).abs() < 0.51,
        "{} vs {max}",
        v["max"]
    );
    assert_eq!(v["affine"], serde_json::json!(truth.header.affine()));
}

#[test]
fn brats_2023_names_and_labels() {
    let tmp = TempDir::new("brats23");
    let case = generate_case(SIZE, 3, 0);
    let id = "BraTS-GLI-00001-000";
    let dir = tmp.0.join(id);
    std::fs::create_dir_all(&dir).unwrap();
    for (m, name) in ["t1n", "t1c", "t2w", "t2f"].iter().enumerate() {
        let path = dir.join(format!("{id}-{name}.nii.gz"));
        write_nifti(
            &path,
            &case.header,
            1,
            VoxelData::Float32(&case.images[m]),
            (1.0, 0.0),
        )
        .unwrap();
    }
    let seg = LabelSpec::brats2023().to_file_values(&case.labels).unwrap();
    assert!(seg.contains(&3) && !seg.contains(&4));
    write_label_map(&dir.join(format!("{id}-seg.nii.gz")), &case.header, &seg).unwrap();
    std::fs::create_dir_all(tmp.0.join("__MACOSX")).unwrap();
    std::fs::write(tmp.0.join(".DS_Store"), b"x").unwrap();
    let ds = detect(&tmp.0).unwrap();
    assert_eq!(ds.layout, LayoutKind::Brats2023);
    assert_eq!(ds.cases.len(), 1);
    let sel = ds.select_modalities(&["FLAIR", "t1ce"]).unwrap();
    let (data, _) = load_case(&ds, &ds.cases[0], &sel, NanPolicy::Error).unwrap();
    assert_eq!(data.channels[0].data, case.images[3]);
    assert_eq!(data.channels[1].data, case.images[1]);
    assert_eq!(
        data.label.unwrap().data,
        case.labels,
        "3 is ET in BraTS 2023"
    );
}

/// Writes an nnU-Net v2 raw dataset of `n` synthetic cases (plus one test case).
fn write_nnunet(root: &Path, n: usize, labels: serde_json::Value) {
    for sub in ["imagesTr", "labelsTr", "imagesTs"] {
        std::fs::create_dir_all(root.join(sub)).unwrap();
    }
    for i in 0..=n {
        let case = generate_case(SIZE, 5, i);
        let (dir, id) = if i < n {
            ("imagesTr", format!("BRATS_{i:03}"))
        } else {
            ("imagesTs", format!("BRATS_{i:03}"))
        };
        for m in 0..4 {
            let path = root.join(dir).join(format!("{id}_{m:04}.nii.gz"));
            write_nifti(
                &path,
                &case.header,
                1,
                VoxelData::Float32(&case.images[m]),
                (1.0, 0.0),
            )
            .unwrap();
        }
        if i < n {
            let seg = LabelSpec::brats2021().to_file_values(&case.labels).unwrap();
            write_label_map(
                &root.join("labelsTr").join(format!("{id}.nii.gz")),
                &case.header,
                &seg,
            )
            .unwrap();
        }
    }
    let json = serde_json::json!({
        "channel_names": {"0": "T1", "1": "T1ce", "2": "T2", "3": "FLAIR"},
        "labels": labels,
        "numTraining": n,
        "file_ending": ".nii.gz",
    });
    std::fs::write(root.join("dataset.json"), json.to_string()).unwrap();
}

#[test]
fn nnunet_v2_raw_with_classes_or_regions() {
    let tmp = TempDir::new("nnunet");
    write_nnunet(
        &tmp.0,
        2,
        serde_json::json!({"background": 0, "NCR": 1, "edema": 2, "enhancing tumor": 4}),
    );
    let ds = detect(&tmp.0).unwrap();
    assert_eq!(ds.layout, LayoutKind::NnUnet);
    assert_eq!(ds.modalities, ["T1", "T1ce", "T2", "FLAIR"]);
    assert_eq!(ds.cases.len(), 2);
    assert_eq!(ds.test_cases.len(), 1);
    assert_eq!(ds.test_cases[0].label, None);
    assert_eq!(ds.label_spec.file_values(), [0, 1, 2, 4]);
    assert_eq!(
        ds.label_spec.regions().len(),
        3,
        "tumour names give WT/TC/ET"
    );
    let (data, _) = load_case(&ds, &ds.cases[1], &ds.all_modalities(), NanPolicy::Error).unwrap();
    let truth = generate_case(SIZE, 5, 1);
    assert_eq!(data.channels[2].data, truth.images[2]);
    assert_eq!(data.label.unwrap().data, truth.labels);

    let tmp = TempDir::new("nnunet-regions");
    write_nnunet(
        &tmp.0,
        1,
        serde_json::json!({"background": 0, "whole tumor": [1, 2, 4], "tumor core": [1, 4], "enhancing tumor": 4}),
    );
    let ds = detect(&tmp.0).unwrap();
    let names: Vec<&str> = ds
        .label_spec
        .regions()
        .iter()
        .map(|r| r.name.as_str())
        .collect();
    assert_eq!(names, ["whole tumor", "tumor core", "enhancing tumor"]);
    let paints: Vec<u8> = ds.label_spec.regions().iter().map(|r| r.paint).collect();
    assert_eq!(paints, [2, 1, 3]);
    // nnU-Net's regions_class_order must paint what voxseg paints: WT 2 (ED), TC 1 (NCR),
    // ET 4, in any order; a missing region or a value no region holds alone is refused.
    let json_path = tmp.0.join("dataset.json");
    let plain: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json_path).unwrap()).unwrap();
    let with_order = |order: serde_json::Value| {
        let mut j = plain.clone();
        j["regions_class_order"] = order;
        std::fs::write(&json_path, j.to_string()).unwrap();
    };
    with_order(serde_json::json!([2, 1, 4]));
    assert!(detect(&tmp.0).is_ok());
    for bad in [
        serde_json::json!([1, 2]),
        serde_json::json!([7, 1, 4]),
        serde_json::json!("1,2,4"),
    ] {
        with_order(bad.clone());
        assert_mentions(
            &err_text(detect(&tmp.0)),
            &[
                "dataset.json",
                "regions_class_order",
                "whole tumor 2, tumor core 1, enhancing tumor 4",
            ],
        );
    }
    std::fs::write(&json_path, plain.to_string()).unwrap();

    std::fs::remove_file(tmp.0.join("imagesTr/BRATS_000_0002.nii.gz")).unwrap();
    let err = err_text(detect(&tmp.0));
    assert_mentions(&err, &["BRATS_000", "BRATS_000_0002.nii.gz", "missing"]);

    // nnU-Net's "ignore" label (sparse annotation) is refused, not trained as a class.
    let tmp = TempDir::new("nnunet-ignore");
    write_nnunet(
        &tmp.0,
        1,
        serde_json::json!({"background": 0, "edema": 1, "non-enhancing tumor": 2, "ignore": 3}),
    );
    let err = err_text(detect(&tmp.0));
    assert_mentions(&err, &["dataset.json", "'ignore' (3)", "not support"]);
}

#[test]
fn the_documented_manifest_example_loads() {
    let tmp = TempDir::new("manifest");
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/manifest-example.json");
    std::fs::copy(&example, tmp.0.join("manifest.json")).unwrap();
    let a = generate_case(SIZE, 9, 0);
    let b = generate_case(SIZE, 9, 1);
    for d in ["patient001", "patient002", "unlabelled"] {
        std::fs::create_dir_all(tmp.0.join(d)).unwrap();
    }
    let write = |rel: &str, case: &SynthCase, data: &[f32], channels: usize| {
        write_nifti(
            &tmp.0.join(rel),
            &case.header,
            channels,
            VoxelData::Float32(data),
            (1.0, 0.0),
        )
        .unwrap()
    };
    for (m, name) in ["t1", "t1ce", "t2", "flair"].iter().enumerate() {
        write(&format!("patient001/{name}.nii.gz"), &a, &a.images[m], 1);
        write(
            &format!("unlabelled/patient101_{name}.nii.gz"),
            &a,
            &a.images[m],
            1,
        );
    }
    let planar: Vec<f32> = b.images.iter().flatten().copied().collect();
    write("patient002/all.nii.gz", &b, &planar, 4);
    let spec = LabelSpec::brats2021();
    write_label_map(
        &tmp.0.join("patient001/seg.nii.gz"),
        &a.header,
        &spec.to_file_values(&a.labels).unwrap(),
    )
    .unwrap();
    write_label_map(
        &tmp.0.join("patient002/seg.nii.gz"),
        &b.header,
        &spec.to_file_values(&b.labels).unwrap(),
    )
    .unwrap();

    let ds = detect(&tmp.0.join("manifest.json")).unwrap();
    assert_eq!(ds.layout, LayoutKind::Manifest);
    assert_eq!((ds.cases.len(), ds.test_cases.len()), (2, 1));
    assert_eq!(ds.label_spec.file_values(), [0, 1, 2, 4]);
    assert_eq!(ds.label_spec.regions()[1].classes, [1, 3]);
    let sel = ds.select_modalities(&["flair", "t1"]).unwrap();
    let (data, _) = load_case(&ds, &ds.cases[1], &sel, NanPolicy::Error).unwrap();
    assert_eq!(data.channels[0].data, b.images[3]);
    assert_eq!(data.channels[1].data, b.images[0]);
    assert_eq!(data.label.unwrap().data, b.labels);
}

// ---- bad input ----

/// A manifest's case ids name the files written for each case: one that is a path, empty or
/// hidden would write outside the output folder or where `evaluate` does not look; and a
/// modality listed twice is a mistake, not a second channel.
#[test]
fn manifests_with_unusable_case_ids_or_a_modality_twice_are_refused() {
    let tmp = TempDir::new("manifest-ids");
    let manifest = |modalities: serde_json::Value, id: &str| {
        serde_json::json!({
            "format": "voxseg-manifest",
            "version": 1,
            "modalities": modalities,
            "labels": [{"name": "background", "value": 0}, {"name": "tumour", "value": 1}],
            "cases": [{"id": id, "images": {"t1": "a/t1.nii.gz"}, "label": "a/seg.nii.gz"}],
        })
    };
    let path = tmp.0.join("manifest.json");
    for (id, why) in [
        ("../evil", "path separator"),
        ("/tmp/x", "path separator"),
        ("sub\\dir", "path separator"),
        ("", "is empty"),
        (".hidden", "starts with '.'"),
        ("tab\there", "control character"),
    ] {
        std::fs::write(&path, manifest(serde_json::json!(["t1"]), id).to_string()).unwrap();
        let err = err_text(detect(&path));
        assert_mentions(&err, &["manifest.json", "case id", why]);
    }
    std::fs::write(
        &path,
        manifest(serde_json::json!(["t1", "t1"]), "a").to_string(),
    )
    .unwrap();
    assert_mentions(
        &err_text(detect(&path)),
        &["manifest.json", "'t1' is listed twice"],
    );
    // An image that is neither a path nor a 4D file's channel says what an image is.
    for image in [
        serde_json::json!(5),
        serde_json::json!({"path": "a/all.nii.gz", "channel": -1}),
        serde_json::json!({"path": "a/all.nii.gz"}),
    ] {
        let mut m = manifest(serde_json::json!(["t1"]), "a");
        m["cases"][0]["images"]["t1"] = image;
        std::fs::write(&path, m.to_string()).unwrap();
        assert_mentions(
            &err_text(detect(&path)),
            &["manifest.json", "an image is a path", "\"channel\": 0"],
        );
    }
    // The same manifest with a usable id gets as far as the files, which are missing.
    std::fs::write(
        &path,
        manifest(serde_json::json!(["t1"]), "case-1_a").to_string(),
    )
    .unwrap();
    assert_mentions(&err_text(detect(&path)), &["case-1_a", "missing"]);
}

fn brats_dataset(name: &str, storage: SynthStorage) -> TempDir {
    let tmp = TempDir::new(name);
    synth(&tmp.0, 2, SynthLayout::Brats2021, storage);
    tmp
}

fn load_first_error(root: &Path, index: usize) -> String {
    let ds = detect(root).unwrap();
    err_text(load_case(
        &ds,
        &ds.cases[index],
        &ds.all_modalities(),
        NanPolicy::Error,
    ))
}

#[test]
fn corrupt_truncated_and_broken_gzip_files_are_named() {
    let tmp = brats_dataset("corrupt", SynthStorage::Int16);
    let t2 = brats_file(&tmp.0, 0, "t2");
    let bytes = std::fs::read(&t2).unwrap();

    let mut corrupt = bytes.clone();
    let mid = corrupt.len() / 2;
    corrupt[mid..mid + 64].iter_mut().for_each(|b| *b ^= 0x5a);
    std::fs::write(&t2, &corrupt).unwrap();
    let err = load_first_error(&tmp.0, 0);
    assert_mentions(
        &err,
        &[
            "case SynthBraTS2021_00000",
            "SynthBraTS2021_00000_t2.nii.gz",
            "gzip",
        ],
    );

    std::fs::write(&t2, &bytes[..bytes.len() / 2]).unwrap();
    let err = load_first_error(&tmp.0, 0);
    assert_mentions(
        &err,
        &[
            "case SynthBraTS2021_00000",
            "SynthBraTS2021_00000_t2.nii.gz",
            "truncated",
        ],
    );

    let mut broken = bytes[..10].to_vec();
    broken.extend(std::iter::repeat_n(0xffu8, 200));
    std::fs::write(&t2, &broken).unwrap();
    let err = load_first_error(&tmp.0, 0);
    assert_mentions(
        &err,
        &[
            "case SynthBraTS2021_00000",
            "SynthBraTS2021_00000_t2.nii.gz",
            "broken gzip",
        ],
    );

    // Uncompressed: a truncated voxel block and garbage instead of a header.
    let plain = NiftiFile::open(&brats_file(&tmp.0, 1, "t1")).unwrap();
    let reference = plain.header().clone();
    let nii = tmp.0.join("plain.nii");
    let values = vec![1i16; reference.voxel_count()];
    write_nifti(&nii, &reference, 1, VoxelData::Int16(&values), (1.0, 0.0)).unwrap();
    let full = std::fs::read(&nii).unwrap();
    std::fs::write(&nii, &full[..full.len() - 10]).unwrap();
    let err = err_text(NiftiFile::open(&nii));
    assert_mentions(&err, &["plain.nii", "truncated", "16x14x12 int16"]);
    std::fs::write(&nii, vec![7u8; 400]).unwrap();
    let err = err_text(NiftiFile::open(&nii));
    assert_mentions(&err, &["plain.nii", "not a NIfTI-1 file"]);
}

#[test]
fn missing_modality_or_label_files_are_named() {
    let tmp = brats_dataset("missing", SynthStorage::Int16);
    let t2 = brats_file(&tmp.0, 1, "t2");
    let saved = std::fs::read(&t2).unwrap();
    std::fs::remove_file(&t2).unwrap();
    let err = err_text(detect(&tmp.0));
    assert_mentions(
        &err,
        &[
            "SynthBraTS2021_00001",
            "SynthBraTS2021_00001_t2.nii.gz",
            "missing t2",
        ],
    );
    std::fs::write(&t2, saved).unwrap();

    std::fs::remove_file(brats_file(&tmp.0, 0, "seg")).unwrap();
    let err = err_text(detect(&tmp.0));
    assert_mentions(
        &err,
        &[
            "SynthBraTS2021_00000",
            "SynthBraTS2021_00000_seg.nii.gz",
            "missing label",
        ],
    );
    // Without any label it is a test folder: detected, but not trainable.
    std::fs::remove_file(brats_file(&tmp.0, 1, "seg")).unwrap();
    let ds = detect(&tmp.0).unwrap();
    assert!(ds.cases.iter().all(|c| c.label.is_none()));
    assert_mentions(
        &err_text(ds.require_labels()),
        &["SynthBraTS2021_00000", "no label"],
    );
}

#[test]
fn disagreeing_shapes_and_affines_are_named() {
    let tmp = brats_dataset("grid", SynthStorage::Float32);
    let flair = brats_file(&tmp.0, 1, "flair");
    let good = NiftiFile::open(&flair).unwrap();
    let mut header = good.header().clone();
    header.dims = [16, 14, 11];
    let small = vec![0.5f32; header.voxel_count()];
    write_nifti(&flair, &header, 1, VoxelData::Float32(&small), (1.0, 0.0)).unwrap();
    let err = load_first_error(&tmp.0, 1);
    assert_mentions(
        &err,
        &[
            "SynthBraTS2021_00001",
            "SynthBraTS2021_00001_flair.nii.gz",
            "size 16x14x11",
            "16x14x12",
            "_t1.nii.gz",
        ],
    );

    let mut shifted = good.header().clone();
    shifted.srow[0][3] += 2.0;
    let data = good.channel(0).unwrap();
    write_nifti(&flair, &shifted, 1, VoxelData::Float32(&data), (1.0, 0.0)).unwrap();
    let err = load_first_error(&tmp.0, 1);
    assert_mentions(
        &err,
        &[
            "SynthBraTS2021_00001",
            "_flair.nii.gz",
            "origin (",
            "mm differs from the reference's (",
        ],
    );

    // The first image (the reference) the odd one: it is blamed, not the three that agree
    // with each other, nor the label that agrees with them.
    write_nifti(
        &flair,
        good.header(),
        1,
        VoxelData::Float32(&data),
        (1.0, 0.0),
    )
    .unwrap();
    let t1 = brats_file(&tmp.0, 1, "t1");
    write_nifti(&t1, &header, 1, VoxelData::Float32(&small), (1.0, 0.0)).unwrap();
    let ds = detect(&tmp.0).unwrap();
    let read = voxseg::data::case::read_case(
        &ds,
        &ds.cases[1],
        &ds.all_modalities(),
        NanPolicy::Error,
        &[],
    );
    let problems: Vec<String> = read.problems.iter().map(|e| e.to_string()).collect();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_mentions(
        &problems[0],
        &[
            "_t1.nii.gz",
            "size 16x14x11",
            "the case's other 3 images share one grid",
            "_t1ce.nii.gz",
        ],
    );

    let seg = brats_file(&tmp.0, 0, "seg");
    let labels = vec![0u8; header.voxel_count()];
    write_label_map(&seg, &header, &labels).unwrap();
    let err = load_first_error(&tmp.0, 0);
    assert_mentions(
        &err,
        &["SynthBraTS2021_00000", "_seg.nii.gz", "size 16x14x11"],
    );
}

#[test]
fn nan_voxels_are_refused_or_replaced_by_choice() {
    let tmp = brats_dataset("nan", SynthStorage::Float32);
    let t1ce = brats_file(&tmp.0, 0, "t1ce");
    let file = NiftiFile::open(&t1ce).unwrap();
    let mut data = file.channel(0).unwrap();
    data[5] = f32::NAN;
    data[100] = f32::INFINITY;
    write_nifti(
        &t1ce,
        file.header(),
        1,
        VoxelData::Float32(&data),
        (1.0, 0.0),
    )
    .unwrap();
    let err = load_first_error(&tmp.0, 0);
    assert_mentions(
        &err,
        &[
            "SynthBraTS2021_00000",
            "_t1ce.nii.gz",
            "2 NaN/Inf",
            "x=5, y=0, z=0",
        ],
    );
    let ds = detect(&tmp.0).unwrap();
    let (case, _) = load_case(&ds, &ds.cases[0], &[1], NanPolicy::ReplaceWithZero).unwrap();
    assert_eq!(case.channels[0].data[5], 0.0);
    assert_eq!(case.channels[0].data[100], 0.0);
    assert_eq!(case.channels[0].data[6], data[6]);
}

#[test]
fn label_values_outside_the_layout_are_named() {
    let tmp = brats_dataset("labels", SynthStorage::Int16);
    let seg = brats_file(&tmp.0, 1, "seg");
    let file = NiftiFile::open(&seg).unwrap();
    let mut values: Vec<u8> = file.channel(0).unwrap().iter().map(|&v| v as u8).collect();
    values[7] = 3;
    write_label_map(&seg, file.header(), &values).unwrap();
    let err = load_first_error(&tmp.0, 1);
    assert_mentions(
        &err,
        &[
            "SynthBraTS2021_00001",
            "_seg.nii.gz",
            "label value 3",
            "[0, 1, 2, 4]",
        ],
    );
}

#[test]
fn empty_and_unknown_folders_are_refused() {
    let tmp = TempDir::new("empty");
    assert_mentions(&err_text(detect(&tmp.0)), &["empty dataset folder"]);
    assert_mentions(
        &err_text(detect(&tmp.0.join("nope"))),
        &["nope", "does not exist"],
    );

    std::fs::write(tmp.0.join("notes.txt"), b"hello").unwrap();
    std::fs::create_dir_all(tmp.0.join("scans")).unwrap();
    std::fs::write(tmp.0.join("scans/a.nii.gz"), b"x").unwrap();
    assert_mentions(&err_text(detect(&tmp.0)), &["unknown layout", "scans"]);

    std::fs::write(tmp.0.join("dataset.json"), br#"{"name": "x"}"#).unwrap();
    assert_mentions(
        &err_text(detect(&tmp.0)),
        &["dataset.json", "unknown layout"],
    );
    std::fs::write(tmp.0.join("dataset.json"), b"{not json").unwrap();
    assert_mentions(&err_text(detect(&tmp.0)), &["dataset.json", "invalid JSON"]);
    // serde_json would keep the second "0" silently; the error points at it.
    let repeated =
        "{\n  \"modality\": {\"0\": \"FLAIR\",\n    \"0\": \"T1\"},\n  \"training\": []\n}";
    std::fs::write(tmp.0.join("dataset.json"), repeated).unwrap();
    assert_mentions(
        &err_text(detect(&tmp.0)),
        &["dataset.json", "key `0` given twice at line 3 column 7"],
    );

    let msd = serde_json::json!({
        "modality": {"0": "FLAIR"},
        "labels": {"0": "background", "1": "tumour"},
        "training": [],
        "test": [],
    });
    std::fs::write(tmp.0.join("dataset.json"), msd.to_string()).unwrap();
    assert_mentions(&err_text(detect(&tmp.0)), &["MSD dataset", "no cases"]);
}

/// The files and what nibabel reads from them, written by scripts/nifti_reference.py.
fn nibabel_reference() -> (PathBuf, serde_json::Value) {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let text = std::fs::read_to_string(fixtures.join("nifti_reference.json")).unwrap();
    (fixtures.join("nifti"), serde_json::from_str(&text).unwrap())
}

fn json_floats(v: &serde_json::Value) -> Vec<f64> {
    let list = v.as_array().unwrap_or_else(|| panic!("not a list: {v}"));
    list.iter().map(|x| x.as_f64().unwrap()).collect()
}

fn json_matrix(v: &serde_json::Value) -> [[f64; 4]; 4] {
    let rows: Vec<Vec<f64>> = v.as_array().unwrap().iter().map(json_floats).collect();
    std::array::from_fn(|r| std::array::from_fn(|c| rows[r][c]))
}

fn max_difference<'a>(
    a: impl IntoIterator<Item = &'a f64>,
    b: impl IntoIterator<Item = &'a f64>,
) -> f64 {
    let pairs = a.into_iter().zip(b);
    pairs.map(|(x, y)| (x - y).abs()).fold(0.0, f64::max)
}

fn matrix_distance(a: &[[f64; 4]; 4], b: &[[f64; 4]; 4]) -> f64 {
    max_difference(a.iter().flatten(), b.iter().flatten())
}

/// The header's transforms are nibabel's (or, where the case says so, the value voxseg gives
/// by the NIfTI-1 reference library): the one in use, the qform and sform with their codes,
/// the voxel size and the orientation code. Returns the largest affine difference.
fn assert_geometry_as_reference(name: &str, h: &NiftiHeaderInfo, case: &serde_json::Value) -> f64 {
    let expected = case.get("voxseg").unwrap_or(case);
    let mut worst = 0.0f64;
    let mut check = |what: &str, got: [[f64; 4]; 4], want: &serde_json::Value| {
        let d = matrix_distance(&got, &json_matrix(want));
        assert!(
            d <= 1e-6,
            "{name}: {what} {got:?}, reference {want} ({d:e} apart)"
        );
        worst = worst.max(d);
    };
    check("affine", h.affine(), &expected["affine"]);
    assert_eq!(i64::from(h.sform_code), case["sform_code"], "{name}");
    assert_eq!(i64::from(h.qform_code), case["qform_code"], "{name}");
    if h.sform_code > 0 {
        check("sform", h.sform_affine(), &case["sform"]);
    }
    if h.qform_code > 0 {
        check(
            "qform",
            h.qform_affine(),
            expected.get("qform").unwrap_or(&case["qform"]),
        );
    }
    // pixdim as stored (f32) on both sides, up to JSON's decimal rounding; a 2D image has no
    // z to compare.
    let zooms = json_floats(&case["zooms"]);
    let d = max_difference(&h.spacing, &zooms);
    assert!(
        d < 1e-12,
        "{name}: voxel size {:?}, nibabel {zooms:?}",
        h.spacing
    );
    assert_eq!(orientation(&h.affine()), expected["axcodes"], "{name}");
    worst
}

/// voxseg reads the files nibabel wrote as nibabel reads them: every datatype with and
/// without scl_slope/scl_inter, the qform and sform by the standard's precedence, voxel
/// sizes, orientation codes, and reorientation (as `as_closest_canonical` and
/// `as_reoriented`). Regenerate the fixtures with scripts/nifti_reference.py.
#[test]
fn nifti_files_read_as_nibabel_reads_them() {
    let (dir, reference) = nibabel_reference();
    let cases = reference["cases"].as_array().unwrap();
    assert!(cases.len() >= 50, "{} cases", cases.len());
    let (mut worst_value, mut worst_affine, mut reoriented) = ((0.0f64, ""), 0.0f64, 0);
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let path = dir.join(case["file"].as_str().unwrap());
        if let Some(why) = case["refused"].as_str() {
            let err = err_text(NiftiFile::open(&path));
            assert_mentions(&err, &[case["file"].as_str().unwrap(), why]);
            continue;
        }
        let file = NiftiFile::open(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
        let h = file.header();
        // nibabel's shape is [i, j(, k(, t))]: voxseg's x, y, z and channels.
        let mut shape = [1usize; 4];
        for (axis, size) in json_floats(&case["shape"]).into_iter().enumerate() {
            shape[axis] = size as usize;
        }
        assert_eq!(
            (h.dims, h.channels),
            ([shape[0], shape[1], shape[2]], shape[3]),
            "{name}"
        );
        assert_eq!(h.datatype.name(), case["datatype"], "{name}");
        let slope_inter = json_floats(&case["slope_inter"]);
        let (slope, inter) = file.scaling().unwrap_or((1.0, 0.0));
        let scaling = [f64::from(slope), f64::from(inter)];
        assert!(
            max_difference(&scaling, &slope_inter) < 1e-12,
            "{name}: scaling {scaling:?}, nibabel {slope_inter:?}"
        );

        // Channel by channel, x fastest: nibabel's array flattened i fastest.
        let values: Vec<f32> = (0..h.channels)
            .flat_map(|c| file.channel(c).unwrap())
            .collect();
        let want = json_floats(&case["values"]);
        assert_eq!(values.len(), want.len(), "{name}");
        // nibabel scales in float64, voxseg in float32: a few roundings, each within half an
        // f32 step of the stored value, of its product with the slope or of the intercept.
        let inter = slope_inter[1].abs();
        for (i, (&got, &w)) in values.iter().zip(&want).enumerate() {
            let tolerance = 3.0 * f64::from(f32::EPSILON) * (w.abs() + 2.0 * inter);
            let d = (f64::from(got) - w).abs();
            assert!(
                d <= tolerance,
                "{name} voxel {i}: voxseg {got}, nibabel {w}"
            );
            if d > 0.0 && d / w.abs().max(1.0) > worst_value.0 {
                worst_value = (d / w.abs().max(1.0), name);
            }
        }
        if let Some(convention) = case.get("voxseg") {
            let nibabel = json_matrix(&case["affine"]);
            assert!(
                matrix_distance(&h.affine(), &nibabel) > 1e-3,
                "{name}: voxseg now agrees with nibabel; drop the note {convention}"
            );
        }
        worst_affine = worst_affine.max(assert_geometry_as_reference(name, h, case));

        let code = orientation(&h.affine());
        for target in case["reoriented"].as_array().into_iter().flatten() {
            let to = target["code"].as_str().unwrap();
            let map = AxisMap::between(&code, to).unwrap();
            let dims = json_floats(&target["shape"])
                .into_iter()
                .map(|d| d as usize);
            assert_eq!(
                map.axes(h.dims).to_vec(),
                dims.collect::<Vec<_>>(),
                "{name} {to}"
            );
            let zooms = json_floats(&target["zooms"]);
            let spacing = map.axes(h.spacing);
            let d = max_difference(&spacing, &zooms);
            assert!(
                d < 1e-12,
                "{name} to {to}: voxel size {spacing:?}, nibabel {zooms:?}"
            );
            let there: Vec<f64> = map
                .apply(h.dims, 1, &values)
                .into_iter()
                .map(f64::from)
                .collect();
            assert_eq!(there, json_floats(&target["values"]), "{name} to {to}");
            reoriented += 1;
        }
    }
    assert!(
        reoriented >= 40,
        "only {reoriented} reorientations compared"
    );
    println!(
        "largest differences from nibabel: voxel value {:e} (relative, {}), affine {worst_affine:e}",
        worst_value.0, worst_value.1
    );
}

/// Label and probability maps written on the reference files' headers keep their geometry
/// (both transforms with their codes) as nibabel read it. With VOXSEG_NIFTI_WRITTEN=DIR the
/// maps stay in DIR for `scripts/nifti_reference.py --check DIR` to open with nibabel.
#[test]
fn maps_written_on_nibabel_headers_keep_their_geometry() {
    let (dir, reference) = nibabel_reference();
    let tmp = TempDir::new("nibabel-written");
    let out = std::env::var_os("VOXSEG_NIFTI_WRITTEN").map_or(tmp.0.clone(), PathBuf::from);
    std::fs::create_dir_all(&out).unwrap();
    let cases = reference["cases"].as_array().unwrap();
    let written_on = reference["written_on"].as_array().unwrap();
    assert!(!written_on.is_empty());
    for name in written_on {
        let case = cases.iter().find(|c| c["name"] == *name).unwrap();
        let name = name.as_str().unwrap();
        let file = NiftiFile::open(&dir.join(case["file"].as_str().unwrap())).unwrap();
        let grid = file.header();
        let [nx, ny, nz] = grid.dims;
        // As the script's `written_values`: labels (x + 2y + 3z) % 5 and two probability
        // channels ((x + 3y + 5z + c) % 8) / 8, given channels last.
        let (mut labels, mut probabilities) = (Vec::new(), Vec::new());
        for z in 0..nz {
            for y in 0..ny {
                for x in 0..nx {
                    labels.push(((x + 2 * y + 3 * z) % 5) as u8);
                    for c in 0..2 {
                        probabilities.push(((x + 3 * y + 5 * z + c) % 8) as f32 / 8.0);
                    }
                }
            }
        }
        let label_path = out.join(format!("{name}_label.nii.gz"));
        write_label_map(&label_path, grid, &labels).unwrap();
        let prob_path = out.join(format!("{name}_prob.nii.gz"));
        write_probability_map(&prob_path, grid, 2, &probabilities, "channels: a,b").unwrap();

        for (path, channels, datatype) in [
            (&label_path, 1, VoxelType::Uint8),
            (&prob_path, 2, VoxelType::Float32),
        ] {
            let back = NiftiFile::open(path).unwrap();
            let h = back.header();
            assert_eq!(
                (h.datatype, h.channels, h.dims),
                (datatype, channels, grid.dims)
            );
            assert_eq!(back.scaling(), Some((1.0, 0.0)), "{name}");
            assert_eq!(
                (h.qfac, h.quatern, h.qoffset, h.srow),
                (grid.qfac, grid.quatern, grid.qoffset, grid.srow),
                "{name}: the transforms are copied as stored"
            );
            assert_geometry_as_reference(name, h, case);
            for c in 0..channels {
                let want: Vec<f32> = if channels == 1 {
                    labels.iter().map(|&l| f32::from(l)).collect()
                } else {
                    probabilities.iter().skip(c).step_by(2).copied().collect()
                };
                assert_eq!(back.channel(c).unwrap(), want, "{name} channel {c}");
            }
        }
    }
}
