//! Batched reads ahead of the keyed operator's records: what the RocksDB backend does
//! with [`flowstate_core::backend::KeyedStateBackend::prefetch`].
//!
//! The keyed operator hands the backend the keys of its next few records before it runs
//! them. For each state stored as one value per key (value, reducing and aggregating
//! state) without namespaces, the backend reads those keys' entries with one sorted
//! `MultiGet` (RocksDB then probes the memtable, bloom filters and blocks for the whole
//! batch at once, which costs less than a get per record) into a [`Prefetched`] cache.
//! Until the next prefetch, a get of a cached entry key is answered from it. The state's
//! writes keep it up to date; they themselves wait in the state's deferred writes
//! (`deferred.rs`), which also answer the prefetch for the keys they hold.
//!
//! A state whose records do not read it would pay for reads it never uses, so the
//! backend reads ahead for a state only while its records read at least half of the
//! last batch's keys ([`read_ahead`]); otherwise the batch's keys are cached without
//! values (a get of one goes to RocksDB, and counts as a read for the next decision).

use std::hash::BuildHasher;

use hashbrown::{DefaultHashBuilder, HashTable};

/// A cached entry: what RocksDB held for the entry key at the prefetch, kept up to date
/// by the state's own writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Slot {
    /// No value stored.
    Absent,
    /// The value is `values[i]`.
    Present,
    /// Not read ahead, or merged into since: only RocksDB knows the value.
    Unknown,
}

/// The cache of one state: sorted unique entry keys with their values. Buffers are
/// kept between batches, so a steady run allocates nothing.
#[derive(Debug, Default)]
pub(crate) struct Prefetched {
    keys: Vec<Vec<u8>>,
    values: Vec<Vec<u8>>,
    slots: Vec<Slot>,
    /// Positions in `keys[..len]` by the key's hash. Every record looks its key up two
    /// or three times (a get, a put); a binary search cost five key comparisons each.
    index: HashTable<u32>,
    hasher: DefaultHashBuilder,
    /// Entries of the current batch (`keys[..len]`).
    len: usize,
    /// Gets of cached keys since the batch was filled, answered here or not.
    reads: usize,
}

impl Prefetched {
    /// Forgets every entry.
    fn clear(&mut self) {
        self.len = 0;
        self.reads = 0;
        self.index.clear();
    }

    /// Entries of the current batch.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Gets of cached keys since [`Prefetched::fill`], answered here or not.
    pub(crate) fn reads(&self) -> usize {
        self.reads
    }

    /// Replaces the entries with `entries`: entry keys in strictly increasing order, each
    /// with the state's value for it, or `None` when it was not read (a get of it then
    /// goes to RocksDB until it is written).
    pub(crate) fn fill<'a>(
        &mut self,
        entries: impl IntoIterator<Item = (&'a [u8], Option<Option<&'a [u8]>>)>,
    ) {
        self.clear();
        for (key, value) in entries {
            debug_assert!(
                self.len == 0 || self.keys[self.len - 1].as_slice() < key,
                "entry keys sorted and unique"
            );
            if self.len == self.keys.len() {
                self.keys.push(Vec::new());
                self.values.push(Vec::new());
                self.slots.push(Slot::Absent);
            }
            let i = self.len;
            self.keys[i].clear();
            self.keys[i].extend_from_slice(key);
            let hasher = &self.hasher;
            let keys = &self.keys;
            self.index
                .insert_unique(hasher.hash_one(key), i as u32, |&j| {
                    hasher.hash_one(keys[j as usize].as_slice())
                });
            match value {
                Some(v) => self.set(i, v),
                None => self.slots[i] = Slot::Unknown,
            }
            self.len += 1;
        }
    }

    fn find(&self, key: &[u8]) -> Option<usize> {
        if self.len == 0 {
            return None;
        }
        let keys = &self.keys[..self.len];
        self.index
            .find(self.hasher.hash_one(key), |&i| {
                keys.get(i as usize).is_some_and(|k| k.as_slice() == key)
            })
            .map(|&i| i as usize)
    }

    fn set(&mut self, i: usize, value: Option<&[u8]>) {
        match value {
            Some(v) => {
                self.values[i].clear();
                self.values[i].extend_from_slice(v);
                self.slots[i] = Slot::Present;
            }
            None => self.slots[i] = Slot::Absent,
        }
    }

    /// The cached value of `key`: `None` when the cache cannot answer (not cached, not
    /// read ahead, or merged into since), `Some(None)` when RocksDB holds no value.
    pub(crate) fn get(&mut self, key: &[u8]) -> Option<Option<&[u8]>> {
        let i = self.find(key)?;
        self.reads += 1;
        match self.slots[i] {
            Slot::Unknown => None,
            Slot::Absent => Some(None),
            Slot::Present => Some(Some(self.values[i].as_slice())),
        }
    }

    /// Records a put (`Some`) or delete (`None`) of `key`, if it is cached.
    pub(crate) fn update(&mut self, key: &[u8], value: Option<&[u8]>) {
        if let Some(i) = self.find(key) {
            self.set(i, value);
        }
    }

    /// Records that `key` changed in a way only RocksDB can resolve (a merge).
    pub(crate) fn forget(&mut self, key: &[u8]) {
        if let Some(i) = self.find(key) {
            self.slots[i] = Slot::Unknown;
        }
    }
}

