//! `flint train`: a reference model on a data set, through flint-train's engine.

use std::path::PathBuf;

use clap::Args;
use flint_models::ModelConfig;
use flint_train::{EarlyStoppingConfig, RegularizationConfig, RunOptions, TrainConfig, TrainError};

use crate::{ComputeArgs, OptimArgs, OutputArgs};

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
    #[command(flatten)]
    pub optim: OptimArgs,
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
    /// Continue the run in this directory from its last checkpoint, with the configuration it
    /// was started with (flags that would change it are refused).
    #[arg(long, conflicts_with_all = [
        "config", "output", "model", "dataset", "epochs", "batch_size", "optimizer", "lr",
        "momentum", "nesterov", "weight_decay", "schedule", "warmup", "step_size", "gamma",
        "clip_grad_norm", "l1", "l2", "max_norm", "dropout", "seed", "val_fraction", "limit",
        "test_limit", "augment_pad", "augment_flip", "workers", "early_stopping",
    ])]
    pub resume: Option<PathBuf>,
    /// Train data parallel on these devices of the backend (e.g. `--backend cuda --devices
    /// 0,1`): each device takes its own batches of --batch-size per step, the first holds the
    /// model. Default: the backend's default device.
    #[arg(long, value_delimiter = ',')]
    pub devices: Vec<usize>,
    #[command(flatten)]
    pub out: OutputArgs,
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
        self.optim
            .apply(&mut config.optimizer, &mut config.schedule);
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
}

/// Runs `flint train`.
pub fn run_train(args: &TrainArgs) -> Result<(), String> {
    args.compute.setup()?;
    let mut devices = args.compute.backend.devices(&args.devices)?.into_iter();
    let device = devices.next().ok_or("no device to train on")?;
    let options = RunOptions {
        output: args.out.output.clone(),
        device,
        progress: args.out.progress(),
        locator: args.compute.locator(),
        stop_after: args.out.stop_after,
        parallel_devices: devices.collect(),
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
