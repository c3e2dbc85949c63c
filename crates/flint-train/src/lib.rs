//! flint's training engine: one loop for every model and every run.
//!
//! [`Engine`] trains any burn module that says how it turns a batch into logits and a loss
//! ([`TrainStep`]; image classifiers implement [`Classify`] instead), on any data that makes an
//! epoch's batches from a seed ([`Batches`]; [`DatasetBatches`] wraps a burn `Dataset` and
//! `Batcher`). It brings the optimisers (SGD with momentum/Nesterov, Adam, AdamW; weight decay),
//! the schedules (constant, cosine, step; linear warm-up), per-parameter-group learning rates,
//! global gradient-norm clipping, L1/L2 penalties and max-norm ([`step`]), early stopping,
//! atomic checkpoints with exact resume, the stop on a diverged loss naming epoch and batch,
//! and progress as a bar, quietly or as JSON lines. `flint train` ([`train`], [`resume`]),
//! fine-tuning (flint-transfer) and the experiments all run through it. A run directory holds
//! `config.json`, `metrics.csv`, `report.md`, `curves.png`, `result.json` and
//! `checkpoints/{last,best}/`.
//!
//! # Training your own model
//!
//! A model and a batch of your own, in a few lines (this example runs as a test):
//!
//! ```
//! use burn::data::dataloader::batcher::Batcher;
//! use burn::data::dataset::InMemDataset;
//! use burn::module::Module;
//! use burn::nn::{Linear, LinearConfig};
//! use burn::prelude::*;
//! use flint_train::{
//!     DatasetBatches, Engine, EvalSet, Forward, LoopConfig, OptimizerConfig, TrainStep,
//! };
//!
//! #[derive(Module, Debug)]
//! struct Net {
//!     layer: Linear,
//! }
//!
//! #[derive(Clone, Debug)]
//! struct Batch {
//!     x: Tensor<2>,
//!     y: Tensor<1, Int>,
//! }
//!
//! // What the engine needs from a model: the loss and logits of a batch.
//! impl TrainStep<Batch> for Net {
//!     fn forward_batch(&self, batch: Batch) -> Forward {
//!         Forward::cross_entropy(self.layer.forward(batch.x), batch.y)
//!     }
//! }
//!
//! struct Points;
//!
//! impl Batcher<([f32; 2], i64), Batch> for Points {
//!     fn batch(&self, items: Vec<([f32; 2], i64)>, device: &Device) -> Batch {
//!         let n = items.len();
//!         let x: Vec<f32> = items.iter().flat_map(|(p, _)| *p).collect();
//!         let y: Vec<i64> = items.iter().map(|(_, c)| *c).collect();
//!         Batch {
//!             x: Tensor::from_data(TensorData::new(x, [n, 2]), device),
//!             y: Tensor::from_data(TensorData::new(y, [n]), device),
//!         }
//!     }
//! }
//!
//! // Two classes: above or below the diagonal.
//! let points: Vec<([f32; 2], i64)> = (0..256)
//!     .map(|i| {
//!         let (a, b) = ((i * 37 % 100) as f32 / 50.0 - 1.0, (i * 61 % 100) as f32 / 50.0 - 1.0);
//!         ([a, b], i64::from(a > b))
//!     })
//!     .collect();
//! let data = DatasetBatches::new(InMemDataset::new(points), Points, vec!["below".into(), "above".into()]);
//!
//! let device = Device::flex();
//! let model = Net { layer: LinearConfig::new(2, 2).init(&device.clone().autodiff()) };
//! let config = LoopConfig::new()
//!     .with_epochs(20)
//!     .with_batch_size(32)
//!     .with_optimizer(OptimizerConfig::new().with_lr(0.05));
//! let trained = Engine::new(config, &data)
//!     .devices(vec![device])
//!     .eval(EvalSet { data: &data, name: "train", batch_size: 256 })
//!     .fit(model, false)?;
//! assert!(trained.history.last().unwrap().val_accuracy > 0.9);
//! # Ok::<(), flint_train::TrainError>(())
//! ```
//!
//! `.run_dir(dir)` adds `metrics.csv` and checkpoints (and `.fit(model, true)` resumes from
//! them), `.progress(ProgressMode::Bar)` a progress bar, `.lr_group(group, factor)` a learning
//! rate per parameter group, `.on_epoch(..)` a change of the model at each epoch's start
//! (gradual unfreezing).
//!
//! # Several devices
//!
//! [`Engine::devices`] takes a list of devices; with more than one the engine trains data
//! parallel ([`parallel`]): each device gets a contiguous share of every epoch's data and, at
//! each step, a batch of the run's batch size from it (the batch size is per device, as in
//! PyTorch's `DistributedDataParallel` and burn-train's sharder); a fork of the model computes
//! that batch's loss and gradients on the device, in its own thread; the gradients are brought
//! to the first device and summed there, each weighted by its share of the step's examples, and
//! the first device takes the optimiser step. Clipping, penalties, max-norm, the divergence
//! check, checkpoints and resume are the same as on one device. (`flint train --devices 0,1`,
//! with `--backend cuda` or `wgpu`.)
//!
//! Why flint's loop calls burn's multi-device primitives ([`Module::fork`](burn::module::Module),
//! `GradientsParams::to_device`, `GradientsAccumulator`) rather than becoming a burn-train
//! learning strategy: burn-train's `MultiDeviceLearningStrategy` does exactly this step (its
//! `MultiDeviceOptim::OptimMainDevice`), but lives inside `SupervisedTraining`, whose
//! checkpointing, metrics and event loop are the parts flint replaces (below); flint's own loop
//! keeps every caller's features on every device count. burn's collective all-reduce
//! (`ExecutionStrategy::ddp`) needs CUDA's collective library and a process group per device; it
//! would replace the gather on the first device for many GPUs, and fits in the same place.
//!
//! # Why a loop of our own, not burn-train's `Learner`
//!
//! burn-train's `SupervisedTraining` is built around its own metrics, renderers and
//! checkpointers. flint needs things it does not offer as such: a resume that replays the
//! uninterrupted run bit for bit (every epoch's shuffling, dropout masks and augmentation derive
//! from `(seed, epoch)`), atomic checkpoints with checksums that refuse corrupt files, a stop
//! that names the epoch and batch where the loss stopped being finite, PyTorch's global
//! gradient-norm clipping, and output that scripts can read (quiet and JSON-lines modes,
//! `test accuracy: <fraction>` as the last line). The loop ([`engine`]) is a few hundred lines over burn's own
//! optimisers (`ModuleOptimizer`), loss and data loaders, so nothing numerical is re-invented.

pub mod adam;
pub mod checkpoint;
pub mod config;
pub mod cpu;
pub mod engine;
pub mod error;
pub mod kernel_profile;
pub mod memory;
pub mod metrics;
pub mod optim;
pub mod parallel;
pub mod progress;
pub mod report;
pub mod step;
pub mod trainer;

pub use config::{
    EarlyStoppingConfig, OptimizerConfig, OptimizerKind, ScheduleConfig, ScheduleKind, TrainConfig,
};
pub use engine::{
    Batches, Classify, DatasetBatches, Engine, EvalSet, Forward, LoopConfig, TrainStep, Trained,
    evaluate_model, write_run_files,
};
pub use error::TrainError;
pub use memory::{ResidentMemory, resident_memory};
pub use metrics::{ConfusionMatrix, EpochMetrics, EpochTally, EvalAccumulator, EvalReport};
pub use progress::ProgressMode;
pub use step::RegularizationConfig;
pub use trainer::{
    ImageBatches, RunData, RunOptions, RunOutcome, check_model_fits, evaluate, load_data,
    load_trained, prepare_run_dir, resume, train,
};
