//! State TTL scenarios every backend runs: exact visibility over every kind, update
//! type and visibility against a small model (manual clock), per-element expiry,
//! full-snapshot cleanup, and restores with TTL switched on, off, or changed.

use std::sync::Arc;
use std::time::Duration;

use flowstate_core::backend::KeyedStateBackend;
use flowstate_core::descriptor::{
    AggregatingStateDescriptor, ListStateDescriptor, MapStateDescriptor, ReducingStateDescriptor,
    ValueStateDescriptor,
};
use flowstate_core::keygroup::KeyGroupRange;
use flowstate_core::snapshot::AsyncKeyedSnapshot;
use flowstate_core::state::VoidNamespace;
use flowstate_core::ttl::{ManualClock, StateTtlConfig, StateVisibility, UpdateType};

use crate::scenarios::Sum;
use crate::{BackendFactory, config, snapshot_to, temp_storage};

/// The TTL of every scenario, in ms of the manual clock.
const TTL: i64 = 100;

fn ttl_config(clock: &ManualClock, update: UpdateType, vis: StateVisibility) -> StateTtlConfig {
    StateTtlConfig::new(Duration::from_millis(TTL as u64))
        .unwrap()
        .with_update_type(update)
        .with_visibility(vis)
        .with_clock(Arc::new(clock.clone()))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Value,
    List,
    Map,
    Reducing,
    Aggregating,
}

const KINDS: [Kind; 5] = [
    Kind::Value,
    Kind::List,
    Kind::Map,
    Kind::Reducing,
    Kind::Aggregating,
];

/// One state of `kind` seen through two operations: write a number, read the visible
/// numbers (sorted; reducing and aggregating read their sum).
struct Probe {
    write: Box<dyn Fn(u64)>,
    read: Box<dyn Fn() -> Vec<u64>>,
}

fn probe<B: KeyedStateBackend<u64>>(b: &B, kind: Kind, name: &str, ttl: StateTtlConfig) -> Probe {
    match kind {
        Kind::Value => {
            let s = b
                .value_state::<VoidNamespace, u64>(&ValueStateDescriptor::new(name).with_ttl(ttl))
                .unwrap();
            let r = s.clone();
            Probe {
                write: Box::new(move |v| s.update(v).unwrap()),
                read: Box::new(move || r.value().unwrap().into_iter().collect()),
            }
        }
        Kind::List => {
            let s = b
                .list_state::<VoidNamespace, u64>(&ListStateDescriptor::new(name).with_ttl(ttl))
                .unwrap();
            let r = s.clone();
            Probe {
                write: Box::new(move |v| s.add(v).unwrap()),
                read: Box::new(move || {
                    let mut v = r.get().unwrap();
                    v.sort_unstable();
                    v
                }),
            }
        }
        Kind::Map => {
            let s = b
                .map_state::<VoidNamespace, u64, u64>(&MapStateDescriptor::new(name).with_ttl(ttl))
                .unwrap();
            let r = s.clone();
            Probe {
                // Distinct user keys, so every entry has its own timestamp.
                write: Box::new(move |v| s.put(v, v).unwrap()),
                read: Box::new(move || {
                    let mut v = r.values().unwrap();
                    v.sort_unstable();
                    v
                }),
            }
        }
        Kind::Reducing => {
            let s = b
                .reducing_state::<VoidNamespace, u64>(
                    &ReducingStateDescriptor::new(name, |a: &u64, b: &u64| a + b).with_ttl(ttl),
                )
                .unwrap();
            let r = s.clone();
            Probe {
                write: Box::new(move |v| s.add(v).unwrap()),
                read: Box::new(move || r.get().unwrap().into_iter().collect()),
            }
        }
        Kind::Aggregating => {
            let s = b
                .aggregating_state::<VoidNamespace, u64, u64, String>(
                    &AggregatingStateDescriptor::new(name, Sum).with_ttl(ttl),
                )
                .unwrap();
            let r = s.clone();
            Probe {
                write: Box::new(move |v| s.add(v).unwrap()),
                read: Box::new(move || {
                    r.get()
                        .unwrap()
                        .map(|s| s.trim_start_matches("sum=").parse().unwrap())
                        .into_iter()
                        .collect()
                }),
            }
        }
    }
}

