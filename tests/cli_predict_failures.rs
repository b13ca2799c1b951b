//! `voxseg predict` when a case or an earlier run's outputs get in the way, with one small
//! model trained once for the file: `--force` leaves no earlier run's sidecars beside new
//! labels, an unreadable case is reported and the others predicted unless `--fail-fast`, and
//! a run's split from another dataset names `--split all` and `--split unlabelled`.
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use voxseg::data::layout::detect;
use voxseg::data::synth::SynthLayout;
use voxseg::train::{train, RunOptions, TrainConfig};

mod cli_common;

use cli_common::{copy_tree, fixture_dir, s, small_config, sorted_entries, synth, voxseg, Outcome};

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
        let root = fixture_dir("cli-predict-failures-fixture");
        let (msd, smaller, run) = (root.join("msd"), root.join("smaller"), root.join("run"));
        synth(&msd, SynthLayout::Msd, 5, 16, 5);
        synth(&smaller, SynthLayout::Msd, 3, 16, 5);
        let cfg = TrainConfig {
            patch: Some([8, 8, 8]),
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
            smaller,
            run,
        }
    })
}

/// `predict --model RUN --device cpu --data DATA --out OUT` plus `extra`, RUN the fixture's.
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
    let case = sorted_entries(&out)[0]
        .trim_end_matches(".nii.gz")
        .to_string();
    let full = [
        format!("{case}.nii.gz"),
        format!("{case}.png"),
        format!("{case}_probabilities.json"),
        format!("{case}_probabilities.nii.gz"),
    ];
    assert_eq!(sorted_entries(&out), full);
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
    assert_eq!(sorted_entries(&out), want);
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
    assert_eq!(sorted_entries(&out), written, "{}", r.stdout);
    assert_eq!(r.stdout.lines().count(), 4, "{}", r.stdout);

    // --fail-fast stops at the bad case, as before: the cases after it are not predicted.
    let out = out_dir("fail-fast");
    let r = predict(&data, &out, &["--split", "all", "--fail-fast"]);
    assert!(!r.ok, "{}", r.stdout);
    assert_eq!(
        sorted_entries(&out),
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

/// A case whose image file is gone fails alone, as an unreadable one does, naming the file:
/// the other cases are predicted.
#[test]
fn a_case_missing_its_image_is_reported_and_the_others_are_predicted() {
    let f = fixture();
    let data = f.root.join("missing-image");
    let _ = std::fs::remove_dir_all(&data);
    copy_tree(&f.msd, &data);
    let listing = detect(&data).unwrap();
    let case = listing.cases[1].clone();
    std::fs::remove_file(&case.images[0].path).unwrap();
    let out = out_dir("missing-image-out");
    let r = predict(&data, &out, &["--split", "all"]);
    assert!(!r.ok, "a failed case must fail the command: {}", r.stdout);
    let reported = r
        .stderr
        .lines()
        .find(|l| l.starts_with(&format!("error: case {} not predicted", case.id)))
        .unwrap_or_else(|| panic!("{}", r.stderr));
    assert!(
        reported.contains(&case.images[0].path.display().to_string())
            && reported.contains("missing"),
        "{reported}"
    );
    assert!(
        r.stderr.contains("1 of the 5 cases could not be predicted"),
        "{}",
        r.stderr
    );
    let written: Vec<String> = listing
        .cases
        .iter()
        .filter(|c| c.id != case.id)
        .map(|c| format!("{}.nii.gz", c.id))
        .collect();
    assert_eq!(sorted_entries(&out), written, "{}", r.stdout);
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
