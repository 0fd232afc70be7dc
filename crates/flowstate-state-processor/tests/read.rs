//! Reading a known job's checkpoint without its code: the dump (through the stored
//! schemas) and the typed reads equal what the job wrote, for every keyed state kind,
//! timers and operator state, on the heap backend (canonical snapshots) and on
//! RocksDB (native incremental snapshots read through a temporary instance); the
//! filters select exactly what they name.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed expectation is a failure

mod common;

use std::collections::BTreeMap;

use common::{Expected, input, model, run_stats};
use flowstate_core::keygroup::key_group_for_serialized_key;
use flowstate_core::snapshot::SnapshotFormat;
use flowstate_state_processor::describe::describe;
use flowstate_state_processor::{
    DumpFilter, DumpFormat, Snapshot, dump, read_lists, read_maps, read_values, records,
};
use serde_json::{Value, json};

#[test]
fn a_dump_equals_what_the_job_wrote_on_both_backends() {
    for rocksdb in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let input = input(50, 3000);
        let ck = run_stats(dir.path(), rocksdb, 2, input.clone());
        let snapshot = Snapshot::open(&ck).unwrap();
        let format = snapshot.operator("stats").unwrap().keyed[0].format;
        let expect_format = if rocksdb {
            SnapshotFormat::RocksDbNative
        } else {
            SnapshotFormat::Canonical
        };
        assert_eq!(format, expect_format);

        let mut got: BTreeMap<String, Expected> = BTreeMap::new();
        let mut consumed = 0;
        let mut splits = 0;
        for r in common::dump_all(&snapshot, &DumpFilter::default()) {
            if r.operator == "events" {
                assert_eq!(r.state, "source-splits");
                assert_eq!(r.mode.as_deref(), Some("list"));
                let v = r.value.unwrap();
                assert_eq!(v["position"]["Seq"]["of"], json!(2));
                consumed += v["position"]["Seq"]["consumed"].as_u64().unwrap();
                splits += 1;
                continue;
            }
            assert_eq!(r.operator, "stats");
            let key = r.key.as_ref().and_then(Value::as_str).unwrap().to_string();
            let kg = key_group_for_serialized_key(&postcard::to_stdvec(&key).unwrap(), 128);
            assert_eq!(r.key_group, Some(kg), "key group of {key}");
            assert_eq!(r.namespace, None);
            let e = got.entry(key).or_default();
            let v = r.value.clone().unwrap_or(Value::Null);
            match r.state.as_str() {
                "max" => e.max = v.as_u64().unwrap(),
                "seen" => {
                    e.seen = serde_json::from_value(v).unwrap();
                    e.seen.sort_unstable();
                }
                "by-parity" => {
                    for (p, n) in v.as_object().unwrap() {
                        e.by_parity.insert(p.parse().unwrap(), n.as_u64().unwrap());
                    }
                }
                "sum" => e.sum = v.as_u64().unwrap(),
                "count-sum" => e.count_sum = serde_json::from_value(v).unwrap(),
                "_timer_state/processing" => {
                    assert_eq!(r.kind.as_deref(), Some("processing timers"));
                    e.timers = r
                        .timers
                        .unwrap()
                        .iter()
                        .map(|t| t.as_i64().unwrap())
                        .collect();
                    e.timers.sort_unstable();
                }
                other => panic!("unexpected state {other}: {r:?}"),
            }
        }
        assert_eq!(got, model(&input), "rocksdb: {rocksdb}");
        assert_eq!((splits, consumed), (2, input.len() as u64));

        // The typed reads see the same.
        let m = model(&input);
        let maxes: BTreeMap<String, u64> = read_values(&snapshot, "stats", "max")
            .unwrap()
            .into_iter()
            .collect();
        assert_eq!(maxes, m.iter().map(|(k, e)| (k.clone(), e.max)).collect());
        let acc: BTreeMap<String, (u64, u64)> = read_values(&snapshot, "stats", "count-sum")
            .unwrap()
            .into_iter()
            .collect();
        assert_eq!(
            acc,
            m.iter().map(|(k, e)| (k.clone(), e.count_sum)).collect()
        );
        let seen: BTreeMap<String, Vec<u64>> = read_lists(&snapshot, "stats", "seen")
            .unwrap()
            .into_iter()
            .map(|(k, mut v): (String, Vec<u64>)| {
                v.sort_unstable();
                (k, v)
            })
            .collect();
        assert_eq!(
            seen,
            m.iter().map(|(k, e)| (k.clone(), e.seen.clone())).collect()
        );
        let parity: BTreeMap<String, BTreeMap<u8, u64>> =
            read_maps(&snapshot, "stats", "by-parity")
                .unwrap()
                .into_iter()
                .map(|(k, v): (String, Vec<(u8, u64)>)| (k, v.into_iter().collect()))
                .collect();
        assert_eq!(
            parity,
            m.iter()
                .map(|(k, e)| (k.clone(), e.by_parity.clone()))
                .collect()
        );
        // A wrong type is an error, not a panic or garbage.
        assert!(read_values::<u64, u64>(&snapshot, "stats", "max").is_err());
        assert!(read_values::<String, u64>(&snapshot, "stats", "seen").is_err());

        // Describe counts what the dump shows.
        let d = describe(&snapshot, Some("stats"), true).unwrap();
        let max = d.operators[0]
            .keyed_states
            .iter()
            .find(|s| s.name == "max")
            .unwrap();
        assert_eq!(max.entries, 50);
        assert_eq!(max.key_groups.values().map(|g| g.entries).sum::<u64>(), 50);
        let timers = d.operators[0]
            .keyed_states
            .iter()
            .find(|s| s.kind == "processing timers")
            .unwrap();
        assert_eq!(
            timers.items,
            m.values().map(|e| e.timers.len() as u64).sum::<u64>()
        );
    }
}

