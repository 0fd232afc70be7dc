//! Batched reads and deferred writes against a model: the RocksDB backend reads the
//! prefetched keys' values with one `MultiGet` and answers gets from them, and every
//! state keeps its puts and deletes in memory until they reach a budget (here none,
//! a few entries, or the default) and writes them as one sorted batch. So every read,
//! whenever it comes (right after the prefetch, after writes of the same key, after a
//! clear, for a key not prefetched or not owned here, a map's range reads, a list's
//! append after an update), must still be what the model holds; listing keys and
//! counting entries must see every write; and a snapshot taken at any point restores to
//! the model at that point.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed expectation is a failure

use std::collections::BTreeMap;
use std::rc::Rc;

use flowstate_conformance::{config, next_checkpoint_id, temp_storage};
use flowstate_core::backend::KeyedStateBackend;
use flowstate_core::descriptor::{
    ListStateDescriptor, MapStateDescriptor, ReducingStateDescriptor, ValueStateDescriptor,
};
use flowstate_core::keygroup::KeyGroupRange;
use flowstate_core::snapshot::AsyncKeyedSnapshot;
use flowstate_core::state::{ListState, MapState, ReducingState, ValueState, VoidNamespace};
use flowstate_rocksdb::{RocksDbKeyedStateBackend, RocksDbOptions, RocksDbSnapshot};

/// The keys of `model` with a value in the value state, in order.
fn valued(model: &Model) -> Vec<u64> {
    model
        .iter()
        .filter(|(_, e)| e.value.is_some())
        .map(|(k, _)| *k)
        .collect()
}
use proptest::collection::vec;
use proptest::prelude::*;

const MAX_P: u32 = 16;

#[derive(Clone, Debug)]
enum Op {
    /// Makes an owned key current (an index into them).
    Key(usize),
    /// Prefetches owned keys (indexes) and, from 1,000 on, keys that may not be owned;
    /// then, if `true`, reads every owned key (so the batch counts as used and the
    /// backend keeps prefetching; otherwise it may back off).
    Prefetch(Vec<u64>, bool),
    /// Reads both states of the current key and checks them against the model.
    Read,
    Update(i64),
    ClearValue,
    Add(i64),
    ClearSum,
    /// Replaces the list (a put).
    ListUpdate(Vec<i64>),
    /// Appends to the list (a merge).
    ListAdd(i64),
    MapPut(u8, i64),
    MapRemove(u8),
    /// Reads the map's entries by key and by range.
    MapRead,
    /// Takes a snapshot, written only at the end.
    Snapshot,
    /// Lists the keys with a value and counts the value state's entries in RocksDB.
    Keys,
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    vec(
        prop_oneof![
            3 => (0..8usize).prop_map(Op::Key),
            3 => (
                vec(prop_oneof![4 => 0..8u64, 1 => 1_000..1_040u64], 0..40),
                prop::bool::weighted(0.8)
            )
                .prop_map(|(keys, read)| Op::Prefetch(keys, read)),
            4 => Just(Op::Read),
            3 => (-1_000..1_000i64).prop_map(Op::Update),
            1 => Just(Op::ClearValue),
            3 => (-1_000..1_000i64).prop_map(Op::Add),
            1 => Just(Op::ClearSum),
            1 => vec(-9..9i64, 0..3).prop_map(Op::ListUpdate),
            2 => (-9..9i64).prop_map(Op::ListAdd),
            3 => (0..4u8, -9..9i64).prop_map(|(k, v)| Op::MapPut(k, v)),
            1 => (0..4u8).prop_map(Op::MapRemove),
            2 => Just(Op::MapRead),
            1 => Just(Op::Snapshot),
            1 => Just(Op::Keys),
        ],
        1..120,
    )
}

/// What one key holds in each state.
#[derive(Clone, Debug, Default, PartialEq)]
struct Entry {
    value: Option<i64>,
    sum: Option<i64>,
    list: Vec<i64>,
    map: BTreeMap<u8, i64>,
}

impl Entry {
    fn is_empty(&self) -> bool {
        *self == Entry::default()
    }
}

type Model = BTreeMap<u64, Entry>;

struct States {
    v: Rc<dyn ValueState<i64>>,
    r: Rc<dyn ReducingState<i64>>,
    l: Rc<dyn ListState<i64>>,
    m: Rc<dyn MapState<u8, i64>>,
}

/// What the current key holds in `s`, read through the states' gets and a map scan.
fn read_entry(s: &States) -> Entry {
    let map: BTreeMap<u8, i64> = s.m.entries().unwrap().into_iter().collect();
    for k in 0..4u8 {
        assert_eq!(s.m.get(&k).unwrap(), map.get(&k).copied(), "map get of {k}");
        assert_eq!(s.m.contains(&k).unwrap(), map.contains_key(&k));
    }
    assert_eq!(s.m.is_empty().unwrap(), map.is_empty());
    Entry {
        value: s.v.value().unwrap(),
        sum: s.r.get().unwrap(),
        list: s.l.get().unwrap(),
        map,
    }
}

fn states(b: &RocksDbKeyedStateBackend<u64>) -> States {
    States {
        v: b.value_state::<VoidNamespace, i64>(&ValueStateDescriptor::new("v"))
            .unwrap(),
        r: b.reducing_state::<VoidNamespace, i64>(&ReducingStateDescriptor::new(
            "sum",
            |a: &i64, b: &i64| a + b,
        ))
        .unwrap(),
        l: b.list_state::<VoidNamespace, i64>(&ListStateDescriptor::new("l"))
            .unwrap(),
        m: b.map_state::<VoidNamespace, u8, i64>(&MapStateDescriptor::new("m"))
            .unwrap(),
    }
}

