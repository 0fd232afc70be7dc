//! Writing savepoints a job restores: bootstrapped state continues exactly where the
//! bootstrap left it; a max-parallelism chain 128 → 4096 → 256 restores every key
//! exactly once on the instance owning its new key group, at several parallelisms and
//! on both backends; dropped and renamed uids restore as a job expects, with and
//! without allowing non-restored state.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed expectation is a failure

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::{SumsRun, input};
use flowstate_core::keygroup::{key_group_for_serialized_key, key_group_range_for_operator};
use flowstate_state_processor::{
    Bootstrap, DumpFilter, Snapshot, Transform, TransformPlan, transform,
};

fn sums_run<'a>(dir: &'a Path, ck: &'a str, max_p: u32, workers: usize) -> SumsRun<'a> {
    SumsRun {
        dir,
        ck,
        rocksdb: false,
        workers,
        max_parallelism: max_p,
        from: None,
        uid: "sums",
        allow_non_restored: false,
    }
}

/// Final sums per key of a sorted `(key, running sum)` output.
fn finals(out: &[(String, u64)]) -> BTreeMap<String, u64> {
    let mut m = BTreeMap::new();
    for (k, s) in out {
        let e = m.entry(k.clone()).or_insert(0);
        *e = (*e).max(*s);
    }
    m
}

fn model_sums(input: &[(String, u64)], start: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    let mut m = start.clone();
    for (k, v) in input {
        *m.entry(k.clone()).or_insert(0) += v;
    }
    m
}

#[test]
fn a_bootstrapped_savepoint_is_where_the_job_continues_from() {
    for rocksdb in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let start: BTreeMap<String, u64> = (0..30).map(|i| (format!("k{i}"), 1000 * i)).collect();
        let mut b = Bootstrap::new(128, 3).unwrap();
        b.value_state("sums", "sum", start.clone()).unwrap();
        let written = b.write(&dir.path().join("boot")).unwrap();
        assert_eq!(written.entries, 30);
        assert!(written.path.ends_with("savepoints/sp-1"));
        // The directory written into opens as its newest savepoint.
        let opened = Snapshot::open(dir.path().join("boot")).unwrap();
        assert_eq!(opened.path(), written.path.canonicalize().unwrap());

        let input = input(40, 800);
        let run = SumsRun {
            rocksdb,
            from: Some(written.path.clone()),
            ..sums_run(dir.path(), "ck", 128, 2)
        };
        let out = run.run(input.clone()).unwrap();
        // Every output sum continues from the bootstrapped value: the first record
        // of a key shows start + v, and the last the model's total.
        assert_eq!(
            finals(&out),
            model_sums(&input, &start),
            "rocksdb: {rocksdb}"
        );
        for (k, v) in input.iter().take(40) {
            let first = start.get(k).copied().unwrap_or(0) + v;
            assert!(out.contains(&(k.clone(), first)), "{k}: first sum {first}");
        }
    }
}

