//! flint's training engine.
//!
//! [`train`] runs a [`TrainConfig`]: data from flint-data, a model from flint-models, an
//! optimiser (SGD with momentum/Nesterov, Adam, AdamW; weight decay; global gradient-norm
//! clipping; L1/L2 penalties and max-norm, [`step`]) and a learning-rate schedule (constant, cosine, step; linear warm-up). Each run
//! gets a directory with `config.json`, `metrics.csv`, `report.md`, `curves.png`,
//! `result.json` and `checkpoints/{last,best}/`; [`resume`] continues it exactly.
//!
//! # Why a loop of our own, not burn-train's `Learner`
//!
//! burn-train's `SupervisedTraining` is built around its own metrics, renderers and
//! checkpointers. flint needs things it does not offer as such: a resume that replays the
//! uninterrupted run bit for bit (every epoch's shuffling, dropout masks and augmentation derive
//! from `(seed, epoch)`), atomic checkpoints with checksums that refuse corrupt files, a stop
//! that names the epoch and batch where the loss stopped being finite, PyTorch's global
//! gradient-norm clipping, and output that scripts can read (quiet and JSON-lines modes,
//! `test accuracy: <fraction>` as the last line). The loop is ~200 lines over burn's own
//! optimisers (`ModuleOptimizer`), loss and data loaders, so nothing numerical is re-invented.

pub mod checkpoint;
pub mod config;
pub mod cpu;
pub mod error;
pub mod memory;
pub mod metrics;
pub mod optim;
pub mod progress;
pub mod report;
pub mod step;
pub mod trainer;

pub use config::{
    EarlyStoppingConfig, OptimizerConfig, OptimizerKind, ScheduleConfig, ScheduleKind, TrainConfig,
};
pub use error::TrainError;
pub use memory::{ResidentMemory, resident_memory};
pub use metrics::{ConfusionMatrix, EpochMetrics, EpochTally, EvalAccumulator, EvalReport};
pub use progress::ProgressMode;
pub use step::{RegularizationConfig, StepOutput, StepRule, training_step};
pub use trainer::{
    RunData, RunOptions, RunOutcome, check_model_fits, evaluate, load_data, load_trained,
    prepare_run_dir, resume, train,
};
