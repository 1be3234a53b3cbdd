//! Library error type: every variant names the file (or item) and the cause.

use std::path::PathBuf;

/// Errors raised by the expanse library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An input file does not exist or cannot be opened.
    #[error("{path}: {cause}")]
    Open { path: PathBuf, cause: String },
    /// A file exists but is not in a format we can read.
    #[error("{path}: {cause}")]
    Format { path: PathBuf, cause: String },
    /// A file could be read but its content is not usable (1-D data, all NaN, ...).
    #[error("{path}: {cause}")]
    Content { path: PathBuf, cause: String },
    /// Writing an output failed.
    #[error("cannot write {path}: {cause}")]
    Write { path: PathBuf, cause: String },
    /// A user option or parameter is invalid.
    #[error("{0}")]
    Invalid(String),
    /// A run folder was refused before any work: it is busy, not empty, or holds a run of another
    /// config or inputs.
    #[error("{0}")]
    Refused(Box<Error>),
}

impl Error {
    pub(crate) fn open(path: impl Into<PathBuf>, cause: impl ToString) -> Self {
        Error::Open { path: path.into(), cause: cause.to_string() }
    }
    pub(crate) fn format(path: impl Into<PathBuf>, cause: impl ToString) -> Self {
        Error::Format { path: path.into(), cause: cause.to_string() }
    }
    pub(crate) fn content(path: impl Into<PathBuf>, cause: impl ToString) -> Self {
        Error::Content { path: path.into(), cause: cause.to_string() }
    }
    pub(crate) fn write(path: impl Into<PathBuf>, cause: impl ToString) -> Self {
        Error::Write { path: path.into(), cause: cause.to_string() }
    }
}

/// Result alias for the library.
pub type Result<T> = std::result::Result<T, Error>;
