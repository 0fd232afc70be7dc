//! What the coordinators of a job's processes tell each other, where a process stands
//! in the job, and a task's acknowledgement of a checkpoint (sent between processes).

use flowstate_core::operator::OperatorStateHandle;
use flowstate_core::snapshot::KeyedStateHandle;
use serde::{Deserialize, Serialize};

use super::SnapshotKind;

/// One task's acknowledgement of a checkpoint.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct TaskAck {
    pub(crate) uid: String,
    /// `uid` is the one the user gave (not derived from the operator's position).
    pub(crate) user_uid: bool,
    pub(crate) keyed: Option<KeyedStateHandle>,
    pub(crate) operator: Option<OperatorStateHandle>,
    pub(crate) sync_ms: f64,
    pub(crate) async_ms: f64,
    /// Trigger (as this process saw it) to the task's cut.
    pub(crate) alignment_ms: f64,
    /// Bytes of held-back records stored with the snapshot.
    pub(crate) inflight_bytes: u64,
}

/// Where this process stands in a job that runs as several processes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ProcessRole {
    /// This process's index (0 leads: it triggers, completes and retains).
    pub(crate) process: usize,
    /// Processes of the job.
    pub(crate) processes: usize,
}

impl ProcessRole {
    /// The only process of the job.
    pub(crate) const SINGLE: ProcessRole = ProcessRole {
        process: 0,
        processes: 1,
    };
    pub(crate) fn leads(self) -> bool {
        self.process == 0
    }
}

/// What the coordinators of a job's processes tell each other (over a small timely
/// dataflow of their own, so no second network stack): the leader (process 0)
/// triggers, aborts, completes and ends checkpoints; the others report their tasks'
/// acknowledgements, declines, and that their sources ended.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) enum Control {
    /// Leader: checkpoint `id` of `kind` is triggered (sources move past interval `id`);
    /// `stop`: the job stops once it completes.
    Trigger {
        id: u64,
        kind: SnapshotKind,
        stop: bool,
    },
    /// Leader: every source ended; `id` is the final checkpoint.
    Final { id: u64 },
    /// Leader: checkpoint `id` was aborted (timed out or declined).
    Abort { id: u64 },
    /// Leader: checkpoint `id` is complete (its `_metadata` is written).
    Complete { id: u64 },
    /// Any: the job failed.
    Fail {
        why: String,
        /// The failure is a restore failure: every process falls back together.
        restore: bool,
    },
    /// Follower: every task of the process acknowledged checkpoint `id`.
    Acks { id: u64, acks: Vec<TaskAck> },
    /// Follower: a task of the process declined checkpoint `id`.
    Decline { id: u64, why: String },
    /// Follower: every source of the process ended.
    Exhausted,
}
