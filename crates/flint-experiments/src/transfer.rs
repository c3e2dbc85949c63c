//! Protocol T2 of `reference.md`: transfer between the two halves of Fashion-MNIST.
//!
//! Source task: classes 0-4 (T-shirt/top, Trouser, Pullover, Dress, Coat), all their training
//! images. Target task: classes 5-9 (Sandal, Shirt, Sneaker, Bag, Ankle boot) with only `N`
//! labelled training images per class, evaluated on the 5,000 test images of those classes.
//! Six methods are compared over several seeds:
//!
//! | method | network | trains |
//! | --- | --- | --- |
//! | from scratch | reference CNN, random initialisation | everything, at the head's rate |
//! | frozen backbone | source CNN up to its 128 features | the new head only (cached features) |
//! | fine-tune | source CNN up to its 128 features | everything, backbone at `backbone_lr_factor` × |
//!
//! each with a head of `Linear(128, 5)` alone or `Dropout(head_dropout) -> Linear(128, 5)`.
//! The reference CNN's own dropout before its classifier is the head's dropout here, so "from
//! scratch with dropout" is exactly the reference CNN with 5 classes, and "without" is the same
//! network without dropout.
//!
//! Everything trains through `flint_transfer::finetune_with`; the source model is a
//! `Strategy::Finetune` run of a randomly initialised reference CNN on the source classes.
//! Reported accuracy is the model after the last epoch on the full target test set: choosing
//! the best epoch on the test set would be biased, and there is no validation set worth the
//! name with 10 images per class. The per-epoch validation of each run (its `report.md`) uses a
//! small monitor set of the target classes' training images, disjoint from the `N` shots, and
//! influences nothing.
//!
//! The output directory holds `experiment.json` (the configuration), `results.md`,
//! `results.json` and `transfer.png`, one run directory per source model and per target run,
//! and the feature cache. A rerun with the same configuration reuses the finished runs.

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::config::Config;
use burn::module::Module;
use burn::tensor::Device;
use flint_data::{
    ImageBatcher, ImageSet, LabelledSet, LoaderOptions, Locator, Normalize, Split, few_shot,
    filter_classes, random_subset, train_val_split,
};
use flint_io::seed::derive_seed;
use flint_models::{Classifier, CnnConfig};
use flint_train::checkpoint;
use flint_train::{EvalReport, OptimizerConfig, ProgressMode, ScheduleConfig};
use flint_transfer::finetune::{evaluate_loader, finetune_with};
use flint_transfer::{
    Backbone, FinetuneConfig, FinetuneOptions, FinetuneOutcome, Head, InputSpec, Pretrained,
    Strategy, TransferData, TransferModel,
};
use serde::{Deserialize, Serialize};

mod report;

pub use report::{accuracy_table, gain_table, per_class_table, summarize};
use report::{markdown, plot};

use crate::error::ExperimentError;
use crate::output::{claim_output, read_json, relative, remove_stale, write_json};
use crate::plot::{Series, accuracy_plot_png};
use crate::stats::MeanStd;

