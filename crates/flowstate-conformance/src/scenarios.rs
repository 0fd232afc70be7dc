//! Deterministic scenarios: round trips, rescaling, snapshot isolation, corruption,
//! serializer compatibility and bad input.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use bytes::Bytes;
use flowstate_core::backend::KeyedStateBackend;
use flowstate_core::descriptor::{
    AggregateFunction, AggregatingStateDescriptor, ListStateDescriptor, MapStateDescriptor,
    ReducingStateDescriptor, ValueStateDescriptor,
};
use flowstate_core::error::StateError;
use flowstate_core::keygroup::{KeyGroupRange, key_group_range_for_operator};
use flowstate_core::serializer::{SerdeSerializer, TypeSerializer};
use flowstate_core::snapshot::{AsyncKeyedSnapshot, KeyedStateHandle};
use flowstate_core::state::VoidNamespace;
use flowstate_core::storage::CheckpointStorage;

use crate::serializers::{CounterV1, CounterV2, EndianU64};
use crate::{BackendFactory, config, snapshot_to, temp_storage};

fn all(max_p: u32) -> KeyGroupRange {
    KeyGroupRange::all(max_p).unwrap()
}

pub(crate) struct Sum;
impl AggregateFunction<u64, u64, String> for Sum {
    fn create_accumulator(&self) -> u64 {
        0
    }
    fn add(&self, value: u64, acc: &mut u64) {
        *acc += value;
    }
    fn get_result(&self, acc: &u64) -> String {
        format!("sum={acc}")
    }
    fn merge(&self, acc: &mut u64, other: u64) {
        *acc += other;
    }
}

/// Descriptors of every kind used by the round-trip scenarios.
type AllKinds = (
    ValueStateDescriptor<u64>,
    ListStateDescriptor<String>,
    MapStateDescriptor<u32, (i8, String)>,
    ReducingStateDescriptor<u64>,
    AggregatingStateDescriptor<u64, u64, String>,
);

fn descs() -> AllKinds {
    (
        ValueStateDescriptor::new("value"),
        ListStateDescriptor::new("list"),
        MapStateDescriptor::new("map"),
        ReducingStateDescriptor::new("max", |a: &u64, b: &u64| *a.max(b)),
        AggregatingStateDescriptor::new("sum", Sum),
    )
}

/// Writes every kind for `keys` under namespaces 0 and 1 into `b`.
fn fill_all_kinds<B: KeyedStateBackend<u64>>(b: &B, keys: impl Iterator<Item = u64>) {
    let (vd, ld, md, rd, ad) = descs();
    let v = b.value_state::<u32, u64>(&vd).unwrap();
    let l = b.list_state::<u32, String>(&ld).unwrap();
    let m = b.map_state::<u32, u32, (i8, String)>(&md).unwrap();
    let r = b.reducing_state::<u32, u64>(&rd).unwrap();
    let a = b.aggregating_state::<u32, u64, u64, String>(&ad).unwrap();
    for k in keys {
        b.set_current_key(k).unwrap();
        for ns in 0..2u32 {
            if (k + ns as u64).is_multiple_of(3) {
                continue;
            }
            v.set_current_namespace(ns);
            l.set_current_namespace(ns);
            m.set_current_namespace(ns);
            r.set_current_namespace(ns);
            a.set_current_namespace(ns);
            v.update(k * 10 + ns as u64).unwrap();
            l.add_all(vec![format!("{k}"), format!("ns{ns}")]).unwrap();
            m.put(ns, (k as i8, "x".repeat((k % 5) as usize))).unwrap();
            m.put(99, (-1, String::new())).unwrap();
            r.add(k).unwrap();
            r.add(ns as u64 * 1000).unwrap();
            a.add(k).unwrap();
            a.add(1).unwrap();
        }
    }
}

/// Checks what [`fill_all_kinds`] wrote, for `keys`.
fn check_all_kinds<B: KeyedStateBackend<u64>>(b: &B, keys: impl Iterator<Item = u64>) {
    let (vd, ld, md, rd, ad) = descs();
    let v = b.value_state::<u32, u64>(&vd).unwrap();
    let l = b.list_state::<u32, String>(&ld).unwrap();
    let m = b.map_state::<u32, u32, (i8, String)>(&md).unwrap();
    let r = b.reducing_state::<u32, u64>(&rd).unwrap();
    let a = b.aggregating_state::<u32, u64, u64, String>(&ad).unwrap();
    for k in keys {
        b.set_current_key(k).unwrap();
        for ns in 0..2u32 {
            v.set_current_namespace(ns);
            l.set_current_namespace(ns);
            m.set_current_namespace(ns);
            r.set_current_namespace(ns);
            a.set_current_namespace(ns);
            if (k + ns as u64).is_multiple_of(3) {
                assert_eq!(v.value().unwrap(), None, "key {k} ns {ns}");
                assert!(l.get().unwrap().is_empty());
                assert!(m.is_empty().unwrap());
                assert_eq!(r.get().unwrap(), None);
                assert_eq!(a.get().unwrap(), None);
                continue;
            }
            assert_eq!(
                v.value().unwrap(),
                Some(k * 10 + ns as u64),
                "key {k} ns {ns}"
            );
            assert_eq!(l.get().unwrap(), vec![format!("{k}"), format!("ns{ns}")]);
            let mut entries = m.entries().unwrap();
            entries.sort();
            assert_eq!(
                entries,
                vec![
                    (ns, (k as i8, "x".repeat((k % 5) as usize))),
                    (99, (-1, String::new()))
                ]
            );
            assert_eq!(r.get().unwrap(), Some(k.max(ns as u64 * 1000)));
            assert_eq!(a.get().unwrap(), Some(format!("sum={}", k + 1)));
        }
    }
}

