//! Round trips: every state kind through a snapshot, and rescaling that restores
//! every key exactly once.

use super::*;

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
