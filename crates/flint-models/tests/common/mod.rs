//! Where the shared models are, skipping honestly when they are missing, and PyTorch
//! checkpoints written by hand (flint-transfer's test writer, shared by path).

#![allow(dead_code)]

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

/// The model folder: `$FLINT_MODELS`, else `../shared/models` beside the checkout.
pub fn models_dir() -> PathBuf {
    std::env::var_os("FLINT_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/models"))
}

/// The file, or a skip (returning `None`) naming it.
pub fn file_or_skip(path: PathBuf) -> Option<PathBuf> {
    if path.is_file() {
        Some(path)
    } else {
        skip(&format!(
            "{} is missing; set FLINT_MODELS to the folder holding it",
            path.display()
        ));
        None
    }
}

#[path = "../../../flint-transfer/tests/common/pytorch_file.rs"]
mod pytorch_file;
pub use pytorch_file::{Entry, pytorch_zip};
