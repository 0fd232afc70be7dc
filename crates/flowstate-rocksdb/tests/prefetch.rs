//! `prefetch` against a model: the RocksDB backend reads the prefetched keys' values
//! with one `MultiGet`, answers gets from them and keeps their writes until the next
//! prefetch, so every read, whenever it comes (right after the prefetch, after writes
//! of the same key, after a clear, for a key not prefetched or not owned here), must
//! still be what the model holds; listing keys and counting entries must see every
//! write; and a snapshot taken at any point restores to the model at that point.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed expectation is a failure

use std::collections::BTreeMap;
use std::rc::Rc;

use flowstate_conformance::{config, next_checkpoint_id, temp_storage};
use flowstate_core::backend::KeyedStateBackend;
use flowstate_core::descriptor::{ReducingStateDescriptor, ValueStateDescriptor};
use flowstate_core::keygroup::KeyGroupRange;
use flowstate_core::snapshot::AsyncKeyedSnapshot;
use flowstate_core::state::{ReducingState, ValueState, VoidNamespace};
use flowstate_rocksdb::{RocksDbKeyedStateBackend, RocksDbOptions, RocksDbSnapshot};

/// The keys of `model` with a value in the value state, in order.
fn valued(model: &Model) -> Vec<u64> {
    model
        .iter()
        .filter(|(_, e)| e.0.is_some())
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
            1 => Just(Op::Snapshot),
            1 => Just(Op::Keys),
        ],
        1..120,
    )
}

/// Per key: the value state and the sum.
type Model = BTreeMap<u64, (Option<i64>, Option<i64>)>;

type States = (Rc<dyn ValueState<i64>>, Rc<dyn ReducingState<i64>>);

fn states(b: &RocksDbKeyedStateBackend<u64>) -> States {
    let v = b
        .value_state::<VoidNamespace, i64>(&ValueStateDescriptor::new("v"))
        .unwrap();
    let r = b
        .reducing_state::<VoidNamespace, i64>(&ReducingStateDescriptor::new(
            "sum",
            |a: &i64, b: &i64| a + b,
        ))
        .unwrap();
    (v, r)
}

/// Every owned key's states in `b`, as the model holds them.
fn read_all(b: &RocksDbKeyedStateBackend<u64>, owned: &[u64]) -> Model {
    let (v, r) = states(b);
    let mut out = Model::new();
    for &k in owned {
        b.set_current_key(k).unwrap();
        let got = (v.value().unwrap(), r.get().unwrap());
        if got != (None, None) {
            out.insert(k, got);
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn reads_after_prefetch_are_what_rocksdb_holds(ops in ops()) {
        let dir = tempfile::tempdir().unwrap();
        let range = KeyGroupRange::new(0, MAX_P / 2 - 1).unwrap();
        let opts = RocksDbOptions::new(dir.path());
        let b = RocksDbKeyedStateBackend::<u64>::new(config(MAX_P, range), opts.clone()).unwrap();
        let owned: Vec<u64> = (0..200u64)
            .filter(|k| range.contains(b.key_group_of(k).unwrap()))
            .take(8)
            .collect();
        let (v, r) = states(&b);
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
                        now.retain(|_, e| *e != (None, None));
                        prop_assert_eq!(read_all(&b, &owned), now);
                        b.set_current_key(key).unwrap();
                    }
                }
                Op::Read => {
                    let e = model.entry(key).or_default();
                    prop_assert_eq!(v.value().unwrap(), e.0, "value of {}", key);
                    prop_assert_eq!(r.get().unwrap(), e.1, "sum of {}", key);
                }
                Op::Update(x) => {
                    let e = model.entry(key).or_default();
                    v.update(x).unwrap();
                    e.0 = Some(x);
                }
                Op::ClearValue => {
                    let e = model.entry(key).or_default();
                    v.clear().unwrap();
                    e.0 = None;
                }
                Op::Add(x) => {
                    let e = model.entry(key).or_default();
                    r.add(x).unwrap();
                    e.1 = Some(e.1.unwrap_or(0) + x);
                }
                Op::ClearSum => {
                    let e = model.entry(key).or_default();
                    r.clear().unwrap();
                    e.1 = None;
                }
                Op::Keys => {
                    let mut keys = b.keys("v", &VoidNamespace).unwrap();
                    keys.sort_unstable();
                    prop_assert_eq!(&keys, &valued(&model));
                    prop_assert_eq!(b.raw_entry_count("v").unwrap(), keys.len() as u64);
                }
                Op::Snapshot => {
                    let s = b.snapshot(next_checkpoint_id()).unwrap();
                    let mut at = model.clone();
                    at.retain(|_, e| *e != (None, None));
                    snapshots.push((s, at));
                }
            }
        }
        model.retain(|_, e| *e != (None, None));
        prop_assert_eq!(read_all(&b, &owned), model);
        let (_s, storage) = temp_storage();
        for (i, (s, at)) in snapshots.into_iter().enumerate() {
            let handle = s.write(&storage, &format!("s{i}")).unwrap();
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