/// Snapshot and restore of every kind (two namespaces, 500 keys), plus an empty backend.
pub fn snapshot_round_trip_all_kinds<F: BackendFactory>(factory: &F) {
    let (_dir, storage) = temp_storage();
    let empty = factory.create(config::<u64>(128, all(128))).unwrap();
    let h = snapshot_to(&empty, &storage, "empty");
    let restored = factory
        .restore(config::<u64>(128, all(128)), &storage, &[h])
        .unwrap();
    assert!(restored.state_names().is_empty());

    let b = factory.create(config::<u64>(128, all(128))).unwrap();
    fill_all_kinds(&b, 0..500);
    check_all_kinds(&b, 0..500);
    let h = snapshot_to(&b, &storage, "full");
    let restored = factory
        .restore(
            config::<u64>(128, all(128)),
            &storage,
            std::slice::from_ref(&h),
        )
        .unwrap();
    assert_eq!(
        restored.state_names(),
        vec!["list", "map", "max", "sum", "value"]
    );
    check_all_kinds(&restored, 0..500);
    // A second generation: restore, snapshot again, restore again.
    let h2 = snapshot_to(&restored, &storage, "full-2");
    let again = factory
        .restore(config::<u64>(128, all(128)), &storage, &[h2])
        .unwrap();
    check_all_kinds(&again, 0..500);
}

/// Rescaling: max parallelism 128, 20,000 keys, every (p, p') in 1..=8 × 1..=8: each key
/// is restored exactly once, on the instance owning its key group, with its values.
pub fn rescaling_every_key_once<F: BackendFactory>(factory: &F) {
    const KEYS: u64 = 20_000;
    const MAX_P: u32 = 128;
    let (_dir, storage) = temp_storage();
    let value = ValueStateDescriptor::<u64>::new("value");
    let list = ListStateDescriptor::<u32>::new("list");
    let map = MapStateDescriptor::<u8, String>::new("map");
    let windowed = ReducingStateDescriptor::<u64>::new("windowed", |a: &u64, b: &u64| a + b);

    let mut snapshots: BTreeMap<u32, Vec<KeyedStateHandle>> = BTreeMap::new();
    for p in 1..=8u32 {
        let mut handles = Vec::new();
        for i in 0..p {
            let range = key_group_range_for_operator(MAX_P, p, i).unwrap();
            let b = factory.create(config::<u64>(MAX_P, range)).unwrap();
            let v = b.value_state::<VoidNamespace, u64>(&value).unwrap();
            let l = b.list_state::<VoidNamespace, u32>(&list).unwrap();
            let m = b.map_state::<VoidNamespace, u8, String>(&map).unwrap();
            let w = b.reducing_state::<u32, u64>(&windowed).unwrap();
            for k in 0..KEYS {
                if !range.contains(b.key_group_of(&k).unwrap()) {
                    continue;
                }
                b.set_current_key(k).unwrap();
                v.update(k * 7 + 1).unwrap();
                if k % 3 == 0 {
                    l.update(vec![(k % 100) as u32, (k % 7) as u32]).unwrap();
                }
                if k % 5 == 0 {
                    m.put_all(vec![(1, k.to_string()), (2, "x".into())])
                        .unwrap();
                }
                if k % 11 == 0 {
                    w.set_current_namespace((k % 4) as u32);
                    w.add(k).unwrap();
                    w.add(1).unwrap();
                }
            }
            handles.push(snapshot_to(&b, &storage, &format!("rescale/p{p}/i{i}")));
        }
        snapshots.insert(p, handles);
    }

    for (p, handles) in &snapshots {
        for new_p in 1..=8u32 {
            let mut seen: BTreeMap<&str, BTreeSet<u64>> = BTreeMap::new();
            for j in 0..new_p {
                let range = key_group_range_for_operator(MAX_P, new_p, j).unwrap();
                let b = factory
                    .restore(config::<u64>(MAX_P, range), &storage, handles)
                    .unwrap();
                let v = b.value_state::<VoidNamespace, u64>(&value).unwrap();
                let l = b.list_state::<VoidNamespace, u32>(&list).unwrap();
                let m = b.map_state::<VoidNamespace, u8, String>(&map).unwrap();
                let w = b.reducing_state::<u32, u64>(&windowed).unwrap();
                let ctx = format!("p={p} -> p'={new_p}, instance {j}");
                let mut record = |state: &'static str, keys: Vec<u64>| {
                    for k in keys {
                        assert!(
                            range.contains(b.key_group_of(&k).unwrap()),
                            "{ctx}: {state} key {k} not owned"
                        );
                        assert!(
                            seen.entry(state).or_default().insert(k),
                            "{ctx}: {state} key {k} restored twice"
                        );
                    }
                };
                record("value", b.keys("value", &VoidNamespace).unwrap());
                record("list", b.keys("list", &VoidNamespace).unwrap());
                record("map", b.keys("map", &VoidNamespace).unwrap());
                for ns in 0..4u32 {
                    record("windowed", b.keys("windowed", &ns).unwrap());
                }
                for k in b.keys("value", &VoidNamespace).unwrap() {
                    b.set_current_key(k).unwrap();
                    assert_eq!(v.value().unwrap(), Some(k * 7 + 1), "{ctx}: key {k}");
                    if k % 3 == 0 {
                        assert_eq!(l.get().unwrap(), vec![(k % 100) as u32, (k % 7) as u32]);
                    }
                    if k % 5 == 0 {
                        assert_eq!(m.get(&1).unwrap(), Some(k.to_string()));
                        assert_eq!(m.get(&2).unwrap(), Some("x".into()));
                    }
                    if k % 11 == 0 {
                        w.set_current_namespace((k % 4) as u32);
                        assert_eq!(w.get().unwrap(), Some(k + 1));
                    }
                }
            }
            let expect = |f: fn(&u64) -> bool| (0..KEYS).filter(f).collect::<BTreeSet<u64>>();
            assert_eq!(
                seen.remove("value").unwrap_or_default(),
                expect(|_| true),
                "p={p} -> {new_p}"
            );
            assert_eq!(
                seen.remove("list").unwrap_or_default(),
                expect(|k| k % 3 == 0)
            );
            assert_eq!(
                seen.remove("map").unwrap_or_default(),
                expect(|k| k % 5 == 0)
            );
            assert_eq!(
                seen.remove("windowed").unwrap_or_default(),
                expect(|k| k % 11 == 0)
            );
        }
    }
}

