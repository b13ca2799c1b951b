use clap::Args as ClapArgs;
use std::path::{Path, PathBuf};
use voxseg::backend::cpu::Cpu;
use voxseg::backend::cuda::conv_plan::ConvPrecision;
use voxseg::backend::device::{resolve, Device, DeviceRequest};
use voxseg::backend::Backend;
use voxseg::data::layout::list;
use voxseg::error::few;
use voxseg::error::Error;
use voxseg::infer::{
    select_cases, OutputFiles, Postprocess, PredictOptions, PredictSplit, Predictor, Predicts,
};
use voxseg::metrics::evaluate::label_case_id;
use voxseg::train::RunDir;

#[derive(ClapArgs)]
pub struct Args {
    /// The run directory of a trained model; several (e.g. the folds of a cross-validation,
    /// `--model run0 run1 ...`) predict as an ensemble that averages their probabilities.
    #[arg(long, required = true, num_args = 1..)]
    model: Vec<PathBuf>,
    /// A dataset folder (cases chosen by --split).
    #[arg(long, conflicts_with = "input")]
    data: Option<PathBuf>,
    /// One case given as files, one per modality in the model's order, or as one 4D file
    /// holding them all (MSD's images), its channels in the model's order.
    #[arg(long, num_args = 1..)]
    input: Vec<PathBuf>,
    /// Folder for the predictions (`CASE.nii.gz`, in the model's label convention).
    #[arg(long)]
    out: PathBuf,
    /// Overwrite prediction files that already exist in --out, and remove a predicted
    /// case's earlier outputs that this run does not write (CASE_probabilities.* without
    /// --probabilities, CASE.png without --png; all of a case that fails).
    #[arg(long)]
    force: bool,
    /// Stop at the first case that cannot be predicted. By default the other cases are
    /// still predicted, each failure is reported as it happens, and the command fails at
    /// the end naming them.
    #[arg(long)]
    fail_fast: bool,
    /// best, last or a checkpoint path.
    #[arg(long, default_value = "best")]
    checkpoint: String,
    /// With --data: test (the run's held-out cases plus the dataset's unlabelled ones:
    /// nnU-Net imagesTs, MSD test, manifest test_cases), val, train (from the run's
    /// split.json), unlabelled (only those) or all.
    #[arg(long, default_value = "test")]
    split: String,
    /// Fraction of a patch shared by neighbouring windows.
    #[arg(long, default_value_t = 0.5)]
    overlap: f64,
    /// Average over all mirrorings of the input.
    #[arg(long)]
    tta: bool,
    /// Also write the per-voxel probabilities (CASE_probabilities.nii.gz, one 4th-dimension
    /// channel per output; CASE_probabilities.json names them in order).
    #[arg(long)]
    probabilities: bool,
    /// auto, cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    device: String,
    /// Convolution arithmetic: fp32, tf32 or bf16 on CUDA (tensor cores, f32 accumulation);
    /// fp32 or bf16 (f32 accumulation) on CPUs with AVX512-BF16.
    #[arg(long)]
    precision: Option<ConvPrecision>,
    /// Also write a picture per case.
    #[arg(long)]
    png: bool,
    /// Read NaN/Inf voxels as 0 (with a warning) instead of refusing the case.
    #[arg(long)]
    replace_nan: bool,
    /// Clean each label map before it is written (not the probabilities), with steps
    /// applied in order: largest[:NAME] keeps the largest connected component, of the
    /// whole foreground or of region/class NAME; min-component[:NAME]:N removes components
    /// of fewer than N voxels; min-volume[:NAME]:N removes NAME whole when it has fewer than
    /// N voxels (BraTS: min-volume:ET:200 turns a small ET into NCR); connectivity:6|18|26
    /// sets which voxels touch (default 26). A removed voxel of a region takes the class of
    /// the region around it, else background. `voxseg evaluate
    /// --find-postprocessing` picks steps on validation cases, as nnU-Net does.
    #[arg(long, value_name = "STEPS", default_value = "none")]
    postprocess: String,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    match resolve(a.device.parse::<DeviceRequest>()?)? {
        Device::Cpu { .. } => run_on(&Cpu::at_precision(a.precision)?, &a),
        Device::Cuda { ordinal, .. } => {
            let cuda = voxseg::backend::cuda::Cuda::new(ordinal)?;
            if let Some(p) = a.precision {
                cuda.set_conv_precision(p);
            }
            run_on(&cuda, &a)
        }
    }
}

