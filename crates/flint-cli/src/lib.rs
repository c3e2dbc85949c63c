//! The library behind the `flint` command: argument types, backend selection and the
//! command implementations. `main.rs` only parses and dispatches.
//!
//! The command line is a clap [`Cli`]: a program can parse and check a `flint` command line
//! before running it.
//!
//! ```
//! use clap::Parser;
//! use flint_cli::{Cli, Command};
//!
//! let cli = Cli::try_parse_from(["flint", "train", "--model", "mlp", "--epochs", "3"])?;
//! assert!(matches!(cli.command, Command::Train(_)));
//! // Bad values are refused with clap's message, before anything runs.
//! let err = Cli::try_parse_from(["flint", "train", "--threads", "0"]).unwrap_err();
//! assert!(err.to_string().contains("--threads"));
//! # Ok::<(), clap::Error>(())
//! ```

pub mod args;
pub mod devices;
pub mod experiment;
pub mod train;
pub mod transfer;

pub use args::{OptimArgs, OptimizerArg, OutputArgs, ScheduleArg};
pub use train::{TrainArgs, run_train};

use std::path::PathBuf;

use burn::prelude::*;
use clap::{Args, Parser, Subcommand, ValueEnum};
use flint_models::ModelConfig;
use flint_train::TrainConfig;

/// flint: train, evaluate and use image classifiers on burn.
#[derive(Parser, Debug)]
#[command(name = "flint", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Train a model; the last line printed is `test accuracy: <fraction>`.
    Train(Box<TrainArgs>),
    /// Evaluate a trained model on its data set's test split.
    Eval(EvalArgs),
    /// Classify image files with a trained model (top-k classes with probabilities).
    Predict(PredictArgs),
    /// Show a model summary, the backends compiled in and the devices each finds.
    Info(InfoArgs),
    /// Reuse a pretrained network on an image folder; the last line is `val accuracy: <fraction>`.
    Finetune(Box<transfer::FinetuneArgs>),
    /// List the pretrained models and where each was found.
    Models(transfer::ModelsArgs),
    /// Run one of flint's reproducible experiments; the last line is its results.md.
    Experiment(experiment::ExperimentArgs),
}

/// Compute backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Backend {
    /// burn-flex: pure-Rust CPU backend (SIMD + threads), the default.
    Flex,
    /// burn-ndarray: the older CPU backend (build with `--features ndarray`).
    Ndarray,
    /// burn-wgpu: GPU through Vulkan/Metal/DX12 (build with `--features wgpu`).
    Wgpu,
    /// burn's CUDA backend: NVIDIA GPUs (build with `--features cuda`; needs the CUDA driver at
    /// run time).
    Cuda,
}

impl Backend {
    /// The backends this binary was built with.
    pub fn compiled() -> Vec<Backend> {
        let mut list = vec![Backend::Flex];
        if cfg!(feature = "ndarray") {
            list.push(Backend::Ndarray);
        }
        if cfg!(feature = "wgpu") {
            list.push(Backend::Wgpu);
        }
        if cfg!(feature = "cuda") {
            list.push(Backend::Cuda);
        }
        list
    }

