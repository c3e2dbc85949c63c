//! `cargo xtask bench --workload finetune`: protocol F1 of `shared/reference.md`, flint beside
//! PyTorch.
//!
//! For each pretrained network, strategy and thread count, `flint finetune` runs epochs on the
//! hymenoptera image folder (batch 16, SGD 0.001 momentum 0.9, random-resized crop and flip for
//! training, resize 256 + centre crop 224 for val): train images/s (decoding and augmenting
//! included), val images/s and the process's peak resident memory. The strategies:
//! - `finetune`: the whole network trains (`--strategy finetune`);
//! - `frozen`: the backbone is frozen but computed every epoch, without a feature cache, and
//!   only the head trains (`--strategy finetune --freeze '^backbone\.'`; `feature-extract`
//!   would compute the features once and train on the cache).
//!
//! `shared/anchors/torch_finetune.py` (torchvision's MobileNetV2, `--strategy finetune` and
//! `feature-extract`) runs in the same run when `import torch` works. EfficientNet-Lite0's anchor
//! is the same script's loop with timm's `efficientnet_lite0` in place of MobileNetV2
//! (`xtask/anchors/torch_finetune_timm.py`); without `timm` installed those rows have no PyTorch
//! column. Peak memory is measured the same way for both
//! programs: the child's maximum resident set size as the kernel reports it when the child
//! exits (`wait4`). The table of ratios goes to stdout, `bench.md` and `bench.json`.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, bail};
use serde_json::{Value, json};

/// The PyTorch program that runs a network's side of the protocol.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Anchor {
    /// `shared/anchors/torch_finetune.py` itself (torchvision's MobileNetV2).
    Torchvision,
    /// That script's loop with this timm network in its place (`xtask/anchors/torch_finetune_timm.py`).
    Timm(&'static str),
}

/// The networks the protocol knows, and their anchors.
const MODELS: [(&str, Anchor); 2] = [
    ("mobilenetv2", Anchor::Torchvision),
    ("efficientnet-lite0", Anchor::Timm("efficientnet_lite0")),
];

/// The two strategies of protocol F1: name, `flint finetune` arguments, the anchor's strategy.
const STRATEGIES: [(&str, &[&str], &str); 2] = [
    ("finetune", &["--strategy", "finetune"], "finetune"),
    (
        "frozen",
        &["--strategy", "finetune", "--freeze", r"^backbone\."],
        "feature-extract",
    ),
];

/// The options of `cargo xtask bench --workload finetune`.
pub struct FinetuneBenchOptions {
    pub backends: Vec<String>,
    pub threads: Vec<u16>,
    pub models: Vec<String>,
    pub epochs: usize,
    /// Train and validate on this many images of each split instead of all of them.
    pub limit: Option<usize>,
    pub torch: bool,
    pub python: String,
    pub output: PathBuf,
}

/// What one program measured for one configuration (means over the epochs).
#[derive(Debug, Clone)]
struct Measured {
    train_per_sec: f64,
    val_per_sec: Option<f64>,
    peak_rss_mib: Option<f64>,
    /// Validation accuracy after the last epoch (flint only; the anchor does not print it).
    val_accuracy: Option<f64>,
}

struct Row {
    model: String,
    strategy: &'static str,
    backend: String,
    threads: u16,
    flint: Measured,
    torch: Option<Measured>,
}

