//! `voxseg predict --model RUN RUN ...`: the folds of a cross-validation predict as one
//! ensemble whose probabilities are the mean of each model's, on the test cases they all
//! hold out; runs that cannot be averaged or cases a member trained on are refused.
use std::path::{Path, PathBuf};
use voxseg::data::nifti::NiftiFile;
use voxseg::data::synth::SynthLayout;
use voxseg::train::config::Folds;
use voxseg::train::{train, RunOptions, TrainConfig};

mod cli_common;

use cli_common::{small_config, synth, temp_dir, voxseg, Outcome};

fn fold_run(data: &Path, out: &Path, index: usize, modalities: &[&str]) {
    let cfg = TrainConfig {
        modalities: modalities.iter().map(|m| m.to_string()).collect(),
        iters_per_epoch: 2,
        folds: Some(Folds { count: 3, index }),
        ..small_config(data, out)
    };
    train(cfg, RunOptions::default()).unwrap();
}

fn probabilities(folder: &Path, case: &str) -> Vec<f32> {
    let file = NiftiFile::open(&folder.join(format!("{case}_probabilities.nii.gz"))).unwrap();
    (0..3).flat_map(|c| file.channel(c).unwrap()).collect()
}

#[test]
fn folds_average_their_probabilities_on_the_shared_test_cases() {
    let dir = temp_dir("folds");
    let data = dir.join("data");
    synth(&data, SynthLayout::Brats2021, 8, 24, 5);
    let all = ["t1", "t1ce", "t2", "flair"];
    let runs: Vec<PathBuf> = (0..2).map(|k| dir.join(format!("fold{k}"))).collect();
    for (k, run) in runs.iter().enumerate() {
        fold_run(&data, run, k, &all);
    }
    let path = |p: &Path| p.to_str().unwrap().to_string();
    let predict = |models: &[&PathBuf], out: &Path, split: &str| {
        let mut args = vec!["predict".to_string(), "--model".into()];
        args.extend(models.iter().map(|m| path(m)));
        args.extend(
            [
                "--data",
                &path(&data),
                "--out",
                &path(out),
                "--split",
                split,
            ]
            .map(String::from),
        );
        args.extend(["--probabilities", "--device", "cpu"].map(String::from));
        voxseg(&args)
    };
    let outs: Vec<PathBuf> = ["alone0", "alone1", "both"].map(|n| dir.join(n)).into();
    for (k, run) in runs.iter().enumerate() {
        let Outcome {
            ok, stderr: err, ..
        } = predict(&[run], &outs[k], "test");
        assert!(ok, "{err}");
    }
    let Outcome {
        ok, stderr: err, ..
    } = predict(&[&runs[0], &runs[1]], &outs[2], "test");
    assert!(ok, "{err}");
    let split: serde_json::Value =
        serde_json::from_slice(&std::fs::read(runs[0].join("split.json")).unwrap()).unwrap();
    let test = split["test"].as_array().unwrap();
    assert!(!test.is_empty());
    for case in test {
        let case = case.as_str().unwrap();
        let (a, b) = (probabilities(&outs[0], case), probabilities(&outs[1], case));
        let both = probabilities(&outs[2], case);
        assert_ne!(a, b, "two folds should not predict identically");
        for ((x, y), m) in a.iter().zip(&b).zip(&both) {
            assert!((m - (x + y) / 2.0).abs() < 1e-6, "{m} vs {x}, {y}");
        }
    }

    // Each fold validated on other cases: an ensemble must not predict them.
    let Outcome {
        ok, stderr: err, ..
    } = predict(&[&runs[0], &runs[1]], &dir.join("val"), "val");
    assert!(!ok && err.contains("invalid --split"), "{err}");
    // A model that reads other modalities cannot be averaged with these.
    let other = dir.join("t1-only");
    fold_run(&data, &other, 2, &["t1"]);
    let Outcome {
        ok, stderr: err, ..
    } = predict(&[&runs[0], &other], &dir.join("mixed"), "all");
    assert!(
        !ok && err.contains("cannot join the ensemble") && err.contains("modalities"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
