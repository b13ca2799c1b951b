//! The `voxseg` command line.
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "voxseg",
    version,
    about = "Train 3D U-Nets to segment brain tumours in multi-modal MRI"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the version and the backends this binary was built with.
    Info,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Info => {
            println!("voxseg {}", env!("CARGO_PKG_VERSION"));
            println!("cpu backend: {}", rayon::current_num_threads());
        }
    }
    Ok(())
}
