//! `voxseg predict` on tiny synthetic data, with one small model trained once for the file:
//! which cases each --split predicts (unlabelled test cases included), that reference
//! labels are not read, that existing outputs are refused before anything is predicted,
//! that a failed check leaves no --out behind, that another run's checkpoint is refused,
//! that --input names are checked, that the probabilities record their channel order, and
//! the label-convention warning, and that --postprocess cleans the written labels.
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use voxseg::data::nifti::{write_label_map, write_nifti, NiftiFile, VoxelData};
use voxseg::data::synth::SynthLayout;
use voxseg::train::checkpoint::{load_checkpoint, save_checkpoint};
use voxseg::train::{train, RunOptions, TrainConfig};

mod cli_common;

use cli_common::{copy_tree, fixture_dir, s, small_config, synth, voxseg, Outcome};

/// An MSD dataset of 5 labelled cases and 1 unlabelled (`test`) case, a BraTS 2021
/// dataset, and a run trained on the MSD one.
struct Fixture {
    root: PathBuf,
    msd: PathBuf,
    brats: PathBuf,
    run: PathBuf,
}

const UNLABELLED: &str = "SynthBrain_006";

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let root = fixture_dir("cli-predict-fixture");
        let msd = root.join("msd");
        synth(&msd, SynthLayout::Msd, 6, 24, 5);
        // The sixth case becomes an unlabelled test case, as in MSD's imagesTs.
        let json_path = msd.join("dataset.json");
        let mut json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&json_path).unwrap()).unwrap();
        json["training"].as_array_mut().unwrap().pop();
        std::fs::create_dir_all(msd.join("imagesTs")).unwrap();
        std::fs::rename(
            msd.join(format!("imagesTr/{UNLABELLED}.nii.gz")),
            msd.join(format!("imagesTs/{UNLABELLED}.nii.gz")),
        )
        .unwrap();
        json["test"] = serde_json::json!([format!("./imagesTs/{UNLABELLED}.nii.gz")]);
        json["numTraining"] = serde_json::json!(json["training"].as_array().unwrap().len());
        json["numTest"] = serde_json::json!(1);
        std::fs::write(&json_path, serde_json::to_vec(&json).unwrap()).unwrap();
        let brats = root.join("brats");
        synth(&brats, SynthLayout::Brats2021, 1, 24, 5);

        let run = root.join("run");
        let cfg = TrainConfig {
            val_every: 1,
            split: voxseg::data::split::SplitFractions {
                train: 0.4,
                val: 0.2,
                test: 0.4,
            },
            ..small_config(&msd, &run)
        };
        train(cfg, RunOptions::default()).unwrap();
        Fixture {
            root,
            msd,
            brats,
            run,
        }
    })
}

/// A fresh folder for one test's outputs (it does not exist yet).
fn out_dir(name: &str) -> PathBuf {
    let dir = fixture().root.join(name);
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// `predict --model RUN --device cpu --out OUT` plus `extra`.
fn predict(run: &Path, out: &Path, extra: &[&str]) -> Outcome {
    let mut args = vec![
        "predict",
        "--model",
        s(run),
        "--device",
        "cpu",
        "--out",
        s(out),
    ];
    args.extend_from_slice(extra);
    voxseg(&args)
}

/// The case ids of the label maps in `out`, sorted.
fn predicted(out: &Path) -> Vec<String> {
    let mut ids: Vec<String> = std::fs::read_dir(out)
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            name.strip_suffix(".nii.gz")
                .filter(|id| !id.ends_with("_probabilities"))
                .map(String::from)
        })
        .collect();
    ids.sort();
    ids
}

fn split_ids(part: &str) -> Vec<String> {
    let split: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixture().run.join("split.json")).unwrap()).unwrap();
    split[part]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[test]
