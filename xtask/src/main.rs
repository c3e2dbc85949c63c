//! `cargo xtask`: the project's tasks, thin wrappers over flint's library functions.

mod bench;
mod bench_finetune;
mod models;
mod onnx_parity;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use flint_data::{KnownDataset, Locator};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "flint's project tasks")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs every NAME.onnx in a folder against NAME.reference.safetensors (eval output,
    /// gradients, train-mode output, running statistics); fails above 1e-4 relative error.
    OnnxParity {
        /// The folder, e.g. ../shared/models/onnx-fixtures.
        dir: PathBuf,
    },
    /// Find, check and fetch the data sets.
    Data {
        #[command(subcommand)]
        command: DataCommand,
    },
    /// The main job: build `flint` (the dev profile, the build `cargo test` shares) and train
    /// the reference CNN on Fashion-MNIST for 10 epochs on the CPU. Extra arguments go to `flint train` (e.g. --epochs 1 --seed 1).
    /// `FLINT_BIN=<path>` runs that `flint` binary instead of building one.
    Train {
        /// Arguments for `flint train`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// The throughput protocols of reference.md, flint beside PyTorch when `import torch` works;
    /// writes bench.md and bench.json. `--workload reference`: full Fashion-MNIST epochs of the
    /// reference models (shared/anchors/torch_reference.py). `--workload finetune`: protocol F1,
    /// fine-tuning and a frozen backbone without feature cache on hymenoptera
    /// (shared/anchors/torch_finetune.py).
    Bench {
        /// reference (mlp/cnn on Fashion-MNIST) or finetune (protocol F1).
        #[arg(long, default_value = "reference", value_parser = ["reference", "finetune"])]
        workload: String,
        /// Backends: flex, ndarray, wgpu (comma-separated; default flex,ndarray for the
        /// reference workload, flex for finetune).
        #[arg(long = "backend", value_delimiter = ',')]
        backends: Vec<String>,
        /// Thread counts (comma-separated); PyTorch runs with the same ones.
        #[arg(long, value_delimiter = ',', default_value = "1,2")]
        threads: Vec<u16>,
        /// Models (comma-separated): cnn, mlp (default both) for the reference workload;
        /// mobilenetv2, efficientnet-lite0 (default both) for finetune.
        #[arg(long, value_delimiter = ',')]
        models: Vec<String>,
        /// Epochs per run (more than one shows whether memory grows between epochs).
        #[arg(long, default_value_t = 1)]
        epochs: usize,
        /// Train on this many images instead of all 60,000 (finetune: this many images of each
        /// split); a quick check, not the protocol.
        #[arg(long)]
        limit: Option<usize>,
        /// Do not run the PyTorch anchor.
        #[arg(long)]
        no_torch: bool,
        /// The Python interpreter that has torch and numpy (finetune: and torchvision; timm for EfficientNet-Lite0).
        #[arg(long, env = "FLINT_PYTHON", default_value = "python3")]
        python: String,
        /// Where bench.md, bench.json and the run directories go (default runs/bench, or
        /// runs/bench-finetune).
        #[arg(long)]
        output: Option<PathBuf>,
    },
    /// Fetch and check the pretrained model files (ONNX, PyTorch, safetensors).
    Models {
        #[command(subcommand)]
        command: ModelsCommand,
    },
    /// Reproducible experiments that write a markdown table into runs/<name>/.
    Experiment {
        #[command(subcommand)]
        experiment: Experiment,
    },
}

#[derive(Subcommand)]
enum Experiment {
    /// The accuracy protocol of reference.md: cnn 10 epochs and mlp 20 epochs on Fashion-MNIST,
    /// cnn 10 epochs on MNIST, over several seeds; mean test accuracy and time per epoch.
    Reference {
        /// Seeds per configuration.
        #[arg(long, default_value_t = 3)]
        seeds: u64,
        /// Only these rows (fashion-cnn, fashion-mlp, mnist-cnn); default all.
        #[arg(long, value_delimiter = ',')]
        only: Vec<String>,
        /// A quick check: 1 epoch on 2,000 images per run (not the protocol).
        #[arg(long)]
        quick: bool,
    },
    /// Protocol T2 of reference.md (Fashion-MNIST classes 0-4 -> 5-9, N = 10/50/100 per class,
    /// 5 seeds): from scratch, frozen backbone, fine-tuning, with and without head dropout.
    /// Runs `flint experiment transfer` (release build, or `FLINT_BIN`) and prints its table.
    Transfer(FlintExperiment),
    /// Srivastava et al. 2014, Table 9: no regularisation, L2, L1, max-norm, dropout, dropout +
    /// L2, dropout + max-norm on an MLP, MNIST and Fashion-MNIST (`flint experiment
    /// regularizers`).
    Regularizers(FlintExperiment),
    /// k-fold cross-validation of the dropout rate p = 0 ... 0.6 for the reference MLP and CNN
    /// (`flint experiment dropout-rate`).
    DropoutRate(FlintExperiment),
    /// Ioffe & Szegedy 2015, Figure 1: sigmoid MLP with and without BN (and BN at 5x the rate);
    /// the reference CNN with and without BN (`flint experiment batchnorm`).
    Batchnorm(FlintExperiment),
    /// MC-dropout with k = 1 ... 100 samples against weight scaling: accuracy, NLL, ECE and a
    /// reliability diagram (`flint experiment mc-dropout`).
    McDropout(FlintExperiment),
    /// Test accuracy with and without dropout from 100 to 60,000 MNIST images (`flint
    /// experiment small-data`).
    SmallData(FlintExperiment),
}

/// The arguments of an experiment run through the `flint` binary.
#[derive(clap::Args)]
struct FlintExperiment {
    /// A seconds-long smoke run, not the result.
    #[arg(long)]
    quick: bool,
    /// Output folder (default runs/<name> or runs/<name>-quick); a rerun reuses finished runs.
    #[arg(long)]
    output: Option<PathBuf>,
    /// More arguments for `flint experiment <name>` (e.g. --seeds 3, --config FILE).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    args: Vec<String>,
}

#[derive(Subcommand)]
enum ModelsCommand {
    /// Download the model files that have a public source, verifying their SHA-256, into
    /// ~/.cache/flint/models (searched by the build and by `flint`); rebuild afterwards.
    Fetch {
        /// Only files whose names start with these (e.g. mnist-cnn-bn); default all.
        files: Vec<String>,
        /// Download into this folder instead.
        #[arg(long)]
        into: Option<PathBuf>,
    },
    /// Check that a models folder (default $FLINT_MODELS, else the cache) holds every file with
    /// the right checksum.
    Check {
        /// The folder to check.
        dir: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum DataCommand {
    /// List each known data set, where it was found (or why not) and its sample counts.
    Check {
        /// Fail (exit 1) unless these data sets are found and readable (comma-separated).
        #[arg(long, value_delimiter = ',')]
        require: Vec<KnownDataset>,
        /// Also compare file contents with the official SHA-256 checksums.
        #[arg(long)]
        verify: bool,
    },
    /// Download data sets into the user cache, verifying their checksums.
    Fetch {
        /// Which data sets (default: all that can be downloaded).
        datasets: Vec<KnownDataset>,
        /// Download into this folder instead of the user cache.
        #[arg(long)]
        into: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Data { command } => match command {
            DataCommand::Check { require, verify } => data_check(&require, verify),
            DataCommand::Fetch { datasets, into } => data_fetch(&datasets, into),
        },
        Command::Train { args } => train(&args),
        Command::OnnxParity { dir } => onnx_parity::run(&root(), &dir),
        Command::Models { command } => match command {
            ModelsCommand::Fetch { files, into } => models::fetch(into, &files),
            ModelsCommand::Check { dir } => models::check(dir),
        },
        Command::Bench {
            workload,
            backends,
            threads,
            models,
            epochs,
            limit,
            no_torch,
            python,
            output,
        } => {
            let or = |given: Vec<String>, default: &[&str]| {
                if given.is_empty() {
                    default.iter().map(|s| s.to_string()).collect()
                } else {
                    given
                }
            };
            if no_torch {
                eprintln!("PyTorch anchor skipped (--no-torch)");
            }
            if workload == "finetune" {
                bench_finetune::bench(
                    &root(),
                    &bench_finetune::FinetuneBenchOptions {
                        backends: or(backends, &["flex"]),
                        threads,
                        models: or(models, &["mobilenetv2", "efficientnet-lite0"]),
                        epochs,
                        limit,
                        torch: !no_torch,
                        python,
                        output: output.unwrap_or_else(|| "runs/bench-finetune".into()),
                    },
                )
            } else {
                bench::bench(
                    &root(),
                    &bench::BenchOptions {
                        backends: or(backends, &["flex", "ndarray"]),
                        threads,
                        models: or(models, &["cnn", "mlp"]),
                        epochs,
                        limit,
                        torch: !no_torch,
                        python,
                        output: output.unwrap_or_else(|| "runs/bench".into()),
                    },
                )
            }
            .map(|()| ExitCode::SUCCESS)
        }
        Command::Experiment { experiment } => match experiment {
            Experiment::Reference { seeds, only, quick } => {
                experiment_reference(seeds, &only, quick)
            }
            Experiment::Transfer(e) => flint_experiment("transfer", e),
            Experiment::Regularizers(e) => flint_experiment("regularizers", e),
            Experiment::DropoutRate(e) => flint_experiment("dropout-rate", e),
            Experiment::Batchnorm(e) => flint_experiment("batchnorm", e),
            Experiment::McDropout(e) => flint_experiment("mc-dropout", e),
            Experiment::SmallData(e) => flint_experiment("small-data", e),
        },
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn data_check(require: &[KnownDataset], verify: bool) -> anyhow::Result<ExitCode> {
    let locator = Locator::new();
    println!("Data sets (discovery: $FLINT_DATA, ./data, /usr/share/datasets, user cache):\n");
    let mut missing = Vec::new();
    for dataset in KnownDataset::ALL {
        let check = dataset.check(&locator);
        println!("{check}");
        let has_checksums = dataset.spec().files.iter().any(|f| !f.sha256.is_empty());
        if verify && !has_checksums && check.located.is_some() {
            println!("{:<14} no published per-file checksums to verify", "");
        } else if verify && let Some(located) = &check.located {
            match located.verify(dataset.spec()) {
                Ok(differ) if differ.is_empty() => println!("{:<14} checksums ok", ""),
                Ok(differ) => println!(
                    "{:<14} CHECKSUM MISMATCH: {} differ from the official files",
                    "",
                    differ.join(", ")
                ),
                Err(e) => println!("{:<14} cannot verify: {e}", ""),
            }
        }
        if require.contains(&dataset) && !check.is_ok() {
            missing.push(dataset.name());
        }
        println!();
    }
    if missing.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!(
            "error: required data set(s) missing: {}",
            missing.join(", ")
        );
        Ok(ExitCode::FAILURE)
    }
}

fn data_fetch(datasets: &[KnownDataset], into: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let wanted: Vec<KnownDataset> = if datasets.is_empty() {
        KnownDataset::ALL.to_vec()
    } else {
        datasets.to_vec()
    };
    let mut locator = Locator::new();
    if let Some(dir) = into {
        locator = locator
            .env_root(None)
            .local_root(None)
            .system_roots(vec![])
            .cache_root(Some(dir));
    }
    let mut failed = false;
    for dataset in wanted {
        match locator.locate(dataset.spec()) {
            Ok(found) => println!(
                "{:<14} {} ({})",
                dataset.name(),
                found.dir.display(),
                found.origin
            ),
            Err(e) => {
                failed = true;
                eprintln!("{:<14} {e}", dataset.name());
            }
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// The workspace root (xtask lives one level below it).
fn root() -> PathBuf {
    // `cargo run` sets CARGO_MANIFEST_DIR at run time: prefer it to the compile-time value, which
    // is wrong when another checkout built this binary into a shared target directory.
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
        .parent()
        .expect("xtask is inside the workspace")
        .to_path_buf()
}

/// Which cargo profile builds `flint`.
#[derive(Clone, Copy, PartialEq)]
enum Profile {
    /// The dev profile `cargo test` uses: the main job shares the tests' build (flint's hot
    /// crates are optimised in it, see the root Cargo.toml).
    Dev,
    /// Release: benchmarks and experiments.
    Release,
}

/// Builds the release `flint` binary with these extra backend features and returns its path.
fn build_flint(features: &[&str]) -> anyhow::Result<PathBuf> {
    build_flint_profile(Profile::Release, features)
}

/// Builds `flint` in `profile` with these extra backend features and returns its path.
fn build_flint_profile(profile: Profile, features: &[&str]) -> anyhow::Result<PathBuf> {
    let (flag, dir) = match profile {
        Profile::Dev => (None, "debug"),
        Profile::Release => (Some("--release"), "release"),
    };
    eprintln!(
        "building flint ({})...",
        if profile == Profile::Dev {
            "dev profile, shared with cargo test"
        } else {
            "release"
        }
    );
    let mut cmd = std::process::Command::new(std::env::var("CARGO").unwrap_or("cargo".into()));
    cmd.args(["build", "--quiet", "-p", "flint-cli", "--bin", "flint"]);
    cmd.args(flag);
    if !features.is_empty() {
        cmd.args(["--features", &features.join(",")]);
    }
    let status = cmd.current_dir(root()).status()?;
    anyhow::ensure!(status.success(), "building flint failed");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"));
    Ok(root().join(target).join(dir).join("flint"))
}

fn train(args: &[String]) -> anyhow::Result<ExitCode> {
    let flint = match std::env::var_os("FLINT_BIN") {
        Some(_) => flint_binary()?,
        None => build_flint_profile(Profile::Dev, &[])?,
    };
    // Say where the data will come from before spending minutes on it.
    let locator = Locator::new();
    if locator.find(&flint_data::FASHION_MNIST).is_err() && !args.iter().any(|a| a == "--dataset") {
        eprintln!(
            "Fashion-MNIST is not on this machine yet; flint will download it (or install it with \
             `sudo apt-get install dataset-fashion-mnist`)."
        );
    }
    let start = std::time::Instant::now();
    let status = std::process::Command::new(&flint)
        .arg("train")
        .args(args)
        .status()?;
    eprintln!("wall time: {:.1} s", start.elapsed().as_secs_f64());
    Ok(if status.success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// One row of the reference protocol.
struct ProtocolRow {
    key: &'static str,
    dataset: &'static str,
    model: &'static str,
    epochs: usize,
    anchor: &'static str,
    target: f64,
}

const PROTOCOL: [ProtocolRow; 3] = [
    ProtocolRow {
        key: "fashion-cnn",
        dataset: "fashion-mnist",
        model: "cnn",
        epochs: 10,
        anchor: "2-conv CNN 91.6-92.5 %, 2-conv + BN 93.4 %",
        target: 0.925,
    },
    ProtocolRow {
        key: "fashion-mlp",
        dataset: "fashion-mnist",
        model: "mlp",
        epochs: 20,
        anchor: "MLP 256-128-100 88.3 %",
        target: 0.885,
    },
    ProtocolRow {
        key: "mnist-cnn",
        dataset: "mnist",
        model: "cnn",
        epochs: 10,
        anchor: "Keras CNN 99.25 %",
        target: 0.992,
    },
];

fn experiment_reference(seeds: u64, only: &[String], quick: bool) -> anyhow::Result<ExitCode> {
    let flint = build_flint(&[])?;
    let out_root = root().join("runs").join(if quick {
        "reference-quick"
    } else {
        "reference"
    });
    std::fs::create_dir_all(&out_root)?;
    let mut table = String::from(
        "| data set | model | epochs | seeds | test accuracy (mean ± std) | per seed | target | anchor | s/epoch (train, median) |\n| --- | --- | ---: | ---: | ---: | --- | ---: | --- | ---: |\n",
    );
    for row in PROTOCOL
        .iter()
        .filter(|r| only.is_empty() || only.iter().any(|o| o == r.key))
    {
        let epochs = if quick { 1 } else { row.epochs };
        let mut accuracies = Vec::new();
        let mut epoch_secs = Vec::new();
        for seed in 0..seeds {
            let dir = out_root.join(format!("{}-seed{seed}", row.key));
            let result = dir.join("result.json");
            if !result.exists() {
                let mut cmd = std::process::Command::new(&flint);
                if dir.join("config.json").exists() {
                    cmd.args(["train", "--resume"]).arg(&dir);
                } else {
                    cmd.args(["train", "--model", row.model, "--dataset", row.dataset])
                        .args(["--epochs", &epochs.to_string(), "--seed", &seed.to_string()])
                        .arg("--output")
                        .arg(&dir);
                    if quick {
                        cmd.args(["--limit", "2000", "--test-limit", "2000"]);
                    }
                }
                eprintln!("{} seed {seed}: {}", row.key, dir.display());
                let status = cmd.status()?;
                anyhow::ensure!(status.success(), "run {} failed", dir.display());
            }
            let value: serde_json::Value = serde_json::from_slice(&std::fs::read(&result)?)?;
            accuracies.push(value["test_accuracy"].as_f64().unwrap_or(f64::NAN));
            let csv = std::fs::read_to_string(dir.join("metrics.csv"))?;
            for line in csv.lines().skip(1) {
                if let Some(s) = line.split(',').nth(7).and_then(|v| v.parse::<f64>().ok()) {
                    epoch_secs.push(s);
                }
            }
        }
        let n = accuracies.len() as f64;
        let mean = accuracies.iter().sum::<f64>() / n;
        let std = (accuracies.iter().map(|a| (a - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0))
            .sqrt();
        let per_seed: Vec<String> = accuracies
            .iter()
            .map(|a| format!("{:.2}", a * 100.0))
            .collect();
        // The median: robust to an epoch slowed by another job on the machine.
        epoch_secs.sort_by(f64::total_cmp);
        let secs = epoch_secs
            .get(epoch_secs.len() / 2)
            .copied()
            .unwrap_or(f64::NAN);
        table.push_str(&format!(
            "| {} | {} | {epochs} | {seeds} | {:.2} ± {:.2} % | {} | {}{:.1} % | {} | {secs:.1} |\n",
            row.dataset,
            row.model,
            mean * 100.0,
            std * 100.0,
            per_seed.join(", "),
            if mean >= row.target { "met ≥ " } else { "missed ≥ " },
            row.target * 100.0,
            row.anchor,
        ));
    }
    let path = out_root.join("results.md");
    flint_io::fs::write_atomic(&path, table.as_bytes())?;
    println!("{table}");
    println!("written to {}", path.display());
    Ok(ExitCode::SUCCESS)
}

/// `FLINT_BIN` when set (an installed `flint`, or CI's test build), else the release build.
fn flint_binary() -> anyhow::Result<PathBuf> {
    flint_binary_with(&[])
}

/// `FLINT_BIN` when set, else the release build with these extra backend features. A given
/// binary is used as it is: `flint` itself says which backend it lacks.
fn flint_binary_with(features: &[&str]) -> anyhow::Result<PathBuf> {
    match std::env::var_os("FLINT_BIN") {
        Some(bin) => {
            let bin = PathBuf::from(bin);
            anyhow::ensure!(bin.is_file(), "FLINT_BIN={} is not a file", bin.display());
            Ok(bin)
        }
        None => build_flint(features),
    }
}

/// Runs `flint experiment <name>` into its output folder and prints its tables and wall time.
fn flint_experiment(name: &str, e: FlintExperiment) -> anyhow::Result<ExitCode> {
    let flint = flint_binary()?;
    let output = e.output.unwrap_or_else(|| {
        root().join("runs").join(if e.quick {
            format!("{name}-quick")
        } else {
            name.to_string()
        })
    });
    let start = std::time::Instant::now();
    let mut cmd = std::process::Command::new(&flint);
    cmd.args(["experiment", name, "--output"]).arg(&output);
    if e.quick {
        cmd.arg("--quick");
    }
    let status = cmd.args(&e.args).status()?;
    let wall = start.elapsed().as_secs_f64();
    anyhow::ensure!(status.success(), "flint experiment {name} failed");
    let md = std::fs::read_to_string(output.join("results.md"))?;
    // The tables: everything up to T2's per-source-model details.
    let tables = md.split("## Source models").next().unwrap_or(&md);
    println!("{}", tables.trim_end());
    println!("\nwall time: {wall:.0} s ({:.1} min)", wall / 60.0);
    println!("written to {}", output.join("results.md").display());
    Ok(ExitCode::SUCCESS)
}
