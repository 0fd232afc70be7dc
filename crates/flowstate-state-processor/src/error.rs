//! The state processor's errors: every failure names the snapshot, operator or state
//! it concerns and keeps its source.

use std::path::PathBuf;

use flowstate_core::StateError;
use flowstate_core::schema::de::DecodeError;

/// Why a state-processor operation failed. Nothing is written when one is returned
/// (a write that fails removes the files it created).
#[derive(Debug, thiserror::Error)]
pub enum ProcessorError {
    /// The path holds no checkpoint or savepoint (`_metadata`).
    #[error("{path}: no checkpoint or savepoint here ({why})")]
    NotASnapshot {
        /// The path given.
        path: PathBuf,
        /// What was looked for.
        why: String,
    },
    /// The snapshot's `_metadata` cannot be used.
    #[error("{0}")]
    Metadata(String),
    /// A snapshot file is unreadable or damaged.
    #[error("reading {what}: {source}")]
    State {
        /// What was being read.
        what: String,
        /// The reader's error.
        #[source]
        source: StateError,
    },
    /// An operator uid the snapshot does not have.
    #[error("no operator `{uid}` in the snapshot (it has: {known})")]
    UnknownOperator {
        /// The uid asked for.
        uid: String,
        /// The uids it has.
        known: String,
    },
    /// A state name the operator (`*`: every operator asked about) does not have.
    #[error("operator `{uid}` has no state `{state}` (states: {known})")]
    UnknownState {
        /// The operator.
        uid: String,
        /// The state asked for.
        state: String,
        /// The states it has.
        known: String,
    },
    /// A value could not be decoded or encoded through its stored schema.
    #[error("{what}: {source}")]
    Value {
        /// Which value.
        what: String,
        /// Why.
        #[source]
        source: DecodeError,
    },
    /// Input records (bootstrap) are malformed.
    #[error("{what}: {message}")]
    Input {
        /// Where (file and line).
        what: String,
        /// What is wrong.
        message: String,
    },
    /// A request that cannot be carried out as asked.
    #[error("{0}")]
    Invalid(String),
    /// What was written does not read back as what was meant; the output was removed.
    #[error("verification of the written savepoint failed: {0}")]
    Verification(String),
    /// Reading the input or writing the output failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// Results of the state processor.
pub type Result<T, E = ProcessorError> = std::result::Result<T, E>;

/// Wraps a backend-format error with what was being read.
pub(crate) fn state_err(what: impl Into<String>) -> impl FnOnce(StateError) -> ProcessorError {
    let what = what.into();
    move |source| ProcessorError::State { what, source }
}

/// Wraps an I/O error with what was being done.
pub(crate) fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ProcessorError {
    let what = what.into();
    move |source| ProcessorError::Io { what, source }
}
