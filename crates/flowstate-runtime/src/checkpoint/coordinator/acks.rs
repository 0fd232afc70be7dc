//! Acknowledgements: a task's part of a checkpoint arriving, a checkpoint completing
//! once every process acknowledged it, and what happens when one is declined, aborted
//! or fails (its private files deleted, the failure counted against the tolerance).

use super::*;

impl Coordinator {
    /// A task of this process finished its part of checkpoint `id`.
    pub(crate) fn ack(&self, id: u64, ack: TaskAck) {
        let mut s = self.lock();
        let expected = s.tasks;
        let Some(p) = s.pending.get_mut(&id) else {
            // Aborted or subsumed meanwhile.
            self.discard(id, std::slice::from_ref(&ack));
            return;
        };
        p.acks.push(ack);
        p.local_acks += 1;
        if p.local_acks < expected {
            return;
        }
        if self.role.leads() {
            p.processes_done += 1;
            self.try_complete(&mut s, id);
        } else if let Some(p) = s.pending.remove(&id) {
            s.outbox.push((0, Control::Acks { id, acks: p.acks }));
        }
    }

    /// Completes checkpoint `id` once every process acknowledged it (leader).
    pub(super) fn try_complete(&self, s: &mut Inner, id: u64) {
        if s.pending
            .get(&id)
            .is_none_or(|p| p.processes_done < self.role.processes)
        {
            return;
        }
        let Some(p) = s.pending.remove(&id) else {
            return;
        };
        if s.error.is_some() {
            // The job failed: snapshots taken since may hold state past the cut (a
            // failing worker's dataflow no longer keeps the checkpoint's order), so
            // nothing completes any more.
            self.discard(id, &p.acks);
            return;
        }
        match self.complete(s, id, p) {
            Ok(()) => self.announce(s, &Control::Complete { id }),
            Err(e) => self.checkpoint_failed(s, id, &e),
        }
    }

    /// A task could not take its part of checkpoint `id`.
    pub(crate) fn decline(&self, id: u64, why: String) {
        let mut s = self.lock();
        self.decline_locked(&mut s, id, why);
    }

    /// [`Self::decline`] with the bookkeeping locked (also a follower's decline
    /// arriving at the leader).
    pub(super) fn decline_locked(&self, s: &mut Inner, id: u64, why: String) {
        if !self.drop_pending(s, id) {
            return;
        }
        if !self.role.leads() {
            s.outbox.push((0, Control::Decline { id, why }));
            return;
        }
        self.checkpoint_failed(s, id, &format!("declined: {why}"));
    }

    /// Checkpoint `id` failed (timed out, declined, or could not complete; the
    /// leader's bookkeeping): the other processes drop it, and the job fails once
    /// more checkpoints in a row failed than tolerated, or when it was the final one
    /// (nothing else could commit the job's last output; waiting would hang).
    pub(super) fn checkpoint_failed(&self, s: &mut Inner, id: u64, why: &str) {
        self.announce(s, &Control::Abort { id });
        if let Some(h) = &self.config.handle {
            h.failed(id, why);
        }
        s.failures += 1;
        crate::metrics::checkpoint_failed();
        tracing::warn!(checkpoint = id, "checkpoint {id} failed: {why}");
        if s.failures > self.config.tolerable_failures {
            let why = format!(
                "{} checkpoints in a row failed (tolerable: {}); the last, checkpoint {id}: {why}",
                s.failures, self.config.tolerable_failures
            );
            self.set_error(s, why);
        } else if self.final_id() == Some(id) {
            if s.error.is_none() {
                s.final_failed = true;
            }
            self.set_error(s, format!("the final checkpoint {id} failed: {why}"));
        }
    }

    /// Deletes the private files tasks wrote for checkpoint `id`, which will never
    /// complete (it was aborted or subsumed). Shared files stay: a snapshot still in
    /// flight may have uploaded the same RocksDB file under the same name (the
    /// uploads of one backend are named by its session and file number) without
    /// having acknowledged yet; the next start removes whatever nothing refers to.
    pub(super) fn discard(&self, id: u64, acks: &[TaskAck]) {
        let storage = self.config.storage.as_ref();
        let files = acks.iter().flat_map(|a| {
            a.keyed
                .iter()
                .map(|k| k.path.as_str())
                .chain(a.operator.iter().map(|o| o.path.as_str()))
        });
        for f in files {
            if let Err(e) = delete_owned(storage, f) {
                tracing::debug!(checkpoint = id, "could not delete {f}: {e}");
            }
        }
    }

    /// Removes checkpoint `id` from those in flight; deletes what it wrote.
    pub(super) fn drop_pending(&self, s: &mut Inner, id: u64) -> bool {
        if self
            .stop_at
            .compare_exchange(id, 0, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            tracing::warn!(
                checkpoint = id,
                "the savepoint to stop the job did not complete; the job goes on"
            );
        }
        match s.pending.remove(&id) {
            Some(p) => {
                self.discard(id, &p.acks);
                true
            }
            None => false,
        }
    }
}
