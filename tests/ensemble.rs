//! `voxseg predict --model RUN RUN ...`: the folds of a cross-validation predict as one
//! ensemble whose probabilities are the mean of each model's, on the test cases they all
//! hold out; runs that cannot be averaged or cases a member trained on are refused.
use std::path::{Path, PathBuf};
use std::process::Command;
use voxseg::data::nifti::NiftiFile;
use voxseg::data::synth::{write_dataset, SynthLayout, SynthOptions, SynthStorage};
use voxseg::train::config::Folds;
use voxseg::train::{train, RunOptions, TrainConfig};

fn voxseg(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_voxseg"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn fold_run(data: &Path, out: &Path, index: usize, modalities: &[&str]) {
    let cfg = TrainConfig {
        data: data.to_path_buf(),
        out: out.to_path_buf(),
        device: "cpu".into(),
        modalities: modalities.iter().map(|m| m.to_string()).collect(),
        features: Some(4),
        max_features: Some(8),
        depth: Some(2),
        patch: Some([16, 16, 16]),
        batch: Some(1),
        optimizer: voxseg::optim::OptimizerSpec::keras_adam(),
        lr: 1e-2,
        schedule: voxseg::optim::LrSchedule::Constant,
        epochs: 1,
        iters_per_epoch: 2,
        workers: 1,
        augment: voxseg::data::augment::AugmentSpec::none(),
        folds: Some(Folds { count: 3, index }),
        ..TrainConfig::default()
    };
    train(cfg, RunOptions::default()).unwrap();
}

fn probabilities(folder: &Path, case: &str) -> Vec<f32> {
    let file = NiftiFile::open(&folder.join(format!("{case}_probabilities.nii.gz"))).unwrap();
    (0..3).flat_map(|c| file.channel(c).unwrap()).collect()
}

#[test]
fn folds_average_their_probabilities_on_the_shared_test_cases() {
    let dir = std::env::temp_dir().join(format!("voxseg-ensemble-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let data = dir.join("data");
    write_dataset(&SynthOptions {
        out: data.clone(),
        cases: 8,
        size: [24, 24, 24],
        seed: 5,
        layout: SynthLayout::Brats2021,
        storage: SynthStorage::Int16,
    })
    .unwrap();
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
        voxseg(&args.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let outs: Vec<PathBuf> = ["alone0", "alone1", "both"].map(|n| dir.join(n)).into();
    for (k, run) in runs.iter().enumerate() {
        let (ok, err) = predict(&[run], &outs[k], "test");
        assert!(ok, "{err}");
    }
    let (ok, err) = predict(&[&runs[0], &runs[1]], &outs[2], "test");
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
    let (ok, err) = predict(&[&runs[0], &runs[1]], &dir.join("val"), "val");
    assert!(!ok && err.contains("invalid --split"), "{err}");
    // A model that reads other modalities cannot be averaged with these.
    let other = dir.join("t1-only");
    fold_run(&data, &other, 2, &["t1"]);
    let (ok, err) = predict(&[&runs[0], &other], &dir.join("mixed"), "all");
    assert!(
        !ok && err.contains("cannot join the ensemble") && err.contains("modalities"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