/// Configuration of the T2 experiment. The defaults are the full protocol as run for flint's
/// results; [`TransferExperimentConfig::quick`] is a seconds-long smoke version.
#[derive(Config, Debug)]
pub struct TransferExperimentConfig {
    /// Labelled target images per class (`N`).
    #[config(default = "vec![10, 50, 100]")]
    pub shots: Vec<usize>,
    /// Number of seeds; seed `s` draws its own shots, source model (unless shared), head
    /// initialisation and batch order.
    #[config(default = 5)]
    pub seeds: usize,
    /// The first seed (seeds are `first_seed..first_seed + seeds`).
    #[config(default = 0)]
    pub first_seed: u64,
    /// Fashion-MNIST classes of the source task.
    #[config(default = "vec![0, 1, 2, 3, 4]")]
    pub source_classes: Vec<usize>,
    /// Fashion-MNIST classes of the target task (relabelled `0..`).
    #[config(default = "vec![5, 6, 7, 8, 9]")]
    pub target_classes: Vec<usize>,
    /// One source model (trained with the first seed) for every seed instead of one per seed.
    #[config(default = false)]
    pub shared_source: bool,
    /// Source training epochs.
    #[config(default = 2)]
    pub source_epochs: usize,
    /// Source batch size (reference: 128).
    #[config(default = 128)]
    pub source_batch_size: usize,
    /// Train the source model on a stratified subset of this many images (`None`: all 30,000).
    #[config(default = "None")]
    pub source_limit: Option<usize>,
    /// Target training epochs, the same for every method.
    #[config(default = 30)]
    pub target_epochs: usize,
    /// Target batch size.
    #[config(default = 16)]
    pub target_batch_size: usize,
    /// Optimiser of every run (reference: Adam, lr 1e-3); its `lr` is the head's. Constant rate.
    #[config(default = "OptimizerConfig::new()")]
    pub optimizer: OptimizerConfig,
    /// Fine-tuning: the backbone's learning rate as a fraction of the head's (scratch: 1). At 1
    /// fine-tuning differs from training from scratch only in the initial weights.
    #[config(default = 1.0)]
    pub backbone_lr_factor: f64,
    /// Dropout rate of the "with dropout" heads (and of the source model's head).
    #[config(default = 0.5)]
    pub head_dropout: f64,
    /// Images per class of the monitor set (target training images outside the shots) that
    /// each run evaluates after every epoch, for its curves only.
    #[config(default = 10)]
    pub monitor_per_class: usize,
    /// Evaluate on a stratified subset of this many test images (`None`: all 5,000 per task).
    #[config(default = "None")]
    pub test_limit: Option<usize>,
    /// Data-loader threads (0: on the training thread, deterministic batch order).
    #[config(default = 0)]
    pub workers: usize,
    /// Keep the target runs' checkpoints (about 8 MB per run, 0.7 GB for the full protocol);
    /// by default they are deleted once the run's final model is evaluated. The source models'
    /// checkpoints are always kept.
    #[config(default = false)]
    pub keep_checkpoints: bool,
}

impl TransferExperimentConfig {
    /// A smoke version for tests and `--quick`: N = 10, one seed, one source epoch on 1,000
    /// images, two target epochs, 500 test images. Seconds, not a result.
    pub fn quick() -> Self {
        Self::new()
            .with_shots(vec![10])
            .with_seeds(1)
            .with_source_epochs(1)
            .with_source_limit(Some(1000))
            .with_target_epochs(2)
            .with_monitor_per_class(5)
            .with_test_limit(Some(500))
    }

    /// Checks the values.
    pub fn validate(&self) -> Result<(), ExperimentError> {
        let bad = |m: String| Err(ExperimentError::Invalid(m));
        if self.shots.is_empty() || self.shots.contains(&0) {
            return bad(format!(
                "shots must be a non-empty list of positive numbers, got {:?}",
                self.shots
            ));
        }
        if self.seeds == 0 {
            return bad("at least one seed is needed".into());
        }
        if self.source_classes.len() < 2 || self.target_classes.len() < 2 {
            return bad("source and target tasks need at least 2 classes each".into());
        }
        if self
            .source_classes
            .iter()
            .any(|c| self.target_classes.contains(c))
        {
            return bad(format!(
                "source classes {:?} and target classes {:?} overlap",
                self.source_classes, self.target_classes
            ));
        }
        if self.source_epochs == 0 || self.target_epochs == 0 {
            return bad("source and target epochs must be at least 1".into());
        }
        if self.source_batch_size == 0 || self.target_batch_size == 0 {
            return bad("batch sizes must be at least 1".into());
        }
        if !(self.head_dropout > 0.0 && self.head_dropout < 1.0) {
            return bad(format!(
                "head dropout must be in (0, 1), got {}",
                self.head_dropout
            ));
        }
        if self.monitor_per_class == 0 {
            return bad("the monitor set needs at least 1 image per class".into());
        }
        Ok(())
    }

    fn seed_list(&self) -> Vec<u64> {
        (0..self.seeds as u64)
            .map(|i| self.first_seed + i)
            .collect()
    }