fn splits_include_the_unlabelled_test_cases() {
    let f = fixture();
    let test = split_ids("test");
    assert!(!test.is_empty() && !test.contains(&UNLABELLED.to_string()));
    let cases: [(&str, Vec<String>); 4] = [
        ("test", sorted([test, vec![UNLABELLED.into()]].concat())),
        ("unlabelled", vec![UNLABELLED.into()]),
        ("train", sorted(split_ids("train"))),
        (
            "all",
            (1..=6).map(|i| format!("SynthBrain_{i:03}")).collect(),
        ),
    ];
    for (split, want) in cases {
        let out = out_dir(&format!("split-{split}"));
        let r = predict(&f.run, &out, &["--data", s(&f.msd), "--split", split]);
        assert!(r.ok, "--split {split}: {}", r.stderr);
        assert_eq!(predicted(&out), want, "--split {split}");
        assert_eq!(r.stdout.lines().count(), want.len(), "{}", r.stdout);
    }
    let r = predict(
        &f.run,
        &out_dir("split-bad"),
        &["--data", s(&f.msd), "--split", "fold0"],
    );
    assert!(
        !r.ok && r.stderr.contains("unlabelled") && r.stderr.contains("fold0"),
        "{}",
        r.stderr
    );
}

#[test]
fn reference_labels_are_not_read() {
    let f = fixture();
    let data = out_dir("badlabel-data");
    copy_tree(&f.msd, &data);
    // A label file with value 7, which MSD's convention (0..3) does not have.
    let label = data.join("labelsTr/SynthBrain_001.nii.gz");
    let header = NiftiFile::open(&label).unwrap().header().clone();
    let mut values = vec![0u8; header.voxel_count()];
    values[100] = 7;
    write_label_map(&label, &header, &values).unwrap();
    // And a case whose label file is gone altogether: prediction reads images only.
    std::fs::remove_file(data.join("labelsTr/SynthBrain_002.nii.gz")).unwrap();
    let out = out_dir("badlabel-pred");
    let r = predict(&f.run, &out, &["--data", s(&data), "--split", "all"]);
    assert!(r.ok, "{}", r.stderr);
    assert_eq!(predicted(&out).len(), 6);
    // The picture then shows the prediction only, with a warning naming the file.
    let out = out_dir("badlabel-png");
    let r = predict(
        &f.run,
        &out,
        &["--data", s(&data), "--split", "all", "--png"],
    );
    assert!(r.ok, "{}", r.stderr);
    assert!(out.join("SynthBrain_001.png").exists());
    assert!(
        r.stderr
            .contains("reference not drawn in SynthBrain_001.png")
            && r.stderr.contains("label value 7"),
        "{}",
        r.stderr
    );
}

#[test]
fn existing_outputs_are_refused_before_any_case_is_predicted() {
    let f = fixture();
    let out = out_dir("overwrite");
    std::fs::create_dir_all(&out).unwrap();
    let truth = out.join(format!("{UNLABELLED}.nii.gz"));
    std::fs::write(&truth, b"reference labels").unwrap();
    let r = predict(&f.run, &out, &["--data", s(&f.msd), "--split", "all"]);
    assert!(!r.ok, "{}", r.stdout);
    assert!(
        r.stderr
            .contains(&format!("{UNLABELLED}.nii.gz already exists"))
            && r.stderr.contains("--force")
            && r.stderr.lines().count() == 1,
        "{}",
        r.stderr
    );
    assert_eq!(std::fs::read(&truth).unwrap(), b"reference labels");
    assert_eq!(predicted(&out), [UNLABELLED], "no case was predicted");

    // A probabilities file counts too.
    std::fs::remove_file(&truth).unwrap();
    let probs = out.join(format!("{UNLABELLED}_probabilities.nii.gz"));
    std::fs::write(&probs, b"old").unwrap();
    let args = [
        "--data",
        s(&f.msd),
        "--split",
        "unlabelled",
        "--probabilities",
    ];
    let r = predict(&f.run, &out, &args);
    assert!(
        !r.ok && r.stderr.contains("_probabilities.nii.gz already exists"),
        "{}",
        r.stderr
    );
    let r = predict(&f.run, &out, &[&args[..], &["--force"]].concat());
    assert!(r.ok, "{}", r.stderr);
    assert_ne!(std::fs::read(&probs).unwrap(), b"old");
    assert!(truth.exists());

    // An uncompressed label map of the case is one of its outputs too (evaluate would read
    // it beside ours): refused, and removed by --force. Labels of a case this run does not
    // predict stay, with a note.
    let uncompressed = out.join(format!("{UNLABELLED}.nii"));
    std::fs::write(&uncompressed, b"old labels").unwrap();
    std::fs::write(out.join("SynthBrain_001.nii.gz"), b"other").unwrap();
    let r = predict(&f.run, &out, &args);
    assert!(
        !r.ok && r.stderr.contains("(1 of them this run does not write;"),
        "{}",
        r.stderr
    );
    let r = predict(&f.run, &out, &[&args[..], &["--force"]].concat());
    assert!(r.ok, "{}", r.stderr);
    assert!(!uncompressed.exists());
    assert!(
        r.stderr.contains(&format!(
            "{} also holds the labels of 1 case(s) this run did not predict (SynthBrain_001)",
            out.display()
        )),
        "{}",
        r.stderr
    );
}

