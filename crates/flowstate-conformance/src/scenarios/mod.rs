//! Deterministic scenarios: round trips, rescaling, snapshot isolation, corruption,
//! serializer compatibility and bad input; the shared fixtures (every state kind,
//! filled and checked) here, the scenarios by concern in the modules below.

mod golden;
mod isolation;
mod rejection;
mod round_trip;
mod state_api;

pub use golden::{golden_dir, reads_golden_keyed_snapshot, shared_registry_retention};
pub use isolation::{
    snapshot_isolated_from_concurrent_writer, snapshot_isolated_from_later_writes,
};
pub use rejection::{bad_input_is_typed_errors, corrupt_snapshots_are_rejected};
pub use round_trip::{rescaling_every_key_once, snapshot_round_trip_all_kinds};
pub use state_api::{
    fixed_integer_serializer_on_restore, map_scans_of_every_size, merge_namespaces,
    same_descriptor_same_state, serialized_value_access, serializer_compatibility_on_restore,
    unregistered_restored_state_is_kept,
};

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use flowstate_core::backend::KeyedStateBackend;
use flowstate_core::descriptor::{
    AggregateFunction, AggregatingStateDescriptor, ListStateDescriptor, MapStateDescriptor,
    ReducingStateDescriptor, ValueStateDescriptor,
};
use flowstate_core::error::StateError;
use flowstate_core::keygroup::{KeyGroupRange, key_group_range_for_operator};
use flowstate_core::serializer::{FixedIntegerSerializer, SerdeSerializer, TypeSerializer};
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

/// The error of `r`, which must be one.
fn err<T>(r: Result<T, StateError>) -> StateError {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => e,
    }
}
