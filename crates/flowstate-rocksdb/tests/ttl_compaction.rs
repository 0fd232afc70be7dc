//! RocksDB-only TTL: the compaction filter physically removes expired entries (counted
//! with a raw iterator) and keeps live ones; disabled, it removes nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed expectation is a failure

use std::sync::Arc;
use std::time::Duration;

use flowstate_conformance::config;
use flowstate_core::backend::KeyedStateBackend;
use flowstate_core::descriptor::{
    ListStateDescriptor, MapStateDescriptor, ReducingStateDescriptor, ValueStateDescriptor,
};
use flowstate_core::keygroup::KeyGroupRange;
use flowstate_core::state::VoidNamespace;
use flowstate_core::ttl::{ManualClock, StateTtlConfig, StateVisibility};
use flowstate_rocksdb::{RocksDbKeyedStateBackend, RocksDbOptions};

const KEYS: u64 = 500;

fn backend(dir: &tempfile::TempDir) -> RocksDbKeyedStateBackend<u64> {
    RocksDbKeyedStateBackend::new(
        config::<u64>(128, KeyGroupRange::all(128).unwrap()),
        RocksDbOptions::new(dir.path()),
    )
    .unwrap()
}

/// Half the keys written at t=0, half at t=500, TTL 100, compaction at t=550.
fn run(cfg: StateTtlConfig, clock: &ManualClock) -> [(u64, u64); 4] {
    let dir = tempfile::tempdir().unwrap();
    let b = backend(&dir);
    // Visibility that returns expired values: whatever survives compaction is seen.
    let cfg = cfg.with_visibility(StateVisibility::ReturnExpiredIfNotCleanedUp);
    let v = b
        .value_state::<VoidNamespace, u64>(&ValueStateDescriptor::new("v").with_ttl(cfg.clone()))
        .unwrap();
    let l = b
        .list_state::<VoidNamespace, u64>(&ListStateDescriptor::new("l").with_ttl(cfg.clone()))
        .unwrap();
    let m = b
        .map_state::<VoidNamespace, u64, u64>(&MapStateDescriptor::new("m").with_ttl(cfg.clone()))
        .unwrap();
    let r = b
        .reducing_state::<VoidNamespace, u64>(
            &ReducingStateDescriptor::new("r", |a: &u64, b: &u64| a + b).with_ttl(cfg),
        )
        .unwrap();
    for k in 0..KEYS {
        clock.set(if k % 2 == 0 { 0 } else { 500 });
        b.set_current_key(k).unwrap();
        v.update(k).unwrap();
        l.add(k).unwrap();
        l.add(k + 1).unwrap();
        m.put(1, k).unwrap();
        m.put(2, k).unwrap();
        r.add(k).unwrap();
    }
    // Appends are merge operands; RocksDB filters merged lists once they are written
    // as values, which the first compaction does (as background compactions would).
    b.compact_state("l").unwrap();
    clock.set(550);
    let names = ["v", "l", "m", "r"];
    let before: Vec<u64> = names
        .iter()
        .map(|n| b.raw_entry_count(n).unwrap())
        .collect();
    for n in names {
        b.compact_state(n).unwrap();
    }
    let after: Vec<u64> = names
        .iter()
        .map(|n| b.raw_entry_count(n).unwrap())
        .collect();
    // Survivors are intact and readable.
    for k in (1..KEYS).step_by(2) {
        b.set_current_key(k).unwrap();
        assert_eq!(v.value().unwrap(), Some(k));
        assert_eq!(l.get().unwrap(), vec![k, k + 1]);
        assert_eq!(m.get(&2).unwrap(), Some(k));
        assert_eq!(r.get().unwrap(), Some(k));
    }
    [0, 1, 2, 3].map(|i| (before[i], after[i]))
}

#[test]
fn compaction_removes_exactly_the_expired_entries() {
    let clock = ManualClock::new(0);
    let cfg = StateTtlConfig::new(Duration::from_millis(100))
        .unwrap()
        .with_clock(Arc::new(clock.clone()));
    let counts = run(cfg, &clock);
    let half = KEYS / 2;
    assert_eq!(counts[0], (KEYS, half), "value: (before, after)");
    assert_eq!(counts[1], (KEYS, half), "list");
    assert_eq!(
        counts[2],
        (2 * KEYS, 2 * half),
        "map: one entry per user key"
    );
    assert_eq!(counts[3], (KEYS, half), "reducing");
}

#[test]
fn without_the_filter_compaction_keeps_everything() {
    let clock = ManualClock::new(0);
    let cfg = StateTtlConfig::new(Duration::from_millis(100))
        .unwrap()
        .with_clock(Arc::new(clock.clone()))
        .disable_cleanup_in_background();
    let counts = run(cfg, &clock);
    assert_eq!(counts[0], (KEYS, KEYS));
    assert_eq!(counts[1], (KEYS, KEYS));
    assert_eq!(counts[2], (2 * KEYS, 2 * KEYS));
}

/// The filter survives a restore: a restored column family (opened before its state
/// is registered) gets the filter once the state is registered with TTL.
#[test]
fn restored_state_is_filtered_after_registration() {
    let clock = ManualClock::new(0);
    let cfg = StateTtlConfig::new(Duration::from_millis(100))
        .unwrap()
        .with_clock(Arc::new(clock.clone()));
    let d = ValueStateDescriptor::<u64>::new("v").with_ttl(cfg);
    let (_sdir, storage) = flowstate_conformance::temp_storage();
    let dir = tempfile::tempdir().unwrap();
    let a = backend(&dir);
    let v = a.value_state::<VoidNamespace, u64>(&d).unwrap();
    for k in 0..KEYS {
        clock.set(if k < 100 { 500 } else { 0 });
        a.set_current_key(k).unwrap();
        v.update(k).unwrap();
    }
    let h = flowstate_conformance::snapshot_to(&a, &storage, "chk");
    let b = RocksDbKeyedStateBackend::restore(
        config::<u64>(128, KeyGroupRange::all(128).unwrap()),
        RocksDbOptions::new(dir.path()),
        &storage,
        &[h],
    )
    .unwrap();
    b.value_state::<VoidNamespace, u64>(&d).unwrap();
    clock.set(550);
    b.compact_state("v").unwrap();
    assert_eq!(b.raw_entry_count("v").unwrap(), 100);
}
