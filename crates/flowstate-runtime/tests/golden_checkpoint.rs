//! Committed checkpoints that every later version must keep reading, field by field:
//! version 1 (`tests/golden/v1/chk-1/`: `_metadata`, keyed snapshots, source
//! positions, sink transactions; operators under ids derived from their position) and
//! version 2 (`tests/golden/v2/chk-1/`: operators under user-given uids, a
//! user-defined source's positions) and version 3 (`tests/golden/v3/chk-1/`: alignment
//! time and in-flight bytes per operator). Each is the final checkpoint of a small 2-worker
//! job on the heap backend. Fixtures are never rewritten: a new format version adds a
//! directory, written once with
//! `FLOWSTATE_BLESS=v<N> cargo test --release --workspace --test golden_checkpoint`
//! (only when that directory does not exist yet).
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed expectation is a failure

use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Duration;

use flowstate_core::backend::{KeyedBackendConfig, KeyedStateBackend};
use flowstate_core::descriptor::{ListStateDescriptor, ValueStateDescriptor};
use flowstate_core::keygroup::KeyGroupRange;
use flowstate_core::operator::OperatorStateStore;
use flowstate_core::serializer::SerdeSerializer;
use flowstate_core::state::{ListState, ValueState, VoidNamespace};
use flowstate_heap::HeapKeyedStateBackend;
use flowstate_runtime::checkpoint::read_metadata;
use flowstate_runtime::{
    BoxError, CheckpointConfig, JobConfig, KeyedProcessFunction, OpenContext, ProcessContext, Read,
    RuntimeError, SINK_TRANSACTIONS_STATE, SOURCE_SPLITS_STATE, SinkTransaction, SnapshotKind,
    SplitPosition, SplitReader, SplitSource, SplitState, WatermarkStrategy, execute, opened,
};
use flowstate_storage::ObjectCheckpointStorage;

const KEYS: u64 = 4;
const EVENTS: u64 = 40;

/// Sum of values per key.
#[derive(Default)]
struct Sum {
    sum: Option<Rc<dyn ValueState<u64>>>,
}

impl KeyedProcessFunction<u64, (u64, u64), String> for Sum {
    fn open(&mut self, ctx: &OpenContext<'_, u64>) -> Result<(), RuntimeError> {
        self.sum = Some(ctx.value_state(&ValueStateDescriptor::new("sum"))?);
        Ok(())
    }
    fn process_element(
        &mut self,
        (key, v): (u64, u64),
        ctx: &mut ProcessContext<'_, u64, String>,
    ) -> Result<(), RuntimeError> {
        let s = opened(&self.sum)?;
        let sum = s.value()?.unwrap_or(0) + v;
        s.update(sum)?;
        ctx.collect(format!("{key} {sum}"));
        Ok(())
    }
}

fn golden_root() -> PathBuf {
    // At run time: the compiled-in path is that of whichever checkout built a cached
    // test binary (cargo sets CARGO_MANIFEST_DIR for the tests it runs).
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(
            || Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf(),
            PathBuf::from,
        )
        .join("tests/golden")
}

fn golden() -> PathBuf {
    golden_root().join("v1")
}

/// Writes a fixture once: `FLOWSTATE_BLESS=<version>` names the version, and an
/// existing fixture is never overwritten.
fn bless_once(version: &str, write: impl FnOnce(&Path)) {
    if std::env::var("FLOWSTATE_BLESS").ok().as_deref() != Some(version) {
        return;
    }
    let dest = golden_root().join(version).join("chk-1");
    if dest.exists() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    write(tmp.path());
    std::fs::create_dir_all(&dest).unwrap();
    for e in std::fs::read_dir(tmp.path().join("ck/chk-1"))
        .unwrap()
        .flatten()
    {
        std::fs::copy(e.path(), dest.join(e.file_name())).unwrap();
    }
}