pub fn bench(root: &Path, options: &FinetuneBenchOptions) -> anyhow::Result<()> {
    for model in &options.models {
        if !MODELS.iter().any(|(m, _)| m == model) {
            bail!(
                "unknown model `{model}` for the finetune workload; known: mobilenetv2, efficientnet-lite0"
            );
        }
    }
    if options.threads.is_empty() || options.threads.contains(&0) || options.epochs == 0 {
        bail!("threads and epochs must be at least 1");
    }
    if options.limit == Some(0) {
        bail!("--limit must be at least 1 (images per split)");
    }
    let flint = crate::bench::flint_with_backends(&options.backends)?;
    let data = flint_data::Locator::new()
        .find(&flint_data::HYMENOPTERA)
        .context("protocol F1 fine-tunes on the hymenoptera image folder")?
        .dir;
    std::fs::create_dir_all(&options.output)?;
    let data = match options.limit {
        Some(limit) => subset(
            &data,
            limit,
            &options.output.join(format!("data-limit{limit}")),
        )?,
        None => data,
    };
    let script = root.join("../shared/anchors/torch_finetune.py");
    let torch = options.torch && torch_available(&options.python, &script);
    let timm_script = root.join("xtask/anchors/torch_finetune_timm.py");
    let timm = torch
        && options.models.iter().any(|m| {
            MODELS
                .iter()
                .any(|&(n, a)| n == m && a != Anchor::Torchvision)
        })
        && timm_available(&options.python);
    let load_before = load_average();

    let mut rows = Vec::new();
    for model in &options.models {
        let anchor = MODELS
            .iter()
            .find(|&&(m, _)| m == model)
            .map(|&(_, a)| a)
            .expect("checked above");
        let anchor_program = match anchor {
            Anchor::Torchvision if torch => Some(vec![script.clone().into_os_string()]),
            Anchor::Timm(name) if timm => Some(vec![
                timm_script.clone().into_os_string(),
                name.into(),
                script.clone().into_os_string(),
            ]),
            _ => None,
        };
        for &(strategy, flint_args, anchor_strategy) in &STRATEGIES {
            for &threads in &options.threads {
                let anchor = match &anchor_program {
                    Some(program) => {
                        eprintln!("pytorch {model} {strategy}, {threads} thread(s)...");
                        Some(run_torch(
                            program,
                            options,
                            anchor_strategy,
                            threads,
                            &data,
                        )?)
                    }
                    None => None,
                };
                for backend in &options.backends {
                    eprintln!("flint {backend} {model} {strategy}, {threads} thread(s)...");
                    let run_dir = options
                        .output
                        .join(format!("flint-{backend}-{model}-{strategy}-t{threads}"));
                    let args = FlintRun {
                        model,
                        backend,
                        threads,
                        strategy_args: flint_args,
                        data: &data,
                        run_dir: &run_dir,
                    };
                    let measured = run_flint(&flint, options, &args)?;
                    rows.push(Row {
                        model: model.clone(),
                        strategy,
                        backend: backend.clone(),
                        threads,
                        flint: measured,
                        torch: anchor.clone(),
                    });
                }
            }
        }
    }
    let load_after = load_average();

    let table = markdown(&rows, options, &data, [&load_before, &load_after]);
    let json_rows: Vec<Value> = rows
        .iter()
        .map(|r| {
            json!({
                "model": r.model, "strategy": r.strategy, "backend": r.backend,
                "threads": r.threads,
                "flint": measured_json(&r.flint),
                "pytorch": r.torch.as_ref().map(measured_json),
            })
        })
        .collect();
    let report = json!({
        "protocol": "reference.md F1 (fine-tuning throughput, CPU)",
        "data": data.display().to_string(),
        "epochs": options.epochs,
        "images_per_split_limit": options.limit,
        "load_average_before": load_before,
        "load_average_after": load_after,
        "pytorch": torch,
        "rows": json_rows,
    });
    crate::bench::write_report(&options.output, &table, &report)
}

fn measured_json(m: &Measured) -> Value {
    json!({
        "train_images_per_sec": m.train_per_sec,
        "val_images_per_sec": m.val_per_sec,
        "peak_rss_mib": m.peak_rss_mib,
        "val_accuracy": m.val_accuracy,
    })
}

/// Whether the anchor can run; says why not on stderr.
fn torch_available(python: &str, script: &Path) -> bool {
    let ok = Command::new(python)
        .args(["-c", "import torch, torchvision"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!(
            "PyTorch anchor skipped: `{python} -c \"import torch, torchvision\"` failed \
             (pip install torch torchvision, or --python PATH)"
        );
    } else if !script.exists() {
        eprintln!("PyTorch anchor skipped: {} not found", script.display());
    }
    ok && script.exists()
}

/// Whether timm (EfficientNet-Lite0's anchor) imports; says why not on stderr.
fn timm_available(python: &str) -> bool {
    let ok = Command::new(python)
        .args(["-c", "import timm"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!(
            "EfficientNet-Lite0's PyTorch anchor skipped: `{python} -c \"import timm\"` failed \
             (pip install timm)"
        );
    }
    ok
}

/// The 1-minute load average, as `/proc/loadavg` gives it (the figures depend on it).
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| {
            let fields: Vec<&str> = l.split_whitespace().take(3).collect();
            (fields.len() == 3).then(|| fields.join(" "))
        })
        .unwrap_or_else(|| "unknown".into())
}

