//! The leading coordinator's scheduling decisions as a pure function of what it
//! knows ([`View`]) and its settings ([`Limits`]): which checkpoints time out, when the
//! final checkpoint is due, and when to trigger a checkpoint or a requested savepoint.
//! The coordinator (`coordinator.rs`) gathers the view, applies the [`Action`]s (the
//! I/O: announcing, writing, failing) and keeps the bookkeeping.

use std::time::{Duration, Instant};

use super::{CheckpointConfig, SavepointFormat, SnapshotKind};

/// The settings the decisions follow.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    /// Least time between triggers.
    pub(crate) interval: Duration,
    /// A checkpoint in flight longer than this is aborted.
    pub(crate) timeout: Duration,
    /// Least time between a completion and the next trigger.
    pub(crate) min_pause: Duration,
    /// Checkpoints in flight at once.
    pub(crate) max_concurrent: usize,
}

impl Limits {
    pub(crate) fn of(c: &CheckpointConfig) -> Self {
        Limits {
            interval: c.interval,
            timeout: c.timeout,
            min_pause: c.min_pause,
            max_concurrent: c.max_concurrent,
        }
    }
}

/// What the leader knows when it decides.
#[derive(Clone, Debug)]
pub(crate) struct View<'a> {
    pub(crate) now: Instant,
    pub(crate) last_trigger: Instant,
    pub(crate) last_complete: Instant,
    /// Checkpoints in flight, with when each was triggered.
    pub(crate) pending: &'a [(u64, Instant)],
    /// The interval the sources are in: the id of the next checkpoint.
    pub(crate) current: u64,
    /// Every source of every process has ended.
    pub(crate) all_ended: bool,
    /// The final checkpoint is set, or a savepoint that stops the job was triggered:
    /// nothing more is triggered.
    pub(crate) closing: bool,
    /// A savepoint asked for: its format, and whether it stops the job.
    pub(crate) requested: Option<(SavepointFormat, bool)>,
}

/// What the leader does, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Action {
    /// Abort checkpoint `id`: it timed out.
    Expire(u64),
    /// Take the final checkpoint `id` (every source ended).
    Final(u64),
    /// Trigger snapshot `id` of `kind`; `stop`: the job stops once it completes.
    Trigger {
        id: u64,
        kind: SnapshotKind,
        stop: bool,
    },
}

/// The snapshot kind of a savepoint of `format`.
pub(crate) fn savepoint_kind(format: SavepointFormat) -> SnapshotKind {
    match format {
        SavepointFormat::Canonical => SnapshotKind::Savepoint,
        SavepointFormat::Native => SnapshotKind::NativeSavepoint,
    }
}

