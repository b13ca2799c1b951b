//! Fixes from the second review, through the binary: `evaluate` refuses a prediction on
//! another grid than its reference (R2), reads `CASE.nii` predictions and refuses a case
//! with both endings (R5), and gives non-BraTS data the image diagonal as the empty-mask
//! HD95 (P17); `predict --force` leaves no earlier run's sidecars beside new labels (P11),
//! carries on past an unreadable case unless `--fail-fast` (P12), and names the fix when a
//! run's split is from another dataset (P15).
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use voxseg::data::layout::detect;
use voxseg::data::nifti::{write_label_map, NiftiFile, NiftiHeaderInfo};
use voxseg::data::synth::{write_dataset, SynthLayout, SynthOptions, SynthStorage};
use voxseg::optim::LrSchedule;
use voxseg::train::{train, RunOptions, TrainConfig};

fn temp_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("evalfix-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

struct Outcome {
    ok: bool,
    stdout: String,
    stderr: String,
}

fn voxseg(args: &[&str]) -> Outcome {
    let out = Command::new(env!("CARGO_BIN_EXE_voxseg"))
        .args(args)
        .output()
        .unwrap();
    Outcome {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn synth(out: &Path, layout: SynthLayout, cases: usize) {
    write_dataset(&SynthOptions {
        out: out.to_path_buf(),
        cases,
        size: [16, 16, 16],
        seed: 5,
        layout,
        storage: SynthStorage::Int16,
    })
    .unwrap();
}

/// A 10x10x10 label map (1 x 1 x 2 mm) with a block of ED (2) on `header`'s grid.
fn write_block(path: &Path, header: &NiftiHeaderInfo) {
    let mut v = vec![0u8; 1000];
    for z in 2..6 {
        for y in 3..7 {
            for x in 1..5 {
                v[(z * 10 + y) * 10 + x] = 2;
            }
        }
    }
    write_label_map(path, header, &v).unwrap();
}

fn plain_grid() -> NiftiHeaderInfo {
    NiftiHeaderInfo::new([10, 10, 10], [1.0, 1.0, 2.0])
}

fn evaluate(pred: &Path, truth: &Path, extra: &[&str]) -> Outcome {
    let mut args = vec!["evaluate", "--pred", s(pred), "--truth", s(truth)];
    args.extend_from_slice(extra);
    voxseg(&args)
}

#[test]
fn a_prediction_on_a_mirrored_grid_is_refused_saying_what_differs() {
    let dir = temp_dir("mirrored");
    let (pred, truth) = (dir.join("pred"), dir.join("truth"));
    std::fs::create_dir_all(&pred).unwrap();
    std::fs::create_dir_all(&truth).unwrap();
    write_block(&truth.join("a.nii.gz"), &plain_grid());
    // The same voxels, but x and y run the other way in space (180 degrees about z).
    let mut mirrored = plain_grid();
    mirrored.set_rotation([0.0, 0.0, 0.0, 1.0], 1.0, [0.0; 3]);
    write_block(&pred.join("a.nii.gz"), &mirrored);
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
    let mut noisy = plain_grid();
    noisy.srow[0][3] = 2e-4;
    write_block(&pred.join("a.nii.gz"), &noisy);
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
    write_block(&truth.join("a.nii.gz"), &plain_grid());
    write_block(&truth.join("b.nii"), &plain_grid());
    write_block(&pred.join("a.nii"), &plain_grid());
    write_label_map(&pred.join("b.nii.gz"), &plain_grid(), &[0; 1000]).unwrap();
    let json = dir.join("scores.json");
    let r = evaluate(&pred, &truth, &["--labels", "brats2021", "--out", s(&json)]);
    assert!(r.ok, "{}", r.stderr);
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(v["cases"][0]["case"], "a");
    assert_eq!(v["cases"][0]["WT"]["dice"], 1.0);
    // b's prediction is empty: Dice 0 and, for a BraTS convention, BraTS's 373.13 mm.
    assert_eq!(v["cases"][1]["WT"]["dice"], 0.0);
    assert_eq!(v["cases"][1]["WT"]["hd95"], 373.12866);
    assert_eq!(v["empty_hd95"]["rule"], "brats");
    assert_eq!(v["empty_hd95"]["mm"]["b"], 373.12866);

    write_block(&pred.join("a.nii.gz"), &plain_grid());
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
    let data = dir.join("msd");
    synth(&data, SynthLayout::Msd, 2);
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
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
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

/// An MSD dataset of 5 cases, another of 3 (the same ids, fewer), and a run trained on
/// the first (train 2, val 1, test 2).
struct Fixture {
    root: PathBuf,
    msd: PathBuf,
    smaller: PathBuf,
    run: PathBuf,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let root = temp_dir("predict");
        let (msd, smaller, run) = (root.join("msd"), root.join("smaller"), root.join("run"));
        synth(&msd, SynthLayout::Msd, 5);
        synth(&smaller, SynthLayout::Msd, 3);
        let cfg = TrainConfig {
            data: msd.clone(),
            out: run.clone(),
            device: "cpu".into(),
            features: Some(4),
            max_features: Some(8),
            depth: Some(2),
            patch: Some([8, 8, 8]),
            batch: Some(1),
            optimizer: voxseg::optim::OptimizerSpec::keras_adam(),
            lr: 1e-2,
            schedule: LrSchedule::Constant,
            epochs: 1,
            iters_per_epoch: 1,
            val_every: 1,
            workers: 1,
            augment: voxseg::data::augment::AugmentSpec::none(),
            split: voxseg::data::split::SplitFractions {
                train: 0.4,
                val: 0.2,
                test: 0.4,
            },
            ..TrainConfig::default()
        };
        train(cfg, RunOptions::default()).unwrap();
        Fixture {
            root,
            msd,
            smaller,
            run,
        }
    })
}

fn predict(data: &Path, out: &Path, extra: &[&str]) -> Outcome {
    let run = &fixture().run;
    let mut args = vec![
        "predict",
        "--model",
        s(run),
        "--device",
        "cpu",
        "--data",
        s(data),
        "--out",
        s(out),
    ];
    args.extend_from_slice(extra);
    voxseg(&args)
}

/// The names of the files in `dir`, sorted.
fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// A fresh folder for one test's outputs (it does not exist yet).
fn out_dir(name: &str) -> PathBuf {
    let dir = fixture().root.join(name);
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

#[test]
fn force_removes_earlier_sidecars_this_run_does_not_write() {
    let f = fixture();
    let out = out_dir("sidecars");
    let r = predict(
        &f.msd,
        &out,
        &["--split", "val", "--png", "--probabilities"],
    );
    assert!(r.ok, "{}", r.stderr);
    let case = listing(&out)[0].trim_end_matches(".nii.gz").to_string();
    let full = [
        format!("{case}.nii.gz"),
        format!("{case}.png"),
        format!("{case}_probabilities.json"),
        format!("{case}_probabilities.nii.gz"),
    ];
    assert_eq!(listing(&out), full);
    // Not voxseg outputs of the predicted case: kept whatever happens.
    std::fs::write(out.join("notes.txt"), b"mine").unwrap();
    std::fs::write(out.join("other.png"), b"mine").unwrap();
    std::fs::write(out.join(format!("{case}_seg.png")), b"mine").unwrap();

    // Without --force, an earlier sidecar this run would not write is refused too.
    std::fs::remove_file(out.join(&full[0])).unwrap();
    let r = predict(&f.msd, &out, &["--split", "val"]);
    assert!(!r.ok, "{}", r.stdout);
    assert!(
        r.stderr.contains(&format!(
            "{case}_probabilities.nii.gz already exists (and 2 more of the outputs)"
        )) && r
            .stderr
            .contains("3 of them this run does not write; --force removes those")
            && r.stderr.lines().count() == 1,
        "{}",
        r.stderr
    );
    let r = predict(&f.msd, &out, &["--split", "val", "--force"]);
    assert!(r.ok, "{}", r.stderr);
    assert!(
        r.stderr.contains("removed 3 earlier output file(s)")
            && r.stderr.contains(&format!("{case}.png")),
        "{}",
        r.stderr
    );
    let mut want = vec![
        format!("{case}.nii.gz"),
        format!("{case}_seg.png"),
        "notes.txt".into(),
        "other.png".into(),
    ];
    want.sort();
    assert_eq!(listing(&out), want);
    std::fs::remove_dir_all(&out).unwrap();
}

/// A copy of the fixture's dataset whose second case's image is a truncated gzip.
fn with_unreadable_case(name: &str) -> (PathBuf, String) {
    let f = fixture();
    let data = f.root.join(name);
    let _ = std::fs::remove_dir_all(&data);
    copy_tree(&f.msd, &data);
    let case = detect(&data).unwrap().cases[1].clone();
    let image = &case.images[0].path;
    let bytes = std::fs::read(image).unwrap();
    std::fs::write(image, &bytes[..bytes.len() / 2]).unwrap();
    (data, case.id)
}

fn copy_tree(from: &Path, to: &Path) {
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

#[test]
fn an_unreadable_case_is_reported_and_the_others_are_predicted() {
    let f = fixture();
    let (data, bad) = with_unreadable_case("truncated");
    let ids: Vec<String> = detect(&f.msd)
        .unwrap()
        .cases
        .into_iter()
        .map(|c| c.id)
        .collect();
    let out = out_dir("carry-on");
    // An earlier run's outputs of every case, the bad one's included.
    let r = predict(&f.msd, &out, &["--split", "all", "--png"]);
    assert!(r.ok, "{}", r.stderr);

    let r = predict(&data, &out, &["--split", "all", "--force"]);
    assert!(!r.ok, "a failed case must fail the command: {}", r.stdout);
    let lines: Vec<&str> = r.stderr.lines().collect();
    let reported = lines
        .iter()
        .find(|l| l.starts_with(&format!("error: case {bad} not predicted")))
        .unwrap_or_else(|| panic!("{}", r.stderr));
    assert!(
        reported.contains("its 2 earlier output file(s) were removed"),
        "{reported}"
    );
    assert_eq!(
        lines.last().copied(),
        Some(
            format!(
                "error: 1 of the 5 cases could not be predicted ({bad}); the other 4 were \
                 written to {}",
                out.display()
            )
            .as_str()
        ),
        "{}",
        r.stderr
    );
    let written: Vec<String> = ids
        .iter()
        .filter(|id| *id != &bad)
        .map(|id| format!("{id}.nii.gz"))
        .collect();
    assert_eq!(listing(&out), written, "{}", r.stdout);
    assert_eq!(r.stdout.lines().count(), 4, "{}", r.stdout);

    // --fail-fast stops at the bad case, as before: the cases after it are not predicted.
    let out = out_dir("fail-fast");
    let r = predict(&data, &out, &["--split", "all", "--fail-fast"]);
    assert!(!r.ok, "{}", r.stdout);
    assert_eq!(
        listing(&out),
        [format!("{}.nii.gz", ids[0])],
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains(&bad) && r.stderr.lines().count() == 1,
        "{}",
        r.stderr
    );
    std::fs::remove_dir_all(&data).unwrap();
}

#[test]
fn a_split_from_another_dataset_names_all_and_unlabelled() {
    let f = fixture();
    let out = out_dir("other-dataset");
    let r = predict(&f.smaller, &out, &["--split", "test"]);
    assert!(!r.ok, "{}", r.stdout);
    assert!(
        r.stderr
            .contains(&format!("{}:", f.run.join("split.json").display()))
            && r.stderr.contains("are not cases of")
            && r.stderr
                .contains("use --split all (every case) or --split unlabelled")
            && r.stderr.lines().count() == 1,
        "{}",
        r.stderr
    );
    let r = predict(&f.smaller, &out, &["--split", "all"]);
    assert!(r.ok, "{}", r.stderr);
    assert_eq!(r.stdout.lines().count(), 3, "{}", r.stdout);
}