/// The version-1 fixture's job (today it would write version 2: kept to document
/// what wrote the fixture).
fn v1_job(dir: &Path) {
    let ck = dir.join("ck");
    let out = dir.join("out");
    let checkpoints = CheckpointConfig::local(&ck, Duration::from_secs(3600)).unwrap();
    execute(
        JobConfig::default().workers(2).checkpointing(checkpoints),
        move |job| {
            let events: Vec<(u64, u64)> = (0..EVENTS).map(|i| (i % KEYS, i)).collect();
            job.source_vec(
                events,
                |e| e.1 as i64,
                WatermarkStrategy::BoundedOutOfOrderness(0),
            )
            .key_by(|e| e.0)
            .process(Sum::default())
            .write_text_files(&out, |l: &String| l.clone());
        },
    )
    .unwrap();
}

#[test]
fn checkpoint_v1_reads_back() {
    bless_once("v1", v1_job);
    let m = read_metadata(golden().join("chk-1")).unwrap();
    assert_eq!(m.version, 1);
    assert_eq!(m.id, 1);
    assert_eq!(m.kind, SnapshotKind::Checkpoint);
    assert_eq!(m.location, "chk-1");
    assert!(m.finished);
    assert_eq!((m.parallelism, m.max_parallelism), (2, 128));
    let uids: Vec<&str> = m.operators.keys().map(String::as_str).collect();
    assert_eq!(uids, ["file-sink-3", "keyed-2", "source-1"]);
    let storage = ObjectCheckpointStorage::local(golden()).unwrap();

    // Keyed state: both instances' key groups, every key's sum.
    let keyed = &m.operators["keyed-2"].keyed;
    let ranges: Vec<(u32, u32)> = keyed
        .iter()
        .map(|h| (h.key_group_range.start(), h.key_group_range.end().unwrap()))
        .collect();
    assert_eq!(ranges, [(0, 63), (64, 127)]);
    let backend = HeapKeyedStateBackend::restore(
        KeyedBackendConfig {
            max_parallelism: 128,
            key_group_range: KeyGroupRange::new(0, 127).unwrap(),
            key_serializer: SerdeSerializer::<u64>::arc(),
        },
        &storage,
        keyed,
    )
    .unwrap();
    let sum = backend
        .value_state::<VoidNamespace, u64>(&ValueStateDescriptor::new("sum"))
        .unwrap();
    for key in 0..KEYS {
        backend.set_current_key(key).unwrap();
        let expected: u64 = (0..EVENTS).filter(|i| i % KEYS == key).sum();
        assert_eq!(sum.value().unwrap(), Some(expected), "key {key}");
    }

    // Source positions: every split read to its end, with its largest event time.
    let mut splits: Vec<SplitState> = Vec::new();
    for h in &m.operators["source-1"].operator {
        let store = OperatorStateStore::restore(&storage, std::slice::from_ref(h), 0, 1).unwrap();
        splits.extend(
            store
                .list_state(&ListStateDescriptor::<SplitState>::new(SOURCE_SPLITS_STATE))
                .unwrap()
                .get()
                .unwrap(),
        );
    }
    assert!(!splits.is_empty());
    for s in &splits {
        match &s.position {
            SplitPosition::Seq { consumed, .. } => assert!(*consumed > 0, "{s:?}"),
            other => panic!("a vec source's split: {other:?}"),
        }
    }
    let read: u64 = splits
        .iter()
        .map(|s| match s.position {
            SplitPosition::Seq { consumed, .. } => consumed,
            _ => 0,
        })
        .sum();
    assert_eq!(read, EVENTS);
    assert_eq!(
        splits.iter().map(|s| s.max_ts).max(),
        Some(EVENTS as i64 - 1)
    );

    // Sink transactions: the final interval's pre-committed files (of the instances
    // that wrote anything).
    let mut transactions: Vec<SinkTransaction> = Vec::new();
    for h in &m.operators["file-sink-3"].operator {
        let store = OperatorStateStore::restore(&storage, std::slice::from_ref(h), 0, 1).unwrap();
        transactions.extend(
            store
                .list_state(&ListStateDescriptor::<SinkTransaction>::new(
                    SINK_TRANSACTIONS_STATE,
                ))
                .unwrap()
                .get()
                .unwrap(),
        );
    }
    assert!(!transactions.is_empty());
    for t in &transactions {
        assert_eq!(t.interval, 1);
        let name = t.committed.file_name().unwrap().to_string_lossy();
        assert!(name.starts_with("part-") && name.ends_with("-1"), "{t:?}");
    }
}