/// The model: stored (value, last access) items; whole-value kinds hold at most one.
struct Model {
    kind: Kind,
    update: UpdateType,
    vis: StateVisibility,
    items: Vec<(u64, i64)>,
}

impl Model {
    fn expired(&self, ts: i64, now: i64) -> bool {
        self.update != UpdateType::Disabled && ts + TTL <= now
    }

    fn write(&mut self, v: u64, now: i64) {
        match self.kind {
            Kind::Value => self.items = vec![(v, now)],
            Kind::List | Kind::Map => self.items.push((v, now)),
            Kind::Reducing | Kind::Aggregating => {
                let sum = match self.items.first() {
                    Some(&(s, ts)) if !self.expired(ts, now) => s + v,
                    _ => v,
                };
                self.items = vec![(sum, now)];
            }
        }
    }

    fn read(&mut self, now: i64) -> Vec<u64> {
        let return_expired = self.vis == StateVisibility::ReturnExpiredIfNotCleanedUp;
        let refresh = self.update == UpdateType::OnReadAndWrite;
        let mut visible = Vec::new();
        let mut kept = Vec::new();
        for &(v, ts) in &self.items {
            if self.expired(ts, now) {
                if return_expired {
                    visible.push(v);
                }
            } else {
                visible.push(v);
                kept.push((v, if refresh { now } else { ts }));
            }
        }
        self.items = kept;
        visible.sort_unstable();
        visible
    }
}

enum Step {
    Write(u64),
    Read,
}

/// Writes and reads at chosen times: boundaries at exactly `TTL` after a write or a
/// refreshing read, elements of different ages, writes to expired values.
const TIMELINE: &[(i64, Step)] = &[
    (0, Step::Write(1)),
    (60, Step::Write(2)),
    (99, Step::Read),
    (100, Step::Read),
    (101, Step::Read),
    (159, Step::Read),
    (160, Step::Read),
    (170, Step::Write(4)),
    (199, Step::Read),
    (258, Step::Read),
    (259, Step::Read),
    (269, Step::Read),
    (270, Step::Read),
    (300, Step::Write(8)),
    (420, Step::Write(16)),
    (430, Step::Read),
    (529, Step::Read),
    (530, Step::Read),
    (531, Step::Read),
    (1000, Step::Read),
];

/// Table-driven: every kind × update type × visibility, each read of `TIMELINE`
/// compared with the model, so the exact millisecond each value stops being visible is
/// checked (and that expired values are cleaned up on read).
pub fn ttl_visibility_table<F: BackendFactory>(factory: &F) {
    let updates = [
        UpdateType::OnCreateAndWrite,
        UpdateType::OnReadAndWrite,
        UpdateType::Disabled,
    ];
    let visibilities = [
        StateVisibility::NeverReturnExpired,
        StateVisibility::ReturnExpiredIfNotCleanedUp,
    ];
    let b = factory
        .create(config::<u64>(128, KeyGroupRange::all(128).unwrap()))
        .unwrap();
    for kind in KINDS {
        for update in updates {
            for vis in visibilities {
                let clock = ManualClock::new(0);
                let name = format!("{kind:?}-{update:?}-{vis:?}");
                // Background cleanup would legitimately remove expired values that
                // ReturnExpiredIfNotCleanedUp could otherwise still return.
                let ttl = ttl_config(&clock, update, vis).disable_cleanup_in_background();
                let p = probe(&b, kind, &name, ttl);
                let mut model = Model {
                    kind,
                    update,
                    vis,
                    items: Vec::new(),
                };
                b.set_current_key(7).unwrap();
                for (t, step) in TIMELINE {
                    clock.set(*t);
                    match step {
                        Step::Write(v) => {
                            (p.write)(*v);
                            model.write(*v, *t);
                        }
                        Step::Read => {
                            assert_eq!((p.read)(), model.read(*t), "{name} read at t={t}");
                        }
                    }
                }
            }
        }
    }
}