#[test]
fn filters_select_one_key_one_state_and_key_groups() {
    let dir = tempfile::tempdir().unwrap();
    let input = input(40, 1000);
    let ck = run_stats(dir.path(), false, 2, input.clone());
    let snapshot = Snapshot::open(&ck).unwrap();
    let m = model(&input);

    let one = common::dump_all(
        &snapshot,
        &DumpFilter {
            uid: Some("stats".into()),
            state: Some("sum".into()),
            key: Some(json!("k7")),
            ..DumpFilter::default()
        },
    );
    assert_eq!(one.len(), 1);
    assert_eq!(one[0].value, Some(json!(m["k7"].sum)));

    let range = flowstate_core::keygroup::KeyGroupRange::new(10, 60).unwrap();
    let some = common::dump_all(
        &snapshot,
        &DumpFilter {
            state: Some("max".into()),
            key_groups: Some(range),
            ..DumpFilter::default()
        },
    );
    let expect = m
        .keys()
        .filter(|k| {
            range.contains(key_group_for_serialized_key(
                &postcard::to_stdvec(k).unwrap(),
                128,
            ))
        })
        .count();
    assert!(expect > 0 && expect < 40);
    assert_eq!(some.len(), expect);
    assert!(
        some.iter()
            .all(|r| r.state == "max" && range.contains(r.key_group.unwrap()))
    );

    // CSV: a header and one line per record.
    let mut out = Vec::new();
    let stats = dump(
        &snapshot,
        &DumpFilter {
            uid: Some("stats".into()),
            state: Some("max".into()),
            ..DumpFilter::default()
        },
        DumpFormat::Csv,
        &mut out,
        |_| {},
    )
    .unwrap();
    let text = String::from_utf8(out).unwrap();
    assert_eq!(stats.records, 40);
    assert_eq!(text.lines().count(), 41);
    assert!(text.starts_with("operator,state,kind,key_group,key,namespace,value\n"));
    assert!(text.contains("stats,max,value,"));
}

