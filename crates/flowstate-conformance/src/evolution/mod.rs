//! Schema evolution on restore: every allowed change of a value type, for every state
//! kind, read back as the new type with defaults filled, then checkpointed and
//! restored again; every disallowed change refused with its field path before any
//! state is touched; and the committed savepoint of version-1 types read into today's.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use flowstate_core::backend::KeyedStateBackend;
use flowstate_core::descriptor::{
    AggregateFunction, AggregatingStateDescriptor, ListStateDescriptor, MapStateDescriptor,
    ReducingStateDescriptor, ValueStateDescriptor,
};
use flowstate_core::error::StateError;
use flowstate_core::keygroup::KeyGroupRange;
use flowstate_core::snapshot::{KeyedStateHandle, SnapshotFormat};
use flowstate_core::state::VoidNamespace;
use flowstate_core::storage::CheckpointStorage;
use flowstate_core::ttl::{ManualClock, StateTtlConfig};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::scenarios::golden_dir;
use crate::{BackendFactory, config, snapshot_to, temp_storage};

/// A value type that changes shape: how to make old values and what each becomes.
pub trait Evolution {
    /// The type stored first.
    type Old: Serialize + DeserializeOwned + Clone + Debug + PartialEq + Default + 'static;
    /// The type restored with.
    type New: Serialize + DeserializeOwned + Clone + Debug + PartialEq + Default + 'static;
    /// The `i`-th sample old value.
    fn old(i: u64) -> Self::Old;
    /// What `old` must read back as.
    fn new_of(old: &Self::Old) -> Self::New;
}

/// Keeps the last value added (an aggregate whose accumulator is the evolving type).
struct Last;

impl<T: Clone + Default + Send + Sync + 'static> AggregateFunction<T, T, T> for Last {
    fn create_accumulator(&self) -> T {
        T::default()
    }
    fn add(&self, value: T, acc: &mut T) {
        *acc = value;
    }
    fn get_result(&self, acc: &T) -> T {
        acc.clone()
    }
    fn merge(&self, acc: &mut T, other: T) {
        *acc = other;
    }
}

const KEYS: u64 = 40;

fn all() -> KeyGroupRange {
    KeyGroupRange::new(0, 127).expect("range")
}

/// The five kinds of one type, optionally with TTL.
struct Descs<T> {
    value: ValueStateDescriptor<T>,
    list: ListStateDescriptor<T>,
    map: MapStateDescriptor<u32, T>,
    reducing: ReducingStateDescriptor<T>,
    aggregating: AggregatingStateDescriptor<T, T, T>,
}

fn descs<T>(ttl: Option<&StateTtlConfig>) -> Descs<T>
where
    T: Serialize + DeserializeOwned + Clone + Default + Send + Sync + 'static,
{
    let d = Descs {
        value: ValueStateDescriptor::new("value"),
        list: ListStateDescriptor::new("list"),
        map: MapStateDescriptor::new("map"),
        reducing: ReducingStateDescriptor::new("reducing", |_: &T, b: &T| b.clone()),
        aggregating: AggregatingStateDescriptor::new("aggregating", Last),
    };
    match ttl {
        None => d,
        Some(t) => Descs {
            value: d.value.with_ttl(t.clone()),
            list: d.list.with_ttl(t.clone()),
            map: d.map.with_ttl(t.clone()),
            reducing: d.reducing.with_ttl(t.clone()),
            aggregating: d.aggregating.with_ttl(t.clone()),
        },
    }
}