/// Entries written at different times expire at different times: list elements and
/// map entries one by one, under one key, across a snapshot and restore.
pub fn ttl_per_element_expiry<F: BackendFactory>(factory: &F) {
    let (_dir, storage) = temp_storage();
    let clock = ManualClock::new(0);
    let ttl = ttl_config(
        &clock,
        UpdateType::OnCreateAndWrite,
        StateVisibility::NeverReturnExpired,
    );
    let ld = ListStateDescriptor::<u64>::new("l").with_ttl(ttl.clone());
    let md = MapStateDescriptor::<u64, String>::new("m").with_ttl(ttl);
    let b = factory
        .create(config::<u64>(128, KeyGroupRange::all(128).unwrap()))
        .unwrap();
    let l = b.list_state::<VoidNamespace, u64>(&ld).unwrap();
    let m = b.map_state::<VoidNamespace, u64, String>(&md).unwrap();
    b.set_current_key(1).unwrap();
    for i in 0..10u64 {
        clock.set(i as i64 * 10);
        l.add(i).unwrap();
        m.put(i, format!("v{i}")).unwrap();
    }
    m.put(0, "again".into()).unwrap(); // overwrite at t=90 refreshes entry 0
    let h = snapshot_to(&b, &storage, "per-element");
    let r = factory
        .restore(
            config::<u64>(128, KeyGroupRange::all(128).unwrap()),
            &storage,
            &[h],
        )
        .unwrap();
    let l2 = r.list_state::<VoidNamespace, u64>(&ld).unwrap();
    let m2 = r.map_state::<VoidNamespace, u64, String>(&md).unwrap();
    r.set_current_key(1).unwrap();
    for now in [99i64, 100, 105, 150, 189, 190] {
        clock.set(now);
        // Element i was written at 10 i: alive while 10 i + TTL > now.
        let alive: Vec<u64> = (0..10u64).filter(|i| *i as i64 * 10 + TTL > now).collect();
        assert_eq!(l2.get().unwrap(), alive, "list at t={now}");
        let mut keys = m2.keys().unwrap();
        keys.sort_unstable();
        let mut expect = alive.clone();
        if now < 190 && !expect.contains(&0) {
            expect.insert(0, 0);
        }
        assert_eq!(keys, expect, "map at t={now}");
        assert_eq!(
            m2.get(&0).unwrap(),
            (now < 190).then(|| "again".to_string())
        );
    }
}