    fn source_seed(&self, seed: u64) -> u64 {
        if self.shared_source {
            self.first_seed
        } else {
            seed
        }
    }
}

/// How much of the source network a method reuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Approach {
    /// A randomly initialised reference CNN, all trainable.
    Scratch,
    /// The source network frozen; features cached; the head trains.
    Frozen,
    /// The source network and the head train, the backbone at a lower rate.
    Finetune,
}

/// One of the six compared methods.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Method {
    /// Which weights and which parameters train.
    pub approach: Approach,
    /// Whether the head has dropout.
    pub dropout: bool,
}

impl Method {
    /// The methods in table order.
    pub const ALL: [Method; 6] = [
        Method::new(Approach::Scratch, false),
        Method::new(Approach::Scratch, true),
        Method::new(Approach::Frozen, false),
        Method::new(Approach::Frozen, true),
        Method::new(Approach::Finetune, false),
        Method::new(Approach::Finetune, true),
    ];

    const fn new(approach: Approach, dropout: bool) -> Self {
        Self { approach, dropout }
    }

    /// Short name for files and JSON: `scratch`, `frozen-dropout`, ...
    pub fn key(self) -> String {
        let base = match self.approach {
            Approach::Scratch => "scratch",
            Approach::Frozen => "frozen",
            Approach::Finetune => "finetune",
        };
        if self.dropout {
            format!("{base}-dropout")
        } else {
            base.to_string()
        }
    }

    /// Table and legend text.
    pub fn label(self, rate: f64) -> String {
        let base = match self.approach {
            Approach::Scratch => "from scratch",
            Approach::Frozen => "frozen backbone (head only)",
            Approach::Finetune => "full fine-tuning",
        };
        if self.dropout {
            format!("{base} + dropout {rate}")
        } else {
            base.to_string()
        }
    }

    fn color(self) -> (u8, u8, u8) {
        match (self.approach, self.dropout) {
            (Approach::Scratch, false) => (90, 90, 90),
            (Approach::Scratch, true) => (160, 160, 160),
            (Approach::Frozen, false) => (31, 119, 180),
            (Approach::Frozen, true) => (120, 180, 230),
            (Approach::Finetune, false) => (214, 39, 40),
            (Approach::Finetune, true) => (245, 140, 60),
        }
    }
}

/// One trained source model.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SourceResult {
    /// Its seed.
    pub seed: u64,
    /// Training images.
    pub train_images: usize,
    /// Epochs.
    pub epochs: usize,
    /// Accuracy on the source classes' test images after the last epoch.
    pub test_accuracy: f64,
    /// Wall time of its training in seconds.
    pub wall_secs: f64,
    /// Its run directory, relative to the experiment's.
    pub run_dir: String,
}

/// One target run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunResult {
    /// `Method::key`.
    pub method: String,
    /// How much of the source network it reuses.
    pub approach: Approach,
    /// Head dropout rate (0 for none).
    pub head_dropout: f64,
    /// Labelled images per class.
    pub shots: usize,
    /// Seed.
    pub seed: u64,
    /// The source model's seed (`None` from scratch).
    pub source_seed: Option<u64>,
    /// Accuracy of the final model on the target test images.
    pub test_accuracy: f64,
    /// Its mean cross-entropy there.
    pub test_loss: f64,
    /// Test images.
    pub test_images: usize,
    /// Per-class test accuracy, in target-class order.
    pub per_class_accuracy: Vec<f64>,
    /// Training accuracy of the last epoch (training mode, running average).
    pub final_train_accuracy: f64,
    /// Monitor-set accuracy after the last epoch.
    pub final_monitor_accuracy: f64,
    /// Wall time of the run in seconds (training and the final test evaluation).
    pub wall_secs: f64,
    /// Its run directory, relative to the experiment's.
    pub run_dir: String,
}