#[test]
fn json_lines_bootstrap_every_kind_timers_and_operator_state() {
    let dir = tempfile::tempdir().unwrap();
    let lines = r#"
{"declare": {"operator": "stats", "state": "max", "kind": "value", "key": "str", "value": "u64"}}
{"declare": {"operator": "stats", "state": "seen", "kind": "list", "key": "str", "value": "u64"}}
{"declare": {"operator": "stats", "state": "by-parity", "kind": "map", "key": "str", "user_key": "u8", "value": "u64"}}
{"declare": {"operator": "events", "state": "notes", "mode": "list", "value": {"tuple": ["str", "i64"]}}}
{"declare": {"operator": "events", "state": "rules", "mode": "broadcast", "key": "str", "value": "i64"}}
{"operator": "events", "state": "rules", "key": "r", "value": 1}
{"operator": "events", "state": "rules", "key": "r", "value": 2}
{"operator": "stats", "state": "max", "key": "a", "value": 7}
{"operator": "stats", "state": "max", "key": "b", "value": 9}
{"operator": "stats", "state": "seen", "key": "a", "value": [1, 2]}
{"operator": "stats", "state": "seen", "key": "a", "value": [3]}
{"operator": "stats", "state": "by-parity", "key": "a", "value": {"0": 1, "1": 2}}
{"operator": "stats", "state": "_timer_state/event", "key": "a", "timers": [100, 200]}
{"operator": "events", "state": "notes", "mode": "list", "value": ["x", -5]}
"#;
    let mut b = Bootstrap::new(256, 2).unwrap();
    assert_eq!(b.json_lines(lines.as_bytes(), "test").unwrap(), 9);
    let w = b.write(&dir.path().join("out")).unwrap();
    let snapshot = Snapshot::open(&w.path).unwrap();
    let got: Vec<String> = common::dump_all(&snapshot, &DumpFilter::default())
        .iter()
        .map(|r| {
            let mut r = r.clone();
            r.key_group = None;
            if let Some(t) = r.timers.as_mut() {
                t.sort_by_key(|t| t.as_i64());
            }
            serde_json::to_string(&r).unwrap()
        })
        .collect();
    let mut got = got;
    got.sort();
    let mut expect = vec![
        r#"{"operator":"stats","state":"max","kind":"value","key":"a","value":7}"#,
        r#"{"operator":"stats","state":"max","kind":"value","key":"b","value":9}"#,
        r#"{"operator":"stats","state":"seen","kind":"list","key":"a","value":[1,2,3]}"#,
        r#"{"operator":"stats","state":"by-parity","kind":"map","key":"a","value":{"0":1,"1":2}}"#,
        r#"{"operator":"stats","state":"_timer_state/event","kind":"event timers","key":"a","timers":[100,200]}"#,
        r#"{"operator":"events","state":"notes","mode":"list","value":["x",-5]}"#,
        r#"{"operator":"events","state":"rules","mode":"broadcast","key":"r","value":2}"#,
    ];
    expect.sort();
    assert_eq!(got, expect);

    // Malformed input: a typed error naming the line, nothing written.
    for (bad, why) in [
        (
            r#"{"operator": "stats", "state": "max", "key": "a", "value": 1}"#,
            "not declared",
        ),
        (
            "{\"declare\": {\"operator\": \"s\", \"state\": \"m\", \"kind\": \"value\", \"key\": \"str\", \"value\": \"u8\"}}\n{\"operator\": \"s\", \"state\": \"m\", \"key\": \"a\", \"value\": 300}",
            "out of range for u8",
        ),
        ("{not json", "test:1"),
    ] {
        let mut b = Bootstrap::new(128, 1).unwrap();
        let e = b
            .json_lines(bad.as_bytes(), "test")
            .unwrap_err()
            .to_string();
        assert!(e.contains(why), "{e}");
    }
}

