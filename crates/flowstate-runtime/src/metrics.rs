//! What the runtime reports through the `metrics` facade (a process installs a
//! recorder to collect them; `flowstate-web` serves them to Prometheus). Without a
//! recorder every call is a no-op. Names follow Prometheus's conventions; the list
//! is in the README ("Metrics").
//!
//! Per-record figures are counted per batch on handles taken once per operator
//! instance, so the cost is one atomic add per batch.

use std::time::Duration;

use flowstate_core::checkpoint_metadata::{CheckpointMetadata, SnapshotKind};
use metrics::{Counter, counter, gauge};

/// Records in and out of one operator instance.
#[derive(Clone)]
pub(crate) struct OperatorMetrics {
    records_in: Counter,
    records_out: Counter,
}

impl OperatorMetrics {
    /// The counters of operator `operator` (its uid or derived id).
    pub(crate) fn new(operator: &str) -> Self {
        let op = operator.to_string();
        OperatorMetrics {
            records_in: counter!("flowstate_records_in_total", "operator" => op.clone()),
            records_out: counter!("flowstate_records_out_total", "operator" => op),
        }
    }

    /// `n` records arrived.
    pub(crate) fn input(&self, n: usize) {
        if n > 0 {
            self.records_in.increment(n as u64);
        }
    }

    /// `n` records went out.
    pub(crate) fn output(&self, n: usize) {
        if n > 0 {
            self.records_out.increment(n as u64);
        }
    }
}

/// A checkpoint or savepoint completed (the leader's view of the whole job).
pub(crate) fn snapshot_completed(m: &CheckpointMetadata) {
    let kind = match m.kind {
        SnapshotKind::Checkpoint => "checkpoint",
        _ => "savepoint",
    };
    counter!("flowstate_snapshots_completed_total", "kind" => kind).increment(1);
    if m.kind != SnapshotKind::Checkpoint {
        return;
    }
    gauge!("flowstate_last_checkpoint_id").set(m.id as f64);
    gauge!("flowstate_last_checkpoint_duration_seconds").set(m.duration_ms as f64 / 1e3);
    gauge!("flowstate_last_checkpoint_alignment_seconds").set(m.alignment_ms() / 1e3);
    gauge!("flowstate_last_checkpoint_inflight_bytes").set(m.inflight_bytes() as f64);
    gauge!("flowstate_last_checkpoint_full_size_bytes").set(m.full_size() as f64);
    gauge!("flowstate_last_checkpoint_written_bytes").set(m.uploaded_size() as f64);
    for (uid, o) in &m.operators {
        gauge!("flowstate_state_size_bytes", "operator" => uid.clone()).set(o.full_size() as f64);
    }
}

/// A checkpoint failed (declined, timed out, or could not complete).
pub(crate) fn checkpoint_failed() {
    counter!("flowstate_checkpoints_failed_total").increment(1);
}

/// A worker restored its state from a snapshot in `took`.
pub(crate) fn restored(worker: usize, took: Duration) {
    gauge!("flowstate_restore_duration_seconds", "worker" => worker.to_string())
        .set(took.as_secs_f64());
}

/// A source waited `paused` for flow control.
pub(crate) fn flow_control_paused(operator: &str, paused: Duration) {
    counter!("flowstate_flow_control_paused_milliseconds_total", "operator" => operator.to_string())
        .increment(paused.as_millis() as u64);
}

/// The keyed backend figures of one operator instance (`backend`: `heap` or
/// `rocksdb`), at a checkpoint.
pub(crate) fn backend_properties(
    operator: &str,
    worker: usize,
    backend: &'static str,
    properties: &[(&'static str, u64)],
) {
    for (name, value) in properties {
        gauge!(
            format!("flowstate_{backend}_{name}"),
            "operator" => operator.to_string(),
            "worker" => worker.to_string()
        )
        .set(*value as f64);
    }
}
