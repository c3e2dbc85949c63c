//! Shared helpers of flint-transfer's integration tests: where the real data and models are,
//! and skipping honestly when they are missing.

#![allow(dead_code)]

pub mod pytorch_file;

use std::path::PathBuf;

/// Whether missing data must fail the test (CI sets `FLINT_REQUIRE_DATA=1`) instead of skipping.
pub fn data_required() -> bool {
    std::env::var_os("FLINT_REQUIRE_DATA").is_some_and(|v| !v.is_empty() && v != "0")
}

/// Skips the calling test with a printed reason, or fails it when data is required.
pub fn skip(reason: &str) {
    if data_required() {
        panic!("required data is missing: {reason}");
    }
    eprintln!("SKIPPED: {reason}");
}

/// `../shared` beside the checkout.
pub fn shared() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared")
}

/// The model folder: `$FLINT_MODELS`, else `../shared/models`.
pub fn models_dir() -> PathBuf {
    std::env::var_os("FLINT_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| shared().join("models"))
}

/// The data folder: `$FLINT_DATA`, else `../shared/data`.
pub fn data_dir() -> PathBuf {
    std::env::var_os("FLINT_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| shared().join("data"))
}

/// The file, or a skip (returning `None`) naming it.
pub fn file_or_skip(path: PathBuf) -> Option<PathBuf> {
    if path.is_file() {
        Some(path)
    } else {
        skip(&format!("{} is missing", path.display()));
        None
    }
}