/// A cell of the results table.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Summary {
    /// `Method::key`.
    pub method: String,
    /// Labelled images per class.
    pub shots: usize,
    /// Test accuracy over the seeds.
    pub accuracy: MeanStd,
    /// Test accuracy minus that of the from-scratch run with the same seed, shots and head
    /// (`None` for the from-scratch rows).
    pub gain_over_scratch: Option<MeanStd>,
}

/// Everything the experiment measured (`results.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TransferResults {
    /// The configuration.
    pub config: TransferExperimentConfig,
    /// The source models.
    pub source: Vec<SourceResult>,
    /// Every target run (`shots × seeds × 6`).
    pub runs: Vec<RunResult>,
    /// Mean ± std per method and `N`.
    pub summary: Vec<Summary>,
    /// Wall time of this invocation in seconds (runs reused from an earlier one not included).
    pub wall_secs: f64,
    /// Sum of the recorded wall times of all source and target runs.
    pub compute_secs: f64,
    /// The markdown report.
    pub results_md: PathBuf,
    /// The raw results.
    pub results_json: PathBuf,
    /// The plot.
    pub plot_png: PathBuf,
}

/// Runs the experiment on Fashion-MNIST as the standard discovery finds it
/// (`$FLINT_DATA`, `./data`, `/usr/share/datasets`, the user cache; downloads when allowed).
pub fn run_transfer_experiment(
    config: &TransferExperimentConfig,
    out_dir: &Path,
    device: &Device,
    progress: &mut dyn FnMut(&str),
) -> Result<TransferResults, ExperimentError> {
    let locator = Locator::new();
    let train = flint_data::fashion_mnist(Split::Train, &locator)?;
    let test = flint_data::fashion_mnist(Split::Test, &locator)?;
    run_transfer_experiment_on(config, &train, &test, out_dir, device, progress)
}

/// Runs the experiment on Fashion-MNIST's training and test sets already loaded.
pub fn run_transfer_experiment_on(
    config: &TransferExperimentConfig,
    train: &ImageSet,
    test: &ImageSet,
    out_dir: &Path,
    device: &Device,
    progress: &mut dyn FnMut(&str),
) -> Result<TransferResults, ExperimentError> {
    let start = Instant::now();
    config.validate()?;
    std::fs::create_dir_all(out_dir).map_err(|e| ExperimentError::io(out_dir, e))?;
    claim_output(config, &TransferExperimentConfig::new(), out_dir)?;
    let data = Data::prepare(config, train, test)?;
    progress(&format!(
        "source task: {} training / {} test images; target task: {} candidate training / {} test images",
        data.source_train.len(),
        data.source_test.len(),
        data.target_train.len(),
        data.target_test.len()
    ));
    let exp = Experiment {
        config,
        out_dir,
        device,
        data: &data,
    };

    let seeds = config.seed_list();
    let total = seeds.len() * config.shots.len() * Method::ALL.len();
    let mut sources = Vec::new();
    let mut runs = Vec::new();
    for &seed in &seeds {
        let source_seed = config.source_seed(seed);
        if !sources.iter().any(|s: &SourceResult| s.seed == source_seed) {
            progress(&format!("source model, seed {source_seed}: training"));
            let s = exp.source_model(source_seed)?;
            progress(&format!(
                "source model, seed {source_seed}: {:.2} % on the source test images ({:.0} s)",
                s.test_accuracy * 100.0,
                s.wall_secs
            ));
            sources.push(s);
        }
        let split = exp.target_split(seed)?;
        for &shots in &config.shots {
            let shot_set = few_shot(&split.pool, shots, derive_seed(seed, 31))?;
            for method in Method::ALL {
                let r = exp.target_run(method, shots, seed, source_seed, &shot_set, &split)?;
                progress(&format!(
                    "[{}/{total}] N={shots} seed {seed} {}: {:.2} % ({:.1} s)",
                    runs.len() + 1,
                    method.label(config.head_dropout),
                    r.test_accuracy * 100.0,
                    r.wall_secs
                ));
                runs.push(r);
            }
        }
    }

    let summary = summarize(config, &runs);
    let results_md = out_dir.join("results.md");
    let results_json = out_dir.join("results.json");
    let plot_png = out_dir.join("transfer.png");
    let wall_secs = start.elapsed().as_secs_f64();
    let compute_secs = sources.iter().map(|s| s.wall_secs).sum::<f64>()
        + runs.iter().map(|r| r.wall_secs).sum::<f64>();
    let results = TransferResults {
        config: config.clone(),
        source: sources,
        runs,
        summary,
        wall_secs,
        compute_secs,
        results_md: results_md.clone(),
        results_json: results_json.clone(),
        plot_png: plot_png.clone(),
    };
    let png = plot(&results)?;
    crate::output::write_bytes(&plot_png, &png)?;
    crate::output::write_bytes(&results_md, markdown(&results, &data).as_bytes())?;
    let json = serde_json::to_vec_pretty(&results)
        .map_err(|e| ExperimentError::Invalid(format!("results.json: {e}")))?;
    crate::output::write_bytes(&results_json, &json)?;
    Ok(results)
}

