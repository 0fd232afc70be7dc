//! Committed version-1 fixtures of the operator-state and raw keyed-state formats must
//! keep reading back exactly. (The keyed canonical fixture is read by every backend
//! through `reads_golden_keyed_snapshot`.) Rewrite only for a new format version:
//! `FLOWSTATE_BLESS=1 cargo test -p flowstate-conformance --test golden_formats`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed expectation is a failure

use flowstate_conformance::golden_dir;
use flowstate_core::descriptor::{ListStateDescriptor, MapStateDescriptor};
use flowstate_core::keygroup::KeyGroupRange;
use flowstate_core::operator::{OperatorStateHandle, OperatorStateStore};
use flowstate_core::raw::{RawKeyedStateOutput, read_raw_keyed_state};
use flowstate_core::snapshot::KeyedStateHandle;
use flowstate_core::state::{ListState, MapState};
use flowstate_core::storage::CheckpointStorage;
use flowstate_storage::ObjectCheckpointStorage;

fn bless() -> bool {
    std::env::var_os("FLOWSTATE_BLESS").is_some()
}

#[test]
fn operator_state_v1() {
    let storage = ObjectCheckpointStorage::local(golden_dir()).unwrap();
    let path = "v1/operator.ops";
    let split = ListStateDescriptor::<(String, u64)>::new("source-offsets");
    let union = ListStateDescriptor::<i64>::new("watermarks");
    let bcast = MapStateDescriptor::<String, Vec<u32>>::new("rules");
    if bless() {
        let s = OperatorStateStore::new(3);
        s.list_state(&split)
            .unwrap()
            .update(vec![("file-a".into(), 10), ("file-b".into(), 20)])
            .unwrap();
        s.union_list_state(&union)
            .unwrap()
            .update(vec![-5, 1_000_000])
            .unwrap();
        s.broadcast_state(&bcast)
            .unwrap()
            .put_all(vec![("r1".into(), vec![1, 2]), ("r2".into(), vec![])])
            .unwrap();
        s.snapshot().unwrap().write(&storage, path).unwrap();
    }
    let h = OperatorStateHandle {
        path: path.into(),
        subtask_index: 3,
        size: storage.size(path).unwrap(),
    };
    let s = OperatorStateStore::restore(&storage, &[h], 0, 1).unwrap();
    assert_eq!(
        s.list_state(&split).unwrap().get().unwrap(),
        vec![("file-a".to_string(), 10), ("file-b".to_string(), 20)]
    );
    assert_eq!(
        s.union_list_state(&union).unwrap().get().unwrap(),
        vec![-5, 1_000_000]
    );
    let mut rules = s.broadcast_state(&bcast).unwrap().entries().unwrap();
    rules.sort();
    assert_eq!(
        rules,
        vec![("r1".to_string(), vec![1, 2]), ("r2".to_string(), vec![])]
    );
}

#[test]
fn raw_keyed_state_v1() {
    let storage = ObjectCheckpointStorage::local(golden_dir()).unwrap();
    let path = "v1/raw.kgs";
    let range = KeyGroupRange::new(4, 11).unwrap();
    if bless() {
        let mut out = RawKeyedStateOutput::new(16, range).unwrap();
        for kg in [4u32, 7, 11] {
            out.key_group(kg)
                .unwrap()
                .extend_from_slice(format!("timer-heap-{kg}").as_bytes());
        }
        out.write(&storage, path).unwrap();
    }
    let h = KeyedStateHandle::canonical(path, range, 16, storage.size(path).unwrap());
    let got: Vec<(u32, String)> =
        read_raw_keyed_state(&storage, &[h], 16, KeyGroupRange::new(0, 7).unwrap())
            .unwrap()
            .into_iter()
            .map(|(kg, b)| (kg, String::from_utf8(b.to_vec()).unwrap()))
            .collect();
    assert_eq!(
        got,
        vec![
            (4, "timer-heap-4".to_string()),
            (7, "timer-heap-7".to_string())
        ]
    );
}