/// Every owned key's states in `b`, as the model holds them.
fn read_all(b: &RocksDbKeyedStateBackend<u64>, owned: &[u64]) -> Model {
    let s = states(b);
    let mut out = Model::new();
    for &k in owned {
        b.set_current_key(k).unwrap();
        let got = read_entry(&s);
        if !got.is_empty() {
            out.insert(k, got);
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn reads_are_what_was_written(
        ops in ops(),
        budget in prop_oneof![Just(0usize), Just(300), Just(4 << 20)],
    ) {
        let dir = tempfile::tempdir().unwrap();
        let range = KeyGroupRange::new(0, MAX_P / 2 - 1).unwrap();
        let opts = RocksDbOptions::new(dir.path()).with_deferred_write_bytes(budget);
        let b = RocksDbKeyedStateBackend::<u64>::new(config(MAX_P, range), opts.clone()).unwrap();
        let owned: Vec<u64> = (0..200u64)
            .filter(|k| range.contains(b.key_group_of(k).unwrap()))
            .take(8)
            .collect();
        let s = states(&b);
        let mut model = Model::new();
        b.set_current_key(owned[0]).unwrap();
        let mut key = owned[0];
        let mut snapshots: Vec<(RocksDbSnapshot, Model)> = Vec::new();
        for op in ops {
            match op {
                Op::Key(i) => {
                    key = owned[i % owned.len()];
                    b.set_current_key(key).unwrap();
                }
                Op::Prefetch(picks, read) => {
                    let keys: Vec<u64> = picks
                        .iter()
                        .map(|&p| if p < 1_000 { owned[p as usize % owned.len()] } else { p })
                        .collect();
                    let with_groups: Vec<(u32, u64)> =
                        keys.iter().map(|k| (b.key_group_of(k).unwrap(), *k)).collect();
                    let refs: Vec<(u32, &u64)> =
                        with_groups.iter().map(|(kg, k)| (*kg, k)).collect();
                    b.prefetch(&refs);
                    prop_assert_eq!(b.current_key(), Some(key), "the current key stays");
                    if read {
                        let mut now = model.clone();
                        now.retain(|_, e| !e.is_empty());
                        prop_assert_eq!(read_all(&b, &owned), now);
                        b.set_current_key(key).unwrap();
                    }
                }
                Op::Read => {
                    let e = model.entry(key).or_default();
                    prop_assert_eq!(s.v.value().unwrap(), e.value, "value of {}", key);
                    prop_assert_eq!(s.r.get().unwrap(), e.sum, "sum of {}", key);
                }
                Op::Update(x) => {
                    s.v.update(x).unwrap();
                    model.entry(key).or_default().value = Some(x);
                }
                Op::ClearValue => {
                    s.v.clear().unwrap();
                    model.entry(key).or_default().value = None;
                }
                Op::Add(x) => {
                    let e = model.entry(key).or_default();
                    s.r.add(x).unwrap();
                    e.sum = Some(e.sum.unwrap_or(0) + x);
                }
                Op::ClearSum => {
                    s.r.clear().unwrap();
                    model.entry(key).or_default().sum = None;
                }
                Op::ListUpdate(items) => {
                    s.l.update(items.clone()).unwrap();
                    model.entry(key).or_default().list = items;
                }
                Op::ListAdd(x) => {
                    s.l.add(x).unwrap();
                    model.entry(key).or_default().list.push(x);
                }
                Op::MapPut(k, x) => {
                    s.m.put(k, x).unwrap();
                    model.entry(key).or_default().map.insert(k, x);
                }
                Op::MapRemove(k) => {
                    s.m.remove(&k).unwrap();
                    model.entry(key).or_default().map.remove(&k);
                }
                Op::MapRead => {
                    let e = model.entry(key).or_default().clone();
                    prop_assert_eq!(read_entry(&s), e, "states of {}", key);
                }
                Op::Keys => {
                    let mut keys = b.keys("v", &VoidNamespace).unwrap();
                    keys.sort_unstable();
                    prop_assert_eq!(&keys, &valued(&model));
                    prop_assert_eq!(b.raw_entry_count("v").unwrap(), keys.len() as u64);
                    let pairs: usize = model.values().map(|e| e.map.len()).sum();
                    prop_assert_eq!(b.raw_entry_count("m").unwrap(), pairs as u64);
                }
                Op::Snapshot => {
                    let snap = b.snapshot(next_checkpoint_id()).unwrap();
                    let mut at = model.clone();
                    at.retain(|_, e| !e.is_empty());
                    snapshots.push((snap, at));
                }
            }
        }
        model.retain(|_, e| !e.is_empty());
        prop_assert_eq!(read_all(&b, &owned), model);
        let (_s, storage) = temp_storage();
        for (i, (snap, at)) in snapshots.into_iter().enumerate() {
            let handle = snap.write(&storage, &format!("s{i}")).unwrap();
            let restored = RocksDbKeyedStateBackend::<u64>::restore(
                config(MAX_P, range),
                opts.clone(),
                &storage,
                &[handle],
            )
            .unwrap();
            prop_assert_eq!(read_all(&restored, &owned), at);
        }
    }
}
