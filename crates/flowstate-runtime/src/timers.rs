//! Timers of a keyed operator: per key and namespace, deduplicated, fired in timestamp
//! order, and stored in the keyed backend so they snapshot and rescale with the state.
//!
//! Each timer domain (event time, processing time) has two halves:
//! - the **stored** half is a map state of the operator's keyed backend,
//!   `_timer_state/event` and `_timer_state/processing`, holding for every key the
//!   `(timestamp, namespace)` pairs it has pending. Being keyed state it lives in the
//!   key group of its key, in the heap backend's tables or in RocksDB's column
//!   families, so it goes wherever that key group goes on snapshot, restore and rescale
//!   (Flink keeps timers in per-key-group priority queues of the backend for the same
//!   reason);
//! - the **queue** half is an in-memory `timestamp -> {(key, namespace)}` index of the
//!   same timers so the earliest is found without scanning state. It is rebuilt from
//!   the stored half on restore ([`TimerState::rebuild`]).
//!
//! Registering a timer that is already pending does nothing (Flink's deduplication);
//! firing removes it from both halves before the user callback runs, so a callback may
//! register the same timestamp again.

use std::collections::{BTreeMap, HashSet};
use std::hash::Hash;
use std::rc::Rc;

use flowstate_core::backend::KeyedStateBackend;
use flowstate_core::descriptor::MapStateDescriptor;
use flowstate_core::state::{InternalMapState, Namespace, StateKey, VoidNamespace};

use crate::RuntimeError;

/// Name of the map state holding event-time timers.
pub const EVENT_TIMER_STATE: &str = "_timer_state/event";
/// Name of the map state holding processing-time timers.
pub const PROCESSING_TIMER_STATE: &str = "_timer_state/processing";

/// Which clock a timer follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeDomain {
    /// The watermark.
    EventTime,
    /// The job's processing-time clock.
    ProcessingTime,
}

/// Pending timers of one domain: timestamp -> entries, so they fire in timestamp
/// order and an entry is registered at most once per timestamp.
pub(crate) struct TimerQueue<E> {
    by_time: BTreeMap<i64, HashSet<E>>,
    len: usize,
}

impl<E: Hash + Eq + Clone> TimerQueue<E> {
    pub(crate) fn new() -> Self {
        TimerQueue {
            by_time: BTreeMap::new(),
            len: 0,
        }
    }
    /// Adds a timer; `false` when it was already pending.
    pub(crate) fn register(&mut self, entry: E, ts: i64) -> bool {
        let added = self.by_time.entry(ts).or_default().insert(entry);
        self.len += usize::from(added);
        added
    }
    /// Removes a timer; `false` when it was not pending.
    pub(crate) fn delete(&mut self, entry: &E, ts: i64) -> bool {
        let Some(entries) = self.by_time.get_mut(&ts) else {
            return false;
        };
        let removed = entries.remove(entry);
        if entries.is_empty() {
            self.by_time.remove(&ts);
        }
        self.len -= usize::from(removed);
        removed
    }
    /// Removes and returns the earliest timer at or before `limit`.
    pub(crate) fn pop_due(&mut self, limit: i64) -> Option<(i64, E)> {
        let mut first = self.by_time.first_entry()?;
        if *first.key() > limit {
            return None;
        }
        let ts = *first.key();
        let entries = first.get_mut();
        let entry = entries.iter().next().cloned();
        if let Some(e) = &entry {
            entries.remove(e);
            self.len -= 1;
        }
        if entries.is_empty() {
            first.remove();
        }
        entry.map(|e| (ts, e))
    }
    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

/// One domain's timers: the in-memory queue and the stored map state.
struct Domain<K, N> {
    queue: TimerQueue<(K, N)>,
    store: Rc<dyn InternalMapState<VoidNamespace, (i64, N), ()>>,
}

impl<K: StateKey, N: Namespace> Domain<K, N> {
    fn open<B: KeyedStateBackend<K>>(backend: &B, name: &str) -> Result<Self, RuntimeError> {
        let store =
            backend.map_state::<VoidNamespace, (i64, N), ()>(&MapStateDescriptor::new(name))?;
        let mut queue = TimerQueue::new();
        // Rebuild the queue from what a restore brought back (empty for a new backend).
        let current = backend.current_key();
        for key in backend.keys(name, &VoidNamespace)? {
            backend.set_current_key(key.clone())?;
            for ((ts, ns), ()) in store.entries()? {
                queue.register((key.clone(), ns), ts);
            }
        }
        if let Some(k) = current {
            backend.set_current_key(k)?;
        }
        Ok(Domain { queue, store })
    }
}

/// The timers of one keyed operator instance. Registration and deletion act on the
/// backend's current key, which the operator sets before every record and timer.
pub struct TimerState<K, N> {
    event: Domain<K, N>,
    processing: Domain<K, N>,
}

impl<K: StateKey, N: Namespace> TimerState<K, N> {
    /// Opens the timer states of `backend` and rebuilds the queues from whatever they
    /// hold (a restored or rescaled backend brings its key groups' timers with it).
    pub fn rebuild<B: KeyedStateBackend<K>>(backend: &B) -> Result<Self, RuntimeError> {
        Ok(TimerState {
            event: Domain::open(backend, EVENT_TIMER_STATE)?,
            processing: Domain::open(backend, PROCESSING_TIMER_STATE)?,
        })
    }

