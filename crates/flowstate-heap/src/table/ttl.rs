//! TTL in the heap tables: what expires in a stored value (the whole value, or each
//! list element or map pair), and the incremental cleanup that walks the tables a few
//! entries at a time after accesses.

use std::cell::Cell;
use std::hash::Hash;

use flowstate_core::ttl::{StateTtlConfig, TtlStorage};

use crate::user_map::UserMap;

use super::StateTable;

/// Tests a stored value at a time: whether any part of it is expired.
type ExpiryCheck<S> = Box<dyn Fn(&S, i64) -> bool>;
/// Removes the expired parts of a stored value; `true` when nothing is left.
type Pruner<S> = Box<dyn Fn(&mut S, i64) -> bool>;

/// TTL bookkeeping of a state stored with timestamps (see `flowstate_core::ttl`).
pub(crate) struct TableTtl<S> {
    pub(crate) config: StateTtlConfig,
    /// Whether any part of a stored value is expired at the given time.
    pub(crate) has_expired: ExpiryCheck<S>,
    /// Removes the expired parts of a stored value; `true` when nothing is left.
    pub(crate) prune: Pruner<S>,
    /// Where incremental cleanup continues: (key-group index, bucket index).
    pub(crate) cursor: Cell<(usize, usize)>,
}

impl<T: 'static> TableTtl<T> {
    /// Value, reducing and aggregating state: the stored value expires as a whole.
    pub(crate) fn whole(storage: &TtlStorage<T>) -> Self {
        let (a, b) = (storage.clone(), storage.clone());
        TableTtl {
            config: storage.config.clone(),
            has_expired: Box::new(move |v, now| a.is_expired(v, now)),
            prune: Box::new(move |v, now| b.is_expired(v, now)),
            cursor: Cell::new((0, 0)),
        }
    }
}

impl<T: 'static> TableTtl<Vec<T>> {
    /// List state: elements expire one by one.
    pub(crate) fn list(storage: &TtlStorage<T>) -> Self {
        let (a, b) = (storage.clone(), storage.clone());
        TableTtl {
            config: storage.config.clone(),
            has_expired: Box::new(move |l: &Vec<T>, now| l.iter().any(|e| a.is_expired(e, now))),
            prune: Box::new(move |l: &mut Vec<T>, now| {
                l.retain(|e| !b.is_expired(e, now));
                l.is_empty()
            }),
            cursor: Cell::new((0, 0)),
        }
    }
}

impl<UK: 'static, UV: 'static> TableTtl<UserMap<UK, UV>> {
    /// Map state: entries expire one by one.
    pub(crate) fn map(storage: &TtlStorage<UV>) -> Self {
        let (a, b) = (storage.clone(), storage.clone());
        TableTtl {
            config: storage.config.clone(),
            has_expired: Box::new(move |m: &UserMap<UK, UV>, now| {
                m.values().any(|e| a.is_expired(e, now))
            }),
            prune: Box::new(move |m: &mut UserMap<UK, UV>, now| {
                m.retain(|_, e| !b.is_expired(e, now));
                m.is_empty()
            }),
            cursor: Cell::new((0, 0)),
        }
    }
}

/// TTL cleanup, run from the state handles.
impl<K, N, S> StateTable<K, N, S>
where
    K: Clone + Eq + Hash + Send + Sync + 'static,
    N: Clone + Eq + Hash + Send + Sync + 'static,
    S: Clone + Send + Sync + 'static,
{
    /// Incremental TTL cleanup after a state access, when configured.
    #[inline]
    pub(crate) fn after_access(&self) {
        if let Some(t) = &self.ttl
            && let Some(inc) = t.config.cleanup().incremental
        {
            self.cleanup_expired(t, inc.cleanup_size);
        }
    }

    /// Checks up to `budget` entries from where the last call stopped (wrapping around
    /// all key groups) and removes what has expired. Removal leaves other entries in
    /// their buckets, so the cursor stays meaningful; a resize only moves where the
    /// walk continues. Empty buckets are skipped within a bound, so one call's cost
    /// stays bounded however sparse the tables are.
    pub(super) fn cleanup_expired(&self, t: &TableTtl<S>, budget: u32) {
        // A call from inside another access of this state (not possible through the
        // handles today) would find the tables borrowed: skip rather than fail.
        let Ok(mut maps) = self.maps.try_borrow_mut() else {
            return;
        };
        if maps.is_empty() {
            return;
        }
        let now = t.config.clock().now_ms();
        let (mut kg, mut bucket) = t.cursor.get();
        let max_steps = (budget as usize).saturating_mul(64);
        let (mut checked, mut steps) = (0u32, 0usize);
        while checked < budget && steps < max_steps {
            steps += 1;
            if kg >= maps.len() {
                kg = 0;
                bucket = 0;
            }
            if bucket >= maps[kg].num_buckets() {
                kg += 1;
                bucket = 0;
                continue;
            }
            if let Some(e) = maps[kg].get_bucket(bucket) {
                checked += 1;
                if (t.has_expired)(&e.value, now)
                    && let Ok(mut o) = maps[kg].to_mut().get_bucket_entry(bucket)
                    && (t.prune)(&mut o.get_mut().value, now)
                {
                    o.remove();
                }
            }
            bucket += 1;
        }
        t.cursor.set((kg, bucket));
    }
}
