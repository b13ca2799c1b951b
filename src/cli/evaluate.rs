use clap::{Args as ClapArgs, ValueEnum};
use std::path::{Path, PathBuf};
use voxseg::data::labels::LabelSpec;
use voxseg::error::few;
use voxseg::infer::{Postprocess, Predicts};
use voxseg::metrics::evaluate::{
    evaluate_reference, missing_predictions, EvalOptions, Missing, Reference,
};
use voxseg::metrics::postprocess_search::find_postprocessing;
use voxseg::train::card::ModelCard;
use voxseg::train::run::RunDir;

#[derive(ClapArgs)]
pub struct Args {
    /// Folder of predicted CASE.nii.gz (or CASE.nii) label maps, on the reference's grid.
    #[arg(long)]
    pred: PathBuf,
    /// The reference: a dataset folder, or a folder of CASE.nii.gz (or CASE.nii) label maps.
    #[arg(long)]
    truth: PathBuf,
    /// The run that made the predictions: they are read in its model's label convention
    /// (model.json) and scored region by region (WT, TC, ET) against the reference's.
    #[arg(long, value_name = "RUN")]
    model: Option<PathBuf>,
    /// A run's split.json, to score only one subset of it (with --subset).
    #[arg(long)]
    split: Option<PathBuf>,
    /// The subset of --split to score.
    #[arg(long, default_value = "test", requires = "split", value_parser = ["test", "val", "train"])]
    subset: String,
    /// Label convention of a plain --truth folder: brats2021 or brats2023.
    #[arg(long)]
    labels: Option<String>,
    /// Reference cases without a prediction: skip them (the default without --split, with a
    /// warning), score them as empty predictions (Dice 0, HD95 373.13 for BraTS labels as
    /// BraTS does, else the reference image's diagonal) or refuse (the default with --split).
    #[arg(long, value_enum)]
    missing: Option<MissingArg>,
    /// Write the scores as JSON (.json) or CSV (.csv).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Replace an --out file that already exists (never one of this command's inputs).
    #[arg(long, requires = "out")]
    force: bool,
    /// Postprocess each prediction before scoring it, as `voxseg predict --postprocess`
    /// does (largest[:NAME], min-component[:NAME]:N, min-volume[:NAME]:N,
    /// connectivity:6|18|26), to see what the steps would change.
    #[arg(long, value_name = "STEPS", conflicts_with = "find_postprocessing")]
    postprocess: Option<String>,
    /// Pick the postprocessing steps that raise the Dice, as nnU-Net does on its
    /// cross-validation: the largest component of the foreground, then of each region, each
    /// kept if it helps; then per region a minimum volume below which it is removed (the
    /// BraTS rule for small enhancing tumours). Prints every trial and the choice for
    /// `voxseg predict --postprocess`, then the scores with it. Pick on validation cases
    /// (--split RUN/split.json --subset val), never on the test cases.
    #[arg(long)]
    find_postprocessing: bool,
}

/// The label convention `--labels` names.
pub fn named_labels(name: &str) -> anyhow::Result<LabelSpec> {
    match name {
        "brats2021" => Ok(LabelSpec::brats2021()),
        "brats2023" => Ok(LabelSpec::brats2023()),
        other => anyhow::bail!("invalid --labels: '{other}': expected brats2021 or brats2023"),
    }
}

/// The model card of the run `--model` names.
pub fn run_card(run: &Path) -> anyhow::Result<ModelCard> {
    let card = run.join("model.json");
    if !card.is_file() {
        anyhow::bail!(
            "invalid --model: {} is not a run directory (no model.json)",
            run.display()
        );
    }
    Ok(ModelCard::load(&card)?)
}

#[derive(Clone, Copy, ValueEnum)]
enum MissingArg {
    Skip,
    Empty,
    Error,
}

/// The report format of `--out`, checked before any scoring.
enum OutFormat {
    Json,
    Csv,
}

fn check_out(a: &Args, out: &Path) -> anyhow::Result<OutFormat> {
    let format = match out.extension().and_then(|e| e.to_str()) {
        Some("json") => OutFormat::Json,
        Some("csv") => OutFormat::Csv,
        _ => anyhow::bail!(
            "invalid --out: '{}': use a .json or .csv file",
            out.display()
        ),
    };
    if out.is_dir() {
        anyhow::bail!("invalid --out: '{}' is a folder, not a file", out.display());
    }
    let parent = out.parent().filter(|p| !p.as_os_str().is_empty());
    if let Some(parent) = parent.filter(|p| !p.is_dir()) {
        anyhow::bail!(
            "invalid --out: '{}': folder {} does not exist",
            out.display(),
            parent.display()
        );
    }
    if out.exists() {
        if let Some(input) = input_at(a, out) {
            anyhow::bail!(
                "invalid --out: '{}' is {input}, which evaluate only reads; choose another --out",
                out.display()
            );
        }
        if !a.force {
            anyhow::bail!(
                "invalid --out: '{}' already exists; pass --force to replace it",
                out.display()
            );
        }
    }
    Ok(format)
}