#[test]
fn failed_checks_leave_no_out_folder_and_say_what_is_wrong() {
    let f = fixture();
    let out = out_dir("never");
    let absent = f.root.join("absent");
    let cases: [(&[&str], &str); 3] = [
        (&["--data", s(&f.msd), "--split", "nope"], "nope"),
        (&["--data", s(&f.msd), "--overlap", "1.5"], "overlap"),
        (&["--data", s(&absent)], "does not exist"),
    ];
    for (extra, says) in cases {
        let r = predict(&f.run, &out, extra);
        assert!(!r.ok && r.stderr.contains(says), "{extra:?}: {}", r.stderr);
        assert!(!out.exists(), "{extra:?} left {} behind", out.display());
    }
    let r = predict(&f.msd, &out, &["--data", s(&f.msd)]);
    assert!(
        !r.ok
            && r.stderr.contains(&format!(
                "{} is not a voxseg run (no model.json)",
                f.msd.display()
            ))
            && r.stderr.lines().count() == 1,
        "{}",
        r.stderr
    );
    assert!(!out.exists());
}

#[test]
fn a_checkpoint_of_another_run_is_refused_and_an_old_one_warned_about() {
    let f = fixture();
    let other = out_dir("other-run");
    copy_tree(&f.run, &other);
    let card_path = other.join("model.json");
    let mut card: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&card_path).unwrap()).unwrap();
    card["modalities"] = serde_json::json!(["T1w", "t1gd", "T2w", "FLAIR"]);
    std::fs::write(&card_path, serde_json::to_vec(&card).unwrap()).unwrap();
    let checkpoint = f.run.join("checkpoints/last.safetensors");
    let out = out_dir("other-pred");
    let r = predict(
        &other,
        &out,
        &[
            "--data",
            s(&f.msd),
            "--checkpoint",
            s(&checkpoint),
            "--split",
            "unlabelled",
        ],
    );
    assert!(!r.ok, "{}", r.stdout);
    assert!(
        r.stderr.contains("last.safetensors")
            && r.stderr.contains("modalities [FLAIR, T1w, t1gd, T2w]")
            && r.stderr.contains("model.json says [T1w, t1gd, T2w, FLAIR]")
            && r.stderr.lines().count() == 1,
        "{}",
        r.stderr
    );
    assert!(!out.exists());

    // A checkpoint without the record (older voxseg) loads, with a warning.
    let (tensors, mut meta) = load_checkpoint(&checkpoint).unwrap();
    assert!(meta.contains_key("voxseg_card"));
    meta.remove("voxseg_card");
    let old = other.join("old.safetensors");
    save_checkpoint(&old, &tensors, &meta).unwrap();
    let r = predict(
        &f.run,
        &out,
        &[
            "--data",
            s(&f.msd),
            "--checkpoint",
            s(&old),
            "--split",
            "unlabelled",
        ],
    );
    assert!(r.ok, "{}", r.stderr);
    assert!(
        r.stderr.contains("old.safetensors") && r.stderr.contains("older checkpoint"),
        "{}",
        r.stderr
    );
}