fn run_on<B: Backend>(backend: &B, a: &Args) -> anyhow::Result<()> {
    let split: PredictSplit = a.split.parse()?;
    voxseg::data::out_dir::entries("--out", &a.out)?;
    if let Some(data) = &a.data {
        // MSD predictions are named like the label files of labelsTr: never write among them.
        voxseg::data::out_dir::refuse_inside("--out", &a.out, "--data", data)?;
    }
    refuse_repeated_models(&a.model)?;
    let mut predictor = Predictor::open(backend, &a.model[0], &a.checkpoint)?;
    for run in &a.model[1..] {
        predictor.add_model(run, &a.checkpoint)?;
    }
    let opts = PredictOptions {
        checkpoint: a.checkpoint.clone(),
        overlap: a.overlap,
        tta: a.tta,
        probabilities: a.probabilities,
        png: a.png,
        replace_nan: a.replace_nan,
        batch: 2,
        postprocess: Postprocess::parse(
            &a.postprocess,
            &predictor.card.label_spec,
            Predicts::of(&predictor.card.target, &predictor.card.label_spec)?,
        )?,
    };
    predictor.window(&opts)?;
    let mut missing = Vec::new();
    let (dataset, cases) = if let Some(data) = &a.data {
        // Only the model's modalities must exist (a dataset may lack one it does not use),
        // and no label: prediction never reads them. A case missing one fails alone, as a
        // corrupt one does, and the others are predicted.
        let listing = list(data)?;
        listing.refuse_problems()?;
        let channels = listing
            .dataset
            .select_modalities(&predictor.card.modalities)?;
        missing = listing
            .missing
            .into_iter()
            .filter(|m| m.needed_for(&channels, false))
            .collect();
        let dataset = listing.dataset;
        let runs: Vec<RunDir> = a
            .model
            .iter()
            .map(|root| RunDir { root: root.clone() })
            .collect();
        let cases = select_cases(&dataset, &runs[0], split)?;
        if runs.len() > 1 {
            check_ensemble_split(&dataset, &runs, split, &cases)?;
        }
        if let Some(warning) = predictor.convention_warning(&dataset, &a.model[0]) {
            eprintln!("{warning}");
        }
        (dataset, cases)
    } else if !a.input.is_empty() {
        let dataset = predictor.files_as_dataset(&a.input)?;
        for warning in predictor.input_name_warnings(&a.input) {
            eprintln!("{warning}");
        }
        let cases = dataset.cases.clone();
        (dataset, cases)
    } else {
        anyhow::bail!("give --data DIR or --input FILE...");
    };
    if let Some(input) = OutputFiles::over_input(&cases, &a.out) {
        anyhow::bail!(
            "invalid --out: {} would be replaced by a prediction written to {}; choose another \
             --out",
            input.display(),
            a.out.display()
        );
    }
    if !a.force {
        // Any output of a case counts, also one this run would not write: it would sit
        // beside the new labels as if it belonged to them.
        let existing: Vec<PathBuf> = cases
            .iter()
            .flat_map(|c| {
                OutputFiles::every(&c.id, &a.out)
                    .all()
                    .into_iter()
                    .filter(|p| p.exists())
                    .map(PathBuf::from)
                    .collect::<Vec<_>>()
            })
            .collect();
        if let Some(first) = existing.first() {
            let more = match existing.len() {
                1 => String::new(),
                n => format!(" (and {} more of the outputs)", n - 1),
            };
            let stale = cases
                .iter()
                .flat_map(|c| OutputFiles::not_written(&c.id, &a.out, &opts))
                .filter(|p| p.exists())
                .count();
            let removes = match stale {
                0 => String::new(),
                n => format!(
                    " ({n} of them this run does not write; --force removes those, so the \
                     folder holds only this run's outputs)"
                ),
            };
            anyhow::bail!(
                "{} already exists{more}; pass --force to overwrite{removes}",
                first.display()
            );
        }
    }
    std::fs::create_dir_all(&a.out)
        .map_err(|e| anyhow::anyhow!("creating {}: {e}", a.out.display()))?;
    if !opts.postprocess.is_empty() {
        say!("postprocessing each label map: {}", opts.postprocess);
    }
    let mut failed: Vec<&str> = Vec::new();
    let mut removed: Vec<PathBuf> = Vec::new();
    for case in &cases {
        let predicted = match missing.iter().find(|m| m.case == case.id) {
            Some(file) => Err(file.to_error()),
            None => predictor.predict_case(&dataset, case, &a.out, &opts),
        };
        match predicted {
            Ok(p) => {
                say!("{}: {}", p.case, p.labels.display());
                if a.force {
                    let stale = OutputFiles::not_written(&case.id, &a.out, &opts);
                    removed.extend(remove_existing(&stale)?);
                }
            }
            Err(e) => {
                // With --force the case's earlier outputs go too: the folder must not offer
                // another run's labels for a case this run could not predict.
                let earlier = if a.force {
                    remove_existing(&OutputFiles::every(&case.id, &a.out).all())?
                } else {
                    Vec::new()
                };
                // A device or write failure is not the case's: the next case would fail too.
                let stops = a.fail_fast || matches!(e, Error::Backend { .. } | Error::Io { .. });
                if stops {
                    return Err(e.into());
                }
                let gone = match earlier.len() {
                    0 => String::new(),
                    n => format!(" (its {n} earlier output file(s) were removed)"),
                };
                eprintln!("error: case {} not predicted{gone}: {e}", case.id);
                failed.push(&case.id);
            }
        }
    }
    if !removed.is_empty() {
        let names: Vec<String> = removed
            .iter()
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect();
        eprintln!(
            "note: removed {} earlier output file(s) in {} that this run does not write ({}), \
             so the folder holds only this run's outputs",
            removed.len(),
            a.out.display(),
            few(&names)
        );
    }
    let others = labels_of_other_cases(&a.out, &cases);
    if !others.is_empty() {
        eprintln!(
            "note: {} also holds the labels of {} case(s) this run did not predict ({}), an \
             earlier run's; evaluate scores every case it finds unless given --split",
            a.out.display(),
            others.len(),
            few(&others)
        );
    }
    if !failed.is_empty() {
        anyhow::bail!(
            "{} of the {} cases could not be predicted ({}); the other {} were written to {}",
            failed.len(),
            cases.len(),
            few(&failed),
            cases.len() - failed.len(),
            a.out.display()
        );
    }
    Ok(())
}