/// Whether to read a state's values ahead for the next batch, given how its last
/// batch was used (`cached` keys, `reads` gets of them): at first, and while its records
/// read at least half of the keys.
pub(crate) fn read_ahead(cached: usize, reads: usize) -> bool {
    cached == 0 || reads * 2 >= cached
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filled(entries: &[(&[u8], Option<&[u8]>)]) -> Prefetched {
        let mut p = Prefetched::default();
        p.fill(entries.iter().map(|&(k, v)| (k, Some(v))));
        p
    }

    #[test]
    fn answers_what_was_filled_and_nothing_else() {
        let mut p = filled(&[(b"a", Some(b"1")), (b"b", None), (b"c", Some(b""))]);
        assert_eq!(p.get(b"a"), Some(Some(&b"1"[..])));
        assert_eq!(p.get(b"b"), Some(None));
        assert_eq!(p.get(b"c"), Some(Some(&b""[..])));
        assert_eq!(p.get(b"bb"), None);
        assert_eq!(p.reads(), 3, "gets of uncached keys are not counted");
        p.fill([(&b"b"[..], Some(Some(&b"2"[..]))), (&b"c"[..], None)]);
        assert_eq!((p.len(), p.reads()), (2, 0));
        assert_eq!(p.get(b"a"), None, "a refill forgets the last batch");
        assert_eq!(p.get(b"b"), Some(Some(&b"2"[..])));
        assert_eq!(
            p.get(b"c"),
            None,
            "cached without its value: RocksDB answers"
        );
        assert_eq!(p.reads(), 2, "and it counts as a read");
        p.update(b"c", Some(b"7"));
        assert_eq!(p.get(b"c"), Some(Some(&b"7"[..])), "written: known");
    }

    #[test]
    fn writes_update_cached_keys_and_merges_forget() {
        let mut p = filled(&[(b"a", Some(b"1")), (b"b", None), (b"c", Some(b"3"))]);
        p.update(b"b", Some(b"9"));
        p.update(b"a", None);
        p.update(b"z", Some(b"not cached"));
        assert_eq!(p.get(b"a"), Some(None));
        assert_eq!(p.get(b"b"), Some(Some(&b"9"[..])));
        assert_eq!(p.get(b"z"), None, "not cached: RocksDB answers");
        p.forget(b"b");
        assert_eq!(p.get(b"b"), None, "merged: only RocksDB knows");
        p.update(b"b", Some(b"5"));
        assert_eq!(
            p.get(b"b"),
            Some(Some(&b"5"[..])),
            "a put makes it known again"
        );
        p.clear();
        assert_eq!(p.get(b"b"), None);
    }

    /// Every key the property test can make: up to 3 bytes, each below 4.
    fn every_key() -> Vec<Vec<u8>> {
        let mut keys = vec![Vec::new()];
        let mut last = vec![Vec::new()];
        for _ in 0..3 {
            last = last
                .iter()
                .flat_map(|k| (0u8..4).map(move |b| [k.as_slice(), &[b]].concat()))
                .collect();
            keys.extend(last.iter().cloned());
        }
        keys
    }

    proptest::proptest! {
        /// Across refills of any size, `get` answers exactly what the current batch
        /// holds (as filled, then written or forgotten), and nothing of earlier ones.
        #[test]
        fn answers_as_a_map_of_the_current_batch(
            batches in proptest::collection::vec(
                (
                    proptest::collection::btree_map(
                        proptest::collection::vec(0u8..4, 0..4),
                        proptest::option::of(proptest::option::of(
                            proptest::collection::vec(0u8..255, 0..3),
                        )),
                        0..40,
                    ),
                    proptest::collection::vec(
                        (0u8..3, proptest::collection::vec(0u8..4, 0..4), 0u8..255),
                        0..30,
                    ),
                ),
                1..6,
            ),
        ) {
            use std::collections::BTreeMap;
            let mut p = Prefetched::default();
            for (batch, ops) in batches {
                p.fill(batch.iter().map(|(k, v)| (k.as_slice(), v.as_ref().map(|v| v.as_deref()))));
                let mut model: BTreeMap<Vec<u8>, Option<Option<Vec<u8>>>> = batch;
                for (op, key, byte) in ops {
                    let value = vec![byte];
                    match op {
                        0 => {
                            if let Some(v) = model.get_mut(&key) {
                                *v = Some(Some(value.clone()));
                            }
                            p.update(&key, Some(&value));
                        }
                        1 => {
                            if let Some(v) = model.get_mut(&key) {
                                *v = Some(None);
                            }
                            p.update(&key, None);
                        }
                        _ => {
                            if let Some(v) = model.get_mut(&key) {
                                *v = None;
                            }
                            p.forget(&key);
                        }
                    }
                }
                for key in every_key() {
                    let want = model.get(&key).and_then(|v| v.as_ref().map(|v| v.as_deref()));
                    proptest::prop_assert_eq!(p.get(&key), want, "key {:?}", key);
                }
            }
        }
    }

    #[test]
    fn reads_ahead_while_half_the_keys_are_read() {
        assert!(read_ahead(0, 0), "nothing known yet");
        assert!(read_ahead(32, 16));
        assert!(!read_ahead(32, 15));
        assert!(read_ahead(3, 5), "a key read several times");
    }
}