#[test]
fn a_checkpoint_of_a_run_that_trained_on_the_test_cases_or_other_preprocessing_is_refused() {
    let f = fixture();
    let other = out_dir("other-split-run");
    copy_tree(&f.run, &other);
    let checkpoint = f.run.join("checkpoints/last.safetensors");
    let predict_with_checkpoint = |out: &Path| {
        predict(
            &other,
            out,
            &["--data", s(&f.msd), "--checkpoint", s(&checkpoint)],
        )
    };

    // The same card, but a split that holds out one of the checkpoint run's training cases.
    let split_path = other.join("split.json");
    let mut split: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&split_path).unwrap()).unwrap();
    let trained_on = split["train"].as_array_mut().unwrap().pop().unwrap();
    split["test"]
        .as_array_mut()
        .unwrap()
        .push(trained_on.clone());
    std::fs::write(&split_path, serde_json::to_vec(&split).unwrap()).unwrap();
    let out = out_dir("leak-pred");
    let r = predict_with_checkpoint(&out);
    assert!(!r.ok, "{}", r.stdout);
    assert!(
        r.stderr.contains("belongs to another run")
            && r.stderr.contains("did not hold out 1 of the")
            && r.stderr.contains(trained_on.as_str().unwrap())
            && r.stderr.lines().count() == 1,
        "{}",
        r.stderr
    );
    assert!(!out.exists());

    // The run's own split again, but other preprocessing in its model card.
    std::fs::copy(f.run.join("split.json"), &split_path).unwrap();
    let card_path = other.join("model.json");
    let mut card: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&card_path).unwrap()).unwrap();
    card["preprocess"]["background_value"] = serde_json::json!(-1.0);
    std::fs::write(&card_path, serde_json::to_vec(&card).unwrap()).unwrap();
    let r = predict_with_checkpoint(&out);
    assert!(!r.ok, "{}", r.stdout);
    assert!(
        r.stderr.contains("it was trained with preprocessing")
            && r.stderr.contains("preprocessing {background_value: 0.0}")
            && r.stderr
                .contains("model.json says {background_value: -1.0}"),
        "{}",
        r.stderr
    );
    assert!(!out.exists());
}

#[test]
fn input_files_in_the_wrong_order_are_warned_about_and_named_by_case() {
    let f = fixture();
    let case = "SynthBraTS2021_00000";
    let file = |m: &str| f.brats.join(case).join(format!("{case}_{m}.nii.gz"));
    // The model (MSD) takes FLAIR, T1w, t1gd, T2w; BraTS order puts t1 first.
    let brats_order: Vec<PathBuf> = ["t1", "t1ce", "t2", "flair"].map(file).to_vec();
    let out = out_dir("input-wrong");
    let mut args = vec!["--input"];
    args.extend(brats_order.iter().map(|p| s(p)));
    let r = predict(&f.run, &out, &args);
    assert!(r.ok, "{}", r.stderr);
    let warnings: Vec<&str> = r
        .stderr
        .lines()
        .filter(|l| l.starts_with("warning"))
        .collect();
    assert_eq!(warnings.len(), 4, "{}", r.stderr);
    assert!(
        warnings[0].contains(&format!("{case}_t1.nii.gz is given as input 1 (FLAIR)"))
            && warnings[0].contains("its name says T1w"),
        "{}",
        warnings[0]
    );
    assert_eq!(predicted(&out), [case]);

    let model_order: Vec<PathBuf> = ["flair", "t1", "t1ce", "t2"].map(file).to_vec();
    let out = out_dir("input-right");
    let mut args = vec!["--input"];
    args.extend(model_order.iter().map(|p| s(p)));
    let r = predict(&f.run, &out, &args);
    assert!(r.ok && !r.stderr.contains("warning"), "{}", r.stderr);
    assert_eq!(predicted(&out), [case]);
}

/// The header's 80-byte description field of a gzipped NIfTI file.
fn nifti_descrip(path: &Path) -> String {
    let mut bytes = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(path).unwrap())
        .read_to_end(&mut bytes)
        .unwrap();
    String::from_utf8_lossy(&bytes[148..228])
        .trim_end_matches('\0')
        .to_string()
}

