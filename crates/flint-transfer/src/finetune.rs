//! Fine-tuning runs: a pretrained backbone, a new head, and one of three strategies.
//!
//! - `feature-extract`: the backbone is frozen; its features are computed once (cached on disk,
//!   see [`crate::cache`]) and only the head trains, on the cached features.
//! - `finetune`: the whole network trains; the backbone at `backbone_lr_factor` times the head's
//!   learning rate (per-group learning rates).
//! - `gradual`: the head trains alone first; then every `unfreeze_every` epochs the next group
//!   of backbone layers, from the top down, joins (ULMFiT's gradual unfreezing), also at the
//!   lower backbone rate.
//!
//! A run writes what `flint train` writes (`config.json`, `metrics.csv`, `report.md`,
//! `curves.png`, `result.json`, checkpoints `best` and `last`); the best checkpoint is chosen by
//! validation accuracy, and `flint predict` runs it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use burn::config::Config;
use burn::data::dataloader::DataLoader;
use burn::module::{Module, ParamGroup};
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::GradientsParams;
use burn::optim::lr_scheduler::module_lr_scheduler::{ModuleLearningRate, ModuleLrScheduler};
use burn::prelude::*;
use flint_data::{
    ClassificationBatch, ImageBatcher, ImageFolder, ImageFolderDataset, ImageSet, ImageTransform,
    LabelledSet, LoaderOptions, SkippedFile, TensorBatcher, loader, train_val_split,
};
use flint_io::seed::derive_seed;
use flint_train::checkpoint::{self, RunState};
use flint_train::optim::build_optimizer;
use flint_train::progress::Progress;
use flint_train::{
    EpochMetrics, EpochTally, EvalAccumulator, EvalReport, OptimizerConfig, ProgressMode,
};
use flint_train::{OptimizerKind, ScheduleConfig, ScheduleKind, resident_memory};

use crate::backbone::InputSpec;
use crate::cache::{CacheKey, CacheStatus, FeatureCache, Features, fingerprint_files};
use crate::error::TransferError;
use crate::freeze;
use crate::model::{Head, TransferModel};
use crate::pretrained::{Pretrained, load_pretrained};

/// How much of the pretrained network trains.
#[derive(Config, Debug, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// Frozen backbone, cached features, head only.
    FeatureExtract,
    /// Everything trains, the backbone at a lower rate.
    Finetune,
    /// Head first, then backbone groups from the top down.
    Gradual,
}

impl std::str::FromStr for Strategy {
    type Err = TransferError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "feature-extract" => Ok(Self::FeatureExtract),
            "finetune" => Ok(Self::Finetune),
            "gradual" => Ok(Self::Gradual),
            other => Err(TransferError::Invalid(format!(
                "unknown strategy `{other}`; expected feature-extract, finetune or gradual"
            ))),
        }
    }
}

impl Strategy {
    /// The command-line name.
    pub fn name(self) -> &'static str {
        match self {
            Self::FeatureExtract => "feature-extract",
            Self::Finetune => "finetune",
            Self::Gradual => "gradual",
        }
    }
}

/// A fine-tuning run.
#[derive(Config, Debug)]
pub struct FinetuneConfig {
    /// Pretrained model: a name (`flint models`), a weight file or a `flint train` run directory.
    pub pretrained: String,
    /// Image folder: `train/<class>/*` and `val/<class>/*`, or one `<class>/*` tree that is split.
    pub data: PathBuf,
    /// Strategy.
    #[config(default = "Strategy::FeatureExtract")]
    pub strategy: Strategy,
    /// Epochs.
    #[config(default = 25)]
    pub epochs: usize,
    /// Batch size.
    #[config(default = 16)]
    pub batch_size: usize,
    /// Optimiser; its `lr` is the head's (PyTorch tutorial: SGD 0.001, momentum 0.9).
    #[config(
        default = "OptimizerConfig::new().with_kind(OptimizerKind::Sgd).with_lr(1e-3).with_momentum(0.9)"
    )]
    pub optimizer: OptimizerConfig,
    /// Schedule (PyTorch tutorial: step 7, gamma 0.1).
    #[config(default = "ScheduleConfig::new().with_kind(ScheduleKind::Step).with_step_size(7)")]
    pub schedule: ScheduleConfig,
    /// The backbone's learning rate as a fraction of the head's.
    #[config(default = 0.1)]
    pub backbone_lr_factor: f64,
    /// Dropout before the new head's linear layer.
    #[config(default = 0.0)]
    pub head_dropout: f64,
    /// Gradual: epochs between unfreezing one more backbone group.
    #[config(default = 2)]
    pub unfreeze_every: usize,
    /// Gradual: number of backbone groups.
    #[config(default = 4)]
    pub groups: usize,
    /// Parameter patterns (regular expressions on paths like `backbone.conv1.weight`) kept
    /// frozen throughout.
    #[config(default = "Vec::new()")]
    pub freeze: Vec<String>,
    /// Validation fraction when the folder has no `val/`.
    #[config(default = 0.2)]
    pub val_fraction: f64,
    /// Random-resized-crop and flip augmentation when the backbone trains.
    #[config(default = true)]
    pub augment: bool,
    /// Seed.
    #[config(default = 0)]
    pub seed: u64,
    /// Loader threads.
    #[config(default = 2)]
    pub workers: usize,
}

