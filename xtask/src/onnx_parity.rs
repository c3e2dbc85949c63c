//! `cargo xtask onnx-parity <dir>`: every `NAME.onnx` in a folder against
//! `NAME.reference.safetensors`, one row per network.
//!
//! The checks live in `flint_onnx::parity` (the tests use the same ones); this runs its
//! `onnx_parity` example, built in the dev profile the tests use, so xtask itself does not
//! compile burn. A gradient above 1e-4 in f32 is rechecked in f64 by the example (a second
//! process); the row says so, with the f64 error and, where f64 still disagrees, the central
//! difference that decides between flint and the reference.

use std::path::Path;
use std::process::ExitCode;

/// Builds and runs the parity table; its exit status is the table's verdict.
pub fn run(root: &Path, dir: &Path) -> anyhow::Result<ExitCode> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = std::process::Command::new(cargo)
        .current_dir(root)
        .args([
            "run",
            "--quiet",
            "-p",
            "flint-onnx",
            "--example",
            "onnx_parity",
            "--",
        ])
        .arg(dir)
        .status()?;
    Ok(if status.success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
