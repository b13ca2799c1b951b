//! How `voxseg train` sets a run up, through the binary on tiny synthetic data: a split
//! without validation cases, an `--out` inside or onto a dataset, one plan for every fold,
//! `classes` for a dataset without regions, validation cases without foreground, the device
//! line on resume, bf16 convolutions on the CPU, and ensemble refusals in the user's words.
use std::path::{Path, PathBuf};

mod cli_common;

use cli_common::{
    assert_refused, brats_dataset, brats_id, metrics, read_json, temp_dir, voxseg_in, Outcome,
};

fn assert_ok(r: &Outcome) {
    assert_eq!(r.code, Some(0), "{}{}", r.stdout, r.stderr);
}

/// A small, fast run of one epoch of two steps, with Adam at 0.001.
fn train_args<'a>(data: &'a str, out: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = small_run_args(data, out);
    args.extend(["--optimizer", "adam", "--lr=0.001"]);
    args.extend(extra);
    args
}

/// A small, fast run of one epoch of two steps, with the default optimiser and rate.
fn small_run_args<'a>(data: &'a str, out: &'a str) -> Vec<&'a str> {
    vec![
        "train",
        "--data",
        data,
        "--out",
        out,
        "--device",
        "cpu",
        "--features",
        "4",
        "--max-features",
        "8",
        "--batch",
        "1",
        "--workers",
        "1",
        "--no-augment",
        "--epochs",
        "1",
        "--iters-per-epoch",
        "2",
    ]
}

/// Whether any TensorBoard event file of the run holds `needle` (a tag name).
fn tensorboard_holds(run: &Path, needle: &str) -> bool {
    std::fs::read_dir(run.join("tb")).unwrap().any(|e| {
        let bytes = std::fs::read(e.unwrap().path()).unwrap();
        bytes.windows(needle.len()).any(|w| w == needle.as_bytes())
    })
}

