//! Entries a state read from RocksDB, kept in memory to answer its next gets of them.
//!
//! A RocksDB get of an entry the block cache holds still searches a memtable skip
//! list, probes bloom filters and binary-searches an SST index and block: about 2.5 µs
//! on this machine (2026-12-03), where a hash-table probe is a tenth of that. So each
//! state keeps the entries it read, by entry key, with their stored bytes or their
//! absence, within a byte budget (`RocksDbOptions::entry_cache_bytes`) that counts the
//! table's whole allocation and the bytes keys and values keep outside it. An entry
//! that would pass the budget (the table doubling, or its bytes) first evicts about
//! half of the entries, chosen by a bit of their hash that changes from one eviction to
//! the next, and often a half of the rest (a full table reuses its evicted slots only
//! once at most half hold entries): no recency to keep up per get, and a state whose
//! keys do not all fit still finds the half to three quarters it keeps. (Measured in a
//! unit test: a 1 MiB cache of 7,168 entries keeps 1,700–1,900 after its evictions.)
//!
//! The cache only ever holds what RocksDB holds, so nothing here needs writing: the
//! state's puts and deletes (deferred, `deferred.rs`) update an entry it holds, a list
//! append forgets it (the merged value is RocksDB's to compute), and a write around the
//! deferred writes (a map's `clear` or its canonical put) updates the entries it wrote.
//! Entries are added only by reads, never by writes, so a state that is written and
//! never read (a map job's puts) never fills it. Flink's RocksDB backend has no such
//! cache; its block cache holds blocks, whose look-up is the cost this avoids.

use std::hash::BuildHasher;
use std::mem::size_of;

use hashbrown::{DefaultHashBuilder, HashTable};
use smallvec::SmallVec;

/// Bytes of a key kept inline.
const INLINE_KEY: usize = 24;
/// Bytes of a value kept inline.
const INLINE_VALUE: usize = 16;

/// An entry key, inline up to 24 bytes (a `u64` key with a `u64` map user key fits).
type Key = SmallVec<[u8; INLINE_KEY]>;

/// A stored value, inline up to 16 bytes; `None`: RocksDB holds no value.
type Value = Option<SmallVec<[u8; INLINE_VALUE]>>;

/// Bytes of one entry's slot in the table, its control byte included.
const SLOT: usize = size_of::<(Key, Value)>() + 1;

/// Bytes a table of its first four slots allocates, about.
const FIRST_TABLE: usize = 4 * SLOT + 16;

/// Bytes `key` and `value` keep on the heap, outside the table (none when inline).
fn spilled(key: &[u8], value: Option<&[u8]>) -> usize {
    let out = |len: usize, inline: usize| if len > inline { len } else { 0 };
    out(key.len(), INLINE_KEY) + value.map_or(0, |v| out(v.len(), INLINE_VALUE))
}

/// One state's cached entries.
#[derive(Debug)]
pub(crate) struct EntryCache {
    entries: HashTable<(Key, Value)>,
    hasher: DefaultHashBuilder,
    /// Bytes keys and values keep outside the table ([`spilled`]).
    spilled: usize,
    /// Bytes the table and the spilled bytes may take; 0 keeps nothing.
    budget: usize,
    /// Evictions so far: which hash bit the next one evicts by.
    evictions: u32,
}

impl EntryCache {
    /// An empty cache of at most about `budget` bytes (0: the cache keeps nothing).
    pub(crate) fn new(budget: usize) -> Self {
        EntryCache {
            entries: HashTable::new(),
            hasher: DefaultHashBuilder::default(),
            spilled: 0,
            budget,
            evictions: 0,
        }
    }

    fn hash(&self, key: &[u8]) -> u64 {
        self.hasher.hash_one(key)
    }

    /// What RocksDB holds for `key` (`Some(None)`: no value), if cached.
    pub(crate) fn get(&self, key: &[u8]) -> Option<Option<&[u8]>> {
        if self.entries.is_empty() {
            return None;
        }
        self.entries
            .find(self.hash(key), |(k, _)| k.as_slice() == key)
            .map(|(_, v)| v.as_deref())
    }

    /// Prefetches the bucket `key` occupies without waiting for it (see
    /// `flowstate_prefetch::prefetch_bucket`): the keyed operator's prefetch calls it
    /// for the keys of the records about to run.
    pub(crate) fn touch(&self, key: &[u8]) {
        if !self.entries.is_empty() {
            flowstate_prefetch::prefetch_bucket(&self.entries, self.hash(key));
        }
    }

