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
//! - the **queue** half is a `timestamp -> {(key, namespace)}` index of the same
//!   timers so the earliest is found without scanning state. It is rebuilt from the
//!   stored half on restore ([`TimerState::rebuild`]). On the heap backend it is all
//!   in memory. On RocksDB (SPEC 4: timers spill to the LSM backend) memory holds a
//!   *window* of the earliest timers, every timer up to a horizon timestamp, at most
//!   about `timer_window` of them; the later ones wait in a [`TimerSpill`] on local
//!   disk, ordered by timestamp, and move into memory a half window at a time as the
//!   window empties. Memory thus stays bounded with millions of timers, and one that
//!   is due is found without reading the disk.
//!
//! Registering a timer that is already pending does nothing (Flink's deduplication);
//! firing removes it from both halves before the user callback runs, so a callback may
//! register the same timestamp again.

use std::collections::{BTreeMap, HashSet};
use std::hash::Hash;
use std::rc::Rc;

use serde::Serialize;
use serde::de::DeserializeOwned;

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

/// Where a timer queue keeps the timers beyond its in-memory window: an ordered set
/// of byte strings on local disk (RocksDB's [`flowstate_rocksdb::SpillSet`]).
pub(crate) trait TimerSpill {
    fn insert_all(&self, keys: &[Vec<u8>]) -> Result<(), RuntimeError>;
    fn remove_all(&self, keys: &[Vec<u8>]) -> Result<(), RuntimeError>;
    fn contains(&self, key: &[u8]) -> Result<bool, RuntimeError>;
    /// The first `limit` keys starting with `prefix`, in byte order.
    fn scan(&self, prefix: &[u8], limit: usize) -> Result<Vec<Vec<u8>>, RuntimeError>;
}

/// A queue's spilled part: the timers after `horizon`, in `set` under `prefix`.
struct Spilled<E> {
    set: Rc<dyn TimerSpill>,
    /// The entry's bytes appended to a key, and back (postcard; chosen where the
    /// entry type is known to be serde, so the queue's other methods need not be).
    encode: fn(&E, Vec<u8>) -> Result<Vec<u8>, RuntimeError>,
    decode: fn(&[u8]) -> Result<E, RuntimeError>,
    /// Distinguishes the queues sharing one set (the domains).
    prefix: u8,
    /// Timers kept in memory at most (about: a single timestamp's timers are never
    /// split).
    window: usize,
    /// Memory holds every pending timer at or before this timestamp, the set every
    /// one after it (`i64::MAX`: none is spilled).
    horizon: i64,
    /// Timers in the set.
    len: usize,
}

/// A timer that could not be encoded for, or decoded from, the spill.
fn bad_timer(why: String) -> RuntimeError {
    RuntimeError::State(flowstate_core::StateError::serialization(
        "timer",
        flowstate_core::SerializationError::new(why),
    ))
}

fn encode_entry<E: Serialize>(entry: &E, key: Vec<u8>) -> Result<Vec<u8>, RuntimeError> {
    postcard::to_extend(entry, key).map_err(|e| bad_timer(e.to_string()))
}

fn decode_entry<E: DeserializeOwned>(bytes: &[u8]) -> Result<E, RuntimeError> {
    postcard::from_bytes(bytes).map_err(|e| bad_timer(e.to_string()))
}

impl<E> Spilled<E> {
    /// The set's key of a timer: prefix, timestamp in order-preserving big-endian,
    /// then the entry.
    fn key(&self, ts: i64, entry: &E) -> Result<Vec<u8>, RuntimeError> {
        let mut k = vec![self.prefix];
        k.extend_from_slice(&((ts as u64) ^ (1 << 63)).to_be_bytes());
        (self.encode)(entry, k)
    }

    fn decode(&self, key: &[u8]) -> Result<(i64, E), RuntimeError> {
        let ts: [u8; 8] = key
            .get(1..9)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| bad_timer("a spilled timer key is too short".into()))?;
        let ts = (u64::from_be_bytes(ts) ^ (1 << 63)) as i64;
        Ok((ts, (self.decode)(&key[9..])?))
    }
}

/// Pending timers of one domain: timestamp -> entries, so they fire in timestamp
/// order and an entry is registered at most once per timestamp; with a spill, only
/// the earliest window of them in memory (see the module docs).
pub(crate) struct TimerQueue<E> {
    by_time: BTreeMap<i64, HashSet<E>>,
    /// Timers in memory.
    len: usize,
    spill: Option<Spilled<E>>,
}