/// The version-2 fixture's source: numbers `first, first + step, ...` below `EVENTS`,
/// one split per worker, positions stored with the default (postcard) encoding.
struct Numbers;

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
struct NumberSplit {
    first: u64,
    step: u64,
    next: u64,
}

struct NumberReader(NumberSplit);

impl SplitReader<(u64, u64), NumberSplit> for NumberReader {
    fn next(&mut self) -> Result<Read<(u64, u64)>, BoxError> {
        let s = &mut self.0;
        let i = s.first + s.next * s.step;
        if i >= EVENTS {
            return Ok(Read::End);
        }
        s.next += 1;
        Ok(Read::Record((i % KEYS, i)))
    }
    fn position(&self) -> NumberSplit {
        self.0.clone()
    }
}

impl SplitSource<(u64, u64)> for Numbers {
    type Split = NumberSplit;
    fn initial_splits(
        &mut self,
        index: usize,
        workers: usize,
    ) -> Result<Vec<NumberSplit>, BoxError> {
        Ok(vec![NumberSplit {
            first: index as u64,
            step: workers as u64,
            next: 0,
        }])
    }
    fn open_split(
        &mut self,
        split: NumberSplit,
    ) -> Result<Box<dyn SplitReader<(u64, u64), NumberSplit>>, BoxError> {
        Ok(Box::new(NumberReader(split)))
    }
}

/// The version-2 fixture's job: the version-1 job with uids and a user-defined source.
fn v2_job(dir: &Path) {
    let ck = dir.join("ck");
    let out = dir.join("out");
    let checkpoints = CheckpointConfig::local(&ck, Duration::from_secs(3600)).unwrap();
    execute(
        JobConfig::default().workers(2).checkpointing(checkpoints),
        move |job| {
            job.source(
                "numbers",
                Numbers,
                |e: &(u64, u64)| e.1 as i64,
                WatermarkStrategy::BoundedOutOfOrderness(0),
            )
            .uid("numbers")
            .key_by(|e| e.0)
            .process(Sum::default())
            .uid("sums")
            .write_text_files(&out, |l: &String| l.clone())
            .uid("out");
        },
    )
    .unwrap();
}

#[test]
fn checkpoint_v2_reads_back() {
    bless_once("v2", v2_job);
    let dir = golden_root().join("v2");
    let m = read_metadata(dir.join("chk-1")).unwrap();
    assert_eq!(m.version, 2);
    assert!(m.finished);
    let uids: Vec<&str> = m.operators.keys().map(String::as_str).collect();
    assert_eq!(uids, ["numbers", "out", "sums"]);
    assert!(m.operators.values().all(|o| o.user_uid));
    let storage = ObjectCheckpointStorage::local(&dir).unwrap();
    let paths: Vec<&str> = m.operators["sums"]
        .keyed
        .iter()
        .map(|h| h.path.as_str())
        .collect();
    assert_eq!(paths, ["chk-1/sums-0.kgs", "chk-1/sums-1.kgs"]);
    // The user-defined source's positions: postcard of its split type.
    let mut splits = Vec::new();
    for h in &m.operators["numbers"].operator {
        let store = OperatorStateStore::restore(&storage, std::slice::from_ref(h), 0, 1).unwrap();
        splits.extend(
            store
                .list_state(&ListStateDescriptor::<SplitState>::new(SOURCE_SPLITS_STATE))
                .unwrap()
                .get()
                .unwrap(),
        );
    }
    let mut decoded: Vec<NumberSplit> = splits
        .iter()
        .map(|s| match &s.position {
            SplitPosition::Custom(bytes) => postcard::from_bytes(bytes).unwrap(),
            other => panic!("a user source's split: {other:?}"),
        })
        .collect();
    decoded.sort_by_key(|s| s.first);
    assert_eq!(
        decoded,
        [
            NumberSplit {
                first: 0,
                step: 2,
                next: EVENTS / 2
            },
            NumberSplit {
                first: 1,
                step: 2,
                next: EVENTS / 2
            }
        ]
    );
}

