//! `prefetch` and copy-on-write key groups against a model (value, map and list
//! state): prefetching any keys (of key groups owned here or not, present or absent)
//! changes no state, and a snapshot taken at any point, written only later after more
//! writes, holds exactly the state at its snapshot point.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed expectation is a failure

use std::collections::BTreeMap;

use flowstate_conformance::{config, next_checkpoint_id, temp_storage};
use flowstate_core::backend::KeyedStateBackend;
use flowstate_core::descriptor::{ListStateDescriptor, MapStateDescriptor, ValueStateDescriptor};
use flowstate_core::keygroup::KeyGroupRange;
use flowstate_core::snapshot::{AsyncKeyedSnapshot, KeyedSnapshot};
use flowstate_core::state::{ListState, MapState, ValueState, VoidNamespace};
use flowstate_heap::HeapKeyedStateBackend;
use proptest::collection::vec;
use proptest::prelude::*;

const MAX_P: u32 = 16;
/// The first filler key, and how many there are.
const FILLER: u64 = 1 << 40;
const FILLED: usize = 40_000;

#[derive(Clone, Debug)]
enum Op {
    /// Makes a key of the owned key groups current (an index into them).
    Key(usize),
    /// Prefetches keys, any of `0..40` and some filler keys: some are not owned here.
    Prefetch(Vec<u64>),
    Update(i64),
    ClearValue,
    Put(u8, i32),
    Remove(u8),
    Add(i32),
    ClearList,
    /// Reads the current key's map (`get`, `contains` of a user key, `is_empty`) and
    /// list, checked against the model: reads only the entry or inside the values,
    /// which decides what the next prefetch loads.
    Read(u8),
    /// Only `is_empty` of the map (a read of the entry alone).
    IsEmpty,
    /// Takes a snapshot, written only at the end.
    Snapshot,
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    vec(
        prop_oneof![
            3 => (0..12usize).prop_map(Op::Key),
            // Up to 100 keys: more than a keyed operator's batch of 32.
            3 => vec(prop_oneof![0..40u64, FILLER..FILLER + 100], 0..100).prop_map(Op::Prefetch),
            3 => any::<i64>().prop_map(Op::Update),
            1 => Just(Op::ClearValue),
            3 => (0..4u8, any::<i32>()).prop_map(|(k, v)| Op::Put(k, v)),
            1 => (0..4u8).prop_map(Op::Remove),
            2 => any::<i32>().prop_map(Op::Add),
            1 => Just(Op::ClearList),
            2 => (0..4u8).prop_map(Op::Read),
            2 => Just(Op::IsEmpty),
            1 => Just(Op::Snapshot),
        ],
        1..80,
    )
}

/// The model: per key, the value, the map and the list.
type Model = BTreeMap<u64, (Option<i64>, BTreeMap<u8, i32>, Vec<i32>)>;

fn backend(range: KeyGroupRange) -> HeapKeyedStateBackend<u64> {
    HeapKeyedStateBackend::new(config::<u64>(MAX_P, range)).unwrap()
}

fn value(b: &HeapKeyedStateBackend<u64>) -> std::rc::Rc<dyn ValueState<i64>> {
    b.value_state::<VoidNamespace, i64>(&ValueStateDescriptor::new("v"))
        .unwrap()
}

fn map(b: &HeapKeyedStateBackend<u64>) -> std::rc::Rc<dyn MapState<u8, i32>> {
    b.map_state::<VoidNamespace, u8, i32>(&MapStateDescriptor::new("m"))
        .unwrap()
}

fn list(b: &HeapKeyedStateBackend<u64>) -> std::rc::Rc<dyn ListState<i32>> {
    b.list_state::<VoidNamespace, i32>(&ListStateDescriptor::new("l"))
        .unwrap()
}