/// The class-split data sets.
struct Data {
    source_train: ImageSet,
    source_test: ImageSet,
    target_train: ImageSet,
    target_test: ImageSet,
}

impl Data {
    fn prepare(
        config: &TransferExperimentConfig,
        train: &ImageSet,
        test: &ImageSet,
    ) -> Result<Self, ExperimentError> {
        let mut source_train = filter_classes(train, &config.source_classes)?;
        if let Some(n) = config.source_limit {
            source_train = random_subset(&source_train, n.min(source_train.len()), 11)?;
        }
        let mut source_test = filter_classes(test, &config.source_classes)?;
        let target_train = filter_classes(train, &config.target_classes)?;
        let mut target_test = filter_classes(test, &config.target_classes)?;
        if let Some(n) = config.test_limit {
            source_test = random_subset(&source_test, n.min(source_test.len()), 12)?;
            target_test = random_subset(&target_test, n.min(target_test.len()), 13)?;
        }
        Ok(Self {
            source_train,
            source_test,
            target_train,
            target_test,
        })
    }
}

/// A seed's target training data: the pool the shots are drawn from and the monitor set.
struct TargetSplit {
    pool: ImageSet,
    monitor: ImageSet,
}

struct Experiment<'a> {
    config: &'a TransferExperimentConfig,
    out_dir: &'a Path,
    device: &'a Device,
    data: &'a Data,
}

/// Width of the reference CNN's features (its hidden layer).
const FEATURES: usize = 128;