/// A copy of `data` with the first `limit` images (by file name, classes taken in turn) of each
/// split, for a quick check of the command; not the protocol.
fn subset(data: &Path, limit: usize, into: &Path) -> anyhow::Result<PathBuf> {
    if into.exists() {
        std::fs::remove_dir_all(into)?;
    }
    for split in ["train", "val"] {
        let mut classes: Vec<(String, Vec<PathBuf>)> = Vec::new();
        let dir = data.join(split);
        for entry in std::fs::read_dir(&dir).with_context(|| format!("{}", dir.display()))? {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                let mut files: Vec<PathBuf> = std::fs::read_dir(entry.path())?
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.is_file())
                    .collect();
                files.sort();
                classes.push((entry.file_name().to_string_lossy().into_owned(), files));
            }
        }
        classes.sort();
        let mut taken = 0;
        for i in 0.. {
            if taken == limit || classes.iter().all(|(_, f)| i >= f.len()) {
                break;
            }
            for (class, files) in &classes {
                if let Some(file) = files.get(i)
                    && taken < limit
                {
                    let to = into.join(split).join(class);
                    std::fs::create_dir_all(&to)?;
                    std::fs::copy(file, to.join(file.file_name().expect("a file")))?;
                    taken += 1;
                }
            }
        }
        // Every class needs a folder, even an empty one would be refused: make sure each got one.
        for (class, _) in &classes {
            anyhow::ensure!(
                into.join(split).join(class).is_dir(),
                "--limit {limit} leaves class `{class}` of {split} without images; use at least {}",
                classes.len()
            );
        }
    }
    Ok(into.to_path_buf())
}

/// One `flint finetune` run.
struct FlintRun<'a> {
    model: &'a str,
    backend: &'a str,
    threads: u16,
    strategy_args: &'a [&'a str],
    data: &'a Path,
    run_dir: &'a Path,
}

fn run_flint(
    flint: &Path,
    options: &FinetuneBenchOptions,
    run: &FlintRun,
) -> anyhow::Result<Measured> {
    if run.run_dir.exists() {
        std::fs::remove_dir_all(run.run_dir)?;
    }
    let mut cmd = Command::new(flint);
    cmd.args(["finetune", "--json", "--pretrained", run.model, "--data"])
        .arg(run.data)
        .args(run.strategy_args)
        .args(["--backend", run.backend])
        .args(["--threads", &run.threads.to_string()])
        .args(["--epochs", &options.epochs.to_string(), "--output"])
        .arg(run.run_dir);
    let done = run_measured(&mut cmd)?;
    if !done.success {
        bail!(
            "flint finetune ({} {}, {:?}, {} threads) failed:\n{}",
            run.backend,
            run.model,
            run.strategy_args,
            run.threads,
            done.stderr
        );
    }
    let mut train = Vec::new();
    let mut val = Vec::new();
    let mut accuracy = None;
    for line in done.stdout.lines() {
        let Ok(event) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        if event["event"].as_str() == Some("epoch") {
            train.push(number(&event, "samples_per_sec")?);
            // Binaries from before the engine reported it have no val speed.
            if let Some(v) = event["val_samples_per_sec"].as_f64() {
                val.push(v);
            }
            accuracy = event["val_accuracy"].as_f64();
        }
    }
    anyhow::ensure!(
        !train.is_empty(),
        "flint finetune printed no epoch result:\n{}",
        done.stdout
    );
    Ok(Measured {
        train_per_sec: mean(&train),
        val_per_sec: (val.len() == train.len()).then(|| mean(&val)),
        peak_rss_mib: done.peak_rss_mib,
        val_accuracy: accuracy,
    })
}

/// One run of an anchor: `program` is the script and its leading arguments.
fn run_torch(
    program: &[std::ffi::OsString],
    options: &FinetuneBenchOptions,
    strategy: &str,
    threads: u16,
    data: &Path,
) -> anyhow::Result<Measured> {
    let mut cmd = Command::new(&options.python);
    cmd.args(program)
        .arg(data)
        .args(["--threads", &threads.to_string()])
        .args(["--epochs", &options.epochs.to_string()])
        .args(["--strategy", strategy]);
    let done = run_measured(&mut cmd)?;
    if !done.success {
        bail!(
            "torch_finetune.py ({strategy}, {threads} threads) failed:\n{}",
            done.stderr
        );
    }
    let line = done
        .stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .context("torch_finetune.py printed no JSON result")?;
    let value: Value = serde_json::from_str(line)?;
    let epochs = value["epochs"]
        .as_array()
        .filter(|e| !e.is_empty())
        .with_context(|| format!("no epochs in {value}"))?;
    let field =
        |key: &str| -> anyhow::Result<Vec<f64>> { epochs.iter().map(|e| number(e, key)).collect() };
    Ok(Measured {
        train_per_sec: mean(&field("train_img_s")?),
        val_per_sec: Some(mean(&field("val_img_s")?)),
        peak_rss_mib: done.peak_rss_mib,
        val_accuracy: None,
    })
}

fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len().max(1) as f64
}

fn number(value: &Value, key: &str) -> anyhow::Result<f64> {
    value[key]
        .as_f64()
        .with_context(|| format!("`{key}` missing from {value}"))
}

/// A finished child: its output, whether it succeeded and its peak resident memory.
struct Finished {
    stdout: String,
    stderr: String,
    success: bool,
    peak_rss_mib: Option<f64>,
}

/// Runs `cmd` to the end, collecting its output, and reads its peak resident memory from the
/// kernel's accounting of the exited child (`wait4`'s `ru_maxrss`, the `VmHWM` it had).
fn run_measured(cmd: &mut Command) -> anyhow::Result<Finished> {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start {:?}", cmd.get_program()))?;
    let mut stderr_pipe = child.stderr.take().expect("piped");
    // Both pipes are drained at once, or a child filling one would wait on it forever.
    let stderr = std::thread::spawn(move || {
        let mut text = Vec::new();
        let _ = stderr_pipe.read_to_end(&mut text);
        String::from_utf8_lossy(&text).into_owned()
    });
    let mut stdout = Vec::new();
    child
        .stdout
        .take()
        .expect("piped")
        .read_to_end(&mut stdout)?;
    let (success, peak_rss_mib) = wait_with_peak_rss(child)?;
    Ok(Finished {
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: stderr.join().unwrap_or_default(),
        success,
        peak_rss_mib,
    })
}

#[cfg(target_os = "linux")]
fn wait_with_peak_rss(child: std::process::Child) -> anyhow::Result<(bool, Option<f64>)> {
    let pid = child.id() as libc::pid_t;
    let mut status: libc::c_int = 0;
    // SAFETY: an all-zero `rusage` is a valid value of the plain C struct wait4 fills in.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: waits for our own child, which has not been reaped (`child` is never waited
        // on); `status` and `usage` are valid for writes.
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        if r == pid {
            break;
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e).context("waiting for the benchmark's child process");
        }
    }
    let success = libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
    // Linux gives ru_maxrss in KiB.
    Ok((success, Some(usage.ru_maxrss as f64 / 1024.0)))
}

#[cfg(not(target_os = "linux"))]
fn wait_with_peak_rss(mut child: std::process::Child) -> anyhow::Result<(bool, Option<f64>)> {
    Ok((child.wait()?.success(), None))
}

