//! Typed errors of the state model.
//!
//! Every public entry point of Flowstate's state layer returns [`StateError`]; storage
//! back ends report [`StorageError`], which converts into it. Messages name the state,
//! file or value that was wrong so that an operator reading a log knows what to fix.

use crate::keygroup::KeyGroupRange;
use crate::state::StateKind;

/// Result alias used across the state layer.
pub type StateResult<T> = Result<T, StateError>;

/// A failure to turn a value into bytes or bytes into a value.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SerializationError(pub String);

impl SerializationError {
    /// Builds an error from anything printable.
    pub fn new(msg: impl std::fmt::Display) -> Self {
        SerializationError(msg.to_string())
    }
}

/// A failure of checkpoint storage (local directory, object store, ...).
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The named object does not exist.
    #[error("checkpoint storage: `{path}` not found")]
    NotFound {
        /// Path of the missing object.
        path: String,
    },
    /// The path is not acceptable to the storage (empty segment, `..`, ...).
    #[error("checkpoint storage: invalid path `{path}`: {reason}")]
    InvalidPath {
        /// The offending path.
        path: String,
        /// Why it was refused.
        reason: String,
    },
    /// A read asked for bytes past the end of an object.
    #[error("checkpoint storage: range {start}..{end} out of bounds for `{path}` of {size} bytes")]
    OutOfRange {
        /// Path of the object.
        path: String,
        /// Requested start offset.
        start: u64,
        /// Requested end offset (exclusive).
        end: u64,
        /// Actual object size.
        size: u64,
    },
    /// A call did not finish within the storage's timeout (a hung disk or network).
    #[error("checkpoint storage: {op} `{path}` timed out after {after_ms} ms")]
    TimedOut {
        /// The operation.
        op: &'static str,
        /// Path it was applied to.
        path: String,
        /// The timeout.
        after_ms: u64,
    },
    /// Any other I/O or service error, with the operation and path it happened on.
    #[error("checkpoint storage: {op} `{path}` failed: {message}")]
    Io {
        /// The operation (put, get, list, delete, ...).
        op: &'static str,
        /// Path it was applied to.
        path: String,
        /// The underlying error, rendered.
        message: String,
    },
}

impl StorageError {
    /// Whether trying again may succeed: I/O and service errors and timeouts are
    /// transient; a missing object, a bad path or a range past the end are not. A
    /// restore retries transient errors and never falls back to an older checkpoint
    /// because of one (that would repeat committed output).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            StorageError::Io { .. } | StorageError::TimedOut { .. }
        )
    }
}

