//! End to end on tiny synthetic data: train (the loss falls), the run's files exist and
//! parse, resume continues exactly where a run stopped, predict writes NIfTI with the
//! input's shape, affine and label set, evaluate scores crafted masks by hand, and bad
//! input gets a clear error.
use std::path::{Path, PathBuf};
use voxseg::backend::cpu::Cpu;
use voxseg::data::labels::LabelSpec;
use voxseg::data::layout::detect;
use voxseg::data::nifti::NiftiFile;
use voxseg::data::split::Split;
use voxseg::data::synth::SynthLayout;
use voxseg::infer::{PredictOptions, Predictor};
use voxseg::metrics::evaluate::evaluate;
use voxseg::train::checkpoint::load_checkpoint;
use voxseg::train::{train, RunOptions, TrainConfig};

mod cli_common;

use cli_common::{metrics, preprocess, small_config, synth, temp_dir, voxseg, write_mask, Outcome};

fn tiny_dataset(dir: &Path) -> PathBuf {
    let data = dir.join("data");
    synth(&data, SynthLayout::Brats2021, 6, 24, 3);
    data
}

fn tiny_config(data: &Path, out: &Path, epochs: usize) -> TrainConfig {
    TrainConfig {
        batch: Some(2),
        epochs,
        iters_per_epoch: 4,
        val_every: 1,
        split: voxseg::data::split::SplitFractions {
            train: 0.5,
            val: 0.17,
            test: 0.33,
        },
        ..small_config(data, out)
    }
}

