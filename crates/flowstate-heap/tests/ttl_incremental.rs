//! Heap-only TTL: incremental cleanup removes expired entries that are never read,
//! driven by accesses to other keys' state or by records alone.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed expectation is a failure

use std::sync::Arc;
use std::time::Duration;

use flowstate_conformance::config;
use flowstate_core::backend::KeyedStateBackend;
use flowstate_core::descriptor::{ListStateDescriptor, MapStateDescriptor, ValueStateDescriptor};
use flowstate_core::keygroup::KeyGroupRange;
use flowstate_core::state::VoidNamespace;
use flowstate_core::ttl::{ManualClock, StateTtlConfig};
use flowstate_heap::HeapKeyedStateBackend;

const KEYS: u64 = 2000;

fn backend() -> HeapKeyedStateBackend<u64> {
    HeapKeyedStateBackend::new(config::<u64>(128, KeyGroupRange::all(128).unwrap())).unwrap()
}

fn ttl(clock: &ManualClock) -> StateTtlConfig {
    StateTtlConfig::new(Duration::from_millis(100))
        .unwrap()
        .with_clock(Arc::new(clock.clone()))
}

fn live_keys(b: &HeapKeyedStateBackend<u64>, state: &str) -> usize {
    b.keys::<VoidNamespace>(state, &VoidNamespace)
        .unwrap()
        .len()
}

/// With no reads of the expired keys, accesses to one other key's state remove them
/// within a bounded number of accesses: `cleanup_size` entries are checked per access,
/// so `KEYS / cleanup_size` accesses plus the empty buckets skipped on the way suffice.
/// Unexpired entries are untouched.
#[test]
fn state_accesses_remove_expired_entries_never_read() {
    for cleanup_size in [1u32, 5, 50] {
        let clock = ManualClock::new(0);
        let cfg = ttl(&clock)
            .with_incremental_cleanup(cleanup_size, false)
            .unwrap();
        let b = backend();
        let v = b
            .value_state::<VoidNamespace, u64>(
                &ValueStateDescriptor::new("v").with_ttl(cfg.clone()),
            )
            .unwrap();
        let l = b
            .list_state::<VoidNamespace, u64>(&ListStateDescriptor::new("l").with_ttl(cfg.clone()))
            .unwrap();
        let m = b
            .map_state::<VoidNamespace, u64, u64>(&MapStateDescriptor::new("m").with_ttl(cfg))
            .unwrap();
        for k in 0..KEYS {
            // Keys below 1000 expire at 100; the rest were written at 60 and live to 160.
            clock.set(if k < 1000 { 0 } else { 60 });
            b.set_current_key(k).unwrap();
            v.update(k).unwrap();
            l.add(k).unwrap();
            m.put(k, k).unwrap();
        }
        clock.set(120);
        assert_eq!(live_keys(&b, "v"), KEYS as usize, "nothing removed before");

        // Touch only a key that is not stored, so no expired key is ever read.
        b.set_current_key(KEYS + 1).unwrap();
        let budget = (KEYS as usize / cleanup_size as usize + 1) * 2;
        let mut accesses = 0;
        while live_keys(&b, "v") + live_keys(&b, "l") + live_keys(&b, "m") > 3000 {
            assert!(
                accesses < budget,
                "cleanup_size {cleanup_size}: {} value, {} list, {} map keys left after {accesses} accesses",
                live_keys(&b, "v"),
                live_keys(&b, "l"),
                live_keys(&b, "m")
            );
            v.value().unwrap();
            l.get().unwrap();
            m.get(&0).unwrap();
            accesses += 1;
        }
        for s in ["v", "l", "m"] {
            let mut keys = b.keys::<VoidNamespace>(s, &VoidNamespace).unwrap();
            keys.sort_unstable();
            assert_eq!(keys, (1000..KEYS).collect::<Vec<_>>(), "state {s}");
        }
    }
}

/// `run_for_every_record`: records alone (each `set_current_key`) drive the cleanup,
/// without any state access; without the option they do not.
#[test]
fn records_drive_cleanup_when_configured() {
    for per_record in [true, false] {
        let clock = ManualClock::new(0);
        let cfg = ttl(&clock).with_incremental_cleanup(5, per_record).unwrap();
        let b = backend();
        let v = b
            .value_state::<VoidNamespace, u64>(&ValueStateDescriptor::new("v").with_ttl(cfg))
            .unwrap();
        for k in 0..KEYS {
            b.set_current_key(k).unwrap();
            v.update(k).unwrap();
        }
        clock.set(100);
        let mut records = 0;
        while live_keys(&b, "v") > 0 && records < KEYS * 2 {
            b.set_current_key(KEYS + records).unwrap();
            records += 1;
        }
        if per_record {
            assert_eq!(live_keys(&b, "v"), 0, "after {records} records");
        } else {
            assert_eq!(live_keys(&b, "v"), KEYS as usize);
        }
    }
}

/// Incremental cleanup never removes live entries, and with it disabled nothing is
/// removed without reads.
#[test]
fn disabled_incremental_cleanup_removes_nothing() {
    let clock = ManualClock::new(0);
    let cfg = ttl(&clock).disable_cleanup_in_background();
    let b = backend();
    let v = b
        .value_state::<VoidNamespace, u64>(&ValueStateDescriptor::new("v").with_ttl(cfg))
        .unwrap();
    for k in 0..100 {
        b.set_current_key(k).unwrap();
        v.update(k).unwrap();
    }
    clock.set(1000);
    b.set_current_key(1000).unwrap();
    for _ in 0..1000 {
        v.value().unwrap();
    }
    assert_eq!(live_keys(&b, "v"), 100);
}