const ISOLATION_KEYS: u64 = 3_000;

fn isolation_fill<B: KeyedStateBackend<u64>>(b: &B) {
    let v = b
        .value_state::<VoidNamespace, u64>(&ValueStateDescriptor::new("v"))
        .unwrap();
    let l = b
        .list_state::<VoidNamespace, u64>(&ListStateDescriptor::new("l"))
        .unwrap();
    let m = b
        .map_state::<VoidNamespace, u8, u64>(&MapStateDescriptor::new("m"))
        .unwrap();
    for k in 0..ISOLATION_KEYS {
        b.set_current_key(k).unwrap();
        v.update(k).unwrap();
        if k % 2 == 0 {
            l.add(k).unwrap();
        }
        if k % 3 == 0 {
            m.put(0, k).unwrap();
        }
    }
}

fn isolation_mutate<B: KeyedStateBackend<u64>>(b: &B) {
    let v = b
        .value_state::<VoidNamespace, u64>(&ValueStateDescriptor::new("v"))
        .unwrap();
    let l = b
        .list_state::<VoidNamespace, u64>(&ListStateDescriptor::new("l"))
        .unwrap();
    let m = b
        .map_state::<VoidNamespace, u8, u64>(&MapStateDescriptor::new("m"))
        .unwrap();
    for k in 0..ISOLATION_KEYS + 500 {
        b.set_current_key(k).unwrap();
        if k % 10 == 0 {
            v.clear().unwrap();
            l.clear().unwrap();
            m.clear().unwrap();
        } else {
            v.update(k + 1_000_000).unwrap();
            l.add(7).unwrap();
            m.put(1, 1).unwrap();
            m.remove(&0).unwrap();
        }
    }
}

fn isolation_check_snapshot<B: KeyedStateBackend<u64>>(b: &B) {
    let v = b
        .value_state::<VoidNamespace, u64>(&ValueStateDescriptor::new("v"))
        .unwrap();
    let l = b
        .list_state::<VoidNamespace, u64>(&ListStateDescriptor::new("l"))
        .unwrap();
    let m = b
        .map_state::<VoidNamespace, u8, u64>(&MapStateDescriptor::new("m"))
        .unwrap();
    for k in 0..ISOLATION_KEYS + 500 {
        b.set_current_key(k).unwrap();
        if k >= ISOLATION_KEYS {
            assert_eq!(
                v.value().unwrap(),
                None,
                "key {k} was written after the snapshot point"
            );
            continue;
        }
        assert_eq!(v.value().unwrap(), Some(k), "key {k}");
        assert_eq!(
            l.get().unwrap(),
            if k % 2 == 0 { vec![k] } else { vec![] },
            "key {k}"
        );
        let mut e = m.entries().unwrap();
        e.sort();
        assert_eq!(e, if k % 3 == 0 { vec![(0, k)] } else { vec![] }, "key {k}");
    }
}