    fn domain(&mut self, domain: TimeDomain) -> &mut Domain<K, N> {
        match domain {
            TimeDomain::EventTime => &mut self.event,
            TimeDomain::ProcessingTime => &mut self.processing,
        }
    }

    /// Registers a timer of `key` (the backend's current key) in `namespace`.
    pub fn register(
        &mut self,
        domain: TimeDomain,
        key: &K,
        namespace: N,
        ts: i64,
    ) -> Result<(), RuntimeError> {
        let d = self.domain(domain);
        if d.queue.register((key.clone(), namespace.clone()), ts) {
            d.store.put((ts, namespace), ())?;
        }
        Ok(())
    }

    /// Deletes a timer of `key` (the backend's current key); absent timers are ignored.
    pub fn delete(
        &mut self,
        domain: TimeDomain,
        key: &K,
        namespace: N,
        ts: i64,
    ) -> Result<(), RuntimeError> {
        let d = self.domain(domain);
        if d.queue.delete(&(key.clone(), namespace.clone()), ts) {
            d.store.remove(&(ts, namespace))?;
        }
        Ok(())
    }

    /// Removes the earliest timer due at `limit` from the queue and from the stored
    /// state (setting its key current on `backend`) and returns it.
    pub fn pop_due<B: KeyedStateBackend<K>>(
        &mut self,
        domain: TimeDomain,
        limit: i64,
        backend: &B,
    ) -> Result<Option<(i64, K, N)>, RuntimeError> {
        let d = self.domain(domain);
        let Some((ts, (key, ns))) = d.queue.pop_due(limit) else {
            return Ok(None);
        };
        backend.set_current_key(key.clone())?;
        d.store.remove(&(ts, ns.clone()))?;
        Ok(Some((ts, key, ns)))
    }

    /// Number of pending timers of a domain.
    pub fn len(&self, domain: TimeDomain) -> usize {
        match domain {
            TimeDomain::EventTime => self.event.queue.len(),
            TimeDomain::ProcessingTime => self.processing.queue.len(),
        }
    }

    /// Whether no timer of `domain` is pending.
    pub fn is_empty(&self, domain: TimeDomain) -> bool {
        self.len(domain) == 0
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn queue_dedups_and_orders() {
        let mut q = TimerQueue::new();
        assert!(q.register("a", 5));
        assert!(!q.register("a", 5));
        assert!(q.register("b", 3));
        assert!(q.register("a", 3));
        assert_eq!(q.len(), 3);
        assert!(q.delete(&"b", 3));
        assert!(!q.delete(&"b", 3));
        assert_eq!(q.pop_due(2), None);
        assert_eq!(q.pop_due(10), Some((3, "a")));
        assert_eq!(q.pop_due(10), Some((5, "a")));
        assert_eq!(q.pop_due(10), None);
        assert_eq!(q.len(), 0);
    }
}
