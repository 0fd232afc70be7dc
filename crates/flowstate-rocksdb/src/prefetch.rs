//! Batched reads ahead of the keyed operator: what the RocksDB backend does with
//! [`flowstate_core::backend::KeyedStateBackend::prefetch`].
//!
//! The keyed operator hands the backend the keys of its next few records before it runs
//! them. For each state stored as one value per key (value, reducing and aggregating
//! state) without namespaces, the backend reads those keys' entries with one sorted
//! `MultiGet` (RocksDB then probes the memtable, bloom filters and blocks for the whole
//! batch at once, which costs less than a get per record) and keeps the bytes in a
//! [`Prefetched`] read cache until the next prefetch. A get of a cached entry key is
//! answered from it; every put, delete or merge of the state goes to RocksDB as before
//! and also updates (or forgets) its cached entry, so the cache never answers with
//! anything but what RocksDB would.
//!
//! A state whose records do not read it would pay for reads it never uses, so each
//! state keeps a [`Pacing`]: when fewer than half of a batch's cached entries were read
//! before the next prefetch, the state is not prefetched for the next
//! [`Pacing::BACK_OFF`] batches, then tried again.

/// A cached entry: what RocksDB held for the entry key at the prefetch, kept up to date
/// by the state's own writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Slot {
    /// No value stored.
    Absent,
    /// The value is `values[i]`.
    Present,
    /// Merged into since the prefetch: only RocksDB knows the value.
    Unknown,
}

/// The read cache of one state: sorted unique entry keys with their values. Buffers are
/// kept between batches, so a steady run allocates nothing.
#[derive(Debug, Default)]
pub(crate) struct Prefetched {
    keys: Vec<Vec<u8>>,
    values: Vec<Vec<u8>>,
    slots: Vec<Slot>,
    /// Entries of the current batch (`keys[..len]`).
    len: usize,
    /// Gets answered from the cache since the batch was filled.
    hits: usize,
}

impl Prefetched {
    /// Forgets every entry.
    pub(crate) fn clear(&mut self) {
        self.len = 0;
        self.hits = 0;
    }

    /// Entries of the current batch.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Gets answered from the cache since [`Prefetched::fill`].
    pub(crate) fn hits(&self) -> usize {
        self.hits
    }

    /// Replaces the entries with `entries`: entry keys in strictly increasing order, each
    /// with the value RocksDB holds for it.
    pub(crate) fn fill<'a>(
        &mut self,
        entries: impl IntoIterator<Item = (&'a [u8], Option<&'a [u8]>)>,
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
            self.set(i, value);
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

    /// The cached value of `key`: `None` when the cache cannot answer (not prefetched,
    /// or merged into since), `Some(None)` when RocksDB holds no value for it.
    pub(crate) fn get(&mut self, key: &[u8]) -> Option<Option<&[u8]>> {
        let i = self.find(key)?;
        let answer = match self.slots[i] {
            Slot::Unknown => return None,
            Slot::Absent => None,
            Slot::Present => Some(self.values[i].as_slice()),
        };
        self.hits += 1;
        Some(answer)
    }

    /// Records that `value` was written for `key` (`None`: deleted).
    pub(crate) fn wrote(&mut self, key: &[u8], value: Option<&[u8]>) {
        if let Some(i) = self.find(key) {
            self.set(i, value);
        }
    }

    /// Records that `key` changed in a way only RocksDB can resolve (a merge, or a
    /// write that failed half-way).
    pub(crate) fn forget(&mut self, key: &[u8]) {
        if let Some(i) = self.find(key) {
            self.slots[i] = Slot::Unknown;
        }
    }
}

/// Whether a state is worth prefetching: a pure decision over how its last batch was
/// used.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Pacing {
    /// Prefetches still to skip.
    skip: u32,
}

impl Pacing {
    /// Batches a state sits out after one whose cached entries were mostly not read.
    pub(crate) const BACK_OFF: u32 = 64;

    /// Called at each prefetch with the last batch's use (`filled` entries cached, `hits`
    /// gets answered from them); returns whether to prefetch this batch.
    pub(crate) fn next(&mut self, filled: usize, hits: usize) -> bool {
        if self.skip > 0 {
            self.skip -= 1;
            return false;
        }
        if filled > 0 && hits * 2 < filled {
            self.skip = Self::BACK_OFF;
            return false;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filled(entries: &[(&[u8], Option<&[u8]>)]) -> Prefetched {
        let mut p = Prefetched::default();
        p.fill(entries.iter().copied());
        p
    }

    #[test]
    fn answers_what_was_filled_and_nothing_else() {
        let mut p = filled(&[(b"a", Some(b"1")), (b"b", None), (b"c", Some(b""))]);
        assert_eq!(p.get(b"a"), Some(Some(&b"1"[..])));
        assert_eq!(p.get(b"b"), Some(None));
        assert_eq!(p.get(b"c"), Some(Some(&b""[..])));
        assert_eq!(p.get(b"bb"), None);
        assert_eq!(p.hits(), 3);
        p.fill([(&b"b"[..], Some(&b"2"[..]))]);
        assert_eq!((p.len(), p.hits()), (1, 0));
        assert_eq!(p.get(b"a"), None, "a refill forgets the last batch");
        assert_eq!(p.get(b"b"), Some(Some(&b"2"[..])));
    }

    #[test]
    fn writes_update_and_merges_forget() {
        let mut p = filled(&[(b"a", Some(b"1")), (b"b", None)]);
        p.wrote(b"b", Some(b"9"));
        p.wrote(b"a", None);
        p.wrote(b"z", Some(b"ignored"));
        assert_eq!(p.get(b"a"), Some(None));
        assert_eq!(p.get(b"b"), Some(Some(&b"9"[..])));
        assert_eq!(p.get(b"z"), None);
        p.forget(b"b");
        assert_eq!(p.get(b"b"), None, "merged: only RocksDB knows");
        p.wrote(b"b", Some(b"3"));
        assert_eq!(
            p.get(b"b"),
            Some(Some(&b"3"[..])),
            "a put makes it known again"
        );
        p.clear();
        assert_eq!(p.get(b"b"), None);
    }

    #[test]
    fn pacing_backs_off_a_state_its_records_do_not_read() {
        let mut pace = Pacing::default();
        assert!(pace.next(0, 0), "nothing known yet: prefetch");
        assert!(pace.next(32, 16), "half read: keep prefetching");
        assert!(!pace.next(32, 15), "under half read: back off");
        for _ in 1..Pacing::BACK_OFF {
            assert!(!pace.next(0, 0));
        }
        assert!(!pace.next(0, 0));
        assert!(pace.next(0, 0), "tried again after the back-off");
        assert!(pace.next(32, 32));
    }
}