#[test]
fn unknown_names_are_errors_not_empty_dumps() {
    let dir = tempfile::tempdir().unwrap();
    let ck = run_stats(dir.path(), false, 1, input(5, 20));
    let snapshot = Snapshot::open(&ck).unwrap();
    for filter in [
        DumpFilter {
            state: Some("nope".into()),
            ..DumpFilter::default()
        },
        DumpFilter {
            uid: Some("nope".into()),
            ..DumpFilter::default()
        },
    ] {
        let e = records(&snapshot, &filter, |_| Ok(()), |_| {}).unwrap_err();
        assert!(e.to_string().contains("nope"), "{e}");
    }
}

#[test]
fn namespaced_state_shows_its_namespace() {
    use flowstate_core::serializer::{SerdeSerializer, TypeSerializer};
    use flowstate_core::snapshot::StateMetaInfo;
    use flowstate_core::state::StateKind;
    use flowstate_runtime::TimeWindow;
    use flowstate_state_processor::SavepointWriter;

    let dir = tempfile::tempdir().unwrap();
    let mut w = SavepointWriter::new(128, 1).unwrap();
    let op = w.operator("win").unwrap();
    op.keyed(SerdeSerializer::<String>::new().snapshot())
        .unwrap();
    let id = op
        .state(StateMetaInfo::new::<TimeWindow>(
            "_window_contents",
            StateKind::Reducing,
            SerdeSerializer::<u64>::new().snapshot(),
            None,
        ))
        .unwrap();
    let key = postcard::to_stdvec("a").unwrap();
    let ns = postcard::to_stdvec(&TimeWindow::new(0, 10)).unwrap();
    w.put("win", id, &key, &ns, &postcard::to_stdvec(&5u64).unwrap())
        .unwrap();
    let written = w.write(dir.path()).unwrap();
    let rs = common::dump_all(
        &Snapshot::open(&written.path).unwrap(),
        &DumpFilter::default(),
    );
    assert_eq!(rs.len(), 1);
    assert_eq!(rs[0].kind.as_deref(), Some("reducing"));
    assert_eq!(rs[0].namespace, Some(json!({"start": 0, "end": 10})));
    assert_eq!(rs[0].value, Some(json!(5)));
}

#[test]
fn ttl_state_is_described_and_dumped_with_its_timestamps() {
    use flowstate_core::serializer::{SerdeSerializer, TypeSerializer};
    use flowstate_core::snapshot::StateMetaInfo;
    use flowstate_core::state::{StateKind, VoidNamespace};
    use flowstate_core::ttl::{ManualClock, TtlSerializer, TtlValue};
    use flowstate_state_processor::SavepointWriter;

    let dir = tempfile::tempdir().unwrap();
    let ttl = TtlSerializer::new(
        SerdeSerializer::<u32>::arc(),
        std::sync::Arc::new(ManualClock::new(0)),
    );
    let mut w = SavepointWriter::new(128, 1).unwrap();
    let op = w.operator("op").unwrap();
    op.keyed(SerdeSerializer::<String>::new().snapshot())
        .unwrap();
    let id = op
        .state(StateMetaInfo::new::<VoidNamespace>(
            "last-seen",
            StateKind::Value,
            ttl.snapshot(),
            None,
        ))
        .unwrap();
    let mut value = Vec::new();
    ttl.serialize_into(
        &TtlValue {
            value: 9,
            last_access: 1234,
        },
        &mut value,
    )
    .unwrap();
    w.put("op", id, &postcard::to_stdvec("k").unwrap(), &[], &value)
        .unwrap();
    let snapshot = Snapshot::open(w.write(dir.path()).unwrap().path).unwrap();
    let d = describe(&snapshot, None, true).unwrap();
    let s = &d.operators[0].keyed_states[0];
    assert!(s.ttl, "{s:?}");
    assert_eq!((s.value.as_str(), s.entries), ("u32", 1));
    let rs = common::dump_all(&snapshot, &DumpFilter::default());
    assert_eq!(
        rs[0].value,
        Some(json!({"ttl_last_access_ms": 1234, "value": 9}))
    );
    // The typed read skips the timestamp.
    let v: Vec<(String, u32)> = read_values(&snapshot, "op", "last-seen").unwrap();
    assert_eq!(v, vec![("k".to_string(), 9)]);
}
