//! Puts, deletes and appends a state holds in memory, to hand RocksDB as one sorted
//! `WriteBatch`.
//!
//! A put into RocksDB is a skip-list insert into the memtable: a search from the top of
//! a list of some 100,000 entries, most of whose nodes are cache misses. That search was
//! the largest single cost of a RocksDB job (about 30% of the `value` job). Inserted in
//! key order and many at once, consecutive searches walk the same nodes, which are then
//! in cache: a sorted batch of 65,536 random puts went in 2.5 times as fast as puts one
//! at a time, and 1.8 times as fast as sorted batches of 32 (the keyed operator's
//! prefetch batch), measured on this machine on 2026-11-29.
//!
//! So every state keeps its puts and deletes here, newest per entry key, until they
//! reach a byte budget (`RocksDbOptions::deferred_write_bytes`), and then writes them in
//! one batch in key order. A list's appends (RocksDB merges, each a write call of its
//! own when written through) wait here too, combined with what the entry already holds
//! ([`Deferred::append`]). A get consults this first, so a state always reads its own
//! writes; a get of an entry that holds only appends writes them first. Whatever reads
//! RocksDB other than through a state's get (checkpoints and savepoints, listing keys,
//! compaction, a map's range scans) writes them first. A write that fails keeps them,
//! to be tried again; a checkpoint then fails with it, so nothing is acknowledged that
//! was not written.
//! Without a WAL, as in Flink, writes are durable only through a checkpoint anyway.
//! Flink writes each put through.

use std::hash::BuildHasher;

use hashbrown::{DefaultHashBuilder, HashTable};
use smallvec::SmallVec;

/// Bytes counted for an entry beyond its key and value: its slot in the map, so that the
/// budget bounds memory, not only payload.
pub(crate) const ENTRY_OVERHEAD: usize = 64;

/// An entry key, inline up to 24 bytes (a `u64` key with a `u64` map user key fits):
/// no allocation, and no second cache miss to compare it.
type Key = SmallVec<[u8; 24]>;

/// A value, inline up to 16 bytes.
type Value = SmallVec<[u8; 16]>;

/// The newest deferred write of one entry key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Write {
    /// Set the value.
    Put(Value),
    /// Remove the value.
    Delete,
    /// Append to the value RocksDB holds: list-append operands, concatenated.
    Append(Value),
}

/// A deferred write as [`Sorted`] lends it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Op<'a> {
    /// Set the value.
    Put(&'a [u8]),
    /// Remove the value.
    Delete,
    /// Append these operands to the value.
    Append(&'a [u8]),
}

/// Which [`Op`] a [`Slot`] holds.
#[derive(Clone, Copy, Debug)]
enum Kind {
    Put,
    Delete,
    Append,
}

/// Where one write lies in [`Sorted`]'s buffer: its key at `at..key_end`, its value
/// at `key_end..end`.
#[derive(Clone, Copy, Debug)]
struct Slot {
    /// The key's [`order_prefix`].
    prefix: u64,
    at: usize,
    key_end: usize,
    end: usize,
    kind: Kind,
}

/// The deferred writes in key order ([`Deferred::sorted`]).
#[derive(Debug)]
pub(crate) struct Sorted {
    bytes: Vec<u8>,
    slots: Vec<Slot>,
}

impl Sorted {
    /// Each write's key and operation, in key order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&[u8], Op<'_>)> {
        self.slots.iter().map(|s| {
            let value = &self.bytes[s.key_end..s.end];
            let op = match s.kind {
                Kind::Put => Op::Put(value),
                Kind::Delete => Op::Delete,
                Kind::Append => Op::Append(value),
            };
            (&self.bytes[s.at..s.key_end], op)
        })
    }
}

/// What a state's deferred writes know of an entry key's value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Held<'a> {
    /// Its value (`None`: deleted).
    Known(Option<&'a [u8]>),
    /// Only appends, to a value only RocksDB holds: write them first, then read.
    Appended,
}

/// The deferred writes of one state: the newest put, delete or appends of each entry
/// key not yet in RocksDB.
#[derive(Debug, Default)]
pub(crate) struct Deferred {
    /// Each entry key with its newest write; a table rather than a map so that
    /// [`Deferred::touch`] can prefetch the bucket a key's write will take.
    entries: HashTable<(Key, Write)>,
    hasher: DefaultHashBuilder,
    /// Keys, values and [`ENTRY_OVERHEAD`] of the entries.
    bytes: usize,
}