#[test]
fn probabilities_record_their_channel_order() {
    let f = fixture();
    let out = out_dir("probs");
    let r = predict(
        &f.run,
        &out,
        &[
            "--data",
            s(&f.msd),
            "--split",
            "unlabelled",
            "--probabilities",
        ],
    );
    assert!(r.ok, "{}", r.stderr);
    let image = out.join(format!("{UNLABELLED}_probabilities.nii.gz"));
    assert_eq!(NiftiFile::open(&image).unwrap().header().channels, 3);
    assert_eq!(nifti_descrip(&image), "voxseg sigmoid channels: WT,TC,ET");
    let sidecar: serde_json::Value = serde_json::from_slice(
        &std::fs::read(out.join(format!("{UNLABELLED}_probabilities.json"))).unwrap(),
    )
    .unwrap();
    assert_eq!(sidecar["channels"], serde_json::json!(["WT", "TC", "ET"]));
    assert_eq!(sidecar["activation"], "sigmoid");
    assert_eq!(sidecar["labels_postprocessed_with"], "none");
    assert_eq!(
        sidecar["image"],
        format!("{UNLABELLED}_probabilities.nii.gz")
    );
}

#[test]
fn another_label_convention_gets_one_warning_line() {
    let f = fixture();
    let out = out_dir("convention");
    let r = predict(&f.run, &out, &["--data", s(&f.brats), "--split", "all"]);
    assert!(r.ok, "{}", r.stderr);
    let warnings: Vec<&str> = r.stderr.lines().filter(|l| l.contains("warning")).collect();
    assert_eq!(warnings.len(), 1, "{}", r.stderr);
    assert!(
        warnings[0].contains("BraTS 2021 labels (NCR=1, ED=2, ET=4)")
            && warnings[0]
                .contains("MSD labels (edema=1, non-enhancing tumor=2, enhancing tumour=3)")
            && warnings[0].contains(&format!("voxseg evaluate --model {}", f.run.display())),
        "{}",
        warnings[0]
    );
    // Written in the model's (MSD) convention: values within 0..3.
    let written = NiftiFile::open(&out.join("SynthBraTS2021_00000.nii.gz")).unwrap();
    assert!(written
        .channel(0)
        .unwrap()
        .iter()
        .all(|v| [0.0, 1.0, 2.0, 3.0].contains(v)));
    let r = predict(
        &f.run,
        &out_dir("same-convention"),
        &["--data", s(&f.msd), "--split", "unlabelled"],
    );
    assert!(r.ok && !r.stderr.contains("warning"), "{}", r.stderr);
}

#[test]
fn one_4d_input_file_gives_every_modality_as_the_dataset_does() {
    let f = fixture();
    let image = f.msd.join(format!("imagesTs/{UNLABELLED}.nii.gz"));
    let from_file = out_dir("input-4d");
    let r = predict(&f.run, &from_file, &["--input", s(&image)]);
    assert!(r.ok, "{}", r.stderr);
    let from_data = out_dir("input-4d-data");
    let r = predict(
        &f.run,
        &from_data,
        &["--data", s(&f.msd), "--split", "unlabelled"],
    );
    assert!(r.ok, "{}", r.stderr);
    let labels = |dir: &Path| {
        NiftiFile::open(&dir.join(format!("{UNLABELLED}.nii.gz")))
            .unwrap()
            .channel(0)
            .unwrap()
    };
    assert_eq!(labels(&from_file), labels(&from_data));
    // Two files for a four-modality model: neither one per modality nor one 4D file.
    let r = predict(
        &f.run,
        &out_dir("input-two"),
        &["--input", s(&image), s(&image)],
    );
    assert!(
        !r.ok && r.stderr.contains("2 files given") && r.stderr.contains("one 4D file"),
        "{}",
        r.stderr
    );
    // A 4D file of three channels for a four-modality model names no channel: refused.
    let source = NiftiFile::open(&image).unwrap();
    // A 4D file `name` of `channels` channels on the image's grid.
    let write_4d = |name: &str, channels: usize, data: &[f32]| {
        let path = f.root.join(name);
        write_nifti(
            &path,
            source.header(),
            channels,
            VoxelData::Float32(data),
            (1.0, 0.0),
        )
        .unwrap();
        path
    };
    let three: Vec<f32> = (0..3).flat_map(|c| source.channel(c).unwrap()).collect();
    let three_path = write_4d("three-channels.nii.gz", 3, &three);
    let r = predict(
        &f.run,
        &out_dir("input-three"),
        &["--input", s(&three_path)],
    );
    assert!(
        !r.ok
            && r.stderr
                .contains("three-channels.nii.gz: holds 3 channel(s); the model takes 4"),
        "{}",
        r.stderr
    );
    // Blank images are predicted, with a warning per constant modality.
    let blank_path = write_4d("blank.nii.gz", 4, &vec![0.0f32; three.len() / 3 * 4]);
    let r = predict(
        &f.run,
        &out_dir("input-blank"),
        &["--input", s(&blank_path)],
    );
    assert!(r.ok, "{}", r.stderr);
    let constant: Vec<&str> = r
        .stderr
        .lines()
        .filter(|l| l.contains("image is constant (0); its segmentation is not to be trusted"))
        .collect();
    assert_eq!(constant.len(), 4, "{}", r.stderr);
    assert!(constant[0].contains("the FLAIR image"), "{}", r.stderr);
}

