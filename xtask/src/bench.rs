//! `cargo xtask bench`: the throughput protocol of `shared/reference.md`, flint beside PyTorch.
//!
//! For each model, backend and thread count, `flint train` runs full Fashion-MNIST epochs
//! (batch 128, data loading included) and reports train samples/s, eval samples/s at batch 1000
//! and its peak resident memory; `shared/anchors/torch_reference.py` does the same in the same
//! run when `import torch` works. The table of ratios goes to stdout, `bench.md` and
//! `bench.json`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};
use flint_io::fs::write_atomic;
use serde_json::{Value, json};

/// What one framework measured for one configuration.
#[derive(Debug, Clone)]
struct Measured {
    train_per_sec: f64,
    eval_per_sec: f64,
    peak_rss_mib: f64,
    test_accuracy: f64,
    /// Resident memory after each epoch (flint only), to see growth.
    rss_per_epoch: Vec<f64>,
}

/// The options of `cargo xtask bench`.
pub struct BenchOptions {
    pub backends: Vec<String>,
    pub threads: Vec<u16>,
    pub models: Vec<String>,
    pub epochs: usize,
    pub limit: Option<usize>,
    pub torch: bool,
    pub python: String,
    pub output: PathBuf,
}

/// Checks the backends' names and returns a `flint` binary that has them: `FLINT_BIN`, or a
/// release build with their features.
pub(crate) fn flint_with_backends(backends: &[String]) -> anyhow::Result<PathBuf> {
    for backend in backends {
        if !["flex", "ndarray", "wgpu"].contains(&backend.as_str()) {
            bail!("unknown backend `{backend}`; known: flex, ndarray, wgpu");
        }
    }
    let features: Vec<&str> = backends
        .iter()
        .map(String::as_str)
        .filter(|b| *b != "flex")
        .collect();
    crate::flint_binary_with(&features)
}

pub fn bench(root: &Path, options: &BenchOptions) -> anyhow::Result<()> {
    for model in &options.models {
        if !["mlp", "cnn"].contains(&model.as_str()) {
            bail!("unknown model `{model}`; known: mlp, cnn");
        }
    }
    if options.threads.contains(&0) || options.epochs == 0 {
        bail!("threads and epochs must be at least 1");
    }
    let flint = flint_with_backends(&options.backends)?;
    let fashion = flint_data::Locator::new()
        .find(&flint_data::FASHION_MNIST)
        .context("the benchmark trains on Fashion-MNIST")?;
    std::fs::create_dir_all(&options.output)?;

    let torch = options.torch && torch_available(&options.python);
    if options.torch && !torch {
        eprintln!(
            "PyTorch anchor skipped: `{} -c \"import torch\"` failed (pip install torch numpy)",
            options.python
        );
    }

    let load_before = crate::bench_finetune::load_average();
    let mut rows = Vec::new();
    for model in &options.models {
        for &threads in &options.threads {
            let anchor = if torch {
                eprintln!("pytorch {model}, {threads} thread(s)...");
                Some(run_torch(root, options, model, threads, &fashion.dir)?)
            } else {
                None
            };
            for backend in &options.backends {
                eprintln!("flint {backend} {model}, {threads} thread(s)...");
                let run_dir = options
                    .output
                    .join(format!("flint-{backend}-{model}-t{threads}"));
                let flint_result = run_flint(&flint, options, backend, model, threads, &run_dir)?;
                rows.push((
                    model.clone(),
                    backend.clone(),
                    threads,
                    flint_result,
                    anchor.clone(),
                ));
            }
        }
    }

    let load = [load_before, crate::bench_finetune::load_average()];
    let table = markdown(&rows, options, &load);
    let json_rows: Vec<Value> = rows
        .iter()
        .map(|(model, backend, threads, f, t)| {
            json!({
                "model": model, "backend": backend, "threads": threads,
                "flint": measured_json(f),
                "pytorch": t.as_ref().map(measured_json),
            })
        })
        .collect();
    let report = json!({
        "protocol": "reference.md throughput protocol",
        "epochs": options.epochs,
        "train_limit": options.limit,
        "load_average_before": load[0],
        "load_average_after": load[1],
        "rows": json_rows,
    });
    write_report(&options.output, &table, &report)
}

/// Writes a bench's table and its JSON report into `output` and prints the table.
pub(crate) fn write_report(output: &Path, table: &str, report: &Value) -> anyhow::Result<()> {
    write_atomic(&output.join("bench.md"), table.as_bytes())?;
    write_atomic(
        &output.join("bench.json"),
        serde_json::to_string_pretty(report)?.as_bytes(),
    )?;
    println!("{table}");
    println!("written to {}", output.join("bench.md").display());
    Ok(())
}

fn measured_json(m: &Measured) -> Value {
    json!({
        "train_samples_per_sec": m.train_per_sec,
        "eval_samples_per_sec": m.eval_per_sec,
        "peak_rss_mib": m.peak_rss_mib,
        "test_accuracy": m.test_accuracy,
        "rss_mib_per_epoch": m.rss_per_epoch,
    })
}