    /// Bytes the cache would take with one more entry of `add` spilled bytes: the
    /// table's allocation, doubled when the insert would grow it. A full table grows
    /// unless at most half of its slots hold entries (the rest held evicted ones, which
    /// `hashbrown` then clears by rehashing in place, with no new allocation).
    fn bytes_with(&self, add: usize) -> usize {
        let table = self.entries.allocation_size();
        let len = self.entries.len();
        // `hashbrown`'s allocation: a slot and a control byte per bucket, and a group
        // of control bytes more.
        let buckets = table.saturating_sub(16) / SLOT;
        let slots = if buckets < 8 {
            buckets.saturating_sub(1)
        } else {
            buckets / 8 * 7
        };
        let grows = len == self.entries.capacity() && len + 1 > slots / 2;
        let table = if grows {
            (2 * table).max(FIRST_TABLE)
        } else {
            table
        };
        table + self.spilled + add
    }

    /// Evicts about half of the entries (every entry whose hash has this eviction's
    /// bit set), all of them when that evicts none.
    fn evict(&mut self) {
        let bit = self.evictions % 64;
        self.evictions = self.evictions.wrapping_add(1);
        let hasher = &self.hasher;
        let spilled = &mut self.spilled;
        let before = self.entries.len();
        self.entries.retain(|(k, v)| {
            let keep = (hasher.hash_one(k.as_slice()) >> bit) & 1 == 0;
            if !keep {
                *spilled -= self::spilled(k, v.as_deref());
            }
            keep
        });
        if self.entries.len() == before {
            self.clear();
        }
    }

    /// Keeps what a read of RocksDB found for `key` (`None`: no value), evicting
    /// entries first if it would pass the budget; not at all if it alone would.
    pub(crate) fn remember(&mut self, key: &[u8], value: Option<&[u8]>) {
        if self.budget == 0 {
            return;
        }
        let hash = self.hash(key);
        // A key held already (not what a state does: it reads only keys not held)
        // goes in anew, within the budget as any other.
        self.forget_hashed(hash, key);
        let add = spilled(key, value);
        while !self.entries.is_empty() && self.bytes_with(add) > self.budget {
            self.evict();
        }
        let hasher = &self.hasher;
        if self.bytes_with(add) > self.budget {
            // Empty, its table grown for smaller entries: a table of one may still fit.
            self.entries
                .shrink_to(0, |(k, _)| hasher.hash_one(k.as_slice()));
            if self.bytes_with(add) > self.budget {
                return;
            }
        }
        let new = value.map(SmallVec::from_slice);
        self.entries
            .insert_unique(hash, (Key::from_slice(key), new), |(k, _)| {
                hasher.hash_one(k.as_slice())
            });
        self.spilled += add;
    }

    /// A put (`Some`) or delete (`None`) of `key`: the entry, if cached, takes its new
    /// value (RocksDB holds it once the deferred writes are written; until then, they
    /// answer first). A longer value may pass the budget until the next entry evicts.
    pub(crate) fn update(&mut self, key: &[u8], value: Option<&[u8]>) {
        if self.entries.is_empty() {
            return;
        }
        let hash = self.hash(key);
        if let Some((_, old)) = self.entries.find_mut(hash, |(k, _)| k.as_slice() == key) {
            self.spilled -= spilled(key, old.as_deref());
            match (&mut *old, value) {
                // Reuses the value's buffer: a steady run of updates allocates nothing.
                (Some(buf), Some(v)) => {
                    buf.clear();
                    buf.extend_from_slice(v);
                }
                (old, v) => *old = v.map(SmallVec::from_slice),
            }
            self.spilled += spilled(key, value);
        }
    }

    /// Forgets `key`: a write changed it in a way only RocksDB resolves (an append).
    pub(crate) fn forget(&mut self, key: &[u8]) {
        if self.entries.is_empty() {
            return;
        }
        self.forget_hashed(self.hash(key), key);
    }

    /// [`EntryCache::forget`] of `key`, whose hash is `hash`.
    fn forget_hashed(&mut self, hash: u64, key: &[u8]) {
        if let Ok(entry) = self.entries.find_entry(hash, |(k, _)| k.as_slice() == key) {
            let ((k, v), _) = entry.remove();
            self.spilled -= spilled(&k, v.as_deref());
        }
    }

    /// Forgets every entry (keeping the table's memory for the next ones).
    pub(crate) fn clear(&mut self) {
        self.entries.clear();
        self.spilled = 0;
    }

    /// Bytes the cache takes: its table's allocation and the spilled bytes.
    #[cfg(test)]
    fn bytes(&self) -> usize {
        self.entries.allocation_size() + self.spilled
    }

