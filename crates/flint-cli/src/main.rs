//! The `flint` command. Everything it does is in the `flint_cli` library.

mod allocator;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // Before any training allocates: keep freed memory instead of re-faulting it every batch.
    allocator::configure();
    let cli = flint_cli::Cli::parse();
    match flint_cli::run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}