fn write_old<E: Evolution, B: KeyedStateBackend<u64>>(b: &B, ttl: Option<&StateTtlConfig>)
where
    E::Old: Send + Sync,
{
    let d = descs::<E::Old>(ttl);
    let value = b.value_state::<VoidNamespace, _>(&d.value).unwrap();
    let list = b.list_state::<VoidNamespace, _>(&d.list).unwrap();
    let map = b.map_state::<VoidNamespace, u32, _>(&d.map).unwrap();
    let reducing = b.reducing_state::<VoidNamespace, _>(&d.reducing).unwrap();
    let aggregating = b
        .aggregating_state::<VoidNamespace, E::Old, E::Old, E::Old>(&d.aggregating)
        .unwrap();
    for k in 0..KEYS {
        b.set_current_key(k).unwrap();
        value.update(E::old(k)).unwrap();
        list.add_all(vec![E::old(k), E::old(k + 1)]).unwrap();
        map.put(1, E::old(k + 2)).unwrap();
        map.put(2, E::old(k + 3)).unwrap();
        reducing.add(E::old(k + 4)).unwrap();
        aggregating.add(E::old(k + 5)).unwrap();
    }
}

/// Reads every kind as `E::New`; `changed` is a key rewritten in the new type.
fn check_new<E: Evolution, B: KeyedStateBackend<u64>>(
    b: &B,
    ttl: Option<&StateTtlConfig>,
    changed: Option<(u64, &E::New)>,
) where
    E::New: Send + Sync,
{
    let d = descs::<E::New>(ttl);
    let value = b.value_state::<VoidNamespace, _>(&d.value).unwrap();
    let list = b.list_state::<VoidNamespace, _>(&d.list).unwrap();
    let map = b.map_state::<VoidNamespace, u32, _>(&d.map).unwrap();
    let reducing = b.reducing_state::<VoidNamespace, _>(&d.reducing).unwrap();
    let aggregating = b
        .aggregating_state::<VoidNamespace, E::New, E::New, E::New>(&d.aggregating)
        .unwrap();
    let n = |i: u64| E::new_of(&E::old(i));
    for k in 0..KEYS {
        b.set_current_key(k).unwrap();
        let value_expected = match changed {
            Some((key, v)) if key == k => v.clone(),
            _ => n(k),
        };
        assert_eq!(
            value.value().unwrap(),
            Some(value_expected),
            "value, key {k}"
        );
        assert_eq!(list.get().unwrap(), vec![n(k), n(k + 1)], "list, key {k}");
        assert_eq!(map.get(&1).unwrap(), Some(n(k + 2)), "map, key {k}");
        assert_eq!(map.get(&2).unwrap(), Some(n(k + 3)), "map, key {k}");
        assert_eq!(reducing.get().unwrap(), Some(n(k + 4)), "reducing, key {k}");
        assert_eq!(
            aggregating.get().unwrap(),
            Some(n(k + 5)),
            "aggregating, key {k}"
        );
    }
}

/// One evolution on one backend: store `E::Old` in every kind, restore as `E::New`
/// (every value read back converted), write in the new type, checkpoint, restore
/// again.
pub fn evolves<E: Evolution, F: BackendFactory>(factory: &F, ttl: Option<&StateTtlConfig>)
where
    E::Old: Send + Sync,
    E::New: Send + Sync,
{
    let (_dir, storage) = temp_storage();
    let a = factory.create(config::<u64>(128, all())).unwrap();
    write_old::<E, _>(&a, ttl);
    let h1 = snapshot_to(&a, &storage, "evolve-1");

    let b = factory
        .restore(config::<u64>(128, all()), &storage, &[h1])
        .unwrap();
    check_new::<E, _>(&b, ttl, None);
    // A value only the new type has, then a checkpoint in the new schema.
    let fresh = E::New::default();
    let value = b
        .value_state::<VoidNamespace, E::New>(&descs::<E::New>(ttl).value)
        .unwrap();
    b.set_current_key(3).unwrap();
    value.update(fresh.clone()).unwrap();
    let h2 = snapshot_to(&b, &storage, "evolve-2");

    let c = factory
        .restore(config::<u64>(128, all()), &storage, &[h2])
        .unwrap();
    check_new::<E, _>(&c, ttl, Some((3, &fresh)));
}