fn isolation_check_live<B: KeyedStateBackend<u64>>(b: &B) {
    let v = b
        .value_state::<VoidNamespace, u64>(&ValueStateDescriptor::new("v"))
        .unwrap();
    for k in 0..ISOLATION_KEYS + 500 {
        b.set_current_key(k).unwrap();
        let expected = if k % 10 == 0 {
            None
        } else {
            Some(k + 1_000_000)
        };
        assert_eq!(v.value().unwrap(), expected, "live key {k}");
    }
}

/// Writes made after the synchronous part (before the asynchronous part runs) are not in
/// the snapshot, and the live state has them.
pub fn snapshot_isolated_from_later_writes<F: BackendFactory>(factory: &F) {
    let (_dir, storage) = temp_storage();
    let b = factory.create(config::<u64>(128, all(128))).unwrap();
    isolation_fill(&b);
    let id = crate::next_checkpoint_id();
    let snapshot = b.snapshot(id).unwrap();
    isolation_mutate(&b);
    let h = snapshot.write(&storage, "iso").unwrap();
    isolation_check_live(&b);
    let restored = factory
        .restore(config::<u64>(128, all(128)), &storage, &[h])
        .unwrap();
    isolation_check_snapshot(&restored);
}

/// The asynchronous part runs on another thread while this thread keeps writing; the
/// snapshot still holds exactly the state at the snapshot point.
pub fn snapshot_isolated_from_concurrent_writer<F: BackendFactory>(factory: &F) {
    let (_dir, storage) = temp_storage();
    for round in 0..3 {
        let b = factory.create(config::<u64>(128, all(128))).unwrap();
        isolation_fill(&b);
        let id = crate::next_checkpoint_id();
        let snapshot = b.snapshot(id).unwrap();
        let path = format!("iso-concurrent-{round}");
        let h = std::thread::scope(|s| {
            let writer = s.spawn(|| snapshot.write(&storage, &path));
            isolation_mutate(&b);
            writer.join().expect("snapshot thread")
        })
        .unwrap();
        isolation_check_live(&b);
        let restored = factory
            .restore(config::<u64>(128, all(128)), &storage, &[h])
            .unwrap();
        isolation_check_snapshot(&restored);
    }
}

fn corrupt_fixture<F: BackendFactory>(
    factory: &F,
    storage: &dyn CheckpointStorage,
) -> KeyedStateHandle {
    let b = factory.create(config::<u64>(8, all(8))).unwrap();
    let v = b
        .value_state::<VoidNamespace, u64>(&ValueStateDescriptor::new("v"))
        .unwrap();
    let l = b
        .list_state::<VoidNamespace, String>(&ListStateDescriptor::new("l"))
        .unwrap();
    for k in 0..24u64 {
        b.set_current_key(k).unwrap();
        v.update(k * 1000).unwrap();
        if k % 4 == 0 {
            l.add_all(vec!["a".into(), k.to_string()]).unwrap();
        }
    }
    snapshot_to(&b, storage, "pristine")
}

/// Restores from `handle`; returns whether any error (at restore or on registering and
/// reading the states) surfaced. A wrong value is a test failure.
fn restore_fails<F: BackendFactory>(
    factory: &F,
    storage: &dyn CheckpointStorage,
    handle: &KeyedStateHandle,
) -> bool {
    let b = match factory.restore(
        config::<u64>(8, all(8)),
        storage,
        std::slice::from_ref(handle),
    ) {
        Err(_) => return true,
        Ok(b) => b,
    };
    let (Ok(v), Ok(l)) = (
        b.value_state::<VoidNamespace, u64>(&ValueStateDescriptor::new("v")),
        b.list_state::<VoidNamespace, String>(&ListStateDescriptor::new("l")),
    ) else {
        return true;
    };
    for k in 0..24u64 {
        b.set_current_key(k).unwrap();
        match (v.value(), l.get()) {
            (Ok(value), Ok(list)) => {
                assert_eq!(
                    value,
                    Some(k * 1000),
                    "corruption produced a wrong value for key {k}"
                );
                let expected: Vec<String> = if k % 4 == 0 {
                    vec!["a".into(), k.to_string()]
                } else {
                    vec![]
                };
                assert_eq!(
                    list, expected,
                    "corruption produced a wrong list for key {k}"
                );
            }
            _ => return true,
        }
    }
    false
}

