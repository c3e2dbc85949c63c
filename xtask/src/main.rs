//! `cargo xtask`: the project's tasks, thin wrappers over flint's library functions.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use flint_data::{KnownDataset, Locator};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "flint's project tasks")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Find, check and fetch the data sets.
    Data {
        #[command(subcommand)]
        command: DataCommand,
    },
}

#[derive(Subcommand)]
enum DataCommand {
    /// List each known data set, where it was found (or why not) and its sample counts.
    Check {
        /// Fail (exit 1) unless these data sets are found and readable (comma-separated).
        #[arg(long, value_delimiter = ',')]
        require: Vec<KnownDataset>,
        /// Also compare file contents with the official SHA-256 checksums.
        #[arg(long)]
        verify: bool,
    },
    /// Download data sets into the user cache, verifying their checksums.
    Fetch {
        /// Which data sets (default: all that can be downloaded).
        datasets: Vec<KnownDataset>,
        /// Download into this folder instead of the user cache.
        #[arg(long)]
        into: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Data { command } => match command {
            DataCommand::Check { require, verify } => data_check(&require, verify),
            DataCommand::Fetch { datasets, into } => data_fetch(&datasets, into),
        },
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn data_check(require: &[KnownDataset], verify: bool) -> anyhow::Result<ExitCode> {
    let locator = Locator::new();
    println!("Data sets (discovery: $FLINT_DATA, ./data, /usr/share/datasets, user cache):\n");
    let mut missing = Vec::new();
    for dataset in KnownDataset::ALL {
        let check = dataset.check(&locator);
        println!("{check}");
        let has_checksums = dataset.spec().files.iter().any(|f| !f.sha256.is_empty());
        if verify && !has_checksums && check.located.is_some() {
            println!("{:<14} no published per-file checksums to verify", "");
        } else if verify && let Some(located) = &check.located {
            match located.verify(dataset.spec()) {
                Ok(differ) if differ.is_empty() => println!("{:<14} checksums ok", ""),
                Ok(differ) => println!(
                    "{:<14} CHECKSUM MISMATCH: {} differ from the official files",
                    "",
                    differ.join(", ")
                ),
                Err(e) => println!("{:<14} cannot verify: {e}", ""),
            }
        }
        if require.contains(&dataset) && !check.is_ok() {
            missing.push(dataset.name());
        }
        println!();
    }
    if missing.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!(
            "error: required data set(s) missing: {}",
            missing.join(", ")
        );
        Ok(ExitCode::FAILURE)
    }
}

fn data_fetch(datasets: &[KnownDataset], into: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let wanted: Vec<KnownDataset> = if datasets.is_empty() {
        KnownDataset::ALL.to_vec()
    } else {
        datasets.to_vec()
    };
    let mut locator = Locator::new();
    if let Some(dir) = into {
        locator = locator
            .env_root(None)
            .local_root(None)
            .system_roots(vec![])
            .cache_root(Some(dir));
    }
    let mut failed = false;
    for dataset in wanted {
        match locator.locate(dataset.spec()) {
            Ok(found) => println!(
                "{:<14} {} ({})",
                dataset.name(),
                found.dir.display(),
                found.origin
            ),
            Err(e) => {
                failed = true;
                eprintln!("{:<14} {e}", dataset.name());
            }
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