impl FinetuneConfig {
    /// Checks the values.
    pub fn validate(&self) -> Result<(), TransferError> {
        let bad = |m: String| Err(TransferError::Invalid(m));
        if self.epochs == 0 {
            return bad("epochs must be at least 1".into());
        }
        if self.batch_size == 0 {
            return bad("batch size must be at least 1".into());
        }
        // The same checks as `flint train`'s, so both refuse the same values.
        self.optimizer.validate()?;
        self.schedule.validate(self.epochs, self.optimizer.lr)?;
        if !(self.backbone_lr_factor > 0.0 && self.backbone_lr_factor <= 1.0) {
            return bad(format!(
                "backbone learning-rate factor must be in (0, 1], got {}",
                self.backbone_lr_factor
            ));
        }
        if !(0.0..1.0).contains(&self.head_dropout) {
            return bad(format!(
                "head dropout must be in [0, 1), got {}",
                self.head_dropout
            ));
        }
        if self.strategy == Strategy::Gradual && (self.unfreeze_every == 0 || self.groups == 0) {
            return bad("gradual unfreezing needs unfreeze_every >= 1 and groups >= 1".into());
        }
        for p in &self.freeze {
            regex::Regex::new(p)
                .map_err(|e| TransferError::Invalid(format!("bad freeze pattern `{p}`: {e}")))?;
        }
        Ok(())
    }
}

/// Training and validation data of a transfer run.
#[derive(Debug, Clone)]
pub enum TransferData {
    /// Image files.
    Folder {
        /// Training images.
        train: ImageFolder,
        /// Validation images.
        val: ImageFolder,
    },
    /// Decoded small images (IDX data sets).
    Images {
        /// Training images.
        train: ImageSet,
        /// Validation images.
        val: ImageSet,
    },
}

impl TransferData {
    /// `root/train` and `root/val` when they exist, else `root` split by `val_fraction`.
    pub fn open_folder(root: &Path, val_fraction: f64, seed: u64) -> Result<Self, TransferError> {
        let (train, val) = if root.join("train").is_dir() && root.join("val").is_dir() {
            (
                ImageFolder::open(root.join("train"))?,
                ImageFolder::open(root.join("val"))?,
            )
        } else {
            let all = ImageFolder::open(root)?;
            train_val_split(&all, val_fraction, derive_seed(seed, 103))?
        };
        if train.class_names() != val.class_names() {
            return Err(TransferError::Invalid(format!(
                "{}: train and val have different classes ({:?} vs {:?})",
                root.display(),
                train.class_names(),
                val.class_names()
            )));
        }
        Ok(Self::Folder { train, val })
    }

    /// The files of the folders that could not be used, each once, with why.
    pub fn skipped(&self) -> Vec<SkippedFile> {
        let mut all: Vec<SkippedFile> = match self {
            Self::Folder { train, val } => train
                .skipped()
                .iter()
                .chain(val.skipped())
                .cloned()
                .collect(),
            Self::Images { .. } => Vec::new(),
        };
        // A folder split in two shares one scan, so its skipped files appear on both sides.
        all.sort_by(|a, b| a.path.cmp(&b.path));
        all.dedup_by(|a, b| a.path == b.path);
        all
    }

    /// Class names.
    pub fn class_names(&self) -> Vec<String> {
        match self {
            Self::Folder { train, .. } => train.class_names().to_vec(),
            Self::Images { train, .. } => train.class_names().to_vec(),
        }
    }

    fn len(&self, val: bool) -> usize {
        match (self, val) {
            (Self::Folder { train, .. }, false) => train.len(),
            (Self::Folder { val, .. }, true) => val.len(),
            (Self::Images { train, .. }, false) => train.len(),
            (Self::Images { val, .. }, true) => val.len(),
        }
    }

    fn check_input(&self, input: &InputSpec) -> Result<(), TransferError> {
        match self {
            Self::Folder { .. } if input.channels != 3 => Err(TransferError::Invalid(format!(
                "this backbone takes {}-channel {}x{} images; image folders need an RGB backbone",
                input.channels, input.size, input.size
            ))),
            Self::Images { train, .. }
                if train.shape() != [input.channels, input.size as usize, input.size as usize] =>
            {
                Err(TransferError::Invalid(format!(
                    "images are {:?} but the backbone takes [{}, {}, {}]",
                    train.shape(),
                    input.channels,
                    input.size,
                    input.size
                )))
            }
            _ => Ok(()),
        }
    }

    /// A loader over one split; `augment` applies the random training transform (folders).
    fn loader(
        &self,
        val: bool,
        augment: bool,
        input: &InputSpec,
        options: &LoaderOptions,
        seed: u64,
        device: &Device,
    ) -> Result<Arc<dyn DataLoader<ClassificationBatch>>, TransferError> {
        Ok(match self {
            Self::Folder { train, val: v } => {
                let folder = if val { v } else { train };
                let transform = if augment {
                    ImageTransform::Train {
                        size: input.size,
                        scale: (0.08, 1.0),
                        ratio: (3.0 / 4.0, 4.0 / 3.0),
                        flip: true,
                    }
                } else {
                    ImageTransform::Eval {
                        resize: input.resize,
                        crop: input.size,
                    }
                };
                let ds = ImageFolderDataset::new(
                    folder.clone(),
                    transform,
                    input.normalize.clone(),
                    seed,
                );
                loader(ds, TensorBatcher, options, device)?
            }
            Self::Images { train, val: v } => {
                let set = if val { v } else { train };
                loader(
                    set.clone(),
                    ImageBatcher::normalized(input.normalize.clone()),
                    options,
                    device,
                )?
            }
        })
    }