fn markdown(rows: &[Row], options: &FinetuneBenchOptions, data: &Path, load: [&str; 2]) -> String {
    let mut out = format!(
        "Protocol F1 (reference.md): {} epoch(s) on {}{}, batch 16, SGD 0.001 momentum 0.9, \
         random-resized crop + flip; val: resize 256, centre crop 224. Load average (1, 5, 15 \
         min) before: {}, after: {}.\n\n",
        options.epochs,
        data.display(),
        options.limit.map_or(String::new(), |l| format!(
            " ({l} images per split: a quick check, not the protocol)"
        )),
        load[0],
        load[1],
    );
    out.push_str(
        "| model | strategy | backend | threads | train img/s flint | PyTorch | ratio | val img/s flint | PyTorch | ratio | peak RSS MiB flint | PyTorch | ratio | flint val acc |\n\
         | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n",
    );
    let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}x", a / b),
        _ => "—".to_string(),
    };
    let value =
        |v: Option<f64>, digits: usize| v.map_or("—".to_string(), |v| format!("{v:.digits$}"));
    for r in rows {
        let (f, t) = (&r.flint, r.torch.as_ref());
        out.push_str(&format!(
            "| {} | {} | {} | {} | {:.1} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            r.model,
            r.strategy,
            r.backend,
            r.threads,
            f.train_per_sec,
            value(t.map(|t| t.train_per_sec), 1),
            ratio(Some(f.train_per_sec), t.map(|t| t.train_per_sec)),
            value(f.val_per_sec, 1),
            value(t.and_then(|t| t.val_per_sec), 1),
            ratio(f.val_per_sec, t.and_then(|t| t.val_per_sec)),
            value(f.peak_rss_mib, 0),
            value(t.and_then(|t| t.peak_rss_mib), 0),
            ratio(f.peak_rss_mib, t.and_then(|t| t.peak_rss_mib)),
            f.val_accuracy
                .map_or("—".to_string(), |a| format!("{:.2} %", a * 100.0)),
        ));
    }
    // What the extra threads give each program, from the same run.
    let mut scaling = Vec::new();
    for r in rows.iter().filter(|r| r.threads > 1) {
        let Some(one) = rows.iter().find(|o| {
            o.threads == 1
                && o.model == r.model
                && o.strategy == r.strategy
                && o.backend == r.backend
        }) else {
            continue;
        };
        let torch = match (&r.torch, &one.torch) {
            (Some(n), Some(o)) => format!(", PyTorch {:.2}x", n.train_per_sec / o.train_per_sec),
            _ => String::new(),
        };
        scaling.push(format!(
            "{} {} {} {} threads / 1: train flint {:.2}x{torch}",
            r.model,
            r.strategy,
            r.backend,
            r.threads,
            r.flint.train_per_sec / one.flint.train_per_sec,
        ));
    }
    if !scaling.is_empty() {
        out.push_str(&format!(
            "\nSpeed-up from threads: {}.\n",
            scaling.join("; ")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn measured(train: f64, val: Option<f64>, rss: Option<f64>) -> Measured {
        Measured {
            train_per_sec: train,
            val_per_sec: val,
            peak_rss_mib: rss,
            val_accuracy: Some(0.5),
        }
    }

    fn options() -> FinetuneBenchOptions {
        FinetuneBenchOptions {
            backends: vec!["flex".into()],
            threads: vec![1, 2],
            models: vec!["mobilenetv2".into()],
            epochs: 1,
            limit: None,
            torch: true,
            python: "python3".into(),
            output: PathBuf::from("unused"),
        }
    }

    #[test]
    fn the_table_gives_ratios_and_the_speed_up_from_threads() {
        let row = |threads, flint, torch| Row {
            model: "mobilenetv2".into(),
            strategy: "finetune",
            backend: "flex".into(),
            threads,
            flint,
            torch,
        };
        let rows = [
            row(
                1,
                measured(6.0, Some(60.0), Some(400.0)),
                Some(measured(4.0, Some(40.0), Some(800.0))),
            ),
            row(2, measured(10.0, None, Some(410.0)), None),
        ];
        let table = markdown(
            &rows,
            &options(),
            Path::new("data"),
            ["0.1 0.2 0.3", "0.4 0.5 0.6"],
        );
        assert!(table.contains("| mobilenetv2 | finetune | flex | 1 | 6.0 | 4.0 | 1.50x | 60.0 | 40.0 | 1.50x | 400 | 800 | 0.50x | 50.00 % |"), "{table}");
        // No anchor and no val speed: dashes, never a made-up ratio.
        assert!(
            table.contains("| 2 | 10.0 | — | — | — | — | — | 410 | — | — |"),
            "{table}"
        );
        assert!(
            table.contains("2 threads / 1: train flint 1.67x"),
            "{table}"
        );
        assert!(
            table.contains("before: 0.1 0.2 0.3, after: 0.4 0.5 0.6"),
            "{table}"
        );
    }

    #[test]
    fn a_limit_takes_classes_in_turn_and_refuses_to_leave_one_out() {
        let dir = tempfile_dir("subset");
        for split in ["train", "val"] {
            for (class, n) in [("ants", 3), ("bees", 2)] {
                let d = dir.join("data").join(split).join(class);
                std::fs::create_dir_all(&d).unwrap();
                for i in 0..n {
                    std::fs::write(d.join(format!("{i}.jpg")), b"x").unwrap();
                }
            }
        }
        let out = subset(&dir.join("data"), 3, &dir.join("out")).unwrap();
        let count = |split: &str, class: &str| {
            std::fs::read_dir(out.join(split).join(class))
                .unwrap()
                .count()
        };
        assert_eq!((count("train", "ants"), count("train", "bees")), (2, 1));
        assert_eq!((count("val", "ants"), count("val", "bees")), (2, 1));
        let err = subset(&dir.join("data"), 1, &dir.join("out")).unwrap_err();
        assert!(err.to_string().contains("without images"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A fresh folder under the system's temporary directory.
    fn tempfile_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("xtask-bench-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn the_load_average_has_three_figures() {
        let load = load_average();
        assert!(load == "unknown" || load.split(' ').count() == 3, "{load}");
    }
}
