//! The main job on built-in data: write a synthetic BraTS-like dataset, train a small
//! U-Net on the best device available within a time budget, predict the held-out test
//! cases, evaluate them and say where everything is.
use crate::backend::cpu::Cpu;
use crate::backend::cuda::conv_plan::ConvPrecision;
use crate::backend::cuda::Cuda;
use crate::backend::device::Device;
use crate::backend::Backend;
use crate::data::split::Split;
use crate::data::split::SplitFractions;
use crate::data::synth::{write_dataset, SynthLayout, SynthOptions, SynthStorage};
use crate::error::{Error, Result};
use crate::infer::{PredictOptions, Predictor};
use crate::metrics::evaluate::evaluate;
use crate::metrics::EvalReport;
use crate::optim::LrSchedule;
use crate::train::config::MAX_TIME_LIMIT_MINUTES;
use crate::train::run::RunDir;
use crate::train::{RunOptions, TrainConfig};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The embedded default: small enough for a laptop CPU, hard enough to need a U-Net.
pub const CASES: usize = 24;
pub const SIZE: [usize; 3] = [48, 48, 48];

#[derive(Clone, Debug)]
pub struct QuickstartOptions {
    pub out: PathBuf,
    pub minutes: f64,
    pub device: String,
    /// Convolution arithmetic (see `TrainConfig::precision`).
    pub precision: Option<ConvPrecision>,
    pub seed: u64,
    pub force: bool,
}

pub struct QuickstartReport {
    pub data: PathBuf,
    pub run: PathBuf,
    pub predictions: PathBuf,
    pub evaluation: PathBuf,
    pub report: EvalReport,
    pub device: String,
    pub seconds: f64,
}

impl QuickstartReport {
    pub fn summary(&self) -> String {
        format!(
            "{}\ndevice: {}\ntime: {:.1} min\ndata: {}\nrun: {}\ntensorboard: tensorboard --logdir {}\npredictions and pictures: {}\nscores: {}",
            self.report.to_table(),
            self.device,
            self.seconds / 60.0,
            self.data.display(),
            self.run.display(),
            self.run.join("tb").display(),
            self.predictions.display(),
            self.evaluation.display()
        )
    }
}

/// The training configuration of the quickstart for a time budget in minutes.
pub fn train_config(
    data: PathBuf,
    run: PathBuf,
    device: &str,
    seed: u64,
    train_minutes: f64,
) -> TrainConfig {
    TrainConfig {
        data,
        out: run,
        device: device.to_string(),
        features: Some(8),
        max_features: Some(64),
        depth: Some(4),
        patch: Some([32, 32, 32]),
        batch: Some(2),
        optimizer: serde_json::from_value(serde_json::json!({"kind": "adam"}))
            .expect("a valid optimiser spec"),
        lr: 3e-3,
        schedule: LrSchedule::Poly { exponent: 0.9 },
        epochs: 20,
        iters_per_epoch: 25,
        val_every: 4,
        time_limit_minutes: Some(train_minutes),
        seed,
        split: SplitFractions {
            train: 0.67,
            val: 0.08,
            test: 0.25,
        },
        ..TrainConfig::default()
    }
}

