//! Triggering: the leader's poll, which asks the pure schedule (`schedule::decide`)
//! what to do now and does it (trigger, expire, the final checkpoint), and the
//! savepoint requests it takes.

use super::*;

impl Coordinator {
    /// Triggers, times out and finishes checkpoints as the settings say; called often
    /// by every worker.
    pub(crate) fn poll(&self) {
        let Ok(mut s) = self.inner.try_lock() else {
            return;
        };
        if s.registered_workers < self.workers || s.error.is_some() {
            return;
        }
        let sources_ended = s.exhausted_sources >= s.sources;
        if !self.role.leads() {
            // Followers do what the leader says; they only report their sources' end.
            if sources_ended && !s.reported_exhausted {
                s.reported_exhausted = true;
                s.outbox.push((0, Control::Exhausted));
            }
            return;
        }
        let now = Instant::now();
        let closing = self.final_id().is_some() || self.stopping();
        if !closing {
            self.take_requests(&mut s, now);
        }
        let pending: Vec<(u64, Instant)> =
            s.pending.iter().map(|(id, p)| (*id, p.started)).collect();
        let view = View {
            now,
            last_trigger: s.last_trigger,
            last_complete: s.last_complete,
            pending: &pending,
            current: self.interval(),
            all_ended: s.sources > 0
                && sources_ended
                && s.exhausted_processes + 1 >= self.role.processes,
            closing,
            requested: s.requested.map(|r| (r.format, r.stop)),
        };
        for action in decide(&Limits::of(&self.config), &view) {
            match action {
                Action::Expire(id) => {
                    self.drop_pending(&mut s, id);
                    self.checkpoint_failed(&mut s, id, "timed out and was aborted");
                    if s.error.is_some() {
                        return;
                    }
                }
                Action::Final(id) => {
                    s.pending.insert(id, Pending::new(SnapshotKind::Checkpoint));
                    self.announce(&mut s, &Control::Final { id });
                    self.final_id.store(id, Ordering::Release);
                }
                Action::Trigger { id, kind, stop } => {
                    if kind != SnapshotKind::Checkpoint
                        && let Some(r) = s.requested.take()
                        && let (Some(h), Some(ticket)) = (&self.config.handle, r.ticket)
                    {
                        h.triggered(ticket, id);
                    }
                    if stop {
                        self.stop_at.store(id, Ordering::Release);
                    }
                    s.pending.insert(id, Pending::new(kind));
                    self.announce(&mut s, &Control::Trigger { id, kind, stop });
                    s.last_trigger = now;
                    self.interval.store(id + 1, Ordering::Release);
                    tracing::debug!(checkpoint = id, ?kind, "triggered");
                }
            }
        }
    }

    /// Savepoints asked for: by `flowstate savepoint DIR` through the checkpoint
    /// directory ([`RequestWatch`]), or by a job handle in memory.
    fn take_requests(&self, s: &mut Inner, now: Instant) {
        if s.requested.is_none() {
            s.requested = self.requests.take(now);
        }
        if s.requested.is_none() {
            s.requested = self.config.handle.as_ref().and_then(|h| h.take_request());
        }
    }
}
