//! The training loop.

use std::path::{Path, PathBuf};
use std::time::Instant;

use std::sync::Arc;

use burn::data::dataloader::DataLoader;
use burn::prelude::*;
use flint_data::{
    Augment, AugmentedImages, ClassificationBatch, ImageBatcher, ImageSet, KnownDataset,
    LabelledSet, LoaderOptions, Locator, Split, loader, random_subset, train_val_split,
};
use flint_io::seed::derive_seed;
use flint_models::{Classifier, ModelConfig};

use crate::checkpoint;
use crate::config::TrainConfig;
use crate::engine::{Batches, Engine, EvalSet, evaluate_model, write_run_files};
use crate::error::TrainError;
use crate::metrics::{EpochMetrics, EvalReport};
use crate::progress::ProgressMode;
use crate::report::report_markdown;

/// Where a run goes and how it shows progress.
///
/// Runs are reproducible from their seed on a given backend, one run at a time: burn's random
/// generator is shared by the whole process, so two runs training at the same moment in one
/// process draw from it in an unpredictable interleaving.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The run directory; `None` makes `runs/<dataset>-<model>-<timestamp>/`.
    pub output: Option<PathBuf>,
    /// The device to train on (made autodiff for training; evaluation runs without autodiff).
    pub device: Device,
    /// Progress display.
    pub progress: ProgressMode,
    /// Where the data sets are looked for.
    pub locator: Locator,
    /// Stop after this epoch as if interrupted, leaving a run that `resume` continues
    /// (for preemptible machines and time-sliced jobs).
    pub stop_after: Option<usize>,
    /// Further devices to train on, data parallel with `device` (which holds the model and
    /// evaluates): each takes its own batches of the run's batch size. Empty: `device` alone.
    pub parallel_devices: Vec<Device>,
}

impl RunOptions {
    /// Defaults: flex device, progress bar, standard data discovery, `runs/...` directory.
    pub fn new() -> Self {
        Self {
            output: None,
            device: Device::flex(),
            progress: ProgressMode::Bar,
            locator: Locator::new(),
            stop_after: None,
            parallel_devices: Vec::new(),
        }
    }
}

impl Default for RunOptions {
    fn default() -> Self {
        Self::new()
    }
}

/// What a finished run produced.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    /// The run directory.
    pub run_dir: PathBuf,
    /// Metrics of every epoch (including those before a resume).
    pub history: Vec<EpochMetrics>,
    /// The final model on the test set.
    pub test: EvalReport,
    /// Wall time of this invocation, in seconds.
    pub wall_secs: f64,
    /// Whether early stopping ended the run before its last epoch.
    pub stopped_early: bool,
    /// Whether the run stopped at `stop_after` and can be resumed.
    pub interrupted: bool,
}

/// The data of a run.
pub struct RunData {
    /// Training images.
    pub train: ImageSet,
    /// Per-epoch evaluation set (validation split, or the test set).
    pub eval: ImageSet,
    /// `val` or `test`.
    pub eval_name: &'static str,
    /// The test set.
    pub test: ImageSet,
}

/// Loads the training, evaluation and test sets a configuration asks for.
pub fn load_data(config: &TrainConfig, locator: &Locator) -> Result<RunData, TrainError> {
    let dataset: KnownDataset = config
        .dataset
        .parse()
        .map_err(|e: flint_data::DataError| TrainError::Config(e.to_string()))?;
    let load = |split| match dataset {
        KnownDataset::Mnist => flint_data::mnist(split, locator),
        KnownDataset::FashionMnist => flint_data::fashion_mnist(split, locator),
        KnownDataset::Cifar10 => flint_data::cifar10(split, locator),
        KnownDataset::Hymenoptera => Err(flint_data::DataError::InvalidArgument(
            "hymenoptera is an image folder; use `flint finetune`".into(),
        )),
    };
    let mut train = load(Split::Train)?;
    let mut test = load(Split::Test)?;
    if let Some(n) = config.train_limit {
        train = random_subset(&train, n.min(train.len()), derive_seed(config.seed, 101))?;
    }
    if let Some(n) = config.test_limit {
        test = random_subset(&test, n.min(test.len()), derive_seed(config.seed, 102))?;
    }
    let (train, eval, eval_name) = if config.val_fraction > 0.0 {
        let (fit, val) =
            train_val_split(&train, config.val_fraction, derive_seed(config.seed, 103))?;
        (fit, val, "val")
    } else {
        (train, test.clone(), "test")
    };
    // Every split is checked, not only the training one: a test split of other images would
    // otherwise fail in the model's forward pass after a whole epoch of training.
    for (split, set) in [("training", &train), ("test", &test)] {
        check_model_fits(&config.model, set.shape(), set.num_classes()).map_err(|e| match e {
            TrainError::Config(msg) => TrainError::Config(format!("{split} split: {msg}")),
            other => other,
        })?;
    }
    Ok(RunData {
        train,
        eval,
        eval_name,
        test,
    })
}

