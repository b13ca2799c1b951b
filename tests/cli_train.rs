//! `voxseg train` and `voxseg plan` as a user meets them, on tiny synthetic data: bad values
//! are refused before anything is written, a resumed run keeps its configuration, Ctrl-C
//! exits 130 with a way to continue and no duplicate metrics, memory and depth are checked,
//! `plan` prints the plan `train` uses, and `--early-stop` ends a run that stopped improving.
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

mod cli_common;

use cli_common::{assert_refused, brats_dataset, metrics, temp_dir, voxseg_in};

/// A small, fast run: 4 features, batch 1, Adam at a constant rate.
const SMALL: [&str; 16] = [
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
    "--optimizer",
    "adam",
    "--schedule",
    "constant",
    "--lr=0.001",
];

fn train_args<'a>(data: &'a str, out: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["train", "--data", data, "--out", out];
    args.extend(SMALL);
    args.extend(extra);
    args
}

#[test]
fn bad_values_are_refused_before_anything_is_written() {
    let dir = temp_dir("bad");
    let data = brats_dataset(&dir, 16, 3);
    let d = data.to_str().unwrap();
    let out = dir.join("run");
    let o = out.to_str().unwrap();
    let cases: &[(&[&str], &[&str])] = &[
        (&["--time-limit=-1"], &["time-limit", "-1", "positive"]),
        (&["--time-limit", "nan"], &["time-limit", "NaN"]),
        (&["--time-limit", "inf"], &["time-limit", "inf"]),
        (
            &["--time-limit", "1e300"],
            &["time-limit: 1e300: must be", "at most"],
        ),
        (&["--time-limit", "0"], &["time-limit", "positive"]),
        (&["--l1=-1"], &["invalid l1", ">= 0"]),
        (&["--l2=-0.5"], &["invalid l2", ">= 0"]),
        (&["--grad-clip=-1"], &["grad-clip", "0 turns it off"]),
        (&["--grad-clip", "nan"], &["grad-clip"]),
        (&["--loss", "wbce:0"], &["wbce:0", "positive"]),
        (&["--loss", "wbce:-2"], &["wbce:-2"]),
        (
            &["--model", "fcn", "--depth", "8"],
            &["invalid depth", "8: the FCN takes at most 6"],
        ),
        (
            &["--model", "fcn", "--depth", "3", "--patch", "8"],
            &[
                "3 does not fit the patch [8, 8, 8]",
                "allows depth 2",
                "--patch >= 16",
            ],
        ),
        (
            &["--loss", "dice:3"],
            &["--loss", "'dice:3'", "dice takes no parameter"],
        ),
        (&["--loss", "ssim:7"], &["ssim takes no parameter"]),
        (&["--loss", "bce:"], &["'bce:'", "bce takes no parameter"]),
        (
            &["--features", "8", "--max-features", "4"],
            &["max-features", "4 is below --features 8"],
        ),
        (&["--dropout", "1"], &["dropout", "[0, 1)"]),
        (&["--dropout=-0.1"], &["dropout"]),
        (
            &["--workers", "100000"],
            &["workers", "100000", "at most 256"],
        ),
        (
            &["--epochs", "18446744073709551615", "--iters-per-epoch", "2"],
            &[
                "epochs",
                "18446744073709551615 epochs of 2 iterations",
                "counted",
            ],
        ),
        (&["--loss", "ce"], &["ce", "use --target classes"]),
        (
            &["--loss", "bce", "--target", "classes"],
            &["bce", "use --target regions"],
        ),
    ];
    for (flags, words) in cases {
        let mut args = vec!["train", "--data", d, "--out", o, "--device", "cpu"];
        args.extend(*flags);
        let r = voxseg_in(&dir, &args);
        assert_refused(&r, words);
        assert!(!out.exists(), "{flags:?} left {o} behind");
    }
    // A negative size is read as the value it is (not as an unknown flag) and refused as
    // clap refuses a bad value.
    let r = voxseg_in(
        &dir,
        &["train", "--data", d, "--out", o, "--patch", "-16,16,16"],
    );
    assert_eq!(r.code, Some(2), "{}", r.stderr);
    assert!(
        r.stderr
            .contains("'-16,16,16' is not D,H,W (positive integers)"),
        "{}",
        r.stderr
    );
    // SSIM's options, which only a config sets, and its window against the outputs.
    let ssim: &[(&str, &[&str])] = &[
        (
            r#"{"kind": "ssim", "window": {"kind": "uniform", "size": 100}}"#,
            &[
                "loss.window.size",
                "a window of 100 voxels does not fit",
                "at most",
            ],
        ),
        (
            r#"{"kind": "ssim", "data_range": 0}"#,
            &["loss.data_range", "0 must be positive"],
        ),
        (
            r#"{"kind": "ssim", "window": {"kind": "gaussian", "size": 5, "sigma": 0}}"#,
            &["loss.window.sigma"],
        ),
        (
            r#"{"kind": "ssim", "window": {"kind": "uniform", "size": 0}}"#,
            &["loss.window.size", "at least 1"],
        ),
    ];
    for (i, (loss, words)) in ssim.iter().enumerate() {
        let config = dir.join(format!("ssim{i}.json"));
        std::fs::write(&config, format!(r#"{{"loss": {loss}}}"#)).unwrap();
        let c = config.to_str().unwrap();
        let r = voxseg_in(
            &dir,
            &[
                "train", "--data", d, "--out", o, "--device", "cpu", "--config", c,
            ],
        );
        assert_refused(&r, words);
        assert!(!out.exists(), "{loss} left {o} behind");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[cfg(target_os = "linux")]
#[test]
fn a_step_larger_than_memory_is_refused_before_allocating() {
    let dir = temp_dir("memory");
    let data = brats_dataset(&dir, 24, 3);
    let out = dir.join("run");
    let r = voxseg_in(
        &dir,
        &[
            "train",
            "--data",
            data.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--device",
            "cpu",
            "--batch",
            "10000000",
            "--patch",
            "16",
        ],
    );
    assert_refused(
        &r,
        &[
            "batch 10000000, patch [16, 16, 16] and widths",
            "GiB available",
            "lower --batch",
        ],
    );
    assert!(!out.exists(), "the refused run left files");
    // Widths whose weight counts overflow 64-bit integers: refused, not a panic.
    for model in ["unet", "fcn"] {
        let r = voxseg_in(
            &dir,
            &[
                "train",
                "--data",
                data.to_str().unwrap(),
                "--out",
                out.to_str().unwrap(),
                "--device",
                "cpu",
                "--model",
                model,
                "--features",
                "10000000000",
                "--patch",
                "16",
            ],
        );
        assert_refused(
            &r,
            &[
                "widths 10000000000 to 10000000000 need about",
                "lower --batch, --patch or --features",
            ],
        );
        assert!(!out.exists(), "the refused run left files");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_patch_that_makes_the_unet_shallow_says_so_and_a_depth_that_does_not_fit_is_refused() {
    let dir = temp_dir("depth");
    let data = brats_dataset(&dir, 24, 3);
    let d = data.to_str().unwrap();
    let shallow = dir.join("shallow");
    let mut args = train_args(d, shallow.to_str().unwrap(), &["--epochs", "1"]);
    args.extend(["--iters-per-epoch", "1", "--patch", "7"]);
    let r = voxseg_in(&dir, &args);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert!(
        r.stderr.contains(
            "depth 1: a patch of [7, 7, 7] allows no downsampling; use --patch >= 16 for depth 3"
        ),
        "{}",
        r.stderr
    );
    let model: serde_json::Value =
        serde_json::from_slice(&std::fs::read(shallow.join("model.json")).unwrap()).unwrap();
    assert_eq!(model["plan"]["depth"], 1);

    let deep = dir.join("deep");
    let mut args = train_args(d, deep.to_str().unwrap(), &["--patch", "8", "--depth", "3"]);
    args.extend(["--epochs", "1"]);
    let r = voxseg_in(&dir, &args);
    assert_refused(
        &r,
        &[
            "depth",
            "3 does not fit the patch [8, 8, 8]",
            "allows depth 2",
            "--patch >= 16",
        ],
    );
    assert!(!deep.exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn plan_prints_the_plan_train_uses() {
    let dir = temp_dir("plan");
    // Synthetic seed 1 at 32^3: splits with seeds 0 and 1 give different median shapes.
    brats_dataset(&dir, 32, 1);
    // A config in its own folder names the data relative to itself; both commands run
    // from elsewhere.
    let conf_dir = dir.join("conf");
    std::fs::create_dir_all(&conf_dir).unwrap();
    let config = conf_dir.join("small.json");
    std::fs::write(
        &config,
        r#"{"data": "../data", "device": "cpu", "features": 4, "max_features": 8,
            "epochs": 1, "iters_per_epoch": 1, "workers": 1}"#,
    )
    .unwrap();
    let c = config.to_str().unwrap();
    let elsewhere = std::env::temp_dir();
    let mut plans = Vec::new();
    for seed in ["0", "1"] {
        let r = voxseg_in(&elsewhere, &["plan", "--config", c, "--seed", seed]);
        assert_eq!(r.code, Some(0), "{}", r.stderr);
        let mut planned: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
        // Beside the plan, the memory one step of it takes: weights and activations of
        // this small network are a few MB, and at most a GB.
        let memory = planned
            .as_object_mut()
            .unwrap()
            .remove("step_memory_bytes")
            .unwrap();
        let memory = memory.as_u64().unwrap();
        assert!((1 << 20..1 << 30).contains(&memory), "{memory} bytes");
        let run = dir.join(format!("run{seed}"));
        let r = voxseg_in(
            &elsewhere,
            &[
                "train",
                "--config",
                c,
                "--seed",
                seed,
                "--out",
                run.to_str().unwrap(),
            ],
        );
        assert_eq!(r.code, Some(0), "{}", r.stderr);
        let model: serde_json::Value =
            serde_json::from_slice(&std::fs::read(run.join("model.json")).unwrap()).unwrap();
        assert_eq!(planned, model["plan"], "seed {seed}");
        assert_eq!(planned["base_features"], 4);
        plans.push(planned["patch"].clone());
    }
    assert_ne!(plans[0], plans[1], "the seed should matter on this data");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn resume_keeps_the_runs_settings_and_says_what_changed() {
    let dir = temp_dir("resume");
    brats_dataset(&dir, 24, 3);
    let out = dir.join("run");
    let o = out.to_str().unwrap();
    // Started with a relative --data; resumed below from another folder.
    let mut args = train_args("data", "run", &["--epochs", "1", "--iters-per-epoch", "2"]);
    args.extend(["--seed", "5", "--patch", "16"]);
    let r = voxseg_in(&dir, &args);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert!(
        r.stdout.contains(
            "best: run/checkpoints/best.safetensors (epoch 0: the highest mean validation Dice"
        ),
        "{}",
        r.stdout
    );
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["data"], dir.join("data").to_str().unwrap());
    assert_eq!(
        config["modalities"],
        serde_json::json!(["t1", "t1ce", "t2", "flair"])
    );
    assert_eq!(config["device"], "cpu");

    let elsewhere = std::env::temp_dir();
    let resume = |extra: &[&str]| {
        let mut args = vec!["train", "--out", o, "--resume"];
        args.extend(extra);
        voxseg_in(&elsewhere, &args)
    };
    assert_refused(&resume(&["--force"]), &["--resume", "--force", "pass one"]);
    let r = resume(&[
        "--features",
        "16",
        "--loss",
        "bce",
        "--data",
        "/elsewhere",
        "--seed",
        "5",
    ]);
    assert_refused(
        &r,
        &[
            "cannot change mid-run",
            "--features 16 (the run has 4)",
            "--loss bce (the run has dice_ce)",
            "--data /elsewhere (the run has ",
            "--force",
        ],
    );
    assert!(!r.stderr.contains("--seed"), "{}", r.stderr);
    let other = dir.join("other.json");
    std::fs::write(&other, r#"{"lr": 0.5}"#).unwrap();
    assert_refused(
        &resume(&["--config", other.to_str().unwrap()]),
        &["--lr 0.5 (the run has 0.001)"],
    );
    assert_refused(&resume(&["--time-limit=-1"]), &["time-limit", "positive"]);
    // Each refusal names the flag (or config key) that sets the setting, readably.
    let r = resume(&[
        "--weight-decay",
        "0.1",
        "--fold",
        "1",
        "--no-deep-supervision",
    ]);
    assert_refused(
        &r,
        &[
            "--weight-decay 0.1 (the run has 0",
            "--fold 1 --folds 5 (the run has no folds)",
            "--no-deep-supervision (the run has it on)",
        ],
    );
    assert!(!r.stderr.contains("--optimizer"), "{}", r.stderr);
    let preprocess = dir.join("preprocess.json");
    std::fs::write(&preprocess, r#"{"preprocess": {"crop_to_nonzero": false}}"#).unwrap();
    let r = resume(&["--config", preprocess.to_str().unwrap()]);
    assert_refused(
        &r,
        &["the config's preprocess crop_to_nonzero false (the run has crop_to_nonzero true)"],
    );
    assert!(!r.stderr.contains("--preprocess"), "{}", r.stderr);

    // Unchanged settings may be repeated; resumable ones are applied and printed.
    let data = dir.join("data");
    let r = resume(&[
        "--data",
        data.to_str().unwrap(),
        "--features",
        "4",
        "--epochs",
        "2",
    ]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert!(
        r.stderr.contains("changed: --epochs 1 -> 2"),
        "{}",
        r.stderr
    );
    assert!(
        r.stdout.contains("epochs done: 2/2, steps: 4"),
        "{}",
        r.stdout
    );
    let epochs: Vec<_> = metrics(&out).iter().map(|l| l["epoch"].clone()).collect();
    assert_eq!(epochs, [0, 1]);

    // A finished run trains nothing; fewer epochs than done is an error.
    let r = resume(&[]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert!(
        r.stdout
            .contains("is already complete (2/2 epochs): raise --epochs to continue"),
        "{}",
        r.stdout
    );
    assert_eq!(metrics(&out).len(), 2);
    // Nothing is trained, so nothing is said to have changed, and what was asked for is
    // said not to have been applied (config.json keeps the run's setting).
    let r = resume(&["--workers", "2"]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert!(r.stdout.contains("is already complete"), "{}", r.stdout);
    assert!(
        !r.stdout.contains("changed") && !r.stderr.contains("changed"),
        "{}{}",
        r.stdout,
        r.stderr
    );
    assert!(
        r.stderr
            .contains("nothing was trained, so these were not applied (nor written to config.json): --workers 1 -> 2"),
        "{}",
        r.stderr
    );
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["workers"], 1);
    assert_refused(
        &resume(&["--epochs", "1"]),
        &["1 is below the 2 epochs", "--epochs 2"],
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Starts `voxseg args` and returns once the first training step's progress line is out:
/// the interrupt handler is then in place and the epoch has begun. The child's stderr is
/// returned to be kept open while it runs.
fn train_until_first_step(
    args: &[&str],
) -> (std::process::Child, BufReader<std::process::ChildStderr>) {
    until_first_step(Command::new(env!("CARGO_BIN_EXE_voxseg")).args(args))
}

/// As `train_until_first_step`, for a command that runs voxseg (e.g. under `nohup`).
fn until_first_step(
    command: &mut Command,
) -> (std::process::Child, BufReader<std::process::ChildStderr>) {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    while !line.starts_with("iter ") {
        line.clear();
        assert!(stderr.read_line(&mut line).unwrap() > 0, "no progress line");
    }
    (child, stderr)
}

#[test]
fn ctrl_c_exits_130_and_the_resumed_epoch_has_one_row_over_all_its_steps() {
    let dir = temp_dir("interrupt");
    let data = brats_dataset(&dir, 24, 3);
    let d = data.to_str().unwrap();
    let schedule = ["--epochs", "2", "--iters-per-epoch", "100", "--patch", "16"];
    let run = dir.join("run");
    let o = run.to_str().unwrap();
    // SIGINT is what Ctrl-C sends.
    let (child, _stderr) = train_until_first_step(&train_args(d, o, &schedule));
    // Our own child, not yet reaped, so the pid is still its.
    let pid = child.id().to_string();
    let sent = Command::new("kill").args(["-INT", &pid]).status().unwrap();
    assert!(sent.success(), "kill -INT {pid}: {sent}");
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(130), "{stdout}");
    assert!(stdout.contains("interrupted at epoch 0, step "), "{stdout}");
    assert!(
        stdout.contains(&format!("continue with: voxseg train --out {o} --resume")),
        "{stdout}"
    );
    let rows = metrics(&run);
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["partial"], true);
    assert!(rows[0]["step"].as_u64().unwrap() < 100);
    // The cut-short epoch was not validated, so no best checkpoint exists yet, and
    // predict says what to do instead.
    assert!(rows[0].get("val_loss").is_none(), "{rows:?}");
    assert!(!run.join("checkpoints/best.safetensors").exists());
    let r = voxseg_in(
        &dir,
        &["predict", "--model", o, "--data", d, "--out", "never"],
    );
    assert!(
        r.code == Some(1) && r.stderr.contains("predict with --checkpoint last"),
        "{}",
        r.stderr
    );

    let r = voxseg_in(&dir, &["train", "--out", o, "--resume"]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let straight = dir.join("straight");
    let r = voxseg_in(&dir, &train_args(d, straight.to_str().unwrap(), &schedule));
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let (resumed, straight) = (metrics(&run), metrics(&straight));
    let key = |rows: &[serde_json::Value]| -> Vec<(u64, u64, bool)> {
        rows.iter()
            .map(|l| {
                let (e, s) = (l["epoch"].as_u64().unwrap(), l["step"].as_u64().unwrap());
                (e, s, l.get("partial").is_some())
            })
            .collect()
    };
    assert_eq!(key(&resumed), [(0, 100, false), (1, 200, false)]);
    assert_eq!(key(&resumed), key(&straight));
    for (a, b) in resumed.iter().zip(&straight) {
        let (a, b) = (
            a["train_loss"].as_f64().unwrap(),
            b["train_loss"].as_f64().unwrap(),
        );
        assert!(
            (a - b).abs() <= 1e-12 * b.abs(),
            "train_loss {a} after resume, {b} straight"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// SIGTERM (what `timeout`, `kill`, SLURM and `docker stop` send) ends a training as
/// Ctrl-C does, with 143 (128 + SIGTERM) where Ctrl-C exits with 130; while one trains, a
/// second training of its folder is refused; a killed write's temporary checkpoint is
/// removed when the run is taken up again.
#[cfg(target_os = "linux")]
#[test]
fn sigterm_saves_last_and_a_run_folder_trains_one_process_at_a_time() {
    let dir = temp_dir("sigterm");
    let data = brats_dataset(&dir, 24, 3);
    let d = data.to_str().unwrap();
    let schedule = ["--epochs", "2", "--iters-per-epoch", "100", "--patch", "16"];
    let run = dir.join("run");
    let o = run.to_str().unwrap();
    let (child, _stderr) = train_until_first_step(&train_args(d, o, &schedule));
    let pid = child.id().to_string();
    let second = voxseg_in(&dir, &["train", "--out", o, "--resume"]);
    assert_refused(
        &second,
        &[&format!("in use by another voxseg train (process {pid})")],
    );
    let sent = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(sent.success(), "kill -TERM {pid}: {sent}");
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(143), "128 + SIGTERM: {stdout}");
    assert!(stdout.contains("interrupted at epoch 0, step "), "{stdout}");
    assert!(run.join("checkpoints/last.safetensors").exists());
    // What a SIGKILL during a checkpoint write leaves behind.
    let stale = run.join("checkpoints/.last.safetensors.4294967.tmp");
    std::fs::write(&stale, b"half a checkpoint").unwrap();
    let r = voxseg_in(&dir, &["train", "--out", o, "--resume", "--epochs", "1"]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert!(!stale.exists());
    // Under nohup (SIGHUP ignored) a hangup leaves the training running; Ctrl-C still ends it.
    let (mut child, _stderr) = until_first_step(
        Command::new("nohup")
            .arg(env!("CARGO_BIN_EXE_voxseg"))
            .args(["train", "--out", o, "--resume", "--epochs", "4"]),
    );
    let pid = child.id().to_string();
    let kill = |signal: &str| {
        let sent = Command::new("kill").args([signal, &pid]).status().unwrap();
        assert!(sent.success(), "kill {signal} {pid}: {sent}");
    };
    kill("-HUP");
    std::thread::sleep(std::time::Duration::from_millis(800));
    assert!(
        child.try_wait().unwrap().is_none(),
        "a hangup under nohup ended the training"
    );
    kill("-INT");
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(130), "{stdout}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn folds_and_split_files_choose_the_split() {
    use voxseg::data::split::{Split, SplitFractions};
    let dir = temp_dir("folds");
    let data = brats_dataset(&dir, 24, 2);
    let d = data.to_str().unwrap();
    let ids: Vec<String> = (0..6).map(|i| format!("SynthBraTS2021_{i:05}")).collect();
    let quick = ["--epochs", "1", "--iters-per-epoch", "1", "--patch", "16"];
    let split_of = |run: &Path| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(run.join("split.json")).unwrap()).unwrap()
    };

    let run = dir.join("fold1");
    let mut args = train_args(d, run.to_str().unwrap(), &quick);
    args.extend(["--fold", "1", "--folds", "3", "--seed", "4"]);
    let r = voxseg_in(&dir, &args);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let expected = Split::fold(&ids, SplitFractions::default(), 4, 3, 1).unwrap();
    assert_eq!(split_of(&run), serde_json::to_value(&expected).unwrap());

    // --fold alone keeps the config's fold count.
    let config = dir.join("three-folds.json");
    std::fs::write(&config, r#"{"folds": {"count": 3, "index": 0}, "seed": 4}"#).unwrap();
    let run = dir.join("fold1-config");
    let mut args = train_args(d, run.to_str().unwrap(), &quick);
    args.extend(["--config", config.to_str().unwrap(), "--fold", "1"]);
    let r = voxseg_in(&dir, &args);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert_eq!(split_of(&run), serde_json::to_value(&expected).unwrap());
    let five = Split::fold(&ids, SplitFractions::default(), 4, 5, 1).unwrap();
    assert_ne!(expected, five, "the fold count should matter on this data");

    let file = dir.join("my-split.json");
    let mine = serde_json::json!({
        "train": [&ids[0], &ids[1], &ids[2]],
        "val": [&ids[3]],
        "test": [&ids[4], &ids[5]],
    });
    std::fs::write(&file, mine.to_string()).unwrap();
    let run = dir.join("given");
    let mut args = train_args(d, run.to_str().unwrap(), &quick);
    args.extend(["--split-file", file.to_str().unwrap()]);
    let r = voxseg_in(&dir, &args);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert_eq!(split_of(&run), mine);

    for (extra, message) in [
        (vec!["--fold", "3", "--folds", "3"], "fold 3 of 3"),
        (
            vec!["--fold", "0", "--split-file", file.to_str().unwrap()],
            "not both",
        ),
    ] {
        let out = dir.join("refused");
        let mut args = train_args(d, out.to_str().unwrap(), &quick);
        args.extend(extra);
        let r = voxseg_in(&dir, &args);
        assert_eq!(r.code, Some(1), "{}", r.stderr);
        assert!(r.stderr.contains(message), "{}", r.stderr);
        assert!(!out.exists());
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_new_run_writes_its_own_split_over_a_stale_one() {
    use voxseg::data::split::{Split, SplitFractions};
    let dir = temp_dir("stale-split");
    let data = brats_dataset(&dir, 24, 2);
    let d = data.to_str().unwrap();
    let ids: Vec<String> = (0..6).map(|i| format!("SynthBraTS2021_{i:05}")).collect();
    let split_of = |run: &Path| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(run.join("split.json")).unwrap()).unwrap()
    };
    let by_seed = |seed: u64| {
        serde_json::to_value(Split::by_fractions(&ids, SplitFractions::default(), seed).unwrap())
            .unwrap()
    };
    assert!(by_seed(1) != by_seed(2) && by_seed(2) != by_seed(3));
    let run = dir.join("run");
    let o = run.to_str().unwrap();
    let quick = ["--epochs", "1", "--iters-per-epoch", "1", "--patch", "16"];
    for (seed, extra) in [("1", None), ("2", Some("--force"))] {
        let mut args = train_args(d, o, &quick);
        args.extend(["--seed", seed]);
        args.extend(extra);
        let r = voxseg_in(&dir, &args);
        assert_eq!(r.code, Some(0), "{}", r.stderr);
    }
    assert_eq!(split_of(&run), by_seed(2));
    // A split.json left without its run (an older voxseg wrote it first) is replaced too.
    std::fs::remove_file(run.join("config.json")).unwrap();
    let mut args = train_args(d, o, &quick);
    args.extend(["--seed", "3"]);
    let r = voxseg_in(&dir, &args);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert_eq!(split_of(&run), by_seed(3));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn explicit_widths_win_over_planned_ones() {
    let dir = temp_dir("widths");
    let data = brats_dataset(&dir, 24, 2);
    let d = data.to_str().unwrap();
    let quick = [
        "--device",
        "cpu",
        "--epochs",
        "1",
        "--iters-per-epoch",
        "1",
        "--patch",
        "16",
        "--batch",
        "1",
        "--workers",
        "1",
    ];
    // The CPU plan is 8 to 64: each explicit bound moves the other only as far as it must.
    for (flags, widths) in [
        (["--max-features", "4"], (4, 4)),
        (["--features", "2"], (2, 64)),
    ] {
        let run = dir.join(flags[0].trim_start_matches('-'));
        let mut args = vec!["train", "--data", d, "--out", run.to_str().unwrap()];
        args.extend(quick);
        args.extend(flags);
        let r = voxseg_in(&dir, &args);
        assert_eq!(r.code, Some(0), "{}", r.stderr);
        let model: serde_json::Value =
            serde_json::from_slice(&std::fs::read(run.join("model.json")).unwrap()).unwrap();
        let unet = &model["model"];
        assert_eq!(
            (&unet["base_features"], &unet["max_features"]),
            (&widths.0.into(), &widths.1.into()),
            "{flags:?}: {model}"
        );
        assert_eq!(model["plan"]["max_features"], widths.1, "{flags:?}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `--early-stop N` ends the run after N validations in a row without a new best (here none
/// can come: the rate is too small to move a weight), keeps `best` at the best epoch, and a
/// resumed run trains on only with a larger patience.
#[test]
fn early_stopping_ends_the_run_after_its_patience_and_resumes_with_a_larger_one() {
    let dir = temp_dir("early-stop");
    brats_dataset(&dir, 24, 3);
    let out = dir.join("run");
    let o = out.to_str().unwrap();
    let mut args = vec!["train", "--data", "data", "--out", "run"];
    args.extend(&SMALL[..SMALL.len() - 1]);
    args.extend([
        "--lr=1e-30",
        "--epochs",
        "6",
        "--iters-per-epoch",
        "1",
        "--patch",
        "16",
        "--early-stop",
        "2",
    ]);
    let r = voxseg_in(&dir, &args);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert!(
        r.stdout.contains(
            "stopped early after epoch 2: 2 validation(s) in a row brought no new best; to train \
             on: voxseg train --out"
        ),
        "{}",
        r.stdout
    );
    assert!(
        r.stderr.contains(
            "early stop: 2 validation(s) in a row without a better mean Dice than epoch 0's"
        ),
        "{}",
        r.stderr
    );
    assert!(
        r.stdout
            .contains("(epoch 0: the highest mean validation Dice"),
        "{}",
        r.stdout
    );
    assert_eq!(metrics(&out).len(), 3);
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["early_stop_patience"], 2);

    // Resumed as it was: it has already stopped, and trains nothing (so names no device).
    let r = voxseg_in(&dir, &["train", "--out", o, "--resume"]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert!(
        r.stdout.contains("stopped early after epoch 2") && !r.stdout.contains("device:"),
        "{}",
        r.stdout
    );
    assert_eq!(metrics(&out).len(), 3);
    // A larger patience trains on until it runs out too.
    let r = voxseg_in(
        &dir,
        &["train", "--out", o, "--resume", "--early-stop", "3"],
    );
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert!(
        r.stdout
            .contains("stopped early after epoch 3: 3 validation(s)"),
        "{}",
        r.stdout
    );
    assert_eq!(metrics(&out).len(), 4);

    // A patience that runs out on the last epoch ends a finished run, not a stopped one.
    let mut last = args.clone();
    last[4] = "last";
    let at = last.iter().position(|a| *a == "6").unwrap();
    last[at] = "3";
    let r = voxseg_in(&dir, &last);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert!(r.stdout.contains("epochs done: 3/3"), "{}", r.stdout);
    assert!(!r.stdout.contains("stopped early"), "{}", r.stdout);
    // 0 turns it off: the rest of the epochs are trained.
    let r = voxseg_in(
        &dir,
        &["train", "--out", o, "--resume", "--early-stop", "0"],
    );
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert!(r.stdout.contains("epochs done: 6/6"), "{}", r.stdout);
    assert_eq!(metrics(&out).len(), 6);
    std::fs::remove_dir_all(&dir).unwrap();
}
