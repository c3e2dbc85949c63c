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
//! `curves.png`, `result.json`, checkpoints `best` and `last`) through flint-train's one
//! training loop ([`flint_train::Engine`]): the same clipping, divergence stop, checkpoints and
//! exact `--resume` ([`resume`]) as `flint train`. The best checkpoint is chosen by validation
//! accuracy; `flint eval`, `flint predict` and `--resume` read the run directory.

mod data;
mod report;

pub use data::{
    FeatureBatch, FeatureBatches, SplitBatches, TransferData, evaluate_loader, extract,
};
pub use report::{is_finetune_run, load_finetuned, load_image, load_image_checked};

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::config::Config;
use burn::module::{Module, ParamGroup};
use burn::prelude::*;
use flint_data::LoaderOptions;
use flint_train::checkpoint;
use flint_train::engine::HookError;
use flint_train::progress::Progress;
use flint_train::{
    Classify, Engine, EpochMetrics, EvalReport, EvalSet, LoopConfig, OptimizerConfig,
    OptimizerKind, ProgressMode, ScheduleConfig, ScheduleKind, Trained, evaluate_model,
    write_run_files,
};

use crate::backbone::{Backbone, NormalizeSpec};
use crate::cache::{CacheKey, CacheStatus, FeatureCache};
use crate::error::TransferError;
use crate::freeze;
use crate::model::{Head, TransferModel};
use crate::pretrained::{Pretrained, PretrainedOptions, SourceRecord, load_pretrained_with};

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
    /// ONNX: where to cut the network (`auto`, the default: before its final `Gemm`/`MatMul`;
    /// or a node or tensor name).
    pub cut: Option<String>,
    /// ONNX: square input side (default: the file's declared input, else 224).
    pub input_size: Option<u32>,
    /// ONNX: `imagenet` (default for RGB), `inception`, `none` or `MEANS/STDS`.
    pub normalize: Option<String>,
    /// `.pth`/`.safetensors`: the architecture of a torchvision state dict (`resnet18`, ...).
    pub arch: Option<String>,
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
        self.pretrained_options()?;
        Ok(())
    }

    /// `cut`, `input_size`, `normalize` and `arch` as [`load_pretrained_with`] takes them.
    ///
    /// # Errors
    /// An input size of 0, an empty cut name, a normalisation that does not parse.
    pub fn pretrained_options(&self) -> Result<PretrainedOptions, TransferError> {
        if self.input_size == Some(0) {
            return Err(TransferError::Invalid(
                "input size must be at least 1 pixel, got 0".into(),
            ));
        }
        if self.cut.as_deref().is_some_and(|c| c.trim().is_empty()) {
            return Err(TransferError::Invalid(
                "the cut point is empty: give auto or a node or tensor name".into(),
            ));
        }
        Ok(PretrainedOptions {
            cut: self.cut.clone().filter(|c| c != "auto"),
            input_size: self.input_size,
            normalize: self
                .normalize
                .as_deref()
                .map(str::parse::<NormalizeSpec>)
                .transpose()?,
            arch: self.arch.clone(),
        })
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
    /// Stop after this epoch as if interrupted, leaving a run that [`resume`] continues.
    pub stop_after: Option<usize>,
}

