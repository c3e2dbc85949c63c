//! Flags that `flint train` and `flint finetune` share, flattened into both with clap's
//! `#[command(flatten)]`: the optimiser and schedule, and where a run goes and how it reports.

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use flint_train::{OptimizerConfig, OptimizerKind, ProgressMode, ScheduleConfig, ScheduleKind};

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

/// The optimiser and the learning-rate schedule. Every flag is optional: the run's defaults
/// (or its config file) hold where one is not given.
#[derive(Args, Debug, Clone)]
pub struct OptimArgs {
    /// Optimiser.
    #[arg(long, value_enum)]
    pub optimizer: Option<OptimizerArg>,
    /// Peak learning rate (fine-tuning: the head's).
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
    /// Clip the global gradient norm before each step.
    #[arg(long)]
    pub clip_grad_norm: Option<f64>,
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
}

impl OptimArgs {
    /// Sets the values given on the command line.
    pub fn apply(&self, o: &mut OptimizerConfig, s: &mut ScheduleConfig) {
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
    }
}

/// Where a run goes, when it stops and how it reports.
#[derive(Args, Debug, Clone)]
pub struct OutputArgs {
    /// Run directory (default: a new folder under runs/).
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// Stop after this epoch, leaving a run that --resume continues (preemptible machines).
    #[arg(long)]
    pub stop_after: Option<usize>,
    /// Print only the final line.
    #[arg(long, conflicts_with = "json")]
    pub quiet: bool,
    /// Print one JSON object per epoch and one for the result.
    #[arg(long)]
    pub json: bool,
}

impl OutputArgs {
    /// The progress display the flags ask for.
    pub fn progress(&self) -> ProgressMode {
        if self.json {
            ProgressMode::Json
        } else if self.quiet {
            ProgressMode::Quiet
        } else {
            ProgressMode::Bar
        }
    }
}
