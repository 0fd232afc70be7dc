//! Completing a checkpoint: its `_metadata` written from the tasks' acknowledgements,
//! then recorded (history, shared-file registry) and retention applied (what it
//! subsumes deleted, when the job owns it).

use super::*;

impl Coordinator {
    pub(super) fn complete(&self, s: &mut Inner, id: u64, p: Pending) -> Result<(), String> {
        let mut operators: BTreeMap<String, OperatorSnapshotMeta> = BTreeMap::new();
        for a in p.acks {
            let o = operators.entry(a.uid).or_default();
            o.user_uid |= a.user_uid;
            o.keyed.extend(a.keyed);
            o.operator.extend(a.operator);
            o.sync_ms = o.sync_ms.max(a.sync_ms);
            o.async_ms = o.async_ms.max(a.async_ms);
            o.alignment_ms = o.alignment_ms.max(a.alignment_ms);
            o.inflight_bytes = o.inflight_bytes.saturating_add(a.inflight_bytes);
        }
        for o in operators.values_mut() {
            o.keyed.sort_by_key(|h| h.key_group_range.start());
            o.operator.sort_by_key(|h| h.subtask_index);
        }
        let location = p.kind.location(id);
        let meta = CheckpointMetadata {
            version: METADATA_VERSION,
            id,
            kind: p.kind,
            location: location.clone(),
            finished: self.final_id() == Some(id),
            triggered_at_ms: p.triggered_at_ms,
            duration_ms: u64::try_from(p.started.elapsed().as_millis()).unwrap_or(u64::MAX),
            parallelism: (self.workers * self.role.processes) as u32,
            max_parallelism: self.max_parallelism,
            operators,
        };
        let json = serde_json::to_vec_pretty(&meta).map_err(|e| e.to_string())?;
        let storage = self.config.storage.as_ref();
        crate::failpoint::hit("before-metadata");
        let meta_path = format!("{location}/_metadata");
        if let Err(e) = storage.put(&meta_path, json.into()) {
            // The put may have landed although it reported failure (a timeout after
            // the write): remove it, so a checkpoint the job treats as failed (its
            // shared files unregistered) never looks complete at the next start.
            let _ = delete_owned(storage, &meta_path);
            return Err(e.to_string());
        }
        crate::failpoint::hit("after-metadata");
        if p.kind == SnapshotKind::Checkpoint {
            // Older checkpoints still in flight are subsumed (Flink does the same):
            // completing one after this would put it after this one in retention, and
            // retention would then drop files of checkpoints older than both that it
            // still needs.
            let subsumed: Vec<u64> = s
                .pending
                .range(..id)
                .filter(|(_, q)| q.kind == SnapshotKind::Checkpoint)
                .map(|(k, _)| *k)
                .collect();
            for old in subsumed {
                self.drop_pending(s, old);
                tracing::debug!(checkpoint = old, "subsumed by checkpoint {id}");
            }
        }
        s.failures = 0;
        s.last_complete = Instant::now();
        if p.kind == SnapshotKind::Checkpoint {
            s.registry.register(id, &meta.keyed_handles());
            s.retained.push_back(id);
            // The checkpoint is complete once `_metadata` is written: a failing
            // delete of an older one never turns it into a failed one (what was
            // left is found at the next start).
            self.apply_retention(s);
        } else {
            // A savepoint's files are never deleted by the job (they are canonical
            // and under savepoints/, but pin anything shared to be sure).
            s.registry.pin(&meta.keyed_handles());
            if let Some(h) = &self.config.handle {
                h.completed(id, &location);
            }
        }
        tracing::info!(
            checkpoint = id,
            duration_ms = meta.duration_ms,
            full_bytes = meta.full_size(),
            uploaded_bytes = meta.uploaded_size(),
            "{} {id} complete",
            if p.kind != SnapshotKind::Checkpoint {
                "savepoint"
            } else {
                "checkpoint"
            }
        );
        self.record(s, &meta);
        crate::metrics::snapshot_completed(&meta);
        self.completed.fetch_max(id, Ordering::AcqRel);
        Ok(())
    }

    /// Adds a completed snapshot to the history and rewrites `_history`; a failure
    /// is logged, never the snapshot's (the history is informational).
    fn record(&self, s: &mut Inner, meta: &CheckpointMetadata) {
        let Some(history) = s.history.as_mut() else {
            return;
        };
        add_to_history(history, SnapshotSummary::of(meta));
        if let Err(e) = self
            .config
            .storage
            .put(HISTORY_FILE, render_history(history).into())
        {
            tracing::warn!("checkpoint history not written: {e}");
        }
    }

    /// Keeps the newest `retained` checkpoints: older `chk-` directories go, and shared
    /// files only they referred to. Failures are logged and leave files behind (retried
    /// after the next completion; the next start's clean-up takes what nothing refers
    /// to); never a reason to fail the checkpoint.
    fn apply_retention(&self, s: &mut Inner) {
        let storage = self.config.storage.as_ref();
        while s.retained.len() > self.config.retained {
            let Some(old) = s.retained.pop_front() else {
                break;
            };
            // Metadata first: a crash halfway leaves an incomplete directory, which
            // is ignored and cleaned up, never a complete-looking broken checkpoint.
            let prefix = format!("chk-{old}/");
            let mut files = match storage.list(&prefix) {
                Ok(f) => f,
                Err(e) => {
                    tracing::warn!(checkpoint = old, "retention: listing {prefix}: {e}");
                    s.retained.push_front(old);
                    return;
                }
            };
            files.sort_by_key(|f| !f.ends_with("/_metadata"));
            for f in &files {
                if let Err(e) = delete_owned(storage, f) {
                    tracing::warn!(checkpoint = old, "retention: {e}");
                    if f.ends_with("/_metadata") {
                        // Still complete: keep it whole (and its shared files
                        // registered), and try again after the next completion.
                        s.retained.push_front(old);
                        return;
                    }
                }
            }
            let freed = s.registry.discard(old);
            if self.keep_all_shared {
                continue;
            }
            for f in freed {
                if let Err(e) = delete_owned(storage, &f) {
                    tracing::warn!(checkpoint = old, "retention: {e}");
                }
            }
        }
    }
}

/// The history in storage at start (empty when there is none); `None` when it cannot
/// be read, so that it is not overwritten.
pub(super) fn read_history(storage: &dyn CheckpointStorage) -> Option<Vec<SnapshotSummary>> {
    match storage.get(HISTORY_FILE) {
        Ok(bytes) => {
            let (history, skipped) = parse_history(&bytes);
            if skipped > 0 {
                tracing::warn!("{HISTORY_FILE}: {skipped} unreadable lines dropped");
            }
            Some(history)
        }
        Err(flowstate_core::StorageError::NotFound { .. }) => Some(Vec::new()),
        Err(e) => {
            tracing::warn!("{HISTORY_FILE} cannot be read ({e}): not kept this run");
            None
        }
    }
}
