use clap::Args as ClapArgs;
use std::path::PathBuf;
use voxseg::backend::cpu::Cpu;
use voxseg::backend::cuda::conv_plan::ConvPrecision;
use voxseg::backend::device::{resolve, Device, DeviceRequest};
use voxseg::backend::Backend;
use voxseg::data::layout::detect;
use voxseg::data::split::Split;
use voxseg::infer::{PredictOptions, Predictor};
use voxseg::train::RunDir;

#[derive(ClapArgs)]
pub struct Args {
    /// The run directory of a trained model.
    #[arg(long)]
    model: PathBuf,
    /// A dataset folder (cases chosen by --split).
    #[arg(long, conflicts_with = "input")]
    data: Option<PathBuf>,
    /// One case given as files, one per modality in the model's order.
    #[arg(long, num_args = 1..)]
    input: Vec<PathBuf>,
    #[arg(long)]
    out: PathBuf,
    /// best, last or a checkpoint path.
    #[arg(long, default_value = "best")]
    checkpoint: String,
    /// With --data: test, val or all (test and val come from the run's split.json).
    #[arg(long, default_value = "test")]
    split: String,
    /// Fraction of a patch shared by neighbouring windows.
    #[arg(long, default_value_t = 0.5)]
    overlap: f64,
    /// Average over all mirrorings of the input.
    #[arg(long)]
    tta: bool,
    /// Also write the per-voxel probabilities.
    #[arg(long)]
    probabilities: bool,
    /// auto, cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    device: String,
    /// Convolution arithmetic on CUDA: fp32, tf32 or bf16 (tensor cores, f32 accumulation).
    #[arg(long)]
    precision: Option<ConvPrecision>,
    /// Also write a picture per case.
    #[arg(long)]
    png: bool,
    #[arg(long)]
    replace_nan: bool,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    match resolve(a.device.parse::<DeviceRequest>()?)? {
        Device::Cpu { .. } => run_on(&Cpu::new(), &a),
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
    let mut predictor = Predictor::open(backend, &a.model, &a.checkpoint)?;
    let opts = PredictOptions {
        checkpoint: a.checkpoint.clone(),
        overlap: a.overlap,
        tta: a.tta,
        probabilities: a.probabilities,
        png: a.png,
        replace_nan: a.replace_nan,
        batch: 2,
    };
    std::fs::create_dir_all(&a.out)
        .map_err(|e| anyhow::anyhow!("creating {}: {e}", a.out.display()))?;
    let (dataset, cases) = if let Some(data) = &a.data {
        let dataset = detect(data)?;
        let ids: Vec<String> = dataset.cases.iter().map(|c| c.id.clone()).collect();
        let wanted: Vec<String> = match a.split.as_str() {
            "all" => ids.clone(),
            which @ ("test" | "val") => {
                let split = Split::load(
                    &RunDir {
                        root: a.model.clone(),
                    }
                    .split(),
                    &ids,
                )?;
                if which == "test" {
                    split.test_ids().to_vec()
                } else {
                    split.train_val().val().to_vec()
                }
            }
            other => anyhow::bail!("invalid --split: '{other}': expected test, val or all"),
        };
        let cases: Vec<_> = dataset
            .cases
            .iter()
            .filter(|c| wanted.contains(&c.id))
            .cloned()
            .collect();
        (dataset, cases)
    } else if !a.input.is_empty() {
        let dataset = predictor.files_as_dataset(&a.input)?;
        let cases = dataset.cases.clone();
        (dataset, cases)
    } else {
        anyhow::bail!("give --data DIR or --input FILE...");
    };
    if cases.is_empty() {
        anyhow::bail!("no cases to predict (split '{}')", a.split);
    }
    for case in &cases {
        let p = predictor.predict_case(&dataset, case, &a.out, &opts)?;
        println!("{}: {}", p.case, p.labels.display());
    }
    Ok(())
}