impl Default for FinetuneOptions {
    fn default() -> Self {
        Self {
            output: None,
            device: Device::flex(),
            progress: ProgressMode::Bar,
            cache_dir: None,
            stop_after: None,
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

/// Continues the `flint finetune` run in `run_dir` from its last checkpoint, with the
/// configuration it was started with: the result is the uninterrupted run's, bit for bit.
pub fn resume(run_dir: &Path, options: &FinetuneOptions) -> Result<FinetuneOutcome, TransferError> {
    let saved: RunConfig = flint_train::config::load_strict(run_dir.join("config.json"))?;
    let config = &saved.finetune;
    config.validate()?;
    let data = TransferData::open_folder(&config.data, config.val_fraction, config.seed)?;
    if data.class_names() != saved.classes {
        return Err(TransferError::Invalid(format!(
            "{}: the image folder's classes {:?} are not the run's {:?}",
            config.data.display(),
            data.class_names(),
            saved.classes
        )));
    }
    let pretrained = load_for_run(
        config,
        saved.source.as_ref(),
        &options.device.clone().autodiff(),
    )?;
    data.check_input(&pretrained.input)?;
    let options = FinetuneOptions {
        output: Some(run_dir.to_path_buf()),
        ..options.clone()
    };
    RunContext::begin(config, &data, &options, true, None)?.run(
        pretrained,
        &options,
        Instant::now(),
    )
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
    let pretrained = load_pretrained_with(
        &config.pretrained,
        &config.pretrained_options()?,
        &options.device.clone().autodiff(),
    )?;
    data.check_input(&pretrained.input)?;
    let run = RunContext::begin(config, data, options, false, pretrained.source.clone())?;
    if let Some(report) = &pretrained.load_report {
        run.progress.info(&report.to_string());
    }
    if let Some(s) = pretrained.source.as_ref().filter(|s| s.cut.is_some()) {
        run.progress.info(&format!(
            "{} (SHA-256 {}): features at {} ({} per image); input {}x{}x{}, resize {}, mean \
             {:?}, std {:?}",
            s.file.display(),
            s.sha256,
            s.cut.as_deref().unwrap_or_default(),
            pretrained.feature_dim,
            s.channels,
            s.size,
            s.size,
            s.resize,
            s.mean,
            s.std
        ));
    }
    run.run(pretrained, options, start)
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
    RunContext::begin(config, data, options, false, pretrained.source.clone())?
        .run(pretrained, options, start)
}

/// `config.json` of a fine-tuning run: the configuration and the class names.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct RunConfig {
    /// The run's configuration.
    pub finetune: FinetuneConfig,
    /// Class names of the new head, in index order.
    pub classes: Vec<String>,
    /// The weight file the backbone was read from and how (absent for a `flint train` run
    /// directory and in runs of older flint versions).
    #[serde(default)]
    pub source: Option<SourceRecord>,
}

/// The backbone of a run, rebuilt from the file it was made from: the file must still be there
/// with the SHA-256 the run recorded, and read the same way.
pub(crate) fn load_for_run(
    config: &FinetuneConfig,
    record: Option<&SourceRecord>,
    device: &Device,
) -> Result<Pretrained, TransferError> {
    let options = config.pretrained_options()?;
    let Some(record) = record else {
        return load_pretrained_with(&config.pretrained, &options, device);
    };
    // A catalogue name is found again (it may sit elsewhere on this machine); a path is the
    // absolute one recorded, so the run can be read from any working directory.
    let catalogue = crate::pretrained::catalogue_files(&config.pretrained);
    let by_name = catalogue.is_some() && !Path::new(&config.pretrained).exists();
    let file = match catalogue.filter(|_| by_name) {
        Some(files) => crate::pretrained::find_model_file(files)?,
        None => record.file.clone(),
    };
    record.check_file(&file)?;
    let spec = if by_name {
        config.pretrained.clone()
    } else {
        file.display().to_string()
    };
    let pretrained = load_pretrained_with(&spec, &options, device)?;
    if let Some(rebuilt) = &pretrained.source {
        record.check_same(rebuilt)?;
    }
    Ok(pretrained)
}

impl Classify for TransferModel {
    fn logits(&self, images: Tensor<4>) -> Tensor<2> {
        self.forward(images)
    }
}

/// Samples per evaluation batch (224x224 images).
const EVAL_BATCH: usize = 32;

struct RunContext<'a> {
    config: &'a FinetuneConfig,
    data: &'a TransferData,
    run_dir: PathBuf,
    progress: Progress,
    resume: bool,
    stop_after: Option<usize>,
    extract_secs: f64,
    cache: Option<CacheStatus>,
}

impl<'a> RunContext<'a> {
    fn begin(
        config: &'a FinetuneConfig,
        data: &'a TransferData,
        options: &FinetuneOptions,
        resume: bool,
        source: Option<SourceRecord>,
    ) -> Result<Self, TransferError> {
        config.validate()?;
        let run_dir = options.output.clone().unwrap_or_else(|| {
            flint_io::stamp::run_dir(&format!("finetune-{}", config.strategy.name()))
        });
        if !resume {
            // A new or empty folder only, as for `flint train`: never replace a user's files.
            flint_train::prepare_run_dir(&run_dir)?;
            let run_config = RunConfig {
                finetune: config.clone(),
                classes: data.class_names(),
                source,
            };
            let json = serde_json::to_vec_pretty(&run_config)
                .map_err(|e| TransferError::Invalid(e.to_string()))?;
            checkpoint::write_atomic(&run_dir.join("config.json"), &json)?;
        }
        Ok(Self {
            config,
            data,
            run_dir,
            progress: Progress::new(options.progress),
            resume,
            stop_after: options.stop_after,
            extract_secs: 0.0,
            cache: None,
        })
    }