/// Checks the model's input and output sizes against the data.
pub fn check_model_fits(
    model: &ModelConfig,
    [c, h, w]: [usize; 3],
    classes: usize,
) -> Result<(), TrainError> {
    let (fits, expects, model_classes) = match model {
        ModelConfig::Mlp(m) => (
            m.input_size == c * h * w,
            format!("{} input features", m.input_size),
            m.num_classes,
        ),
        ModelConfig::Cnn(m) => (
            m.in_channels == c && m.image_size == h && h == w,
            format!(
                "[{}, {}, {}] images",
                m.in_channels, m.image_size, m.image_size
            ),
            m.num_classes,
        ),
    };
    if !fits {
        return Err(TrainError::Config(format!(
            "the model expects {expects} but the data set's images are [{c}, {h}, {w}]"
        )));
    }
    if model_classes != classes {
        return Err(TrainError::Config(format!(
            "the model has {model_classes} outputs but the data set has {classes} classes"
        )));
    }
    Ok(())
}

/// Evaluates an inference-mode model on `set` at batch 1000.
pub fn evaluate(
    model: &Classifier,
    set: &ImageSet,
    device: &Device,
) -> Result<EvalReport, TrainError> {
    evaluate_model(model, &ImageBatches::new(set.clone()), EVAL_BATCH, device)
}

/// A run directory name: `<dataset>-<model>-<UTC timestamp>`.
fn default_run_dir(config: &TrainConfig) -> PathBuf {
    flint_io::stamp::run_dir(&format!("{}-{}", config.dataset, config.model.kind()))
}

/// Makes `run_dir` ready for a new run: a new folder, or an empty one. A folder that already
/// holds a run is refused with the way to continue it, and one holding anything else with what
/// it holds: a run never replaces files flint did not write (a user's `report.md`, or `/`).
pub fn prepare_run_dir(run_dir: &Path) -> Result<(), TrainError> {
    if run_dir.join("config.json").exists() {
        return Err(TrainError::RunExists(run_dir.to_path_buf()));
    }
    match std::fs::symlink_metadata(run_dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(TrainError::io(run_dir, e)),
        Ok(meta) if !meta.is_dir() => {
            return Err(TrainError::OutputNotEmpty {
                path: run_dir.to_path_buf(),
                found: "it is a file or link, not a folder".into(),
            });
        }
        Ok(_) => {
            let mut names: Vec<String> = std::fs::read_dir(run_dir)
                .map_err(|e| TrainError::io(run_dir, e))?
                .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
                .collect();
            if !names.is_empty() {
                names.sort();
                let count = names.len();
                names.truncate(3);
                let more = if count > 3 {
                    format!(" and {} more", count - 3)
                } else {
                    String::new()
                };
                return Err(TrainError::OutputNotEmpty {
                    path: run_dir.to_path_buf(),
                    found: format!("it holds {}{more}", names.join(", ")),
                });
            }
        }
    }
    std::fs::create_dir_all(run_dir).map_err(|e| TrainError::io(run_dir, e))
}

/// Trains a new run.
pub fn train(config: &TrainConfig, options: &RunOptions) -> Result<RunOutcome, TrainError> {
    config.validate()?;
    let run_dir = options
        .output
        .clone()
        .unwrap_or_else(|| default_run_dir(config));
    prepare_run_dir(&run_dir)?;
    let json = serde_json::to_vec_pretty(config).map_err(|e| TrainError::Report(e.to_string()))?;
    checkpoint::write_atomic(&run_dir.join("config.json"), &json)?;
    run(config, &run_dir, options, false)
}

/// Continues a run from its last checkpoint, exactly where it stopped. A run killed before its
/// first checkpoint starts again from the beginning (the same seed gives the same run); the
/// temporary copies killed runs leave behind are removed first ([`checkpoint::tidy_run_dir`]).
pub fn resume(run_dir: &Path, options: &RunOptions) -> Result<RunOutcome, TrainError> {
    let config = TrainConfig::load_checked(run_dir.join("config.json"))?;
    config.validate()?;
    run(&config, run_dir, options, true)
}

