//! Timers live in the keyed backend: registered on one backend, snapshotted, restored
//! rescaled to three backends (heap and RocksDB), every pending timer comes back
//! exactly once, in the backend owning its key's group, and fires in timestamp order.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed expectation is a failure

mod common;

use std::collections::BTreeSet;

use flowstate_conformance::{config, snapshot_to, temp_storage};
use flowstate_core::backend::KeyedStateBackend;
use flowstate_core::keygroup::{KeyGroupRange, key_group_range_for_operator};
use flowstate_runtime::{TimeDomain, TimeWindow, TimerState};

const MAX_P: u32 = 16;

#[test]
fn timers_snapshot_and_rescale_with_the_keyed_state() {
    let dir = tempfile::tempdir().unwrap();
    for choice in common::backends(dir.path()) {
        let (_guard, storage) = temp_storage();
        let full = KeyGroupRange::new(0, MAX_P - 1).unwrap();
        let backend = choice.create(config::<u32>(MAX_P, full)).unwrap();
        let mut timers = TimerState::<u32, TimeWindow>::rebuild(&backend).unwrap();
        let mut expect = BTreeSet::new();
        for key in 0..300u32 {
            backend.set_current_key(key).unwrap();
            let ts = i64::from(key % 37) * 10;
            let win = TimeWindow::new(ts - 10, ts + 1);
            // Duplicates are one timer; a deleted one is gone.
            for _ in 0..2 {
                timers
                    .register(TimeDomain::EventTime, &key, win, ts)
                    .unwrap();
            }
            timers
                .register(TimeDomain::EventTime, &key, win, ts + 5)
                .unwrap();
            timers
                .delete(TimeDomain::EventTime, &key, win, ts + 5)
                .unwrap();
            timers
                .register(
                    TimeDomain::ProcessingTime,
                    &key,
                    TimeWindow::default(),
                    1000 + ts,
                )
                .unwrap();
            expect.insert(("event", ts, key, win));
            expect.insert(("processing", 1000 + ts, key, TimeWindow::default()));
        }
        // One fired before the snapshot is not restored.
        let (ts, key, win) = timers
            .pop_due(TimeDomain::EventTime, i64::MAX, &backend)
            .unwrap()
            .unwrap();
        assert!(expect.remove(&("event", ts, key, win)));
        assert_eq!(timers.len(TimeDomain::EventTime), 299);
        let handle = snapshot_to(&backend, &storage, "timers/p1");
        drop(backend);

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
            let mut timers = TimerState::<u32, TimeWindow>::rebuild(&restored).unwrap();
            for (domain, name) in [
                (TimeDomain::EventTime, "event"),
                (TimeDomain::ProcessingTime, "processing"),
            ] {
                let mut last = i64::MIN;
                while let Some((ts, key, win)) =
                    timers.pop_due(domain, i64::MAX, &restored).unwrap()
                {
                    assert!(ts >= last, "timestamp order");
                    last = ts;
                    let kg = restored.key_group_of(&key).unwrap();
                    assert!(
                        range.contains(kg),
                        "key {key} restored outside its key group"
                    );
                    assert!(got.insert((name, ts, key, win)), "timer restored twice");
                }
            }
        }
        assert_eq!(got, expect, "{choice:?}: every pending timer exactly once");
    }
}
