//! Stable operator identity: state follows `.uid("...")` across job changes (an
//! operator inserted, removed, renamed), snapshots taken before the job had uids still
//! restore, and mistakes are refused with the uids named.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed expectation is a failure

use std::collections::BTreeMap;
use std::path::Path;
use std::rc::Rc;
use std::time::Duration;

use flowstate_core::descriptor::ValueStateDescriptor;
use flowstate_core::state::ValueState;
#[cfg(feature = "rocksdb")]
use flowstate_rocksdb::RocksDbOptions;
use flowstate_runtime::checkpoint::list_checkpoints;
use flowstate_runtime::{
    BackendChoice, CheckpointConfig, JobConfig, KeyedProcessFunction, OpenContext, ProcessContext,
    RuntimeError, WatermarkStrategy, execute, opened,
};
use flowstate_storage::ObjectCheckpointStorage;

/// Running sum per key: emits (key, sum).
#[derive(Default)]
struct Sum(Option<Rc<dyn ValueState<u64>>>);

impl KeyedProcessFunction<u64, (u64, u64), (u64, u64)> for Sum {
    fn open(&mut self, ctx: &OpenContext<'_, u64>) -> Result<(), RuntimeError> {
        self.0 = Some(ctx.value_state(&ValueStateDescriptor::new("sum"))?);
        Ok(())
    }
    fn process_element(
        &mut self,
        (key, v): (u64, u64),
        ctx: &mut ProcessContext<'_, u64, (u64, u64)>,
    ) -> Result<(), RuntimeError> {
        let s = opened(&self.0)?;
        let sum = s.value()?.unwrap_or(0) + v;
        s.update(sum)?;
        ctx.collect((key, sum));
        Ok(())
    }
}

/// Stateful pass-through: counts records per key in a state of the same type as
/// [`Sum`]'s, so state restored onto the wrong operator is read without error (the
/// mix-up shows in the output, not as a type mismatch).
#[derive(Default)]
struct Tag(Option<Rc<dyn ValueState<u64>>>);

impl KeyedProcessFunction<u64, (u64, u64), (u64, u64)> for Tag {
    fn open(&mut self, ctx: &OpenContext<'_, u64>) -> Result<(), RuntimeError> {
        self.0 = Some(ctx.value_state(&ValueStateDescriptor::new("sum"))?);
        Ok(())
    }
    fn process_element(
        &mut self,
        e: (u64, u64),
        ctx: &mut ProcessContext<'_, u64, (u64, u64)>,
    ) -> Result<(), RuntimeError> {
        let s = opened(&self.0)?;
        s.update(s.value()?.unwrap_or(0) + 1)?;
        ctx.collect(e);
        Ok(())
    }
}

/// The shape of one version of the job.
#[derive(Clone, Default)]
struct Version {
    /// Uids of (source, tag operator, sum operator); `None`: no uid.
    source: Option<&'static str>,
    tag: Option<Option<&'static str>>,
    sum: Option<&'static str>,
    /// Events read in total by the end of this version (the source resumes).
    events: u64,
    allow_all: bool,
    allow: Vec<&'static str>,
    backend_rocksdb: bool,
}

const KEYS: u64 = 5;

fn event(i: u64) -> (u64, u64) {
    (i % KEYS, i)
}

/// The backend of a version: RocksDB (its databases beside `ck`) or the heap.
fn backend(ck: &Path, rocksdb: bool) -> BackendChoice {
    #[cfg(feature = "rocksdb")]
    if rocksdb {
        return BackendChoice::RocksDb(RocksDbOptions::new(ck.with_extension("rocksdb-local")));
    }
    assert!(!rocksdb, "a RocksDB version in a build without RocksDB");
    let _ = ck;
    BackendChoice::Heap
}

/// Runs `v` on checkpoint directory `ck` (resuming from its newest checkpoint);
/// returns the highest sum seen per key.
fn run(ck: &Path, v: &Version) -> Result<BTreeMap<u64, u64>, RuntimeError> {
    let mut checkpoints = CheckpointConfig::local(ck, Duration::from_millis(30))?
        .allow_non_restored_state(v.allow_all);
    for uid in &v.allow {
        checkpoints = checkpoints.allow_non_restored_uid(*uid);
    }
    let backend = backend(ck, v.backend_rocksdb);
    let v2 = v.clone();
    let out = execute(
        JobConfig::default()
            .workers(2)
            .backend(backend)
            .checkpointing(checkpoints),
        move |job| {
            let events: Vec<(u64, u64)> = (0..v2.events).map(event).collect();
            let mut s = job.source_vec(events, |e| e.1 as i64, WatermarkStrategy::None);
            if let Some(uid) = v2.source {
                s = s.uid(uid);
            }
            if let Some(tag) = v2.tag {
                let mut t = s.key_by(|e| e.0).process(Tag::default());
                if let Some(uid) = tag {
                    t = t.uid(uid);
                }
                s = t;
            }
            let mut sums = s.key_by(|e| e.0).process(Sum::default());
            if let Some(uid) = v2.sum {
                sums = sums.uid(uid);
            }
            sums.collect()
        },
    )?;
    let mut max = BTreeMap::new();
    for (k, sum) in out.into_iter().flatten() {
        let m = max.entry(k).or_insert(0);
        *m = sum.max(*m);
    }
    Ok(max)
}

