//! A map state's scans on RocksDB reuse one iterator, refreshed before each scan
//! (`src/scan.rs`): every scan still sees exactly the current entries, across writes,
//! memtable flushes and compactions, and a checkpoint unpins the version the iterator
//! held.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed expectation is a failure

use std::collections::BTreeMap;

use flowstate_conformance::{config, snapshot_to, temp_storage};
use flowstate_core::backend::KeyedStateBackend;
use flowstate_core::descriptor::MapStateDescriptor;
use flowstate_core::keygroup::KeyGroupRange;
use flowstate_core::state::VoidNamespace;
use flowstate_rocksdb::{RocksDbKeyedStateBackend, RocksDbOptions};

fn backend(dir: &tempfile::TempDir) -> RocksDbKeyedStateBackend<u64> {
    let range = KeyGroupRange::all(128).unwrap();
    RocksDbKeyedStateBackend::new(config(128, range), RocksDbOptions::new(dir.path())).unwrap()
}

/// splitmix64: the test's deterministic choices.
fn next(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The figure `name` of the backend's RocksDB properties.
fn figure(b: &RocksDbKeyedStateBackend<u64>, name: &str) -> u64 {
    b.properties()
        .into_iter()
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v)
        .unwrap_or_else(|| panic!("no figure {name}"))
}

/// Rounds of puts and removes over 16 keys, each followed by a scan of every key
/// (entries, keys, values, emptiness) through the same handle, checked against a model;
/// between rounds the state's column family is compacted (a new RocksDB version, so
/// the kept iterator must rebuild), or the backend is checkpointed (the memtable
/// flushed, the iterator released), or neither (only newer writes in the memtable).
#[test]
fn every_scan_sees_the_current_entries_across_flushes_and_compactions() {
    let dir = tempfile::tempdir().unwrap();
    let (_s, storage) = temp_storage();
    let b = backend(&dir);
    let m = b
        .map_state::<VoidNamespace, u64, u64>(&MapStateDescriptor::new("m"))
        .unwrap();
    let mut model: BTreeMap<u64, BTreeMap<u64, u64>> = BTreeMap::new();
    let mut rng = 7u64;
    for round in 0..40u64 {
        for _ in 0..50 {
            let (key, user_key) = (next(&mut rng) % 16, next(&mut rng) % 8);
            b.set_current_key(key).unwrap();
            if next(&mut rng).is_multiple_of(3) {
                m.remove(&user_key).unwrap();
                model.entry(key).or_default().remove(&user_key);
            } else {
                let v = next(&mut rng);
                m.put(user_key, v).unwrap();
                model.entry(key).or_default().insert(user_key, v);
            }
        }
        for key in 0..16 {
            b.set_current_key(key).unwrap();
            let want = model.get(&key).cloned().unwrap_or_default();
            let mut got = m.entries().unwrap();
            got.sort_unstable();
            let want_entries: Vec<(u64, u64)> = want.iter().map(|(k, v)| (*k, *v)).collect();
            assert_eq!(got, want_entries, "round {round}, key {key}: entries");
            let mut keys = m.keys().unwrap();
            keys.sort_unstable();
            assert_eq!(keys, want.keys().copied().collect::<Vec<_>>(), "keys");
            let mut values = m.values().unwrap();
            values.sort_unstable();
            let mut want_values: Vec<u64> = want.values().copied().collect();
            want_values.sort_unstable();
            assert_eq!(values, want_values, "round {round}, key {key}: values");
            assert_eq!(m.is_empty().unwrap(), want.is_empty(), "is_empty");
        }
        match round % 3 {
            0 => b.compact_state("m").unwrap(),
            1 => {
                snapshot_to(&b, &storage, &format!("chk-{round}/keyed-0"));
            }
            _ => {}
        }
        // A cleared key's entries are gone for the next scans as well.
        if round % 5 == 4 {
            let key = next(&mut rng) % 16;
            b.set_current_key(key).unwrap();
            m.clear().unwrap();
            model.remove(&key);
            assert!(m.is_empty().unwrap());
        }
    }
}

/// The iterator a scan keeps holds RocksDB's version of the column family at its last
/// refresh: a compaction after the scan leaves that version alive beside the new one
/// until a checkpoint releases the iterator.
#[test]
fn a_checkpoint_unpins_the_version_a_scan_kept() {
    let dir = tempfile::tempdir().unwrap();
    let (_s, storage) = temp_storage();
    let b = backend(&dir);
    let m = b
        .map_state::<VoidNamespace, u64, u64>(&MapStateDescriptor::new("m"))
        .unwrap();
    for key in 0..100 {
        b.set_current_key(key).unwrap();
        m.put(1, key).unwrap();
    }
    b.compact_state("m").unwrap();
    let unpinned = figure(&b, "live_versions");
    b.set_current_key(3).unwrap();
    assert_eq!(m.entries().unwrap(), vec![(1, 3)]);
    for key in 0..100 {
        b.set_current_key(key).unwrap();
        m.put(2, key).unwrap();
    }
    b.compact_state("m").unwrap();
    let pinned = figure(&b, "live_versions");
    assert!(
        pinned > unpinned,
        "the scan's version stays alive after the compaction: {pinned} live versions, {unpinned} before"
    );
    snapshot_to(&b, &storage, "chk-1/keyed-0");
    let released = figure(&b, "live_versions");
    assert_eq!(released, unpinned, "the checkpoint released it");
    // The next scan sees both compactions' results.
    b.set_current_key(3).unwrap();
    let mut got = m.entries().unwrap();
    got.sort_unstable();
    assert_eq!(got, vec![(1, 3), (2, 3)]);
}
