//! Training errors: each names what failed and what to do about it.

use std::path::PathBuf;

/// Everything that can stop a run.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// A configuration value is out of range.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A configuration file cannot be read, is not valid JSON of the configuration, or has a
    /// key the configuration does not know.
    #[error("cannot read config {path}: {reason}")]
    ConfigFile { path: PathBuf, reason: String },
    /// The data could not be found or read.
    #[error(transparent)]
    Data(#[from] flint_data::DataError),
    /// A file or folder could not be read or written.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A checkpoint is missing, corrupt, or from another configuration.
    #[error("checkpoint {path}: {reason}")]
    Checkpoint { path: PathBuf, reason: String },
    /// The loss stopped being a finite number, or exploded far above any loss a training run
    /// reaches (see [`crate::step::loss_diverged`]).
    #[error(
        "the loss {} {loss:e} at epoch {epoch}, batch {batch}{}. {}",
        if loss.is_finite() { "exploded to" } else { "became" },
        if loss.is_finite() {
            format!(
                " (more than {}x the {uniform:.2} of a uniform guess): the run diverged and \
                 training stopped; lower the learning rate",
                crate::step::DIVERGENCE_FACTOR
            )
        } else {
            ": training stopped".to_string()
        },
        match checkpoint {
            Some(p) => format!("The last good checkpoint is kept in {}.", p.display()),
            None => "No epoch had completed, so there is no checkpoint.".to_string(),
        }
    )]
    Diverged {
        epoch: usize,
        batch: usize,
        loss: f32,
        /// The cross-entropy of a uniform guess over the classes, `ln(classes)`.
        uniform: f32,
        checkpoint: Option<PathBuf>,
    },
    /// The output folder already holds a run.
    #[error(
        "{0} already holds a run (config.json); continue it with --resume {0}, or choose another --output"
    )]
    RunExists(PathBuf),
    /// The output folder holds files flint did not write: a run never replaces them.
    #[error(
        "{path} is not empty ({found}); a run is written only into a new or empty folder: choose another --output"
    )]
    OutputNotEmpty { path: PathBuf, found: String },
    /// A caller's hook (an epoch-start or step callback of [`crate::engine::Engine`]) failed.
    #[error(transparent)]
    Hook(Box<dyn std::error::Error + Send + Sync>),
    /// A report or plot could not be written.
    #[error("report: {0}")]
    Report(String),
    /// A data-parallel step failed on one of the devices.
    #[error(transparent)]
    Parallel(#[from] crate::parallel::ParallelError),
}

impl TrainError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}