pub fn run(opts: &QuickstartOptions) -> Result<QuickstartReport> {
    let start = Instant::now();
    if opts.minutes.is_nan() || opts.minutes <= 1.0 {
        return Err(Error::config(
            "minutes",
            format!(
                "{} is too short: the quickstart needs more than 1 minute",
                opts.minutes
            ),
        ));
    }
    // Training takes its time limit from --minutes: checked here, before any data is
    // written, and in the quickstart's words.
    if opts.minutes > MAX_TIME_LIMIT_MINUTES {
        return Err(Error::config(
            "minutes",
            format!(
                "{:e}: --minutes is at most {MAX_TIME_LIMIT_MINUTES:e}",
                opts.minutes
            ),
        ));
    }
    let device = crate::backend::device::resolve(opts.device.parse()?)?;
    let data = opts.out.join("data");
    let run_dir = opts.out.join("run");
    let predictions = opts.out.join("predictions");
    // Re-running replaces the quickstart's own files; anything else in the folder is the
    // user's, and the folder is refused unless --force.
    const OWN: [&str; 4] = ["data", "run", "predictions", "evaluation.json"];
    // A plain file at --out, or a folder that cannot be read, is refused before anything.
    let foreign: Vec<String> = crate::data::out_dir::entries("out", &opts.out)?
        .into_iter()
        .filter(|n| !OWN.contains(&n.as_str()))
        .collect();
    if !foreign.is_empty() && !opts.force {
        return Err(Error::config(
            "out",
            format!(
                "{} holds files that are not the quickstart's ({}); choose another --out or use --force",
                opts.out.display(),
                foreign.join(", ")
            ),
        ));
    }
    for dir in [&data, &run_dir, &predictions] {
        if dir.exists() {
            std::fs::remove_dir_all(dir)
                .map_err(|e| Error::io(format!("removing {}", dir.display()), e))?;
        }
    }
    eprintln!(
        "writing {CASES} synthetic BraTS-like cases of {SIZE:?} voxels to {}",
        data.display()
    );
    write_dataset(&SynthOptions {
        out: data.clone(),
        cases: CASES,
        size: SIZE,
        seed: opts.seed,
        layout: SynthLayout::Brats2021,
        storage: SynthStorage::Int16,
    })?;
    // Keep about a tenth of the budget (and half a minute) for prediction and evaluation.
    let elapsed = start.elapsed().as_secs_f64() / 60.0;
    let train_minutes = (opts.minutes * 0.9 - 0.5 - elapsed).max(0.5);
    // Training sets the device's precision; the prediction below runs at it too.
    let cfg = TrainConfig {
        precision: opts.precision,
        ..train_config(
            data.clone(),
            run_dir.clone(),
            &opts.device,
            opts.seed,
            train_minutes,
        )
    };
    let summary = crate::train::train(
        cfg,
        RunOptions {
            force: true,
            ..RunOptions::default()
        },
    )?;

    std::fs::create_dir_all(&predictions)
        .map_err(|e| Error::io(format!("creating {}", predictions.display()), e))?;
    let split = match device {
        Device::Cpu { .. } => predict_test(
            &Cpu::new()
                .with_conv_precision(opts.precision.unwrap_or_default())
                .0,
            &run_dir,
            &data,
            &predictions,
        )?,
        Device::Cuda { ordinal, .. } => {
            predict_test(&Cuda::new(ordinal)?, &run_dir, &data, &predictions)?
        }
    };
    let report = evaluate(&predictions, &data, Some(split.test_ids()), None)?;
    let evaluation = opts.out.join("evaluation.json");
    report.write_json(&evaluation)?;
    Ok(QuickstartReport {
        data,
        run: run_dir,
        predictions,
        evaluation,
        report,
        device: summary.device,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// Predicts the test cases of the run's split with its best checkpoint (with pictures), or
/// its last where the budget ended training before any epoch was validated.
fn predict_test<B: Backend>(backend: &B, run: &Path, data: &Path, out: &Path) -> Result<Split> {
    let dir = RunDir {
        root: run.to_path_buf(),
    };
    let checkpoint = if dir.checkpoint("best").exists() {
        "best"
    } else {
        eprintln!(
            "note: training stopped before its first validation; predicting with the last \
             checkpoint (a longer --minutes validates and keeps the best)"
        );
        "last"
    };
    let mut predictor = Predictor::open(backend, run, checkpoint)?;
    let dataset = crate::data::layout::detect(data)?;
    let ids: Vec<String> = dataset.cases.iter().map(|c| c.id.clone()).collect();
    let split = Split::load(&run.join("split.json"), &ids)?;
    let opts = PredictOptions {
        checkpoint: checkpoint.into(),
        overlap: 0.5,
        tta: false,
        probabilities: false,
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
        predictor.predict_case(&dataset, case, out, &opts)?;
    }
    Ok(split)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_stopped_before_its_first_validation_predicts_with_its_last_checkpoint() {
        let root = std::env::temp_dir().join(format!("voxseg-qs-last-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let data = root.join("data");
        write_dataset(&SynthOptions {
            out: data.clone(),
            cases: 6,
            size: [24; 3],
            seed: 3,
            layout: SynthLayout::Brats2021,
            storage: SynthStorage::Int16,
        })
        .unwrap();
        let run = root.join("run");
        let cfg = TrainConfig {
            features: Some(4),
            max_features: Some(8),
            depth: Some(2),
            patch: Some([16; 3]),
            batch: Some(1),
            epochs: 1,
            iters_per_epoch: 1,
            workers: 1,
            augment: crate::data::augment::AugmentSpec::none(),
            ..train_config(data.clone(), run.clone(), "cpu", 3, 1.0)
        };
        crate::train::train(cfg, RunOptions::default()).unwrap();
        // As when the time limit ends training before its first validation.
        let best = run.join("checkpoints/best.safetensors");
        std::fs::remove_file(&best).unwrap();

        let out = root.join("predictions");
        std::fs::create_dir_all(&out).unwrap();
        let split = predict_test(&Cpu::new(), &run, &data, &out).unwrap();
        assert!(!split.test_ids().is_empty());
        for id in split.test_ids() {
            assert!(out.join(format!("{id}.nii.gz")).is_file(), "{id}");
        }
        std::fs::remove_dir_all(&root).unwrap();
    }
}
