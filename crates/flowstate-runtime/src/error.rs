//! What can stop a job ([`RuntimeError`]), with the sources of its failures kept.

use flowstate_core::StateError;

use crate::ownership;

/// An error of user code (a connector, a function), kept with its sources.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What can stop a job.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// A source or sink failed (names which and what it was doing).
    #[error("{what}: {source}")]
    Connector {
        /// The connector and what it was doing.
        what: String,
        /// Its error.
        #[source]
        source: BoxError,
    },
    /// A state operation failed.
    #[error(transparent)]
    State(#[from] StateError),
    /// The job configuration cannot run.
    #[error("invalid job configuration: {0}")]
    Config(String),
    /// A process function used state before `open` declared it.
    #[error("a process function used its state before `open` declared it")]
    NotOpened,
    /// User code reported a failure (kept with its sources; see
    /// [`RuntimeError::user`]).
    #[error("user function failed: {0}")]
    User(#[source] BoxError),
    /// A worker thread failed (timely reports it as text).
    #[error("worker failed: {0}")]
    Worker(String),
    /// Checkpointing failed (storage, too many aborted checkpoints).
    #[error("checkpointing failed: {0}")]
    Checkpoint(String),
    /// State could not be restored from a snapshot (corrupt or missing files).
    #[error("restore failed: {0}")]
    Restore(String),
    /// Checkpoints exist but none could be restored: the job does not start empty on
    /// its own (that would lose their state and repeat committed output).
    #[error(
        "checkpoints exist but none can be restored: {}; repair or move them away, or \
         start empty on purpose (RestoreFrom::Nothing, `--fresh`)",
        render_candidates(.candidates)
    )]
    NothingRestorable {
        /// Every candidate checkpoint, newest first, with why it could not be used.
        candidates: Vec<(u64, String)>,
    },
    /// The final checkpoint (taken when every source has ended) failed, so the job's
    /// last output is not committed. [`execute`](crate::execute) restarts a single-process job from
    /// its latest checkpoint when no more failures in a row than tolerated occurred;
    /// this is returned otherwise (and by the processes of a cluster, whose
    /// supervisor restarts them).
    #[error("checkpointing failed: {why}")]
    FinalCheckpointFailed {
        /// The final checkpoint's id.
        id: u64,
        /// Checkpoints failed in a row, this one included.
        failures: u32,
        /// Why it failed (names the checkpoint).
        why: String,
        /// The newest checkpoint the run completed, if any.
        last_complete: Option<u64>,
    },
    /// The job was cancelled through its [`JobHandle`](crate::JobHandle).
    #[error("the job was cancelled")]
    Cancelled,
    /// The job may not use a directory (not its own, locked by another job, ...).
    #[error(transparent)]
    Ownership(#[from] ownership::OwnershipError),
}

impl RuntimeError {
    /// A failure of user code, e.g. `Err(RuntimeError::user(e))?` in a process
    /// function: the job fails (and restarts from its last checkpoint) with `e` as the
    /// error's source.
    pub fn user(e: impl Into<BoxError>) -> Self {
        RuntimeError::User(e.into())
    }
}

fn render_candidates(candidates: &[(u64, String)]) -> String {
    candidates
        .iter()
        .map(|(id, why)| format!("checkpoint {id}: {why}"))
        .collect::<Vec<_>>()
        .join("; ")
}
