//! The state API's contracts across restores: serializer compatibility, restored
//! state kept until registered, one state per descriptor, serialized value access,
//! namespace merges.

use super::*;

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

/// [`FixedIntegerSerializer`] across restores: values and list elements the default
/// serializer wrote migrate to it, a narrower fixed width widens, and both come back
/// to the default serializer; a narrowing is refused, and map user keys (whose bytes
/// locate entries) may change in no direction, the stored entries intact after the
/// refusal.
pub fn fixed_integer_serializer_on_restore<F: BackendFactory>(factory: &F) {
    let (_dir, storage) = temp_storage();
    let ids_default = ListStateDescriptor::<u64>::new("ids");
    let ids_fixed =
        ListStateDescriptor::with_serializer("ids", FixedIntegerSerializer::<u64>::arc());
    let n_u32 = ValueStateDescriptor::with_serializer("n", FixedIntegerSerializer::<u32>::arc());
    let n_u64 = ValueStateDescriptor::with_serializer("n", FixedIntegerSerializer::<u64>::arc());
    let n_i64 = ValueStateDescriptor::<i64>::new("n");
    let m_fixed = MapStateDescriptor::<u64, String>::with_serializers(
        "m",
        FixedIntegerSerializer::<u64>::arc(),
        SerdeSerializer::<String>::arc(),
    );
    let m_default = MapStateDescriptor::<u64, String>::new("m");
    let ids = |k: u64| vec![k, u64::MAX - k, k.wrapping_mul(0x9e37_79b9_7f4a_7c15)];

    let a = factory.create(config::<u64>(128, all(128))).unwrap();
    let (l, n, m) = (
        a.list_state::<VoidNamespace, u64>(&ids_default).unwrap(),
        a.value_state::<VoidNamespace, u32>(&n_u32).unwrap(),
        a.map_state::<VoidNamespace, u64, String>(&m_fixed).unwrap(),
    );
    for k in 0..64u64 {
        a.set_current_key(k).unwrap();
        l.add_all(ids(k)).unwrap();
        n.update(u32::MAX - k as u32).unwrap();
        m.put(u64::MAX - k, format!("v{k}")).unwrap();
    }
    let h1 = snapshot_to(&a, &storage, "fixed-1");

    let b = factory
        .restore(config::<u64>(128, all(128)), &storage, &[h1])
        .unwrap();
    let e = err(b.map_state::<VoidNamespace, u64, String>(&m_default));
    assert!(
        matches!(&e, StateError::IncompatibleSerializer { state, .. } if state == "m"),
        "{e}"
    );
    let l2 = b.list_state::<VoidNamespace, u64>(&ids_fixed).unwrap();
    let n2 = b.value_state::<VoidNamespace, u64>(&n_u64).unwrap();
    let m2 = b.map_state::<VoidNamespace, u64, String>(&m_fixed).unwrap();
    for k in 0..64u64 {
        b.set_current_key(k).unwrap();
        assert_eq!(l2.get().unwrap(), ids(k));
        assert_eq!(n2.value().unwrap(), Some(u64::from(u32::MAX) - k));
        assert_eq!(m2.get(&(u64::MAX - k)).unwrap(), Some(format!("v{k}")));
    }
    b.set_current_key(1).unwrap();
    l2.add(7).unwrap();
    n2.update(1 << 40).unwrap(); // only a u64 holds it
    let h2 = snapshot_to(&b, &storage, "fixed-2");

    let c = factory
        .restore(
            config::<u64>(128, all(128)),
            &storage,
            std::slice::from_ref(&h2),
        )
        .unwrap();
    let e = err(c.value_state::<VoidNamespace, u32>(&n_u32));
    assert!(
        matches!(&e, StateError::IncompatibleSerializer { state, .. } if state == "n"),
        "{e}"
    );
    // Back to the default serializer: a wider signed type holds every stored u32, but
    // the state now holds u64s, which i64 does not.
    assert!(matches!(
        err(c.value_state::<VoidNamespace, i64>(&n_i64)),
        StateError::IncompatibleSerializer { .. }
    ));
    let l3 = c.list_state::<VoidNamespace, u64>(&ids_default).unwrap();
    let n3 = c
        .value_state::<VoidNamespace, u64>(&ValueStateDescriptor::new("n"))
        .unwrap();
    for k in 0..64u64 {
        c.set_current_key(k).unwrap();
        let mut expected = ids(k);
        if k == 1 {
            expected.push(7);
        }
        assert_eq!(l3.get().unwrap(), expected);
        let n = if k == 1 {
            1 << 40
        } else {
            u64::from(u32::MAX) - k
        };
        assert_eq!(n3.value().unwrap(), Some(n));
    }
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

/// A map's `entries`, `keys` and `values` return every entry of the current key and
/// namespace and nothing else, whatever the map's size: sizes around what a backend's
/// scan makes room for up front (16 on RocksDB) and well past it, neighbouring keys and
/// namespaces filled, then after removals and a restore.
pub fn map_scans_of_every_size<F: BackendFactory>(factory: &F) {
    const SIZES: [u32; 9] = [0, 1, 2, 15, 16, 17, 31, 33, 100];
    let (_dir, storage) = temp_storage();
    let desc = MapStateDescriptor::<u32, String>::new("sized");
    // Key `k` in namespace `ns` holds user keys `0..SIZES[k]` (shifted by the namespace).
    let expected = |k: u64, ns: u32, removed: bool| -> BTreeMap<u32, String> {
        (0..SIZES[k as usize])
            .filter(|uk| !(removed && uk % 3 == 0))
            .map(|uk| (uk + ns * 1000, format!("{k}/{ns}/{uk}")))
            .collect()
    };
    let check = |b: &F::Backend<u64>, removed: bool| {
        let m = b.map_state::<u32, u32, String>(&desc).unwrap();
        for k in 0..SIZES.len() as u64 {
            b.set_current_key(k).unwrap();
            for ns in 0..2u32 {
                m.set_current_namespace(ns);
                let want = expected(k, ns, removed);
                let mut entries = m.entries().unwrap();
                entries.sort();
                assert_eq!(
                    entries,
                    want.clone().into_iter().collect::<Vec<_>>(),
                    "key {k} ns {ns}"
                );
                let mut keys = m.keys().unwrap();
                keys.sort();
                assert_eq!(
                    keys,
                    want.keys().copied().collect::<Vec<_>>(),
                    "key {k} ns {ns}"
                );
                let mut values = m.values().unwrap();
                values.sort();
                let mut want_values: Vec<String> = want.values().cloned().collect();
                want_values.sort();
                assert_eq!(values, want_values, "key {k} ns {ns}");
                assert_eq!(m.is_empty().unwrap(), want.is_empty(), "key {k} ns {ns}");
            }
        }
    };

    let a = factory.create(config::<u64>(128, all(128))).unwrap();
    let m = a.map_state::<u32, u32, String>(&desc).unwrap();
    for k in 0..SIZES.len() as u64 {
        a.set_current_key(k).unwrap();
        for ns in 0..2u32 {
            m.set_current_namespace(ns);
            for (uk, v) in expected(k, ns, false) {
                m.put(uk, v).unwrap();
            }
        }
    }
    check(&a, false);
    for k in 0..SIZES.len() as u64 {
        a.set_current_key(k).unwrap();
        for ns in 0..2u32 {
            m.set_current_namespace(ns);
            for uk in (0..SIZES[k as usize]).filter(|uk| uk % 3 == 0) {
                m.remove(&(uk + ns * 1000)).unwrap();
            }
        }
    }
    check(&a, true);
    let h = snapshot_to(&a, &storage, "map-sizes");
    let b = factory
        .restore(config::<u64>(128, all(128)), &storage, &[h])
        .unwrap();
    check(&b, true);
}