    /// The spilled bytes, counted over the entries.
    #[cfg(test)]
    fn spilled_recounted(&self) -> usize {
        self.entries
            .iter()
            .map(|(k, v)| spilled(k, v.as_deref()))
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_what_was_read_and_follows_the_writes() {
        let mut c = EntryCache::new(1 << 20);
        assert_eq!(c.get(b"a"), None);
        c.update(b"a", Some(b"1"));
        assert_eq!(c.get(b"a"), None, "a write alone caches nothing");
        c.remember(b"a", Some(b"1"));
        c.remember(b"b", None);
        assert_eq!(c.get(b"a"), Some(Some(&b"1"[..])));
        assert_eq!(c.get(b"b"), Some(None), "an absence is cached too");
        c.update(b"a", None);
        c.update(b"b", Some(b"22"));
        assert_eq!(c.get(b"a"), Some(None));
        assert_eq!(c.get(b"b"), Some(Some(&b"22"[..])));
        c.forget(b"b");
        assert_eq!(c.get(b"b"), None);
        let long = [7u8; 40];
        c.remember(&long, Some(&long));
        assert_eq!(c.spilled, 80, "bytes outside the table count");
        c.clear();
        assert_eq!((c.get(b"a"), c.get(&long), c.spilled), (None, None, 0));
    }

    #[test]
    fn keeps_within_its_budget_by_evicting_about_half() {
        let budget = 1 << 20;
        let mut c = EntryCache::new(budget);
        let (mut most, mut least) = (0, usize::MAX);
        for k in 0u32..200_000 {
            c.remember(&k.to_be_bytes(), Some(b"v"));
            assert!(c.bytes() <= budget, "{} bytes after {k}", c.bytes());
            assert_eq!(c.get(&k.to_be_bytes()), Some(Some(&b"v"[..])), "{k} kept");
            most = most.max(c.entries.len());
            if k >= 100_000 {
                least = least.min(c.entries.len());
            }
        }
        // A 1 MiB table holds 8,192 slots of 65 bytes at most, 7,168 entries.
        assert!(most > 7_000, "the table fills before evicting: {most}");
        // An eviction takes about half, a second one when the first left the table
        // full of evicted slots: never (nearly) all.
        assert!(least > most / 8, "evictions keep some: {least}");
        let mut off = EntryCache::new(0);
        off.remember(b"a", Some(b"1"));
        assert_eq!((off.get(b"a"), off.bytes()), (None, 0));
        let mut tiny = EntryCache::new(FIRST_TABLE - 1);
        tiny.remember(b"a", Some(b"1"));
        assert_eq!(tiny.get(b"a"), None, "not even one table fits");
    }
}

#[cfg(test)]
mod model_tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::test_keys::key_of;
    use proptest::prelude::*;

    /// One call on [`EntryCache`].
    #[derive(Clone, Debug)]
    enum Call {
        Remember(u16, Option<Vec<u8>>),
        Update(u16, Option<Vec<u8>>),
        Forget(u16),
        Touch(u16),
        Clear,
    }

    fn call() -> impl Strategy<Value = Call> {
        let key = 0u16..300;
        let value = proptest::option::of(proptest::collection::vec(any::<u8>(), 0..30));
        prop_oneof![
            6 => (key.clone(), value.clone()).prop_map(|(k, v)| Call::Remember(k, v)),
            4 => (key.clone(), value).prop_map(|(k, v)| Call::Update(k, v)),
            2 => key.clone().prop_map(Call::Forget),
            2 => key.prop_map(Call::Touch),
            1 => Just(Call::Clear),
        ]
    }

    proptest! {
        /// Against a model (an ordered map of what RocksDB would hold for every key
        /// read, following the writes): every answer the cache gives is the model's,
        /// an entry just read is answered whenever one table of it fits the budget,
        /// the spilled bytes are counted right, and a remembered entry never takes the
        /// cache past its budget.
        #[test]
        fn answers_only_what_the_model_holds(
            budget in prop_oneof![Just(0usize), 0usize..(4 * FIRST_TABLE), 0usize..(64 * SLOT)],
            calls in proptest::collection::vec(call(), 1..1500),
        ) {
            let mut c = EntryCache::new(budget);
            let mut model: BTreeMap<Vec<u8>, Option<Vec<u8>>> = BTreeMap::new();
            for call in &calls {
                match call {
                    Call::Remember(k, v) => {
                        let k = key_of(*k);
                        c.remember(&k, v.as_deref());
                        model.insert(k.clone(), v.clone());
                        if FIRST_TABLE + spilled(&k, v.as_deref()) <= budget {
                            prop_assert_eq!(c.get(&k), Some(v.as_deref()), "just read");
                        }
                        prop_assert!(c.bytes() <= budget.max(c.entries.allocation_size()));
                    }
                    Call::Update(k, v) => {
                        let k = key_of(*k);
                        c.update(&k, v.as_deref());
                        if let Some(old) = model.get_mut(&k) {
                            old.clone_from(v);
                        }
                    }
                    Call::Forget(k) => {
                        c.forget(&key_of(*k));
                        model.remove(&key_of(*k));
                    }
                    Call::Touch(k) => c.touch(&key_of(*k)),
                    Call::Clear => {
                        c.clear();
                        model.clear();
                    }
                }
                prop_assert_eq!(c.spilled, c.spilled_recounted());
            }
            for k in 0..300u16 {
                if let Some(got) = c.get(&key_of(k)) {
                    let want = model.get(&key_of(k)).map(|v| v.as_deref());
                    prop_assert_eq!(Some(got), want, "key {}", k);
                }
            }
        }
    }
}