/// What `out`, an existing file, is among this command's inputs, if it is one: the split
/// file, a file of the reference, a prediction's sidecar or a file of the run.
fn input_at(a: &Args, out: &Path) -> Option<String> {
    let out = std::fs::canonicalize(out).ok()?;
    let same = |p: &Path| std::fs::canonicalize(p).is_ok_and(|p| p == out);
    let under = |dir: &Path| std::fs::canonicalize(dir).is_ok_and(|d| out.starts_with(d));
    if a.split.as_deref().is_some_and(same) {
        return Some("the --split file".into());
    }
    let name = out.file_name()?.to_string_lossy();
    // The reference's own files: a manifest given as --truth, a dataset.json, the label
    // maps and anything in a case's folder. A report at the folder's top is the user's.
    if let Ok(truth) = std::fs::canonicalize(&a.truth) {
        let at_top = out.parent() == Some(truth.as_path());
        if out == truth || (out.starts_with(&truth) && (!at_top || name == "dataset.json")) {
            return Some(format!("a file of the reference {}", a.truth.display()));
        }
    }
    if under(&a.pred) && name.ends_with("_probabilities.json") {
        return Some(format!("a prediction's sidecar in {}", a.pred.display()));
    }
    if let Some(root) = &a.model {
        let run = RunDir { root: root.clone() };
        if [run.model(), run.config(), run.split()]
            .iter()
            .any(|f| same(f))
        {
            return Some(format!("a file of the run {}", root.display()));
        }
    }
    None
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let format = a.out.as_deref().map(|out| check_out(&a, out)).transpose()?;
    let labels = a.labels.as_deref().map(named_labels).transpose()?;
    let model_spec = match &a.model {
        None => None,
        Some(run) => {
            let card = run_card(run)?;
            let class = card
                .target
                .single_class(&card.label_spec)?
                .map(|c| card.label_spec.classes()[c as usize].name.clone());
            if let Some(class) = &class {
                eprintln!(
                    "note: {} was trained on class {class} alone: only {class} is scored",
                    run.display()
                );
            }
            Some((card.label_spec, class))
        }
    };
    let (model_spec, model_class) = model_spec.unzip();
    let model_class = model_class.flatten();
    let reference = Reference::open(&a.truth, labels.as_ref().or(model_spec.as_ref()))?;
    if let Some(l) = labels
        .as_ref()
        .filter(|l| reference.is_dataset() && l != &reference.spec())
    {
        anyhow::bail!(
            "invalid --labels: {} is a dataset with its own label convention (values {:?}), \
             not {:?}; --labels is for a plain folder of label maps",
            a.truth.display(),
            reference.spec().file_values(),
            l.file_values()
        );
    }
    let cases = a
        .split
        .as_deref()
        .map(|split| reference.split_subset(split, &a.subset))
        .transpose()?;
    let missing = match (a.missing, cases.is_some()) {
        (Some(MissingArg::Skip), _) | (None, false) => Missing::Skip,
        (Some(MissingArg::Empty), _) => Missing::Empty,
        (Some(MissingArg::Error), _) | (None, true) => Missing::Error,
    };
    if cases.is_none() {
        let unlabelled = reference.unlabelled_predictions(&a.pred)?;
        if !unlabelled.is_empty() {
            eprintln!(
                "warning: {} predictions in {} are of cases {} lists as unlabelled test cases \
                 ({}); they are not scored",
                unlabelled.len(),
                a.pred.display(),
                a.truth.display(),
                few(&unlabelled)
            );
        }
    }
    // The predictions' convention, which the steps' names are resolved in.
    let pred_spec = model_spec.as_ref().unwrap_or(reference.spec());
    let mut opts = EvalOptions {
        cases: cases.as_deref(),
        pred_spec: model_spec.as_ref(),
        pred_class: model_class.as_deref(),
        missing,
        postprocess: None,
    };
    // Said before anything is scored, the search included, which chooses on the same cases.
    let missing_cases = missing_predictions(&a.pred, &reference, &opts)?;
    if !missing_cases.is_empty() {
        let total = cases
            .as_ref()
            .map_or_else(|| reference.ids().count(), |c| c.len());
        let what = format!(
            "{} of the {total} labelled reference cases in {} have no prediction in {} ({})",
            missing_cases.len(),
            a.truth.display(),
            a.pred.display(),
            few(&missing_cases)
        );
        if opts.missing == Missing::Empty {
            eprintln!("note: {what}; they are scored as empty predictions");
        } else {
            eprintln!(
                "warning: {what}; they are not scored. To score one subset of a run pass \
                 --split RUN/split.json --subset test; to count them as failures pass \
                 --missing empty"
            );
        }
    }
    let mut trials = Vec::new();
    let postprocess = if a.find_postprocessing {
        if a.split.is_some() && a.subset == "test" {
            eprintln!(
                "warning: postprocessing is being chosen on the test cases it would then be \
                 judged on; choose it on validation cases (--subset val)"
            );
        }
        let choice = find_postprocessing(&a.pred, &reference, &opts)?;
        say!("{}", choice.to_table().trim_end_matches('\n'));
        trials = choice.trials;
        Some(choice.chosen)
    } else {
        let predicts = model_class
            .as_deref()
            .and_then(|name| pred_spec.class_by_name(name))
            .map_or(Predicts::AnyClass, Predicts::OneClass);
        a.postprocess
            .as_deref()
            .map(|text| Postprocess::parse(text, pred_spec, predicts))
            .transpose()?
    };
    opts.postprocess = postprocess.as_ref().filter(|p| !p.is_empty());
    if let Some(steps) = opts.postprocess {
        let chosen_here = if a.find_postprocessing {
            " (the cases they were chosen on, so the scores flatter them)"
        } else {
            ""
        };
        say!("scores of the predictions postprocessed with {steps}{chosen_here}:");
    }
    let report = evaluate_reference(&a.pred, &reference, &opts)?.with_postprocess_trials(trials);
    for warning in &report.warnings {
        eprintln!("warning: {warning}");
    }
    say!("{}", report.to_table().trim_end_matches('\n'));
    if let (Some(out), Some(format)) = (&a.out, format) {
        match format {
            OutFormat::Json => report.write_json(out)?,
            OutFormat::Csv => report.write_csv(out)?,
        }
        say!("scores written to {}", out.display());
    }
    Ok(())
}
