//! Flow control under skew: `skew-job` (4 workers, nearly every event for one hot key,
//! a slow keyed function, 512-byte payloads, event time) runs on both backends with
//! flow control on (the default) and off. With it on, the process's peak resident
//! memory and the in-flight part of every checkpoint stay under stated bounds; with
//! it off the same job exceeds both, which shows the bounds measure what flow
//! control saves. Only bytes are asserted, never times.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::Mutex;

use flowstate_core::checkpoint_metadata::CheckpointMetadata;

mod common;
use common::harness_run;

/// Peak resident memory a paced run stays under (measured 2026-11-28 with 60,000
/// events per worker: 91 MiB heap, 183 MiB RocksDB; unpaced: 697 MiB and 822 MiB).
const PEAK_RSS_BOUND_KB: u64 = 400 * 1024;

/// In-flight bytes every checkpoint of a paced run stays under (measured: at most
/// 3.0 MB heap, 3.6 MB RocksDB, 5.5 MB RocksDB on 2026-12-02; unpaced: 84–92 MB). One
/// paced RocksDB run reached 18.5 MB (2026-12-02) while the heap test's unpaced job
/// shared the two cores: records held back for event-time order are not paced
/// (`flowstate_runtime::flow`), and a starved worker's source lags in event time.
/// Hence the tests run one at a time, below.
const INFLIGHT_BOUND: u64 = 16 * 1024 * 1024;

/// The two tests run one after the other: each bounds the bytes of one job, and two
/// jobs of four workers each on the same cores starve each other's sources.
static ONE_JOB_AT_A_TIME: Mutex<()> = Mutex::new(());

struct Run {
    peak_rss_kb: u64,
    /// In-flight bytes of every complete checkpoint.
    inflight: Vec<u64>,
}

fn run(dir: &Path, backend: &str, rounds_in_flight: Option<&str>) -> Run {
    let mut c = harness_run(env!("CARGO_BIN_EXE_skew-job"), dir, 4, backend, 200);
    c.args(["--fresh", "--retained", "100000", "--events", "60000"]);
    if let Some(r) = rounds_in_flight {
        c.args(["--rounds-in-flight", r]);
    }
    let out = c.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "skew-job failed: {stderr}");
    let peak_rss_kb = stderr
        .lines()
        .find_map(|l| l.strip_prefix("peak_rss_kb="))
        .and_then(|v| v.trim().parse().ok())
        .expect("skew-job prints its peak memory");
    let mut inflight = Vec::new();
    for e in std::fs::read_dir(dir.join("ck")).unwrap().flatten() {
        let meta = e.path().join("_metadata");
        if e.file_name().to_string_lossy().starts_with("chk-") && meta.exists() {
            let m = CheckpointMetadata::parse(&std::fs::read(&meta).unwrap(), "_metadata").unwrap();
            inflight.push(m.inflight_bytes());
        }
    }
    assert!(
        inflight.len() >= 3,
        "too few checkpoints to judge: {inflight:?}"
    );
    Run {
        peak_rss_kb,
        inflight,
    }
}

fn skewed_job_stays_bounded(backend: &str) {
    // A failed test poisons the lock; the other test still runs alone.
    let _alone = ONE_JOB_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    let paced = run(&tmp.path().join("paced"), backend, None);
    let unpaced = run(&tmp.path().join("unpaced"), backend, Some("0"));
    eprintln!(
        "{backend}: paced peak {} KiB, in-flight max {:?}; unpaced peak {} KiB, in-flight max {:?}",
        paced.peak_rss_kb,
        paced.inflight.iter().max(),
        unpaced.peak_rss_kb,
        unpaced.inflight.iter().max()
    );
    assert!(
        paced.peak_rss_kb < PEAK_RSS_BOUND_KB,
        "paced run peaked at {} KiB",
        paced.peak_rss_kb
    );
    for (i, bytes) in paced.inflight.iter().enumerate() {
        assert!(
            *bytes < INFLIGHT_BOUND,
            "a paced checkpoint ({i}) held {bytes} bytes in flight"
        );
    }
    // The same job without flow control exceeds both bounds.
    assert!(
        unpaced.peak_rss_kb > PEAK_RSS_BOUND_KB,
        "unpaced run peaked at only {} KiB",
        unpaced.peak_rss_kb
    );
    assert!(
        unpaced.inflight.iter().any(|b| *b > INFLIGHT_BOUND),
        "no unpaced checkpoint exceeded the in-flight bound: {:?}",
        unpaced.inflight
    );
}

#[test]
fn skewed_job_stays_bounded_on_heap() {
    skewed_job_stays_bounded("heap");
}

#[test]
fn skewed_job_stays_bounded_on_rocksdb() {
    skewed_job_stays_bounded("rocksdb");
}
