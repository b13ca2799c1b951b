use clap::Args as ClapArgs;
use std::path::PathBuf;
use voxseg::data::labels::LabelSpec;
use voxseg::metrics::evaluate::evaluate;

#[derive(ClapArgs)]
pub struct Args {
    /// Folder of predicted CASE.nii.gz label maps.
    #[arg(long)]
    pred: PathBuf,
    /// The reference: a dataset folder, or a folder of CASE.nii.gz label maps.
    #[arg(long)]
    truth: PathBuf,
    /// A run's split.json, to score only one subset of it (with --subset).
    #[arg(long)]
    split: Option<PathBuf>,
    /// test, val or train.
    #[arg(long, default_value = "test")]
    subset: String,
    /// Label convention of a plain --truth folder: brats2021 or brats2023.
    #[arg(long)]
    labels: Option<String>,
    /// Write the scores as JSON (.json) or CSV (.csv).
    #[arg(long)]
    out: Option<PathBuf>,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let spec = match a.labels.as_deref() {
        None => None,
        Some("brats2021") => Some(LabelSpec::brats2021()),
        Some("brats2023") => Some(LabelSpec::brats2023()),
        Some(other) => {
            anyhow::bail!("invalid --labels: '{other}': expected brats2021 or brats2023")
        }
    };
    let subset = match &a.split {
        Some(path) => {
            let v: serde_json::Value = serde_json::from_slice(
                &std::fs::read(path)
                    .map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?,
            )
            .map_err(|e| anyhow::anyhow!("{}: not a split file: {e}", path.display()))?;
            let ids = v[a.subset.as_str()]
                .as_array()
                .ok_or_else(|| anyhow::anyhow!("{}: no '{}' list", path.display(), a.subset))?
                .iter()
                .filter_map(|x| x.as_str().map(String::from))
                .collect::<Vec<_>>();
            Some(ids)
        }
        None => None,
    };
    let report = evaluate(&a.pred, &a.truth, subset.as_deref(), spec.as_ref())?;
    print!("{}", report.to_table());
    if let Some(out) = &a.out {
        match out.extension().and_then(|e| e.to_str()) {
            Some("json") => report.write_json(out)?,
            Some("csv") => report.write_csv(out)?,
            _ => anyhow::bail!(
                "invalid --out: '{}': use a .json or .csv file",
                out.display()
            ),
        }
        println!("scores written to {}", out.display());
    }
    Ok(())
}
