//! Loads an ONNX file and prints what `flint models inspect` will show: inputs, outputs,
//! operators, parameter count, the automatic cut point and the load time.

use std::time::Instant;

use burn::tensor::Device;
use flint_onnx::OnnxModel;

fn main() {
    let Some(path) = std::env::args_os().nth(1) else {
        eprintln!("usage: inspect <model.onnx>");
        std::process::exit(2);
    };
    let start = Instant::now();
    let model = match OnnxModel::load(&path, &Device::flex()) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    };
    let load = start.elapsed();
    let s = model.inspect();
    println!("inputs: {}", s.inputs.join(", "));
    println!("outputs: {}", s.outputs.join(", "));
    println!("opset: {}", s.opset);
    let ops: Vec<String> = s
        .operators
        .iter()
        .map(|(o, n)| format!("{o} x{n}"))
        .collect();
    println!("operators: {}", ops.join(", "));
    println!("parameters: {}", s.parameters);
    let constants: Vec<String> = s
        .constants
        .iter()
        .map(|(n, d)| format!("{n} {d:?}"))
        .collect();
    println!("constants: {}", constants.join(", "));
    match s.auto_cut {
        Some((node, size)) => println!(
            "auto cut: before {node} ({} features)",
            size.map_or("?".into(), |n| n.to_string())
        ),
        None => println!("auto cut: none (no Gemm or MatMul)"),
    }
    println!("load time: {:.0} ms", load.as_secs_f64() * 1e3);
}
