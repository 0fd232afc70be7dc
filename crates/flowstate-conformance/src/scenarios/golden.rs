//! The committed keyed snapshot fixture every version must read, and shared-file
//! retention of incremental checkpoints.

use super::*;

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