#[test]
fn max_parallelism_128_to_4096_to_256_restores_every_key_once_where_it_belongs() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let first = input(300, 3000);
    sums_run(d, "ck-128", 128, 2).run(first.clone()).unwrap();
    let mut expect = model_sums(&first, &BTreeMap::new());
    let mut from = Snapshot::open(d.join("ck-128"))
        .unwrap()
        .path()
        .to_path_buf();
    for (i, (max_p, rocksdb, parallelisms)) in [(4096u32, true, [3usize, 1]), (256, false, [4, 2])]
        .into_iter()
        .enumerate()
    {
        let input_snapshot = Snapshot::open(&from).unwrap();
        // The source's position is left out: the next run reads new input.
        let plan = TransformPlan {
            max_parallelism: Some(max_p),
            transforms: vec![Transform::DropOperator("events".into())],
            ..TransformPlan::default()
        };
        let w = transform(
            &input_snapshot,
            &plan,
            &d.join(format!("sp-{max_p}")),
            |_, _| {},
        )
        .unwrap();
        let out = Snapshot::open(&w.path).unwrap();
        assert_eq!(out.max_parallelism(), max_p);
        // Every key once, in its key group under the new max parallelism, with its
        // value; and in the file of the instance that owns that key group.
        let sums = common::dump_all(
            &out,
            &DumpFilter {
                uid: Some("sums".into()),
                ..DumpFilter::default()
            },
        );
        let mut seen = BTreeMap::new();
        for r in &sums {
            let key = r.key.as_ref().unwrap().as_str().unwrap().to_string();
            let kg = key_group_for_serialized_key(&postcard::to_stdvec(&key).unwrap(), max_p);
            assert_eq!(r.key_group, Some(kg));
            assert!(
                seen.insert(key, r.value.clone().unwrap().as_u64().unwrap())
                    .is_none()
            );
        }
        assert_eq!(seen, expect, "step {i}: every key once, with its value");
        for (p, h) in out.operator("sums").unwrap().keyed.iter().enumerate() {
            let range =
                key_group_range_for_operator(max_p, out.metadata().parallelism, p as u32).unwrap();
            assert_eq!(h.key_group_range, range);
        }
        // The job restores it at several parallelisms and continues exactly.
        let restored = expect.clone();
        for workers in parallelisms {
            let more = input(300, 500);
            let run = SumsRun {
                rocksdb,
                from: Some(w.path.clone()),
                ..sums_run(d, "scratch", max_p, workers)
            };
            let ck = format!("ck-{max_p}-{workers}");
            let run = SumsRun { ck: &ck, ..run };
            let got = finals(&run.run(more.clone()).unwrap());
            assert_eq!(
                got,
                model_sums(&more, &restored),
                "max parallelism {max_p} at {workers} workers"
            );
            if workers == parallelisms[0] {
                // Its final checkpoint is the next step's input.
                expect = got;
                from = Snapshot::open(d.join(&ck)).unwrap().path().to_path_buf();
            }
        }
        // A max parallelism the job does not have is refused, not mixed.
        let wrong = SumsRun {
            from: Some(w.path.clone()),
            ..sums_run(d, "ck-wrong", 128, 1)
        };
        assert!(wrong.run(input(3, 3)).is_err());
    }
}

#[test]
fn dropped_and_renamed_uids_restore_as_a_job_expects() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let first = input(20, 400);
    sums_run(d, "ck", 128, 2).run(first.clone()).unwrap();
    let base = model_sums(&first, &BTreeMap::new());
    // The source's position is left out: the next runs read new input.
    let without_source = transform(
        &Snapshot::open(d.join("ck")).unwrap(),
        &TransformPlan {
            transforms: vec![Transform::DropOperator("events".into())],
            ..TransformPlan::default()
        },
        &d.join("base"),
        |_, _| {},
    )
    .unwrap();
    let snapshot = Snapshot::open(&without_source.path).unwrap();
    let more = input(20, 100);
    let fresh = model_sums(&more, &BTreeMap::new());
    let continued = model_sums(&more, &base);

    // Renamed: the operator with the new uid takes the state.
    let renamed = transform(
        &snapshot,
        &TransformPlan {
            transforms: vec![Transform::RenameOperator {
                from: "sums".into(),
                to: "totals".into(),
            }],
            ..TransformPlan::default()
        },
        &d.join("renamed"),
        |_, _| {},
    )
    .unwrap();
    let with = |uid, ck, allow| SumsRun {
        from: Some(renamed.path.clone()),
        uid,
        ck,
        allow_non_restored: allow,
        ..sums_run(d, "", 128, 2)
    };
    assert_eq!(
        finals(&with("totals", "a", false).run(more.clone()).unwrap()),
        continued
    );
    // The old uid finds nothing of its own and `totals` is left over: refused, or
    // with non-restored state allowed, a fresh start.
    let e = with("sums", "b", false)
        .run(more.clone())
        .unwrap_err()
        .to_string();
    assert!(e.contains("totals"), "{e}");
    assert_eq!(
        finals(&with("sums", "c", true).run(more.clone()).unwrap()),
        fresh
    );

    // Dropped: the job starts that operator empty, no permission needed; the
    // original (which still has it) needs permission to be restored into a job
    // without it.
    let dropped = transform(
        &snapshot,
        &TransformPlan {
            transforms: vec![Transform::DropOperator("sums".into())],
            ..TransformPlan::default()
        },
        &d.join("dropped"),
        |_, _| {},
    )
    .unwrap();
    let run = SumsRun {
        from: Some(dropped.path.clone()),
        ck: "d",
        ..sums_run(d, "", 128, 2)
    };
    assert_eq!(finals(&run.run(more.clone()).unwrap()), fresh);
    let original = |ck, allow| SumsRun {
        from: Some(snapshot.path().to_path_buf()),
        uid: "other",
        ck,
        allow_non_restored: allow,
        ..sums_run(d, "", 128, 2)
    };
    assert!(original("e", false).run(more.clone()).is_err());
    assert_eq!(
        finals(&original("f", true).run(more.clone()).unwrap()),
        fresh
    );

    // Unknown names are refused before anything is written.
    for t in [
        Transform::DropOperator("nope".into()),
        Transform::DropState {
            uid: "sums".into(),
            state: "nope".into(),
        },
    ] {
        let plan = TransformPlan {
            transforms: vec![t],
            ..TransformPlan::default()
        };
        assert!(transform(&snapshot, &plan, &d.join("never"), |_, _| {}).is_err());
    }
    assert!(!d.join("never").join("savepoints").exists());
}