    /// Identifies a split's content for the feature cache.
    fn fingerprint(&self, val: bool) -> Result<String, TransferError> {
        match self {
            Self::Folder { train, val: v } => {
                let f = if val { v } else { train };
                fingerprint_files(f.root(), (0..f.len()).map(|i| (f.path(i), f.label(i))))
            }
            Self::Images { train, val: v } => {
                use sha2::{Digest, Sha256};
                let s = if val { v } else { train };
                let mut h = Sha256::new();
                h.update(s.name().as_bytes());
                for i in 0..s.len() {
                    h.update(s.image(i));
                }
                h.update(s.labels());
                Ok(format!("{:x}", h.finalize()))
            }
        }
    }
}

/// What a fine-tuning run produced.
#[derive(Debug, Clone)]
pub struct FinetuneOutcome {
    /// The run directory.
    pub run_dir: PathBuf,
    /// Metrics per epoch.
    pub history: Vec<EpochMetrics>,
    /// Best validation accuracy and its epoch.
    pub best: (f64, usize),
    /// The final model on the validation set.
    pub final_val: EvalReport,
    /// Wall time in seconds, including feature extraction.
    pub wall_secs: f64,
    /// Seconds spent computing backbone features (feature extraction; 0 on a cache hit).
    pub extract_secs: f64,
    /// What the feature cache did (feature extraction only).
    pub cache: Option<CacheStatus>,
}

/// Where a run goes and how it reports.
#[derive(Debug, Clone)]
pub struct FinetuneOptions {
    /// Run directory (`runs/finetune-<strategy>-<timestamp>` when `None`).
    pub output: Option<PathBuf>,
    /// Device.
    pub device: Device,
    /// Progress display.
    pub progress: ProgressMode,
    /// Feature cache folder (`None`: [`FeatureCache::default_dir`]).
    pub cache_dir: Option<PathBuf>,
}

impl Default for FinetuneOptions {
    fn default() -> Self {
        Self {
            output: None,
            device: Device::flex(),
            progress: ProgressMode::Bar,
            cache_dir: None,
        }
    }
}

/// Runs `flint finetune` on an image folder.
pub fn finetune(
    config: &FinetuneConfig,
    options: &FinetuneOptions,
) -> Result<FinetuneOutcome, TransferError> {
    config.validate()?;
    // An unknown model name is reported before any data is read.
    crate::pretrained::check_spec(&config.pretrained)?;
    let data = TransferData::open_folder(&config.data, config.val_fraction, config.seed)?;
    finetune_on(config, &data, options)
}

/// Runs a fine-tuning run on data already loaded.
pub fn finetune_on(
    config: &FinetuneConfig,
    data: &TransferData,
    options: &FinetuneOptions,
) -> Result<FinetuneOutcome, TransferError> {
    let start = Instant::now();
    config.validate()?;
    // Everything that can fail on the user's input fails before the run directory exists, so a
    // corrected command can reuse the same --output.
    let pretrained = load_pretrained(&config.pretrained, &options.device.clone().autodiff())?;
    data.check_input(&pretrained.input)?;
    let (run, device, train_device) = RunContext::begin(config, data, options)?;
    if let Some(report) = &pretrained.load_report {
        run.progress.info(&report.to_string());
    }
    run.run(pretrained, options, &device, &train_device, start)
}

/// Runs a fine-tuning run with a backbone the caller built: one loaded elsewhere, or a randomly
/// initialised one for a from-scratch baseline with exactly the same training. The backbone
/// must live on `options.device` made autodiff. `config.pretrained` only labels the run.
pub fn finetune_with(
    config: &FinetuneConfig,
    pretrained: Pretrained,
    data: &TransferData,
    options: &FinetuneOptions,
) -> Result<FinetuneOutcome, TransferError> {
    let start = Instant::now();
    config.validate()?;
    data.check_input(&pretrained.input)?;
    let (run, device, train_device) = RunContext::begin(config, data, options)?;
    run.run(pretrained, options, &device, &train_device, start)
}

