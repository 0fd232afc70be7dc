//! Model-based property tests: each keyed state kind against a `BTreeMap` model.
//!
//! Operation sequences mix key and namespace switches, every operation of the kind,
//! namespace merges where the kind supports them, and `Restore` (a full snapshot and a
//! restore into a fresh backend) so that round trips are checked at random points.

use std::cell::Cell;
use std::collections::BTreeMap;

use flowstate_core::backend::KeyedStateBackend;
use flowstate_core::descriptor::{
    AggregateFunction, AggregatingStateDescriptor, ListStateDescriptor, MapStateDescriptor,
    ReducingStateDescriptor, ValueStateDescriptor,
};
use flowstate_core::error::StateError;
use flowstate_core::keygroup::KeyGroupRange;
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

use crate::{BackendFactory, config, snapshot_to, temp_storage};

const MAX_P: u32 = 16;
const CASES: u32 = 40;

/// The backend plus what is needed to round-trip it through storage.
struct Harness<'a, F: BackendFactory> {
    factory: &'a F,
    storage: &'a dyn flowstate_core::storage::CheckpointStorage,
    counter: &'a Cell<u32>,
    backend: F::Backend<u64>,
    key: Option<u64>,
}

impl<'a, F: BackendFactory> Harness<'a, F> {
    fn new(
        factory: &'a F,
        storage: &'a dyn flowstate_core::storage::CheckpointStorage,
        counter: &'a Cell<u32>,
    ) -> Self {
        let backend = factory
            .create(config::<u64>(MAX_P, KeyGroupRange::all(MAX_P).unwrap()))
            .unwrap();
        Harness {
            factory,
            storage,
            counter,
            backend,
            key: None,
        }
    }

    fn set_key(&mut self, k: u64) {
        self.backend.set_current_key(k).unwrap();
        self.key = Some(k);
    }

    fn restore(&mut self) {
        let n = self.counter.get();
        self.counter.set(n + 1);
        let h = snapshot_to(&self.backend, self.storage, &format!("model/snap-{n}"));
        self.backend = self
            .factory
            .restore(
                config::<u64>(MAX_P, KeyGroupRange::all(MAX_P).unwrap()),
                self.storage,
                &[h],
            )
            .unwrap();
        if let Some(k) = self.key {
            self.backend.set_current_key(k).unwrap();
        }
    }
}

fn run<T: std::fmt::Debug>(
    strategy: impl Strategy<Value = T>,
    test: impl Fn(T) -> Result<(), TestCaseError>,
) {
    let mut runner = TestRunner::new(Config {
        cases: CASES,
        failure_persistence: None,
        ..Config::default()
    });
    if let Err(e) = runner.run(&strategy, test) {
        panic!("{e}");
    }
}

fn expect_no_key<T: std::fmt::Debug>(r: Result<T, StateError>) -> Result<(), TestCaseError> {
    prop_assert!(
        matches!(r, Err(StateError::NoCurrentKey { .. })),
        "expected NoCurrentKey, got {r:?}"
    );
    Ok(())
}

#[derive(Debug, Clone)]
enum ValueOp {
    Key(u64),
    Ns(u32),
    Update(i64),
    Get,
    Clear,
    Restore,
}

fn value_ops() -> impl Strategy<Value = Vec<ValueOp>> {
    vec(
        prop_oneof![
            3 => (0..6u64).prop_map(ValueOp::Key),
            2 => (0..3u32).prop_map(ValueOp::Ns),
            4 => any::<i64>().prop_map(ValueOp::Update),
            4 => Just(ValueOp::Get),
            1 => Just(ValueOp::Clear),
            1 => Just(ValueOp::Restore),
        ],
        1..100,
    )
}