/// The sum per key of events `0..n`.
fn expected(n: u64) -> BTreeMap<u64, u64> {
    let mut m = BTreeMap::new();
    for i in 0..n {
        let (k, v) = event(i);
        *m.entry(k).or_insert(0) += v;
    }
    m
}

fn with_uids(events: u64) -> Version {
    Version {
        source: Some("events"),
        sum: Some("sums"),
        events,
        ..Version::default()
    }
}

fn config_error(r: Result<BTreeMap<u64, u64>, RuntimeError>) -> String {
    match r {
        Err(RuntimeError::Config(why)) => why,
        other => panic!("expected a configuration error, got {other:?}"),
    }
}

fn inserted_operator_keeps_state(rocksdb: bool) {
    let tmp = tempfile::tempdir().unwrap();
    let ck = tmp.path().join("ck");
    let v1 = Version {
        backend_rocksdb: rocksdb,
        ..with_uids(1000)
    };
    assert_eq!(run(&ck, &v1).unwrap(), expected(1000));
    // A stateful operator inserted before the summing one, which keeps its uid.
    let v2 = Version {
        tag: Some(Some("tag")),
        events: 2000,
        ..v1
    };
    assert_eq!(run(&ck, &v2).unwrap(), expected(2000));
}

#[test]
fn inserted_operator_keeps_state_by_uid_heap() {
    inserted_operator_keeps_state(false);
}

#[cfg(feature = "rocksdb")]
#[test]
fn inserted_operator_keeps_state_by_uid_rocksdb() {
    inserted_operator_keeps_state(true);
}

/// The control: without uids the inserted operator takes the summing operator's
/// position and with it its state (what uids prevent). Shows the test above can fail.
#[test]
fn without_uids_an_inserted_operator_takes_the_state_of_its_position() {
    let tmp = tempfile::tempdir().unwrap();
    let ck = tmp.path().join("ck");
    let v1 = Version {
        events: 1000,
        ..Version::default()
    };
    assert_eq!(run(&ck, &v1).unwrap(), expected(1000));
    let v2 = Version {
        tag: Some(None),
        events: 2000,
        ..v1
    };
    let got = run(&ck, &v2).unwrap();
    assert_ne!(got, expected(2000));
    // The summing operator started empty: it saw only the new events.
    let mut fresh = expected(2000);
    for (k, v) in expected(1000) {
        *fresh.get_mut(&k).unwrap() -= v;
    }
    assert_eq!(got, fresh);
}

#[test]
fn removed_operator_is_refused_then_dropped_when_allowed() {
    for allow_all in [false, true] {
        let tmp = tempfile::tempdir().unwrap();
        let ck = tmp.path().join("ck");
        let v1 = Version {
            tag: Some(Some("tag")),
            ..with_uids(1000)
        };
        assert_eq!(run(&ck, &v1).unwrap(), expected(1000));
        let v2 = with_uids(2000);
        let why = config_error(run(&ck, &v2));
        assert!(why.contains("tag"), "{why}");
        assert!(!why.contains("sums"), "{why}");
        let allowed = if allow_all {
            Version {
                allow_all: true,
                ..v2
            }
        } else {
            Version {
                allow: vec!["tag"],
                ..v2
            }
        };
        assert_eq!(run(&ck, &allowed).unwrap(), expected(2000));
    }
}

#[test]
fn allowing_another_uid_does_not_drop_this_one() {
    let tmp = tempfile::tempdir().unwrap();
    let ck = tmp.path().join("ck");
    let v1 = Version {
        tag: Some(Some("tag")),
        ..with_uids(1000)
    };
    run(&ck, &v1).unwrap();
    let v2 = Version {
        allow: vec!["other"],
        ..with_uids(2000)
    };
    assert!(config_error(run(&ck, &v2)).contains("tag"));
}

#[test]
fn renamed_uid_is_refused_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let ck = tmp.path().join("ck");
    run(&ck, &with_uids(1000)).unwrap();
    let renamed = Version {
        sum: Some("totals"),
        ..with_uids(2000)
    };
    let why = config_error(run(&ck, &renamed));
    assert!(why.contains("sums"), "{why}");
    // Nothing was lost: the old name still restores.
    assert_eq!(run(&ck, &with_uids(2000)).unwrap(), expected(2000));
}

