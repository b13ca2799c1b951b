//! `voxseg evaluate` on tiny crafted label maps and synthetic datasets: reference cases
//! without a prediction are reported (or scored as empty, or refused with --split), label
//! values are checked against each side's convention, `--model RUN` scores a prediction in
//! the model's convention by region name against the reference's, bad `--out`, `--subset`
//! and `--split` are refused before any scoring, a prediction on another grid than its
//! reference is refused saying what differs, `CASE.nii` predictions are read (a case with
//! both endings is refused), non-BraTS data get the image diagonal as the empty-mask HD95,
//! postprocessing is found on the Dice (--find-postprocessing) or given (--postprocess), and
//! `voxseg postprocess` cleans a folder of maps into another.
use std::path::{Path, PathBuf};
use voxseg::data::labels::{LabelClass, LabelSpec, TargetSpec};
use voxseg::data::layout::{detect, LayoutKind};
use voxseg::data::nifti::{write_label_map, NiftiFile};
use voxseg::data::preprocess::PreprocessSpec;
use voxseg::data::split::Split;
use voxseg::data::synth::SynthLayout;
use voxseg::metrics::EvalReport;
use voxseg::nn::unet::UNetConfig;
use voxseg::nn::ModelSpec;
use voxseg::train::card::{ModelCard, CARD_FORMAT};
use voxseg::train::plan::Plan;

mod cli_common;

use cli_common::{
    mask_grid, read_json, s, synth, temp_dir, voxseg, write_mask, write_mask_on, Arg, Outcome,
};

fn dataset(dir: &Path, layout: SynthLayout, cases: usize) -> PathBuf {
    let data = dir.join("data");
    synth(&data, layout, cases, 16, 5);
    data
}

/// The dataset's labelled cases as (id, label file).
fn labelled(data: &Path) -> Vec<(String, PathBuf)> {
    detect(data)
        .unwrap()
        .cases
        .into_iter()
        .map(|c| (c.id, c.label.unwrap()))
        .collect()
}

/// The report of `evaluate --pred PRED --truth DATA --out DIR/scores.json`, which must
/// succeed.
fn scores(dir: &Path, pred: &Path, data: &Path) -> EvalReport {
    let out = dir.join("scores.json");
    let Outcome { ok, stderr, .. } = voxseg(&[
        &"evaluate" as Arg,
        &"--pred",
        &pred,
        &"--truth",
        &data,
        &"--out",
        &out,
    ]);
    assert!(ok, "{stderr}");
    serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap()
}

/// Writes `label` to `out` with every value mapped through `map` (old, new).
fn copy_mapped(label: &Path, out: &Path, map: &[(u8, u8)]) {
    let file = NiftiFile::open(label).unwrap();
    let values: Vec<u8> = file
        .channel(0)
        .unwrap()
        .iter()
        .map(|&v| {
            let v = v as u8;
            map.iter().find(|(from, _)| *from == v).map_or(v, |m| m.1)
        })
        .collect();
    write_label_map(out, file.header(), &values).unwrap();
}

/// A run directory holding only a model card with this label convention.
fn run_with_labels(dir: &Path, name: &str, spec: LabelSpec) -> PathBuf {
    run_with_target(dir, name, spec, TargetSpec::Regions)
}

/// As `run_with_labels`, for a model trained on `target`.
fn run_with_target(dir: &Path, name: &str, spec: LabelSpec, target: TargetSpec) -> PathBuf {
    let run = dir.join(name);
    std::fs::create_dir_all(&run).unwrap();
    let regions = target.channels(&spec);
    let unet = UNetConfig::nnunet(4, regions);
    ModelCard {
        format: CARD_FORMAT.into(),
        plan: Plan {
            patch: [16; 3],
            batch: 1,
            base_features: unet.base_features,
            max_features: unet.max_features,
            depth: unet.depth,
            strides: Vec::new(),
            kernels: Vec::new(),
            step_gflop: 1.0,
            activation_bytes: 1,
            device: "cpu".into(),
        },
        model: ModelSpec::Unet(unet),
        modalities: ["t1", "t1ce", "t2", "flair"].map(String::from).to_vec(),
        layout: LayoutKind::Brats2021,
        label_spec: spec,
        target,
        preprocess: PreprocessSpec::default(),
        patch: [16; 3],
        training_spacing: None,
    }
    .save(&run.join("model.json"))
    .unwrap();
    run
}

