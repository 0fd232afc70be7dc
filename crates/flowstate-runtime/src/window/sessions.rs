//! The open sessions of a key (Flink's `MergingWindowSet`): each session window maps
//! to the *state window* its contents live under.
//!
//! A session's state window is the window it started as. When a record extends the
//! session, only the mapping changes (`[s, e)` becomes `[s, e')`, still stored under
//! `[s, e)`): nothing is read, moved or deleted in the contents state. Contents move
//! only when a record bridges two sessions, and then only those of all but one of
//! them. Before this, the contents lived under the session window itself and moved
//! (read, write, delete) with every extension: on RocksDB three of the ten state
//! operations of a bid in Nexmark q11.
//!
//! Stored as value state [`MERGING_SET`] (`Vec<Session>`) per key. Jobs restored from
//! a snapshot that still holds the earlier value state [`OLD_SESSIONS`]
//! (`Vec<TimeWindow>`, contents under the session window) are migrated when the
//! operator opens: each such session becomes one whose state window is itself, which
//! is exactly where its contents are ([`open`]).

use std::rc::Rc;

use flowstate_core::backend::KeyedStateBackend;
use flowstate_core::descriptor::ValueStateDescriptor;
use flowstate_core::state::{InternalValueState, StateKey, VoidNamespace};
use serde::{Deserialize, Serialize};

use super::TimeWindow;
use crate::RuntimeError;
use crate::backend::AnyBackend;

/// The value state holding each key's open sessions.
pub(crate) const MERGING_SET: &str = "_window_merging_set";
/// The value state of open sessions written before state windows (contents under the
/// session window); migrated to [`MERGING_SET`] on open.
pub(crate) const OLD_SESSIONS: &str = "_window_sessions";

/// One open session.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Session {
    /// The session's window: from its first record to its last record plus the gap.
    pub(crate) window: TimeWindow,
    /// The namespace its contents are stored under.
    pub(crate) state_window: TimeWindow,
}

/// A key's open sessions, as stored.
pub(super) type SessionState = Rc<dyn InternalValueState<VoidNamespace, Vec<Session>>>;

/// What adding a record's window to a key's sessions does.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Added {
    /// The session the record belongs to now.
    pub(super) window: TimeWindow,
    /// Where that session's contents live.
    pub(super) state_window: TimeWindow,
    /// Sessions absorbed into `window` (other than `window` itself): their timers go.
    pub(super) replaced: Vec<TimeWindow>,
    /// State windows whose contents merge into `state_window`.
    pub(super) merged_state: Vec<TimeWindow>,
    /// The sessions afterwards.
    pub(super) sessions: Vec<Session>,
    /// Whether `sessions` differs from what was stored (a record inside an open
    /// session changes nothing).
    pub(super) changed: bool,
}

/// Adds a record's window `w` to `sessions`: it absorbs every session it overlaps or
/// touches (Flink's rule), transitively. The merged session keeps the state window of
/// the earliest absorbed session; a window that absorbs nothing is its own.
pub(super) fn add(sessions: &[Session], w: TimeWindow) -> Added {
    let mut rest = sessions.to_vec();
    let mut window = w;
    let mut absorbed: Vec<Session> = Vec::new();
    while let Some(i) = rest.iter().position(|s| s.window.intersects(&window)) {
        let s = rest.swap_remove(i);
        window = window.cover(&s.window);
        absorbed.push(s);
    }
    let state_window = absorbed
        .iter()
        .min_by_key(|s| (s.window.start, s.window.end))
        .map_or(window, |s| s.state_window);
    let changed = !matches!(absorbed.as_slice(), [only] if only.window == window);
    if !changed {
        return Added {
            window,
            state_window,
            replaced: Vec::new(),
            merged_state: Vec::new(),
            sessions: sessions.to_vec(),
            changed,
        };
    }
    rest.push(Session {
        window,
        state_window,
    });
    Added {
        window,
        state_window,
        replaced: absorbed
            .iter()
            .map(|s| s.window)
            .filter(|x| *x != window)
            .collect(),
        merged_state: absorbed
            .iter()
            .map(|s| s.state_window)
            .filter(|x| *x != state_window)
            .collect(),
        sessions: rest,
        changed,
    }
}