/// Every single flipped byte and every truncation of a snapshot file is reported as an
/// error, never loaded as state, never a panic.
pub fn corrupt_snapshots_are_rejected<F: BackendFactory>(factory: &F) {
    let (_dir, storage) = temp_storage();
    let pristine = corrupt_fixture(factory, &storage);
    assert!(
        !restore_fails(factory, &storage, &pristine),
        "the pristine snapshot must restore"
    );
    let bytes = storage.get(&pristine.path).unwrap();
    for i in 0..bytes.len() {
        let mut flipped = bytes.to_vec();
        flipped[i] ^= 0x5a;
        storage.put("corrupt", Bytes::from(flipped)).unwrap();
        let h = KeyedStateHandle {
            path: "corrupt".into(),
            ..pristine.clone()
        };
        assert!(
            restore_fails(factory, &storage, &h),
            "byte {i} of {} flipped went undetected",
            bytes.len()
        );
    }
    for len in (0..bytes.len()).step_by(3) {
        storage.put("truncated", bytes.slice(..len)).unwrap();
        let h = KeyedStateHandle {
            path: "truncated".into(),
            size: len as u64,
            ..pristine.clone()
        };
        assert!(
            restore_fails(factory, &storage, &h),
            "truncation to {len} bytes went undetected"
        );
    }
    let missing = KeyedStateHandle {
        path: "does-not-exist".into(),
        ..pristine.clone()
    };
    assert!(matches!(
        factory.restore(config::<u64>(8, all(8)), &storage, &[missing]),
        Err(StateError::Storage(_))
    ));
}

fn err<T>(r: Result<T, StateError>) -> StateError {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => e,
    }
}

/// Invalid configuration and misuse are typed errors with the offending name or value.
pub fn bad_input_is_typed_errors<F: BackendFactory>(factory: &F) {
    let (_dir, storage) = temp_storage();
    for bad in [0u32, 32769, u32::MAX] {
        let e = err(factory.create(config::<u64>(bad, KeyGroupRange::empty())));
        assert!(
            matches!(e, StateError::InvalidMaxParallelism(m) if m == bad),
            "{e}"
        );
    }
    let e = err(factory.create(config::<u64>(64, KeyGroupRange::new(0, 64).unwrap())));
    assert!(matches!(e, StateError::InvalidArgument(_)), "{e}");

    let half = KeyGroupRange::new(0, 63).unwrap();
    let b = factory.create(config::<u64>(128, half)).unwrap();
    let v = b
        .value_state::<VoidNamespace, u64>(&ValueStateDescriptor::new("v"))
        .unwrap();
    assert!(matches!(err(v.value()), StateError::NoCurrentKey { state } if state == "v"));
    let foreign = (0u64..)
        .find(|k| !half.contains(b.key_group_of(k).unwrap()))
        .unwrap();
    let e = err(b.set_current_key(foreign));
    assert!(
        matches!(e, StateError::KeyGroupOutOfRange { key_group, range } if key_group >= 64 && range == half),
        "{e}"
    );
    assert!(e.to_string().contains("key group"), "{e}");

    let e = err(b.keys::<VoidNamespace>("nope", &VoidNamespace));
    assert!(
        matches!(&e, StateError::UnknownState(n) if n == "nope"),
        "{e}"
    );
    let e = err(b.list_state::<VoidNamespace, u64>(&ListStateDescriptor::new("v")));
    assert!(
        matches!(&e, StateError::KindMismatch { name, .. } if name == "v"),
        "same name, another kind: {e}"
    );
    assert!(e.to_string().contains("`v`"), "{e}");
    let e = err(b.value_state::<VoidNamespace, String>(&ValueStateDescriptor::new("v")));
    assert!(
        matches!(&e, StateError::IncompatibleSerializer { state, .. } if state == "v"),
        "same name, another value type: {e}"
    );
    let e = err(b.value_state::<u32, u64>(&ValueStateDescriptor::new("v")));
    assert!(
        matches!(&e, StateError::TypeMismatch { name, .. } if name == "v"),
        "{e}"
    );
    let e = err(b.value_state::<VoidNamespace, u64>(&ValueStateDescriptor::new("")));
    assert!(matches!(e, StateError::InvalidStateName { .. }), "{e}");

    // Restores that cannot be done.
    let full = factory.create(config::<u64>(128, all(128))).unwrap();
    fill_all_kinds(&full, 0..50);
    let h = snapshot_to(&full, &storage, "bad-input");
    let e = err(factory.restore(
        config::<u64>(256, all(256)),
        &storage,
        std::slice::from_ref(&h),
    ));
    assert!(
        matches!(
            e,
            StateError::MaxParallelismMismatch {
                snapshot: 128,
                backend: 256,
                ..
            }
        ),
        "{e}"
    );
    let e = err(factory.restore(
        config::<String>(128, all(128)),
        &storage,
        std::slice::from_ref(&h),
    ));
    assert!(
        matches!(e, StateError::IncompatibleSerializer { what: "key", .. }),
        "{e}"
    );
    let e = err(factory.restore(
        config::<u64>(128, all(128)),
        &storage,
        &[h.clone(), h.clone()],
    ));
    assert!(
        matches!(e, StateError::InvalidArgument(_)),
        "overlapping snapshots: {e}"
    );
    let restored = factory
        .restore(
            config::<u64>(128, all(128)),
            &storage,
            std::slice::from_ref(&h),
        )
        .unwrap();
    let e = err(restored.list_state::<u32, u64>(&ListStateDescriptor::new("value")));
    assert!(
        matches!(&e, StateError::KindMismatch { name, .. } if name == "value"),
        "{e}"
    );
    // The refused registration touched nothing: the state still restores intact.
    check_all_kinds(&restored, 0..50);
}