#[test]
fn missing_predictions_are_warned_listed_scored_empty_or_refused() {
    let dir = temp_dir("missing");
    let data = dataset(&dir, SynthLayout::Brats2021, 3);
    let cases = labelled(&data);
    let pred = dir.join("pred");
    std::fs::create_dir_all(&pred).unwrap();
    // Perfect predictions for all but the last case.
    for (id, label) in &cases[..2] {
        std::fs::copy(label, pred.join(format!("{id}.nii.gz"))).unwrap();
    }
    let absent = &cases[2].0;

    let json = dir.join("scores.json");
    let Outcome {
        ok, stdout, stderr, ..
    } = voxseg(&[
        &"evaluate" as Arg,
        &"--pred",
        &pred,
        &"--truth",
        &data,
        &"--out",
        &json,
    ]);
    assert!(ok, "{stderr}");
    let warning = stderr.lines().find(|l| l.starts_with("warning:")).unwrap();
    assert!(
        warning.contains("1 of the 3")
            && warning.contains(absent.as_str())
            && warning.contains("--split RUN/split.json --subset test"),
        "{stderr}"
    );
    let wt = stdout.lines().find(|l| l.starts_with("WT")).unwrap();
    assert_eq!(wt.split_whitespace().nth(1), Some("2"), "{stdout}");
    let report = EvalReport::read_json(&json).unwrap();
    assert_eq!(report.missing, vec![absent.clone()]);
    assert!(!report.missing_scored_as_empty);
    assert_eq!(report.cases.len(), 2);
    assert_eq!(report.mean["WT"].dice, 1.0);

    // --missing empty scores the absent case as an all-background prediction: Dice 0 and
    // HD95 373.13 in every region its reference has; CSV marks it.
    let csv = dir.join("scores.csv");
    let Outcome { ok, stderr, .. } = voxseg(&[
        &"evaluate" as Arg,
        &"--pred",
        &pred,
        &"--truth",
        &data,
        &"--missing",
        &"empty",
        &"--out",
        &csv,
    ]);
    assert!(ok && stderr.contains("scored as empty"), "{stderr}");
    let text = std::fs::read_to_string(&csv).unwrap();
    let row = text
        .lines()
        .find(|l| l.starts_with(&format!("{absent},WT,")))
        .unwrap();
    assert_eq!(row, format!("{absent},WT,0,373.12866,0,1,missing"));
    assert_eq!(
        text.lines().filter(|l| l.ends_with(",found")).count(),
        6,
        "{text}"
    );

    // With --split the absent case of the subset is an error, unless --missing says
    // otherwise.
    let split = dir.join("split.json");
    let ids: Vec<String> = cases.iter().map(|c| c.0.clone()).collect();
    Split::from_lists(vec![ids[0].clone()], vec![], ids[1..].to_vec(), &ids)
        .unwrap()
        .save(&split)
        .unwrap();
    let Outcome { ok, stderr, .. } = evaluate(&pred, &data, &["--split", s(&split)]);
    assert!(
        !ok && stderr.contains("1 of the 2") && stderr.contains(absent.as_str()),
        "{stderr}"
    );
    let Outcome {
        ok, stdout, stderr, ..
    } = evaluate(&pred, &data, &["--split", s(&split), "--missing", "empty"]);
    assert!(ok, "{stderr}");
    let wt = stdout.lines().find(|l| l.starts_with("WT")).unwrap();
    assert_eq!(
        wt.split_whitespace().take(3).collect::<Vec<_>>(),
        ["WT", "2", "0.5000"],
        "{stdout}"
    );

    // An existing --out is replaced only with --force, and never when it is an input.
    let before = std::fs::read(&json).unwrap();
    let Outcome { ok, stderr, .. } = evaluate(&pred, &data, &["--out", s(&json)]);
    assert!(
        !ok && stderr.contains("already exists") && stderr.contains("--force"),
        "{stderr}"
    );
    assert_eq!(std::fs::read(&json).unwrap(), before);
    let Outcome { ok, stderr, .. } = evaluate(&pred, &data, &["--out", s(&json), "--force"]);
    assert!(ok, "{stderr}");
    let split_bytes = std::fs::read(&split).unwrap();
    // A file in one of the reference's case folders is the reference's; a report at the
    // folder's top is the user's, replaced with --force.
    let case_file = data.join(&cases[0].0).join("notes.json");
    std::fs::write(&case_file, "{}").unwrap();
    let top = data.join("scores.json");
    std::fs::write(&top, "{}").unwrap();
    let Outcome { ok, stderr, .. } = evaluate(
        &pred,
        &data,
        &["--missing", "empty", "--out", s(&top), "--force"],
    );
    assert!(ok, "{stderr}");
    for (input, what) in [
        (&split, "the --split file"),
        (&case_file, "of the reference"),
    ] {
        let Outcome { ok, stderr, .. } = evaluate(
            &pred,
            &data,
            &[
                "--split",
                s(&split),
                "--missing",
                "empty",
                "--out",
                s(input),
                "--force",
            ],
        );
        assert!(!ok && stderr.contains(what), "{stderr}");
    }
    assert_eq!(std::fs::read(&split).unwrap(), split_bytes);
    assert_eq!(std::fs::read_to_string(&case_file).unwrap(), "{}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn label_values_outside_the_convention_are_errors_naming_file_value_and_place() {
    let dir = temp_dir("values");
    let (pred, truth) = (dir.join("pred"), dir.join("truth"));
    std::fs::create_dir_all(&pred).unwrap();
    std::fs::create_dir_all(&truth).unwrap();
    write_mask(&truth.join("a.nii.gz"), &[([2, 3, 4], [5, 5, 5], 4)]);
    // ET written as 3 (BraTS 2023's habit) on BraTS 2021 truth: the first 3 is at (2, 3, 4).
    write_mask(&pred.join("a.nii.gz"), &[([2, 3, 4], [5, 5, 5], 3)]);
    let Outcome {
        ok, stdout, stderr, ..
    } = voxseg(&[
        &"evaluate" as Arg,
        &"--pred",
        &pred,
        &"--truth",
        &truth,
        &"--labels",
        &"brats2021",
    ]);
    assert!(!ok && stdout.is_empty(), "{stdout}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    for want in [
        pred.join("a.nii.gz").display().to_string().as_str(),
        "label value 3 at (x=2, y=3, z=4)",
        "[0, 1, 2, 4]",
        "5 more voxel(s)",
        "--model RUN",
    ] {
        assert!(stderr.contains(want), "{want} not in {stderr}");
    }

    // A reference value outside the named convention is refused too.
    write_mask(&pred.join("a.nii.gz"), &[]);
    write_mask(&truth.join("a.nii.gz"), &[([0, 0, 1], [1, 1, 2], 7)]);
    let Outcome { ok, stderr, .. } = voxseg(&[
        &"evaluate" as Arg,
        &"--pred",
        &pred,
        &"--truth",
        &truth,
        &"--labels",
        &"brats2021",
    ]);
    assert!(
        !ok && stderr.contains(&truth.join("a.nii.gz").display().to_string())
            && stderr.contains("label value 7 at (x=0, y=0, z=1)")
            && stderr.contains("--labels"),
        "{stderr}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn model_convention_is_scored_by_region_name_against_the_reference() {
    let dir = temp_dir("model");
    let run21 = run_with_labels(&dir, "run21", LabelSpec::brats2021());

    // MSD truth (1 oedema, 2 non-enhancing, 3 enhancing) and perfect predictions written in
    // the BraTS 2021 convention (2 oedema, 1 core, 4 enhancing).
    let data = dataset(&dir, SynthLayout::Msd, 2);
    let pred = dir.join("pred");
    std::fs::create_dir_all(&pred).unwrap();
    for (id, label) in labelled(&data) {
        copy_mapped(
            &label,
            &pred.join(format!("{id}.nii.gz")),
            &[(1, 2), (2, 1), (3, 4)],
        );
    }
    // Without --model the 4s are outside MSD's values, and the message says what to pass.
    let Outcome { ok, stderr, .. } =
        voxseg(&[&"evaluate" as Arg, &"--pred", &pred, &"--truth", &data]);
    assert!(
        !ok && stderr.contains("label value 4") && stderr.contains("--model RUN"),
        "{stderr}"
    );
    let out = dir.join("msd.json");
    let Outcome { ok, stderr, .. } = voxseg(&[
        &"evaluate" as Arg,
        &"--pred",
        &pred,
        &"--truth",
        &data,
        &"--model",
        &run21,
        &"--out",
        &out,
    ]);
    assert!(ok, "{stderr}");
    let report = EvalReport::read_json(&out).unwrap();
    assert_eq!(report.cases.len(), 2);
    for region in ["WT", "TC", "ET"] {
        assert_eq!(report.mean[region].dice, 1.0, "{region}: {:?}", report.mean);
    }

    // BraTS 2023 truth (ET = 3) in a plain folder, a BraTS 2021 prediction (ET = 4). The
    // reference's convention comes from --labels; without --model, 4 is read as 2023's
    // resection cavity, in no region.
    let (p23, t23) = (dir.join("p23"), dir.join("t23"));
    std::fs::create_dir_all(&p23).unwrap();
    std::fs::create_dir_all(&t23).unwrap();
    write_mask(
        &t23.join("a.nii.gz"),
        &[([1, 1, 1], [7, 7, 7], 2), ([2, 2, 2], [4, 4, 4], 3)],
    );
    write_mask(
        &p23.join("a.nii.gz"),
        &[([1, 1, 1], [7, 7, 7], 2), ([2, 2, 2], [4, 4, 4], 4)],
    );
    let out = dir.join("b23.json");
    let args = |model: bool| {
        let mut a: Vec<Arg> = vec![
            &"evaluate",
            &"--pred",
            &p23,
            &"--truth",
            &t23,
            &"--labels",
            &"brats2023",
            &"--out",
            &out,
            &"--force",
        ];
        if model {
            a.extend([&"--model" as Arg, &run21]);
        }
        voxseg(&a)
    };
    let Outcome { ok, stderr, .. } = args(false);
    assert!(ok, "{stderr}");
    assert_eq!(EvalReport::read_json(&out).unwrap().mean["ET"].dice, 0.0);
    // Their 4s read as the resection cavity: the likely mix-up is named.
    assert!(
        stderr.contains("hold label 4 and never 3") && stderr.contains("--model RUN"),
        "{stderr}"
    );
    let Outcome { ok, stderr, .. } = args(true);
    assert!(ok, "{stderr}");
    assert!(!stderr.contains("never 3"), "{stderr}");
    let mean = EvalReport::read_json(&out).unwrap().mean;
    assert_eq!(
        (mean["WT"].dice, mean["TC"].dice, mean["ET"].dice),
        (1.0, 1.0, 1.0)
    );

    // A model whose convention lacks the reference's regions cannot be compared.
    let liver = LabelSpec::new(
        ["background", "liver", "tumour"]
            .iter()
            .enumerate()
            .map(|(i, n)| LabelClass {
                name: n.to_string(),
                file_value: i as u8,
            })
            .collect(),
        vec![],
    )
    .unwrap();
    let run_liver = run_with_labels(&dir, "runliver", liver);
    let Outcome { ok, stderr, .. } = voxseg(&[
        &"evaluate" as Arg,
        &"--pred",
        &p23,
        &"--truth",
        &t23,
        &"--labels",
        &"brats2023",
        &"--model",
        &run_liver,
    ]);
    assert!(
        !ok && stderr.contains("region 'WT' does not exist"),
        "{stderr}"
    );
    // --model must be a run; with a plain folder and no --labels it gives the convention.
    let Outcome { ok, stderr, .. } = voxseg(&[
        &"evaluate" as Arg,
        &"--pred",
        &p23,
        &"--truth",
        &t23,
        &"--model",
        &dir,
    ]);
    assert!(!ok && stderr.contains("not a run directory"), "{stderr}");
    let Outcome { ok, stderr, .. } = voxseg(&[
        &"evaluate" as Arg,
        &"--pred",
        &p23,
        &"--truth",
        &pred,
        &"--model",
        &run21,
    ]);
    assert!(!ok && stderr.contains("no reference label"), "{stderr}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_out_subset_and_split_are_refused_before_scoring() {
    let dir = temp_dir("flags");
    let data = dataset(&dir, SynthLayout::Brats2021, 2);
    let cases = labelled(&data);
    let pred = dir.join("pred");
    std::fs::create_dir_all(&pred).unwrap();
    for (id, label) in &cases {
        std::fs::copy(label, pred.join(format!("{id}.nii.gz"))).unwrap();
    }
    let run = |extra: &[Arg]| {
        let mut a: Vec<Arg> = vec![&"evaluate", &"--pred", &pred, &"--truth", &data];
        a.extend_from_slice(extra);
        voxseg(&a)
    };
    // --out is checked first: nothing is scored or printed.
    let Outcome {
        ok, stdout, stderr, ..
    } = run(&[&"--out", &dir.join("ev.txt")]);
    assert!(
        !ok && stdout.is_empty() && stderr.contains(".json or .csv"),
        "{stderr}"
    );
    let nowhere = dir.join("no/dir/x.json");
    let Outcome {
        ok, stdout, stderr, ..
    } = run(&[&"--out", &nowhere]);
    assert!(
        !ok && stdout.is_empty() && stderr.contains("does not exist"),
        "{stderr}"
    );
    let folder = dir.join("folder.json");
    std::fs::create_dir_all(&folder).unwrap();
    let Outcome { ok, stderr, .. } = run(&[&"--out", &folder]);
    assert!(!ok && stderr.contains("is a folder"), "{stderr}");

    // --subset needs --split.
    let Outcome { ok, stderr, .. } = run(&[&"--subset", &"val"]);
    assert!(!ok && stderr.contains("--split"), "{stderr}");

    // A split of another dataset's cases says so.
    let other: Vec<String> = ["SynthBrain_003", "SynthBrain_004"]
        .map(String::from)
        .to_vec();
    let split = dir.join("split.json");
    Split::from_lists(
        vec![other[0].clone()],
        vec![],
        vec![other[1].clone()],
        &other,
    )
    .unwrap()
    .save(&split)
    .unwrap();
    let Outcome {
        ok, stdout, stderr, ..
    } = run(&[&"--split", &split]);
    assert!(
        !ok && stdout.is_empty()
            && stderr.contains("another dataset")
            && stderr.contains("SynthBrain_004"),
        "{stderr}"
    );

    // A case listed twice would be scored twice and weigh double in the means, and an
    // empty subset has nothing to score: both are refused, naming the split file.
    let (a, b) = (&cases[0].0, &cases[1].0);
    for (lists, why) in [
        (
            format!(r#"{{"train": ["{a}"], "val": [], "test": ["{b}", "{b}"]}}"#),
            format!("case '{b}' appears twice"),
        ),
        (
            format!(r#"{{"train": ["{b}"], "val": [], "test": ["{a}", "{b}"]}}"#),
            format!("case '{b}' appears twice"),
        ),
        (
            format!(r#"{{"train": ["{a}", "{b}"], "val": [], "test": []}}"#),
            "its 'test' subset lists no cases".to_string(),
        ),
    ] {
        std::fs::write(&split, lists).unwrap();
        let Outcome {
            ok, stdout, stderr, ..
        } = run(&[&"--split", &split]);
        assert!(
            !ok && stdout.is_empty() && stderr.contains(&why) && stderr.contains("split.json"),
            "{stderr}"
        );
    }

    // --labels naming another convention than the dataset's is refused, not ignored.
    let Outcome { ok, stderr, .. } = run(&[&"--labels", &"brats2023"]);
    assert!(
        !ok && stderr.contains("--labels is for a plain folder"),
        "{stderr}"
    );
    let Outcome { ok, stderr, .. } = run(&[&"--labels", &"brats2021"]);
    assert!(ok, "{stderr}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_reference_dataset_missing_an_image_is_still_scored_from_its_labels() {
    let dir = temp_dir("no-image");
    let data = dataset(&dir, SynthLayout::Msd, 3);
    let cases = labelled(&data);
    std::fs::remove_file(data.join(format!("imagesTr/{}.nii.gz", cases[0].0))).unwrap();
    let pred = dir.join("pred");
    std::fs::create_dir_all(&pred).unwrap();
    for (id, label) in &cases {
        std::fs::copy(label, pred.join(format!("{id}.nii.gz"))).unwrap();
    }
    assert_eq!(scores(&dir, &pred, &data).cases.len(), 3);
    // A missing label is still an error: it is what evaluation reads.
    std::fs::remove_file(&cases[1].1).unwrap();
    let Outcome { ok, stderr, .. } =
        voxseg(&[&"evaluate" as Arg, &"--pred", &pred, &"--truth", &data]);
    assert!(!ok && stderr.contains(&cases[1].0), "{stderr}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A BraTS reference kept as its segmentations alone (CASE/CASE_seg.nii.gz, no images) is
/// still a BraTS dataset to evaluate: its convention and labels are what scoring reads.
#[test]
fn a_brats_reference_of_segmentations_alone_is_scored() {
    let dir = temp_dir("seg-only");
    let data = dataset(&dir, SynthLayout::Brats2021, 3);
    let cases = labelled(&data);
    let pred = dir.join("pred");
    std::fs::create_dir_all(&pred).unwrap();
    for (id, label) in &cases {
        std::fs::copy(label, pred.join(format!("{id}.nii.gz"))).unwrap();
        for m in ["t1", "t1ce", "t2", "flair"] {
            std::fs::remove_file(data.join(format!("{id}/{id}_{m}.nii.gz"))).unwrap();
        }
    }
    assert_eq!(scores(&dir, &pred, &data).cases.len(), 3);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn predictions_of_unlabelled_test_cases_are_left_out_with_a_warning() {
    let dir = temp_dir("unlabelled");
    let data = dataset(&dir, SynthLayout::Msd, 3);
    let cases = labelled(&data);
    // The last case becomes an unlabelled test case, as MSD lists imagesTs.
    let json_path = data.join("dataset.json");
    let mut json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json_path).unwrap()).unwrap();
    let test_entry = json["training"].as_array_mut().unwrap().pop().unwrap();
    json["test"] = serde_json::json!([test_entry["image"]]);
    json["numTraining"] = serde_json::json!(json["training"].as_array().unwrap().len());
    json["numTest"] = serde_json::json!(1);
    std::fs::write(&json_path, json.to_string()).unwrap();
    let pred = dir.join("pred");
    std::fs::create_dir_all(&pred).unwrap();
    // What `predict --split test` writes: every case's prediction, the test case's too.
    for (id, label) in &cases {
        std::fs::copy(label, pred.join(format!("{id}.nii.gz"))).unwrap();
    }
    let out = dir.join("scores.json");
    let Outcome { ok, stderr, .. } = voxseg(&[
        &"evaluate" as Arg,
        &"--pred",
        &pred,
        &"--truth",
        &data,
        &"--out",
        &out,
    ]);
    assert!(ok, "{stderr}");
    let test_id = &cases[2].0;
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "warning: 1 predictions in {} are of cases {} lists as unlabelled test cases ({test_id})",
            pred.display(),
            data.display()
        )),
        "{stderr}"
    );
    let report: EvalReport = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    let scored: Vec<&str> = report.cases.iter().map(|c| c.case.as_str()).collect();
    assert_eq!(scored, [cases[0].0.as_str(), cases[1].0.as_str()]);
    assert!(report.missing.is_empty());

    // A prediction of a case the dataset does not list at all is still an error.
    std::fs::copy(&cases[0].1, pred.join("stranger.nii.gz")).unwrap();
    let Outcome { ok, stderr, .. } =
        voxseg(&[&"evaluate" as Arg, &"--pred", &pred, &"--truth", &data]);
    assert!(!ok);
    assert!(
        stderr.contains("stranger") && stderr.contains("no reference label"),
        "{stderr}"
    );
    // Also when a split picks the cases to score.
    let split = dir.join("split.json");
    let ids: Vec<String> = cases[..2].iter().map(|(id, _)| id.clone()).collect();
    Split::from_lists(vec![ids[0].clone()], vec![], vec![ids[1].clone()], &ids)
        .unwrap()
        .save(&split)
        .unwrap();
    let Outcome { ok, stderr, .. } = evaluate(&pred, &data, &["--split", s(&split)]);
    assert!(!ok);
    assert!(
        stderr.contains("stranger") && stderr.contains("no reference label"),
        "{stderr}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_broken_dataset_reports_why_not_that_it_is_no_dataset() {
    let dir = temp_dir("broken");
    let data = dataset(&dir, SynthLayout::Msd, 2);
    let pred = dir.join("pred");
    std::fs::create_dir_all(&pred).unwrap();
    for (id, label) in labelled(&data) {
        std::fs::copy(label, pred.join(format!("{id}.nii.gz"))).unwrap();
    }
    std::fs::write(data.join("dataset.json"), "{ not json").unwrap();
    for labels in [None, Some("brats2021")] {
        let mut args: Vec<Arg> = vec![&"evaluate", &"--pred", &pred, &"--truth", &data];
        if let Some(l) = &labels {
            args.extend([&"--labels" as Arg, l]);
        }
        let Outcome { ok, stderr, .. } = voxseg(&args);
        assert!(!ok);
        assert!(
            stderr.contains("dataset.json") && stderr.contains("invalid JSON"),
            "{labels:?}: {stderr}"
        );
        assert!(!stderr.contains("not a dataset folder"), "{stderr}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn json_and_csv_list_brats_regions_in_the_conventions_order() {
    let dir = temp_dir("order");
    let data = dataset(&dir, SynthLayout::Brats2021, 2);
    let pred = dir.join("pred");
    std::fs::create_dir_all(&pred).unwrap();
    for (id, label) in labelled(&data) {
        std::fs::copy(label, pred.join(format!("{id}.nii.gz"))).unwrap();
    }
    for name in ["scores.json", "scores.csv"] {
        let out = dir.join(name);
        let Outcome { ok, stderr, .. } = voxseg(&[
            &"evaluate" as Arg,
            &"--pred",
            &pred,
            &"--truth",
            &data,
            &"--out",
            &out,
        ]);
        assert!(ok, "{stderr}");
    }
    // JSON: every case and the mean name WT, then TC, then ET.
    let json = std::fs::read_to_string(dir.join("scores.json")).unwrap();
    let sections: Vec<usize> = json
        .match_indices("\"case\"")
        .chain(json.match_indices("\"mean\""))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(sections.len(), 3, "{json}");
    for start in sections {
        let at = |key: &str| start + json[start..].find(key).unwrap();
        assert!(
            at("\"WT\"") < at("\"TC\"") && at("\"TC\"") < at("\"ET\""),
            "{json}"
        );
    }
    // CSV: each case's rows are WT, TC, ET.
    let csv = std::fs::read_to_string(dir.join("scores.csv")).unwrap();
    let regions: Vec<&str> = csv
        .lines()
        .skip(1)
        .map(|l| l.split(',').nth(1).unwrap())
        .collect();
    assert_eq!(regions, ["WT", "TC", "ET", "WT", "TC", "ET"], "{csv}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A block of ED (2) for `write_mask`: x in [1, 5), y in [3, 7), z in [2, 6).
const ED_BLOCK: [([usize; 3], [usize; 3], u8); 1] = [([1, 3, 2], [5, 7, 6], 2)];

/// `voxseg evaluate --pred PRED --truth TRUTH` plus `extra`.
fn evaluate(pred: &Path, truth: &Path, extra: &[&str]) -> Outcome {
    let mut args = vec!["evaluate", "--pred", s(pred), "--truth", s(truth)];
    args.extend_from_slice(extra);
    voxseg(&args)
}

/// A model trained on one class writes that class alone: its predictions are scored on that
/// class, matched by name in the reference's convention, and not on regions (WT, TC) it was
/// never trained to find.
#[test]
fn a_single_class_model_is_scored_on_its_class_alone() {
    let dir = temp_dir("single-class");
    let target: TargetSpec = "class:ET".parse().unwrap();
    let run = run_with_target(&dir, "run-et", LabelSpec::brats2021(), target);
    // BraTS 2023 truth (ED 2, ET 3) and a perfect ET-only prediction in 2021's values (4).
    let (pred, truth) = (dir.join("pred"), dir.join("truth"));
    std::fs::create_dir_all(&pred).unwrap();
    std::fs::create_dir_all(&truth).unwrap();
    write_mask(
        &truth.join("a.nii.gz"),
        &[([1, 1, 1], [7, 7, 7], 2), ([2, 2, 2], [4, 4, 4], 3)],
    );
    write_mask(&pred.join("a.nii.gz"), &[([2, 2, 2], [4, 4, 4], 4)]);
    let out = dir.join("scores.json");
    let r = evaluate(
        &pred,
        &truth,
        &[
            "--labels",
            "brats2023",
            "--model",
            s(&run),
            "--out",
            s(&out),
        ],
    );
    assert!(r.ok, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("trained on class ET alone: only ET is scored"),
        "{}",
        r.stderr
    );
    let report = EvalReport::read_json(&out).unwrap();
    assert_eq!(
        report.mean.keys().collect::<Vec<_>>(),
        ["ET"],
        "{}",
        r.stdout
    );
    assert_eq!(report.mean["ET"].dice, 1.0);
    assert!(
        !r.stdout
            .lines()
            .any(|l| l.starts_with("WT") || l.starts_with("TC")),
        "{}",
        r.stdout
    );
    // A class the reference's convention lacks cannot be scored.
    let necrosis = LabelSpec::new(
        vec![
            LabelClass {
                name: "background".into(),
                file_value: 0,
            },
            LabelClass {
                name: "necrosis".into(),
                file_value: 1,
            },
        ],
        Vec::new(),
    )
    .unwrap();
    let run = run_with_target(
        &dir,
        "run-necrosis",
        necrosis,
        "class:necrosis".parse().unwrap(),
    );
    write_mask(&pred.join("a.nii.gz"), &[([2, 2, 2], [4, 4, 4], 1)]);
    let r = evaluate(
        &pred,
        &truth,
        &["--labels", "brats2023", "--model", s(&run)],
    );
    assert!(!r.ok, "{}", r.stdout);
    assert!(
        r.stderr.contains("class 'necrosis'") && r.stderr.contains("\"NCR\""),
        "{}",
        r.stderr
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_prediction_on_a_mirrored_grid_is_refused_saying_what_differs() {
    let dir = temp_dir("mirrored");
    let (pred, truth) = (dir.join("pred"), dir.join("truth"));
    std::fs::create_dir_all(&pred).unwrap();
    std::fs::create_dir_all(&truth).unwrap();
    write_mask(&truth.join("a.nii.gz"), &ED_BLOCK);
    // The same voxels, but x and y run the other way in space (180 degrees about z).
    let mut mirrored = mask_grid();
    mirrored.set_rotation([0.0, 0.0, 0.0, 1.0], 1.0, [0.0; 3]);
    write_mask_on(&pred.join("a.nii.gz"), &mirrored, &ED_BLOCK);
    let r = evaluate(&pred, &truth, &["--labels", "brats2021"]);
    assert!(!r.ok, "a mirrored prediction was scored: {}", r.stdout);
    let want = format!(
        "error: {}: not on the grid of its reference {}: the x and y axes are mirrored;",
        pred.join("a.nii.gz").display(),
        truth.join("a.nii.gz").display()
    );
    assert!(
        r.stderr.starts_with(&want) && r.stderr.lines().count() == 1,
        "{}",
        r.stderr
    );
    // Float noise below the image/label tolerance of training is the same grid.
    let mut noisy = mask_grid();
    noisy.srow[0][3] = 2e-4;
    write_mask_on(&pred.join("a.nii.gz"), &noisy, &ED_BLOCK);
    let r = evaluate(&pred, &truth, &["--labels", "brats2021"]);
    assert!(r.ok, "{}", r.stderr);
    let wt = r.stdout.lines().find(|l| l.starts_with("WT")).unwrap();
    assert_eq!(wt.split_whitespace().nth(2), Some("1.0000"), "{}", r.stdout);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn nii_predictions_are_read_and_both_endings_for_one_case_are_refused() {
    let dir = temp_dir("endings");
    let (pred, truth) = (dir.join("pred"), dir.join("truth"));
    std::fs::create_dir_all(&pred).unwrap();
    std::fs::create_dir_all(&truth).unwrap();
    write_mask(&truth.join("a.nii.gz"), &ED_BLOCK);
    write_mask(&truth.join("b.nii"), &ED_BLOCK);
    write_mask(&pred.join("a.nii"), &ED_BLOCK);
    write_label_map(&pred.join("b.nii.gz"), &mask_grid(), &[0; 1000]).unwrap();
    let json = dir.join("scores.json");
    let r = evaluate(&pred, &truth, &["--labels", "brats2021", "--out", s(&json)]);
    assert!(r.ok, "{}", r.stderr);
    let v = read_json(&json);
    assert_eq!(v["cases"][0]["case"], "a");
    assert_eq!(v["cases"][0]["WT"]["dice"], 1.0);
    // b's prediction is empty: Dice 0 and, for a BraTS convention, BraTS's 373.13 mm.
    assert_eq!(v["cases"][1]["WT"]["dice"], 0.0);
    assert_eq!(v["cases"][1]["WT"]["hd95"], 373.12866);
    assert_eq!(v["empty_hd95"]["rule"], "brats");
    assert_eq!(v["empty_hd95"]["mm"]["b"], 373.12866);

    write_mask(&pred.join("a.nii.gz"), &ED_BLOCK);
    let r = evaluate(&pred, &truth, &["--labels", "brats2021"]);
    assert!(!r.ok, "{}", r.stdout);
    let both = format!(
        "{} and {} are both case a",
        pred.join("a.nii").display(),
        pred.join("a.nii.gz").display()
    );
    assert!(
        r.stderr.contains(&both) && r.stderr.lines().count() == 1,
        "{}",
        r.stderr
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn empty_masks_on_non_brats_data_get_the_image_diagonal_as_hd95() {
    let dir = temp_dir("diagonal");
    let data = dataset(&dir, SynthLayout::Msd, 2);
    let pred = dir.join("pred");
    std::fs::create_dir_all(&pred).unwrap();
    let mut diagonals = Vec::new();
    for case in detect(&data).unwrap().cases {
        let label = NiftiFile::open(case.label.as_ref().unwrap()).unwrap();
        let h = label.header();
        let empty = vec![0u8; h.voxel_count()];
        write_label_map(&pred.join(format!("{}.nii.gz", case.id)), h, &empty).unwrap();
        let diagonal = (0..3)
            .map(|i| (h.dims[i] as f64 * h.spacing[i]).powi(2))
            .sum::<f64>()
            .sqrt();
        diagonals.push((case.id, diagonal));
    }
    let json = dir.join("scores.json");
    let r = evaluate(&pred, &data, &["--out", s(&json)]);
    assert!(r.ok, "{}", r.stderr);
    let v = read_json(&json);
    assert_eq!(v["empty_hd95"]["rule"], "image_diagonal");
    let mut penalised = 0;
    for (i, (id, diagonal)) in diagonals.iter().enumerate() {
        let used = v["empty_hd95"]["mm"][id].as_f64().unwrap();
        assert!((used - diagonal).abs() < 1e-9, "{id}: {used} vs {diagonal}");
        let case = v["cases"][i].as_object().unwrap();
        for (region, scores) in case.iter().filter(|(k, _)| *k != "case") {
            let (dice, hd95) = (scores["dice"].as_f64(), scores["hd95"].as_f64());
            if dice == Some(0.0) {
                assert_eq!(hd95, Some(used), "{id} {region}");
                penalised += 1;
            } else {
                assert_eq!((dice, hd95), (Some(1.0), Some(0.0)), "{id} {region}");
            }
        }
    }
    assert!(penalised > 0, "no region had a reference to miss: {v}");
    assert!(diagonals[0].1 < 100.0, "{diagonals:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `--find-postprocessing` keeps the steps that raise the Dice and scores with them: a
/// stray oedema voxel goes with `largest`, a 2-voxel ET where the reference has none with
/// `min-volume:ET:10` (the real 18-voxel ET stays). `--postprocess` scores given steps, and
/// a step naming no region of the convention is refused.
#[test]
fn postprocessing_is_found_on_the_dice_and_applied_before_scoring() {
    let dir = temp_dir("postprocess");
    let (pred, truth) = (dir.join("pred"), dir.join("truth"));
    std::fs::create_dir_all(&pred).unwrap();
    std::fs::create_dir_all(&truth).unwrap();
    let tumour = [([1, 1, 1], [8, 8, 8], 2), ([2, 2, 2], [6, 6, 6], 1)];
    let et = ([3, 3, 3], [6, 6, 5], 4);
    let stray_ed = ([9, 9, 9], [10, 10, 10], 2);
    let tiny_et = ([3, 3, 3], [4, 4, 5], 4);
    write_mask(&truth.join("a.nii.gz"), &[tumour[0], tumour[1], et]);
    write_mask(
        &pred.join("a.nii.gz"),
        &[tumour[0], tumour[1], et, stray_ed],
    );
    write_mask(&truth.join("b.nii.gz"), &tumour);
    write_mask(&pred.join("b.nii.gz"), &[tumour[0], tumour[1], tiny_et]);
    let labels = ["--labels", "brats2021"];

    let json = dir.join("found.json");
    let r = evaluate(
        &pred,
        &truth,
        &[
            labels[0],
            labels[1],
            "--find-postprocessing",
            "--out",
            s(&json),
        ],
    );
    assert!(r.ok, "{}", r.stderr);
    let kept: Vec<&str> = r
        .stdout
        .lines()
        .filter(|l| l.ends_with(" yes"))
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(kept, ["largest", "min-volume:ET:10"], "{}", r.stdout);
    assert!(
        r.stdout
            .contains("chosen: --postprocess largest,min-volume:ET:10 (mean Dice WT 0.99"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("ET 0.5000 -> 1.0000"), "{}", r.stdout);
    let v = read_json(&json);
    assert_eq!(v["postprocess"], "largest,min-volume:ET:10");
    let trials = v["postprocess_trials"].as_array().unwrap();
    assert_eq!(trials[0]["step"], "largest");
    assert_eq!(trials[0]["kept"], true);
    assert_eq!(
        trials.len(),
        7,
        "largest, then of each region, then a min-volume per region: {v}"
    );
    assert!(
        r.stdout
            .contains("(the cases they were chosen on, so the scores flatter them)"),
        "{}",
        r.stdout
    );
    for region in ["WT", "TC", "ET"] {
        assert_eq!(v["mean"][region]["dice"], 1.0, "{region}: {v}");
    }
    // The files are scored as they are without the option, and not changed by it.
    let plain = dir.join("plain.json");
    let r = evaluate(&pred, &truth, &[labels[0], labels[1], "--out", s(&plain)]);
    assert!(r.ok, "{}", r.stderr);
    let v = read_json(&plain);
    assert_eq!(v["mean"]["ET"]["dice"], 0.5);
    assert!(v.get("postprocess").is_none(), "{v}");

    let given = dir.join("given.json");
    let r = evaluate(
        &pred,
        &truth,
        &[
            labels[0],
            labels[1],
            "--postprocess",
            "largest",
            "--out",
            s(&given),
        ],
    );
    assert!(r.ok, "{}", r.stderr);
    let v = read_json(&given);
    assert_eq!(v["postprocess"], "largest");
    assert_eq!(
        (
            v["mean"]["WT"]["dice"].as_f64(),
            v["mean"]["ET"]["dice"].as_f64()
        ),
        (Some(1.0), Some(0.5))
    );

    let r = evaluate(
        &pred,
        &truth,
        &[labels[0], labels[1], "--postprocess", "largest:edema"],
    );
    assert!(!r.ok);
    assert!(
        r.stderr
            .contains("'edema' is neither a region nor a foreground class of the labels; they are WT, TC, ET, NCR, ED"),
        "{}",
        r.stderr
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `voxseg postprocess` writes each map of a folder, cleaned, under its own name into
/// another folder, and leaves the inputs as they were; existing outputs, the input folder
/// as --out and values outside the convention are refused.
#[test]
fn postprocess_cleans_a_folder_of_maps_into_another() {
    let dir = temp_dir("postprocess-folder");
    let (pred, clean) = (dir.join("pred"), dir.join("clean"));
    std::fs::create_dir_all(&pred).unwrap();
    let tumour = ([1, 1, 1], [5, 5, 5], 2);
    write_mask(&pred.join("a.nii.gz"), &[tumour, ([8, 8, 8], [9, 9, 9], 2)]);
    write_mask(&pred.join("b.nii"), &[tumour]);
    let before = std::fs::read(pred.join("a.nii.gz")).unwrap();
    let postprocess = |extra: &[&str]| {
        let mut args = vec!["postprocess", "--pred", s(&pred), "--steps", "largest"];
        args.extend_from_slice(extra);
        voxseg(&args)
    };
    let r = postprocess(&["--out", s(&clean), "--labels", "brats2021"]);
    assert!(r.ok, "{}", r.stderr);
    assert!(r.stdout.contains("a: 1 voxel(s) changed"), "{}", r.stdout);
    assert!(r.stdout.contains("b: 0 voxel(s) changed"), "{}", r.stdout);
    assert!(r.stdout.contains("2 map(s) written to"), "{}", r.stdout);
    let a = NiftiFile::open(&clean.join("a.nii.gz")).unwrap();
    let values: Vec<f32> = a.channel(0).unwrap();
    assert_eq!(
        values.iter().filter(|&&v| v == 2.0).count(),
        64,
        "the stray voxel went"
    );
    assert_eq!(values[(8 * 10 + 8) * 10 + 8], 0.0);
    assert_eq!(a.header().dims, [10, 10, 10]);
    assert!(clean.join("b.nii").is_file(), "written under its own name");
    assert_eq!(std::fs::read(pred.join("a.nii.gz")).unwrap(), before);

    let r = postprocess(&["--out", s(&clean), "--labels", "brats2021"]);
    assert!(!r.ok);
    assert!(
        r.stderr
            .contains("already exists (2 earlier map(s) of these 2 cases in"),
        "{}",
        r.stderr
    );
    assert!(postprocess(&["--out", s(&clean), "--labels", "brats2021", "--force"]).ok);
    let r = postprocess(&["--out", s(&pred), "--labels", "brats2021"]);
    assert!(
        r.stderr.contains("is the same folder as --pred"),
        "{}",
        r.stderr
    );
    // Inside it too: a later listing of the predictions would not see them, but a person
    // would find cleaned and raw maps mixed.
    let inner = pred.join("clean");
    let r = postprocess(&["--out", s(&inner), "--labels", "brats2021"]);
    assert!(
        !r.ok && r.stderr.contains("is inside --pred"),
        "{}",
        r.stderr
    );
    assert!(!inner.exists(), "nothing written");
    let r = postprocess(&["--out", s(&clean)]);
    assert!(!r.ok && r.stderr.contains("--labels"), "{}", r.stderr);

    // An earlier output with the other ending is the same case's: refused, then replaced.
    std::fs::rename(pred.join("b.nii"), pred.join("b.nii.gz")).unwrap();
    std::fs::remove_file(clean.join("a.nii.gz")).unwrap();
    let r = postprocess(&["--out", s(&clean), "--labels", "brats2021"]);
    assert!(
        r.stderr.contains("b.nii already exists (1 earlier map(s)"),
        "{}",
        r.stderr
    );
    let r = postprocess(&["--out", s(&clean), "--labels", "brats2021", "--force"]);
    assert!(r.ok, "{}", r.stderr);
    assert!(clean.join("b.nii.gz").is_file() && !clean.join("b.nii").exists());

    // A bad map anywhere stops the run before anything is written.
    write_mask(&pred.join("c.nii.gz"), &[([1, 1, 1], [2, 2, 2], 3)]);
    let other = dir.join("other");
    let r = postprocess(&["--out", s(&other), "--labels", "brats2021"]);
    assert!(!r.ok);
    assert!(
        r.stderr.contains("c.nii.gz") && r.stderr.contains("label value 3"),
        "{}",
        r.stderr
    );
    assert!(!other.exists(), "nothing written");
    std::fs::remove_dir_all(&dir).unwrap();
}
