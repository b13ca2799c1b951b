use clap::Args as ClapArgs;
use voxseg::backend::cpu::Cpu;
use voxseg::backend::cuda::{ConvPrecision, Cuda};
use voxseg::backend::BackendBase;
use voxseg::bench::{check_filter, cuda_suite::cuda_suite, BenchResult, RunInfo};

#[derive(ClapArgs)]
pub struct Args {
    /// cpu or cuda (cuda:N for another GPU).
    #[arg(long, default_value = "cpu")]
    device: String,
    /// One JSON object per line instead of a table.
    #[arg(long)]
    json: bool,
    /// Only cases whose "op shape" contains this text. The ops: conv3d.fwd, conv3d.bwd_data,
    /// conv3d.bwd_weight, conv3d_transpose.* (fwd, bwd_data, bwd_weight), instnorm_lrelu.fwd,
    /// instnorm_lrelu.bwd and unet_step on both devices, and loader.batch on the CPU; shapes
    /// are named as scripts/bench_reference.py names them, e.g. "2x64x64x64x32->32 k3s1".
    #[arg(long)]
    filter: Option<String>,
    /// Convolution precision: fp32, tf32 or bf16 on CUDA; fp32 or bf16 on the CPU (bf16
    /// where it has AVX512-BF16).
    #[arg(long, default_value = "fp32")]
    precision: String,
}

const LOADER_OP: &str = "loader.batch";
const LOADER_SHAPE: &str = "2x128x128x128x4 nnunet-augmentation 2 workers";

/// The data loader at nnU-Net's BraTS size: 128^3 patches, batch 2, 4 modalities, the
/// default augmentation, 2 workers; reported as milliseconds per batch.
fn loader_case(cpu: &Cpu) -> anyhow::Result<BenchResult> {
    let per_second = voxseg::data::loader::loader_benchmark(2, 40, 7)?;
    Ok(BenchResult {
        op: LOADER_OP.into(),
        shape: LOADER_SHAPE.into(),
        ms: 1000.0 / per_second,
        gflops: 0.0,
        run: RunInfo::cpu(cpu),
        details: None,
    })
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let filter = a.filter.as_deref();
    let precision: ConvPrecision = a.precision.parse()?;
    let results = match a.device.as_str() {
        "cpu" => {
            let cpu = Cpu::at_precision(Some(precision))?;
            eprintln!("device: {}", cpu.name());
            let mut names: Vec<String> = voxseg::bench::cpu_cases(cpu)?
                .iter()
                .map(|c| format!("{} {}", c.op, c.shape))
                .collect();
            names.push(format!("{LOADER_OP} {LOADER_SHAPE}"));
            if let Some(f) = filter {
                check_filter(f, &names)?;
            }
            let mut r = voxseg::bench::cpu_suite(cpu, filter)?;
            if filter.is_none_or(|f| names.last().is_some_and(|n| n.contains(f))) {
                r.push(loader_case(&cpu)?);
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
            if let Some(f) = filter {
                check_filter(f, &voxseg::bench::cuda_suite::cuda_case_names())?;
            }
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