/// The four compatibility outcomes on restore: as is, after migration, with a
/// reconfigured serializer, and incompatible (a typed error naming the state, raised
/// before the state is touched; a later correct registration still finds it intact).
pub fn serializer_compatibility_on_restore<F: BackendFactory>(factory: &F) {
    let (_dir, storage) = temp_storage();
    let counter_v1 = ValueStateDescriptor::with_serializer("counter", Arc::new(CounterV1));
    let counter_v2 = ValueStateDescriptor::with_serializer("counter", Arc::new(CounterV2));
    let little =
        ValueStateDescriptor::with_serializer("endian", Arc::new(EndianU64 { little: true }));
    let big =
        ValueStateDescriptor::with_serializer("endian", Arc::new(EndianU64 { little: false }));
    let serde_v1 = ValueStateDescriptor::with_serializer(
        "serde",
        Arc::new(SerdeSerializer::<u64>::named("Count", 1)),
    );
    let serde_v2 = ValueStateDescriptor::with_serializer(
        "serde",
        Arc::new(SerdeSerializer::<u64>::named("Count", 2)),
    );

    let a = factory.create(config::<u64>(128, all(128))).unwrap();
    let (c, e, s) = (
        a.value_state::<VoidNamespace, u64>(&counter_v1).unwrap(),
        a.value_state::<VoidNamespace, u64>(&little).unwrap(),
        a.value_state::<VoidNamespace, u64>(&serde_v1).unwrap(),
    );
    for k in 0..64u64 {
        a.set_current_key(k).unwrap();
        c.update(k * 2).unwrap();
        e.update(k << 8).unwrap();
        s.update(k + 5).unwrap();
    }
    let h1 = snapshot_to(&a, &storage, "compat-1");

    let b = factory
        .restore(config::<u64>(128, all(128)), &storage, &[h1])
        .unwrap();
    let err_v = err(b.value_state::<VoidNamespace, u64>(&serde_v2));
    assert!(
        matches!(&err_v, StateError::IncompatibleSerializer { state, what: "value", .. } if state == "serde"),
        "{err_v}"
    );
    assert!(err_v.to_string().contains("serde"), "{err_v}");
    let c2 = b.value_state::<VoidNamespace, u64>(&counter_v2).unwrap(); // migration
    let e2 = b.value_state::<VoidNamespace, u64>(&big).unwrap(); // reconfigured
    let s2 = b.value_state::<VoidNamespace, u64>(&serde_v1).unwrap(); // as is, untouched by the failure
    for k in 0..64u64 {
        b.set_current_key(k).unwrap();
        assert_eq!(c2.value().unwrap(), Some(k * 2));
        assert_eq!(e2.value().unwrap(), Some(k << 8));
        assert_eq!(s2.value().unwrap(), Some(k + 5));
    }
    b.set_current_key(1).unwrap();
    c2.update(1 << 40).unwrap(); // only representable in the new format
    let h2 = snapshot_to(&b, &storage, "compat-2");

    let c = factory
        .restore(
            config::<u64>(128, all(128)),
            &storage,
            std::slice::from_ref(&h2),
        )
        .unwrap();
    let e = err(c.value_state::<VoidNamespace, u64>(&counter_v1));
    assert!(
        matches!(&e, StateError::IncompatibleSerializer { state, .. } if state == "counter"),
        "{e}"
    );
    let c3 = c.value_state::<VoidNamespace, u64>(&counter_v2).unwrap();
    let e3 = c.value_state::<VoidNamespace, u64>(&big).unwrap();
    c.set_current_key(1).unwrap();
    assert_eq!(c3.value().unwrap(), Some(1 << 40));
    c.set_current_key(2).unwrap();
    assert_eq!(c3.value().unwrap(), Some(4));
    assert_eq!(e3.value().unwrap(), Some(2 << 8));
}

/// A restored state that is never registered is carried into later snapshots unchanged.
pub fn unregistered_restored_state_is_kept<F: BackendFactory>(factory: &F) {
    let (_dir, storage) = temp_storage();
    let a = factory.create(config::<u64>(128, all(128))).unwrap();
    fill_all_kinds(&a, 0..200);
    let h1 = snapshot_to(&a, &storage, "keep-1");
    let b = factory
        .restore(config::<u64>(128, all(128)), &storage, &[h1])
        .unwrap();
    let (vd, ..) = descs();
    let v = b.value_state::<u32, u64>(&vd).unwrap();
    b.set_current_key(1).unwrap();
    v.set_current_namespace(0);
    v.update(11).unwrap(); // key 1 ns 0 is written by fill_all_kinds with 10
    v.update(10).unwrap();
    assert_eq!(b.state_names().len(), 5);
    let h2 = snapshot_to(&b, &storage, "keep-2");
    let c = factory
        .restore(config::<u64>(128, all(128)), &storage, &[h2])
        .unwrap();
    check_all_kinds(&c, 0..200);
}