/// The cases whose labels `evaluate` would find in `out` that are not among `cases`, sorted.
fn labels_of_other_cases(out: &Path, cases: &[voxseg::data::layout::CaseFiles]) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(out) else {
        return Vec::new();
    };
    let mut ids: Vec<String> = entries
        .filter_map(|e| label_case_id(&e.ok()?.path()))
        .filter(|id| !cases.iter().any(|c| c.id == *id))
        .collect();
    ids.sort();
    ids.dedup();
    ids
}

/// Removes those of `paths` that exist; returns them.
fn remove_existing<P: AsRef<Path>>(paths: &[P]) -> anyhow::Result<Vec<PathBuf>> {
    let mut removed = Vec::new();
    for path in paths.iter().map(AsRef::as_ref).filter(|p| p.exists()) {
        std::fs::remove_file(path)
            .map_err(|e| anyhow::anyhow!("removing the earlier output {}: {e}", path.display()))?;
        removed.push(path.to_path_buf());
    }
    Ok(removed)
}

/// The same run twice in an ensemble would count its vote twice: refused, comparing the
/// folders as the file system resolves them (`run`, `./run/`, a link to it).
fn refuse_repeated_models(models: &[PathBuf]) -> anyhow::Result<()> {
    let mut seen: Vec<(PathBuf, &PathBuf)> = Vec::new();
    for model in models {
        let real = std::fs::canonicalize(model).unwrap_or_else(|_| model.clone());
        if let Some((_, first)) = seen.iter().find(|(r, _)| *r == real) {
            anyhow::bail!(
                "invalid --model: {} and {} are the same run; give each run of the ensemble once",
                first.display(),
                model.display()
            );
        }
        seen.push((real, model));
    }
    Ok(())
}

/// An ensemble predicts cases that no member trained or validated on: `test` only when
/// every run holds out the same test cases (the folds of one cross-validation do), never
/// `val` or `train`, which differ from fold to fold.
fn check_ensemble_split(
    dataset: &voxseg::data::layout::Dataset,
    runs: &[RunDir],
    split: PredictSplit,
    first: &[voxseg::data::layout::CaseFiles],
) -> anyhow::Result<()> {
    match split {
        PredictSplit::Val | PredictSplit::Train => anyhow::bail!(
            "invalid --split: the {} models of an ensemble each train and validate on other \
             cases; use test, unlabelled or all",
            runs.len()
        ),
        PredictSplit::Test => {
            for run in &runs[1..] {
                if select_cases(dataset, run, split)? != first {
                    anyhow::bail!(
                        "invalid --split test: {} holds out other test cases than {}, so some \
                         models trained on cases the ensemble would predict; train the runs \
                         as folds of one split (--fold) or use --split all or unlabelled",
                        run.root.display(),
                        runs[0].root.display()
                    );
                }
            }
            Ok(())
        }
        PredictSplit::Unlabelled | PredictSplit::All => Ok(()),
    }
}