impl Experiment<'_> {
    fn input() -> InputSpec {
        // `flint train` feeds pixels / 255 without normalisation; so does every run here.
        InputSpec {
            channels: 1,
            size: 28,
            resize: 28,
            normalize: Normalize::new(vec![0.0], vec![1.0]).expect("valid"),
        }
    }

    /// The reference CNN with 5 classes and without its own dropout (the heads carry it). As a
    /// backbone only its features are used: its own classifier layer stays unused.
    fn cnn(device: &Device) -> Classifier {
        Classifier::Cnn(
            CnnConfig::reference()
                .with_dropout(0.0)
                .with_num_classes(5)
                .init(device),
        )
    }

    /// A freshly initialised reference CNN as a backbone, seeded.
    fn random_backbone(&self, name: &str, seed: u64, train_device: &Device) -> Pretrained {
        train_device.seed(seed);
        Pretrained {
            name: name.into(),
            backbone: Backbone::Flint(Self::cnn(train_device)),
            input: Self::input(),
            feature_dim: FEATURES,
            classifier: None,
            class_names: None,
            weights_id: format!("random reference cnn, seed {seed}"),
            load_report: None,
            source: None,
        }
    }

    /// The network of a finished run's last checkpoint (backbone + head), on `device`.
    fn load_last(
        run_dir: &Path,
        classes: usize,
        dropout: f64,
        device: &Device,
    ) -> Result<(TransferModel, String), ExperimentError> {
        let skeleton = TransferModel {
            backbone: Backbone::Flint(Self::cnn(device)),
            head: Head::new(FEATURES, classes, dropout, device)?,
        };
        let (dir, state) = checkpoint::load_state(&run_dir.join("checkpoints").join("last"))?;
        let model = checkpoint::load_model(&dir, skeleton)?;
        Ok((model, state.model_sha256))
    }

    fn finetune_config(&self, label: &str, data: &str) -> FinetuneConfig {
        FinetuneConfig::new(label.into(), data.into())
            .with_optimizer(self.config.optimizer.clone())
            .with_schedule(ScheduleConfig::new())
            .with_augment(false)
            .with_workers(self.config.workers)
    }

    fn options(&self, run_dir: &Path) -> FinetuneOptions {
        FinetuneOptions {
            output: Some(run_dir.to_path_buf()),
            device: self.device.clone(),
            progress: ProgressMode::Silent,
            cache_dir: Some(self.out_dir.join("feature-cache")),
            stop_after: None,
        }
    }

    fn source_dir(&self, seed: u64) -> PathBuf {
        self.out_dir.join("source").join(format!("seed{seed}"))
    }

    /// Trains (or reuses) the source model of `seed`.
    fn source_model(&self, seed: u64) -> Result<SourceResult, ExperimentError> {
        let dir = self.source_dir(seed);
        let marker = dir.join("source.json");
        if let Some(done) = read_json::<SourceResult>(&marker) {
            return Ok(done);
        }
        remove_stale(&dir)?;
        let c = self.config;
        let config = self
            .finetune_config(
                &format!("reference cnn (random init, seed {seed})"),
                "fashion-mnist classes 0-4",
            )
            .with_strategy(Strategy::Finetune)
            .with_epochs(c.source_epochs)
            .with_batch_size(c.source_batch_size)
            .with_backbone_lr_factor(1.0)
            .with_head_dropout(c.head_dropout)
            .with_seed(derive_seed(seed, 1));
        let train_device = self.device.clone().autodiff();
        let pretrained = self.random_backbone("reference-cnn", derive_seed(seed, 2), &train_device);
        let data = TransferData::Images {
            train: self.data.source_train.clone(),
            val: self.data.source_test.clone(),
        };
        let outcome = finetune_with(&config, pretrained, &data, &self.options(&dir))?;
        let result = SourceResult {
            seed,
            train_images: self.data.source_train.len(),
            epochs: c.source_epochs,
            test_accuracy: outcome.final_val.accuracy,
            wall_secs: outcome.wall_secs,
            run_dir: relative(&dir, self.out_dir),
        };
        write_json(&marker, &result)?;
        Ok(result)
    }

    /// The source network without its head, as a backbone on `train_device`: loaded from disk
    /// for every run, so no run's training reaches the next.
    fn source_backbone(
        &self,
        source_seed: u64,
        train_device: &Device,
    ) -> Result<Pretrained, ExperimentError> {
        let (model, sha) = Self::load_last(
            &self.source_dir(source_seed),
            self.config.source_classes.len(),
            self.config.head_dropout,
            train_device,
        )?;
        Ok(Pretrained {
            name: format!("source-cnn-seed{source_seed}"),
            backbone: model.backbone,
            input: Self::input(),
            feature_dim: FEATURES,
            classifier: None,
            class_names: None,
            weights_id: sha,
            load_report: None,
            source: None,
        })
    }

    fn target_split(&self, seed: u64) -> Result<TargetSplit, ExperimentError> {
        let all = &self.data.target_train;
        let smallest = all.class_counts().into_iter().min().unwrap_or(0);
        let m = self.config.monitor_per_class;
        let max_shots = self.config.shots.iter().copied().max().unwrap_or(0);
        if smallest < m + max_shots + 1 {
            return Err(ExperimentError::Invalid(format!(
                "a target class has {smallest} training images, too few for {max_shots} shots and {m} monitor images"
            )));
        }
        // Enough per class for the monitor set (round((m + 0.5) / smallest * count) > m).
        let fraction = (m as f64 + 0.5) / smallest as f64;
        let (pool, held_out) = train_val_split(all, fraction, derive_seed(seed, 21))?;
        let monitor = few_shot(&held_out, m, derive_seed(seed, 22))?;
        Ok(TargetSplit { pool, monitor })
    }

    fn target_run(
        &self,
        method: Method,
        shots: usize,
        seed: u64,
        source_seed: u64,
        shot_set: &ImageSet,
        split: &TargetSplit,
    ) -> Result<RunResult, ExperimentError> {
        let dir = self
            .out_dir
            .join("runs")
            .join(format!("n{shots}"))
            .join(format!("seed{seed}"))
            .join(method.key());
        let marker = dir.join("test.json");
        if let Some(done) = read_json::<RunResult>(&marker) {
            return Ok(done);
        }
        remove_stale(&dir)?;
        let start = Instant::now();
        let c = self.config;
        let dropout = if method.dropout { c.head_dropout } else { 0.0 };
        let train_device = self.device.clone().autodiff();
        let (pretrained, strategy, lr_factor, source) = match method.approach {
            Approach::Scratch => (
                self.random_backbone(
                    "reference-cnn",
                    derive_seed(seed, 100 + shots as u64),
                    &train_device,
                ),
                Strategy::Finetune,
                1.0,
                None,
            ),
            Approach::Frozen => (
                self.source_backbone(source_seed, &train_device)?,
                Strategy::FeatureExtract,
                c.backbone_lr_factor,
                Some(source_seed),
            ),
            Approach::Finetune => (
                self.source_backbone(source_seed, &train_device)?,
                Strategy::Finetune,
                c.backbone_lr_factor,
                Some(source_seed),
            ),
        };
        let config = self
            .finetune_config(
                &pretrained.name,
                &format!("fashion-mnist classes 5-9, {shots} per class, seed {seed}"),
            )
            .with_strategy(strategy)
            .with_epochs(c.target_epochs)
            .with_batch_size(c.target_batch_size)
            .with_backbone_lr_factor(lr_factor)
            .with_head_dropout(dropout)
            // The same seed for every method: same head initialisation and batch order.
            .with_seed(derive_seed(seed, shots as u64));
        let data = TransferData::Images {
            train: shot_set.clone(),
            val: split.monitor.clone(),
        };
        let outcome = finetune_with(&config, pretrained, &data, &self.options(&dir))?;
        let test = self.evaluate_last(&dir, dropout)?;
        if !c.keep_checkpoints {
            let ckpt = dir.join("checkpoints");
            std::fs::remove_dir_all(&ckpt).map_err(|e| ExperimentError::io(&ckpt, e))?;
        }
        let result = RunResult {
            method: method.key(),
            approach: method.approach,
            head_dropout: dropout,
            shots,
            seed,
            source_seed: source,
            test_accuracy: test.accuracy,
            test_loss: test.loss,
            test_images: self.data.target_test.len(),
            per_class_accuracy: test.per_class_accuracy.clone(),
            final_train_accuracy: last_epoch(&outcome).0,
            final_monitor_accuracy: last_epoch(&outcome).1,
            wall_secs: start.elapsed().as_secs_f64(),
            run_dir: relative(&dir, self.out_dir),
        };
        write_json(&marker, &result)?;
        Ok(result)
    }

    /// The final model of a target run on the target test images.
    fn evaluate_last(&self, run_dir: &Path, dropout: f64) -> Result<EvalReport, ExperimentError> {
        let test = &self.data.target_test;
        let (model, _) = Self::load_last(run_dir, test.num_classes(), dropout, self.device)?;
        let model = model.valid();
        let dl = flint_data::loader(
            test.clone(),
            ImageBatcher::normalized(Self::input().normalize),
            &LoaderOptions::new(500),
            self.device,
        )?;
        Ok(evaluate_loader(
            |x| model.forward(x),
            dl.as_ref(),
            test.class_names(),
            self.device,
        )?)
    }
}

fn last_epoch(outcome: &FinetuneOutcome) -> (f64, f64) {
    outcome
        .history
        .last()
        .map_or((f64::NAN, f64::NAN), |m| (m.train_accuracy, m.val_accuracy))
}