/// The leader's actions for view `v`: expired checkpoints first; then, unless the job
/// is closing, the final checkpoint once every source ended, or a trigger: a
/// requested savepoint at once (it goes ahead of the limits on concurrent checkpoints
/// and the pause between them, as in Flink), a checkpoint when the interval and the
/// minimum pause have passed and there is room.
pub(crate) fn decide(limits: &Limits, v: &View<'_>) -> Vec<Action> {
    let mut actions: Vec<Action> = v
        .pending
        .iter()
        .filter(|(_, started)| v.now.duration_since(*started) > limits.timeout)
        .map(|(id, _)| Action::Expire(*id))
        .collect();
    if v.closing {
        return actions;
    }
    if v.all_ended {
        actions.push(Action::Final(v.current));
        return actions;
    }
    let in_flight = v.pending.len() - actions.len();
    let due = v.now.duration_since(v.last_trigger) >= limits.interval
        && v.now.duration_since(v.last_complete) >= limits.min_pause;
    let room = in_flight < limits.max_concurrent;
    match v.requested {
        Some((format, stop)) => actions.push(Action::Trigger {
            id: v.current,
            kind: savepoint_kind(format),
            stop,
        }),
        None if room && due => actions.push(Action::Trigger {
            id: v.current,
            kind: SnapshotKind::Checkpoint,
            stop: false,
        }),
        None => {}
    }
    actions
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        interval: Duration::from_millis(100),
        timeout: Duration::from_millis(1000),
        min_pause: Duration::from_millis(30),
        max_concurrent: 1,
    };

    /// A view at `t0 + at_ms` with the last trigger and completion `ago` ms earlier.
    fn view(t0: Instant, at_ms: u64, trigger_ago: u64, complete_ago: u64) -> View<'static> {
        let now = t0 + Duration::from_millis(at_ms);
        View {
            now,
            last_trigger: now - Duration::from_millis(trigger_ago),
            last_complete: now - Duration::from_millis(complete_ago),
            pending: &[],
            current: 7,
            all_ended: false,
            closing: false,
            requested: None,
        }
    }

    fn checkpoint(id: u64) -> Action {
        Action::Trigger {
            id,
            kind: SnapshotKind::Checkpoint,
            stop: false,
        }
    }

    #[test]
    fn a_checkpoint_is_triggered_once_interval_and_pause_have_passed() {
        let t0 = Instant::now();
        assert_eq!(decide(&LIMITS, &view(t0, 5000, 100, 30)), [checkpoint(7)]);
        assert_eq!(decide(&LIMITS, &view(t0, 5000, 99, 500)), []);
        assert_eq!(decide(&LIMITS, &view(t0, 5000, 500, 29)), []);
    }

    #[test]
    fn no_trigger_without_room() {
        let t0 = Instant::now();
        let mut v = view(t0, 5000, 500, 500);
        let pending = [(6, v.now - Duration::from_millis(10))];
        v.pending = &pending;
        assert_eq!(decide(&LIMITS, &v), []);
        let two = Limits {
            max_concurrent: 2,
            ..LIMITS
        };
        assert_eq!(decide(&two, &v), [checkpoint(7)]);
    }

    #[test]
    fn a_requested_savepoint_goes_ahead_of_the_limits() {
        let t0 = Instant::now();
        let mut v = view(t0, 5000, 0, 0);
        let pending = [(6, v.now)];
        v.pending = &pending;
        v.requested = Some((SavepointFormat::Native, true));
        assert_eq!(
            decide(&LIMITS, &v),
            [Action::Trigger {
                id: 7,
                kind: SnapshotKind::NativeSavepoint,
                stop: true
            }]
        );
    }

    #[test]
    fn timed_out_checkpoints_expire_and_make_room() {
        let t0 = Instant::now();
        let mut v = view(t0, 5000, 2000, 2000);
        let pending = [(5, v.now - Duration::from_millis(1001)), (6, v.now)];
        v.pending = &pending;
        // One expired, one still in flight: no room at max 1.
        assert_eq!(decide(&LIMITS, &v), [Action::Expire(5)]);
        let pending = [(6, v.now - Duration::from_millis(1500))];
        v.pending = &pending;
        assert_eq!(decide(&LIMITS, &v), [Action::Expire(6), checkpoint(7)]);
    }

    #[test]
    fn the_final_checkpoint_comes_when_every_source_ended() {
        let t0 = Instant::now();
        let mut v = view(t0, 5000, 0, 0);
        v.all_ended = true;
        // Regardless of interval, pause or requests.
        v.requested = Some((SavepointFormat::Canonical, false));
        assert_eq!(decide(&LIMITS, &v), [Action::Final(7)]);
    }

    #[test]
    fn nothing_is_triggered_while_closing_but_timeouts_still_expire() {
        let t0 = Instant::now();
        let mut v = view(t0, 5000, 5000, 5000);
        v.closing = true;
        v.all_ended = true;
        v.requested = Some((SavepointFormat::Canonical, false));
        assert_eq!(decide(&LIMITS, &v), []);
        let pending = [(6, v.now - Duration::from_secs(2))];
        v.pending = &pending;
        assert_eq!(decide(&LIMITS, &v), [Action::Expire(6)]);
    }
}
