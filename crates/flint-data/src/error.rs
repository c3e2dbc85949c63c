//! The one error type of flint-data: every failure names the file and what was wrong with it.

use std::fmt;
use std::path::PathBuf;

/// Everything that can go wrong while finding, reading or preparing data.
///
/// Messages are written for a person: they name the file, what was expected and what was found.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The file could not be opened, read or written.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The file's contents break the format's rules.
    #[error("{path}: {reason}")]
    Format { path: PathBuf, reason: String },

    /// Images and labels disagree on the number of samples.
    #[error(
        "{images} holds {image_count} images but {labels} holds {label_count} labels: they must be the same split"
    )]
    CountMismatch {
        images: PathBuf,
        image_count: usize,
        labels: PathBuf,
        label_count: usize,
    },

    /// A label is not a valid class index.
    #[error(
        "{path}: label {label} at index {index} is out of range (the data set has {classes} classes)"
    )]
    LabelOutOfRange {
        path: PathBuf,
        index: usize,
        label: usize,
        classes: usize,
    },

    /// A data set was looked for everywhere and not found.
    #[error("{dataset} not found. Looked in:\n{tried}\n{hint}")]
    NotFound {
        dataset: String,
        tried: Tried,
        hint: String,
    },

    /// A download failed (network, HTTP status, or checksum).
    #[error("download of {url} failed: {reason}")]
    Download { url: String, reason: String },

    /// Downloaded or local content does not have the expected SHA-256.
    #[error(
        "{what}: SHA-256 mismatch (expected {expected}, got {actual}); the file is corrupt or not the official one"
    )]
    Checksum {
        what: String,
        expected: String,
        actual: String,
    },

    /// An image file could not be decoded.
    #[error("{path}: {reason}")]
    Image { path: PathBuf, reason: String },

    /// Every file of an image folder failed, or it has no class folders.
    #[error("{root}: no usable images ({reason})")]
    NoImages { root: PathBuf, reason: String },

    /// A caller asked for something impossible (bad fraction, unknown class, ...).
    #[error("{0}")]
    InvalidArgument(String),
}

impl DataError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn format(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Self::Format {
            path: path.into(),
            reason: reason.into(),
        }
    }

    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Self::InvalidArgument(message.into())
    }
}

/// A file flint-io could not read or write: an I/O failure stays [`DataError::Io`]; a file that
/// is not regular or is too large is a [`DataError::Format`] naming it.
impl From<flint_io::FsError> for DataError {
    fn from(e: flint_io::FsError) -> Self {
        match e {
            flint_io::FsError::Io { path, source } => Self::Io { path, source },
            other => Self::format(other.path(), other.reason()),
        }
    }
}

/// The places a data set was looked for, each with why it did not serve.
#[derive(Debug, Clone, Default)]
pub struct Tried(pub Vec<(String, String)>);

impl Tried {
    pub(crate) fn push(&mut self, place: impl Into<String>, why: impl Into<String>) {
        self.0.push((place.into(), why.into()));
    }
}

impl fmt::Display for Tried {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (place, why)) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "  {}. {place}: {why}", i + 1)?;
        }
        Ok(())
    }
}

/// Shorthand used across the crate.
pub type Result<T, E = DataError> = std::result::Result<T, E>;
