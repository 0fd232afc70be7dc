//! Snapshot isolation: a snapshot sees the state at its snapshot point, whatever is
//! written later or concurrently.

use super::*;

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
