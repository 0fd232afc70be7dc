//! Corruption that must never turn into lost state: a damaged `_metadata` of the only
//! checkpoint (bad JSON, an unknown version, wrong sizes) or one flipped byte in a
//! shared RocksDB file. The job must fail with a typed error naming the checkpoint
//! and why, delete nothing, commit nothing more — and, where an older checkpoint
//! exists, fall back to it and finish with nothing lost.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use common::{committed, job};

const EVENTS: u64 = 6000;

/// Every file under `dir` with its contents (small test directories).
fn contents(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    fn walk(dir: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            if e.file_type().unwrap().is_dir() {
                walk(&e.path(), out);
            } else if e.file_name() != "_lock" {
                out.insert(e.path(), std::fs::read(e.path()).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, &mut out);
    out
}

/// Complete checkpoints' directories, oldest first.
fn complete(ck: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(ck) else {
        return Vec::new();
    };
    let mut v: Vec<(u64, PathBuf)> = entries
        .flatten()
        .filter_map(|e| {
            let id = e
                .file_name()
                .to_string_lossy()
                .strip_prefix("chk-")?
                .parse()
                .ok()?;
            e.path().join("_metadata").exists().then(|| (id, e.path()))
        })
        .collect();
    v.sort();
    v.into_iter().map(|(_, p)| p).collect()
}

/// Runs the job to its end with `retained` checkpoints kept.
fn finished_job(dir: &Path, backend: &str, retained: usize) {
    let mut c = job(dir, 2, backend, 30, EVENTS, 30);
    c.args(["--retained", &retained.to_string()]);
    let o = c.output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// Damages the only checkpoint, reruns: a loud failure, and not one byte changed.
fn only_checkpoint_damaged(backend: &str, damage: impl Fn(&Path), expect: &str) {
    let tmp = tempfile::tempdir().unwrap();
    finished_job(tmp.path(), backend, 1);
    let chk = complete(&tmp.path().join("ck")).pop().unwrap();
    damage(&chk);
    let before = contents(tmp.path());
    let o = job(tmp.path(), 2, backend, 30, EVENTS, 0).output().unwrap();
    let log = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success(),
        "started although its checkpoint is damaged:\n{log}"
    );
    assert!(log.contains("none can be restored"), "{log}");
    assert!(log.contains(expect), "expected `{expect}` in:\n{log}");
    assert!(!log.contains("panicked"), "{log}");
    let mut after = contents(tmp.path());
    // RocksDB's working directory is scratch (emptied at every start).
    after.retain(|p, _| !p.to_string_lossy().contains("rocksdb-local"));
    let mut was = before;
    was.retain(|p, _| !p.to_string_lossy().contains("rocksdb-local"));
    assert_eq!(
        after.keys().collect::<Vec<_>>(),
        was.keys().collect::<Vec<_>>(),
        "files appeared or vanished"
    );
    assert!(after == was, "a file changed");
}

fn edit_metadata(chk: &Path, f: impl Fn(String) -> String) {
    let p = chk.join("_metadata");
    let text = std::fs::read_to_string(&p).unwrap();
    let edited = f(text.clone());
    assert_ne!(edited, text);
    std::fs::write(&p, edited).unwrap();
}

#[test]
fn metadata_bad_json() {
    for backend in ["rocksdb", "heap"] {
        only_checkpoint_damaged(
            backend,
            |chk| edit_metadata(chk, |t| t[..t.len() / 2].to_string()),
            "unreadable",
        );
    }
}

#[test]
fn metadata_unknown_version() {
    only_checkpoint_damaged(
        "rocksdb",
        |chk| {
            // Whatever version this build writes, the edit makes it a newer one.
            let current = format!(
                "\"version\": {}",
                flowstate_core::checkpoint_metadata::METADATA_VERSION
            );
            edit_metadata(chk, |t| t.replacen(&current, "\"version\": 99", 1))
        },
        "newer than this build",
    );
}

#[test]
fn metadata_wrong_sizes() {
    only_checkpoint_damaged(
        "rocksdb",
        |chk| {
            edit_metadata(chk, |t| {
                // The first recorded size, one more.
                let at = t.find("\"size\": ").unwrap() + "\"size\": ".len();
                let end = at + t[at..].find(|c: char| !c.is_ascii_digit()).unwrap();
                let n: u64 = t[at..end].parse().unwrap();
                format!("{}{}{}", &t[..at], n + 1, &t[end..])
            })
        },
        "the metadata says",
    );
}

/// The shared SST files of the newest checkpoint, from its metadata.
fn shared_files(ck: &Path) -> Vec<PathBuf> {
    let meta = std::fs::read_to_string(complete(ck).pop().unwrap().join("_metadata")).unwrap();
    let mut files: BTreeSet<PathBuf> = BTreeSet::new();
    for part in meta.split("\"path\": \"").skip(1) {
        let path = &part[..part.find('"').unwrap()];
        if path.starts_with("shared/") {
            files.insert(ck.join(path));
        }
    }
    files.into_iter().collect()
}

/// Runs the RocksDB job (two checkpoints kept, throttled) on `dir` until it holds two
/// complete checkpoints and one of them is new, then SIGKILLs it.
fn kill_after_a_new_checkpoint(dir: &Path) {
    let ck = dir.join("ck");
    let before = complete(&ck).pop();
    let mut c = job(dir, 2, "rocksdb", 30, 60_000, 5);
    c.args(["--retained", "2"]);
    let mut child = c.spawn().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let done = complete(&ck);
        if done.len() >= 2 && done.last() != before.as_ref() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never two checkpoints"
        );
        assert!(child.try_wait().unwrap().is_none(), "ended too early");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn flip_a_byte(file: &Path) {
    let mut bytes = std::fs::read(file).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(file, bytes).unwrap();
}

#[test]
fn flipped_byte_in_a_shared_sst() {
    only_checkpoint_damaged(
        "rocksdb",
        |chk| {
            let ck = chk.parent().unwrap();
            let files = shared_files(ck);
            assert!(
                !files.is_empty(),
                "an incremental checkpoint has shared files"
            );
            flip_a_byte(&files[files.len() / 2]);
        },
        "damaged",
    );
}

#[test]
fn flipped_byte_in_a_shared_sst_falls_back() {
    // Killed while running with two checkpoints kept: the newest checkpoint's own
    // new SST damaged, the older one intact. The restart falls back and finishes.
    let tmp = tempfile::tempdir().unwrap();
    let ck = tmp.path().join("ck");
    // Two complete checkpoints where the newest uploaded a file the older lacks.
    let newest_only = loop {
        kill_after_a_new_checkpoint(tmp.path());
        let done = complete(&ck);
        let older = std::fs::read_to_string(done[done.len() - 2].join("_metadata")).unwrap();
        let fresh = shared_files(&ck).into_iter().find(|f| {
            let rel = f.strip_prefix(&ck).unwrap().to_string_lossy().to_string();
            !older.contains(&rel)
        });
        if let Some(f) = fresh {
            break f;
        }
        // No new file in the newest: run on and try again.
    };
    flip_a_byte(&newest_only);
    let mut c = job(tmp.path(), 2, "rocksdb", 30, 60_000, 0);
    c.args(["--retained", "2"]);
    let o = c.output().unwrap();
    let log = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{log}");
    assert!(log.contains("falling back"), "{log}");
    assert!(log.contains("damaged"), "{log}");
    // Falling back behind committed output may repeat it; nothing may be lost.
    let got: BTreeSet<String> = committed(&tmp.path().join("out")).into_iter().collect();
    let want: BTreeSet<String> = common::reference(60_000).into_iter().collect();
    assert_eq!(got, want);
}

/// Two checkpoints kept, the newest's `_metadata` made unreadable: the job falls back
/// to the older one and finishes, and every shared file the unreadable one names is
/// still there afterwards (start-up clean-up, retention and the final clean-up all
/// keep what an unreadable checkpoint might refer to).
#[test]
fn unreadable_newest_metadata_pins_every_shared_file() {
    let tmp = tempfile::tempdir().unwrap();
    let ck = tmp.path().join("ck");
    kill_after_a_new_checkpoint(tmp.path());
    let newest = complete(&ck).pop().unwrap();
    let files = shared_files(&ck);
    assert!(!files.is_empty());
    edit_metadata(&newest, |t| t[..t.len() / 2].to_string());
    let mut c = job(tmp.path(), 2, "rocksdb", 30, 60_000, 0);
    c.args(["--retained", "2"]);
    let o = c.output().unwrap();
    let log = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{log}");
    assert!(log.contains("cannot be read"), "{log}");
    for f in &files {
        assert!(f.exists(), "{} was deleted", f.display());
    }
    assert!(newest.join("_metadata").exists());
}