pub(crate) fn seven() -> u64 {
    7
}

/// The value types of the matrix: version 1 and version 2 of each change.
pub mod types;

use types::*;

macro_rules! evolution {
    ($(#[$doc:meta])* $name:ident, $old:ty, $new:ty, |$i:ident| $make:expr, |$o:ident| $conv:expr) => {
        $(#[$doc])*
        pub struct $name;
        impl Evolution for $name {
            type Old = $old;
            type New = $new;
            fn old($i: u64) -> $old {
                $make
            }
            fn new_of($o: &$old) -> $new {
                $conv
            }
        }
    };
}

evolution!(
    /// A field added with a default (`#[serde(default)]`, `default = "..."`).
    AddField, A1, AddField2,
    |i| A1 { a: i as u32 },
    |o| AddField2 { a: o.a, b: 7, c: String::new() }
);
evolution!(
    /// Fields removed.
    RemoveField, Remove1, A1,
    |i| Remove1 { a: i as u32, gone: format!("g{i}"), also_gone: vec![1, 2] },
    |o| A1 { a: o.a }
);
evolution!(
    /// Fields reordered.
    ReorderFields, Order1, Order2,
    |i| Order1 { a: i as u32, b: format!("b{i}"), c: i.is_multiple_of(2) },
    |o| Order2 { c: o.c, b: o.b.clone(), a: o.a }
);
evolution!(
    /// A field renamed, the old name kept as `#[serde(alias)]`.
    RenameField, Rename1, Rename2,
    |i| Rename1 { count: i as u32, label: format!("l{i}") },
    |o| Rename2 { total: o.count, label: o.label.clone() }
);
evolution!(
    /// Enum variants added (one in the middle, one at the end).
    AddVariant, Variant1, Variant2,
    |i| match i % 3 {
        0 => Variant1::Idle,
        1 => Variant1::Busy(i as u32),
        _ => Variant1::Done { at: i as i64 },
    },
    |o| variant2(o)
);
evolution!(
    /// Integers and floats widened.
    Widen, Widen1, Widen2,
    |i| Widen1 { u: u32::MAX - i as u32, i: i32::MIN + i as i32, f: i as f32 + 0.25, small: i as u8 },
    |o| Widen2 { u: u64::from(o.u), i: i64::from(o.i), f: f64::from(o.f), small: u128::from(o.small) }
);
evolution!(
    /// `T` became `Option<T>`.
    MakeOptional, u32, Option<u32>,
    |i| i as u32,
    |o| Some(*o)
);
evolution!(
    /// Every change at once, nested in structs, `Vec`s, map values and options.
    NestedChanges, Nested1, Nested2,
    |i| nested1(i),
    |o| nested2(o)
);

/// The matrix: every change × every kind, on this backend (its snapshot mode is the
/// factory's), and the nested changes again under TTL.
pub fn schema_evolution_matrix<F: BackendFactory>(factory: &F) {
    evolves::<AddField, F>(factory, None);
    evolves::<RemoveField, F>(factory, None);
    evolves::<ReorderFields, F>(factory, None);
    evolves::<RenameField, F>(factory, None);
    evolves::<AddVariant, F>(factory, None);
    evolves::<Widen, F>(factory, None);
    evolves::<MakeOptional, F>(factory, None);
    evolves::<NestedChanges, F>(factory, None);
    let clock = ManualClock::new(1_000);
    let ttl = StateTtlConfig::new(Duration::from_secs(3600))
        .unwrap()
        .with_clock(Arc::new(clock));
    evolves::<NestedChanges, F>(factory, Some(&ttl));
}

fn refusal<
    B: KeyedStateBackend<u64>,
    T: flowstate_core::state::StateValue + Serialize + DeserializeOwned,
>(
    b: &B,
    state: &str,
    path: &str,
    message: &str,
) {
    let e = b
        .value_state::<VoidNamespace, T>(&ValueStateDescriptor::new(state))
        .err()
        .unwrap_or_else(|| panic!("`{state}` restored as {}", std::any::type_name::<T>()));
    match &e {
        StateError::IncompatibleSerializer {
            state: s,
            what: "value",
            path: Some(p),
            reason,
        } => {
            assert_eq!(s, state, "{e}");
            assert_eq!(p, path, "{e}");
            assert!(reason.contains(message), "`{state}`: {e}");
            assert!(e.to_string().contains(state), "{e}");
        }
        other => panic!("`{state}`: {other}"),
    }
}

/// Disallowed changes: each refused with a typed error naming the state, the field
/// path and the change, before the state is touched (the old type then restores
/// exactly); keys and map user keys may not change layout at all.
pub fn schema_evolution_refusals<F: BackendFactory>(factory: &F) {
    use serde::Deserialize;
    #[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
    struct S1 {
        s: String,
        m: BTreeMap<String, Vec<Q1>>,
    }
    #[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
    struct Q1 {
        q: i64,
    }
    #[derive(Serialize, Deserialize, Clone)]
    #[allow(dead_code)]
    struct StringToNumber {
        s: u64,
        m: BTreeMap<String, Vec<Q1>>,
    }
    #[derive(Serialize, Deserialize, Clone)]
    #[allow(dead_code)]
    struct NarrowNested {
        s: String,
        m: BTreeMap<String, Vec<Q2>>,
    }
    #[derive(Serialize, Deserialize, Clone)]
    #[allow(dead_code)]
    struct Q2 {
        q: i32,
    }
    #[derive(Serialize, Deserialize, Clone)]
    #[allow(dead_code)]
    struct NoDefault {
        s: String,
        m: BTreeMap<String, Vec<Q1>>,
        required: u8,
    }
    #[derive(Serialize, Deserialize, Clone)]
    #[allow(dead_code)]
    enum Fewer {
        Idle,
        Done { at: i64 },
    }

    let (_dir, storage) = temp_storage();
    let a = factory.create(config::<u64>(128, all())).unwrap();
    let s1 = |k: u64| S1 {
        s: format!("s{k}"),
        m: BTreeMap::from([("a".to_string(), vec![Q1 { q: -(k as i64) }])]),
    };
    let narrow = a
        .value_state::<VoidNamespace, u64>(&ValueStateDescriptor::new("narrow"))
        .unwrap();
    let opt = a
        .value_state::<VoidNamespace, Option<u32>>(&ValueStateDescriptor::new("optional"))
        .unwrap();
    let rec = a
        .value_state::<VoidNamespace, S1>(&ValueStateDescriptor::new("record"))
        .unwrap();
    let var = a
        .value_state::<VoidNamespace, Variant1>(&ValueStateDescriptor::new("variant"))
        .unwrap();
    let map = a
        .map_state::<VoidNamespace, u32, u32>(&MapStateDescriptor::new("by-user-key"))
        .unwrap();
    for k in 0..KEYS {
        a.set_current_key(k).unwrap();
        narrow.update(k << 40).unwrap();
        opt.update(k.is_multiple_of(2).then_some(k as u32)).unwrap();
        rec.update(s1(k)).unwrap();
        var.update(AddVariant::old(k)).unwrap();
        map.put(k as u32, 1).unwrap();
    }
    let h = snapshot_to(&a, &storage, "refusals");
    let b = factory
        .restore(
            config::<u64>(128, all()),
            &storage,
            std::slice::from_ref(&h),
        )
        .unwrap();
    refusal::<_, u32>(&b, "narrow", "", "stored u64 cannot be read as u32");
    refusal::<_, i64>(&b, "narrow", "", "stored u64 cannot be read as i64");
    refusal::<_, u32>(
        &b,
        "optional",
        "",
        "an optional value cannot become required",
    );
    refusal::<_, StringToNumber>(&b, "record", "s", "stored String cannot be read as u64");
    refusal::<_, NarrowNested>(
        &b,
        "record",
        "m{value}[].q",
        "stored i64 cannot be read as i32",
    );
    refusal::<_, NoDefault>(
        &b,
        "record",
        "",
        "field `required` was added without a default",
    );
    refusal::<_, Fewer>(&b, "variant", "::Busy", "variant `Busy` was removed");
    let e = b
        .map_state::<VoidNamespace, u64, u32>(&MapStateDescriptor::new("by-user-key"))
        .err()
        .expect("user key widened");
    assert!(
        matches!(&e, StateError::IncompatibleSerializer { what: "user key", reason, .. }
            if reason.contains("may not change layout") && reason.contains("u32 became u64")),
        "{e}"
    );
    // Nothing was touched: the old types read every value.
    let narrow = b
        .value_state::<VoidNamespace, u64>(&ValueStateDescriptor::new("narrow"))
        .unwrap();
    let opt = b
        .value_state::<VoidNamespace, Option<u32>>(&ValueStateDescriptor::new("optional"))
        .unwrap();
    let rec = b
        .value_state::<VoidNamespace, S1>(&ValueStateDescriptor::new("record"))
        .unwrap();
    let var = b
        .value_state::<VoidNamespace, Variant1>(&ValueStateDescriptor::new("variant"))
        .unwrap();
    let map = b
        .map_state::<VoidNamespace, u32, u32>(&MapStateDescriptor::new("by-user-key"))
        .unwrap();
    for k in 0..KEYS {
        b.set_current_key(k).unwrap();
        assert_eq!(narrow.value().unwrap(), Some(k << 40));
        assert_eq!(
            opt.value().unwrap(),
            Some(k.is_multiple_of(2).then_some(k as u32))
        );
        assert_eq!(rec.value().unwrap(), Some(s1(k)));
        assert_eq!(var.value().unwrap(), Some(AddVariant::old(k)));
        assert_eq!(map.get(&(k as u32)).unwrap(), Some(1));
    }
    // Keys locate state: a widened key type is refused before anything is read.
    let e = factory
        .restore(
            config::<u128>(128, all()),
            &storage,
            std::slice::from_ref(&h),
        )
        .err()
        .expect("key widened");
    assert!(
        matches!(&e, StateError::IncompatibleSerializer { what: "key", reason, .. }
            if reason.contains("may not change layout")),
        "{e}"
    );
}

const GOLDEN: &str = "v2/keyed-evolution-v1-types.kgs";

/// The committed savepoint of `NestedChanges`'s version-1 type in every kind (with
/// the schemas version 2 of the default serializer stores) reads into today's
/// version-2 type. The fixture is written once, when missing, with
/// `FLOWSTATE_BLESS=1`; an existing one is never rewritten.
pub fn reads_golden_evolution_savepoint<F: BackendFactory>(factory: &F) {
    let storage = flowstate_storage::ObjectCheckpointStorage::local(golden_dir()).unwrap();
    if std::env::var_os("FLOWSTATE_BLESS").is_some() && storage.size(GOLDEN).is_err() {
        // Written through a scratch directory: only a canonical file is a fixture.
        let (_dir, scratch) = temp_storage();
        let b = factory.create(config::<u64>(128, all())).unwrap();
        write_old::<NestedChanges, _>(&b, None);
        let h = snapshot_to(&b, &scratch, "golden");
        if h.format == SnapshotFormat::Canonical {
            storage.put(GOLDEN, scratch.get("golden").unwrap()).unwrap();
        }
    }
    let handle = KeyedStateHandle::canonical(GOLDEN, all(), 128, storage.size(GOLDEN).unwrap());
    let b = factory
        .restore(config::<u64>(128, all()), &storage, &[handle])
        .unwrap();
    check_new::<NestedChanges, _>(&b, None, None);
}
