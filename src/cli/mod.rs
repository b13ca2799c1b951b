//! Subcommands; each file holds one command's flags and its call into the library.

/// `println!` for commands that write files: a closed stdout (its reader, e.g. `head`,
/// has exited) loses the line instead of panicking, so the files are still all written.
/// Defined before the `mod` lines, so every command's file can use it.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

mod bench;
mod check;
mod data;
mod evaluate;
mod postprocess;
mod predict;
mod quickstart;
mod train;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "voxseg",
    version,
    about = "Train 3D U-Nets to segment brain tumours in multi-modal MRI"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Every command with flags takes negative numbers as flag values (`--lr -1`), so that the value's own
// check explains what is wrong with it instead of clap calling it an unknown argument.
#[derive(Subcommand)]
enum Command {
    /// Synthetic data, training, prediction and evaluation in one go, on built-in data.
    #[command(allow_negative_numbers = true)]
    Quickstart(quickstart::Args),
    /// Train a model on a dataset folder (BraTS, MSD, nnU-Net) or a manifest.
    #[command(allow_negative_numbers = true)]
    Train(Box<train::Args>),
    /// Print the plan (patch, batch, network size) training would use.
    #[command(allow_negative_numbers = true)]
    Plan(train::PlanArgs),
    /// Segment cases with a trained run.
    #[command(allow_negative_numbers = true)]
    Predict(predict::Args),
    /// Score predicted label maps against reference labels (Dice, HD95, ...).
    #[command(allow_negative_numbers = true)]
    Evaluate(evaluate::Args),
    /// Clean a folder of predicted label maps with postprocessing steps, into another folder.
    Postprocess(postprocess::Args),
    /// Print header facts and intensity statistics of NIfTI files as JSON.
    #[command(allow_negative_numbers = true)]
    Inspect(data::InspectArgs),
    /// Write a synthetic BraTS-like dataset.
    #[command(allow_negative_numbers = true)]
    Synth(data::SynthArgs),
    /// Read and validate every case of a dataset; report every problem, not only the first.
    Check(check::Args),
    /// Preprocess a dataset into a memory-mapped cache for data larger than RAM.
    #[command(allow_negative_numbers = true)]
    Preprocess(data::PreprocessArgs),
    /// Time the kernels (and the data loader) on a device.
    #[command(allow_negative_numbers = true)]
    Bench(bench::Args),
    /// Show the version and which backends this binary can use.
    Info,
}

impl Cli {
    /// Whether the command only prints (to stdout) and writes no files: such a command may
    /// simply end when its reader closes stdout.
    pub fn only_prints(&self) -> bool {
        matches!(
            self.command,
            Command::Inspect(_) | Command::Plan(_) | Command::Bench(_) | Command::Info
        )
    }
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Quickstart(a) => quickstart::run(a),
        Command::Train(a) => train::run(*a),
        Command::Plan(a) => train::plan(a),
        Command::Predict(a) => predict::run(a),
        Command::Evaluate(a) => evaluate::run(a),
        Command::Postprocess(a) => postprocess::run(a),
        Command::Inspect(a) => data::inspect(a),
        Command::Synth(a) => data::synth(a),
        Command::Check(a) => check::run(a),
        Command::Preprocess(a) => data::preprocess(a),
        Command::Bench(a) => bench::run(a),
        Command::Info => {
            println!("voxseg {}", env!("CARGO_PKG_VERSION"));
            let bf16 = if voxseg::tensor_ops::conv::bf16_products_available() {
                "bf16 by AVX512-BF16 with --precision bf16"
            } else {
                "no bf16 (no AVX512-BF16)"
            };
            println!(
                "cpu: {} threads, f32 convolutions by {}, {bf16}",
                rayon::current_num_threads(),
                voxseg::tensor_ops::conv::conv_engine_name::<f32>(Default::default())
            );
            match voxseg::backend::cuda::cuda_available() {
                Ok(name) => println!("cuda: {name}"),
                Err(why) => println!("cuda: not usable ({why})"),
            }
            println!(
                "kernels built into this binary: {}",
                voxseg::backend::cuda::BUILT_WITH_PTX
            );
            Ok(())
        }
    }
}

/// Parses `D,H,W` (or `N`) for clap.
pub fn triple(s: &str) -> Result<[usize; 3], String> {
    voxseg::train::config::parse_triple("size", s).map_err(|e| e.to_string())
}