/// Full-snapshot cleanup: a savepoint taken after half the keys expired holds only the
/// other half (even a state that returns expired values finds nothing of them after
/// restore) and is smaller than the same savepoint without the cleanup.
pub fn ttl_full_snapshot_cleanup<F: BackendFactory>(factory: &F) {
    let (_dir, storage) = temp_storage();
    let clock = ManualClock::new(0);
    // Only full-snapshot cleanup: other cleanups would remove what this checks for.
    let base = ttl_config(
        &clock,
        UpdateType::OnCreateAndWrite,
        StateVisibility::ReturnExpiredIfNotCleanedUp,
    )
    .disable_cleanup_in_background();
    let sizes: Vec<u64> = [true, false]
        .into_iter()
        .map(|cleanup| {
            clock.set(0);
            let ttl = base.clone().with_full_snapshot_cleanup(cleanup);
            let vd = ValueStateDescriptor::<String>::new("v").with_ttl(ttl.clone());
            let ld = ListStateDescriptor::<u64>::new("l").with_ttl(ttl.clone());
            let md = MapStateDescriptor::<u64, u64>::new("m").with_ttl(ttl);
            let all = KeyGroupRange::all(128).unwrap();
            let b = factory.create(config::<u64>(128, all)).unwrap();
            let v = b.value_state::<VoidNamespace, String>(&vd).unwrap();
            let l = b.list_state::<VoidNamespace, u64>(&ld).unwrap();
            let m = b.map_state::<VoidNamespace, u64, u64>(&md).unwrap();
            for k in 0..400u64 {
                clock.set(if k % 2 == 0 { 0 } else { 80 });
                b.set_current_key(k).unwrap();
                v.update(format!("value of key {k} padded to be a bit longer"))
                    .unwrap();
                l.add(k).unwrap();
                m.put(k, k).unwrap();
                m.put(k + 1000, k).unwrap();
            }
            clock.set(150); // even keys expired at 100, odd ones live until 180
            let h = b
                .savepoint()
                .unwrap()
                .write(&storage, &format!("sp-{cleanup}"))
                .unwrap();
            let size = h.size;
            let r = factory
                .restore(config::<u64>(128, all), &storage, &[h])
                .unwrap();
            for name in ["v", "l", "m"] {
                let mut keys = r.keys::<VoidNamespace>(name, &VoidNamespace).unwrap();
                keys.sort_unstable();
                keys.dedup();
                let expect: Vec<u64> = (0..400).filter(|k| !cleanup || k % 2 == 1).collect();
                assert_eq!(keys, expect, "state {name}, cleanup {cleanup}");
            }
            let v2 = r.value_state::<VoidNamespace, String>(&vd).unwrap();
            let l2 = r.list_state::<VoidNamespace, u64>(&ld).unwrap();
            let m2 = r.map_state::<VoidNamespace, u64, u64>(&md).unwrap();
            for k in 0..400u64 {
                r.set_current_key(k).unwrap();
                let gone = cleanup && k % 2 == 0;
                // ReturnExpiredIfNotCleanedUp: expired values left in the snapshot
                // would show up here.
                assert_eq!(v2.value().unwrap().is_none(), gone, "key {k}");
                assert_eq!(l2.get().unwrap().is_empty(), gone, "key {k}");
                assert_eq!(m2.entries().unwrap().len(), if gone { 0 } else { 2 });
            }
            size
        })
        .collect();
    assert!(
        sizes[0] * 10 < sizes[1] * 6,
        "savepoint with cleanup {} bytes, without {} bytes",
        sizes[0],
        sizes[1]
    );
}

