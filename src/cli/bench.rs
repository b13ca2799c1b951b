use clap::Args as ClapArgs;
use voxseg::backend::cuda::{ConvPrecision, Cuda};
use voxseg::bench::{cuda_suite::cuda_suite, BenchResult};

#[derive(ClapArgs)]
pub struct Args {
    /// cpu or cuda (cuda:N for another GPU).
    #[arg(long, default_value = "cpu")]
    device: String,
    /// One JSON object per line instead of a table.
    #[arg(long)]
    json: bool,
    /// Only cases whose op or shape contains this text.
    #[arg(long)]
    filter: Option<String>,
    /// Convolution precision on CUDA: fp32, tf32 or bf16.
    #[arg(long, default_value = "fp32")]
    precision: String,
}

/// The data loader at nnU-Net's BraTS size: 128^3 patches, batch 2, 4 modalities, the
/// default augmentation, 2 workers; reported as milliseconds per batch.
fn loader_case() -> anyhow::Result<BenchResult> {
    let per_second = voxseg::data::loader::loader_benchmark(2, 40, 7)?;
    Ok(BenchResult {
        op: "loader.batch".into(),
        shape: "2x128x128x128x4 nnunet-augmentation 2 workers".into(),
        ms: 1000.0 / per_second,
        gflops: 0.0,
        details: None,
    })
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let filter = a.filter.as_deref();
    let results = match a.device.as_str() {
        "cpu" => {
            let mut r = voxseg::bench::cpu_suite(filter)?;
            if filter.is_none_or(|f| "loader.batch".contains(f)) {
                r.push(loader_case()?);
            }
            r
        }
        d if d.starts_with("cuda") => {
            let ordinal = match d.strip_prefix("cuda:") {
                Some(n) => n
                    .parse()
                    .map_err(|_| anyhow::anyhow!("invalid --device: '{d}'"))?,
                None => 0,
            };
            let precision: ConvPrecision = a.precision.parse()?;
            let cuda = Cuda::new(ordinal)?;
            cuda_suite(&cuda, filter, precision)?
        }
        other => anyhow::bail!("invalid --device: '{other}': expected cpu, cuda or cuda:N"),
    };
    if a.json {
        print!("{}", voxseg::bench::json_lines(&results)?);
    } else {
        voxseg::bench::print_table(&results);
    }
    Ok(())
}
