//! The `flint` command. Everything it does is in the `flint_cli` library.

use std::process::ExitCode;

use clap::Parser;

// Every batch allocates and frees the same large activation and gradient buffers; glibc maps and
// unmaps them each time (a page fault per 4 KiB touched), mimalloc keeps them.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = flint_cli::Cli::parse();
    match flint_cli::run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}