#[test]
fn checkpoint_from_before_uids_restores_into_a_job_with_uids() {
    let tmp = tempfile::tempdir().unwrap();
    let ck = tmp.path().join("ck");
    let positional = Version {
        events: 1000,
        ..Version::default()
    };
    run(&ck, &positional).unwrap();
    let storage = ObjectCheckpointStorage::existing_local(&ck).unwrap();
    let newest = || list_checkpoints(&storage).unwrap()[0].clone().unwrap();
    let before = newest();
    assert!(before.operators.contains_key("keyed-2"));
    assert!(before.operators.values().all(|o| !o.user_uid));
    // Now with uids: the state stored under the derived ids is taken over.
    assert_eq!(run(&ck, &with_uids(2000)).unwrap(), expected(2000));
    let after = newest();
    assert!(after.operators["sums"].user_uid);
    assert!(after.operators["events"].user_uid);
    assert!(!after.operators.contains_key("keyed-2"));
}

#[test]
fn a_user_uid_is_never_taken_over_by_position() {
    let tmp = tempfile::tempdir().unwrap();
    let ck = tmp.path().join("ck");
    // The snapshot stores the summing operator as "keyed-2" by the user's choice.
    let v1 = Version {
        sum: Some("keyed-2"),
        ..with_uids(1000)
    };
    run(&ck, &v1).unwrap();
    // A job whose operator at that position has another uid does not take it.
    let v2 = Version {
        sum: Some("sums"),
        ..with_uids(2000)
    };
    assert!(config_error(run(&ck, &v2)).contains("keyed-2"));
}

#[test]
fn duplicate_and_malformed_uids_are_configuration_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let dup = Version {
        source: Some("same"),
        sum: Some("same"),
        events: 10,
        ..Version::default()
    };
    let why = config_error(run(&tmp.path().join("a"), &dup));
    assert!(why.contains("same") && why.contains("unique"), "{why}");
    for bad in ["", "../up", "a/b", ".hidden", "sp ace"] {
        let v = Version {
            sum: Some(bad),
            events: 10,
            ..Version::default()
        };
        let why = config_error(run(&tmp.path().join("b"), &v));
        assert!(why.contains("uid"), "{bad:?}: {why}");
    }
}

/// A connector's name becomes its derived id, which names files: a name that could
/// escape the checkpoint directory is refused like a bad uid.
#[test]
fn a_sink_name_that_would_make_a_bad_file_name_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let checkpoints =
        CheckpointConfig::local(tmp.path().join("ck"), Duration::from_millis(30)).unwrap();
    let out = tmp.path().join("out");
    let r = execute(
        JobConfig::default().checkpointing(checkpoints),
        move |job| {
            job.source_vec(vec![1u64, 2], |_| 0, WatermarkStrategy::None)
                .sink_to(
                    "../up",
                    flowstate_runtime::FileSink::new(&out, |x: &u64| x.to_string()),
                );
        },
    );
    match r {
        Err(RuntimeError::Config(why)) => assert!(why.contains("\"../up\""), "{why}"),
        other => panic!("expected a configuration error, got {other:?}"),
    }
}

/// The matrix's first case from a savepoint, as an upgrade is done: the job is stopped
/// with a savepoint mid-run, the new version (an operator inserted before the summing
/// one) restores from it and finishes; every key's sum covers every event.
#[test]
fn inserted_operator_keeps_state_from_a_stop_savepoint() {
    use flowstate_runtime::checkpoint::SavepointFormat;
    use flowstate_runtime::{JobStatus, RestoreFrom, spawn};
    let tmp = tempfile::tempdir().unwrap();
    let ck = tmp.path().join("ck");
    const EVENTS: u64 = 20_000;
    let job = |tag: bool| {
        move |job: &mut flowstate_runtime::Job<'_>| {
            let events: Vec<(u64, u64)> = (0..EVENTS).map(event).collect();
            let mut seen = 0u64;
            let mut s = job
                .source_vec(events, |e| e.1 as i64, WatermarkStrategy::None)
                .uid("events")
                .map(move |e| {
                    seen += 1;
                    if seen.is_multiple_of(20) {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    e
                });
            if tag {
                s = s.key_by(|e| e.0).process(Tag::default()).uid("tag");
            }
            s.key_by(|e| e.0)
                .process(Sum::default())
                .uid("sums")
                .collect()
        }
    };
    let config = |restore: RestoreFrom| {
        JobConfig::default().workers(2).checkpointing(
            CheckpointConfig::local(&ck, Duration::from_millis(50))
                .unwrap()
                .restore(restore),
        )
    };
    let v1 = spawn(config(RestoreFrom::Latest), job(false)).unwrap();
    v1.handle.wait_for(Duration::from_secs(60), |s| {
        matches!(s, JobStatus::Running { .. })
    });
    let sp = v1
        .handle
        .stop_with_savepoint(SavepointFormat::Canonical)
        .unwrap();
    let before: Vec<(u64, u64)> = v1.join().unwrap().into_iter().flatten().collect();
    assert!((before.len() as u64) < EVENTS, "stopped mid-run");
    let after = execute(
        config(RestoreFrom::Path(sp.path.unwrap().into())),
        job(true),
    )
    .unwrap();
    let mut max = BTreeMap::new();
    for (k, sum) in before.into_iter().chain(after.into_iter().flatten()) {
        let m = max.entry(k).or_insert(0);
        *m = sum.max(*m);
    }
    assert_eq!(max, expected(EVENTS));
}
