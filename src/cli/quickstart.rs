use clap::Args as ClapArgs;
use std::path::PathBuf;

#[derive(ClapArgs)]
pub struct Args {
    #[arg(long, default_value = "voxseg-quickstart")]
    out: PathBuf,
    /// Time budget for the whole job.
    #[arg(long, default_value_t = 6.0)]
    minutes: f64,
    /// auto, cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    device: String,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Use an --out folder that also holds other files (the quickstart's own are replaced).
    #[arg(long)]
    force: bool,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let report = voxseg::quickstart::run(&voxseg::quickstart::QuickstartOptions {
        out: a.out,
        minutes: a.minutes,
        device: a.device,
        seed: a.seed,
        force: a.force,
    })?;
    println!("{}", report.summary());
    Ok(())
}