    /// Its name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Flex => "flex",
            Backend::Ndarray => "ndarray",
            Backend::Wgpu => "wgpu",
            Backend::Cuda => "cuda",
        }
    }

    /// The device, or why this binary cannot provide it.
    pub fn device(self) -> Result<Device, String> {
        match self {
            Backend::Flex => Ok(Device::flex()),
            #[cfg(feature = "ndarray")]
            #[allow(deprecated)]
            // burn-ndarray is deprecated upstream; flint keeps it selectable.
            Backend::Ndarray => Ok(Device::ndarray()),
            #[cfg(feature = "wgpu")]
            Backend::Wgpu => Ok(Device::wgpu(burn::tensor::DeviceKind::DefaultDevice)),
            #[cfg(feature = "cuda")]
            Backend::Cuda => Ok(Device::cuda(0)),
            #[allow(unreachable_patterns)]
            other => Err(format!(
                "backend `{}` is not compiled into this binary; rebuild with `--features {}` (compiled: {})",
                other.name(),
                other.name(),
                Backend::compiled()
                    .iter()
                    .map(|b| b.name())
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        }
    }
}

impl Backend {
    /// The devices `--devices` names, for data-parallel training; none named is the backend's
    /// default device. A CPU backend has one device (its cores are `--threads`); a GPU backend
    /// lists what burn finds on this machine, and an index past them is an error that says how
    /// many there are.
    pub fn devices(self, indices: &[usize]) -> Result<Vec<Device>, String> {
        if indices.is_empty() {
            return Ok(vec![self.device()?]);
        }
        if let Some(i) = indices
            .iter()
            .enumerate()
            .find_map(|(k, i)| indices[..k].contains(i).then_some(i))
        {
            return Err(format!("--devices lists device {i} twice"));
        }
        let found = self.device_list()?;
        match indices.iter().find(|&&i| i >= found.len()) {
            None => Ok(indices.iter().map(|&i| found[i].clone()).collect()),
            Some(_) if matches!(self, Backend::Flex | Backend::Ndarray) => Err(format!(
                "the {} backend has one device, the CPU, whose cores --threads already uses; \
                 data-parallel training over several devices needs a GPU backend \
                 (--backend cuda or wgpu, built with --features cuda or wgpu)",
                self.name()
            )),
            Some(i) => Err(format!(
                "--devices asks for {} device {i}, but burn found {} on this machine{}",
                self.name(),
                found.len(),
                if found.is_empty() {
                    String::new()
                } else {
                    format!(" (0 to {})", found.len() - 1)
                }
            )),
        }
    }

    /// Every device burn finds for this backend.
    fn device_list(self) -> Result<Vec<Device>, String> {
        use burn::tensor::DeviceType;
        let kind = match self {
            Backend::Flex => DeviceType::Flex,
            #[cfg(feature = "ndarray")]
            Backend::Ndarray => DeviceType::NdArray,
            #[cfg(feature = "wgpu")]
            Backend::Wgpu => DeviceType::Wgpu,
            #[cfg(feature = "cuda")]
            Backend::Cuda => DeviceType::Cuda,
            #[allow(unreachable_patterns)]
            other => return other.device().map(|d| vec![d]),
        };
        Ok(Device::enumerate(kind).to_vec())
    }
}

/// Options shared by the commands that compute.
#[derive(Args, Debug, Clone)]
pub struct ComputeArgs {
    /// Compute backend.
    #[arg(long, value_enum, default_value = "flex")]
    pub backend: Backend,
    /// CPU threads (default: all cores).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    pub threads: Option<u16>,
    /// Folder holding the data set's files (only this folder is searched).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Never download data.
    #[arg(long)]
    pub offline: bool,
    /// Compute with IEEE denormal floats instead of flushing them to zero (slower: Adam's
    /// moment estimates decay into denormals, which x86 computes on 100x slower).
    #[arg(long)]
    pub keep_denormals: bool,
}

impl ComputeArgs {
    /// Builds the compute threads (flushing denormals to zero unless `--keep-denormals`, see
    /// `flint_train::cpu`) and returns the device. The `flint` command's own set-up: call it once,
    /// before computing.
    pub fn setup(&self) -> Result<Device, String> {
        let mut threads = flint_train::cpu::ComputeThreads::new();
        if let Some(n) = self.threads {
            threads = threads.threads(n.into());
        }
        if !self.keep_denormals {
            // SAFETY: this is the `flint` program's set-up, before it computes anything, and the
            // user can turn it off; flint's computations do not rely on denormals.
            threads = unsafe { threads.flush_denormals() };
        }
        // Nothing has built the pool before this point, so a failure means its threads could not
        // be started; rayon then refuses every later use, so the command stops here.
        threads.build_global().map_err(|e| match self.threads {
            Some(_) => format!("{e}; ask for fewer with --threads"),
            None => e.to_string(),
        })?;
        self.backend.device()
    }

    /// The data locator these options describe.
    pub fn locator(&self) -> flint_data::Locator {
        let mut locator = flint_data::Locator::new();
        if let Some(dir) = &self.data_dir {
            locator = locator.data_dir(dir);
        }
        if self.offline {
            locator = locator.offline();
        }
        locator
    }
}

/// `flint eval`.
#[derive(Args, Debug)]
pub struct EvalArgs {
    /// A run directory or a checkpoint folder in one.
    #[arg(long)]
    pub checkpoint: PathBuf,
    #[command(flatten)]
    pub compute: ComputeArgs,
}

/// `flint predict`.
#[derive(Args, Debug)]
pub struct PredictArgs {
    /// A run directory or a checkpoint folder in one.
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// How many classes to show per image.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..))]
    pub top_k: u16,
    /// Image files (PNG, JPEG, GIF, ...).
    #[arg(required = true)]
    pub images: Vec<PathBuf>,
    #[command(flatten)]
    pub compute: ComputeArgs,
}

/// `flint info`.
#[derive(Args, Debug)]
pub struct InfoArgs {
    /// Reference model to summarise: mlp or cnn.
    #[arg(long, default_value = "cnn")]
    pub model: String,
    /// Summarise the model of this TrainConfig JSON instead.
    #[arg(long)]
    pub config: Option<PathBuf>,
}

/// Runs `flint eval`.
pub fn run_eval(args: &EvalArgs) -> Result<(), String> {
    let device = args.compute.setup()?;
    if flint_transfer::is_finetune_run(&args.checkpoint) {
        return transfer::eval(args, &device);
    }
    let (config, model) =
        flint_train::load_trained(&args.checkpoint, &device).map_err(|e| e.to_string())?;
    let data =
        flint_train::load_data(&config, &args.compute.locator()).map_err(|e| e.to_string())?;
    let report = flint_train::evaluate(&model, &data.test, &device).map_err(|e| e.to_string())?;
    println!(
        "{} on {} test ({} images)",
        config.model.kind(),
        config.dataset,
        report.confusion.total()
    );
    for (name, acc) in report.class_names.iter().zip(&report.per_class_accuracy) {
        println!("  {name:<14} {:.2}%", acc * 100.0);
    }
    println!("test loss: {:.4}", report.loss);
    println!("test accuracy: {:.4}", report.accuracy);
    Ok(())
}

/// Runs `flint predict`.
pub fn run_predict(args: &PredictArgs) -> Result<(), String> {
    let device = args.compute.setup()?;
    if flint_transfer::is_finetune_run(&args.checkpoint) {
        return transfer::predict(args, &device);
    }
    let (config, model) =
        flint_train::load_trained(&args.checkpoint, &device).map_err(|e| e.to_string())?;
    let (channels, size) = match &config.model {
        ModelConfig::Mlp(m) => {
            // An MLP trained on square grey images: recover the side from the input size.
            let side = (m.input_size as f64).sqrt().round() as usize;
            if side * side == m.input_size {
                (1, side)
            } else {
                let side = ((m.input_size / 3) as f64).sqrt().round() as usize;
                (3, side)
            }
        }
        ModelConfig::Cnn(m) => (m.in_channels, m.image_size),
    };
    let class_names = class_names(&config.dataset);
    classify_files(
        &args.images,
        args.top_k,
        |c| class_names.get(c).cloned().unwrap_or_else(|| c.to_string()),
        |path| {
            flint_data::image_folder::load_for_model_checked(path, channels, size)
                .map_err(|e| e.to_string())
        },
        |pixels| {
            let x =
                Tensor::<4>::from_data(TensorData::new(pixels, [1, channels, size, size]), &device);
            model.forward(x)
        },
    )
}

/// Classifies each image file and prints its `top_k` classes with their probabilities. A file
/// that cannot be read is an error line (and the command fails at the end, after the others);
/// one that decoded but is damaged (a truncated JPEG) is classified with a warning, since the
/// model saw a partly grey picture.
pub fn classify_files(
    images: &[PathBuf],
    top_k: u16,
    class_name: impl Fn(usize) -> String,
    load: impl Fn(&std::path::Path) -> Result<flint_data::Decoded<Vec<f32>>, String>,
    logits: impl Fn(Vec<f32>) -> Tensor<2>,
) -> Result<(), String> {
    let mut failed = 0;
    for path in images {
        match load(path) {
            Ok(decoded) => {
                if let Some(warning) = &decoded.warning {
                    eprintln!("warning: {}: {warning}", path.display());
                }
                let probs: Vec<f32> = burn::tensor::activation::softmax(logits(decoded.value), 1)
                    .into_data()
                    .convert::<f32>()
                    .try_to_vec::<f32>()
                    .map_err(|e| format!("{e:?}"))?;
                let mut ranked: Vec<(usize, f32)> = probs.into_iter().enumerate().collect();
                ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
                let top: Vec<String> = ranked
                    .iter()
                    .take(usize::from(top_k))
                    .map(|(c, p)| format!("{} {:.1}%", class_name(*c), p * 100.0))
                    .collect();
                println!("{}: {}", path.display(), top.join(", "));
            }
            Err(e) => {
                failed += 1;
                eprintln!("error: {e}");
            }
        }
    }
    if failed > 0 {
        return Err(format!(
            "{failed} of {} images could not be read",
            images.len()
        ));
    }
    Ok(())
}

fn class_names(dataset: &str) -> Vec<String> {
    let names: &[&str] = match dataset.parse::<flint_data::KnownDataset>() {
        Ok(flint_data::KnownDataset::FashionMnist) => &flint_data::FASHION_MNIST_CLASSES,
        Ok(flint_data::KnownDataset::Mnist) => &flint_data::MNIST_CLASSES,
        Ok(flint_data::KnownDataset::Cifar10) => &flint_data::CIFAR10_CLASSES,
        _ => &[],
    };
    names.iter().map(|s| s.to_string()).collect()
}

/// Runs `flint info`.
pub fn run_info(args: &InfoArgs) -> Result<(), String> {
    let device = Device::flex();
    let (model_config, input) = match &args.config {
        Some(path) => {
            let config = TrainConfig::load_checked(path).map_err(|e| e.to_string())?;
            let input = match &config.model {
                ModelConfig::Cnn(c) => [1, c.in_channels, c.image_size, c.image_size],
                ModelConfig::Mlp(m) => [1, 1, 1, m.input_size],
            };
            (config.model, input)
        }
        None => (
            ModelConfig::reference(&args.model).map_err(|e| e.to_string())?,
            [1, 1, 28, 28],
        ),
    };
    model_config.validate().map_err(|e| e.to_string())?;
    flint_train::memory::check_model_memory(
        &model_config,
        flint_train::memory::MemoryUse::Inference,
    )
    .map_err(|e| e.to_string())?;
    let model = model_config.init(&device);
    println!("{}", model.summary(input, &device));
    println!();
    println!("backends compiled in, and the devices each finds:");
    for backend in Backend::compiled() {
        let note = match backend {
            Backend::Flex => "CPU, the default",
            Backend::Ndarray => "CPU (deprecated upstream; flex is faster)",
            Backend::Wgpu => "GPU through Vulkan/Metal/DX12",
            Backend::Cuda => "NVIDIA GPU through CUDA",
        };
        println!("  {:<8} {note}", backend.name());
        for device in devices::describe(backend) {
            println!("           - {device}");
        }
    }
    let missing: Vec<&str> = [Backend::Ndarray, Backend::Wgpu, Backend::Cuda]
        .into_iter()
        .filter(|b| !Backend::compiled().contains(b))
        .map(|b| b.name())
        .collect();
    if !missing.is_empty() {
        println!(
            "  (not compiled: {}; rebuild with --features <name>)",
            missing.join(", ")
        );
    }
    Ok(())
}

/// Dispatches a parsed command line.
pub fn run(cli: &Cli) -> Result<(), String> {
    match &cli.command {
        Command::Train(args) => run_train(args),
        Command::Eval(args) => run_eval(args),
        Command::Predict(args) => run_predict(args),
        Command::Info(args) => run_info(args),
        Command::Finetune(args) => transfer::run_finetune(args),
        Command::Models(args) => transfer::run_models(args),
        Command::Experiment(args) => experiment::run_experiment(args),
    }
}