impl<'a> RunContext<'a> {
    fn begin(
        config: &'a FinetuneConfig,
        data: &'a TransferData,
        options: &FinetuneOptions,
    ) -> Result<(Self, Device, Device), TransferError> {
        config.validate()?;
        let run_dir = options.output.clone().unwrap_or_else(|| {
            flint_io::stamp::run_dir(&format!("finetune-{}", config.strategy.name()))
        });
        if run_dir.join("config.json").exists() {
            return Err(TransferError::Invalid(format!(
                "{} already holds a run (config.json); choose another --output",
                run_dir.display()
            )));
        }
        // A new or empty folder only, as for `flint train`: never replace a user's files.
        flint_train::prepare_run_dir(&run_dir)?;
        let run_config = RunConfig {
            finetune: config.clone(),
            classes: data.class_names(),
        };
        checkpoint::write_atomic(
            &run_dir.join("config.json"),
            &serde_json::to_vec_pretty(&run_config).expect("json"),
        )?;
        let device = options.device.clone();
        device.seed(config.seed);
        let train_device = device.clone().autodiff();
        train_device.seed(config.seed);
        let state = RunState::new(
            config.seed,
            checkpoint::file_sha256(&run_dir.join("config.json"))?,
        );
        Ok((
            Self {
                config,
                data,
                run_dir,
                progress: Progress::new(options.progress),
                state,
                best_val: (f64::NEG_INFINITY, 0),
                extract_secs: 0.0,
                cache: None,
            },
            device,
            train_device,
        ))
    }

    fn run(
        mut self,
        pretrained: Pretrained,
        options: &FinetuneOptions,
        device: &Device,
        train_device: &Device,
        start: Instant,
    ) -> Result<FinetuneOutcome, TransferError> {
        for file in self.data.skipped() {
            self.progress
                .warn(&format!("skipped {}: {}", file.path.display(), file.reason));
        }
        let run = &mut self;
        let config = run.config;
        let final_val = match config.strategy {
            Strategy::FeatureExtract => run.feature_extract(pretrained, options, device)?,
            Strategy::Finetune | Strategy::Gradual => {
                run.train_network(pretrained, device, train_device)?
            }
        };
        let wall_secs = start.elapsed().as_secs_f64();
        run.finish(&final_val, wall_secs)?;
        Ok(FinetuneOutcome {
            run_dir: run.run_dir.clone(),
            history: run.state.history.clone(),
            best: run.best_val,
            final_val,
            wall_secs,
            extract_secs: run.extract_secs,
            cache: run.cache.clone(),
        })
    }
}

/// `config.json` of a fine-tuning run: the configuration and the class names.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct RunConfig {
    /// The run's configuration.
    pub finetune: FinetuneConfig,
    /// Class names of the new head, in index order.
    pub classes: Vec<String>,
}

struct RunContext<'a> {
    config: &'a FinetuneConfig,
    data: &'a TransferData,
    run_dir: PathBuf,
    progress: Progress,
    state: RunState,
    best_val: (f64, usize),
    extract_secs: f64,
    cache: Option<CacheStatus>,
}

