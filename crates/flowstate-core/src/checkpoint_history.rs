//! The checkpoint history (`_history` at the checkpoint directory's root): one JSON
//! line per completed checkpoint or savepoint, newest last, at most
//! [`HISTORY_CAP`] lines. It outlives retention (which deletes old checkpoints and
//! their `_metadata`) and restarts, so the history page of a running job and
//! `flowstate ui DIR` of a stopped one show the job's whole recent past, as Flink's
//! history server does for archived jobs.
//!
//! The job's leader rewrites the whole object (one atomic put) after each
//! completion. Reading is lenient: a line that does not parse is skipped and counted,
//! never a reason to fail a job or a page (the history is informational; `_metadata`
//! stays the truth). Format in `docs/formats.md` ("Checkpoint history").

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::checkpoint_metadata::{CheckpointMetadata, SnapshotKind};

/// The history's path below the checkpoint storage root.
pub const HISTORY_FILE: &str = "_history";
/// Lines kept: the oldest go first.
pub const HISTORY_CAP: usize = 1000;

/// One operator's part of a [`SnapshotSummary`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct OperatorSummary {
    /// Instances (the operator's parallelism).
    pub instances: u32,
    /// Bytes needed to restore the operator.
    pub full_size: u64,
    /// Bytes the snapshot wrote for it.
    pub uploaded_size: u64,
    /// Longest synchronous part, milliseconds.
    pub sync_ms: f64,
    /// Longest asynchronous part, milliseconds.
    pub async_ms: f64,
    /// Longest alignment, milliseconds.
    pub alignment_ms: f64,
    /// Bytes of records held in flight.
    pub inflight_bytes: u64,
}

/// A completed checkpoint or savepoint, as the history keeps it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SnapshotSummary {
    /// Its id.
    pub id: u64,
    /// Checkpoint or savepoint.
    pub kind: SnapshotKind,
    /// Wall-clock trigger time, Unix milliseconds.
    pub triggered_at_ms: u64,
    /// Trigger to `_metadata`, milliseconds.
    pub duration_ms: u64,
    /// Longest alignment of any operator, milliseconds.
    pub alignment_ms: f64,
    /// Bytes of records held in flight, over every operator.
    pub inflight_bytes: u64,
    /// Bytes needed to restore the whole job.
    pub full_size: u64,
    /// Bytes written by this snapshot.
    pub uploaded_size: u64,
    /// Workers of the job.
    pub parallelism: u32,
    /// Taken after every source ended.
    pub finished: bool,
    /// Per operator uid.
    pub operators: BTreeMap<String, OperatorSummary>,
}

impl SnapshotSummary {
    /// The summary of a snapshot's metadata.
    pub fn of(m: &CheckpointMetadata) -> Self {
        SnapshotSummary {
            id: m.id,
            kind: m.kind,
            triggered_at_ms: m.triggered_at_ms,
            duration_ms: m.duration_ms,
            alignment_ms: m.alignment_ms(),
            inflight_bytes: m.inflight_bytes(),
            full_size: m.full_size(),
            uploaded_size: m.uploaded_size(),
            parallelism: m.parallelism,
            finished: m.finished,
            operators: m
                .operators
                .iter()
                .map(|(uid, o)| {
                    let instances = o.keyed.len().max(o.operator.len());
                    (
                        uid.clone(),
                        OperatorSummary {
                            instances: u32::try_from(instances).unwrap_or(u32::MAX),
                            full_size: o.full_size(),
                            uploaded_size: o.uploaded_size(),
                            sync_ms: o.sync_ms,
                            async_ms: o.async_ms,
                            alignment_ms: o.alignment_ms,
                            inflight_bytes: o.inflight_bytes,
                        },
                    )
                })
                .collect(),
        }
    }
}

/// A history read back: its summaries by ascending id (one per id, the last line of
/// an id winning), and how many lines were skipped as unreadable.
pub fn parse_history(bytes: &[u8]) -> (Vec<SnapshotSummary>, usize) {
    let mut by_id = BTreeMap::new();
    let mut skipped = 0;
    for line in bytes.split(|b| *b == b'\n') {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match serde_json::from_slice::<SnapshotSummary>(line) {
            Ok(s) => {
                by_id.insert(s.id, s);
            }
            Err(_) => skipped += 1,
        }
    }
    (by_id.into_values().collect(), skipped)
}

/// `history` with `summary` added (replacing one of the same id), sorted by id and
/// cut to the newest [`HISTORY_CAP`].
pub fn add_to_history(history: &mut Vec<SnapshotSummary>, summary: SnapshotSummary) {
    history.retain(|s| s.id != summary.id);
    history.push(summary);
    history.sort_by_key(|s| s.id);
    if history.len() > HISTORY_CAP {
        let extra = history.len() - HISTORY_CAP;
        history.drain(..extra);
    }
}

/// The history's bytes: one JSON object per line, ascending id.
pub fn render_history(history: &[SnapshotSummary]) -> Vec<u8> {
    let mut out = Vec::new();
    for s in history {
        // A summary of plain numbers, strings and maps always serializes.
        if let Ok(line) = serde_json::to_vec(s) {
            out.extend_from_slice(&line);
            out.push(b'\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(id: u64) -> SnapshotSummary {
        SnapshotSummary {
            id,
            kind: SnapshotKind::Checkpoint,
            triggered_at_ms: 1_700_000_000_000 + id,
            duration_ms: id * 3,
            alignment_ms: 0.5,
            inflight_bytes: 7,
            full_size: 1000 + id,
            uploaded_size: 10 * id,
            parallelism: 2,
            finished: false,
            operators: BTreeMap::from([(
                "counts".to_string(),
                OperatorSummary {
                    instances: 2,
                    full_size: 1000 + id,
                    ..OperatorSummary::default()
                },
            )]),
        }
    }

    #[test]
    fn round_trips_and_caps() {
        let mut h = Vec::new();
        for id in (1..=HISTORY_CAP as u64 + 5).rev() {
            add_to_history(&mut h, summary(id));
        }
        add_to_history(&mut h, summary(7));
        assert_eq!(h.len(), HISTORY_CAP);
        assert_eq!(h[0].id, 6);
        assert_eq!(h.last().map(|s| s.id), Some(HISTORY_CAP as u64 + 5));
        let (back, skipped) = parse_history(&render_history(&h));
        assert_eq!((back, skipped), (h, 0));
    }

    #[test]
    fn damaged_lines_are_skipped_not_fatal() {
        let mut bytes = render_history(&[summary(1), summary(2)]);
        bytes.extend_from_slice(b"{\"id\": 3, trunc\n\xff\xfe\n\n");
        bytes.extend_from_slice(&render_history(&[summary(4)]));
        let (back, skipped) = parse_history(&bytes);
        assert_eq!(back.iter().map(|s| s.id).collect::<Vec<_>>(), [1, 2, 4]);
        assert_eq!(skipped, 2);
    }
}
