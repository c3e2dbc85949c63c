//! Errors of the experiments.

use std::path::PathBuf;

/// What can stop an experiment.
#[derive(Debug, thiserror::Error)]
pub enum ExperimentError {
    /// A configuration that cannot run.
    #[error("{0}")]
    Invalid(String),
    /// The output folder holds another experiment's results.
    #[error(
        "{path} holds the results of a different configuration; choose another output folder or delete it"
    )]
    OtherExperiment {
        /// The experiment's configuration file.
        path: PathBuf,
    },
    /// Data loading and splitting.
    #[error(transparent)]
    Data(#[from] flint_data::DataError),
    /// A training or fine-tuning run.
    #[error(transparent)]
    Transfer(#[from] flint_transfer::TransferError),
    /// Checkpoints and reports.
    #[error(transparent)]
    Train(#[from] flint_train::TrainError),
    /// Drawing the plot.
    #[error("plot: {0}")]
    Plot(String),
    /// File system.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

impl ExperimentError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}
