use clap::Args as ClapArgs;
use std::path::PathBuf;
use voxseg::backend::cuda::conv_plan::ConvPrecision;

#[derive(ClapArgs)]
pub struct Args {
    /// Folder for everything it makes: the synthetic data, the run, predictions and scores.
    #[arg(long, default_value = "voxseg-quickstart")]
    out: PathBuf,
    /// Time budget for the whole job.
    #[arg(long, default_value_t = 6.0)]
    minutes: f64,
    /// auto, cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    device: String,
    /// Convolution arithmetic: fp32, tf32 or bf16 on CUDA (tensor cores, f32 accumulation);
    /// fp32 or bf16 (f32 accumulation) on CPUs with AVX512-BF16.
    #[arg(long)]
    precision: Option<ConvPrecision>,
    /// Seed of the synthetic data and of the training run.
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
        precision: a.precision,
        seed: a.seed,
        force: a.force,
    })?;
    say!("{}", report.summary());
    Ok(())
}