impl<E: Hash + Eq + Clone + Serialize + DeserializeOwned> TimerQueue<E> {
    /// A queue keeping at most about `window` timers in memory and the rest in `set`
    /// under `prefix` (which must be its own there).
    pub(crate) fn spilling(set: Rc<dyn TimerSpill>, prefix: u8, window: usize) -> Self {
        TimerQueue {
            by_time: BTreeMap::new(),
            len: 0,
            spill: Some(Spilled {
                set,
                encode: encode_entry::<E>,
                decode: decode_entry::<E>,
                prefix,
                window: window.max(2),
                horizon: i64::MAX,
                len: 0,
            }),
        }
    }
}

impl<E: Hash + Eq + Clone> TimerQueue<E> {
    pub(crate) fn new() -> Self {
        TimerQueue {
            by_time: BTreeMap::new(),
            len: 0,
            spill: None,
        }
    }

    /// Adds a timer; `false` when it was already pending.
    pub(crate) fn register(&mut self, entry: E, ts: i64) -> Result<bool, RuntimeError> {
        if let Some(sp) = &mut self.spill
            && ts > sp.horizon
        {
            let key = sp.key(ts, &entry)?;
            if sp.set.contains(&key)? {
                return Ok(false);
            }
            sp.set.insert_all(&[key])?;
            sp.len += 1;
            return Ok(true);
        }
        let added = self.by_time.entry(ts).or_default().insert(entry);
        self.len += usize::from(added);
        if added {
            self.evict()?;
        }
        Ok(added)
    }

    /// Moves the latest timestamps out of memory while it holds more than the window
    /// (down to half of it, so the next eviction waits), lowering the horizon.
    fn evict(&mut self) -> Result<(), RuntimeError> {
        let Some(sp) = &mut self.spill else {
            return Ok(());
        };
        if self.len <= sp.window {
            return Ok(());
        }
        let mut keys = Vec::new();
        while self.len > sp.window / 2 && self.by_time.len() > 1 {
            let Some((ts, entries)) = self.by_time.pop_last() else {
                break;
            };
            self.len -= entries.len();
            for e in &entries {
                keys.push(sp.key(ts, e)?);
            }
        }
        if let Some((last, _)) = self.by_time.last_key_value() {
            sp.horizon = *last;
        }
        sp.len += keys.len();
        sp.set.insert_all(&keys)
    }

    /// Brings the earliest spilled timers into memory once memory is empty: about
    /// half a window, and every timer of the last timestamp read.
    fn refill(&mut self) -> Result<(), RuntimeError> {
        let Some(sp) = &mut self.spill else {
            return Ok(());
        };
        if self.len > 0 || sp.len == 0 {
            return Ok(());
        }
        let mut keys = sp.set.scan(&[sp.prefix], (sp.window / 2).max(1))?;
        if let Some(last) = keys.last().cloned() {
            // The rest of the last timestamp, so a timestamp is never split.
            let ts_prefix = &last[..9.min(last.len())];
            for k in sp.set.scan(ts_prefix, usize::MAX)? {
                if k > last {
                    keys.push(k);
                }
            }
        }
        let mut horizon = i64::MIN;
        for k in &keys {
            let (ts, entry) = sp.decode(k)?;
            horizon = horizon.max(ts);
            if self.by_time.entry(ts).or_default().insert(entry) {
                self.len += 1;
            }
        }
        sp.set.remove_all(&keys)?;
        sp.len = sp.len.saturating_sub(keys.len());
        sp.horizon = if sp.len == 0 { i64::MAX } else { horizon };
        Ok(())
    }

    /// Removes a timer; `false` when it was not pending.
    pub(crate) fn delete(&mut self, entry: &E, ts: i64) -> Result<bool, RuntimeError> {
        if let Some(sp) = &mut self.spill
            && ts > sp.horizon
        {
            let key = sp.key(ts, entry)?;
            if !sp.set.contains(&key)? {
                return Ok(false);
            }
            sp.set.remove_all(&[key])?;
            sp.len -= 1;
            return Ok(true);
        }
        let Some(entries) = self.by_time.get_mut(&ts) else {
            return Ok(false);
        };
        let removed = entries.remove(entry);
        if entries.is_empty() {
            self.by_time.remove(&ts);
        }
        self.len -= usize::from(removed);
        Ok(removed)
    }

