//! The library's promises when state cannot be restored or a directory is not the
//! job's: typed errors, never a silent fresh start, nothing touched.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed expectation is a failure

use std::path::Path;
use std::rc::Rc;
use std::time::Duration;

use flowstate_core::descriptor::ValueStateDescriptor;
use flowstate_core::state::ValueState;
#[cfg(feature = "rocksdb")]
use flowstate_rocksdb::RocksDbOptions;
use flowstate_runtime::ownership::OwnershipError;
use flowstate_runtime::{
    BackendChoice, CheckpointConfig, JobConfig, KeyedProcessFunction, OpenContext, ProcessContext,
    RestoreFrom, RuntimeError, WatermarkStrategy, execute, opened,
};

/// Sum of values per key.
#[derive(Default)]
struct Sum(Option<Rc<dyn ValueState<u64>>>);

impl KeyedProcessFunction<u64, (u64, u64), String> for Sum {
    fn open(&mut self, ctx: &OpenContext<'_, u64>) -> Result<(), RuntimeError> {
        self.0 = Some(ctx.value_state(&ValueStateDescriptor::new("sum"))?);
        Ok(())
    }
    fn process_element(
        &mut self,
        (key, v): (u64, u64),
        ctx: &mut ProcessContext<'_, u64, String>,
    ) -> Result<(), RuntimeError> {
        let s = opened(&self.0)?;
        let sum = s.value()?.unwrap_or(0) + v;
        s.update(sum)?;
        ctx.collect(format!("{key} {sum}"));
        Ok(())
    }
}

fn run(
    ck: &Path,
    out: &Path,
    restore: RestoreFrom,
    backend: BackendChoice,
) -> Result<(), RuntimeError> {
    let checkpoints = CheckpointConfig::local(ck, Duration::from_millis(20))?.restore(restore);
    let out = out.to_path_buf();
    execute(
        JobConfig::default()
            .workers(2)
            .backend(backend)
            .checkpointing(checkpoints),
        move |job| {
            let events: Vec<(u64, u64)> = (0..2000).map(|i| (i % 7, i)).collect();
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
    .map(|_| ())
}

#[test]
fn unreadable_only_checkpoint_is_a_typed_error_not_a_fresh_start() {
    let tmp = tempfile::tempdir().unwrap();
    let (ck, out) = (tmp.path().join("ck"), tmp.path().join("out"));
    run(&ck, &out, RestoreFrom::Latest, BackendChoice::Heap).unwrap();
    let chk = std::fs::read_dir(&ck)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.join("_metadata").exists())
        .unwrap();
    std::fs::write(chk.join("_metadata"), b"{ not json").unwrap();
    let committed = std::fs::read_dir(&out).unwrap().count();
    match run(&ck, &out, RestoreFrom::Latest, BackendChoice::Heap) {
        Err(RuntimeError::NothingRestorable { candidates }) => {
            assert_eq!(candidates.len(), 1, "{candidates:?}");
            assert!(candidates[0].1.contains("unreadable"), "{candidates:?}");
        }
        other => panic!("expected NothingRestorable, got {other:?}"),
    }
    assert_eq!(std::fs::read_dir(&out).unwrap().count(), committed);
    assert!(
        chk.join("_metadata").exists(),
        "the damaged checkpoint is kept"
    );
    // Starting empty is possible, when asked for.
    run(
        &ck,
        &tmp.path().join("out2"),
        RestoreFrom::Nothing,
        BackendChoice::Heap,
    )
    .unwrap();
    assert!(chk.join("_metadata").exists(), "and still kept");
}

#[cfg(feature = "rocksdb")] // a working directory is RocksDB's
#[test]
fn foreign_working_directory_is_refused_untouched() {
    let tmp = tempfile::tempdir().unwrap();
    let local = tmp.path().join("data");
    std::fs::create_dir_all(&local).unwrap();
    std::fs::write(local.join("precious.db"), b"not Flowstate's").unwrap();
    let err = run(
        &tmp.path().join("ck"),
        &tmp.path().join("out"),
        RestoreFrom::Latest,
        BackendChoice::RocksDb(RocksDbOptions::new(&local)),
    )
    .unwrap_err();
    assert!(
        matches!(err, RuntimeError::Ownership(OwnershipError::Foreign { .. })),
        "{err}"
    );
    assert_eq!(
        std::fs::read(local.join("precious.db")).unwrap(),
        b"not Flowstate's"
    );
}

#[test]
fn second_job_on_a_directory_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let ck = tmp.path().join("ck");
    let _held = flowstate_runtime::ownership::claim_checkpoint_dir(&ck).unwrap();
    let err = run(
        &ck,
        &tmp.path().join("out"),
        RestoreFrom::Latest,
        BackendChoice::Heap,
    )
    .unwrap_err();
    match err {
        RuntimeError::Ownership(OwnershipError::Locked { holder, .. }) => {
            assert!(
                holder.contains(&format!("pid {}", std::process::id())),
                "{holder}"
            );
        }
        other => panic!("expected Locked, got {other}"),
    }
}
