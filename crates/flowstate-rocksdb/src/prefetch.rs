//! Batched reads and writes around the keyed operator's records: what the RocksDB
//! backend does with [`flowstate_core::backend::KeyedStateBackend::prefetch`].
//!
//! The keyed operator hands the backend the keys of its next few records before it runs
//! them. For each state stored as one value per key (value, reducing and aggregating
//! state) without namespaces, the backend reads those keys' entries with one sorted
//! `MultiGet` (RocksDB then probes the memtable, bloom filters and blocks for the whole
//! batch at once, which costs less than a get per record) into a [`Prefetched`] cache.
//! Until the next prefetch, a get of a cached entry key is answered from it, and a put
//! or delete of one is kept in it, marked dirty; the next prefetch writes the dirty
//! entries with one `WriteBatch` in key order before it reads the next batch. So what the
//! cache holds of a key is its newest value, and RocksDB holds the newest value of every
//! key without a write waiting in the cache.
//!
//! Anything that reads RocksDB other than through a state's get (a checkpoint or
//! savepoint, listing keys, compaction, counting entries) writes the dirty
//! entries first, and so does a merge of a dirty key (the operand must land after the
//! value). A deferred write that fails stays dirty and is tried again at the next of
//! those points; a checkpoint then fails with it, so nothing is acknowledged that was
//! not written (without a WAL, as in Flink, writes are durable only through a
//! checkpoint anyway).
//!
//! A state whose records do not read it would pay for reads it never uses, so the
//! backend reads ahead for a state only while its records read at least half of the
//! last batch's keys ([`read_ahead`]); otherwise the batch's keys are cached without
//! values (a get of one goes to RocksDB, and counts as a read for the next decision),
//! which still gathers the records' writes into one batch.

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

/// The cache of one state: sorted unique entry keys with their values, some written
/// since the prefetch (dirty). Buffers are kept between batches, so a steady run
/// allocates nothing.
#[derive(Debug, Default)]
pub(crate) struct Prefetched {
    keys: Vec<Vec<u8>>,
    values: Vec<Vec<u8>>,
    slots: Vec<Slot>,
    /// Written here and not yet to RocksDB.
    dirty: Vec<bool>,
    /// Whether any entry is dirty.
    any_dirty: bool,
    /// Entries of the current batch (`keys[..len]`).
    len: usize,
    /// Gets of cached keys since the batch was filled, answered here or not.
    reads: usize,
}

impl Prefetched {
    /// Forgets every entry; the dirty ones must have been written
    /// ([`Prefetched::written`]).
    fn clear(&mut self) {
        debug_assert!(!self.any_dirty, "dirty entries written before a clear");
        self.len = 0;
        self.reads = 0;
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
    /// with the value RocksDB holds for it, or `None` when it was not read (a get of it
    /// then goes to RocksDB until it is written here).
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
                self.dirty.push(false);
            }
            let i = self.len;
            self.keys[i].clear();
            self.keys[i].extend_from_slice(key);
            match value {
                Some(v) => self.set(i, v),
                None => self.slots[i] = Slot::Unknown,
            }
            self.dirty[i] = false;
            self.len += 1;
        }
    }

    fn find(&self, key: &[u8]) -> Option<usize> {
        if self.len == 0 {
            return None;
        }
        self.keys[..self.len]
            .binary_search_by(|k| k.as_slice().cmp(key))
            .ok()
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

    /// Keeps a put (`Some`) or delete (`None`) of `key` here, to be written to RocksDB
    /// later, when `key` is cached; returns whether it was (if not, the caller writes
    /// it to RocksDB itself).
    pub(crate) fn absorb(&mut self, key: &[u8], value: Option<&[u8]>) -> bool {
        let Some(i) = self.find(key) else {
            return false;
        };
        self.set(i, value);
        self.dirty[i] = true;
        self.any_dirty = true;
        true
    }

    /// Whether `key` is cached with a write not yet in RocksDB.
    pub(crate) fn is_dirty(&self, key: &[u8]) -> bool {
        self.find(key).is_some_and(|i| self.dirty[i])
    }

    /// Whether any entry has a write not yet in RocksDB.
    pub(crate) fn any_dirty(&self) -> bool {
        self.any_dirty
    }

    /// The writes not yet in RocksDB, in key order: puts (`Some`) and deletes (`None`).
    pub(crate) fn dirty_entries(&self) -> impl Iterator<Item = (&[u8], Option<&[u8]>)> {
        (0..self.len).filter(|&i| self.dirty[i]).map(|i| {
            let value = match self.slots[i] {
                Slot::Present => Some(self.values[i].as_slice()),
                Slot::Absent | Slot::Unknown => None,
            };
            (self.keys[i].as_slice(), value)
        })
    }

    /// Records that [`Prefetched::dirty_entries`] are now in RocksDB.
    pub(crate) fn written(&mut self) {
        self.dirty[..self.len].fill(false);
        self.any_dirty = false;
    }

    /// Records that `key` changed in a way only RocksDB can resolve (a merge); it must
    /// not be dirty (the caller writes it first).
    pub(crate) fn forget(&mut self, key: &[u8]) {
        if let Some(i) = self.find(key) {
            debug_assert!(
                !self.dirty[i],
                "a dirty entry is written before it is merged into"
            );
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
        assert!(p.absorb(b"c", Some(b"7")));
        assert_eq!(p.get(b"c"), Some(Some(&b"7"[..])), "written here: known");
    }

    #[test]
    fn writes_to_cached_keys_wait_dirty_and_merges_forget() {
        let mut p = filled(&[(b"a", Some(b"1")), (b"b", None), (b"c", Some(b"3"))]);
        assert!(!p.any_dirty());
        assert!(p.absorb(b"b", Some(b"9")));
        assert!(p.absorb(b"a", None));
        assert!(!p.absorb(b"z", Some(b"not cached")), "the caller writes it");
        assert_eq!(p.get(b"a"), Some(None));
        assert_eq!(p.get(b"b"), Some(Some(&b"9"[..])));
        assert_eq!(p.get(b"z"), None);
        assert!(p.any_dirty() && p.is_dirty(b"a") && !p.is_dirty(b"c"));
        let dirty: Vec<_> = p.dirty_entries().collect();
        assert_eq!(dirty, vec![(&b"a"[..], None), (&b"b"[..], Some(&b"9"[..]))]);
        p.written();
        assert!(!p.any_dirty() && !p.is_dirty(b"a"));
        assert_eq!(p.dirty_entries().count(), 0);
        p.forget(b"b");
        assert_eq!(p.get(b"b"), None, "merged: only RocksDB knows");
        assert!(p.absorb(b"b", Some(b"5")));
        assert_eq!(
            p.get(b"b"),
            Some(Some(&b"5"[..])),
            "a put makes it known again"
        );
        p.written();
        p.clear();
        assert_eq!(p.get(b"b"), None);
    }

    #[test]
    fn reads_ahead_while_half_the_keys_are_read() {
        assert!(read_ahead(0, 0), "nothing known yet");
        assert!(read_ahead(32, 16));
        assert!(!read_ahead(32, 15));
        assert!(read_ahead(3, 5), "a key read several times");
    }
}