/// `ValueState`: value/update/clear per key and namespace, with and without default.
pub fn value_state_matches_model<F: BackendFactory>(factory: &F) {
    let (_dir, storage) = temp_storage();
    let counter = Cell::new(0);
    run(value_ops(), |ops| {
        let mut h = Harness::new(factory, &storage, &counter);
        let plain = ValueStateDescriptor::<i64>::new("v");
        let with_default = ValueStateDescriptor::<i64>::new("d").with_default(-7);
        let mut model: BTreeMap<(u64, u32), i64> = BTreeMap::new();
        let mut ns = 0u32;
        for op in ops {
            let s = h.backend.value_state::<u32, i64>(&plain).unwrap();
            let d = h.backend.value_state::<u32, i64>(&with_default).unwrap();
            s.set_current_namespace(ns);
            d.set_current_namespace(ns);
            let Some(key) = h.key else {
                if let ValueOp::Key(k) = op {
                    h.set_key(k);
                } else if !matches!(op, ValueOp::Ns(_) | ValueOp::Restore) {
                    expect_no_key(s.value())?;
                    expect_no_key(d.update(1))?;
                }
                continue;
            };
            match op {
                ValueOp::Key(k) => h.set_key(k),
                ValueOp::Ns(n) => ns = n,
                ValueOp::Update(v) => {
                    s.update(v).unwrap();
                    d.update(v.wrapping_mul(3)).unwrap();
                    model.insert((key, ns), v);
                }
                ValueOp::Get => {
                    let m = model.get(&(key, ns)).copied();
                    prop_assert_eq!(s.value().unwrap(), m);
                    prop_assert_eq!(
                        d.value().unwrap(),
                        Some(m.map_or(-7, |v| v.wrapping_mul(3)))
                    );
                }
                ValueOp::Clear => {
                    s.clear().unwrap();
                    d.clear().unwrap();
                    model.remove(&(key, ns));
                }
                ValueOp::Restore => h.restore(),
            }
        }
        // Final full comparison through the key listing.
        for n in 0..3u32 {
            let mut keys = h.backend.keys::<u32>("v", &n).unwrap();
            keys.sort();
            let expected: Vec<u64> = model
                .keys()
                .filter(|(_, m)| *m == n)
                .map(|(k, _)| *k)
                .collect();
            prop_assert_eq!(keys, expected);
        }
        Ok(())
    });
}

#[derive(Debug, Clone)]
enum ListOp {
    Key(u64),
    Ns(u32),
    Add(i32),
    AddAll(Vec<i32>),
    Update(Vec<i32>),
    Get,
    Clear,
    Merge(u32, Vec<u32>),
    Restore,
}

fn list_ops() -> impl Strategy<Value = Vec<ListOp>> {
    vec(
        prop_oneof![
            3 => (0..6u64).prop_map(ListOp::Key),
            2 => (0..3u32).prop_map(ListOp::Ns),
            4 => any::<i32>().prop_map(ListOp::Add),
            // Up to seven: the RocksDB backend stores four or more integers as a run.
            2 => vec(any::<i32>(), 0..8).prop_map(ListOp::AddAll),
            2 => vec(any::<i32>(), 0..8).prop_map(ListOp::Update),
            4 => Just(ListOp::Get),
            1 => Just(ListOp::Clear),
            1 => ((0..3u32), vec(0..3u32, 0..3)).prop_map(|(t, s)| ListOp::Merge(t, s)),
            1 => Just(ListOp::Restore),
        ],
        1..100,
    )
}