/// Registers the sessions state; first migrates, key by key, any open sessions a
/// restored snapshot holds in the earlier [`OLD_SESSIONS`] state (each becomes its
/// own state window) and empties that state.
pub(super) fn open<K: StateKey>(backend: &AnyBackend<K>) -> Result<SessionState, RuntimeError> {
    let state = backend
        .value_state::<VoidNamespace, Vec<Session>>(&ValueStateDescriptor::new(MERGING_SET))?;
    if !backend.state_names().iter().any(|n| n == OLD_SESSIONS) {
        return Ok(state);
    }
    let old = backend
        .value_state::<VoidNamespace, Vec<TimeWindow>>(&ValueStateDescriptor::new(OLD_SESSIONS))?;
    for key in backend.keys(OLD_SESSIONS, &VoidNamespace)? {
        backend.set_current_key(key)?;
        let Some(windows) = old.value()? else {
            continue;
        };
        let mut sessions = state.value()?.unwrap_or_default();
        for window in windows {
            if !sessions.iter().any(|s| s.window == window) {
                sessions.push(Session {
                    window,
                    state_window: window,
                });
            }
        }
        state.update(sessions)?;
        old.clear()?;
    }
    Ok(state)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::BackendChoice;
    use flowstate_conformance::{config, snapshot_to, temp_storage};
    use flowstate_core::keygroup::KeyGroupRange;
    use flowstate_core::state::ValueState;
    use proptest::prelude::*;

    fn w(start: i64, end: i64) -> TimeWindow {
        TimeWindow::new(start, end)
    }
    fn s(window: TimeWindow, state_window: TimeWindow) -> Session {
        Session {
            window,
            state_window,
        }
    }

    #[test]
    fn a_record_alone_starts_a_session_that_is_its_own_state_window() {
        let a = add(&[], w(10, 20));
        assert_eq!(a.window, w(10, 20));
        assert_eq!(a.state_window, w(10, 20));
        assert!(a.replaced.is_empty() && a.merged_state.is_empty() && a.changed);
        assert_eq!(a.sessions, vec![s(w(10, 20), w(10, 20))]);
    }

    #[test]
    fn extending_a_session_keeps_its_state_window_and_moves_nothing() {
        let a = add(&[s(w(10, 20), w(10, 20))], w(15, 25));
        assert_eq!(a.window, w(10, 25));
        assert_eq!(a.state_window, w(10, 20));
        assert_eq!(a.replaced, vec![w(10, 20)]);
        assert!(a.merged_state.is_empty());
        assert_eq!(a.sessions, vec![s(w(10, 25), w(10, 20))]);
        // Again: the state window stays the first one.
        let b = add(&a.sessions, w(25, 35));
        assert_eq!(b.sessions, vec![s(w(10, 35), w(10, 20))]);
        assert!(b.merged_state.is_empty());
    }

    #[test]
    fn a_record_inside_a_session_changes_nothing() {
        let before = [s(w(10, 30), w(10, 20)), s(w(50, 60), w(50, 60))];
        let a = add(&before, w(12, 22));
        assert!(!a.changed);
        assert_eq!(a.window, w(10, 30));
        assert_eq!(a.state_window, w(10, 20));
        assert_eq!(a.sessions, before.to_vec());
        assert!(a.replaced.is_empty() && a.merged_state.is_empty());
    }

    #[test]
    fn bridging_two_sessions_merges_the_later_contents_into_the_earlier() {
        let before = [s(w(40, 50), w(40, 50)), s(w(10, 30), w(10, 20))];
        let a = add(&before, w(28, 41));
        assert_eq!(a.window, w(10, 50));
        assert_eq!(a.state_window, w(10, 20));
        assert_eq!(a.merged_state, vec![w(40, 50)]);
        let mut replaced = a.replaced.clone();
        replaced.sort();
        assert_eq!(replaced, vec![w(10, 30), w(40, 50)]);
        assert_eq!(a.sessions, vec![s(w(10, 50), w(10, 20))]);
    }

    proptest! {
        /// Against a model that keeps every record's time: after any sequence of
        /// records, the sessions are exactly the model's (records less than a gap
        /// apart, as Flink merges touching windows), each session's state window is
        /// the window of one record in it, and no two sessions share a state window.
        #[test]
        fn sessions_match_a_model_of_record_times(
            times in proptest::collection::vec(0i64..200, 1..40),
            gap in 1i64..20,
        ) {
            let mut sessions: Vec<Session> = Vec::new();
            for &t in &times {
                sessions = add(&sessions, w(t, t + gap)).sessions;
            }
            let mut sorted = times.clone();
            sorted.sort_unstable();
            let mut model: Vec<TimeWindow> = Vec::new();
            for t in sorted {
                match model.last_mut() {
                    Some(last) if t <= last.end => last.end = last.end.max(t + gap),
                    _ => model.push(w(t, t + gap)),
                }
            }
            let mut got: Vec<TimeWindow> = sessions.iter().map(|s| s.window).collect();
            got.sort();
            prop_assert_eq!(got, model);
            for s in &sessions {
                prop_assert!(times.iter().any(|&t| w(t, t + gap) == s.state_window));
                prop_assert!(s.window.start <= s.state_window.start);
                prop_assert!(s.state_window.end <= s.window.end);
            }
            let mut state_windows: Vec<TimeWindow> =
                sessions.iter().map(|s| s.state_window).collect();
            state_windows.sort();
            state_windows.dedup();
            prop_assert_eq!(state_windows.len(), sessions.len());
        }
    }

    /// A snapshot written before state windows holds open sessions in
    /// `_window_sessions` with their contents under the session window: opening the
    /// operator on it must give every such session a state window equal to itself (so
    /// its contents are found) and empty the old state; a fresh job never registers it.
    #[test]
    fn sessions_of_an_earlier_snapshot_migrate_to_their_own_state_windows() {
        // Kept until the end: the RocksDB choice's databases live under it.
        let _dir = tempfile::tempdir().unwrap();
        let choices = [
            BackendChoice::Heap,
            #[cfg(feature = "rocksdb")]
            BackendChoice::RocksDb(flowstate_rocksdb::RocksDbOptions::new(_dir.path())),
        ];
        let old_windows = |key: u32| {
            let t = i64::from(key);
            vec![w(t, t + 10), w(t + 100, t + 110)]
        };
        for choice in choices {
            let (_guard, storage) = temp_storage();
            let full = KeyGroupRange::new(0, 15).unwrap();
            let fresh = choice.create(config::<u32>(16, full)).unwrap();
            open(&fresh).unwrap();
            assert!(!fresh.state_names().iter().any(|n| n == OLD_SESSIONS));
            let before = choice.create(config::<u32>(16, full)).unwrap();
            let old = before
                .value_state::<VoidNamespace, Vec<TimeWindow>>(&ValueStateDescriptor::new(
                    OLD_SESSIONS,
                ))
                .unwrap();
            for key in 0..40u32 {
                before.set_current_key(key).unwrap();
                old.update(old_windows(key)).unwrap();
            }
            let handle = snapshot_to(&before, &storage, "sessions/old");
            drop((old, before));

            let restored = choice
                .restore(
                    config::<u32>(16, full),
                    &storage,
                    std::slice::from_ref(&handle),
                )
                .unwrap();
            let state = open(&restored).unwrap();
            let old = restored
                .value_state::<VoidNamespace, Vec<TimeWindow>>(&ValueStateDescriptor::new(
                    OLD_SESSIONS,
                ))
                .unwrap();
            for key in 0..45u32 {
                restored.set_current_key(key).unwrap();
                let expected = (key < 40).then(|| {
                    old_windows(key)
                        .into_iter()
                        .map(|x| s(x, x))
                        .collect::<Vec<_>>()
                });
                assert_eq!(ValueState::value(&*state).unwrap(), expected, "key {key}");
                assert_eq!(old.value().unwrap(), None, "key {key}: old state emptied");
            }
            // Opening again (the next restore of the same job) changes nothing.
            let again = open(&restored).unwrap();
            restored.set_current_key(3).unwrap();
            assert_eq!(
                ValueState::value(&*again).unwrap(),
                Some(vec![s(w(3, 13), w(3, 13)), s(w(103, 113), w(103, 113))])
            );
        }
    }
}
