//! The `voxseg` command line: one line of error on failure, a non-zero exit code.
mod cli;

use clap::Parser;

#[global_allocator]
static ALLOC: voxseg::large_blocks::LargeBlockAlloc = voxseg::large_blocks::LargeBlockAlloc::new();

fn main() {
    let args = cli::Cli::parse();
    // Ctrl-C removes the temporary files of the writes in flight before exiting.
    voxseg::interrupt::install();
    if args.only_prints() {
        exit_quietly_on_closed_stdout();
    }
    if let Err(e) = cli::run(args) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

/// Restores SIGPIPE's default action, which Rust sets to "ignore": a command whose only
/// output is stdout then ends quietly when its reader goes away (`voxseg inspect ... |
/// head -1`), as Unix tools do, instead of panicking on the failed write.
#[cfg(target_os = "linux")]
fn exit_quietly_on_closed_stdout() {
    // SAFETY: called at start-up on the main thread before any other thread exists;
    // SIG_DFL is a valid disposition for SIGPIPE.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

#[cfg(not(target_os = "linux"))]
fn exit_quietly_on_closed_stdout() {}