/// `ListState`: add/add_all/update/get/clear, empty reads as empty, `update([])` clears,
/// and `merge_namespaces`.
pub fn list_state_matches_model<F: BackendFactory>(factory: &F) {
    let (_dir, storage) = temp_storage();
    let counter = Cell::new(0);
    run(list_ops(), |ops| {
        let mut h = Harness::new(factory, &storage, &counter);
        let desc = ListStateDescriptor::<i32>::new("l");
        let mut model: BTreeMap<(u64, u32), Vec<i32>> = BTreeMap::new();
        let mut ns = 0u32;
        for op in ops {
            let s = h.backend.list_state::<u32, i32>(&desc).unwrap();
            s.set_current_namespace(ns);
            let Some(key) = h.key else {
                if let ListOp::Key(k) = op {
                    h.set_key(k);
                } else if !matches!(op, ListOp::Ns(_) | ListOp::Restore) {
                    expect_no_key(s.get())?;
                    expect_no_key(s.add(1))?;
                }
                continue;
            };
            match op {
                ListOp::Key(k) => h.set_key(k),
                ListOp::Ns(n) => ns = n,
                ListOp::Add(v) => {
                    s.add(v).unwrap();
                    model.entry((key, ns)).or_default().push(v);
                }
                ListOp::AddAll(vs) => {
                    s.add_all(vs.clone()).unwrap();
                    if !vs.is_empty() {
                        model.entry((key, ns)).or_default().extend(vs);
                    }
                }
                ListOp::Update(vs) => {
                    s.update(vs.clone()).unwrap();
                    if vs.is_empty() {
                        model.remove(&(key, ns));
                    } else {
                        model.insert((key, ns), vs);
                    }
                }
                ListOp::Get => {
                    let expected = model.get(&(key, ns)).cloned().unwrap_or_default();
                    prop_assert_eq!(s.get().unwrap(), expected.clone());
                    let mut viewed = None;
                    s.view(&mut |items| viewed = Some(items.to_vec())).unwrap();
                    prop_assert_eq!(viewed, Some(expected));
                }
                ListOp::Clear => {
                    s.clear().unwrap();
                    model.remove(&(key, ns));
                }
                ListOp::Merge(target, sources) => {
                    s.merge_namespaces(&target, &sources).unwrap();
                    let mut merged = Vec::new();
                    for src in &sources {
                        if let Some(v) = model.remove(&(key, *src)) {
                            merged.extend(v);
                        }
                    }
                    if !merged.is_empty() {
                        model.entry((key, target)).or_default().extend(merged);
                    }
                }
                ListOp::Restore => h.restore(),
            }
        }
        for ((k, n), v) in &model {
            h.backend.set_current_key(*k).unwrap();
            let s = h.backend.list_state::<u32, i32>(&desc).unwrap();
            s.set_current_namespace(*n);
            prop_assert_eq!(&s.get().unwrap(), v);
        }
        Ok(())
    });
}

#[derive(Debug, Clone)]
enum MapOp {
    Key(u64),
    Ns(u32),
    Put(u8, i32),
    PutAll(Vec<(u8, i32)>),
    Remove(u8),
    Get(u8),
    Contains(u8),
    Iterate,
    IsEmpty,
    Clear,
    Restore,
}

fn map_ops() -> impl Strategy<Value = Vec<MapOp>> {
    vec(
        prop_oneof![
            3 => (0..6u64).prop_map(MapOp::Key),
            2 => (0..3u32).prop_map(MapOp::Ns),
            4 => (0..5u8, any::<i32>()).prop_map(|(k, v)| MapOp::Put(k, v)),
            1 => vec((0..5u8, any::<i32>()), 0..4).prop_map(MapOp::PutAll),
            2 => (0..5u8).prop_map(MapOp::Remove),
            3 => (0..5u8).prop_map(MapOp::Get),
            2 => (0..5u8).prop_map(MapOp::Contains),
            2 => Just(MapOp::Iterate),
            1 => Just(MapOp::IsEmpty),
            1 => Just(MapOp::Clear),
            1 => Just(MapOp::Restore),
        ],
        1..100,
    )
}