#[test]
fn checkpoint_v3_reads_back() {
    // Written by the version-2 fixture's job, with today's metadata.
    bless_once("v3", v2_job);
    let dir = golden_root().join("v3").join("chk-1");
    let m = read_metadata(&dir).unwrap();
    assert_eq!(m.version, 3);
    assert!(m.finished);
    let uids: Vec<&str> = m.operators.keys().map(String::as_str).collect();
    assert_eq!(uids, ["numbers", "out", "sums"]);
    // Every operator records both figures (a final checkpoint holds nothing back).
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("_metadata")).unwrap()).unwrap();
    for (uid, op) in json["operators"].as_object().unwrap() {
        assert!(op["alignment_ms"].as_f64().is_some(), "{uid}: alignment_ms");
        assert_eq!(
            op["inflight_bytes"].as_u64(),
            Some(0),
            "{uid}: inflight_bytes"
        );
    }
    assert_eq!(m.inflight_bytes(), 0);
    // Older metadata reads with both at 0.
    let v2 = read_metadata(golden_root().join("v2").join("chk-1")).unwrap();
    assert!(
        v2.operators
            .values()
            .all(|o| o.alignment_ms == 0.0 && o.inflight_bytes == 0)
    );
}

/// The committed version-1 checkpoint (positional ids) restores into the same job
/// now given uids: each operator takes over the state stored under its derived id,
/// and the job continues from it (more events: every sum includes the old ones).
#[test]
fn checkpoint_v1_restores_into_a_job_with_uids() {
    let tmp = tempfile::tempdir().unwrap();
    let ck = tmp.path().join("ck");
    std::fs::create_dir_all(ck.join("chk-1")).unwrap();
    for e in std::fs::read_dir(golden().join("chk-1")).unwrap().flatten() {
        std::fs::copy(e.path(), ck.join("chk-1").join(e.file_name())).unwrap();
    }
    // This job collects instead of writing files: the sink's state is dropped, by
    // name.
    let checkpoints = CheckpointConfig::local(&ck, Duration::from_secs(3600))
        .unwrap()
        .allow_non_restored_uid("file-sink-3");
    const MORE: u64 = 2 * EVENTS;
    let out = execute(
        JobConfig::default().workers(2).checkpointing(checkpoints),
        move |job| {
            let events: Vec<(u64, u64)> = (0..MORE).map(|i| (i % KEYS, i)).collect();
            job.source_vec(
                events,
                |e| e.1 as i64,
                WatermarkStrategy::BoundedOutOfOrderness(0),
            )
            .uid("events")
            .key_by(|e| e.0)
            .process(Sum::default())
            .uid("sums")
            .collect()
        },
    )
    .unwrap();
    let lines: Vec<String> = out.into_iter().flatten().collect();
    // Only the new events were read (the source resumed), and sums continued.
    assert_eq!(lines.len() as u64, MORE - EVENTS);
    for key in 0..KEYS {
        let total: u64 = (0..MORE).filter(|i| i % KEYS == key).sum();
        assert!(
            lines.contains(&format!("{key} {total}")),
            "key {key}: {lines:?}"
        );
    }
}
