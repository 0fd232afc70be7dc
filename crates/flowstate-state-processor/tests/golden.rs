//! The state processor's record format, pinned: the committed bootstrap input of
//! version 1 (`tests/golden/v1/bootstrap.jsonl`: declarations by shape and by whole
//! schema, every keyed kind, both timer domains, list and union operator state) is
//! written as a savepoint, and its dump equals the committed `dump.jsonl` line for
//! line (sorted lines; field order and every byte of each line as committed). Neither file is ever rewritten: a later format adds a new version.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed expectation is a failure

use std::path::Path;

use flowstate_state_processor::{Bootstrap, DumpFilter, DumpFormat, Snapshot, dump};

#[test]
fn version_1_records_bootstrap_and_dump_as_committed() {
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/v1");
    let input = std::fs::read(golden.join("bootstrap.jsonl")).unwrap();
    let mut b = Bootstrap::new(128, 2).unwrap();
    assert_eq!(
        b.json_lines(input.as_slice(), "bootstrap.jsonl").unwrap(),
        13
    );
    let dir = tempfile::tempdir().unwrap();
    let written = b.write(dir.path()).unwrap();
    let mut out = Vec::new();
    dump(
        &Snapshot::open(&written.path).unwrap(),
        &DumpFilter::default(),
        DumpFormat::JsonLines,
        &mut out,
        |_| {},
    )
    .unwrap();
    let mut got: Vec<String> = String::from_utf8(out)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    got.sort();
    let expect = std::fs::read_to_string(golden.join("dump.jsonl")).unwrap();
    assert_eq!(got.join("\n") + "\n", expect);
}