fn size(key: &[u8], write: &Write) -> usize {
    let value = match write {
        Write::Put(v) | Write::Append(v) => v.len(),
        Write::Delete => 0,
    };
    key.len() + value + ENTRY_OVERHEAD
}

/// A key's first eight bytes as a big-endian number, zero-padded: two keys whose
/// numbers differ compare as the numbers do (a key that ends sooner pads with zeros,
/// below any byte the other can differ by); equal numbers leave the order to the rest.
fn order_prefix(key: &[u8]) -> u64 {
    let mut bytes = [0u8; 8];
    let n = key.len().min(8);
    bytes[..n].copy_from_slice(&key[..n]);
    u64::from_be_bytes(bytes)
}

impl Deferred {
    fn hash(&self, key: &[u8]) -> u64 {
        self.hasher.hash_one(key)
    }

    /// The newest write of `key`, to change (a function of the table alone, so that
    /// the caller can count bytes meanwhile).
    fn find_mut<'a>(
        entries: &'a mut HashTable<(Key, Write)>,
        hash: u64,
        key: &[u8],
    ) -> Option<&'a mut Write> {
        entries
            .find_mut(hash, |(k, _)| k.as_slice() == key)
            .map(|(_, w)| w)
    }

    /// Keeps `write` as the first write of `key` (which holds none).
    fn add(&mut self, key: &[u8], write: Write) {
        let hasher = &self.hasher;
        self.entries.insert_unique(
            hasher.hash_one(key),
            (Key::from_slice(key), write),
            |(k, _)| hasher.hash_one(k.as_slice()),
        );
    }

    /// Prefetches the bucket `key`'s write occupies, or the free one a write of it
    /// would take, without waiting for it: a write that misses the cache stalls the
    /// writes behind it (see `flowstate_prefetch::prefetch_bucket`). The backend's
    /// prefetch calls it for the keys of the records about to run.
    pub(crate) fn touch(&self, key: &[u8]) {
        flowstate_prefetch::prefetch_bucket(&self.entries, self.hash(key));
    }

    /// What the deferred writes hold for `key`: `None` when nothing (RocksDB answers).
    pub(crate) fn get(&self, key: &[u8]) -> Option<Held<'_>> {
        let found = self
            .entries
            .find(self.hash(key), |(k, _)| k.as_slice() == key);
        found.map(|(_, w)| match w {
            Write::Put(v) => Held::Known(Some(v.as_slice())),
            Write::Delete => Held::Known(None),
            Write::Append(_) => Held::Appended,
        })
    }

    /// Keeps a put (`Some`) or delete (`None`) of `key`, replacing an earlier write.
    pub(crate) fn insert(&mut self, key: &[u8], value: Option<&[u8]>) {
        match Self::find_mut(&mut self.entries, self.hasher.hash_one(key), key) {
            Some(old) => {
                self.bytes -= size(key, old);
                match (&mut *old, value) {
                    // Reuses the value's buffer: a steady run of updates allocates nothing.
                    (Write::Put(buf), Some(v)) => {
                        buf.clear();
                        buf.extend_from_slice(v);
                    }
                    (_, Some(v)) => *old = Write::Put(Value::from_slice(v)),
                    (_, None) => *old = Write::Delete,
                }
                self.bytes += size(key, old);
            }
            None => {
                let write = value.map_or(Write::Delete, |v| Write::Put(Value::from_slice(v)));
                self.bytes += size(key, &write);
                self.add(key, write);
            }
        }
    }

    /// Keeps an append of `operand` to `key`'s value. The backend's one merge operator
    /// appends (`list_append` in `db.rs`), so an append after a put is a put of the
    /// two concatenated, after a delete a put of the operand, and appends one after
    /// another are one append of their concatenation.
    pub(crate) fn append(&mut self, key: &[u8], operand: &[u8]) {
        match Self::find_mut(&mut self.entries, self.hasher.hash_one(key), key) {
            Some(Write::Put(v) | Write::Append(v)) => v.extend_from_slice(operand),
            Some(old @ Write::Delete) => *old = Write::Put(Value::from_slice(operand)),
            None => {
                self.add(key, Write::Append(Value::from_slice(operand)));
                self.bytes += key.len() + ENTRY_OVERHEAD;
            }
        }
        self.bytes += operand.len();
    }

    /// Bytes held, as counted against the budget.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Whether nothing is deferred.
    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The writes in key order, copied out of the map.
    ///
    /// Each key's first eight bytes are held beside it and the whole keys compared
    /// only where those are equal: comparing the keys themselves read each from its
    /// slot in the map, a cache miss per comparison, and a `memcmp` call (sorting was
    /// 6% of a two-worker RocksDB `map` job). Keys and values are copied, in the map's
    /// own order (one pass through its memory), into one buffer a tenth of the map's
    /// size: read back in key order, they are found in cache, where the map's slots,
    /// read in key order, missed (9% of the same job).
    pub(crate) fn sorted(&self) -> Sorted {
        // The budget's count less the slots' overhead: the keys' and values' bytes.
        let payload = self
            .bytes
            .saturating_sub(self.entries.len() * ENTRY_OVERHEAD);
        let mut bytes = Vec::with_capacity(payload);
        let mut slots: Vec<Slot> = Vec::with_capacity(self.entries.len());
        for (key, write) in &self.entries {
            let (kind, value) = match write {
                Write::Put(v) => (Kind::Put, v.as_slice()),
                Write::Delete => (Kind::Delete, &[][..]),
                Write::Append(v) => (Kind::Append, v.as_slice()),
            };
            let at = bytes.len();
            bytes.extend_from_slice(key);
            bytes.extend_from_slice(value);
            slots.push(Slot {
                prefix: order_prefix(key),
                at,
                key_end: at + key.len(),
                end: bytes.len(),
                kind,
            });
        }
        slots.sort_unstable_by(|a, b| {
            a.prefix
                .cmp(&b.prefix)
                .then_with(|| bytes[a.at..a.key_end].cmp(&bytes[b.at..b.key_end]))
        });
        Sorted { bytes, slots }
    }

    /// Forgets every write: they are in RocksDB now.
    pub(crate) fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_write_per_key_and_counts_its_bytes() {
        let mut d = Deferred::default();
        assert!(d.is_empty() && d.bytes() == 0);
        d.insert(b"b", Some(b"1"));
        d.insert(b"a", None);
        d.insert(b"b", Some(b"22"));
        assert_eq!(d.get(b"b"), Some(Held::Known(Some(&b"22"[..]))));
        assert_eq!(d.get(b"a"), Some(Held::Known(None)), "a delete is a write");
        assert_eq!(d.get(b"c"), None);
        assert_eq!(d.bytes(), (1 + 2 + ENTRY_OVERHEAD) + (1 + ENTRY_OVERHEAD));
        d.insert(b"b", None);
        d.insert(b"a", Some(b"x"));
        assert_eq!(d.bytes(), (1 + ENTRY_OVERHEAD) + (1 + 1 + ENTRY_OVERHEAD));
        assert_eq!(
            d.sorted().iter().collect::<Vec<_>>(),
            vec![(&b"a"[..], Op::Put(b"x")), (&b"b"[..], Op::Delete)],
            "in key order"
        );
        d.clear();
        assert!(d.is_empty() && d.bytes() == 0 && d.get(b"a").is_none());
    }

    #[test]
    fn appends_combine_with_what_the_entry_holds() {
        let mut d = Deferred::default();
        d.append(b"l", b"12");
        d.append(b"l", b"3");
        assert_eq!(d.get(b"l"), Some(Held::Appended), "the base is in RocksDB");
        assert_eq!(d.bytes(), 1 + 3 + ENTRY_OVERHEAD);
        d.insert(b"p", Some(b"ab"));
        d.append(b"p", b"c");
        assert_eq!(d.get(b"p"), Some(Held::Known(Some(&b"abc"[..]))));
        d.insert(b"x", None);
        d.append(b"x", b"z");
        assert_eq!(
            d.get(b"x"),
            Some(Held::Known(Some(&b"z"[..]))),
            "after a delete"
        );
        d.insert(b"l", Some(b"9"));
        assert_eq!(
            d.get(b"l"),
            Some(Held::Known(Some(&b"9"[..]))),
            "a put replaces"
        );
        assert_eq!(
            d.bytes(),
            (1 + 1 + ENTRY_OVERHEAD) + (1 + 3 + ENTRY_OVERHEAD) + (1 + 1 + ENTRY_OVERHEAD)
        );
        d.append(b"m", b"1");
        assert_eq!(
            d.sorted().iter().collect::<Vec<_>>(),
            vec![
                (&b"l"[..], Op::Put(b"9")),
                (&b"m"[..], Op::Append(b"1")),
                (&b"p"[..], Op::Put(b"abc")),
                (&b"x"[..], Op::Put(b"z")),
            ]
        );
    }
}