/// `MapState`: every operation, iteration per current key and namespace.
pub fn map_state_matches_model<F: BackendFactory>(factory: &F) {
    let (_dir, storage) = temp_storage();
    let counter = Cell::new(0);
    run(map_ops(), |ops| {
        let mut h = Harness::new(factory, &storage, &counter);
        let desc = MapStateDescriptor::<u8, i32>::new("m");
        let mut model: BTreeMap<(u64, u32), BTreeMap<u8, i32>> = BTreeMap::new();
        let mut ns = 0u32;
        for op in ops {
            let s = h.backend.map_state::<u32, u8, i32>(&desc).unwrap();
            s.set_current_namespace(ns);
            let Some(key) = h.key else {
                if let MapOp::Key(k) = op {
                    h.set_key(k);
                } else if !matches!(op, MapOp::Ns(_) | MapOp::Restore) {
                    expect_no_key(s.get(&0))?;
                    expect_no_key(s.put(0, 1))?;
                }
                continue;
            };
            let m = model.get(&(key, ns)).cloned().unwrap_or_default();
            match op {
                MapOp::Key(k) => h.set_key(k),
                MapOp::Ns(n) => ns = n,
                MapOp::Put(k, v) => {
                    s.put(k, v).unwrap();
                    model.entry((key, ns)).or_default().insert(k, v);
                }
                MapOp::PutAll(pairs) => {
                    s.put_all(pairs.clone()).unwrap();
                    if !pairs.is_empty() {
                        model.entry((key, ns)).or_default().extend(pairs);
                    }
                }
                MapOp::Remove(k) => {
                    s.remove(&k).unwrap();
                    if let Some(mm) = model.get_mut(&(key, ns)) {
                        mm.remove(&k);
                        if mm.is_empty() {
                            model.remove(&(key, ns));
                        }
                    }
                }
                MapOp::Get(k) => prop_assert_eq!(s.get(&k).unwrap(), m.get(&k).copied()),
                MapOp::Contains(k) => prop_assert_eq!(s.contains(&k).unwrap(), m.contains_key(&k)),
                MapOp::Iterate => {
                    let mut entries = s.entries().unwrap();
                    entries.sort();
                    prop_assert_eq!(entries, m.iter().map(|(k, v)| (*k, *v)).collect::<Vec<_>>());
                    let mut keys = s.keys().unwrap();
                    keys.sort();
                    prop_assert_eq!(keys, m.keys().copied().collect::<Vec<_>>());
                    let mut values = s.values().unwrap();
                    values.sort();
                    let mut expected: Vec<i32> = m.values().copied().collect();
                    expected.sort();
                    prop_assert_eq!(values, expected);
                }
                MapOp::IsEmpty => prop_assert_eq!(s.is_empty().unwrap(), m.is_empty()),
                MapOp::Clear => {
                    s.clear().unwrap();
                    model.remove(&(key, ns));
                }
                MapOp::Restore => h.restore(),
            }
        }
        for n in 0..3u32 {
            let mut keys = h.backend.keys::<u32>("m", &n).unwrap();
            keys.sort();
            let expected: Vec<u64> = model
                .keys()
                .filter(|(_, m)| *m == n)
                .map(|(k, _)| *k)
                .collect();
            prop_assert_eq!(keys, expected);
        }
        Ok(())
    });
}

#[derive(Debug, Clone)]
enum FoldOp {
    Key(u64),
    Ns(u32),
    Add(i64),
    Get,
    Clear,
    Merge(u32, Vec<u32>),
    Restore,
}

fn fold_ops() -> impl Strategy<Value = Vec<FoldOp>> {
    vec(
        prop_oneof![
            3 => (0..6u64).prop_map(FoldOp::Key),
            2 => (0..3u32).prop_map(FoldOp::Ns),
            4 => (-1000i64..1000).prop_map(FoldOp::Add),
            4 => Just(FoldOp::Get),
            1 => Just(FoldOp::Clear),
            1 => ((0..3u32), vec(0..3u32, 0..3)).prop_map(|(t, s)| FoldOp::Merge(t, s)),
            1 => Just(FoldOp::Restore),
        ],
        1..100,
    )
}