impl RunContext<'_> {
    fn lr_at(&self, epoch: usize, batch: usize, steps_per_epoch: usize) -> f64 {
        self.config.schedule.lr_at(
            self.config.optimizer.lr,
            (epoch - 1) * steps_per_epoch + batch,
            steps_per_epoch,
            steps_per_epoch * self.config.epochs,
        )
    }

    /// Frozen backbone: features once (cached), then the head alone.
    fn feature_extract(
        &mut self,
        pretrained: Pretrained,
        options: &FinetuneOptions,
        device: &Device,
    ) -> Result<EvalReport, TransferError> {
        let config = self.config;
        let backbone = pretrained.backbone.valid();
        let cache = FeatureCache::new(
            options
                .cache_dir
                .clone()
                .unwrap_or_else(FeatureCache::default_dir),
        );
        let input = &pretrained.input;
        let transform = format!(
            "eval resize {} crop {} channels {} normalize {:?}/{:?}",
            input.resize,
            input.size,
            input.channels,
            input.normalize.mean(),
            input.normalize.std()
        );
        let model_id = format!("{} {}", pretrained.name, pretrained.weights_id);
        let mut features = Vec::new();
        for val in [false, true] {
            let key = CacheKey {
                model: model_id.clone(),
                data: self.data.fingerprint(val)?,
                transform: transform.clone(),
            };
            let t = Instant::now();
            let (f, status) = cache.get_or_compute(&key, || {
                let dl = self.data.loader(
                    val,
                    false,
                    input,
                    &LoaderOptions::new(32).workers(config.workers),
                    0,
                    device,
                )?;
                extract(&backbone, dl.as_ref(), pretrained.feature_dim)
            })?;
            let split = if val { "val" } else { "train" };
            let note = match &status {
                CacheStatus::Hit => "read from the cache".to_string(),
                CacheStatus::Miss => format!("computed in {:.1} s", t.elapsed().as_secs_f64()),
                CacheStatus::Replaced(why) => format!(
                    "recomputed in {:.1} s (cache entry was unusable: {why})",
                    t.elapsed().as_secs_f64()
                ),
            };
            if status != CacheStatus::Hit {
                self.extract_secs += t.elapsed().as_secs_f64();
            }
            self.progress.info(&format!(
                "{split} features ({} x {}) {note}: {}",
                f.len(),
                f.dim,
                cache.path(&key).display()
            ));
            // Train and val lookups can differ (one cached); report the weaker status.
            self.cache = Some(match (self.cache.take(), status) {
                (None, s) | (Some(CacheStatus::Hit), s) => s,
                (Some(s), _) => s,
            });
            features.push(f);
        }
        let val_features = features.pop().expect("val");
        let train_features = features.pop().expect("train");
        let classes = self.data.class_names();

        let train_device = device.clone().autodiff();
        let mut head = Head::new(
            pretrained.feature_dim,
            classes.len(),
            config.head_dropout,
            &train_device,
        )?;
        let mut optimizer = build_optimizer(&config.optimizer);
        let ce = CrossEntropyLossConfig::new().init(&train_device);
        let steps = train_features.len().div_ceil(config.batch_size);
        let mut best_head = head.clone();
        for epoch in 1..=config.epochs {
            let epoch_seed = derive_seed(config.seed, epoch as u64);
            train_device.seed(epoch_seed);
            let order = shuffled(train_features.len(), epoch_seed);
            self.progress.start_epoch(epoch, config.epochs, steps);
            let mut tally = EpochTally::start();
            let mut lr = 0.0;
            for (b, chunk) in order.chunks(config.batch_size).enumerate() {
                lr = self.lr_at(epoch, b, steps);
                let (x, y) = feature_batch(&train_features, chunk, &train_device);
                let logits = head.forward(x);
                let loss = ce.forward(logits.clone(), y.clone());
                let classes = logits.dims()[1];
                tally.add(checked_loss(&loss, classes, epoch, b)?, logits, y);
                let grads = GradientsParams::from_grads(loss.backward(), &head);
                head = optimizer.step(lr, head, grads);
                self.progress
                    .batch(tally.loss(), tally.accuracy(), tally.samples_per_sec());
            }
            let train_secs = tally.secs();
            let eval = eval_features(&head.valid(), &val_features, &classes, device);
            let improved = self.end_epoch(tally.metrics(epoch, lr, train_secs, &eval))?;
            if improved {
                best_head = head.clone();
            }
        }
        // Assemble the network `flint predict` runs: backbone + best head.
        let model = TransferModel {
            backbone,
            head: best_head.valid(),
        };
        let optimizer = build_optimizer(&config.optimizer);
        checkpoint::save(
            &self.run_dir.join("checkpoints").join("best"),
            &model,
            &optimizer,
            &self.state,
        )?;
        let last = TransferModel {
            backbone: model.backbone.clone(),
            head: head.valid(),
        };
        checkpoint::save(
            &self.run_dir.join("checkpoints").join("last"),
            &last,
            &optimizer,
            &self.state,
        )?;
        Ok(eval_features(
            &head.valid(),
            &val_features,
            &classes,
            device,
        ))
    }

    /// The whole network trains (`finetune`), or the head first and the backbone group by
    /// group (`gradual`).
    fn train_network(
        &mut self,
        pretrained: Pretrained,
        device: &Device,
        train_device: &Device,
    ) -> Result<EvalReport, TransferError> {
        let config = self.config;
        let classes = self.data.class_names();
        let input = pretrained.input.clone();
        let mut model = TransferModel {
            head: Head::new(
                pretrained.feature_dim,
                classes.len(),
                config.head_dropout,
                train_device,
            )?,
            backbone: pretrained.backbone,
        };
        let backbone_group: ParamGroup = freeze::group(&model, r"^backbone\.")?;
        let stages = backbone_stages(&model, config.groups);
        let mut optimizer = build_optimizer(&config.optimizer);
        let ce = CrossEntropyLossConfig::new().init(train_device);
        let steps = self.data.len(false).div_ceil(config.batch_size);
        let mut unfrozen = usize::MAX;
        for epoch in 1..=config.epochs {
            // Which backbone groups train this epoch.
            let trainable = match config.strategy {
                Strategy::Gradual => ((epoch - 1) / config.unfreeze_every).min(stages.len()),
                _ => stages.len(),
            };
            if trainable != unfrozen {
                model = freeze::freeze(model, r"^backbone\.")?;
                if trainable == stages.len() {
                    // The whole backbone, including layers without parameters (dropout,
                    // DropPath), which a group of parameter paths would leave in inference mode.
                    model = freeze::unfreeze(model, r"^backbone\.")?;
                } else {
                    for stage in stages.iter().rev().take(trainable) {
                        model = freeze::unfreeze(model, stage)?;
                    }
                }
                for pattern in &config.freeze {
                    model = freeze::freeze(model, pattern)?;
                }
                if config.strategy == Strategy::Gradual {
                    self.progress.info(&format!(
                        "epoch {epoch}: {trainable} of {} backbone groups training",
                        stages.len()
                    ));
                }
                unfrozen = trainable;
            }
            let epoch_seed = derive_seed(config.seed, epoch as u64);
            train_device.seed(epoch_seed);
            let dl = self.data.loader(
                false,
                config.augment,
                &input,
                &LoaderOptions::new(config.batch_size)
                    .shuffled(epoch_seed)
                    .workers(config.workers),
                epoch_seed,
                train_device,
            )?;
            self.progress.start_epoch(epoch, config.epochs, steps);
            let mut tally = EpochTally::start();
            let mut lr = 0.0;
            for (b, batch) in dl.iter().enumerate() {
                let batch = batch.map_err(|e| TransferError::Invalid(format!("loading: {e}")))?;
                lr = self.lr_at(epoch, b, steps);
                let logits = model.forward(batch.images);
                let loss = ce.forward(logits.clone(), batch.targets.clone());
                let classes = logits.dims()[1];
                tally.add(
                    checked_loss(&loss, classes, epoch, b)?,
                    logits,
                    batch.targets,
                );
                let grads = GradientsParams::from_grads(loss.backward(), &model);
                let rates = group_rates(lr, config.backbone_lr_factor, &backbone_group);
                model = optimizer.step(rates, model, grads);
                self.progress
                    .batch(tally.loss(), tally.accuracy(), tally.samples_per_sec());
            }
            let train_secs = tally.secs();
            let eval = self.evaluate(&model.valid(), &input, device)?;
            let improved = self.end_epoch(tally.metrics(epoch, lr, train_secs, &eval))?;
            if improved {
                checkpoint::save(
                    &self.run_dir.join("checkpoints").join("best"),
                    &model,
                    &optimizer,
                    &self.state,
                )?;
            }
            checkpoint::save(
                &self.run_dir.join("checkpoints").join("last"),
                &model,
                &optimizer,
                &self.state,
            )?;
        }
        self.evaluate(&model.valid(), &input, device)
    }

    fn evaluate(
        &self,
        model: &TransferModel,
        input: &InputSpec,
        device: &Device,
    ) -> Result<EvalReport, TransferError> {
        let dl = self.data.loader(
            true,
            false,
            input,
            &LoaderOptions::new(32).workers(self.config.workers),
            0,
            device,
        )?;
        evaluate_loader(
            |x| model.forward(x),
            dl.as_ref(),
            &self.data.class_names(),
            device,
        )
    }

    /// Records an epoch; returns whether validation accuracy improved.
    fn end_epoch(&mut self, metrics: EpochMetrics) -> Result<bool, TransferError> {
        let (epoch, val_accuracy) = (metrics.epoch, metrics.val_accuracy);
        self.progress.end_epoch(&metrics, self.config.epochs, "val");
        self.state.history.push(metrics);
        self.state.epoch = epoch;
        checkpoint::write_atomic(
            &self.run_dir.join("metrics.csv"),
            flint_train::metrics::metrics_csv(&self.state.history).as_bytes(),
        )?;
        let improved = val_accuracy > self.best_val.0;
        if improved {
            self.best_val = (val_accuracy, epoch);
            self.state.best_epoch = Some(epoch);
            self.state.best_monitor = Some(val_accuracy);
        }
        Ok(improved)
    }

    fn finish(&mut self, final_val: &EvalReport, wall_secs: f64) -> Result<(), TransferError> {
        let plotted = flint_train::report::plot_curves(
            &self.run_dir.join("curves.png"),
            &self.state.history,
            "val",
        )
        .is_ok();
        let peak = resident_memory().map(|m| m.peak_mib);
        let skipped = self.data.skipped();
        write_report(
            &self.run_dir.join("report.md"),
            self.config,
            &skipped,
            &self.state.history,
            self.best_val,
            final_val,
            wall_secs,
            self.extract_secs,
            self.cache.as_ref(),
            plotted,
        )?;
        let result = serde_json::json!({
            "strategy": self.config.strategy.name(),
            "pretrained": self.config.pretrained,
            "best_val_accuracy": self.best_val.0,
            "best_epoch": self.best_val.1,
            "final_val_accuracy": final_val.accuracy,
            "final_val_loss": final_val.loss,
            "per_class_accuracy": final_val.per_class_accuracy,
            "epochs": self.state.history.len(),
            "wall_secs": wall_secs,
            "feature_extraction_secs": self.extract_secs,
            "feature_cache": self.cache.as_ref().map(|c| format!("{c:?}")),
            "peak_rss_mib": peak,
            "skipped_files": skipped
                .iter()
                .map(|f| serde_json::json!({
                    "path": f.path,
                    "kind": f.kind.as_str(),
                    "reason": f.reason,
                }))
                .collect::<Vec<_>>(),
        });
        checkpoint::write_atomic(
            &self.run_dir.join("result.json"),
            serde_json::to_string_pretty(&result)
                .expect("json")
                .as_bytes(),
        )?;
        match self.progress_mode() {
            ProgressMode::Json => println!(
                "{}",
                serde_json::json!({"event": "val", "best_accuracy": self.best_val.0,
                    "best_epoch": self.best_val.1, "final_accuracy": final_val.accuracy,
                    "run_dir": self.run_dir.display().to_string()})
            ),
            ProgressMode::Bar => {
                println!("run directory: {}", self.run_dir.display());
                println!(
                    "best epoch: {} (final val accuracy {:.4})",
                    self.best_val.1, final_val.accuracy
                );
                println!("val accuracy: {:.4}", self.best_val.0);
            }
            ProgressMode::Quiet => println!("val accuracy: {:.4}", self.best_val.0),
            ProgressMode::Silent => {}
        }
        Ok(())
    }

    fn progress_mode(&self) -> ProgressMode {
        self.progress.mode()
    }
}