/// Every owned key's value, map and list in `b`, as the model holds them.
fn read_all(b: &HeapKeyedStateBackend<u64>, owned: &[u64]) -> Model {
    let (v, m, l) = (value(b), map(b), list(b));
    let mut out = Model::new();
    for &k in owned {
        b.set_current_key(k).unwrap();
        let entries: BTreeMap<u8, i32> = m.entries().unwrap().into_iter().collect();
        let got = (v.value().unwrap(), entries, l.get().unwrap());
        if got.0.is_some() || !got.1.is_empty() || !got.2.is_empty() {
            out.insert(k, got);
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn prefetch_changes_nothing_and_snapshots_keep_their_point(ops in ops()) {
        let range = KeyGroupRange::new(0, MAX_P / 2 - 1).unwrap();
        let b = backend(range);
        let owned: Vec<u64> = (0..200u64)
            .filter(|k| range.contains(b.key_group_of(k).unwrap()))
            .take(12)
            .collect();
        let (v, m, l) = (value(&b), map(&b), list(&b));
        // Enough other keys that the states exceed what `prefetch` leaves alone as
        // small enough to stay in cache (1 MiB); `read_all` does not look at them.
        for k in (FILLER..).filter(|k| range.contains(b.key_group_of(k).unwrap())).take(FILLED) {
            b.set_current_key(k).unwrap();
            v.update(1).unwrap();
            m.put(1, 1).unwrap();
            l.add(1).unwrap();
        }
        let mut model = Model::new();
        b.set_current_key(owned[0]).unwrap();
        let mut key = Some(owned[0]);
        let mut snapshots: Vec<(KeyedSnapshot, Model)> = Vec::new();
        for op in ops {
            match op {
                Op::Key(i) => {
                    let k = owned[i % owned.len()];
                    b.set_current_key(k).unwrap();
                    key = Some(k);
                }
                Op::Prefetch(keys) => {
                    let with_groups: Vec<(u32, u64)> =
                        keys.iter().map(|k| (b.key_group_of(k).unwrap(), *k)).collect();
                    let refs: Vec<(u32, &u64)> =
                        with_groups.iter().map(|(kg, k)| (*kg, k)).collect();
                    b.prefetch(&refs);
                    // The current key stays current.
                    prop_assert_eq!(b.current_key(), key);
                }
                Op::Snapshot => {
                    let s = b.snapshot(next_checkpoint_id()).unwrap();
                    snapshots.push((s, model.clone()));
                }
                Op::Read(_) | Op::IsEmpty if key.is_some() => {
                    let at = key.and_then(|k| model.get(&k));
                    let pairs = at.map(|e| &e.1);
                    prop_assert_eq!(m.is_empty().unwrap(), pairs.is_none_or(|p| p.is_empty()));
                    if let Op::Read(uk) = op {
                        let want = pairs.and_then(|p| p.get(&uk)).copied();
                        prop_assert_eq!(m.get(&uk).unwrap(), want);
                        prop_assert_eq!(m.contains(&uk).unwrap(), want.is_some());
                        let elements = at.map(|e| e.2.clone()).unwrap_or_default();
                        prop_assert_eq!(l.get().unwrap(), elements);
                    }
                }
                Op::Read(_) | Op::IsEmpty => {}
                op => {
                    let Some(k) = key else { continue };
                    let e = model.entry(k).or_default();
                    match op {
                        Op::Update(x) => {
                            v.update(x).unwrap();
                            e.0 = Some(x);
                        }
                        Op::ClearValue => {
                            v.clear().unwrap();
                            e.0 = None;
                        }
                        Op::Put(uk, uv) => {
                            m.put(uk, uv).unwrap();
                            e.1.insert(uk, uv);
                        }
                        Op::Remove(uk) => {
                            m.remove(&uk).unwrap();
                            e.1.remove(&uk);
                        }
                        Op::Add(x) => {
                            l.add(x).unwrap();
                            e.2.push(x);
                        }
                        Op::ClearList => {
                            l.clear().unwrap();
                            e.2.clear();
                        }
                        _ => unreachable!("handled above"),
                    }
                    if e.0.is_none() && e.1.is_empty() && e.2.is_empty() {
                        model.remove(&k);
                    }
                }
            }
        }
        prop_assert_eq!(read_all(&b, &owned), model);
        let (_dir, storage) = temp_storage();
        for (i, (s, at)) in snapshots.into_iter().enumerate() {
            let handle = s.write(&storage, &format!("s{i}")).unwrap();
            let restored =
                HeapKeyedStateBackend::restore(config::<u64>(MAX_P, range), &storage, &[handle])
                    .unwrap();
            prop_assert_eq!(read_all(&restored, &owned), at);
        }
    }
}

/// A state whose entries take no bytes (a `()` key and a `()` value) builds, is
/// handed to the prefetch and keeps its value: the prefetch compiles for any entry
/// type, zero-sized ones included (the published `mem_prefetch` crate refuses them at
/// compile time).
#[test]
fn zero_sized_entries_are_prefetched_and_keep_their_value() {
    let b =
        HeapKeyedStateBackend::<()>::new(config::<()>(MAX_P, KeyGroupRange::all(MAX_P).unwrap()))
            .unwrap();
    let s = b
        .value_state::<VoidNamespace, ()>(&ValueStateDescriptor::new("unit"))
        .unwrap();
    let kg = b.key_group_of(&()).unwrap();
    b.set_current_key(()).unwrap();
    b.prefetch(&[(kg, &())]);
    assert_eq!(s.value().unwrap(), None);
    s.update(()).unwrap();
    b.prefetch(&[(kg, &())]);
    b.set_current_key(()).unwrap();
    assert_eq!(s.value().unwrap(), Some(()));
}

/// A list of elements with drop glue (`String`s), big enough that the prefetch probes
/// it and requests each list's last element: every list reads back as written, and an
/// append after the prefetch lands at its end.
#[test]
fn lists_of_owned_elements_are_prefetched_and_keep_their_elements() {
    let b = backend(KeyGroupRange::all(MAX_P).unwrap());
    let s = b
        .list_state::<VoidNamespace, String>(&ListStateDescriptor::new("strings"))
        .unwrap();
    let keys: Vec<u64> = (0..FILLED as u64).collect();
    for &k in &keys {
        b.set_current_key(k).unwrap();
        s.add(format!("first {k}")).unwrap();
        s.add(format!("second {k}")).unwrap();
    }
    for chunk in keys.chunks(32) {
        let batch: Vec<(u32, &u64)> = chunk
            .iter()
            .map(|k| (b.key_group_of(k).unwrap(), k))
            .collect();
        // Twice: a read inside the lists between them makes the second request elements.
        b.prefetch(&batch);
        for &(kg, k) in &batch {
            b.set_current_key_in_group(*k, kg).unwrap();
            assert_eq!(
                s.get().unwrap(),
                vec![format!("first {k}"), format!("second {k}")]
            );
        }
        b.prefetch(&batch);
        for &(kg, k) in &batch {
            b.set_current_key_in_group(*k, kg).unwrap();
            s.add(format!("third {k}")).unwrap();
        }
    }
    for &k in &keys {
        b.set_current_key(k).unwrap();
        let got = s.get().unwrap();
        assert_eq!(got.len(), 3, "key {k}");
        assert_eq!(got[2], format!("third {k}"));
    }
}
