//! The `voxseg` command line: one line of error on failure, a non-zero exit code.
mod cli;

use clap::Parser;

#[global_allocator]
static ALLOC: voxseg::huge_pages::HugePageAlloc = voxseg::huge_pages::HugePageAlloc;

fn main() {
    let args = cli::Cli::parse();
    if let Err(e) = cli::run(args) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
