//! Runs every `NAME.onnx` in a folder against `NAME.reference.safetensors` and prints one row
//! per network; exits non-zero when a network fails to load or any error exceeds 1e-4.
//! `cargo xtask onnx-parity <dir>` runs this.

use std::path::PathBuf;
use std::process::ExitCode;

use burn::tensor::Device;
use flint_onnx::parity::{self, TOLERANCE};

fn main() -> ExitCode {
    let Some(dir) = std::env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!("usage: onnx_parity <folder with NAME.onnx and NAME.reference.safetensors>");
        return ExitCode::from(2);
    };
    let networks = match parity::networks(&dir) {
        Ok(n) if !n.is_empty() => n,
        Ok(_) => {
            eprintln!(
                "{}: no NAME.onnx with a NAME.reference.safetensors",
                dir.display()
            );
            return ExitCode::FAILURE;
        }
        Err(e) => {
            eprintln!("{}: {e}", dir.display());
            return ExitCode::FAILURE;
        }
    };
    println!(
        "network | operators | parameters | load | eval output | gradients | train output | running statistics | within {TOLERANCE:.0e}"
    );
    let mut ok = true;
    for (onnx, reference) in networks {
        match parity::check(&onnx, &reference, &Device::flex()) {
            Ok(row) => {
                ok &= row.passes();
                println!("{row}");
            }
            Err(e) => {
                ok = false;
                println!("{} | failed: {e}", onnx.display());
            }
        }
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
