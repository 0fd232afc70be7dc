//! A million timers on RocksDB with a small in-memory window: memory holds about the
//! window, and every timer fires in timestamp order exactly once, part of them
//! before a snapshot, the rest after a restore rescaled to three instances (each with
//! its key groups' timers only).
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed expectation is a failure
#![cfg(feature = "rocksdb")] // the spill is RocksDB's

use std::collections::BTreeSet;

use flowstate_conformance::{config, snapshot_to, temp_storage};
use flowstate_core::backend::KeyedStateBackend;
use flowstate_core::keygroup::{KeyGroupRange, key_group_range_for_operator};
use flowstate_core::state::VoidNamespace;
use flowstate_rocksdb::RocksDbOptions;
use flowstate_runtime::{BackendChoice, TimeDomain, TimerState};

const MAX_P: u32 = 128;
const KEYS: u32 = 250_000;
const TIMERS_PER_KEY: u64 = 4;
const WINDOW: usize = 4096;
/// Timers of one timestamp are never split between memory and disk: the window may
/// be exceeded by one timestamp's timers (a handful here).
const SLACK: usize = 64;

fn ts_of(key: u32, j: u64) -> i64 {
    ((u64::from(key) * 7919 + j * 104_729) % 400_000) as i64
}

#[test]
fn a_million_timers_spill_and_fire_in_order_once_across_a_rescaled_restore() {
    let dir = tempfile::tempdir().unwrap();
    let choice = BackendChoice::RocksDb(RocksDbOptions::new(dir.path()).with_timer_window(WINDOW));
    let (_guard, storage) = temp_storage();
    let full = KeyGroupRange::new(0, MAX_P - 1).unwrap();
    let backend = choice.create(config::<u32>(MAX_P, full)).unwrap();
    let mut timers = TimerState::<u32, VoidNamespace>::open(&backend).unwrap();
    let mut expect: BTreeSet<(i64, u32)> = BTreeSet::new();
    for key in 0..KEYS {
        backend.set_current_key(key).unwrap();
        for j in 0..TIMERS_PER_KEY {
            let ts = ts_of(key, j);
            timers
                .register(TimeDomain::EventTime, &key, VoidNamespace, ts)
                .unwrap();
            expect.insert((ts, key));
        }
        assert!(timers.in_memory(TimeDomain::EventTime) <= WINDOW + SLACK);
    }
    assert_eq!(timers.len(TimeDomain::EventTime), expect.len());
    assert!(expect.len() > 990_000, "{} timers", expect.len());

    // The first part fires before the snapshot, in order, each once.
    let mut last = i64::MIN;
    let mut fired = 0;
    while let Some((ts, key, _)) = timers
        .pop_due(TimeDomain::EventTime, 150_000, &backend)
        .unwrap()
    {
        assert!(ts >= last, "timestamp order: {ts} after {last}");
        last = ts;
        assert!(expect.remove(&(ts, key)), "timer ({ts}, {key}) fired twice");
        assert!(timers.in_memory(TimeDomain::EventTime) <= WINDOW + SLACK);
        fired += 1;
    }
    assert!(fired > 300_000, "{fired} fired");
    assert!(expect.first().is_some_and(|(ts, _)| *ts > 150_000));
    assert_eq!(timers.len(TimeDomain::EventTime), expect.len());
    let handle = snapshot_to(&backend, &storage, "timers/p1");
    drop(timers);
    drop(backend);

    // The rest after a restore at parallelism 3.
    let mut got = BTreeSet::new();
    for index in 0..3 {
        let range = key_group_range_for_operator(MAX_P, 3, index).unwrap();
        let restored = choice
            .restore(
                config::<u32>(MAX_P, range),
                &storage,
                std::slice::from_ref(&handle),
            )
            .unwrap();
        let mut timers = TimerState::<u32, VoidNamespace>::open(&restored).unwrap();
        assert!(timers.in_memory(TimeDomain::EventTime) <= WINDOW + SLACK);
        let mut last = i64::MIN;
        while let Some((ts, key, _)) = timers
            .pop_due(TimeDomain::EventTime, i64::MAX, &restored)
            .unwrap()
        {
            assert!(ts >= last, "timestamp order: {ts} after {last}");
            last = ts;
            let kg = restored.key_group_of(&key).unwrap();
            assert!(range.contains(kg), "key {key} outside its key groups");
            assert!(got.insert((ts, key)), "timer ({ts}, {key}) fired twice");
            assert!(timers.in_memory(TimeDomain::EventTime) <= WINDOW + SLACK);
        }
        assert!(timers.is_empty(TimeDomain::EventTime));
    }
    assert_eq!(got, expect, "every pending timer exactly once");
    // Each spill set's directory went with its timers.
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("spill-"))
        .collect();
    assert!(left.is_empty(), "spill directories left behind: {left:?}");
}