/// Restores with TTL switched on (values get the restore time), switched off
/// (timestamps dropped, values kept) and with a changed duration (applies to restored
/// data), for value, list and map state.
pub fn ttl_restore_toggled_and_changed<F: BackendFactory>(factory: &F) {
    let (_dir, storage) = temp_storage();
    let clock = ManualClock::new(0);
    let all = KeyGroupRange::all(128).unwrap();
    let ttl_of = |ms: u64| {
        StateTtlConfig::new(Duration::from_millis(ms))
            .unwrap()
            .with_clock(Arc::new(clock.clone()))
    };
    type Descs = (
        ValueStateDescriptor<u64>,
        ListStateDescriptor<u64>,
        MapStateDescriptor<u64, u64>,
    );
    let descs = |ttl: Option<StateTtlConfig>| -> Descs {
        let (v, l, m) = (
            ValueStateDescriptor::new("v"),
            ListStateDescriptor::new("l"),
            MapStateDescriptor::new("m"),
        );
        match ttl {
            Some(t) => (v.with_ttl(t.clone()), l.with_ttl(t.clone()), m.with_ttl(t)),
            None => (v, l, m),
        }
    };
    let write = |b: &F::Backend<u64>, d: &Descs| {
        let v = b.value_state::<VoidNamespace, u64>(&d.0).unwrap();
        let l = b.list_state::<VoidNamespace, u64>(&d.1).unwrap();
        let m = b.map_state::<VoidNamespace, u64, u64>(&d.2).unwrap();
        for k in 0..50u64 {
            b.set_current_key(k).unwrap();
            v.update(k).unwrap();
            l.add_all(vec![k, k + 1]).unwrap();
            m.put(k, k * 3).unwrap();
        }
    };
    // Reads every key; `true` when all are visible with the right values, `false`
    // when all are gone; anything else fails.
    let visible = |b: &F::Backend<u64>, d: &Descs| -> bool {
        let v = b.value_state::<VoidNamespace, u64>(&d.0).unwrap();
        let l = b.list_state::<VoidNamespace, u64>(&d.1).unwrap();
        let m = b.map_state::<VoidNamespace, u64, u64>(&d.2).unwrap();
        let mut seen = Vec::new();
        for k in 0..50u64 {
            b.set_current_key(k).unwrap();
            let got = (v.value().unwrap(), l.get().unwrap(), m.get(&k).unwrap());
            if got == (None, vec![], None) {
                seen.push(false);
            } else {
                assert_eq!(got, (Some(k), vec![k, k + 1], Some(k * 3)), "key {k}");
                seen.push(true);
            }
        }
        assert!(seen.iter().all(|s| *s == seen[0]), "mixed visibility");
        seen[0]
    };

    // TTL switched on: restored at t=1000, values live until 1000 + 100.
    let a = factory.create(config::<u64>(128, all)).unwrap();
    write(&a, &descs(None));
    let plain = snapshot_to(&a, &storage, "plain");
    for (now, expect) in [(1099, true), (1100, false)] {
        clock.set(1000);
        let r = factory
            .restore(
                config::<u64>(128, all),
                &storage,
                std::slice::from_ref(&plain),
            )
            .unwrap();
        let d = descs(Some(ttl_of(100)));
        write_nothing_but_register(&r, &d);
        clock.set(now);
        assert_eq!(visible(&r, &d), expect, "TTL switched on, read at {now}");
    }

    // Written with TTL at t=0.
    clock.set(0);
    let b = factory.create(config::<u64>(128, all)).unwrap();
    write(&b, &descs(Some(ttl_of(100))));
    let with_ttl = snapshot_to(&b, &storage, "with-ttl");
    let restore = |d: &Descs| {
        let r = factory
            .restore(
                config::<u64>(128, all),
                &storage,
                std::slice::from_ref(&with_ttl),
            )
            .unwrap();
        (visible(&r, d), r)
    };
    // TTL switched off: everything stays, long after it would have expired; a new
    // snapshot of the migrated state restores without TTL too.
    clock.set(1_000_000);
    let (seen, r) = restore(&descs(None));
    assert!(seen, "TTL switched off");
    let migrated = snapshot_to(&r, &storage, "ttl-switched-off");
    let r2 = factory
        .restore(config::<u64>(128, all), &storage, &[migrated])
        .unwrap();
    assert!(visible(&r2, &descs(None)));
    // A longer duration applies to restored data...
    clock.set(500);
    assert!(
        restore(&descs(Some(ttl_of(1000)))).0,
        "ttl raised to 1000 at t=500"
    );
    clock.set(1000);
    assert!(!restore(&descs(Some(ttl_of(1000)))).0, "ttl 1000 at t=1000");
    // ...and so does a shorter one.
    clock.set(50);
    assert!(restore(&descs(Some(ttl_of(51)))).0, "ttl 51 at t=50");
    assert!(!restore(&descs(Some(ttl_of(50)))).0, "ttl 50 at t=50");
}

/// Registers the states of `d` (restored data is migrated at registration).
fn write_nothing_but_register<B: KeyedStateBackend<u64>>(
    b: &B,
    d: &(
        ValueStateDescriptor<u64>,
        ListStateDescriptor<u64>,
        MapStateDescriptor<u64, u64>,
    ),
) {
    b.value_state::<VoidNamespace, u64>(&d.0).unwrap();
    b.list_state::<VoidNamespace, u64>(&d.1).unwrap();
    b.map_state::<VoidNamespace, u64, u64>(&d.2).unwrap();
}