/// Every error the state layer can report.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// A state TTL config that cannot be used.
    #[error("invalid state TTL config: {0}")]
    InvalidTtlConfig(String),
    /// Max parallelism outside `1..=32768`.
    #[error("invalid max parallelism {0}: must be in 1..=32768")]
    InvalidMaxParallelism(u32),
    /// Parallelism of 0 or above the max parallelism.
    #[error(
        "invalid parallelism {parallelism} for max parallelism {max_parallelism}: must be in 1..={max_parallelism}"
    )]
    InvalidParallelism {
        /// The requested parallelism.
        parallelism: u32,
        /// The max parallelism it was checked against.
        max_parallelism: u32,
    },
    /// Operator index not below the parallelism.
    #[error("operator index {index} out of range for parallelism {parallelism}")]
    InvalidOperatorIndex {
        /// Requested index.
        index: u32,
        /// Parallelism.
        parallelism: u32,
    },
    /// A key group outside the range this instance owns (or outside the max parallelism).
    #[error("key group {key_group} is outside {range}")]
    KeyGroupOutOfRange {
        /// The key group.
        key_group: u32,
        /// The range it should have been in.
        range: KeyGroupRange,
    },
    /// A keyed state was used before any key was set.
    #[error(
        "no current key set: keyed state `{state}` can only be used while processing a keyed record"
    )]
    NoCurrentKey {
        /// The state that was accessed.
        state: String,
    },
    /// A state was written while [`crate::state::ListState::view`] lends its
    /// elements out (from inside the view's function).
    #[error("state `{state}` cannot be written while `view` lends its elements out")]
    Lent {
        /// The state that was written.
        state: String,
    },
    /// A state name that is not registered or restored.
    #[error("unknown state `{0}`")]
    UnknownState(String),
    /// A state name is empty or otherwise unusable.
    #[error("invalid state name `{name}`: {reason}")]
    InvalidStateName {
        /// The name.
        name: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// The same name was asked for with another kind of state.
    #[error("state `{name}` is a {existing} state, but was requested as a {requested} state")]
    KindMismatch {
        /// The state's name.
        name: String,
        /// Kind it was registered or restored as.
        existing: StateKind,
        /// Kind it was requested as.
        requested: StateKind,
    },
    /// The same name was asked for with other Rust types (value, namespace, ...).
    #[error("state `{name}` was registered with other types: {detail}")]
    TypeMismatch {
        /// The state's name.
        name: String,
        /// What differs.
        detail: String,
    },
    /// A serializer cannot read what was stored, or changes a layout that must not change.
    #[error(
        "state `{state}`: incompatible {what} serializer{}: {reason}",
        at_path(path)
    )]
    IncompatibleSerializer {
        /// The state's name.
        state: String,
        /// Which serializer (key, namespace, value, user key, ...).
        what: &'static str,
        /// Field path of the change inside the type (`lines[].qty`; empty: the type
        /// itself), when the serializer can tell.
        path: Option<String>,
        /// Why the new serializer cannot take over.
        reason: String,
    },
    /// A restore from snapshots of another max parallelism.
    #[error(
        "snapshot `{path}` was taken with max parallelism {snapshot}, but this backend uses {backend}; key groups cannot be remapped"
    )]
    MaxParallelismMismatch {
        /// The snapshot file.
        path: String,
        /// Its max parallelism.
        snapshot: u32,
        /// The backend's.
        backend: u32,
    },
    /// A value could not be serialized or deserialized.
    #[error("state `{state}`: {source}")]
    Serialization {
        /// The state (or other context) being encoded.
        state: String,
        /// The cause.
        #[source]
        source: SerializationError,
    },
    /// A snapshot file failed a check (magic, version, checksum, bounds, structure).
    #[error("corrupt snapshot `{path}`: {detail}")]
    CorruptSnapshot {
        /// The file.
        path: String,
        /// What check failed.
        detail: String,
    },
    /// A snapshot written by a newer, unknown format version.
    #[error("snapshot `{path}` has format version {found}; this build reads up to {supported}")]
    UnsupportedVersion {
        /// The file.
        path: String,
        /// The version found.
        found: u32,
        /// Highest version this build reads.
        supported: u32,
    },
    /// Invalid configuration or argument, with a message naming it.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// Checkpoint storage failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The backend's own store failed (RocksDB, local files, ...).
    #[error("state backend: {op} failed: {message}")]
    Backend {
        /// What was being done.
        op: &'static str,
        /// The underlying error, rendered.
        message: String,
    },
}

/// ` at `path`` for messages naming a field path.
fn at_path(path: &Option<String>) -> String {
    match path.as_deref() {
        None => String::new(),
        Some("") => " (the value itself)".to_string(),
        Some(p) => format!(" at `{p}`"),
    }
}

impl StateError {
    /// A [`StateError::Serialization`] for `state`.
    pub fn serialization(state: &str, source: SerializationError) -> Self {
        StateError::Serialization {
            state: state.to_string(),
            source,
        }
    }

    /// A [`StateError::CorruptSnapshot`] for `path`.
    pub fn corrupt(path: &str, detail: impl Into<String>) -> Self {
        StateError::CorruptSnapshot {
            path: path.to_string(),
            detail: detail.into(),
        }
    }
}
