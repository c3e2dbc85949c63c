//! The library behind the `flint` command: argument types, backend selection and the
//! command implementations. `main.rs` only parses and dispatches.

pub mod devices;
pub mod experiment;
pub mod transfer;

use std::path::PathBuf;

use burn::prelude::*;
use clap::{Args, Parser, Subcommand, ValueEnum};
use flint_models::ModelConfig;
use flint_train::{
    EarlyStoppingConfig, OptimizerKind, ProgressMode, RegularizationConfig, RunOptions,
    ScheduleKind, TrainConfig, TrainError,
};

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
        list
    }

    /// Its name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Flex => "flex",
            Backend::Ndarray => "ndarray",
            Backend::Wgpu => "wgpu",
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

/// Optimisers on the command line.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum OptimizerArg {
    Sgd,
    Adam,
    Adamw,
}

/// Schedules on the command line.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ScheduleArg {
    Constant,
    Cosine,
    Step,
}

impl From<OptimizerArg> for OptimizerKind {
    fn from(arg: OptimizerArg) -> Self {
        match arg {
            OptimizerArg::Sgd => OptimizerKind::Sgd,
            OptimizerArg::Adam => OptimizerKind::Adam,
            OptimizerArg::Adamw => OptimizerKind::AdamW,
        }
    }
}

impl From<ScheduleArg> for ScheduleKind {
    fn from(arg: ScheduleArg) -> Self {
        match arg {
            ScheduleArg::Constant => ScheduleKind::Constant,
            ScheduleArg::Cosine => ScheduleKind::Cosine,
            ScheduleArg::Step => ScheduleKind::Step,
        }
    }
}

/// `flint train`.
#[derive(Args, Debug)]
#[command(allow_negative_numbers = true)]
pub struct TrainArgs {
    /// Reference model: mlp or cnn (see reference.md).
    #[arg(long)]
    pub model: Option<String>,
    /// Data set: fashion-mnist, mnist or cifar-10.
    #[arg(long)]
    pub dataset: Option<String>,
    /// Epochs.
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Batch size.
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Optimiser.
    #[arg(long, value_enum)]
    pub optimizer: Option<OptimizerArg>,
    /// Peak learning rate.
    #[arg(long)]
    pub lr: Option<f64>,
    /// SGD momentum.
    #[arg(long)]
    pub momentum: Option<f64>,
    /// Nesterov momentum (SGD).
    #[arg(long)]
    pub nesterov: bool,
    /// Weight decay.
    #[arg(long)]
    pub weight_decay: Option<f64>,
    /// Learning-rate schedule.
    #[arg(long, value_enum)]
    pub schedule: Option<ScheduleArg>,
    /// Linear warm-up, in epochs.
    #[arg(long)]
    pub warmup: Option<f64>,
    /// Step schedule: epochs between decays.
    #[arg(long)]
    pub step_size: Option<usize>,
    /// Step schedule: decay factor.
    #[arg(long)]
    pub gamma: Option<f64>,
    /// Clip the global gradient norm.
    #[arg(long)]
    pub clip_grad_norm: Option<f64>,
    /// L1 penalty on the weights (added to the loss: l1 * sum |w|).
    #[arg(long)]
    pub l1: Option<f64>,
    /// L2 penalty on the weights (added to the loss: l2 * sum w^2; Keras' l2(..)).
    #[arg(long)]
    pub l2: Option<f64>,
    /// Max-norm constraint on each unit's incoming weight vector (Srivastava et al. 2014).
    #[arg(long)]
    pub max_norm: Option<f64>,
    /// Dropout rate (MLP: after every hidden layer; CNN: before the classifier).
    #[arg(long)]
    pub dropout: Option<f64>,
    /// Seed of everything random.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Hold out this fraction of the training set for validation.
    #[arg(long)]
    pub val_fraction: Option<f64>,
    /// Train on a stratified subset of this many images.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Test on a stratified subset of this many images.
    #[arg(long)]
    pub test_limit: Option<usize>,
    /// Random-crop augmentation with this much padding.
    #[arg(long)]
    pub augment_pad: Option<usize>,
    /// Random horizontal flips.
    #[arg(long)]
    pub augment_flip: bool,
    /// Background data-loading threads.
    #[arg(long)]
    pub workers: Option<usize>,
    /// Stop after this many epochs without validation improvement.
    #[arg(long)]
    pub early_stopping: Option<usize>,
    /// A TrainConfig JSON file (e.g. a run's config.json); flags override its values.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Run directory (default: runs/<dataset>-<model>-<timestamp>/).
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// Continue the run in this directory from its last checkpoint, with the configuration it
    /// was started with (flags that would change it are refused).
    #[arg(long, conflicts_with_all = [
        "config", "output", "model", "dataset", "epochs", "batch_size", "optimizer", "lr",
        "momentum", "nesterov", "weight_decay", "schedule", "warmup", "step_size", "gamma",
        "clip_grad_norm", "l1", "l2", "max_norm", "dropout", "seed", "val_fraction", "limit",
        "test_limit", "augment_pad", "augment_flip", "workers", "early_stopping",
    ])]
    pub resume: Option<PathBuf>,
    /// Stop after this epoch, leaving a run that --resume continues (preemptible machines).
    #[arg(long)]
    pub stop_after: Option<usize>,
    /// Print only the final line.
    #[arg(long, conflicts_with = "json")]
    pub quiet: bool,
    /// Print one JSON object per epoch and one for the test result.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub compute: ComputeArgs,
}

