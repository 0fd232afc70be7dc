//! What must be refused: corrupt snapshots, and bad input as typed errors.

use super::*;

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
    let (dir, storage) = temp_storage();
    // The damaged copies go straight into the storage's directory: a `put` fsyncs, and
    // one per flipped byte of a native manifest (which inlines RocksDB's small files)
    // made this scenario minutes of CI. The restore still reads them through the real
    // storage.
    let place = |name: &str, data: &[u8]| {
        std::fs::write(dir.path().join(name), data).expect("write damaged copy");
    };
    let pristine = corrupt_fixture(factory, &storage);
    assert!(
        !restore_fails(factory, &storage, &pristine),
        "the pristine snapshot must restore"
    );
    let bytes = storage.get(&pristine.path).unwrap();
    // `place` must reach the file the storage reads: were it written anywhere else,
    // every restore below would fail for a missing file and the scenario could not fail.
    place("corrupt", &bytes);
    assert!(
        !restore_fails(
            factory,
            &storage,
            &KeyedStateHandle {
                path: "corrupt".into(),
                ..pristine.clone()
            }
        ),
        "an undamaged placed copy must restore"
    );
    for i in 0..bytes.len() {
        let mut flipped = bytes.to_vec();
        flipped[i] ^= 0x5a;
        place("corrupt", &flipped);
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
        place("truncated", &bytes[..len]);
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
