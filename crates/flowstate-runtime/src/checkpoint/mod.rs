//! Checkpoints of a running job: settings, the per-process coordinator, the
//! `_metadata` of a complete checkpoint, recovery and retention.
//!
//! **Barriers are timestamps.** Every record's timely time carries its checkpoint
//! interval (`crate::time`). Triggering checkpoint `c` moves every source from
//! interval `c` to `c + 1` (a source snapshots its read position as it moves); an
//! operator whose input frontier has passed interval `c` has received every record of
//! checkpoints `<= c` and none later is processed before it snapshots: that is the
//! aligned Chandy–Lamport cut, with timely's progress tracking doing the alignment.
//! Records of checkpoint `c` an operator cannot process yet (waiting for the
//! watermark) are part of its snapshot (`_inflight` keyed state). A keyed operator
//! processes them first after a restore, before any record read after it: a restored
//! source whose splits moved may run at a lower watermark than the one that sent them,
//! and a record must never overtake one sent before it from its split (Flink,
//! processing records on arrival, does the same: a record may precede a timer earlier
//! than it). A broadcast operator processes them at their own epochs (a keyed record
//! sees the broadcast state of its epoch), so there a record read after a restore that
//! moved splits can still overtake one held in flight.
//!
//! **Two phases.** The synchronous part runs on the worker thread (backend snapshot,
//! source position, sink pre-commit); the asynchronous part writes the files on its
//! own thread and acknowledges to the `Coordinator`. When every task of every worker
//! has acknowledged, the coordinator writes `chk-<id>/_metadata` in one atomic put,
//! registers shared files, applies retention, and workers deliver
//! `notify_checkpoint_complete` to their operators (sinks commit, the RocksDB backend
//! learns which uploaded files later checkpoints may reuse).
//!
//! **Layout** (`docs/formats.md`): `chk-<id>/<operator>-<subtask>.kgs|.ops` and
//! `chk-<id>/_metadata`; `shared/` holds RocksDB files of incremental checkpoints;
//! `savepoints/sp-<id>/` holds savepoints (`taskowned/` is reserved). A checkpoint
//! without `_metadata` is not a checkpoint: a crash at any moment leaves every earlier
//! complete one intact.
//!
//! **Several processes.** Every process has a coordinator for its own workers.
//! Process 0 leads: it triggers, times out, completes (writes `_metadata`) and retains;
//! the others learn of triggers, aborts, completions and the final checkpoint from it,
//! and send it their tasks' acknowledgements, over a small timely dataflow of its own
//! (`Control`). The cut stays consistent without any clock agreement: the interval
//! coordinate of the timestamps is the barrier wherever it is advanced.

mod cleanup;
mod config;
mod control;
mod coordinator;
mod metadata;
mod requests;
mod restore;
mod schedule;

pub(crate) use cleanup::clean_up_after_crash;
pub use config::{CheckpointConfig, ClaimMode, RestoreFrom};
pub(crate) use control::{Control, ProcessRole, TaskAck};
pub(crate) use coordinator::Coordinator;
pub use flowstate_core::checkpoint_metadata::{
    CheckpointMetadata, METADATA_VERSION, OperatorSnapshotMeta, SnapshotKind,
};
pub use metadata::{Listed, list_checkpoints, read_metadata};
pub use requests::{request_savepoint, withdraw_savepoint_request};
pub use restore::Restored;
pub(crate) use restore::restore_candidates;

/// A file in the checkpoint directory that asks the running job for a savepoint.
pub const SAVEPOINT_REQUEST: &str = "_savepoint_request";

/// The format of a savepoint.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SavepointFormat {
    /// Backend-independent: restores on any backend at any parallelism (default).
    #[default]
    Canonical,
    /// The backend's own files (RocksDB: its SST files, self-contained under the
    /// savepoint's directory): faster to take and restore, same backend only.
    Native,
}
