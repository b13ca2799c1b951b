use super::evaluate::{named_labels, run_card};
use clap::Args as ClapArgs;
use std::path::PathBuf;
use voxseg::infer::postprocess_folder::{planned_outputs, postprocess_folder};
use voxseg::infer::{Postprocess, Predicts};

#[derive(ClapArgs)]
pub struct Args {
    /// Folder of predicted CASE.nii.gz (or CASE.nii) label maps.
    #[arg(long)]
    pred: PathBuf,
    /// Folder to write the postprocessed maps into, under the same names (created if
    /// missing; neither the --pred folder nor inside it).
    #[arg(long)]
    out: PathBuf,
    /// The steps, as `voxseg predict --postprocess` takes them: largest[:NAME],
    /// min-component[:NAME]:N, min-volume[:NAME]:N, connectivity:6|18|26 (e.g. the choice
    /// of `voxseg evaluate --find-postprocessing`).
    #[arg(long, value_name = "STEPS")]
    steps: String,
    /// The run that made the predictions: they are read in its label convention, and a
    /// model of one class writes background for a removed voxel.
    #[arg(long, value_name = "RUN")]
    model: Option<PathBuf>,
    /// Label convention of the predictions without --model: brats2021 or brats2023.
    #[arg(long, conflicts_with = "model")]
    labels: Option<String>,
    /// Replace maps of these cases that already exist in --out (either ending).
    #[arg(long)]
    force: bool,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let (spec, predicts) = match (&a.model, a.labels.as_deref()) {
        (Some(run), _) => {
            let card = run_card(run)?;
            let predicts = Predicts::of(&card.target, &card.label_spec)?;
            (card.label_spec, predicts)
        }
        (None, Some(name)) => (named_labels(name)?, Predicts::AnyClass),
        (None, None) => {
            anyhow::bail!("name the predictions' label convention: --model RUN or --labels")
        }
    };
    let steps = Postprocess::parse(&a.steps, &spec, predicts)?;
    voxseg::data::out_dir::entries("--out", &a.out)?;
    let planned = planned_outputs(&a.pred, &a.out)?;
    // A case's earlier output with either ending counts: evaluate would find both.
    let existing: Vec<&PathBuf> = planned
        .iter()
        .flat_map(|p| [&p.output, &p.other_ending])
        .filter(|p| p.exists())
        .collect();
    match existing.first() {
        Some(first) if !a.force => anyhow::bail!(
            "{} already exists ({} earlier map(s) of these {} cases in {}); pass --force to \
             replace them",
            first.display(),
            existing.len(),
            planned.len(),
            a.out.display()
        ),
        _ => {}
    }
    say!("postprocessing with {steps}");
    let cleaned = postprocess_folder(&planned, &steps, &spec, |c| {
        say!(
            "{}: {} voxel(s) changed -> {}",
            c.case,
            c.changed,
            c.written.display()
        );
    })?;
    if a.force {
        for p in &planned {
            if p.other_ending.exists() {
                std::fs::remove_file(&p.other_ending)
                    .map_err(|e| anyhow::anyhow!("removing {}: {e}", p.other_ending.display()))?;
                say!("removed the earlier {}", p.other_ending.display());
            }
        }
    }
    let changed = cleaned.iter().filter(|c| c.changed > 0).count();
    say!(
        "{} map(s) written to {}, {changed} of them changed",
        cleaned.len(),
        a.out.display()
    );
    Ok(())
}