/// Asking twice with the same descriptor yields the same state.
pub fn same_descriptor_same_state<F: BackendFactory>(factory: &F) {
    let b = factory.create(config::<u64>(128, all(128))).unwrap();
    let d = ValueStateDescriptor::<u64>::new("v");
    let s1 = b.value_state::<VoidNamespace, u64>(&d).unwrap();
    let s2 = b.value_state::<VoidNamespace, u64>(&d).unwrap();
    assert!(std::ptr::addr_eq(
        std::rc::Rc::as_ptr(&s1),
        std::rc::Rc::as_ptr(&s2)
    ));
    b.set_current_key(3).unwrap();
    s1.update(9).unwrap();
    assert_eq!(s2.value().unwrap(), Some(9));
    assert_eq!(b.current_key(), Some(3));
    assert_eq!(b.current_key_group(), Some(b.key_group_of(&3).unwrap()));
}

/// `get_serialized`/`set_serialized` speak the canonical payload encoding.
pub fn serialized_value_access<F: BackendFactory>(factory: &F) {
    let b = factory.create(config::<u64>(128, all(128))).unwrap();
    let v = b
        .value_state::<VoidNamespace, u64>(&ValueStateDescriptor::new("v"))
        .unwrap();
    let l = b
        .list_state::<VoidNamespace, String>(&ListStateDescriptor::new("l"))
        .unwrap();
    b.set_current_key(5).unwrap();
    assert_eq!(v.get_serialized().unwrap(), None);
    v.update(300).unwrap();
    let mut expected = Vec::new();
    SerdeSerializer::<u64>::new()
        .serialize_into(&300, &mut expected)
        .unwrap();
    assert_eq!(v.get_serialized().unwrap(), Some(expected));
    let mut seven = Vec::new();
    SerdeSerializer::<u64>::new()
        .serialize_into(&7, &mut seven)
        .unwrap();
    v.set_serialized(&seven).unwrap();
    assert_eq!(v.value().unwrap(), Some(7));
    assert!(v.set_serialized(&[0xff; 11]).is_err());

    l.add_all(vec!["a".into(), "bc".into()]).unwrap();
    let payload = l.get_serialized().unwrap().unwrap();
    // varint count 2, then [len 2: postcard "a"], [len 3: postcard "bc"]
    assert_eq!(payload, vec![2, 2, 1, b'a', 3, 2, b'b', b'c']);
    l.clear().unwrap();
    l.set_serialized(&payload).unwrap();
    assert_eq!(l.get().unwrap(), vec!["a".to_string(), "bc".to_string()]);
}

/// Session-window style merging of list, reducing and aggregating state.
pub fn merge_namespaces<F: BackendFactory>(factory: &F) {
    let b = factory.create(config::<u64>(128, all(128))).unwrap();
    let (_, _, _, rd, ad) = descs();
    let l = b
        .list_state::<u32, u64>(&ListStateDescriptor::new("l"))
        .unwrap();
    let r = b.reducing_state::<u32, u64>(&rd).unwrap();
    let a = b.aggregating_state::<u32, u64, u64, String>(&ad).unwrap();
    for key in [1u64, 2] {
        b.set_current_key(key).unwrap();
        for (ns, x) in [(10u32, 1u64), (20, 2), (30, 3)] {
            l.set_current_namespace(ns);
            r.set_current_namespace(ns);
            a.set_current_namespace(ns);
            l.add(x * key).unwrap();
            r.add(x * key).unwrap();
            a.add(x * key).unwrap();
        }
    }
    b.set_current_key(1).unwrap();
    l.merge_namespaces(&10, &[20, 30, 40]).unwrap();
    r.merge_namespaces(&10, &[20, 30]).unwrap();
    a.merge_namespaces(&10, &[30, 20]).unwrap();
    l.set_current_namespace(10);
    r.set_current_namespace(10);
    a.set_current_namespace(10);
    assert_eq!(l.get().unwrap(), vec![1, 2, 3]);
    assert_eq!(r.get().unwrap(), Some(3));
    assert_eq!(a.get().unwrap(), Some("sum=6".into()));
    for ns in [20u32, 30] {
        l.set_current_namespace(ns);
        r.set_current_namespace(ns);
        a.set_current_namespace(ns);
        assert!(l.get().unwrap().is_empty());
        assert_eq!(r.get().unwrap(), None);
        assert_eq!(a.get().unwrap(), None);
    }
    // Key 2 is untouched.
    b.set_current_key(2).unwrap();
    l.set_current_namespace(20);
    assert_eq!(l.get().unwrap(), vec![4]);
}

