//! Subcommands; each file holds one command's flags and its call into the library.
mod bench;
mod check;
mod data;
mod evaluate;
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

#[derive(Subcommand)]
enum Command {
    /// Synthetic data, training, prediction and evaluation in one go, on built-in data.
    Quickstart(quickstart::Args),
    /// Train a model on a dataset folder (BraTS, MSD, nnU-Net) or a manifest.
    Train(Box<train::Args>),
    /// Print the plan (patch, batch, network size) training would use.
    Plan(train::PlanArgs),
    /// Segment cases with a trained run.
    Predict(predict::Args),
    /// Score predicted label maps against reference labels (Dice, HD95, ...).
    Evaluate(evaluate::Args),
    /// Print header facts and intensity statistics of NIfTI files as JSON.
    Inspect(data::InspectArgs),
    /// Write a synthetic BraTS-like dataset.
    Synth(data::SynthArgs),
    /// Read and validate every case of a dataset; report every problem, not only the first.
    Check(check::Args),
    /// Preprocess a dataset into a memory-mapped cache for data larger than RAM.
    Preprocess(data::PreprocessArgs),
    /// Time the kernels (and the data loader) on a device.
    Bench(bench::Args),
    /// Show the version and which backends this binary can use.
    Info,
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Quickstart(a) => quickstart::run(a),
        Command::Train(a) => train::run(*a),
        Command::Plan(a) => train::plan(a),
        Command::Predict(a) => predict::run(a),
        Command::Evaluate(a) => evaluate::run(a),
        Command::Inspect(a) => data::inspect(a),
        Command::Synth(a) => data::synth(a),
        Command::Check(a) => check::run(a),
        Command::Preprocess(a) => data::preprocess(a),
        Command::Bench(a) => bench::run(a),
        Command::Info => {
            println!("voxseg {}", env!("CARGO_PKG_VERSION"));
            println!("cpu: {} threads", rayon::current_num_threads());
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
