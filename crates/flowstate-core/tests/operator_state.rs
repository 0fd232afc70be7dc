//! Operator state: round trips and redistribution on restore at every parallelism.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed expectation is a failure

use std::collections::BTreeMap;

use bytes::Bytes;
use flowstate_core::StateError;
use flowstate_core::descriptor::{ListStateDescriptor, MapStateDescriptor};
use flowstate_core::operator::{OperatorStateHandle, OperatorStateStore, even_split};
use flowstate_core::state::{ListState, MapState};
use flowstate_core::storage::CheckpointStorage;
use flowstate_storage::ObjectCheckpointStorage;

fn storage() -> (tempfile::TempDir, ObjectCheckpointStorage) {
    let dir = tempfile::tempdir().unwrap();
    let s = ObjectCheckpointStorage::local(dir.path()).unwrap();
    (dir, s)
}

fn split() -> ListStateDescriptor<String> {
    ListStateDescriptor::new("offsets")
}
fn union() -> ListStateDescriptor<u64> {
    ListStateDescriptor::new("watermarks")
}
fn rules() -> MapStateDescriptor<String, u32> {
    MapStateDescriptor::new("rules")
}

/// Old instance `i` of `p`: split list `["i{i}-e{j}"]` of `i % 3 + 1` elements, union
/// list `[i * 100 + j]` of `i % 2 + 1` elements, identical broadcast map.
fn write_old(storage: &dyn CheckpointStorage, p: u32) -> Vec<OperatorStateHandle> {
    (0..p)
        .map(|i| {
            let store = OperatorStateStore::new(i);
            let s = store.list_state(&split()).unwrap();
            let u = store.union_list_state(&union()).unwrap();
            let b = store.broadcast_state(&rules()).unwrap();
            for j in 0..(i % 3 + 1) {
                s.add(format!("i{i}-e{j}")).unwrap();
            }
            for j in 0..(i % 2 + 1) {
                u.add((i * 100 + j) as u64).unwrap();
            }
            b.put("max-amount".into(), 500).unwrap();
            b.put("min-age".into(), 18).unwrap();
            store
                .snapshot()
                .unwrap()
                .write(storage, &format!("ops/p{p}/i{i}"))
                .unwrap()
        })
        .collect()
}

#[test]
fn redistribution_for_every_parallelism_pair() {
    let (_d, storage) = storage();
    for p in 1..=8u32 {
        let handles = write_old(&storage, p);
        let all_split: Vec<String> = (0..p)
            .flat_map(|i| (0..(i % 3 + 1)).map(move |j| format!("i{i}-e{j}")))
            .collect();
        let all_union: Vec<u64> = (0..p)
            .flat_map(|i| (0..(i % 2 + 1)).map(move |j| (i * 100 + j) as u64))
            .collect();
        for new_p in 1..=8u32 {
            let mut concatenated = Vec::new();
            for j in 0..new_p {
                // Handles in any order: redistribution follows subtask indices.
                let mut shuffled = handles.clone();
                shuffled.reverse();
                let store = OperatorStateStore::restore(&storage, &shuffled, j, new_p).unwrap();
                let part = store.list_state(&split()).unwrap().get().unwrap();
                let expected = &all_split[even_split(all_split.len(), new_p as usize, j as usize)];
                assert_eq!(part, expected, "split p={p} -> {new_p}, instance {j}");
                concatenated.extend(part);
                assert_eq!(
                    store.union_list_state(&union()).unwrap().get().unwrap(),
                    all_union,
                    "union p={p} -> {new_p}"
                );
                let mut b = store.broadcast_state(&rules()).unwrap().entries().unwrap();
                b.sort();
                assert_eq!(
                    b,
                    vec![("max-amount".to_string(), 500), ("min-age".to_string(), 18)]
                );
            }
            assert_eq!(
                concatenated, all_split,
                "every element exactly once, in order: p={p} -> {new_p}"
            );
        }
    }
}

#[test]
fn spec_example_one_to_two() {
    let (_d, storage) = storage();
    let store = OperatorStateStore::new(0);
    store
        .list_state(&split())
        .unwrap()
        .update(vec!["e1".into(), "e2".into()])
        .unwrap();
    let h = store.snapshot().unwrap().write(&storage, "one").unwrap();
    let got: Vec<Vec<String>> = (0..2)
        .map(|j| {
            OperatorStateStore::restore(&storage, std::slice::from_ref(&h), j, 2)
                .unwrap()
                .list_state(&split())
                .unwrap()
                .get()
                .unwrap()
        })
        .collect();
    assert_eq!(got, vec![vec!["e1".to_string()], vec!["e2".to_string()]]);
}

#[test]
fn unregistered_state_is_carried_and_modes_are_checked() {
    let (_d, storage) = storage();
    let h = write_old(&storage, 1);
    let store = OperatorStateStore::restore(&storage, &h, 0, 1).unwrap();
    assert_eq!(store.state_names(), vec!["offsets", "rules", "watermarks"]);
    let e = store
        .union_list_state(&ListStateDescriptor::<String>::new("offsets"))
        .err()
        .unwrap();
    assert!(
        matches!(&e, StateError::TypeMismatch { name, .. } if name == "offsets"),
        "{e}"
    );
    let e = store
        .list_state(&ListStateDescriptor::<String>::new(""))
        .err()
        .unwrap();
    assert!(matches!(e, StateError::InvalidStateName { .. }));
    // Register only one state, snapshot again: the others survive.
    store
        .list_state(&split())
        .unwrap()
        .add("new".into())
        .unwrap();
    let h2 = store.snapshot().unwrap().write(&storage, "again").unwrap();
    let again = OperatorStateStore::restore(&storage, &[h2], 0, 1).unwrap();
    assert_eq!(
        again.list_state(&split()).unwrap().get().unwrap(),
        vec!["i0-e0".to_string(), "new".into()]
    );
    assert_eq!(
        again.union_list_state(&union()).unwrap().get().unwrap(),
        vec![0]
    );
    assert_eq!(
        again
            .broadcast_state(&rules())
            .unwrap()
            .get(&"min-age".into())
            .unwrap(),
        Some(18)
    );
    // An incompatible element type is refused, naming the state.
    let e = again
        .broadcast_state(&MapStateDescriptor::<String, String>::new("rules"))
        .err()
        .unwrap();
    assert!(e.to_string().contains("rules"), "{e}");
}