impl TrainArgs {
    /// The run's configuration: the config file (or the reference model), then the flags.
    pub fn to_config(&self) -> Result<TrainConfig, String> {
        let mut config = match &self.config {
            Some(path) => TrainConfig::load_checked(path).map_err(|e| e.to_string())?,
            None => TrainConfig::new(
                ModelConfig::reference(self.model.as_deref().unwrap_or("cnn"))
                    .map_err(|e| e.to_string())?,
            ),
        };
        if self.config.is_some()
            && let Some(model) = &self.model
        {
            config.model = ModelConfig::reference(model).map_err(|e| e.to_string())?;
        }
        if let Some(d) = &self.dataset {
            config.dataset = d.clone();
        }
        if let Some(v) = self.epochs {
            config.epochs = v;
        }
        if let Some(v) = self.batch_size {
            config.batch_size = v;
        }
        let o = &mut config.optimizer;
        if let Some(v) = self.optimizer {
            o.kind = v.into();
        }
        if let Some(v) = self.lr {
            o.lr = v;
        }
        if let Some(v) = self.momentum {
            o.momentum = v;
        }
        if self.nesterov {
            o.nesterov = true;
        }
        if let Some(v) = self.weight_decay {
            o.weight_decay = v;
        }
        if self.clip_grad_norm.is_some() {
            o.clip_grad_norm = self.clip_grad_norm;
        }
        let s = &mut config.schedule;
        if let Some(v) = self.schedule {
            s.kind = v.into();
        }
        if let Some(v) = self.warmup {
            s.warmup_epochs = v;
        }
        if let Some(v) = self.step_size {
            s.step_size = v;
        }
        if let Some(v) = self.gamma {
            s.gamma = v;
        }
        if let Some(p) = self.dropout {
            config.model = config.model.with_dropout_rate(p);
        }
        if let Some(v) = self.seed {
            config.seed = v;
        }
        if let Some(v) = self.val_fraction {
            config.val_fraction = v;
        }
        if self.limit.is_some() {
            config.train_limit = self.limit;
        }
        if self.test_limit.is_some() {
            config.test_limit = self.test_limit;
        }
        if let Some(v) = self.augment_pad {
            config.augment_pad = v;
        }
        if self.augment_flip {
            config.augment_flip = true;
        }
        if let Some(v) = self.workers {
            config.workers = v;
        }
        if let Some(p) = self.early_stopping {
            config.early_stopping = Some(EarlyStoppingConfig::new(p));
        }
        if self.l1.is_some() || self.l2.is_some() || self.max_norm.is_some() {
            let r = config
                .regularization
                .get_or_insert_with(RegularizationConfig::new);
            if let Some(v) = self.l1 {
                r.l1 = v;
            }
            if let Some(v) = self.l2 {
                r.l2 = v;
            }
            if self.max_norm.is_some() {
                r.max_norm = self.max_norm;
            }
        }
        // Data sets with other image shapes adapt the reference models' input.
        if config.dataset.eq_ignore_ascii_case("cifar-10")
            || config.dataset.eq_ignore_ascii_case("cifar10")
        {
            match &mut config.model {
                ModelConfig::Mlp(m) if m.input_size == 784 => m.input_size = 3 * 32 * 32,
                ModelConfig::Cnn(m) if m.in_channels == 1 && m.image_size == 28 => {
                    m.in_channels = 3;
                    m.image_size = 32;
                }
                _ => {}
            }
        }
        config.validate().map_err(|e| e.to_string())?;
        Ok(config)
    }

    fn progress(&self) -> ProgressMode {
        if self.json {
            ProgressMode::Json
        } else if self.quiet {
            ProgressMode::Quiet
        } else {
            ProgressMode::Bar
        }
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

/// Runs `flint train`.
pub fn run_train(args: &TrainArgs) -> Result<(), String> {
    let device = args.compute.setup()?;
    let options = RunOptions {
        output: args.output.clone(),
        device,
        progress: args.progress(),
        locator: args.compute.locator(),
        stop_after: args.stop_after,
    };
    let result = match &args.resume {
        Some(dir) => flint_train::resume(dir, &options),
        None => {
            let config = args.to_config()?;
            flint_train::train(&config, &options)
        }
    };
    result.map(|_| ()).map_err(|e: TrainError| e.to_string())
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
        };
        println!("  {:<8} {note}", backend.name());
        for device in devices::describe(backend) {
            println!("           - {device}");
        }
    }
    let missing: Vec<&str> = [Backend::Ndarray, Backend::Wgpu]
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