/// `ReducingState` with a non-commutative reduce function (`a * 3 + b`), so order
/// of folding and of merging is checked too.
pub fn reducing_state_matches_model<F: BackendFactory>(factory: &F) {
    let reduce = |a: &i64, b: &i64| a.wrapping_mul(3).wrapping_add(*b);
    let (_dir, storage) = temp_storage();
    let counter = Cell::new(0);
    run(fold_ops(), |ops| {
        let mut h = Harness::new(factory, &storage, &counter);
        let desc = ReducingStateDescriptor::<i64>::new("r", reduce);
        let mut model: BTreeMap<(u64, u32), i64> = BTreeMap::new();
        let mut ns = 0u32;
        for op in ops {
            let s = h.backend.reducing_state::<u32, i64>(&desc).unwrap();
            s.set_current_namespace(ns);
            let Some(key) = h.key else {
                if let FoldOp::Key(k) = op {
                    h.set_key(k);
                } else if !matches!(op, FoldOp::Ns(_) | FoldOp::Restore) {
                    expect_no_key(s.get())?;
                }
                continue;
            };
            match op {
                FoldOp::Key(k) => h.set_key(k),
                FoldOp::Ns(n) => ns = n,
                FoldOp::Add(v) => {
                    s.add(v).unwrap();
                    let e = model.get(&(key, ns)).map_or(v, |a| reduce(a, &v));
                    model.insert((key, ns), e);
                }
                FoldOp::Get => prop_assert_eq!(s.get().unwrap(), model.get(&(key, ns)).copied()),
                FoldOp::Clear => {
                    s.clear().unwrap();
                    model.remove(&(key, ns));
                }
                FoldOp::Merge(target, sources) => {
                    s.merge_namespaces(&target, &sources).unwrap();
                    let mut merged: Option<i64> = None;
                    for src in &sources {
                        if let Some(v) = model.remove(&(key, *src)) {
                            merged = Some(merged.map_or(v, |m| reduce(&m, &v)));
                        }
                    }
                    if let Some(m) = merged {
                        let e = model.get(&(key, target)).map_or(m, |t| reduce(t, &m));
                        model.insert((key, target), e);
                    }
                }
                FoldOp::Restore => h.restore(),
            }
        }
        Ok(())
    });
}

/// Average as `(sum, count)`; the result is `sum * 1000 / count` (integer, exact).
struct Average;

impl AggregateFunction<i64, (i64, u64), i64> for Average {
    fn create_accumulator(&self) -> (i64, u64) {
        (0, 0)
    }
    fn add(&self, value: i64, acc: &mut (i64, u64)) {
        acc.0 += value;
        acc.1 += 1;
    }
    fn get_result(&self, acc: &(i64, u64)) -> i64 {
        if acc.1 == 0 {
            0
        } else {
            acc.0 * 1000 / acc.1 as i64
        }
    }
    fn merge(&self, acc: &mut (i64, u64), other: (i64, u64)) {
        acc.0 += other.0;
        acc.1 += other.1;
    }
}

/// `AggregatingState`: the accumulator is stored, `get` is the function's result.
pub fn aggregating_state_matches_model<F: BackendFactory>(factory: &F) {
    let (_dir, storage) = temp_storage();
    let counter = Cell::new(0);
    run(fold_ops(), |ops| {
        let mut h = Harness::new(factory, &storage, &counter);
        let desc = AggregatingStateDescriptor::<i64, (i64, u64), i64>::new("a", Average);
        let mut model: BTreeMap<(u64, u32), (i64, u64)> = BTreeMap::new();
        let mut ns = 0u32;
        for op in ops {
            let s = h
                .backend
                .aggregating_state::<u32, i64, (i64, u64), i64>(&desc)
                .unwrap();
            s.set_current_namespace(ns);
            let Some(key) = h.key else {
                if let FoldOp::Key(k) = op {
                    h.set_key(k);
                } else if !matches!(op, FoldOp::Ns(_) | FoldOp::Restore) {
                    expect_no_key(s.get())?;
                }
                continue;
            };
            match op {
                FoldOp::Key(k) => h.set_key(k),
                FoldOp::Ns(n) => ns = n,
                FoldOp::Add(v) => {
                    s.add(v).unwrap();
                    Average.add(v, model.entry((key, ns)).or_insert((0, 0)));
                }
                FoldOp::Get => prop_assert_eq!(
                    s.get().unwrap(),
                    model.get(&(key, ns)).map(|a| Average.get_result(a))
                ),
                FoldOp::Clear => {
                    s.clear().unwrap();
                    model.remove(&(key, ns));
                }
                FoldOp::Merge(target, sources) => {
                    s.merge_namespaces(&target, &sources).unwrap();
                    let mut merged: Option<(i64, u64)> = None;
                    for src in &sources {
                        if let Some(v) = model.remove(&(key, *src)) {
                            match merged.as_mut() {
                                Some(m) => Average.merge(m, v),
                                None => merged = Some(v),
                            }
                        }
                    }
                    if let Some(m) = merged {
                        Average.merge(model.entry((key, target)).or_insert((0, 0)), m);
                    }
                }
                FoldOp::Restore => h.restore(),
            }
        }
        Ok(())
    });
}