    /// Removes and returns the earliest timer at or before `limit`.
    pub(crate) fn pop_due(&mut self, limit: i64) -> Result<Option<(i64, E)>, RuntimeError> {
        self.refill()?;
        let Some(mut first) = self.by_time.first_entry() else {
            return Ok(None);
        };
        if *first.key() > limit {
            return Ok(None);
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
        Ok(entry.map(|e| (ts, e)))
    }

    /// Pending timers, in memory and spilled.
    pub(crate) fn len(&self) -> usize {
        self.len + self.spill.as_ref().map_or(0, |s| s.len)
    }

    /// Timers held in memory.
    pub(crate) fn in_memory(&self) -> usize {
        self.len
    }
}

/// One domain's timers: the in-memory queue and the stored map state.
struct Domain<K, N> {
    queue: TimerQueue<(K, N)>,
    store: Rc<dyn InternalMapState<VoidNamespace, (i64, N), ()>>,
}

impl<K: StateKey, N: Namespace> Domain<K, N> {
    fn open<B: KeyedStateBackend<K>>(
        backend: &B,
        name: &str,
        mut queue: TimerQueue<(K, N)>,
    ) -> Result<Self, RuntimeError> {
        let store =
            backend.map_state::<VoidNamespace, (i64, N), ()>(&MapStateDescriptor::new(name))?;
        // Rebuild the queue from what a restore brought back (empty for a new backend).
        let current = backend.current_key();
        for key in backend.keys(name, &VoidNamespace)? {
            backend.set_current_key(key.clone())?;
            for ((ts, ns), ()) in store.entries()? {
                queue.register((key.clone(), ns), ts)?;
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
    /// hold (a restored or rescaled backend brings its key groups' timers with it),
    /// all in memory.
    pub fn rebuild<B: KeyedStateBackend<K>>(backend: &B) -> Result<Self, RuntimeError> {
        Self::with_queues(backend, |_| TimerQueue::new())
    }

    /// Opens both domains into the queues `queue` makes (given the domain's prefix in
    /// a shared spill) and rebuilds them from what `backend` holds.
    fn with_queues<B: KeyedStateBackend<K>>(
        backend: &B,
        queue: impl Fn(u8) -> TimerQueue<(K, N)>,
    ) -> Result<Self, RuntimeError> {
        Ok(TimerState {
            event: Domain::open(backend, EVENT_TIMER_STATE, queue(0))?,
            processing: Domain::open(backend, PROCESSING_TIMER_STATE, queue(1))?,
        })
    }
}

impl<K: StateKey + Serialize + DeserializeOwned, N: Namespace> TimerState<K, N> {
    /// Opens the timers of a job's keyed backend as its keyed operators do: rebuilt
    /// like [`TimerState::rebuild`], and on RocksDB with only a window of the earliest
    /// timers in memory (`RocksDbOptions::timer_window`), the rest spilled to local
    /// disk.
    pub fn open(backend: &crate::AnyBackend<K>) -> Result<Self, RuntimeError> {
        match backend.timer_spill()? {
            Some((set, window)) => Self::with_queues(backend, |prefix| {
                TimerQueue::spilling(set.clone(), prefix, window)
            }),
            None => Self::rebuild(backend),
        }
    }
}

impl<K: StateKey, N: Namespace> TimerState<K, N> {
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
        if d.queue.register((key.clone(), namespace.clone()), ts)? {
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
        if d.queue.delete(&(key.clone(), namespace.clone()), ts)? {
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
        let Some((ts, (key, ns))) = d.queue.pop_due(limit)? else {
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

    /// Timers of a domain held in memory (all of them unless they spill).
    pub fn in_memory(&self, domain: TimeDomain) -> usize {
        match domain {
            TimeDomain::EventTime => self.event.queue.in_memory(),
            TimeDomain::ProcessingTime => self.processing.queue.in_memory(),
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

    use std::cell::RefCell;
    use std::collections::BTreeSet;

    use proptest::prelude::*;

    /// A spill in memory: an ordered set, as RocksDB's spill set behaves.
    #[derive(Default)]
    struct MemSpill(RefCell<BTreeSet<Vec<u8>>>);

    impl TimerSpill for MemSpill {
        fn insert_all(&self, keys: &[Vec<u8>]) -> Result<(), RuntimeError> {
            self.0.borrow_mut().extend(keys.iter().cloned());
            Ok(())
        }
        fn remove_all(&self, keys: &[Vec<u8>]) -> Result<(), RuntimeError> {
            for k in keys {
                self.0.borrow_mut().remove(k);
            }
            Ok(())
        }
        fn contains(&self, key: &[u8]) -> Result<bool, RuntimeError> {
            Ok(self.0.borrow().contains(key))
        }
        fn scan(&self, prefix: &[u8], limit: usize) -> Result<Vec<Vec<u8>>, RuntimeError> {
            Ok(self
                .0
                .borrow()
                .range(prefix.to_vec()..)
                .take_while(|k| k.starts_with(prefix))
                .take(limit)
                .cloned()
                .collect())
        }
    }

    fn queues() -> Vec<TimerQueue<String>> {
        vec![
            TimerQueue::new(),
            TimerQueue::spilling(Rc::new(MemSpill::default()), 0, 2),
        ]
    }

    #[test]
    fn queue_dedups_and_orders() {
        for mut q in queues() {
            let a = || "a".to_string();
            assert!(q.register(a(), 5).unwrap());
            assert!(!q.register(a(), 5).unwrap());
            assert!(q.register("b".into(), 3).unwrap());
            assert!(q.register(a(), 3).unwrap());
            assert!(q.register(a(), -7).unwrap());
            assert_eq!(q.len(), 4);
            assert!(q.delete(&"b".into(), 3).unwrap());
            assert!(!q.delete(&"b".into(), 3).unwrap());
            assert_eq!(q.pop_due(-8).unwrap(), None);
            assert_eq!(q.pop_due(10).unwrap(), Some((-7, a())));
            assert_eq!(q.pop_due(2).unwrap(), None);
            assert_eq!(q.pop_due(10).unwrap(), Some((3, a())));
            assert_eq!(q.pop_due(10).unwrap(), Some((5, a())));
            assert_eq!(q.pop_due(10).unwrap(), None);
            assert_eq!(q.len(), 0);
        }
    }

    #[derive(Clone, Debug)]
    enum Op {
        Register(u8, i8),
        Delete(u8, i8),
        Pop(i8),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (any::<u8>(), any::<i8>()).prop_map(|(e, t)| Op::Register(e % 16, t)),
            1 => (any::<u8>(), any::<i8>()).prop_map(|(e, t)| Op::Delete(e % 16, t)),
            2 => any::<i8>().prop_map(Op::Pop),
        ]
    }

    proptest! {
        /// A spilling queue with a tiny window behaves exactly like a set of
        /// (timestamp, entry) pairs popped in timestamp order, and keeps about its
        /// window in memory.
        #[test]
        fn spilling_queue_matches_the_model(ops in prop::collection::vec(op(), 1..300), window in 2usize..8) {
            let mut q: TimerQueue<u8> =
                TimerQueue::spilling(Rc::new(MemSpill::default()), 3, window);
            let mut model: BTreeSet<(i64, u8)> = BTreeSet::new();
            for op in ops {
                match op {
                    Op::Register(e, t) => {
                        let added = q.register(e, i64::from(t)).unwrap();
                        prop_assert_eq!(added, model.insert((i64::from(t), e)));
                    }
                    Op::Delete(e, t) => {
                        let removed = q.delete(&e, i64::from(t)).unwrap();
                        prop_assert_eq!(removed, model.remove(&(i64::from(t), e)));
                    }
                    Op::Pop(limit) => {
                        let popped = q.pop_due(i64::from(limit)).unwrap();
                        let due = model.first().copied().filter(|(t, _)| *t <= i64::from(limit));
                        // Same timestamp; any entry of it (a set has no order within).
                        prop_assert_eq!(popped.map(|p| p.0), due.map(|d| d.0));
                        if let Some((t, e)) = popped {
                            prop_assert!(model.remove(&(t, e)));
                        }
                    }
                }
                prop_assert_eq!(q.len(), model.len());
                // A single timestamp's timers are never split, so the bound is the
                // window plus one timestamp's worth (at most 16 entries here).
                prop_assert!(q.in_memory() <= window + 16);
            }
            // Everything left pops in order.
            let mut last = i64::MIN;
            while let Some((t, e)) = q.pop_due(i64::MAX).unwrap() {
                prop_assert!(t >= last);
                last = t;
                prop_assert!(model.remove(&(t, e)));
            }
            prop_assert!(model.is_empty());
        }
    }
}