fn torch_available(python: &str) -> bool {
    Command::new(python)
        .args(["-c", "import torch, numpy"])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn run_flint(
    flint: &Path,
    options: &BenchOptions,
    backend: &str,
    model: &str,
    threads: u16,
    run_dir: &Path,
) -> anyhow::Result<Measured> {
    if run_dir.exists() {
        std::fs::remove_dir_all(run_dir)?;
    }
    let mut cmd = Command::new(flint);
    cmd.args([
        "train",
        "--json",
        "--dataset",
        "fashion-mnist",
        "--model",
        model,
    ])
    .args(["--backend", backend, "--threads", &threads.to_string()])
    .args(["--epochs", &options.epochs.to_string(), "--output"])
    .arg(run_dir);
    if let Some(limit) = options.limit {
        cmd.args(["--limit", &limit.to_string()]);
    }
    let output = cmd.output()?;
    if !output.status.success() {
        bail!(
            "flint train ({backend}, {model}, {threads} threads) failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let mut train = Vec::new();
    let mut rss = Vec::new();
    let mut test = None;
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let Ok(event) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        match event["event"].as_str() {
            Some("epoch") => {
                train.push(number(&event, "samples_per_sec")?);
                rss.push(number(&event, "rss_mib")?);
            }
            Some("test") => test = Some(event),
            _ => {}
        }
    }
    let test = test.context("flint printed no test result")?;
    Ok(Measured {
        train_per_sec: train.iter().sum::<f64>() / train.len().max(1) as f64,
        eval_per_sec: number(&test, "samples_per_sec")?,
        peak_rss_mib: number(&test, "peak_rss_mib")?,
        test_accuracy: number(&test, "accuracy")?,
        rss_per_epoch: rss,
    })
}

fn run_torch(
    root: &Path,
    options: &BenchOptions,
    model: &str,
    threads: u16,
    data: &Path,
) -> anyhow::Result<Measured> {
    let script = root.join("../shared/anchors/torch_reference.py");
    if !script.exists() {
        bail!("{} not found", script.display());
    }
    let mut cmd = Command::new(&options.python);
    cmd.arg(&script)
        .args(["--model", model, "--threads", &threads.to_string()])
        .args(["--epochs", &options.epochs.to_string(), "--data"])
        .arg(data);
    if let Some(limit) = options.limit {
        cmd.args(["--limit", &limit.to_string()]);
    }
    let output = cmd.output()?;
    if !output.status.success() {
        bail!(
            "torch_reference.py ({model}, {threads} threads) failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .context("torch_reference.py printed no JSON result")?;
    let value: Value = serde_json::from_str(line)?;
    Ok(Measured {
        train_per_sec: number(&value, "train_samples_per_s")?,
        eval_per_sec: number(&value, "eval_samples_per_s")?,
        peak_rss_mib: number(&value, "peak_rss_mib")?,
        test_accuracy: number(&value, "test_accuracy")?,
        rss_per_epoch: Vec::new(),
    })
}

fn number(value: &Value, key: &str) -> anyhow::Result<f64> {
    value[key]
        .as_f64()
        .with_context(|| format!("`{key}` missing from {value}"))
}

type Row = (String, String, u16, Measured, Option<Measured>);

fn markdown(rows: &[Row], options: &BenchOptions, load: &[String; 2]) -> String {
    let mut out = format!(
        "Fashion-MNIST, {} epoch(s) of {} training images at batch 128, eval at batch 1000, {}. Load average (1, 5, 15 min) before: {}, after: {}.\n\n",
        options.epochs,
        options
            .limit
            .map_or("60,000".to_string(), |l| l.to_string()),
        // `flint_binary_with` builds release unless FLINT_BIN names a binary.
        std::env::var("FLINT_BIN").map_or("release build".to_string(), |bin| format!(
            "flint binary {bin}"
        )),
        load[0],
        load[1],
    );
    out.push_str(
        "| model | backend | threads | train img/s flint | PyTorch | ratio | eval img/s flint | PyTorch | ratio | peak RSS MiB flint | PyTorch | ratio | test acc flint / PyTorch |\n\
         | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |\n",
    );
    let ratio = |a: f64, b: Option<f64>| b.map_or("—".to_string(), |b| format!("{:.2}x", a / b));
    let value = |b: Option<f64>| b.map_or("—".to_string(), |b| format!("{b:.0}"));
    for (model, backend, threads, f, t) in rows {
        let t = t.as_ref();
        out.push_str(&format!(
            "| {model} | {backend} | {threads} | {:.0} | {} | {} | {:.0} | {} | {} | {:.0} | {} | {} | {:.2} % / {} |\n",
            f.train_per_sec,
            value(t.map(|t| t.train_per_sec)),
            ratio(f.train_per_sec, t.map(|t| t.train_per_sec)),
            f.eval_per_sec,
            value(t.map(|t| t.eval_per_sec)),
            ratio(f.eval_per_sec, t.map(|t| t.eval_per_sec)),
            f.peak_rss_mib,
            value(t.map(|t| t.peak_rss_mib)),
            ratio(f.peak_rss_mib, t.map(|t| t.peak_rss_mib)),
            f.test_accuracy * 100.0,
            t.map_or("—".to_string(), |t| format!("{:.2} %", t.test_accuracy * 100.0)),
        ));
    }
    let growth: Vec<String> = rows
        .iter()
        .filter(|r| r.3.rss_per_epoch.len() > 1)
        .map(|(model, backend, threads, f, _)| {
            let rss: Vec<String> = f.rss_per_epoch.iter().map(|r| format!("{r:.0}")).collect();
            format!("{model}/{backend}/{threads}t: {} MiB", rss.join(" → "))
        })
        .collect();
    if !growth.is_empty() {
        out.push_str(&format!(
            "\nflint resident memory after each epoch: {}\n",
            growth.join("; ")
        ));
    }
    out
}
