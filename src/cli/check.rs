use clap::Args as ClapArgs;
use std::path::PathBuf;
use voxseg::data::case::NanPolicy;
use voxseg::data::check::check_dataset;

#[derive(ClapArgs)]
pub struct Args {
    /// Dataset: a BraTS, MSD or nnU-Net folder, or a JSON manifest.
    #[arg(long)]
    data: PathBuf,
    /// Modalities to check, e.g. t1,t1ce,t2,flair (default: all the dataset has).
    #[arg(long, value_delimiter = ',')]
    modalities: Vec<String>,
    /// Check as `train --replace-nan` reads: NaN/Inf voxels are then a warning, not a problem.
    #[arg(long)]
    replace_nan: bool,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let listing = voxseg::data::layout::list(&a.data)?;
    let dataset = &listing.dataset;
    let channels = dataset.modalities_or_all(&a.modalities)?;
    let names: Vec<String> = channels
        .iter()
        .map(|&i| dataset.modalities[i].clone())
        .collect();
    let nan = if a.replace_nan {
        NanPolicy::ReplaceWithZero
    } else {
        NanPolicy::Error
    };
    let check = check_dataset(&listing, &channels, nan);
    say!("{}", check.report(dataset, &names));
    if check.failed() {
        let nan = if a.replace_nan {
            " with --replace-nan"
        } else {
            ""
        };
        let cases = check.problems();
        match check.listing.len() {
            0 => anyhow::bail!(
                "{}: {cases} case(s) with a problem{nan}: training refuses them, and predict \
                 skips them (writing the others)",
                a.data.display()
            ),
            n => anyhow::bail!(
                "{}: {n} problem(s) in the listing, for which training and predict refuse the \
                 dataset; {cases} case(s) with a problem{nan}",
                a.data.display()
            ),
        }
    }
    Ok(())
}