fn run(
    config: &TrainConfig,
    run_dir: &Path,
    options: &RunOptions,
    resuming: bool,
) -> Result<RunOutcome, TrainError> {
    let start = Instant::now();
    let progress = crate::progress::Progress::new(options.progress);
    let data = load_data(config, &options.locator)?;
    crate::memory::check_model_memory(
        &config.model,
        crate::memory::MemoryUse::Training {
            batch: config.batch_size.min(data.train.len()),
        },
    )?;
    let device = options.device.clone();
    let train_device = device.clone().autodiff();
    device.seed(config.seed);
    train_device.seed(config.seed);
    let model = config.model.init(&train_device);
    progress.info(&format!(
        "training {} on {} ({} images, evaluating on {} {}), run directory {}",
        config.model.kind(),
        config.dataset,
        data.train.len(),
        data.eval.len(),
        data.eval_name,
        run_dir.display()
    ));
    let train = ImageBatches::new(data.train.clone())
        .with_augment(Augment {
            pad_crop: config.augment_pad,
            hflip: config.augment_flip,
        })
        .with_workers(config.workers);
    let eval = ImageBatches::new(data.eval.clone());
    let trained = Engine::new(config.loop_config(), &train)
        .devices(
            std::iter::once(device.clone())
                .chain(options.parallel_devices.iter().cloned())
                .collect(),
        )
        .eval(EvalSet {
            data: &eval,
            name: data.eval_name,
            batch_size: EVAL_BATCH,
        })
        .run_dir(run_dir)
        .progress(options.progress)
        .stop_after(options.stop_after)
        .fit(model, resuming)?;
    let model = trained.model.valid();
    let test = evaluate(&model, &data.test, &device)?;
    if trained.interrupted {
        return Ok(RunOutcome {
            run_dir: run_dir.to_path_buf(),
            history: trained.history,
            test,
            wall_secs: start.elapsed().as_secs_f64(),
            stopped_early: false,
            interrupted: true,
        });
    }
    let wall_secs = start.elapsed().as_secs_f64();
    let history = &trained.history;
    let result = serde_json::json!({
        "test_accuracy": test.accuracy,
        "test_loss": test.loss,
        "per_class_accuracy": test.per_class_accuracy,
        "epochs": history.len(),
        "best_epoch": trained.best_epoch,
        "stopped_early": trained.stopped_early,
        "wall_secs": wall_secs,
        "mean_train_samples_per_sec": history.iter().map(|m| m.samples_per_sec).sum::<f64>() / history.len().max(1) as f64,
        "test_samples_per_sec": test.samples_per_sec,
    });
    let peak_rss_mib = write_run_files(
        run_dir,
        history,
        data.eval_name,
        |plotted| report_markdown(config, history, &test, data.eval_name, wall_secs, plotted),
        result,
    )?;
    progress.finish(&test, run_dir, peak_rss_mib);
    Ok(RunOutcome {
        run_dir: run_dir.to_path_buf(),
        history: trained.history,
        test,
        wall_secs,
        stopped_early: trained.stopped_early,
        interrupted: false,
    })
}

/// Samples per evaluation batch.
const EVAL_BATCH: usize = 1000;

/// An [`ImageSet`] as the engine's data: shuffled and augmented from each epoch's seed.
#[derive(Debug, Clone)]
pub struct ImageBatches {
    set: ImageSet,
    augment: Augment,
    workers: usize,
}

impl ImageBatches {
    /// `set`, without augmentation, loaded on the training thread.
    pub fn new(set: ImageSet) -> Self {
        Self {
            set,
            augment: Augment::default(),
            workers: 0,
        }
    }

    /// Random crops and flips (training epochs only).
    pub fn with_augment(mut self, augment: Augment) -> Self {
        self.augment = augment;
        self
    }

    /// Background loading threads.
    pub fn with_workers(mut self, workers: usize) -> Self {
        self.workers = workers;
        self
    }
}

impl Batches<ClassificationBatch> for ImageBatches {
    fn len(&self) -> usize {
        self.set.len()
    }

    fn class_names(&self) -> Vec<String> {
        self.set.class_names().to_vec()
    }

    fn epoch(
        &self,
        batch_size: usize,
        seed: Option<u64>,
        device: &Device,
    ) -> Result<Arc<dyn DataLoader<ClassificationBatch>>, TrainError> {
        Ok(match seed {
            Some(seed) => loader(
                AugmentedImages::new(self.set.clone(), self.augment, seed)?,
                ImageBatcher::new(),
                &LoaderOptions::new(batch_size)
                    .shuffled(seed)
                    .workers(self.workers),
                device,
            )?,
            None => loader(
                self.set.clone(),
                ImageBatcher::new(),
                &LoaderOptions::new(batch_size),
                device,
            )?,
        })
    }
}

/// Loads a trained model from a run directory or a checkpoint folder, in inference mode.
pub fn load_trained(path: &Path, device: &Device) -> Result<(TrainConfig, Classifier), TrainError> {
    // Accept the run directory, its checkpoints folder, or a checkpoint folder itself.
    let (run_dir, ckpt) = if path.join("config.json").exists() {
        let best = path.join("checkpoints").join("best");
        let last = path.join("checkpoints").join("last");
        let ckpt = if best.join("state.json").exists() {
            best
        } else {
            last
        };
        (path.to_path_buf(), ckpt)
    } else {
        let run = path
            .ancestors()
            .find(|a| a.join("config.json").exists())
            .ok_or_else(|| TrainError::Checkpoint {
                path: path.to_path_buf(),
                reason:
                    "neither a run directory nor a checkpoint inside one (no config.json found)"
                        .into(),
            })?;
        (run.to_path_buf(), path.to_path_buf())
    };
    let config_path = run_dir.join("config.json");
    let config = TrainConfig::load_checked(&config_path)?;
    let (dir, state) = checkpoint::load_state(&ckpt)?;
    checkpoint::check_config_unchanged(&config_path, &state)?;
    let model = checkpoint::load_model(&dir, config.model.init(device))?;
    Ok((config, model.valid()))
}
