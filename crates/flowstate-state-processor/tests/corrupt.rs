//! Damaged inputs: a flipped byte in a keyed file, an operator state file or a native
//! snapshot's SST file, a truncated file, an unreadable `_metadata`: every reader
//! returns a typed error and a transform writes nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed expectation is a failure

mod common;

use std::path::{Path, PathBuf};

use common::{input, run_stats};
use flowstate_state_processor::describe::describe;
use flowstate_state_processor::{
    DumpFilter, ProcessorError, Snapshot, TransformPlan, records, transform,
};

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

fn flip(path: &Path, at: usize) {
    let mut b = std::fs::read(path).unwrap();
    let at = at.min(b.len() - 1);
    b[at] ^= 0x40;
    std::fs::write(path, b).unwrap();
}

/// Runs every reader and a transform on the damaged checkpoint `ck`; all fail with
/// `expect`'s kind of error and `out` gets no savepoint.
fn all_refuse(ck: &Path, out: &Path, expect: fn(&ProcessorError) -> bool) {
    let snapshot = match Snapshot::open(ck) {
        Ok(s) => s,
        Err(e) => {
            assert!(expect(&e), "open: {e:?}");
            return;
        }
    };
    let e = describe(&snapshot, None, true).unwrap_err();
    assert!(expect(&e), "describe: {e:?}");
    let e = records(&snapshot, &DumpFilter::default(), |_| Ok(()), |_| {}).unwrap_err();
    assert!(expect(&e), "dump: {e:?}");
    let e = transform(&snapshot, &TransformPlan::default(), out, |_, _| {}).unwrap_err();
    assert!(expect(&e), "transform: {e:?}");
    let written: Vec<PathBuf> = std::fs::read_dir(out.join("savepoints"))
        .map(|d| d.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    assert!(written.is_empty(), "nothing written: {written:?}");
}

fn is_state(e: &ProcessorError) -> bool {
    matches!(e, ProcessorError::State { .. })
}

fn is_metadata(e: &ProcessorError) -> bool {
    matches!(e, ProcessorError::Metadata(_))
}

fn files(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(files(&p, suffix));
        } else if p.to_string_lossy().ends_with(suffix) {
            out.push(p);
        }
    }
    out.sort();
    out
}

#[test]
fn damaged_inputs_are_refused_with_typed_errors_and_nothing_written() {
    let dir = tempfile::tempdir().unwrap();
    let heap = run_stats(&dir.path().join("heap"), false, 2, input(30, 600));
    let native = run_stats(&dir.path().join("rocks"), true, 2, input(30, 600));
    let heap_chk = Snapshot::open(&heap).unwrap().path().to_path_buf();
    let native_chk = Snapshot::open(&native).unwrap().path().to_path_buf();
    let case =
        |name: &str, src: &Path, damage: &dyn Fn(&Path), expect: fn(&ProcessorError) -> bool| {
            let root = dir.path().join(name);
            copy_dir(src.parent().unwrap(), &root);
            let chk = root.join(src.file_name().unwrap());
            damage(&chk);
            all_refuse(&chk, &dir.path().join(format!("{name}-out")), expect);
        };
    // A flipped byte in the middle of a keyed file: its checksums catch it.
    case(
        "kgs-flip",
        &heap_chk,
        &|chk| {
            let f = &files(chk, ".kgs")[0];
            let len = std::fs::metadata(f).unwrap().len() as usize;
            flip(f, len / 2);
        },
        is_state,
    );
    // In an operator state file.
    case(
        "ops-flip",
        &heap_chk,
        &|chk| flip(&files(chk, "events-0.ops")[0], 20),
        is_state,
    );
    // Truncated: the sizes in `_metadata` catch it before anything is read.
    case(
        "truncated",
        &heap_chk,
        &|chk| {
            let f = &files(chk, ".kgs")[0];
            let b = std::fs::read(f).unwrap();
            std::fs::write(f, &b[..b.len() / 2]).unwrap();
        },
        is_metadata,
    );
    // An unreadable `_metadata`.
    case(
        "metadata",
        &heap_chk,
        &|chk| std::fs::write(chk.join("_metadata"), b"{\"version\": 3, \"id\":").unwrap(),
        is_metadata,
    );
    // A flipped byte in a native snapshot's SST file: its recorded CRC catches it
    // before RocksDB opens it.
    case(
        "sst-flip",
        &native_chk,
        &|chk| {
            let root = chk.parent().unwrap();
            for f in files(&root.join("shared"), ".sst") {
                let len = std::fs::metadata(&f).unwrap().len() as usize;
                flip(&f, len / 2);
            }
        },
        is_state,
    );
}