    fn run(
        mut self,
        pretrained: Pretrained,
        options: &FinetuneOptions,
        start: Instant,
    ) -> Result<FinetuneOutcome, TransferError> {
        for file in self.data.skipped() {
            self.progress
                .warn(&format!("skipped {}: {}", file.path.display(), file.reason));
        }
        let device = options.device.clone();
        device.seed(self.config.seed);
        device.clone().autodiff().seed(self.config.seed);
        let (trained, final_val) = match self.config.strategy {
            Strategy::FeatureExtract => self.feature_extract(pretrained, options, &device)?,
            Strategy::Finetune | Strategy::Gradual => self.train_network(pretrained, &device)?,
        };
        let best = trained.best_epoch.map_or((f64::NEG_INFINITY, 0), |e| {
            (trained.history[e - 1].val_accuracy, e)
        });
        let wall_secs = start.elapsed().as_secs_f64();
        if !trained.interrupted {
            self.finish(&trained.history, best, &final_val, wall_secs)?;
        }
        Ok(FinetuneOutcome {
            run_dir: self.run_dir.clone(),
            history: trained.history,
            best,
            final_val,
            wall_secs,
            extract_secs: self.extract_secs,
            cache: self.cache.clone(),
        })
    }

    fn loop_config(&self) -> LoopConfig {
        let c = self.config;
        LoopConfig::new()
            .with_epochs(c.epochs)
            .with_batch_size(c.batch_size)
            .with_optimizer(c.optimizer.clone())
            .with_schedule(c.schedule.clone())
            .with_seed(c.seed)
    }

    /// Frozen backbone: features once (cached), then the head alone on them.
    fn feature_extract(
        &mut self,
        pretrained: Pretrained,
        options: &FinetuneOptions,
        device: &Device,
    ) -> Result<(Trained<TransferModel>, EvalReport), TransferError> {
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
        // The weights (for ONNX: the file's SHA-256 and the cut), whatever name they were
        // asked by; the input spec is in `transform`.
        let model_id = pretrained.weights_id.clone();
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
                    &LoaderOptions::new(EVAL_BATCH).workers(config.workers),
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
        let classes = self.data.class_names();
        let val = FeatureBatches::new(features.pop().expect("val"), classes.clone());
        let train = FeatureBatches::new(features.pop().expect("train"), classes.clone());

        // The network `flint predict` runs: the frozen backbone carried along with the head.
        let train_device = device.clone().autodiff();
        let model = TransferModel {
            head: Head::new(
                pretrained.feature_dim,
                classes.len(),
                config.head_dropout,
                &train_device,
            )?,
            backbone: pretrained.backbone,
        };
        let model = freeze::freeze(model, r"^backbone\.")?;
        let trained = Engine::new(self.loop_config(), &train)
            .devices(vec![device.clone()])
            .eval(EvalSet {
                data: &val,
                name: "val",
                batch_size: 1000,
            })
            .run_dir(&self.run_dir)
            .progress(self.progress.mode())
            .stop_after(self.stop_after)
            .fit(model, self.resume)?;
        let final_val = evaluate_model(&trained.model.valid(), &val, 1000, device)?;
        Ok((trained, final_val))
    }

