//! Avro and protobuf state values across a restore with a changed schema, on the heap
//! backend and on RocksDB (canonical and incremental snapshots): every stored value
//! reads back under the new schema by that format's own rules, the next checkpoint
//! restores again, and a change the rules refuse leaves the state untouched.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use flowstate_conformance::{BackendFactory, config, snapshot_to, temp_storage};
use flowstate_core::backend::KeyedStateBackend;
use flowstate_core::descriptor::{ListStateDescriptor, MapStateDescriptor, ValueStateDescriptor};
use flowstate_core::error::StateError;
use flowstate_core::keygroup::KeyGroupRange;
use flowstate_core::serializer::{SerdeSerializer, TypeSerializer};
use flowstate_core::state::{StateValue, VoidNamespace};
use flowstate_heap::HeapBackendFactory;
use flowstate_rocksdb::{RocksDbOptions, SnapshotMode};
use flowstate_serializers::{AvroSerializer, ProstSerializer};
use serde::{Deserialize, Serialize};

const KEYS: u64 = 30;

fn all() -> KeyGroupRange {
    KeyGroupRange::new(0, 127).unwrap()
}

/// Stores `old(k)` for every key in a value, list and map state with serializer `s1`,
/// restores with `s2` and expects `new(k)`; then a checkpoint in the new format
/// restores again.
fn round_trip<F, A, B>(
    factory: &F,
    s1: Arc<dyn TypeSerializer<A>>,
    s2: Arc<dyn TypeSerializer<B>>,
    old: impl Fn(u64) -> A,
    new: impl Fn(u64) -> B,
) where
    F: BackendFactory,
    A: StateValue,
    B: StateValue + PartialEq + std::fmt::Debug,
{
    let (_dir, storage) = temp_storage();
    let a = factory.create(config::<u64>(128, all())).unwrap();
    let v = a
        .value_state::<VoidNamespace, A>(&ValueStateDescriptor::with_serializer("v", s1.clone()))
        .unwrap();
    let l = a
        .list_state::<VoidNamespace, A>(&ListStateDescriptor::with_serializer("l", s1.clone()))
        .unwrap();
    let m = a
        .map_state::<VoidNamespace, u32, A>(&MapStateDescriptor::with_serializers(
            "m",
            SerdeSerializer::<u32>::arc(),
            s1,
        ))
        .unwrap();
    for k in 0..KEYS {
        a.set_current_key(k).unwrap();
        v.update(old(k)).unwrap();
        l.add_all(vec![old(k), old(k + 100)]).unwrap();
        m.put(7, old(k + 200)).unwrap();
    }
    let mut handle = snapshot_to(&a, &storage, "sp-1");
    for round in 0..2 {
        let b = factory
            .restore(config::<u64>(128, all()), &storage, &[handle])
            .unwrap();
        let v = b
            .value_state::<VoidNamespace, B>(&ValueStateDescriptor::with_serializer(
                "v",
                s2.clone(),
            ))
            .unwrap();
        let l = b
            .list_state::<VoidNamespace, B>(&ListStateDescriptor::with_serializer("l", s2.clone()))
            .unwrap();
        let m = b
            .map_state::<VoidNamespace, u32, B>(&MapStateDescriptor::with_serializers(
                "m",
                SerdeSerializer::<u32>::arc(),
                s2.clone(),
            ))
            .unwrap();
        for k in 0..KEYS {
            b.set_current_key(k).unwrap();
            assert_eq!(v.value().unwrap(), Some(new(k)), "round {round}, key {k}");
            assert_eq!(l.get().unwrap(), vec![new(k), new(k + 100)]);
            assert_eq!(m.get(&7).unwrap(), Some(new(k + 200)));
        }
        handle = snapshot_to(&b, &storage, &format!("chk-{round}"));
    }
}

/// A refused change is a typed error naming the state; the old serializer then still
/// reads everything.
fn refused<F, A, C>(
    factory: &F,
    s1: Arc<dyn TypeSerializer<A>>,
    bad: Arc<dyn TypeSerializer<C>>,
    old: impl Fn(u64) -> A,
    message: &str,
) where
    F: BackendFactory,
    A: StateValue + PartialEq + std::fmt::Debug,
    C: StateValue,
{
    let (_dir, storage) = temp_storage();
    let a = factory.create(config::<u64>(128, all())).unwrap();
    let v = a
        .value_state::<VoidNamespace, A>(&ValueStateDescriptor::with_serializer("v", s1.clone()))
        .unwrap();
    for k in 0..KEYS {
        a.set_current_key(k).unwrap();
        v.update(old(k)).unwrap();
    }
    let h = snapshot_to(&a, &storage, "sp");
    let b = factory
        .restore(config::<u64>(128, all()), &storage, &[h])
        .unwrap();
    let e = b
        .value_state::<VoidNamespace, C>(&ValueStateDescriptor::with_serializer("v", bad))
        .err()
        .expect("refused");
    assert!(
        matches!(&e, StateError::IncompatibleSerializer { state, reason, .. }
            if state == "v" && reason.contains(message)),
        "{e}"
    );
    let v = b
        .value_state::<VoidNamespace, A>(&ValueStateDescriptor::with_serializer("v", s1))
        .unwrap();
    for k in 0..KEYS {
        b.set_current_key(k).unwrap();
        assert_eq!(v.value().unwrap(), Some(old(k)));
    }
}