/// Directory of the committed format fixtures.
///
/// Found at run time from `CARGO_MANIFEST_DIR` (cargo sets it for every test it runs;
/// each crate is a sibling of this one under `crates/`): a path compiled in would be
/// that of whichever checkout built the cached artifact, which CI, running a clean
/// clone elsewhere on the same target directory, is not.
pub fn golden_dir() -> std::path::PathBuf {
    let dir = match std::env::var_os("CARGO_MANIFEST_DIR") {
        Some(d) => std::path::PathBuf::from(d).join("../flowstate-conformance/golden"),
        None => std::path::PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/golden")),
    };
    dir.canonicalize().unwrap_or(dir)
}

/// Reads the committed version-1 canonical keyed snapshot (every kind, two namespaces,
/// 40 keys, max parallelism 16) and checks every value, whole and rescaled to two
/// instances. With `FLOWSTATE_BLESS=1` the fixture is first rewritten by `factory`;
/// only do that for a new format version, never to make a failing test pass.
pub fn reads_golden_keyed_snapshot<F: BackendFactory>(factory: &F) {
    let storage = flowstate_storage::ObjectCheckpointStorage::local(golden_dir()).unwrap();
    let path = "v1/keyed-all-kinds.kgs";
    if std::env::var_os("FLOWSTATE_BLESS").is_some() {
        let b = factory.create(config::<u64>(16, all(16))).unwrap();
        fill_all_kinds(&b, 0..40);
        snapshot_to(&b, &storage, path);
    }
    let handle = KeyedStateHandle::canonical(path, all(16), 16, storage.size(path).unwrap());
    let b = factory
        .restore(
            config::<u64>(16, all(16)),
            &storage,
            std::slice::from_ref(&handle),
        )
        .unwrap();
    check_all_kinds(&b, 0..40);
    for i in 0..2 {
        let range = key_group_range_for_operator(16, 2, i).unwrap();
        let b = factory
            .restore(
                config::<u64>(16, range),
                &storage,
                std::slice::from_ref(&handle),
            )
            .unwrap();
        let owned: Vec<u64> = (0..40)
            .filter(|k| range.contains(b.key_group_of(k).unwrap()))
            .collect();
        check_all_kinds(&b, owned.into_iter());
    }
}

/// Five checkpoints with changes in between, registered with a shared-file registry that
/// retains two: every shared file no retained checkpoint refers to is deleted, every
/// referenced file exists, and each retained checkpoint restores exactly.
pub fn shared_registry_retention<F: BackendFactory>(factory: &F) {
    use flowstate_core::registry::SharedStateRegistry;
    let (_dir, storage) = temp_storage();
    let b = factory.create(config::<u64>(128, all(128))).unwrap();
    let v = b
        .value_state::<VoidNamespace, u64>(&ValueStateDescriptor::new("v"))
        .unwrap();
    let mut registry = SharedStateRegistry::new();
    let mut retained: Vec<(KeyedStateHandle, BTreeMap<u64, u64>)> = Vec::new();
    let mut model = BTreeMap::new();
    for round in 0..5u64 {
        // Each round changes a fifth of the keys and adds new ones.
        for k in (round * 400)..(round * 400 + 2_000) {
            b.set_current_key(k).unwrap();
            v.update(k * 100 + round).unwrap();
            model.insert(k, k * 100 + round);
        }
        let h = snapshot_to(&b, &storage, &format!("chk-{round}/keyed-0"));
        registry.register(round, std::slice::from_ref(&h));
        retained.push((h, model.clone()));
        let deleted = registry.retain_latest(2, &storage).unwrap();
        while retained.len() > 2 {
            let (old, _) = retained.remove(0);
            storage.delete(&old.path).unwrap();
        }
        let referenced = registry.referenced();
        for (h, _) in &retained {
            for f in &h.shared_files {
                assert!(referenced.contains(&f.path));
                assert!(
                    storage.size(&f.path).is_ok(),
                    "retained checkpoint's file {} is missing",
                    f.path
                );
            }
        }
        for path in &deleted {
            assert!(!referenced.contains(path));
            assert!(storage.size(path).is_err(), "{path} was not deleted");
        }
        for path in storage.list("shared").unwrap() {
            assert!(
                referenced.contains(&path),
                "{path} is referenced by no retained checkpoint"
            );
        }
    }
    assert_eq!(registry.checkpoints(), vec![3, 4]);
    for (h, expected) in &retained {
        let r = factory
            .restore(
                config::<u64>(128, all(128)),
                &storage,
                std::slice::from_ref(h),
            )
            .unwrap();
        let v = r
            .value_state::<VoidNamespace, u64>(&ValueStateDescriptor::new("v"))
            .unwrap();
        let mut keys = r.keys("v", &VoidNamespace).unwrap();
        keys.sort();
        assert_eq!(keys, expected.keys().copied().collect::<Vec<_>>());
        for (k, val) in expected {
            r.set_current_key(*k).unwrap();
            assert_eq!(v.value().unwrap(), Some(*val));
        }
    }
}