#[cfg(test)]
mod order_tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The writes come in the order of their keys' bytes, however the keys share
        /// their first eight bytes, end within them or hold zeros and 0xff there.
        #[test]
        fn writes_come_in_key_order(
            keys in proptest::collection::vec(
                proptest::collection::vec(prop_oneof![Just(0u8), Just(1u8), Just(0xffu8)], 0..12),
                0..64,
            )
        ) {
            let mut d = Deferred::default();
            for k in &keys {
                d.insert(k, Some(b"v"));
            }
            let mut expected: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
            expected.sort();
            expected.dedup();
            let sorted = d.sorted();
            let got: Vec<&[u8]> = sorted.iter().map(|(k, _)| k).collect();
            prop_assert_eq!(got, expected);
        }
    }
}

#[cfg(test)]
mod model_tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::test_keys::key_of;
    use proptest::prelude::*;

    /// One call on [`Deferred`].
    #[derive(Clone, Debug)]
    enum Call {
        Put(u16, Vec<u8>),
        Delete(u16),
        Append(u16, Vec<u8>),
        Touch(u16),
        Clear,
    }

    fn call() -> impl Strategy<Value = Call> {
        let key = 0u16..600;
        let bytes = proptest::collection::vec(any::<u8>(), 0..20);
        prop_oneof![
            6 => (key.clone(), bytes.clone()).prop_map(|(k, v)| Call::Put(k, v)),
            2 => key.clone().prop_map(Call::Delete),
            3 => (key.clone(), bytes).prop_map(|(k, v)| Call::Append(k, v)),
            2 => key.prop_map(Call::Touch),
            1 => Just(Call::Clear),
        ]
    }

    proptest! {
        /// Against a model (an ordered map of each key's newest write, with its
        /// appends folded in as `Deferred` documents): every key's answer after the
        /// calls, the bytes counted, and the sorted writes, through the table's growth
        /// to hundreds of keys, prefetches and clears.
        #[test]
        fn behaves_as_a_map_of_the_newest_writes(calls in proptest::collection::vec(call(), 1..1500)) {
            let mut d = Deferred::default();
            let mut model: BTreeMap<Vec<u8>, Write> = BTreeMap::new();
            for c in &calls {
                match c {
                    Call::Put(k, v) => {
                        d.insert(&key_of(*k), Some(v));
                        model.insert(key_of(*k), Write::Put(Value::from_slice(v)));
                    }
                    Call::Delete(k) => {
                        d.insert(&key_of(*k), None);
                        model.insert(key_of(*k), Write::Delete);
                    }
                    Call::Append(k, v) => {
                        d.append(&key_of(*k), v);
                        let next = match model.remove(&key_of(*k)) {
                            Some(Write::Put(mut old)) => {
                                old.extend_from_slice(v);
                                Write::Put(old)
                            }
                            Some(Write::Append(mut old)) => {
                                old.extend_from_slice(v);
                                Write::Append(old)
                            }
                            Some(Write::Delete) => Write::Put(Value::from_slice(v)),
                            None => Write::Append(Value::from_slice(v)),
                        };
                        model.insert(key_of(*k), next);
                    }
                    Call::Touch(k) => d.touch(&key_of(*k)),
                    Call::Clear => {
                        d.clear();
                        model.clear();
                    }
                }
            }
            for k in 0..600u16 {
                let expected = model.get(&key_of(k)).map(|w| match w {
                    Write::Put(v) => Held::Known(Some(v.as_slice())),
                    Write::Delete => Held::Known(None),
                    Write::Append(_) => Held::Appended,
                });
                prop_assert_eq!(d.get(&key_of(k)), expected, "key {}", k);
            }
            let bytes: usize = model.iter().map(|(k, w)| size(k, w)).sum();
            prop_assert_eq!(d.bytes(), bytes);
            prop_assert_eq!(d.is_empty(), model.is_empty());
            let sorted = d.sorted();
            let got: Vec<(&[u8], Op<'_>)> = sorted.iter().collect();
            let want: Vec<(&[u8], Op<'_>)> = model
                .iter()
                .map(|(k, w)| {
                    let op = match w {
                        Write::Put(v) => Op::Put(v.as_slice()),
                        Write::Delete => Op::Delete,
                        Write::Append(v) => Op::Append(v.as_slice()),
                    };
                    (k.as_slice(), op)
                })
                .collect();
            prop_assert_eq!(got, want);
        }
    }
}
