//! A committed version-1 checkpoint (`tests/golden/v1/chk-1/`: `_metadata`, keyed
//! snapshots, source positions, sink transactions) that every later version must keep
//! reading, field by field. It is the final checkpoint of a small 2-worker job on the
//! heap backend. Rewrite only for a new format version:
//! `FLOWSTATE_BLESS=1 cargo test --release -p flowstate-runtime --test golden_checkpoint`.
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
    CheckpointConfig, JobConfig, KeyedProcessFunction, OpenContext, ProcessContext, RuntimeError,
    SINK_TRANSACTIONS_STATE, SOURCE_SPLITS_STATE, SinkTransaction, SnapshotKind, SplitPosition,
    SplitState, WatermarkStrategy, execute,
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
        let s = self.sum.as_ref().ok_or(RuntimeError::NotOpened)?;
        let sum = s.value()?.unwrap_or(0) + v;
        s.update(sum)?;
        ctx.collect(format!("{key} {sum}"));
        Ok(())
    }
}

fn golden() -> PathBuf {
    // At run time: the compiled-in path is that of whichever checkout built a cached
    // test binary (cargo sets CARGO_MANIFEST_DIR for the tests it runs).
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(
            || Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf(),
            PathBuf::from,
        )
        .join("tests/golden/v1")
}

/// Writes the fixture: the job's final (and only) checkpoint, `chk-1`.
fn bless() {
    let tmp = tempfile::tempdir().unwrap();
    let ck = tmp.path().join("ck");
    let out = tmp.path().join("out");
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
    let dest = golden().join("chk-1");
    let _ = std::fs::remove_dir_all(&dest);
    std::fs::create_dir_all(&dest).unwrap();
    for e in std::fs::read_dir(ck.join("chk-1")).unwrap().flatten() {
        std::fs::copy(e.path(), dest.join(e.file_name())).unwrap();
    }
}

#[test]
fn checkpoint_v1_reads_back() {
    if std::env::var_os("FLOWSTATE_BLESS").is_some() {
        bless();
    }
    let m = read_metadata(&golden().join("chk-1")).unwrap();
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