/// Per-parameter learning rates: `lr` for everything, `lr * backbone_factor` for the parameters
/// of `backbone` (what `optimizer.step` takes).
pub fn group_rates(lr: f64, backbone_factor: f64, backbone: &ParamGroup) -> ModuleLearningRate {
    ModuleLrScheduler::new(lr)
        .with_group(backbone.clone(), lr * backbone_factor)
        .step()
}

/// Splits the backbone's parameters, in declaration order (input to output), into `groups`
/// contiguous groups of about the same number of tensors, each as a pattern matching exactly
/// its paths.
fn backbone_stages(model: &TransferModel, groups: usize) -> Vec<String> {
    let paths: Vec<String> = freeze::parameters(model)
        .into_iter()
        .filter(|p| p.path.starts_with("backbone."))
        .map(|p| p.path)
        .collect();
    let groups = groups.min(paths.len()).max(1);
    let size = paths.len().div_ceil(groups);
    paths
        .chunks(size.max(1))
        .map(|chunk| {
            let alternatives: Vec<String> = chunk.iter().map(|p| regex::escape(p)).collect();
            format!("^(?:{})$", alternatives.join("|"))
        })
        .collect()
}

fn shuffled(n: usize, seed: u64) -> Vec<usize> {
    use rand::{SeedableRng, seq::SliceRandom};
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut rand::rngs::StdRng::seed_from_u64(seed));
    order
}

