//! `cargo xtask models fetch|check`: the pretrained files flint-pretrained compiles in and
//! flint-transfer loads, downloaded with checksum verification.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

// The catalogue is flint-pretrained's own file: one list of names, checksums and sources.
// Including it (rather than depending on the crate) keeps xtask's build free of burn-onnx.
#[path = "../../crates/flint-pretrained/src/catalog.rs"]
#[allow(dead_code)]
mod catalog;

use catalog::CATALOG;

/// The default destination, searched by the build and at run time: `~/.cache/flint/models`.
pub fn default_dir() -> anyhow::Result<PathBuf> {
    let home = std::env::var_os("HOME").ok_or_else(|| anyhow::anyhow!("HOME is not set"))?;
    Ok(PathBuf::from(home).join(".cache/flint/models"))
}

fn status(path: &Path, sha256: &str) -> Result<(), String> {
    match flint_io::fs::sha256_file(path) {
        Ok(actual) if actual == sha256 => Ok(()),
        Ok(actual) => Err(format!("wrong checksum {actual}")),
        Err(_) => Err("missing".into()),
    }
}

/// Downloads the files that have a public source into `into`; skips those already there and
/// verified. Returns failure when a file could not be had.
pub fn fetch(into: Option<PathBuf>, only: &[String]) -> anyhow::Result<ExitCode> {
    let dir = match into {
        Some(d) => d,
        None => default_dir()?,
    };
    std::fs::create_dir_all(&dir)?;
    let mut missing = 0;
    for f in CATALOG
        .iter()
        .filter(|f| only.is_empty() || only.iter().any(|o| f.file.starts_with(o.as_str())))
    {
        let dest = dir.join(f.file);
        if status(&dest, f.sha256).is_ok() {
            println!("{:<26} present and verified", f.file);
            continue;
        }
        match f.url {
            Some(url) => match flint_data::download::fetch_to_file(url, &dest, f.sha256) {
                Ok(()) => println!("{:<26} downloaded and verified", f.file),
                Err(e) => {
                    missing += 1;
                    println!("{:<26} FAILED: {e}", f.file);
                }
            },
            None => {
                missing += 1;
                println!(
                    "{:<26} no download: {}; copy it into {} (SHA-256 {})",
                    f.file,
                    f.source,
                    dir.display(),
                    f.sha256
                );
            }
        }
    }
    println!(
        "\nmodels folder: {} (searched by flint at run time; or set FLINT_MODELS)",
        dir.display()
    );
    Ok(if missing == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Checks a models folder: each catalogue file present with the right checksum.
pub fn check(dir: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let dir = match dir.or_else(|| std::env::var_os("FLINT_MODELS").map(PathBuf::from)) {
        Some(d) => d,
        None => default_dir()?,
    };
    let mut bad = 0;
    for f in CATALOG {
        match status(&dir.join(f.file), f.sha256) {
            Ok(()) => println!("{:<26} ok", f.file),
            Err(why) => {
                bad += 1;
                println!("{:<26} {why}", f.file);
            }
        }
    }
    println!(
        "{} of {} files verified in {}",
        CATALOG.len() - bad,
        CATALOG.len(),
        dir.display()
    );
    Ok(if bad == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