    /// The whole network trains (`finetune`), or the head first and the backbone group by
    /// group (`gradual`).
    fn train_network(
        &mut self,
        pretrained: Pretrained,
        device: &Device,
    ) -> Result<(Trained<TransferModel>, EvalReport), TransferError> {
        let config = self.config;
        let classes = self.data.class_names();
        let input = pretrained.input.clone();
        let train_device = device.clone().autodiff();
        let model = TransferModel {
            head: Head::new(
                pretrained.feature_dim,
                classes.len(),
                config.head_dropout,
                &train_device,
            )?,
            backbone: pretrained.backbone,
        };
        let backbone_group: ParamGroup = freeze::group(&model, r"^backbone\.")?;
        let stages = backbone_groups(&model, config.groups);
        let train = SplitBatches {
            data: self.data,
            val: false,
            augment: config.augment,
            input: &input,
            workers: config.workers,
        };
        let val = SplitBatches {
            val: true,
            augment: false,
            ..train
        };
        // Which backbone groups train depends on the epoch alone, so a resumed run freezes
        // exactly as the uninterrupted one did.
        let mut unfrozen = usize::MAX;
        let set_trainable = move |epoch: usize,
                                  mut model: TransferModel,
                                  progress: &Progress|
              -> Result<TransferModel, HookError> {
            let trainable = match config.strategy {
                Strategy::Gradual => ((epoch - 1) / config.unfreeze_every).min(stages.len()),
                _ => stages.len(),
            };
            if trainable == unfrozen {
                return Ok(model);
            }
            model = freeze::freeze(model, r"^backbone\.")?;
            if trainable == stages.len() {
                // The whole backbone, including layers without parameters (dropout, DropPath),
                // which a group of parameter paths would leave in inference mode.
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
                progress.info(&format!(
                    "epoch {epoch}: {trainable} of {} backbone groups training",
                    stages.len()
                ));
            }
            unfrozen = trainable;
            Ok(model)
        };
        let trained = Engine::new(self.loop_config(), &train)
            .devices(vec![device.clone()])
            .eval(EvalSet {
                data: &val,
                name: "val",
                batch_size: EVAL_BATCH,
            })
            .run_dir(&self.run_dir)
            .progress(self.progress.mode())
            .stop_after(self.stop_after)
            .lr_group(backbone_group, config.backbone_lr_factor)
            .on_epoch(set_trainable)
            .fit(model, self.resume)?;
        let final_val = evaluate_model(&trained.model.valid(), &val, EVAL_BATCH, device)?;
        Ok((trained, final_val))
    }

    fn finish(
        &self,
        history: &[EpochMetrics],
        best: (f64, usize),
        final_val: &EvalReport,
        wall_secs: f64,
    ) -> Result<(), TransferError> {
        let skipped = self.data.skipped();
        let result = serde_json::json!({
            "strategy": self.config.strategy.name(),
            "pretrained": self.config.pretrained,
            "best_val_accuracy": best.0,
            "best_epoch": best.1,
            "final_val_accuracy": final_val.accuracy,
            "final_val_loss": final_val.loss,
            "per_class_accuracy": final_val.per_class_accuracy,
            "epochs": history.len(),
            "wall_secs": wall_secs,
            "feature_extraction_secs": self.extract_secs,
            "feature_cache": self.cache.as_ref().map(|c| format!("{c:?}")),
            "skipped_files": skipped
                .iter()
                .map(|f| serde_json::json!({
                    "path": f.path,
                    "kind": f.kind.as_str(),
                    "reason": f.reason,
                }))
                .collect::<Vec<_>>(),
        });
        write_run_files(
            &self.run_dir,
            history,
            "val",
            |plotted| {
                report::report_markdown(
                    self.config,
                    &skipped,
                    history,
                    best,
                    final_val,
                    wall_secs,
                    self.extract_secs,
                    self.cache.as_ref(),
                    plotted,
                )
            },
            result,
        )?;
        match self.progress.mode() {
            ProgressMode::Json => println!(
                "{}",
                serde_json::json!({"event": "val", "best_accuracy": best.0,
                    "best_epoch": best.1, "final_accuracy": final_val.accuracy,
                    "run_dir": self.run_dir.display().to_string()})
            ),
            ProgressMode::Bar => {
                println!("run directory: {}", self.run_dir.display());
                println!(
                    "best epoch: {} (final val accuracy {:.4})",
                    best.1, final_val.accuracy
                );
                println!("val accuracy: {:.4}", best.0);
            }
            ProgressMode::Quiet => println!("val accuracy: {:.4}", best.0),
            ProgressMode::Silent => {}
        }
        Ok(())
    }
}

/// The groups gradual unfreezing trains from the top down: the backbone's parameters, from the
/// input to the output (declaration order; an ONNX backbone's in the order its graph uses
/// them), split into `groups` contiguous groups of about the same number of tensors, each as a
/// pattern matching exactly its paths.
pub fn backbone_groups(model: &TransferModel, groups: usize) -> Vec<String> {
    let mut paths: Vec<String> = freeze::parameters(model)
        .into_iter()
        .filter(|p| p.path.starts_with("backbone."))
        .map(|p| p.path)
        .collect();
    // An ONNX module lists batch norm tensors after the others: order them as the graph
    // uses them, so each group is a contiguous stretch of the network.
    if let Backbone::Onnx(onnx) = &model.backbone {
        paths.sort_by_key(|p| onnx.order_of(p.strip_prefix("backbone.Onnx.").unwrap_or(p)));
    }
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