#[test]
fn state_level_transforms_drop_rename_filter_and_migrate() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let data = input(12, 240);
    let ck = common::run_stats(d, true, 2, data.clone());
    let snapshot = Snapshot::open(&ck).unwrap();
    let m = common::model(&data);
    let plan = TransformPlan {
        transforms: vec![
            Transform::DropState {
                uid: "stats".into(),
                state: "seen".into(),
            },
            Transform::RenameState {
                uid: "stats".into(),
                from: "max".into(),
                to: "maximum".into(),
            },
            Transform::drop_keys(Some("stats".into()), vec![serde_json::json!("k3")]),
            Transform::migrate("stats", "sum", |s: u64| format!("total {s}")),
            Transform::RenameState {
                uid: "events".into(),
                from: "source-splits".into(),
                to: "positions".into(),
            },
        ],
        parallelism: Some(3),
        ..TransformPlan::default()
    };
    let w = transform(&snapshot, &plan, &d.join("out"), |_, _| {}).unwrap();
    let out = Snapshot::open(&w.path).unwrap();
    assert_eq!(out.metadata().parallelism, 3);
    let rs = common::dump_all(&out, &DumpFilter::default());
    assert!(rs.iter().all(|r| r.state != "seen" && r.state != "max"));
    assert!(rs.iter().all(|r| r.key != Some(serde_json::json!("k3"))));
    let maximum: BTreeMap<String, u64> =
        flowstate_state_processor::read_values(&out, "stats", "maximum")
            .unwrap()
            .into_iter()
            .collect();
    let mut expect: BTreeMap<String, u64> = m.iter().map(|(k, e)| (k.clone(), e.max)).collect();
    expect.remove("k3");
    assert_eq!(maximum, expect);
    let sums: BTreeMap<String, String> =
        flowstate_state_processor::read_values(&out, "stats", "sum")
            .unwrap()
            .into_iter()
            .collect();
    assert_eq!(sums.len(), 11);
    for (k, s) in &sums {
        assert_eq!(s, &format!("total {}", m[k].sum));
    }
    // Operator list state renamed and split anew over 3 files: all of it, once.
    let positions: Vec<_> = rs.iter().filter(|r| r.state == "positions").collect();
    assert_eq!(positions.len(), 2);
    assert_eq!(out.operator("events").unwrap().operator.len(), 3);
    // A rename onto an existing name is refused.
    let clash = TransformPlan {
        transforms: vec![Transform::RenameState {
            uid: "stats".into(),
            from: "max".into(),
            to: "sum".into(),
        }],
        ..TransformPlan::default()
    };
    assert!(transform(&snapshot, &clash, &d.join("clash"), |_, _| {}).is_err());
}