// ---- Avro ----

const USER_V1: &str = r#"{"type":"record","name":"User","fields":[
    {"name":"id","type":"int"},
    {"name":"name","type":"string"},
    {"name":"legacy","type":"boolean"}]}"#;

const USER_V2: &str = r#"{"type":"record","name":"User","fields":[
    {"name":"email","type":"string","default":"none"},
    {"name":"id","type":"long"},
    {"name":"full_name","type":"string","aliases":["name"]},
    {"name":"score","type":["null","double"],"default":null}]}"#;

const USER_BAD: &str = r#"{"type":"record","name":"User","fields":[
    {"name":"id","type":"int"},
    {"name":"required","type":"string"}]}"#;

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
struct UserV1 {
    id: i32,
    name: String,
    legacy: bool,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
struct UserV2 {
    email: String,
    id: i64,
    full_name: String,
    score: Option<f64>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
struct UserBad {
    id: i32,
    required: String,
}

fn user_v1(k: u64) -> UserV1 {
    UserV1 {
        id: k as i32 - 10,
        name: format!("user {k}"),
        legacy: k.is_multiple_of(2),
    }
}

fn user_v2(k: u64) -> UserV2 {
    UserV2 {
        email: "none".into(),
        id: k as i64 - 10,
        full_name: format!("user {k}"),
        score: None,
    }
}

fn avro<F: BackendFactory>(factory: &F) {
    let v1: Arc<dyn TypeSerializer<UserV1>> = Arc::new(AvroSerializer::new(USER_V1).unwrap());
    let v2: Arc<dyn TypeSerializer<UserV2>> = Arc::new(AvroSerializer::new(USER_V2).unwrap());
    let bad: Arc<dyn TypeSerializer<UserBad>> = Arc::new(AvroSerializer::new(USER_BAD).unwrap());
    round_trip(factory, v1.clone(), v2, user_v1, user_v2);
    refused(factory, v1, bad, user_v1, "required");
}

// ---- protobuf ----

#[derive(Clone, PartialEq, prost::Message)]
struct EventV1 {
    #[prost(uint64, tag = "1")]
    id: u64,
    #[prost(string, tag = "2")]
    name: String,
    #[prost(bool, tag = "3")]
    obsolete: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
struct EventV2 {
    #[prost(uint64, tag = "1")]
    id: u64,
    #[prost(string, tag = "2")]
    name: String,
    #[prost(string, tag = "4")]
    email: String,
    #[prost(string, repeated, tag = "5")]
    tags: Vec<String>,
}

fn event_v1(k: u64) -> EventV1 {
    EventV1 {
        id: k,
        name: format!("e{k}"),
        obsolete: true,
    }
}

fn event_v2(k: u64) -> EventV2 {
    EventV2 {
        id: k,
        name: format!("e{k}"),
        email: String::new(),
        tags: Vec::new(),
    }
}

fn protobuf<F: BackendFactory>(factory: &F) {
    let v1: Arc<dyn TypeSerializer<EventV1>> = Arc::new(ProstSerializer::named("shop.Event"));
    let v2: Arc<dyn TypeSerializer<EventV2>> = Arc::new(ProstSerializer::named("shop.Event"));
    let other: Arc<dyn TypeSerializer<EventV2>> = Arc::new(ProstSerializer::named("shop.Order"));
    round_trip(factory, v1.clone(), v2, event_v1, event_v2);
    refused(factory, v1, other, event_v1, "shop.Order");
}

fn rocks(mode: SnapshotMode) -> (tempfile::TempDir, RocksDbOptions) {
    let dir = tempfile::tempdir().unwrap();
    let o = RocksDbOptions::new(dir.path())
        .with_snapshot_mode(mode)
        .with_block_cache_bytes(8 << 20)
        .with_write_buffer_bytes(1 << 20);
    (dir, o)
}

#[test]
fn avro_evolves_on_heap() {
    avro(&HeapBackendFactory);
}

#[test]
fn protobuf_evolves_on_heap() {
    protobuf(&HeapBackendFactory);
}

#[test]
fn avro_evolves_on_rocksdb() {
    for mode in [SnapshotMode::Canonical, SnapshotMode::Incremental] {
        let (_dir, o) = rocks(mode);
        avro(&o);
    }
}

#[test]
fn protobuf_evolves_on_rocksdb() {
    for mode in [SnapshotMode::Canonical, SnapshotMode::Incremental] {
        let (_dir, o) = rocks(mode);
        protobuf(&o);
    }
}