fn feature_batch(f: &Features, rows: &[usize], device: &Device) -> (Tensor<2>, Tensor<1, Int>) {
    let mut values = Vec::with_capacity(rows.len() * f.dim);
    let mut labels = Vec::with_capacity(rows.len());
    for &r in rows {
        values.extend_from_slice(f.row(r));
        labels.push(f.labels[r] as i64);
    }
    (
        Tensor::from_data(TensorData::new(values, [rows.len(), f.dim]), device),
        Tensor::from_data(TensorData::new(labels, [rows.len()]), device),
    )
}

/// The batch's loss as a number, or the error that stops a run whose loss diverged (not
/// finite, or exploded: [`flint_train::step::loss_diverged`]), as `flint train` stops.
fn checked_loss(
    loss: &Tensor<1>,
    classes: usize,
    epoch: usize,
    batch: usize,
) -> Result<f32, TransferError> {
    let l: f32 = loss.clone().into_scalar();
    if !flint_train::step::loss_diverged(l, classes) {
        Ok(l)
    } else {
        Err(flint_train::TrainError::Diverged {
            epoch,
            batch: batch + 1,
            loss: l,
            uniform: flint_train::step::uniform_loss(classes),
            checkpoint: None,
        }
        .into())
    }
}

/// Backbone features of every batch of `dl`.
pub fn extract(
    backbone: &crate::backbone::Backbone,
    dl: &dyn DataLoader<ClassificationBatch>,
    dim: usize,
) -> Result<Features, TransferError> {
    let mut values = Vec::new();
    let mut labels = Vec::new();
    for batch in dl.iter() {
        let batch = batch.map_err(|e| TransferError::Invalid(format!("loading: {e}")))?;
        let f = backbone.features(batch.images);
        let [_, d] = f.dims();
        if d != dim {
            return Err(TransferError::Invalid(format!(
                "backbone returned {d} features, expected {dim}"
            )));
        }
        values.extend(
            f.into_data()
                .convert::<f32>()
                .try_to_vec::<f32>()
                .expect("converted to f32"),
        );
        labels.extend(
            batch
                .targets
                .into_data()
                .convert::<i64>()
                .try_to_vec::<i64>()
                .expect("converted to i64")
                .into_iter()
                .map(|l| l as u32),
        );
    }
    Ok(Features {
        dim,
        values,
        labels,
    })
}

fn eval_features(head: &Head, f: &Features, classes: &[String], device: &Device) -> EvalReport {
    let mut eval = EvalAccumulator::new(classes.len(), device);
    let rows: Vec<usize> = (0..f.len()).collect();
    for chunk in rows.chunks(1000) {
        let (x, y) = feature_batch(f, chunk, device);
        eval.add(head.forward(x), y);
    }
    eval.finish(classes.to_vec())
}

/// Accuracy, loss, per-class accuracy and confusion matrix of `forward` over `dl`.
pub fn evaluate_loader(
    forward: impl Fn(Tensor<4>) -> Tensor<2>,
    dl: &dyn DataLoader<ClassificationBatch>,
    classes: &[String],
    device: &Device,
) -> Result<EvalReport, TransferError> {
    let mut eval = EvalAccumulator::new(classes.len(), device);
    for batch in dl.iter() {
        let batch = batch.map_err(|e| TransferError::Invalid(format!("loading: {e}")))?;
        eval.add(forward(batch.images), batch.targets);
    }
    Ok(eval.finish(classes.to_vec()))
}