/// The learning rate a run records: the optimiser's default (SGD 0.01, Adam 0.001) whether
/// the optimiser comes from --optimizer or a --config file, and a rate the file sets is
/// kept when --optimizer changes the optimiser.
#[test]
fn the_default_learning_rate_follows_the_optimiser_however_it_is_chosen() {
    let dir = temp_dir("lr-defaults");
    let data = brats_dataset(&dir, 16, 4);
    let d = data.to_str().unwrap();
    let write = |name: &str, json: &str| {
        let path = dir.join(name);
        std::fs::write(&path, json).unwrap();
        path.to_str().unwrap().to_string()
    };
    let adam_file = write("adam.json", r#"{"optimizer": "adam"}"#);
    let lr_file = write("lr.json", r#"{"lr": 0.0005}"#);
    for (name, extra, lr) in [
        ("flag", vec!["--optimizer", "adam"], 0.001),
        ("file", vec!["--config", &adam_file], 0.001),
        (
            "file-lr",
            vec!["--config", &lr_file, "--optimizer", "adam"],
            0.0005,
        ),
        ("sgd", vec![], 0.01),
    ] {
        let run = dir.join(name);
        let out = run.to_str().unwrap();
        let mut args = small_run_args(d, out);
        args.extend(extra);
        assert_ok(&voxseg_in(&dir, &args));
        let config = read_json(&run.join("config.json"));
        assert_eq!(config["lr"].as_f64(), Some(lr), "{name}: {config}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_split_without_validation_cases_trains_without_made_up_scores() {
    let dir = temp_dir("noval");
    let data = brats_dataset(&dir, 16, 3);
    let d = data.to_str().unwrap();
    let file = dir.join("noval.json");
    let split = serde_json::json!({
        "train": [brats_id(0), brats_id(1)],
        "val": [],
        "test": [brats_id(2), brats_id(3), brats_id(4), brats_id(5)],
    });
    std::fs::write(&file, split.to_string()).unwrap();
    let f = file.to_str().unwrap();
    let config = dir.join("no-val-fraction.json");
    std::fs::write(
        &config,
        r#"{"split": {"train": 0.85, "val": 0.0, "test": 0.15}}"#,
    )
    .unwrap();
    let c = config.to_str().unwrap();
    for (name, extra, epochs) in [
        ("file", ["--split-file", f], "2"),
        ("fractions", ["--config", c], "1"),
    ] {
        let run = dir.join(name);
        let mut args = train_args(d, run.to_str().unwrap(), &extra);
        let at = args.iter().position(|a| *a == "--epochs").unwrap();
        args[at + 1] = epochs;
        let r = voxseg_in(&dir, &args);
        assert_ok(&r);
        assert!(
            r.stderr.contains("no validation cases") && r.stderr.contains("--split-file"),
            "{}",
            r.stderr
        );
        assert!(r.stderr.contains(" / 0 val cases"), "{}", r.stderr);
        for text in [&r.stdout, &r.stderr] {
            assert!(
                !text.contains("val_loss") && !text.contains("dice") && !text.contains("Dice"),
                "{text}"
            );
        }
        assert!(
            r.stdout.contains("best: ") && r.stdout.contains("no validation cases: a copy of last"),
            "{}",
            r.stdout
        );
        let rows = metrics(&run);
        assert!(!rows.is_empty());
        for row in &rows {
            let keys: Vec<&String> = row.as_object().unwrap().keys().collect();
            assert!(keys.iter().all(|k| !k.starts_with("val")), "{row}");
        }
        assert!(tensorboard_holds(&run, "train/loss"));
        assert!(!tensorboard_holds(&run, "val/"));
        let checkpoint = |which: &str| {
            std::fs::read(run.join("checkpoints").join(format!("{which}.safetensors"))).unwrap()
        };
        assert!(checkpoint("best") == checkpoint("last"), "{name}");
    }
    // A process killed between writing last and best leaves a best that is not the epoch
    // last names best: a resume makes it last's copy again, and says so.
    let run = dir.join("file");
    std::fs::remove_file(run.join("checkpoints/best.safetensors")).unwrap();
    let r = voxseg_in(
        &dir,
        &[
            "train",
            "--out",
            run.to_str().unwrap(),
            "--resume",
            "--epochs",
            "3",
        ],
    );
    assert_ok(&r);
    assert!(
        r.stderr
            .contains("was not the best epoch's (1, as last records); made it a copy of last"),
        "{}",
        r.stderr
    );
    // A plateau schedule watches the validation loss: refused before anything is written.
    let run = dir.join("plateau");
    let r = voxseg_in(
        &dir,
        &train_args(
            d,
            run.to_str().unwrap(),
            &["--split-file", f, "--schedule", "plateau:0.5:2"],
        ),
    );
    assert_refused(&r, &["schedule", "plateau", "no validation cases"]);
    assert!(!run.exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The dataset's files, with their contents, in a stable order.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let bytes = std::fs::read(&p).unwrap();
                files.push((p, bytes));
            }
        }
    }
    files.sort();
    files
}

#[test]
fn train_refuses_an_out_inside_the_data_or_onto_another_dataset() {
    let dir = temp_dir("out");
    let data = brats_dataset(&dir, 16, 3);
    let d = data.to_str().unwrap();
    let copy = dir.join("copy");
    std::fs::create_dir_all(&copy).unwrap();
    for (path, bytes) in snapshot(&data) {
        let to = copy.join(path.strip_prefix(&data).unwrap());
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::write(to, bytes).unwrap();
    }
    let (before, copy_before) = (snapshot(&data), snapshot(&copy));
    let inside = data.join("run1");
    let r = voxseg_in(&dir, &train_args(d, inside.to_str().unwrap(), &[]));
    assert_refused(&r, &["--out", "inside --data", "outside"]);
    for force in [None, Some("--force")] {
        let r = voxseg_in(&dir, &train_args(d, "copy", force.as_slice()));
        assert_refused(&r, &["--out", "copy is a dataset", "new or empty folder"]);
    }
    assert!(snapshot(&data) == before && snapshot(&copy) == copy_before);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn every_fold_and_plan_use_one_plan() {
    let dir = temp_dir("plan");
    // At 18^3, synthetic seed 0 and split seed 1, each fold's training cases alone give
    // another patch: [14,15,14], [13,14,13], [13,14,13] against [14,14,14] for the split's.
    let data = brats_dataset(&dir, 18, 0);
    let d = data.to_str().unwrap();
    let plan = |extra: &[&str]| -> serde_json::Value {
        let mut args = vec!["plan", "--data", d, "--device", "cpu", "--seed", "1"];
        args.extend(extra);
        let r = voxseg_in(&dir, &args);
        assert_ok(&r);
        serde_json::from_str(&r.stdout).unwrap()
    };
    let shared = plan(&[]);
    // `auto` says which device it planned for and why, as train does, beside the JSON.
    let r = voxseg_in(&dir, &["plan", "--data", d, "--device", "auto"]);
    assert_ok(&r);
    let line = r
        .stderr
        .lines()
        .find(|l| l.starts_with("device: "))
        .unwrap_or_default();
    let planned = serde_json::from_str::<serde_json::Value>(&r.stdout).unwrap()["device"].clone();
    if planned == "cpu" {
        assert!(line.contains("): no usable GPU ("), "{}", r.stderr);
    } else {
        assert!(line.starts_with("device: cuda:0 ("), "{}", r.stderr);
    }
    for fold in ["0", "1", "2"] {
        let run = dir.join(format!("fold{fold}"));
        let extra = ["--fold", fold, "--folds", "3", "--seed", "1"];
        let r = voxseg_in(&dir, &train_args(d, run.to_str().unwrap(), &extra));
        assert_ok(&r);
        // Training was given its widths and batch; the patch and depth are the plan's.
        let planned = &read_json(&run.join("model.json"))["plan"];
        for key in ["patch", "depth"] {
            assert_eq!(planned[key], shared[key], "fold {fold}: {key}");
        }
    }
    // A split file plans from its own train and val cases, in `plan` as in `train`.
    let file = dir.join("split.json");
    let split = serde_json::json!({
        "train": [brats_id(0), brats_id(1)],
        "val": [brats_id(2)],
        "test": [brats_id(3), brats_id(4), brats_id(5)],
    });
    std::fs::write(&file, split.to_string()).unwrap();
    let f = file.to_str().unwrap();
    let from_file = plan(&["--split-file", f]);
    // nnU-Net's splits_final.json needs a fold, in `plan` as in `train`.
    let nnunet = dir.join("splits_final.json");
    let folds = serde_json::json!([{"train": split["train"], "val": split["val"]}]);
    std::fs::write(&nnunet, folds.to_string()).unwrap();
    let n = nnunet.to_str().unwrap();
    assert_eq!(
        plan(&["--split-file", n, "--fold", "0"])["patch"],
        from_file["patch"]
    );
    let r = voxseg_in(
        &dir,
        &[
            "plan",
            "--data",
            d,
            "--device",
            "cpu",
            "--split-file",
            n,
            "--fold",
            "1",
        ],
    );
    assert_refused(&r, &["fold", "1"]);
    let run = dir.join("given");
    let r = voxseg_in(
        &dir,
        &train_args(d, run.to_str().unwrap(), &["--split-file", f]),
    );
    assert_ok(&r);
    assert_eq!(
        read_json(&run.join("model.json"))["plan"]["patch"],
        from_file["patch"]
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A voxseg manifest over the synthetic cases with their labels named as classes only (a
/// liver-like task): no regions.
fn manifest_without_regions(dir: &Path, data: &Path) -> PathBuf {
    let cases: Vec<serde_json::Value> = (0..6)
        .map(|i| {
            let case = data.join(brats_id(i));
            let file = |m: &str| case.join(format!("{}_{m}.nii.gz", brats_id(i)));
            serde_json::json!({
                "id": brats_id(i),
                "images": {"t1": file("t1"), "flair": file("flair")},
                "label": file("seg"),
            })
        })
        .collect();
    let manifest = serde_json::json!({
        "format": "voxseg-manifest",
        "version": 1,
        "modalities": ["t1", "flair"],
        "labels": [
            {"name": "background", "value": 0},
            {"name": "core", "value": 1},
            {"name": "rim", "value": 2},
            {"name": "spot", "value": 4},
        ],
        "cases": cases,
    });
    let path = dir.join("manifest.json");
    std::fs::write(&path, manifest.to_string()).unwrap();
    path
}

#[test]
fn a_dataset_without_regions_trains_classes_unless_told_otherwise() {
    let dir = temp_dir("target");
    let data = brats_dataset(&dir, 16, 3);
    let manifest = manifest_without_regions(&dir, &data);
    let m = manifest.to_str().unwrap();
    let run = dir.join("run");
    let r = voxseg_in(&dir, &train_args(m, run.to_str().unwrap(), &[]));
    assert_ok(&r);
    assert!(
        r.stderr.contains("defines no regions: target classes"),
        "{}",
        r.stderr
    );
    assert_eq!(read_json(&run.join("config.json"))["target"], "classes");
    let r = voxseg_in(&dir, &["plan", "--data", m, "--device", "cpu"]);
    assert_ok(&r);
    assert!(r.stderr.contains("defines no regions"), "{}", r.stderr);
    // An explicit target is kept (and still checked); BraTS keeps its regions.
    let r = voxseg_in(&dir, &train_args(m, "other", &["--target", "regions"]));
    assert_refused(&r, &["no regions"]);
    let run = dir.join("brats");
    let r = voxseg_in(
        &dir,
        &train_args(data.to_str().unwrap(), run.to_str().unwrap(), &[]),
    );
    assert_ok(&r);
    assert!(!r.stderr.contains("no regions"), "{}", r.stderr);
    assert_eq!(read_json(&run.join("config.json"))["target"], "regions");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn validation_cases_without_foreground_are_warned_about() {
    use voxseg::data::nifti::{read_volume, write_label_map};
    let dir = temp_dir("empty-val");
    let data = brats_dataset(&dir, 16, 3);
    let d = data.to_str().unwrap();
    let file = dir.join("split.json");
    let split =
        serde_json::json!({"train": [brats_id(0), brats_id(1)], "val": [brats_id(2)], "test": []});
    std::fs::write(&file, split.to_string()).unwrap();
    let f = file.to_str().unwrap();
    let run = dir.join("with-foreground");
    let r = voxseg_in(
        &dir,
        &train_args(d, run.to_str().unwrap(), &["--split-file", f]),
    );
    assert_ok(&r);
    assert!(!r.stderr.contains("warning"), "{}", r.stderr);
    let seg = data
        .join(brats_id(2))
        .join(format!("{}_seg.nii.gz", brats_id(2)));
    let (volume, header) = read_volume(&seg).unwrap();
    assert!(volume.data.iter().any(|&v| v != 0.0));
    write_label_map(&seg, &header, &vec![0; volume.data.len()]).unwrap();
    let run = dir.join("without");
    let r = voxseg_in(
        &dir,
        &train_args(d, run.to_str().unwrap(), &["--split-file", f]),
    );
    assert_ok(&r);
    assert!(
        r.stderr
            .contains("warning: the 1 validation case(s) hold no WT/TC/ET voxel")
            && r.stderr.contains("--checkpoint last"),
        "{}",
        r.stderr
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `--precision bf16` on the CPU trains (bf16 products where the CPU has AVX512-BF16, else
/// f32 with a note saying why), the run records it, and a resume may go back to fp32.
#[test]
fn cpu_training_at_bf16_is_recorded_and_resumes_at_fp32() {
    let dir = temp_dir("cpu-bf16");
    let data = brats_dataset(&dir, 16, 4);
    let run = dir.join("run");
    let o = run.to_str().unwrap();
    let r = voxseg_in(
        &dir,
        &train_args(data.to_str().unwrap(), o, &["--precision", "bf16"]),
    );
    assert_ok(&r);
    let noted = r
        .stderr
        .contains("precision bf16 on the CPU: this CPU has no AVX512-BF16");
    assert_eq!(
        noted,
        !voxseg::tensor_ops::conv::bf16_products_available(),
        "{}",
        r.stderr
    );
    assert_eq!(read_json(&run.join("config.json"))["precision"], "bf16");
    let losses: Vec<f64> = metrics(&run)
        .iter()
        .filter_map(|m| m["train_loss"].as_f64())
        .collect();
    assert!(
        !losses.is_empty() && losses.iter().all(|l| l.is_finite()),
        "{losses:?}"
    );
    let r = voxseg_in(
        &dir,
        &[
            "train",
            "--out",
            o,
            "--resume",
            "--epochs",
            "2",
            "--precision",
            "fp32",
        ],
    );
    assert_ok(&r);
    let said = format!("{}{}", r.stdout, r.stderr);
    let resumed = said
        .lines()
        .find(|l| l.starts_with("resuming"))
        .unwrap_or("");
    assert!(
        resumed.contains("precision") && resumed.contains("bf16 -> ") && resumed.contains("fp32"),
        "{said}"
    );
    assert_eq!(read_json(&run.join("config.json"))["precision"], "fp32");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn resume_names_the_runs_device_unless_one_is_asked_for() {
    let dir = temp_dir("resume-device");
    let data = brats_dataset(&dir, 16, 3);
    let run = dir.join("run");
    let o = run.to_str().unwrap();
    assert_ok(&voxseg_in(
        &dir,
        &train_args(data.to_str().unwrap(), o, &[]),
    ));
    let r = voxseg_in(&dir, &["train", "--out", o, "--resume", "--epochs", "2"]);
    assert_ok(&r);
    assert!(
        r.stdout.contains("device: cpu (") && r.stdout.contains("as the run's config.json records"),
        "{}",
        r.stdout
    );
    assert!(!r.stdout.contains("requested"), "{}", r.stdout);
    let r = voxseg_in(
        &dir,
        &[
            "train", "--out", o, "--resume", "--epochs", "3", "--device", "cpu",
        ],
    );
    assert_ok(&r);
    assert!(r.stdout.contains("): requested"), "{}", r.stdout);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn ensembles_name_targets_as_flags_and_refuse_a_run_given_twice() {
    let dir = temp_dir("ensemble");
    let data = brats_dataset(&dir, 16, 3);
    let d = data.to_str().unwrap();
    let runs = [("regions", "regions"), ("et", "class:et")];
    for (name, target) in runs {
        let r = voxseg_in(&dir, &train_args(d, name, &["--target", target]));
        assert_ok(&r);
    }
    let predict = |models: &[&str]| {
        let mut args = vec!["predict", "--model"];
        args.extend(models);
        args.extend(["--data", d, "--out", "preds", "--device", "cpu"]);
        voxseg_in(&dir, &args)
    };
    let r = predict(&["regions", "et"]);
    assert_refused(
        &r,
        &["trained with target class:et, the first model's is regions"],
    );
    assert!(!r.stderr.contains("Class("), "{}", r.stderr);
    let r = predict(&["regions", "./regions/"]);
    assert_refused(&r, &["--model", "regions and ./regions/ are the same run"]);
    assert!(!dir.join("preds").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Without --precision, the CPU takes `VOXSEG_CONV_PRECISION` as a GPU does: a bad value is
/// refused before the run folder is made, and bf16 gets the flag's note where the CPU
/// computes in f32.
#[test]
fn cpu_training_takes_the_precision_variable_as_the_flag() {
    let dir = temp_dir("cpu-precision-env");
    let data = brats_dataset(&dir, 16, 4);
    let run = dir.join("run");
    let o = run.to_str().unwrap();
    let with_env = |value: &str| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_voxseg"))
            .current_dir(&dir)
            .env("VOXSEG_CONV_PRECISION", value)
            .args(train_args(data.to_str().unwrap(), o, &[]))
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, stderr) = with_env("bogus");
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("invalid VOXSEG_CONV_PRECISION: \"bogus\" is not one of"),
        "{stderr}"
    );
    assert!(!run.exists());
    // Set to nothing, as a shell unsets it for one command: f32, without a note.
    let (code, stderr) = with_env("");
    assert_eq!(code, Some(0), "{stderr}");
    assert!(!stderr.contains("precision"), "{stderr}");
    std::fs::remove_dir_all(&run).unwrap();
    let (code, stderr) = with_env("bf16");
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(
        stderr.contains("note: precision bf16 on the CPU: this CPU has no AVX512-BF16"),
        !voxseg::tensor_ops::conv::bf16_products_available(),
        "{stderr}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
