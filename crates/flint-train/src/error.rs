//! Training errors: each names what failed and what to do about it.

use std::path::PathBuf;

/// Everything that can stop a run.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// A configuration value is out of range.
    #[error("invalid configuration: {0}")]
    Config(String),
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
    /// The loss stopped being a finite number.
    #[error(
        "the loss became {loss} at epoch {epoch}, batch {batch}: training stopped. {}",
        match checkpoint {
            Some(p) => format!("The last good checkpoint is kept in {}.", p.display()),
            None => "No epoch had completed, so there is no checkpoint.".to_string(),
        }
    )]
    NonFinite {
        epoch: usize,
        batch: usize,
        loss: f32,
        checkpoint: Option<PathBuf>,
    },
    /// The output folder already holds a run.
    #[error(
        "{0} already holds a run (config.json); continue it with --resume {0}, or choose another --output"
    )]
    RunExists(PathBuf),
    /// A report or plot could not be written.
    #[error("report: {0}")]
    Report(String),
}

impl TrainError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}
