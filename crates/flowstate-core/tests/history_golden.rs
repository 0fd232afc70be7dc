//! The checkpoint history format (`_history`, version 1) read from its committed
//! fixture field by field: later versions must keep reading it. The fixture is never
//! rewritten in place; a new version gets a directory of its own.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use flowstate_core::checkpoint_history::{parse_history, render_history};
use flowstate_core::checkpoint_metadata::SnapshotKind;

fn fixture() -> Vec<u8> {
    std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/golden/history/v1/_history"
    ))
    .unwrap()
}

#[test]
fn version_1_reads_field_by_field() {
    let (h, skipped) = parse_history(&fixture());
    assert_eq!(skipped, 0);
    assert_eq!(h.iter().map(|s| s.id).collect::<Vec<_>>(), [1, 2, 3]);
    let first = &h[0];
    assert_eq!(first.kind, SnapshotKind::Checkpoint);
    assert_eq!(first.triggered_at_ms, 1_795_932_218_493);
    assert_eq!(first.duration_ms, 3408);
    assert_eq!(first.alignment_ms, 3405.5);
    assert_eq!(first.inflight_bytes, 10);
    assert_eq!((first.full_size, first.uploaded_size), (108_312, 108_312));
    assert_eq!(first.parallelism, 2);
    assert!(!first.finished);
    let counts = &first.operators["counts"];
    assert_eq!(counts.instances, 2);
    assert_eq!((counts.full_size, counts.uploaded_size), (106_148, 106_148));
    assert_eq!((counts.sync_ms, counts.async_ms), (4.25, 30.5));
    assert_eq!((counts.alignment_ms, counts.inflight_bytes), (3405.5, 10));
    assert_eq!(first.operators["out"].full_size, 684);
    assert_eq!(h[1].kind, SnapshotKind::Savepoint);
    assert_eq!(h[1].operators.len(), 1);
    let last = &h[2];
    assert!(last.finished);
    assert_eq!((last.parallelism, last.uploaded_size), (3, 203_667));
}

#[test]
fn version_1_writes_what_it_reads() {
    let (h, _) = parse_history(&fixture());
    assert_eq!(render_history(&h), fixture());
}