#[test]
fn train_files_resume_predict() {
    let dir = temp_dir("train");
    let data = tiny_dataset(&dir);
    let run = dir.join("run");
    let summary = train(tiny_config(&data, &run, 3), RunOptions::default()).unwrap();
    assert_eq!((summary.state.epoch, summary.state.step), (3, 12));

    // The loss falls and every record has the documented keys.
    let lines = metrics(&run);
    assert_eq!(lines.len(), 3);
    for key in [
        "epoch",
        "step",
        "train_loss",
        "val_loss",
        "lr",
        "seconds",
        "val_dice_WT",
        "val_dice_TC",
        "val_dice_ET",
    ] {
        assert!(
            lines.iter().all(|l| l.get(key).is_some()),
            "metrics.jsonl lacks {key}"
        );
    }
    let first = lines[0]["train_loss"].as_f64().unwrap();
    let last = lines[2]["train_loss"].as_f64().unwrap();
    assert!(last < first, "train loss {first} -> {last}");
    // The CPU counts no device memory: no such key, and none in the summary.
    assert!(lines.iter().all(|l| l.get("device_peak_bytes").is_none()));
    assert_eq!(summary.memory_peak_bytes, None);

    // The run's files exist and parse.
    for f in ["config.json", "split.json", "model.json"] {
        let v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(run.join(f)).unwrap()).unwrap();
        assert!(v.is_object(), "{f}");
    }
    let (tensors, meta) = load_checkpoint(&run.join("checkpoints/last.safetensors")).unwrap();
    assert!(tensors
        .iter()
        .any(|(n, _, _)| n == "model/encoder.0.block0.conv.weight"));
    assert!(tensors.iter().any(|(n, _, _)| n.starts_with("optim/")));
    assert!(meta.contains_key("state") && meta.contains_key("model"));
    assert!(run.join("checkpoints/best.safetensors").exists());
    let events: Vec<_> = std::fs::read_dir(run.join("tb"))
        .unwrap()
        .filter_map(|e| e.ok())
        .collect();
    let events = events
        .iter()
        .find(|e| e.file_name().to_string_lossy().contains("tfevents"))
        .expect("an events file");
    let bytes = std::fs::read(events.path()).unwrap();
    for tag in ["train/loss", "val/loss", "val/mean_dice", "val/dice_"] {
        assert!(
            bytes.windows(tag.len()).any(|w| w == tag.as_bytes()),
            "no {tag} scalar in {}",
            events.path().display()
        );
    }

    // A run directory that holds a run is refused without --resume or --force.
    let err = train(tiny_config(&data, &run, 3), RunOptions::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("already holds a run"), "{err}");

    // A folder of other files is refused, even with --force, and left as it was.
    let foreign = dir.join("foreign");
    std::fs::create_dir_all(foreign.join("checkpoints")).unwrap();
    std::fs::write(foreign.join("notes.txt"), "mine").unwrap();
    let err = train(
        tiny_config(&data, &foreign, 1),
        RunOptions {
            force: true,
            ..RunOptions::default()
        },
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("holds files that are not a run's (notes.txt)"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(foreign.join("notes.txt")).unwrap(),
        "mine"
    );
    assert_eq!(std::fs::read_dir(&foreign).unwrap().count(), 2);

    // Resume: 3 epochs then 2 more equal 5 epochs straight through, bit for bit.
    let resumed = train(
        tiny_config(&data, &run, 5),
        RunOptions {
            resume: true,
            requested: vec!["epochs".into()],
            ..RunOptions::default()
        },
    )
    .unwrap();
    assert_eq!((resumed.state.epoch, resumed.state.step), (5, 20));
    let steps: Vec<u64> = metrics(&run)
        .iter()
        .map(|l| l["step"].as_u64().unwrap())
        .collect();
    assert_eq!(steps, vec![4, 8, 12, 16, 20]);
    let straight_dir = dir.join("straight");
    train(tiny_config(&data, &straight_dir, 5), RunOptions::default()).unwrap();
    let (a, _) = load_checkpoint(&run.join("checkpoints/last.safetensors")).unwrap();
    let (b, _) = load_checkpoint(&straight_dir.join("checkpoints/last.safetensors")).unwrap();
    assert_eq!(a.len(), b.len());
    for ((na, _, va), (nb, _, vb)) in a.iter().zip(&b) {
        assert_eq!(na, nb);
        assert!(
            va.iter().zip(vb).all(|(x, y)| x.to_bits() == y.to_bits()),
            "{na} differs after resume"
        );
    }

    // Predict the test cases: NIfTI with the input's shape, affine and label values.
    let backend = Cpu::new();
    let mut predictor = Predictor::open(&backend, &run, "last").unwrap();
    let dataset = detect(&data).unwrap();
    let ids: Vec<String> = dataset.cases.iter().map(|c| c.id.clone()).collect();
    let split = Split::load(&run.join("split.json"), &ids).unwrap();
    assert!(!split.test_ids().is_empty());
    let out = dir.join("pred");
    std::fs::create_dir_all(&out).unwrap();
    let opts = PredictOptions {
        checkpoint: "last".into(),
        overlap: 0.5,
        tta: true,
        probabilities: true,
        png: true,
        replace_nan: false,
        batch: 2,
        postprocess: Default::default(),
    };
    for case in dataset
        .cases
        .iter()
        .filter(|c| split.test_ids().contains(&c.id))
    {
        let p = predictor.predict_case(&dataset, case, &out, &opts).unwrap();
        let written = NiftiFile::open(&p.labels).unwrap();
        let input = NiftiFile::open(&case.images[0].path).unwrap();
        assert_eq!(written.header().dims, input.header().dims);
        assert!(written.header().affine_distance(input.header()) < 1e-4);
        let values = written.channel(0).unwrap();
        assert!(
            values.iter().all(|v| [0.0, 1.0, 2.0, 4.0].contains(v)),
            "labels outside BraTS 2021's set"
        );
        assert!(p.probabilities.unwrap().exists() && p.picture.unwrap().exists());
    }
    let report = evaluate(&out, &data, Some(split.test_ids()), None).unwrap();
    assert_eq!(report.cases.len(), split.test_ids().len());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn evaluate_matches_hand_computed_scores() {
    let dir = temp_dir("eval");
    let (pred, truth) = (dir.join("pred"), dir.join("truth"));
    std::fs::create_dir_all(&pred).unwrap();
    std::fs::create_dir_all(&truth).unwrap();
    // Case a: truth a 4x4x4 cube of 2 (oedema); prediction the same cube shifted by one
    // voxel along z (2 mm): Dice 2*48/(64+64) = 0.75; WT HD95 2 mm; TC and ET empty in both.
    write_mask(&truth.join("a.nii.gz"), &[([2, 2, 2], [6, 6, 6], 2)]);
    write_mask(&pred.join("a.nii.gz"), &[([2, 2, 3], [6, 6, 7], 2)]);
    // Case b: truth has enhancing tumour (4), the prediction has none: ET Dice 0, HD95 373.13.
    write_mask(&truth.join("b.nii.gz"), &[([1, 1, 1], [3, 3, 3], 4)]);
    write_mask(&pred.join("b.nii.gz"), &[]);
    let report = evaluate(&pred, &truth, None, Some(&LabelSpec::brats2021())).unwrap();
    let a = &report.cases[0].regions;
    assert!((a["WT"].dice - 0.75).abs() < 1e-12, "{:?}", a["WT"]);
    assert!((a["WT"].hd95 - 2.0).abs() < 1e-9, "{:?}", a["WT"]);
    assert_eq!((a["TC"].dice, a["TC"].hd95), (1.0, 0.0), "both empty");
    let b = &report.cases[1].regions;
    assert_eq!(b["ET"].dice, 0.0);
    assert!((b["ET"].hd95 - 373.12866).abs() < 1e-9, "one empty");
    assert!((report.mean["WT"].dice - (0.75 + 0.0) / 2.0).abs() < 1e-12);
    // A plain folder without a named convention is refused with the fix in the message.
    let err = evaluate(&pred, &truth, None, None).unwrap_err().to_string();
    assert!(err.contains("--labels"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_input_gets_one_clear_line() {
    let dir = temp_dir("cli");
    let data = tiny_dataset(&dir);
    let d = data.to_str().unwrap();
    let out = dir.join("run");
    let o = out.to_str().unwrap();
    let Outcome {
        ok, stderr: err, ..
    } = voxseg(&["train", "--data", d, "--out", o, "--bogus"]);
    assert!(!ok && err.contains("--bogus"), "{err}");
    let Outcome {
        ok, stderr: err, ..
    } = voxseg(&["train", "--data", d, "--out", o, "--modalities", "t1,dwi"]);
    assert!(
        !ok && err.contains("dwi") && err.lines().count() == 1,
        "{err}"
    );
    let Outcome {
        ok, stderr: err, ..
    } = voxseg(&[
        "train", "--data", d, "--out", o, "--device", "cpu", "--patch", "64,64,64",
    ]);
    assert!(
        !ok && err.contains("patch") && err.contains("larger"),
        "{err}"
    );
    let Outcome {
        ok, stderr: err, ..
    } = voxseg(&["train", "--data", d, "--out", o, "--device", "tpu"]);
    assert!(!ok && err.contains("tpu"), "{err}");
    let Outcome {
        ok, stderr: err, ..
    } = voxseg(&["train", "--data", d, "--out", o, "--loss", "focal"]);
    assert!(!ok && err.contains("focal"), "{err}");
    let Outcome {
        ok, stderr: err, ..
    } = voxseg(&["train", "--data", d, "--out", o, "--precision", "fp16"]);
    assert!(!ok && err.contains("fp16") && err.contains("bf16"), "{err}");
    let Outcome {
        ok, stderr: err, ..
    } = voxseg(&["predict", "--model", o, "--data", d, "--out", o]);
    assert!(!ok && err.contains("model.json"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn training_from_a_cache_matches_memory_and_refuses_other_preprocessing() {
    let dir = temp_dir("cache");
    let data = tiny_dataset(&dir);
    let cache = dir.join("cache");
    let out = preprocess(&data, &cache, &[]);
    assert!(out.ok, "{}", out.stderr);

    let from_memory = train(
        tiny_config(&data, &dir.join("memory"), 1),
        RunOptions::default(),
    )
    .unwrap()
    .last_validation
    .unwrap();
    let cached_config = |name: &str| TrainConfig {
        cache: Some(cache.clone()),
        ..tiny_config(&data, &dir.join(name), 1)
    };
    let from_cache = train(cached_config("cached"), RunOptions::default())
        .unwrap()
        .last_validation
        .unwrap();
    assert_eq!(from_cache.loss, from_memory.loss);

    // Settings the cache was not made with are refused, not silently replaced by its own.
    let mut min_max = cached_config("min-max");
    min_max.preprocess.intensity = voxseg::data::preprocess::Intensity::MinMax;
    let err = train(min_max, RunOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("z_score") && err.contains("min_max") && err.contains("--config"),
        "{err}"
    );
    let mut per_dataset = cached_config("per-dataset");
    per_dataset.dataset_statistics = true;
    let err = train(per_dataset, RunOptions::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("--dataset-statistics"), "{err}");

    // `preprocess --config` follows the config's settings, which training then accepts.
    let config = dir.join("min-max.json");
    std::fs::write(
        &config,
        r#"{"preprocess": {"intensity": {"kind": "min_max"}}}"#,
    )
    .unwrap();
    let min_max_cache = dir.join("cache-min-max");
    let Outcome {
        ok, stderr: err, ..
    } = voxseg(&[
        "preprocess",
        "--data",
        data.to_str().unwrap(),
        "--out",
        min_max_cache.to_str().unwrap(),
        "--config",
        config.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let mut min_max = cached_config("min-max-cached");
    min_max.cache = Some(min_max_cache.clone());
    min_max.preprocess.intensity = voxseg::data::preprocess::Intensity::MinMax;
    train(min_max, RunOptions::default()).unwrap();

    std::fs::write(&config, r#"{"dataset_statistics": true}"#).unwrap();
    let Outcome {
        ok, stderr: err, ..
    } = voxseg(&[
        "preprocess",
        "--data",
        data.to_str().unwrap(),
        "--out",
        dir.join("cache-per-dataset").to_str().unwrap(),
        "--config",
        config.to_str().unwrap(),
    ]);
    assert!(
        !ok && err.contains("min-max.json") && err.contains("dataset_statistics"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
