//! Errors of transfer learning.

use std::path::PathBuf;

/// What can go wrong when loading pretrained weights or fine-tuning.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    /// A weight file that cannot be read as the format its name says.
    #[error("{path}: not a readable {format} file: {reason}")]
    BadFile {
        /// The file.
        path: PathBuf,
        /// The format it was read as.
        format: &'static str,
        /// What the reader said.
        reason: String,
    },
    /// A tensor of the file does not fit the model.
    #[error(
        "{path}: tensor `{tensor}` has shape {found:?} in the file but the model expects {expected:?}"
    )]
    ShapeMismatch {
        /// The file.
        path: PathBuf,
        /// The model's tensor path.
        tensor: String,
        /// The model's shape.
        expected: Vec<usize>,
        /// The file's shape.
        found: Vec<usize>,
    },
    /// Tensors the model needs that the file lacks.
    #[error("{path}: {} model tensor(s) missing from the file: {}{}", missing.len(), missing.iter().take(8).cloned().collect::<Vec<_>>().join(", "), if missing.len() > 8 { ", ..." } else { "" })]
    Missing {
        /// The file.
        path: PathBuf,
        /// The missing model tensors.
        missing: Vec<String>,
    },
    /// Any other problem applying the file's tensors.
    #[error("{path}: {reason}")]
    Apply {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// A pretrained model that is not available in this build or on this machine.
    #[error("{0}")]
    Unavailable(String),
    /// A bad argument (pattern, schedule, strategy, ...).
    #[error("{0}")]
    Invalid(String),
    /// The feature cache.
    #[error("feature cache {path}: {reason}")]
    Cache {
        /// The cache file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// Data loading.
    #[error(transparent)]
    Data(#[from] flint_data::DataError),
    /// Training machinery (checkpoints, reports).
    #[error(transparent)]
    Train(#[from] flint_train::TrainError),
    /// File system.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A tensor of the file holds another kind of values than the model's (integers where the
    /// model has floats).
    #[error("{path}: tensor `{tensor}` holds {found} values but the model expects {expected}")]
    DType {
        /// The file.
        path: PathBuf,
        /// The model's tensor path.
        tensor: String,
        /// The file's element type (`int64`, `bool`, ...).
        found: String,
        /// What the model takes.
        expected: String,
    },
    /// An ONNX file that cannot be read or run (flint-onnx's message names the node, operator
    /// and attribute).
    #[error(transparent)]
    Onnx(#[from] flint_onnx::OnnxError),
}

/// A file flint-io refused or could not read: reported as flint-data reports it.
impl From<flint_io::FsError> for TransferError {
    fn from(e: flint_io::FsError) -> Self {
        Self::Data(e.into())
    }
}

impl TransferError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}