/// `--postprocess` cleans the written labels as the library's steps do, and a step naming
/// no region of the model's labels is refused before anything is written.
#[test]
fn postprocessing_applies_to_the_written_labels() {
    use voxseg::data::labels::LabelSpec;
    use voxseg::infer::{Postprocess, Predicts};
    let f = fixture();
    let labels_of = |out: &Path, steps: &[&str]| -> Vec<u8> {
        let mut args = vec!["--data", s(&f.msd), "--split", "unlabelled"];
        args.extend_from_slice(steps);
        let r = predict(&f.run, out, &args);
        assert!(r.ok, "{}", r.stderr);
        let file = NiftiFile::open(&out.join(format!("{UNLABELLED}.nii.gz"))).unwrap();
        file.channel(0).unwrap().iter().map(|&v| v as u8).collect()
    };
    let plain = labels_of(&out_dir("pp-none"), &[]);
    // The MSD labels: 1 oedema, 2 non-enhancing, 3 enhancing; TC is {2, 3}.
    let core = plain.iter().filter(|&&v| v >= 2).count();
    assert!(core > 0, "the model predicts some tumour core");
    let out = out_dir("pp-largest");
    let steps = "largest,min-component:ET:3,min-volume:TC:100000000";
    let cleaned = labels_of(&out, &["--postprocess", steps]);
    let header = NiftiFile::open(&out.join(format!("{UNLABELLED}.nii.gz")))
        .unwrap()
        .header()
        .clone();
    let card: serde_json::Value =
        serde_json::from_slice(&std::fs::read(f.run.join("model.json")).unwrap()).unwrap();
    let spec: LabelSpec = serde_json::from_value(card["label_spec"].clone()).unwrap();
    let mut want: Vec<u8> = plain
        .iter()
        .map(|&v| spec.class_of_value(v as f32).unwrap())
        .collect();
    Postprocess::parse(steps, &spec, Predicts::AnyClass)
        .unwrap()
        .apply(&mut want, header.dims);
    assert_eq!(cleaned, spec.to_file_values(&want).unwrap());
    // The whole core became oedema, WT's class.
    assert!(cleaned.iter().all(|&v| v <= 1), "TC removed whole");
    let oedema = |m: &[u8]| m.iter().filter(|&&v| v == 1).count();
    assert!(
        oedema(&cleaned) >= oedema(&plain) + core / 2,
        "the core became oedema"
    );

    let out = out_dir("pp-bad");
    let r = predict(
        &f.run,
        &out,
        &["--data", s(&f.msd), "--postprocess", "largest:XX"],
    );
    assert!(!r.ok);
    assert!(
        r.stderr
            .contains("'XX' is neither a region nor a foreground class"),
        "{}",
        r.stderr
    );
    assert!(!out.exists(), "nothing written");
}
