//! What the file connectors fail with (boxed into [`crate::RuntimeError::Connector`],
//! sources kept).

use std::path::PathBuf;

/// A failure of the file source or the file sink.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FileError {
    /// The file system refused an operation on `path`.
    #[error("{}: {what}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What was being done (`cannot open`, `read error at byte 17`, ...).
        what: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A line could not be parsed into a record.
    #[error("{}: bad record in the line at byte {offset}: {message}", path.display())]
    BadRecord {
        /// The file.
        path: PathBuf,
        /// The line's first byte.
        offset: u64,
        /// Why.
        message: String,
    },
    /// Restored state names something the connector was not configured for (another
    /// file, a path outside the sink's directory): refused.
    #[error("{0}")]
    Refused(String),
}

impl FileError {
    /// An I/O error of `what` on `path`, for `map_err`.
    pub(crate) fn io(
        path: impl Into<PathBuf>,
        what: impl Into<String>,
    ) -> impl FnOnce(std::io::Error) -> FileError {
        let (path, what) = (path.into(), what.into());
        move |source| FileError::Io { path, what, source }
    }
}
