//! The command line's small promises: a closed stdout, output folders that are not
//! silently mixed, a cache that notices changed sources, error messages that name the
//! problem in the user's terms, and help text for every flag and argument.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use voxseg::data::synth::{write_dataset, SynthLayout, SynthOptions, SynthStorage};

mod cli_common;

use cli_common::{assert_refused, preprocess, sorted_entries, temp_dir, voxseg, Outcome};

fn synth(out: &Path, cases: usize, layout: SynthLayout) {
    cli_common::synth(out, layout, cases, 16, 1);
}

/// Every file under `dir` (relative path -> bytes), to show a folder is untouched.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                todo.push(path);
            } else {
                let bytes = std::fs::read(&path).unwrap();
                files.insert(path.strip_prefix(dir).unwrap().to_path_buf(), bytes);
            }
        }
    }
    files
}

fn t1_files(data: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(data)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .map(|p| {
            let id = p.file_name().unwrap().to_string_lossy().into_owned();
            p.join(format!("{id}_t1.nii.gz"))
        })
        .collect();
    files.sort();
    files
}

#[cfg(target_os = "linux")]
#[test]
fn a_closed_stdout_ends_inspect_quietly_and_synth_still_writes_everything() {
    use std::io::{BufRead, BufReader};
    use std::os::unix::process::ExitStatusExt;
    use std::process::Stdio;
    let dir = temp_dir("pipe");
    let data = dir.join("data");
    synth(&data, 2, SynthLayout::Brats2021);
    // Enough files that inspect is still printing when the reader goes away.
    let files: Vec<PathBuf> = std::iter::repeat_n(t1_files(&data), 200)
        .flatten()
        .collect();
    let mut child = Command::new(env!("CARGO_BIN_EXE_voxseg"))
        .arg("inspect")
        .args(&files)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(first.starts_with('{'), "{first}");
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    const SIGPIPE: i32 = 13; // the same on every Linux architecture
    assert_eq!(out.status.signal(), Some(SIGPIPE), "{:?}", out.status);

    // A command that writes files keeps going when its stdout is closed.
    let more = dir.join("more");
    let mut child = Command::new(env!("CARGO_BIN_EXE_voxseg"))
        .args(["synth", "--size", "16", "--cases", "3", "--out"])
        .arg(&more)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && !stderr.contains("panicked"),
        "{stderr}"
    );
    assert_eq!(sorted_entries(&more).len(), 4, "three cases and the marker");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn synth_refuses_a_non_empty_out_and_force_replaces_only_a_dataset() {
    let dir = temp_dir("synth");
    let data = dir.join("b21");
    synth(&data, 3, SynthLayout::Brats2021);
    let before = sorted_entries(&data);
    let Outcome {
        ok, stderr: err, ..
    } = voxseg(&[
        "synth",
        "--size",
        "16",
        "--cases",
        "2",
        "--seed",
        "9",
        "--out",
        data.to_str().unwrap(),
    ]);
    assert!(
        !ok && err.contains("is not empty") && err.contains("--force"),
        "{err}"
    );
    assert_eq!(sorted_entries(&data), before);

    let Outcome {
        ok, stderr: err, ..
    } = voxseg(&[
        "synth",
        "--size",
        "16",
        "--cases",
        "2",
        "--out",
        data.to_str().unwrap(),
        "--force",
    ]);
    assert!(ok, "{err}");
    assert_eq!(
        sorted_entries(&data),
        [
            ".voxseg-synth",
            "SynthBraTS2021_00000",
            "SynthBraTS2021_00001"
        ]
    );

    // BraTS over MSD with --force: the MSD files go, nothing is mixed.
    let msd = dir.join("msd");
    synth(&msd, 3, SynthLayout::Msd);
    let Outcome {
        ok, stderr: err, ..
    } = voxseg(&[
        "synth",
        "--size",
        "16",
        "--cases",
        "1",
        "--out",
        msd.to_str().unwrap(),
        "--force",
    ]);
    assert!(ok, "{err}");
    assert_eq!(
        sorted_entries(&msd),
        [".voxseg-synth", "SynthBraTS2021_00000"]
    );

    // Anything that is not part of a dataset is never deleted, even with --force.
    std::fs::write(data.join("notes.txt"), b"mine").unwrap();
    let Outcome {
        ok, stderr: err, ..
    } = voxseg(&[
        "synth",
        "--size",
        "16",
        "--cases",
        "1",
        "--out",
        data.to_str().unwrap(),
        "--force",
    ]);
    assert!(
        !ok && err.contains("notes.txt is not part of a dataset"),
        "{err}"
    );
    assert_eq!(sorted_entries(&data).len(), 4);

    let file = dir.join("afile");
    std::fs::write(&file, b"").unwrap();
    let Outcome {
        ok, stderr: err, ..
    } = voxseg(&["synth", "--size", "16", "--out", file.to_str().unwrap()]);
    assert!(
        !ok && err.contains("afile is a file, not a folder"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

fn synth_force(out: &Path, extra: &[&str]) -> (bool, String) {
    let mut args = vec!["synth", "--force", "--out"];
    args.push(out.to_str().unwrap());
    args.extend_from_slice(extra);
    let Outcome {
        ok, stderr: err, ..
    } = voxseg(&args);
    (ok, err)
}

#[test]
fn synth_force_replaces_only_its_own_datasets_and_only_after_the_checks() {
    let dir = temp_dir("synth-own");
    // Hand-made datasets (synth's files without its marker), as a real BraTS or MSD folder.
    for layout in [SynthLayout::Brats2021, SynthLayout::Msd] {
        let real = dir.join(format!("{layout:?}"));
        synth(&real, 2, layout);
        // (Ignoring a missing marker keeps the test meaningful on a build that writes none.)
        let _ = std::fs::remove_file(real.join(".voxseg-synth"));
        let before = snapshot(&real);
        let (ok, err) = synth_force(&real, &["--size", "16", "--cases", "1"]);
        assert!(
            !ok && err.contains("is not a dataset written by `voxseg synth`"),
            "{err}"
        );
        assert_eq!(snapshot(&real), before, "{layout:?} was modified");
    }
    // Bad options are refused before the old dataset is touched.
    let own = dir.join("own");
    synth(&own, 2, SynthLayout::Msd);
    let before = snapshot(&own);
    for (bad, says) in [
        (["--cases", "0", "--size", "16"], "invalid cases"),
        (["--cases", "1", "--size", "4"], "invalid size"),
    ] {
        let (ok, err) = synth_force(&own, &bad);
        assert!(!ok && err.contains(says), "{err}");
        assert_eq!(snapshot(&own), before, "{bad:?} deleted the dataset");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A copy of a synthetic BraTS dataset, so its files can be changed.
fn preprocessed(dir: &Path) -> (PathBuf, PathBuf) {
    let data = dir.join("data");
    synth(&data, 3, SynthLayout::Brats2021);
    let cache = dir.join("cache");
    let out = preprocess(&data, &cache, &[]);
    assert!(out.ok, "{}", out.stderr);
    (data, cache)
}

#[test]
fn preprocess_refuses_a_non_empty_out_unless_forced() {
    let dir = temp_dir("preprocess");
    let (data, cache) = preprocessed(&dir);
    let Outcome {
        ok, stderr: err, ..
    } = preprocess(&data, &cache, &[]);
    assert!(
        !ok && err.contains("is not empty") && err.contains("--force"),
        "{err}"
    );
    let Outcome {
        ok, stderr: err, ..
    } = preprocess(&data, &cache, &["--force"]);
    assert!(ok, "{err}");
    let file = dir.join("afile");
    std::fs::write(&file, b"").unwrap();
    let Outcome {
        ok, stderr: err, ..
    } = preprocess(&data, &file, &[]);
    assert!(
        !ok && err.contains("afile is a file, not a folder"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn preprocess_force_never_writes_into_the_data_nor_replaces_what_is_not_a_complete_cache() {
    let dir = temp_dir("preprocess-force");
    let (data, cache) = preprocessed(&dir);
    let data_before = snapshot(&data);
    for (out, says) in [
        (data.clone(), "is the same folder as --data"),
        (data.join("SynthBraTS2021_00000"), "is inside --data"),
        (data.join("cache"), "is inside --data"),
    ] {
        let Outcome {
            ok, stderr: err, ..
        } = preprocess(&data, &out, &["--force"]);
        assert!(!ok && err.contains(says), "{}: {err}", out.display());
    }
    assert_eq!(snapshot(&data), data_before, "the dataset was written into");

    // A bad modality, then a case that fails to load halfway: the old cache stays whole.
    let cache_before = snapshot(&cache);
    let Outcome {
        ok, stderr: err, ..
    } = preprocess(&data, &cache, &["--force", "--modalities", "t1,pd"]);
    assert!(!ok && err.contains("pd"), "{err}");
    let last = t1_files(&data).pop().unwrap();
    let bytes = std::fs::read(&last).unwrap();
    std::fs::write(&last, &bytes[..bytes.len() / 2]).unwrap();
    let Outcome {
        ok, stderr: err, ..
    } = preprocess(&data, &cache, &["--force"]);
    assert!(
        !ok && err.contains("SynthBraTS2021_00002_t1.nii.gz"),
        "{err}"
    );
    assert_eq!(snapshot(&cache), cache_before, "the old cache was changed");
    assert_eq!(
        sorted_entries(&dir),
        ["cache", "data"],
        "a temporary folder was left"
    );

    // A folder that is not a cache is never emptied, even when it has a modalities.json.
    let other = dir.join("other");
    std::fs::create_dir(&other).unwrap();
    std::fs::write(other.join("modalities.json"), b"[\"t1\"]").unwrap();
    std::fs::write(other.join("cache.json"), b"{\"not\": \"a cache\"}").unwrap();
    let other_before = snapshot(&other);
    let Outcome {
        ok, stderr: err, ..
    } = preprocess(&data, &other, &["--force"]);
    assert!(!ok && err.contains("is not a voxseg cache"), "{err}");
    assert_eq!(snapshot(&other), other_before);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The quickstart refuses a plain file as --out, and a folder holding files that are not
/// its own, before it writes anything.
#[test]
fn quickstart_refuses_a_file_or_a_foreign_folder_as_out_before_writing() {
    let dir = temp_dir("quickstart-out");
    // Refused with `why`, before the quickstart announces anything it writes.
    let refused = |out: &Path, why: &str| {
        let r = voxseg(&[
            "quickstart",
            "--out",
            out.to_str().unwrap(),
            "--device",
            "cpu",
        ]);
        assert!(!r.ok, "{}", r.stdout);
        assert!(
            r.stderr.contains(why) && !r.stderr.contains("writing"),
            "{}",
            r.stderr
        );
    };
    let file = dir.join("afile");
    std::fs::write(&file, b"mine").unwrap();
    refused(&file, "afile is a file, not a folder");
    assert_eq!(std::fs::read(&file).unwrap(), b"mine");
    let folder = dir.join("folder");
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::write(folder.join("notes.txt"), b"mine").unwrap();
    refused(&folder, "not the quickstart's (notes.txt)");
    assert_eq!(sorted_entries(&folder), ["notes.txt"]);
    // Its own flags are checked before the data is written too.
    let fresh = dir.join("fresh");
    for (flags, words) in [
        (
            &["--minutes", "1e300"][..],
            &["invalid minutes: 1e300: --minutes is at most 1e8"][..],
        ),
        (&["--device", "bogus"], &["invalid device", "'bogus'"]),
    ] {
        let mut args = vec!["quickstart", "--out", fresh.to_str().unwrap()];
        args.extend(flags);
        let r = voxseg(&args);
        assert_refused(&r, words);
        assert!(!fresh.join("data").exists(), "{flags:?} wrote data");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn predict_refuses_an_out_inside_the_data_before_writing_anything() {
    let dir = temp_dir("predict-out");
    let data = dir.join("msd");
    synth(&data, 2, SynthLayout::Msd);
    let before = snapshot(&data);
    let Outcome {
        ok, stderr: err, ..
    } = voxseg(&[
        "predict",
        "--model",
        dir.join("no-run").to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--out",
        data.join("labelsTr").to_str().unwrap(),
        "--force",
        "--device",
        "cpu",
    ]);
    assert!(!ok && err.contains("labelsTr is inside --data"), "{err}");
    assert_eq!(snapshot(&data), before);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn check_replace_nan_accepts_cases_that_training_with_it_accepts() {
    use voxseg::data::nifti::{write_nifti, NiftiFile, VoxelData};
    let dir = temp_dir("check-nan");
    let data = dir.join("data");
    write_dataset(&SynthOptions {
        out: data.clone(),
        cases: 2,
        size: [16, 16, 16],
        seed: 1,
        layout: SynthLayout::Brats2021,
        storage: SynthStorage::Float32,
    })
    .unwrap();
    let image = t1_files(&data).remove(0);
    let file = NiftiFile::open(&image).unwrap();
    let mut voxels = file.channel(0).unwrap();
    voxels[3] = f32::NAN;
    let header = file.header().clone();
    write_nifti(&image, &header, 1, VoxelData::Float32(&voxels), (1.0, 0.0)).unwrap();
    let Outcome {
        ok, stderr: err, ..
    } = voxseg(&["check", "--data", data.to_str().unwrap()]);
    assert!(
        !ok && err.contains("1 case(s) with a problem: training refuses them"),
        "{err}"
    );
    let Outcome {
        ok,
        stdout: out,
        stderr: err,
        ..
    } = voxseg(&["check", "--data", data.to_str().unwrap(), "--replace-nan"]);
    assert!(ok, "{out}{err}");
    assert!(
        err.contains("replaced 1 NaN/Inf voxel(s) with 0")
            && out.contains("2 case(s) checked: 2 readable, 0 with a problem"),
        "{out}{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

fn train_from_cache(data: &Path, cache: &Path, out: &Path) -> (bool, String) {
    let Outcome {
        ok, stderr: err, ..
    } = voxseg(&[
        "train",
        "--data",
        data.to_str().unwrap(),
        "--cache",
        cache.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--device",
        "cpu",
        "--features",
        "4",
        "--patch",
        "8",
        "--epochs",
        "1",
        "--iters-per-epoch",
        "1",
    ]);
    (ok, err)
}

#[test]
fn a_cache_moved_with_its_dataset_still_trains_and_refuses_changed_sources_or_another_dataset() {
    let dir = temp_dir("stale");
    let (data, cache) = preprocessed(&dir);
    // `mv data data2; mv cache cache2`: the cache records its sources relative to the
    // dataset folder, so it still fits the moved dataset.
    let (moved, moved_cache) = (dir.join("data2"), dir.join("cache2"));
    std::fs::rename(&data, &moved).unwrap();
    std::fs::rename(&cache, &moved_cache).unwrap();
    let (data, cache) = (moved, moved_cache);
    let (ok, err) = train_from_cache(&data, &cache, &dir.join("run0"));
    assert!(ok, "{err}");

    let case = data.join("SynthBraTS2021_00001");
    let seg = case.join("SynthBraTS2021_00001_seg.nii.gz");
    let old = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000);
    std::fs::File::options()
        .write(true)
        .open(&seg)
        .unwrap()
        .set_modified(old)
        .unwrap();
    let (ok, err) = train_from_cache(&data, &cache, &dir.join("run1"));
    assert!(
        !ok && err.contains("SynthBraTS2021_00001_seg.nii.gz changed since the cache was made")
            && err.contains("rerun `voxseg preprocess`"),
        "{err}"
    );
    // Another dataset with the same case names is not the one the cache was made from.
    let other = dir.join("other");
    cli_common::synth(&other, SynthLayout::Brats2021, 3, 16, 2);
    let (ok, err) = train_from_cache(&other, &cache, &dir.join("run2"));
    assert!(
        !ok && err.contains("changed since the cache was made")
            && err.contains("rerun `voxseg preprocess`"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn inspect_reports_every_file_and_fails_at_the_end() {
    let dir = temp_dir("inspect");
    let data = dir.join("data");
    synth(&data, 2, SynthLayout::Brats2021);
    let good = t1_files(&data);
    let bad = dir.join("notes.nii.gz");
    std::fs::write(&bad, b"not an image at all\n").unwrap();
    let Outcome {
        ok,
        stdout: out,
        stderr: err,
        ..
    } = voxseg(&[
        "inspect",
        good[0].to_str().unwrap(),
        bad.to_str().unwrap(),
        good[1].to_str().unwrap(),
    ]);
    assert!(!ok);
    assert_eq!(out.lines().count(), 2, "{out}");
    assert!(
        err.contains("notes.nii.gz: not a NIfTI-1 file and not gzip-compressed")
            && err.contains("1 of 3 file(s) could not be read"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn negative_flag_values_reach_the_real_checks() {
    let dir = temp_dir("negative");
    let data = dir.join("data");
    synth(&data, 2, SynthLayout::Brats2021);
    let out = dir.join("run");
    let Outcome {
        ok, stderr: err, ..
    } = voxseg(&[
        "train",
        "--data",
        data.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--lr",
        "-1",
    ]);
    assert!(!ok && err.contains("invalid lr: -1"), "{err}");
    let Outcome {
        ok, stderr: err, ..
    } = voxseg(&[
        "predict",
        "--model",
        out.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--out",
        dir.join("pred").to_str().unwrap(),
        "--overlap",
        "-0.1",
    ]);
    assert!(!ok && !err.contains("unexpected argument"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn messages_use_the_users_terms_and_say_an_os_error_once() {
    let dir = temp_dir("messages");
    let missing = dir.join("nonexist.json");
    let Outcome {
        ok, stderr: err, ..
    } = voxseg(&[
        "train",
        "--config",
        missing.to_str().unwrap(),
        "--out",
        dir.join("run").to_str().unwrap(),
    ]);
    let reason = std::io::Error::from(std::io::ErrorKind::NotFound).to_string();
    assert!(!ok && err.contains("nonexist.json"), "{err}");
    assert_eq!(err.matches("os error 2").count(), 1, "{err} ({reason})");

    let Outcome {
        ok, stderr: err, ..
    } = voxseg(&["bench", "--precision", "foo"]);
    assert!(!ok && err.contains("not one of fp32, tf32, bf16"), "{err}");

    // A plain string in a config is short for {"kind": ...}.
    let config = dir.join("config.json");
    std::fs::write(
        &config,
        r#"{"loss": "dice", "optimizer": "adam", "schedule": "constant"}"#,
    )
    .unwrap();
    let cfg = voxseg::train::TrainConfig::from_file(&config).unwrap();
    assert_eq!(cfg.loss, voxseg::loss::LossSpec::Dice);
    assert_eq!(cfg.schedule, voxseg::optim::LrSchedule::Constant);
    assert!(matches!(
        cfg.optimizer,
        voxseg::optim::OptimizerSpec::Adam { .. }
    ));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_channel_the_image_lacks_is_reported_with_its_case() {
    use voxseg::data::case::{load_case, NanPolicy};
    use voxseg::data::labels::LabelSpec;
    use voxseg::data::layout::{CaseFiles, Dataset, ImageFile, LayoutKind};
    let dir = temp_dir("channel");
    let data = dir.join("data");
    synth(&data, 1, SynthLayout::Brats2021);
    let image = t1_files(&data).remove(0);
    let dataset = Dataset {
        layout: LayoutKind::Manifest,
        root: dir.clone(),
        modalities: vec!["t1".into()],
        label_spec: LabelSpec::brats2021(),
        cases: vec![CaseFiles {
            id: "case_a".into(),
            images: vec![ImageFile {
                modality: "t1".into(),
                path: image,
                channel: Some(9),
            }],
            label: None,
        }],
        test_cases: Vec::new(),
    };
    let err = load_case(&dataset, &dataset.cases[0], &[0], NanPolicy::Error)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("case case_a: channel 9 requested but the image has 1 channel(s)"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bench_names_the_ops_when_a_filter_matches_nothing_and_notes_cpu_precision() {
    let Outcome {
        ok,
        stdout: out,
        stderr: err,
        ..
    } = voxseg(&["bench", "--filter", "zzzz", "--precision", "tf32"]);
    assert!(!ok && out.is_empty(), "{out}");
    assert!(
        err.contains("'zzzz' matches no case")
            && err.contains("conv3d.fwd")
            && err.contains("loader.batch"),
        "{err}"
    );
    assert!(
        err.contains(
            "precision tf32 on the CPU: tf32 is arithmetic of NVIDIA's tensor cores; \
             convolutions run in f32"
        ),
        "{err}"
    );
}

#[test]
fn every_flag_and_argument_of_every_subcommand_has_help() {
    let Outcome {
        ok, stdout: top, ..
    } = voxseg(&["--help"]);
    assert!(ok);
    let commands: Vec<&str> = top
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| !l.is_empty())
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .collect();
    assert!(commands.contains(&"synth") && commands.len() >= 10, "{top}");
    let mut bare = Vec::new();
    for command in &commands {
        let Outcome {
            ok,
            stdout: help,
            stderr: err,
            ..
        } = voxseg(&[command, "--help"]);
        assert!(ok, "{err}");
        let lines: Vec<&str> = help.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            // An entry is "  -x, --name <V>  text", "      --name <V>  text" or "  <ARG>  text",
            // its text on the same line or, in the long layout, indented on the next.
            let entry = line.starts_with("  -") || line.starts_with("      --");
            let argument = line.starts_with("  <");
            if !(entry || argument) {
                continue;
            }
            let mut words = line.trim().split("  ").filter(|w| !w.trim().is_empty());
            words.next();
            let same_line = words.next().is_some_and(|t| !t.trim().starts_with('['));
            let next_line = lines
                .get(i + 1)
                .is_some_and(|n| n.starts_with("          ") && !n.trim().is_empty());
            if !same_line && !next_line {
                bare.push(format!("{command}: {}", line.trim()));
            }
        }
    }
    assert!(bare.is_empty(), "without help: {bare:#?}");
}

#[test]
fn info_names_the_cpu_convolution_engine_and_whether_bf16_runs() {
    let Outcome { ok, stdout, .. } = voxseg(&["info"]);
    assert!(ok, "{stdout}");
    let cpu = stdout
        .lines()
        .find(|l| l.starts_with("cpu: "))
        .unwrap_or_else(|| panic!("no cpu line in {stdout}"));
    let engine = voxseg::tensor_ops::conv::conv_engine_name::<f32>(Default::default());
    assert!(
        cpu.contains(&format!(" threads, f32 convolutions by {engine}, ")),
        "{cpu}"
    );
    let bf16 = voxseg::tensor_ops::conv::bf16_products_available();
    assert_eq!(cpu.ends_with("with --precision bf16"), bf16, "{cpu}");
    assert_eq!(cpu.ends_with("no bf16 (no AVX512-BF16)"), !bf16, "{cpu}");
}

#[test]
fn cpu_bench_lines_say_where_and_at_which_precision_they_ran() {
    let Outcome {
        ok, stdout, stderr, ..
    } = voxseg(&[
        "bench",
        "--device",
        "cpu",
        "--json",
        "--filter",
        "conv3d.fwd 2x8x8x8x256->256 k3s1",
    ]);
    assert!(ok, "{stderr}");
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert_eq!(lines.len(), 1, "{stdout}");
    let line = &lines[0];
    assert_eq!(line["op"], "conv3d.fwd");
    assert_eq!(line["impl"], "voxseg");
    assert_eq!(line["precision"], "fp32");
    let engine = voxseg::tensor_ops::conv::conv_engine_name::<f32>(Default::default());
    let device = line["device"].as_str().unwrap_or_default();
    assert!(
        device.starts_with("cpu (") && device.ends_with(&format!("convolutions by {engine})")),
        "{line}"
    );
    assert!(line["ms"].as_f64().is_some_and(|ms| ms > 0.0), "{line}");
    assert!(stderr.contains(&format!("device: {device}")), "{stderr}");
}

/// Ctrl-C outside training ends the command at once with 130 (128 + SIGINT), SIGTERM
/// with 143, and neither leaves any of the temporary files of its atomic writes (here
/// synth's, which writes many at a time).
#[test]
fn ctrl_c_exits_130_and_leaves_no_temporary_file() {
    for (signal, status) in [("-INT", 130), ("-TERM", 143)] {
        interrupt_synth(signal, status);
    }
}

fn interrupt_synth(signal: &str, status: i32) {
    let dir = temp_dir(&format!("interrupt{signal}"));
    let out = dir.join("synth");
    let child = Command::new(env!("CARGO_BIN_EXE_voxseg"))
        .args(["synth", "--out", out.to_str().unwrap(), "--cases", "400"])
        .args(["--size", "64"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Once the first case's folder is there, writes are in flight.
    let started = std::time::Instant::now();
    while !out.is_dir() || std::fs::read_dir(&out).unwrap().count() < 2 {
        assert!(started.elapsed().as_secs() < 60, "synth wrote nothing");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // Our own child, not yet reaped, so the pid is still its.
    let pid = child.id().to_string();
    let sent = Command::new("kill").args([signal, &pid]).status().unwrap();
    assert!(sent.success(), "kill {signal} {pid}: {sent}");
    let done = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&done.stderr);
    assert_eq!(done.status.code(), Some(status), "{signal}: {stderr}");
    assert!(stderr.ends_with("interrupted\n"), "{stderr}");
    let temporary: Vec<PathBuf> = snapshot(&out)
        .into_keys()
        .filter(|p| p.to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(temporary.is_empty(), "{temporary:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}
