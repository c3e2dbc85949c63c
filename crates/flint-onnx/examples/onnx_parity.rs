//! Runs every `NAME.onnx` in a folder against `NAME.reference.safetensors` and prints one row
//! per network; exits non-zero when a network fails to load or any error exceeds 1e-4.
//! `cargo xtask onnx-parity <dir>` runs this.
//!
//! A gradient above the tolerance in f32 is computed again in f64 by a second run of this
//! program (`--f64 NAME.onnx NAME.reference.safetensors GRAD...`: flex's float type is set once
//! per process, before any tensor exists), which prints one line per gradient; see
//! `flint_onnx::parity::Recheck` for what it shows and when it clears flint.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use burn::tensor::{Device, FloatDType};
use flint_onnx::parity::{self, Recheck, Slopes, TOLERANCE};

fn main() -> ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    if args.first().is_some_and(|a| a == "--f64") {
        return f64_child(&args[1..]);
    }
    let Some(dir) = args.first().map(PathBuf::from) else {
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
            Ok(mut row) => {
                let failing = row.failing_grads();
                if !failing.is_empty() {
                    match recheck_in_f64(&onnx, &reference, &failing) {
                        Ok(r) => row.rechecks = r,
                        Err(e) => eprintln!("{}: the f64 recheck failed: {e}", onnx.display()),
                    }
                }
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

/// Runs this program again with `--f64` and reads its lines back.
fn recheck_in_f64(onnx: &Path, reference: &Path, names: &[String]) -> Result<Vec<Recheck>, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let out = std::process::Command::new(exe)
        .arg("--f64")
        .arg(onnx)
        .arg(reference)
        .args(names)
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut rechecks = Vec::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split('\t').collect();
        let num = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok());
        if f.first() != Some(&"recheck") {
            continue;
        }
        let (Some(name), Some(error)) = (f.get(1), num(2)) else {
            return Err(format!("unreadable line {line:?}"));
        };
        let slopes = match (num(3), num(4), num(5)) {
            (Some(difference), Some(flint), Some(reference)) => Some(Slopes {
                difference,
                flint,
                reference,
            }),
            _ => None,
        };
        rechecks.push(Recheck {
            name: name.to_string(),
            error: error as f32,
            slopes,
        });
    }
    Ok(rechecks)
}

/// `--f64 NAME.onnx NAME.reference.safetensors GRAD...`: one tab-separated line per gradient.
fn f64_child(args: &[std::ffi::OsString]) -> ExitCode {
    let [onnx, reference, names @ ..] = args else {
        eprintln!("usage: onnx_parity --f64 NAME.onnx NAME.reference.safetensors GRAD...");
        return ExitCode::from(2);
    };
    let mut device = Device::flex();
    if let Err(e) = device.configure(FloatDType::F64) {
        eprintln!("flex cannot compute in f64 here: {e:?}");
        return ExitCode::FAILURE;
    }
    let names: Vec<String> = names
        .iter()
        .map(|n| n.to_string_lossy().into_owned())
        .collect();
    match parity::recheck(Path::new(onnx), Path::new(reference), &names, &device) {
        Ok(rechecks) => {
            for r in rechecks {
                match r.slopes {
                    None => println!("recheck\t{}\t{:e}", r.name, r.error),
                    Some(s) => println!(
                        "recheck\t{}\t{:e}\t{:e}\t{:e}\t{:e}",
                        r.name, r.error, s.difference, s.flint, s.reference
                    ),
                }
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}