#[allow(clippy::too_many_arguments)]
fn write_report(
    path: &Path,
    config: &FinetuneConfig,
    skipped: &[SkippedFile],
    history: &[EpochMetrics],
    best: (f64, usize),
    final_val: &EvalReport,
    wall_secs: f64,
    extract_secs: f64,
    cache: Option<&CacheStatus>,
    plotted: bool,
) -> Result<(), TransferError> {
    use std::fmt::Write as _;
    let mut md = String::new();
    let _ = writeln!(
        md,
        "# flint fine-tuning report: {} on {}\n",
        config.pretrained,
        config.data.display()
    );
    let o = &config.optimizer;
    let _ = writeln!(
        md,
        "- strategy: `{}`; head dropout {}; backbone lr factor {}",
        config.strategy.name(),
        config.head_dropout,
        config.backbone_lr_factor
    );
    let _ = writeln!(
        md,
        "- optimiser: {:?}, lr {}, momentum {}, weight decay {}; schedule {:?} (step {}, gamma {})",
        o.kind,
        o.lr,
        o.momentum,
        o.weight_decay,
        config.schedule.kind,
        config.schedule.step_size,
        config.schedule.gamma
    );
    let _ = writeln!(
        md,
        "- epochs {}; batch size {}; seed {}",
        config.epochs, config.batch_size, config.seed
    );
    let _ = writeln!(
        md,
        "- wall time {wall_secs:.1} s (feature extraction {extract_secs:.1} s{})\n",
        cache.map_or(String::new(), |c| format!(", cache: {c:?}"))
    );
    let _ = writeln!(
        md,
        "## Result\n\n**best val accuracy: {:.2} %** (epoch {}); final val accuracy {:.2} % (loss {:.4})\n",
        best.0 * 100.0,
        best.1,
        final_val.accuracy * 100.0,
        final_val.loss
    );
    if plotted {
        let _ = writeln!(md, "![loss and accuracy curves](curves.png)\n");
    }
    let _ = writeln!(
        md,
        "## Epochs\n\n{}",
        flint_train::report::epoch_table(history, "val")
    );
    let _ = writeln!(md, "## Per-class accuracy (final model)\n");
    for (name, acc) in final_val
        .class_names
        .iter()
        .zip(&final_val.per_class_accuracy)
    {
        let _ = writeln!(md, "- {name}: {:.2} %", acc * 100.0);
    }
    if !skipped.is_empty() {
        let _ = writeln!(
            md,
            "\n## Skipped files\n\n{} files of the image folder could not be used:\n",
            skipped.len()
        );
        for file in skipped {
            let _ = writeln!(md, "- `{}`: {}", file.path.display(), file.reason);
        }
    }
    checkpoint::write_atomic(path, md.as_bytes())?;
    Ok(())
}

/// Whether `dir` is (or is inside) a fine-tuning run directory.
pub fn is_finetune_run(path: &Path) -> bool {
    run_root(path).is_some()
}

fn run_root(path: &Path) -> Option<PathBuf> {
    path.ancestors()
        .find(|a| {
            flint_io::fs::read_regular(&a.join("config.json"), 4 << 20)
                .ok()
                .and_then(|b| serde_json::from_slice::<RunConfig>(&b).ok())
                .is_some()
        })
        .map(Path::to_path_buf)
}

/// A fine-tuned network from its run directory (best checkpoint) or a checkpoint folder in one,
/// in inference mode, with its configuration and the inputs it expects.
pub fn load_finetuned(
    path: &Path,
    device: &Device,
) -> Result<(RunConfig, TransferModel, InputSpec), TransferError> {
    let root = run_root(path).ok_or_else(|| {
        TransferError::Invalid(format!(
            "{}: not a fine-tuning run directory (no config.json of `flint finetune`)",
            path.display()
        ))
    })?;
    let config_path = root.join("config.json");
    let config: RunConfig = flint_train::config::load_strict(&config_path)?;
    let ckpt = if path.join("state.json").is_file() {
        path.to_path_buf()
    } else {
        let best = root.join("checkpoints").join("best");
        if best.join("state.json").is_file() {
            best
        } else {
            root.join("checkpoints").join("last")
        }
    };
    let pretrained = load_pretrained(&config.finetune.pretrained, device)?;
    let input = pretrained.input.clone();
    let model = TransferModel {
        head: Head::new(
            pretrained.feature_dim,
            config.classes.len(),
            config.finetune.head_dropout,
            device,
        )?,
        backbone: pretrained.backbone,
    };
    let (dir, state) = checkpoint::load_state(&ckpt)?;
    checkpoint::check_config_unchanged(&config_path, &state)?;
    let model = checkpoint::load_model(&dir, model)?;
    Ok((config, model.valid(), input))
}

/// Reads an image file and prepares it as `input` says (evaluation transform).
pub fn load_image(path: &Path, input: &InputSpec) -> Result<Vec<f32>, TransferError> {
    load_image_checked(path, input).map(|d| d.value)
}

/// [`load_image`], with a warning when the file decoded but is damaged (a truncated JPEG): the
/// caller should tell the user, since the network saw a partly grey picture.
pub fn load_image_checked(
    path: &Path,
    input: &InputSpec,
) -> Result<flint_data::Decoded<Vec<f32>>, TransferError> {
    if input.channels != 3 {
        let mut decoded = flint_data::image_folder::load_for_model_checked(
            path,
            input.channels,
            input.size as usize,
        )?;
        input.normalize.apply(&mut decoded.value, input.channels);
        return Ok(decoded);
    }
    let flint_data::Decoded {
        value: img,
        warning,
    } = flint_data::image_folder::load_rgb_checked(path)?;
    let transform = ImageTransform::Eval {
        resize: input.resize,
        crop: input.size,
    };
    use rand::SeedableRng;
    let mut data = transform.apply(&img, &mut rand::rngs::StdRng::seed_from_u64(0));
    input.normalize.apply(&mut data, 3);
    Ok(flint_data::Decoded {
        value: data,
        warning,
    })
}