#[test]
fn corrupt_operator_state_is_rejected() {
    let (_d, storage) = storage();
    let h = write_old(&storage, 1).remove(0);
    let bytes = storage.get(&h.path).unwrap();
    for i in 0..bytes.len() {
        let mut b = bytes.to_vec();
        b[i] ^= 0x21;
        storage.put("bad", Bytes::from(b)).unwrap();
        let bad = OperatorStateHandle {
            path: "bad".into(),
            ..h.clone()
        };
        assert!(
            OperatorStateStore::restore(&storage, &[bad], 0, 1).is_err(),
            "flipped byte {i} undetected"
        );
    }
    for len in 0..bytes.len() {
        storage.put("short", bytes.slice(..len)).unwrap();
        let bad = OperatorStateHandle {
            path: "short".into(),
            ..h.clone()
        };
        assert!(
            OperatorStateStore::restore(&storage, &[bad], 0, 1).is_err(),
            "truncation {len} undetected"
        );
    }
    assert!(matches!(
        OperatorStateStore::restore(&storage, std::slice::from_ref(&h), 2, 2),
        Err(StateError::InvalidOperatorIndex { .. })
    ));
    assert!(OperatorStateStore::restore(&storage, &[h.clone(), h.clone()], 0, 1).is_err());
}

#[test]
fn broadcast_copies_are_identical_bytes() {
    let (_d, storage) = storage();
    let handles = write_old(&storage, 3);
    let snapshots: BTreeMap<u32, Vec<(String, u32)>> = (0..3)
        .map(|j| {
            let s = OperatorStateStore::restore(&storage, &handles, j, 3).unwrap();
            let mut e = s.broadcast_state(&rules()).unwrap().entries().unwrap();
            e.sort();
            (j, e)
        })
        .collect();
    assert!(snapshots.values().all(|e| e == &snapshots[&0]));
}

/// Operator list, union and broadcast state evolve by the same rules as keyed state:
/// stored with version-1 types, restored with version-2 types (a field added with a
/// default, a widened number), every value migrated; a narrowing is refused first,
/// with the field path, and leaves the state to the later registration.
#[test]
fn operator_state_values_evolve() {
    use serde::{Deserialize, Serialize};
    #[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
    struct OffsetV1 {
        file: String,
        pos: u32,
    }
    #[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
    struct OffsetV2 {
        file: String,
        pos: u64,
        #[serde(default)]
        epoch: Option<u32>,
    }
    #[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
    struct OffsetNarrow {
        file: String,
        pos: u16,
    }
    let (_d, storage) = storage();
    let store = OperatorStateStore::new(0);
    let v1 = |n: &str| ListStateDescriptor::<OffsetV1>::new(n);
    let rules_v1 = MapStateDescriptor::<String, OffsetV1>::new("rules");
    let o1 = |i: u32| OffsetV1 {
        file: format!("f{i}"),
        pos: 70_000 + i,
    };
    let o2 = |i: u32| OffsetV2 {
        file: format!("f{i}"),
        pos: u64::from(70_000 + i),
        epoch: None,
    };
    store
        .list_state(&v1("split"))
        .unwrap()
        .update(vec![o1(1), o1(2)])
        .unwrap();
    store
        .union_list_state(&v1("union"))
        .unwrap()
        .update(vec![o1(3)])
        .unwrap();
    store
        .broadcast_state(&rules_v1)
        .unwrap()
        .put("r".into(), o1(4))
        .unwrap();
    let h = store
        .snapshot()
        .unwrap()
        .write(&storage, "ops/evolve")
        .unwrap();

    let restored = OperatorStateStore::restore(&storage, std::slice::from_ref(&h), 0, 1).unwrap();
    let e = restored
        .list_state(&ListStateDescriptor::<OffsetNarrow>::new("split"))
        .err()
        .expect("narrowing refused");
    assert!(
        matches!(&e, StateError::IncompatibleSerializer { path: Some(p), reason, .. }
            if p == "pos" && reason.contains("u32 cannot be read as u16")),
        "{e}"
    );
    let v2 = |n: &str| ListStateDescriptor::<OffsetV2>::new(n);
    assert_eq!(
        restored.list_state(&v2("split")).unwrap().get().unwrap(),
        vec![o2(1), o2(2)]
    );
    assert_eq!(
        restored
            .union_list_state(&v2("union"))
            .unwrap()
            .get()
            .unwrap(),
        vec![o2(3)]
    );
    let rules_v2 = MapStateDescriptor::<String, OffsetV2>::new("rules");
    assert_eq!(
        restored
            .broadcast_state(&rules_v2)
            .unwrap()
            .get(&"r".to_string())
            .unwrap(),
        Some(o2(4))
    );
}
