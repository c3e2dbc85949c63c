//! Load time and peak memory of reading ONNX files into modules: each file is loaded in a
//! process of its own, which reports its resident memory before loading (`VmRSS`) and its peak
//! after (`VmHWM`, from `/proc/self/status`, Linux only).
//!
//! ```text
//! cargo run -p flint-onnx --example load_memory -- FILE.onnx...
//! ```

use std::path::Path;
use std::time::Instant;

use burn::tensor::{Device, Tensor};
use flint_onnx::OnnxModel;

/// A `/proc/self/status` field in bytes.
fn status_bytes(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn measure(path: &Path) -> Result<(), String> {
    let device = Device::flex();
    // Start the backend before measuring, so its own setup is not counted as the model's.
    let _ = Tensor::<1>::zeros([1], &device).into_data();
    let before = status_bytes("VmRSS:").ok_or("no /proc/self/status")?;
    let start = Instant::now();
    let model = OnnxModel::load(path, &device).map_err(|e| e.to_string())?;
    let took = start.elapsed();
    let peak = status_bytes("VmHWM:").ok_or("no /proc/self/status")?;
    let after = status_bytes("VmRSS:").ok_or("no /proc/self/status")?;
    let size = std::fs::metadata(path).map_err(|e| e.to_string())?.len();
    let mb = |b: u64| b as f64 / (1 << 20) as f64;
    println!(
        "{} | {:.1} MB | {:.0} ms | {:.1} MB | {:.2}x | {:.1} MB | {} parameters",
        path.file_name().unwrap_or_default().to_string_lossy(),
        mb(size),
        took.as_secs_f64() * 1e3,
        mb(peak.saturating_sub(before)),
        peak.saturating_sub(before) as f64 / size as f64,
        mb(after.saturating_sub(before)),
        model.num_weights()
    );
    Ok(())
}

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let [flag, file] = args.as_slice()
        && flag == "--one"
    {
        return match measure(Path::new(file)) {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("{file}: {e}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    if args.is_empty() {
        eprintln!("usage: load_memory FILE.onnx...");
        return std::process::ExitCode::from(2);
    }
    println!(
        "file | size | load time | peak memory added by loading | peak / file size | memory kept after loading | parameters"
    );
    let exe = std::env::current_exe().expect("own path");
    let mut ok = true;
    for file in &args {
        let status = std::process::Command::new(&exe)
            .arg("--one")
            .arg(file)
            .status();
        ok &= status.is_ok_and(|s| s.success());
    }
    if ok {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    }
}
