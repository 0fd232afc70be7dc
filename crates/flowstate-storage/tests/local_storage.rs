//! The object-store checkpoint storage on a real local directory.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed expectation is a failure

use bytes::Bytes;
use flowstate_core::StorageError;
use flowstate_core::storage::CheckpointStorage;
use flowstate_storage::ObjectCheckpointStorage;

fn storage() -> (tempfile::TempDir, ObjectCheckpointStorage) {
    let dir = tempfile::tempdir().unwrap();
    let s = ObjectCheckpointStorage::local(dir.path().join("checkpoints")).unwrap();
    (dir, s)
}

#[test]
fn put_get_range_list_delete() {
    let (dir, s) = storage();
    s.put("chk-1/op/keyed-0", Bytes::from_static(b"0123456789"))
        .unwrap();
    s.put("chk-1/_metadata", Bytes::from_static(b"meta"))
        .unwrap();
    s.put("shared/abc.sst", Bytes::from_static(b"sst")).unwrap();
    assert_eq!(&s.get("chk-1/op/keyed-0").unwrap()[..], b"0123456789");
    assert_eq!(&s.get_range("chk-1/op/keyed-0", 2..5).unwrap()[..], b"234");
    assert_eq!(s.get_range("chk-1/op/keyed-0", 10..10).unwrap().len(), 0);
    assert_eq!(s.size("chk-1/op/keyed-0").unwrap(), 10);
    assert_eq!(
        s.list("chk-1").unwrap(),
        vec!["chk-1/_metadata", "chk-1/op/keyed-0"]
    );
    assert_eq!(s.list("").unwrap().len(), 3);
    // Files are real files under the directory.
    assert!(dir.path().join("checkpoints/shared/abc.sst").is_file());
    // Replacing is atomic from a reader's point of view: old or new, never a mix.
    s.put("chk-1/_metadata", Bytes::from_static(b"metadata v2"))
        .unwrap();
    assert_eq!(&s.get("chk-1/_metadata").unwrap()[..], b"metadata v2");
    s.delete("chk-1/_metadata").unwrap();
    s.delete("chk-1/_metadata").unwrap();
    assert!(matches!(
        s.get("chk-1/_metadata"),
        Err(StorageError::NotFound { .. })
    ));
    assert_eq!(s.list("chk-1").unwrap(), vec!["chk-1/op/keyed-0"]);
    // Deleting the last object of a directory removes the directory (retention leaves
    // no empty `chk-<id>/` behind).
    s.delete("chk-1/op/keyed-0").unwrap();
    assert!(!dir.path().join("checkpoints/chk-1").exists());
    assert!(dir.path().join("checkpoints").is_dir());
}

#[test]
fn errors_name_the_path() {
    let (_dir, s) = storage();
    s.put("a", Bytes::from_static(b"abc")).unwrap();
    let e = s.get_range("a", 1..9).unwrap_err();
    assert!(matches!(e, StorageError::OutOfRange { size: 3, .. }), "{e}");
    assert!(e.to_string().contains("`a`"));
    let e = s.get("missing/file").unwrap_err();
    assert!(
        matches!(&e, StorageError::NotFound { path } if path == "missing/file"),
        "{e}"
    );
    assert!(matches!(s.size("nope"), Err(StorageError::NotFound { .. })));
    for bad in ["", "a/../b", "a//b"] {
        let e = s.put(bad, Bytes::new()).unwrap_err();
        assert!(
            matches!(e, StorageError::InvalidPath { .. }),
            "{bad:?}: {e}"
        );
    }
}

#[test]
fn usable_from_inside_an_async_runtime() {
    let (_dir, s) = storage();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        s.put("x", Bytes::from_static(b"y")).unwrap();
        assert_eq!(&s.get("x").unwrap()[..], b"y");
    });
}

#[test]
fn no_partial_objects_are_listed() {
    let (dir, s) = storage();
    let big = Bytes::from(vec![7u8; 4 << 20]);
    std::thread::scope(|scope| {
        let writer = scope.spawn(|| {
            for i in 0..5 {
                s.put(&format!("big-{i}"), big.clone()).unwrap();
            }
        });
        // Whatever a concurrent reader lists is complete.
        while !writer.is_finished() {
            for p in s.list("").unwrap() {
                if let Ok(b) = s.get(&p) {
                    assert_eq!(b.len(), big.len(), "{p} was visible before it was complete");
                }
            }
        }
    });
    assert_eq!(s.list("").unwrap().len(), 5);
    drop(dir);
}

#[test]
fn streamed_writes_appear_whole_on_finish_only() {
    let (_dir, s) = storage();
    // Larger than one part: a multipart upload.
    let data: Vec<u8> = (0..20 << 20).map(|i: u32| (i % 251) as u8).collect();
    let mut w = s.create("big/object").unwrap();
    for chunk in data.chunks(1 << 20) {
        w.write(chunk).unwrap();
        assert!(s.size("big/object").is_err(), "visible before finish");
    }
    assert_eq!(w.finish().unwrap(), data.len() as u64);
    assert_eq!(&s.get("big/object").unwrap()[..], &data[..]);
    // Small: one put.
    let mut w = s.create("small").unwrap();
    w.write(b"abc").unwrap();
    w.write(b"def").unwrap();
    assert_eq!(w.finish().unwrap(), 6);
    assert_eq!(&s.get("small").unwrap()[..], b"abcdef");
    // Dropped unfinished, large or small: nothing appears.
    let mut w = s.create("abandoned").unwrap();
    w.write(&data).unwrap();
    drop(w);
    let mut w = s.create("abandoned-small").unwrap();
    w.write(b"x").unwrap();
    drop(w);
    assert!(matches!(
        s.get("abandoned"),
        Err(StorageError::NotFound { .. })
    ));
    assert!(matches!(
        s.get("abandoned-small"),
        Err(StorageError::NotFound { .. })
    ));
    assert!(s.create("").is_err());
}

const CRASH_CHILD: &str = "FLOWSTATE_CRASH_CHILD_DIR";

/// The child side of `killed_mid_write_leaves_the_previous_object_intact`: streams a
/// replacement larger than one part, reports once parts are on disk, then waits to be
/// killed before `finish`.
fn crash_child(dir: &str) {
    let s = ObjectCheckpointStorage::local(dir).unwrap();
    let mut w = s.create("chk-1/_metadata").unwrap();
    w.write(&vec![b'x'; 20 << 20]).unwrap();
    println!("PARTS_WRITTEN");
    use std::io::Write;
    std::io::stdout().flush().unwrap();
    loop {
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
}

#[test]
fn killed_mid_write_leaves_the_previous_object_intact() {
    use std::io::BufRead;
    if let Ok(dir) = std::env::var(CRASH_CHILD) {
        crash_child(&dir);
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let s = ObjectCheckpointStorage::local(dir.path()).unwrap();
    s.put("chk-1/_metadata", Bytes::from_static(b"complete v1"))
        .unwrap();
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "killed_mid_write_leaves_the_previous_object_intact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CRASH_CHILD, dir.path())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let reached = std::io::BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .any(|l| l.contains("PARTS_WRITTEN"));
    assert!(reached, "the child never reached the kill point");
    child.kill().unwrap(); // SIGKILL: no destructors, no abort of the upload
    child.wait().unwrap();
    assert_eq!(&s.get("chk-1/_metadata").unwrap()[..], b"complete v1");
    assert_eq!(
        s.list("").unwrap(),
        vec!["chk-1/_metadata"],
        "no partial object is visible"
    );
}

/// A call that hangs (here: reading a FIFO nobody writes, as a hung disk or network
/// would) fails after the storage's timeout instead of blocking the job forever.
#[test]
fn a_hanging_call_times_out() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("chk-1").join("stuck");
    std::fs::create_dir_all(fifo.parent().unwrap()).unwrap();
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let s = ObjectCheckpointStorage::local(dir.path())
        .unwrap()
        .with_timeout(std::time::Duration::from_millis(200));
    let err = s.get("chk-1/stuck").unwrap_err();
    assert!(
        matches!(
            err,
            flowstate_core::StorageError::TimedOut { op: "get", .. }
        ),
        "{err}"
    );
    // Release the blocked reader so the storage's runtime can shut down.
    let _w = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
}

/// Writes and deletes never go through a symbolic link planted in the directory.
#[test]
fn no_write_or_delete_through_a_link() {
    let dir = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    std::fs::write(elsewhere.path().join("victim"), b"keep").unwrap();
    std::os::unix::fs::symlink(elsewhere.path(), dir.path().join("chk-9")).unwrap();
    let s = ObjectCheckpointStorage::local(dir.path()).unwrap();
    assert!(s.delete("chk-9/victim").is_err());
    assert!(s.put("chk-9/victim", Bytes::from_static(b"x")).is_err());
    assert!(s.create("chk-9/new").is_err());
    assert_eq!(
        std::fs::read(elsewhere.path().join("victim")).unwrap(),
        b"keep"
    );
    assert!(!elsewhere.path().join("new").exists());
}

/// The last reference to a storage may go inside another runtime's async context (a
/// query server's task): that must not panic, and the storage must have worked.
#[test]
fn dropping_a_storage_inside_an_async_context_is_fine() {
    let dir = tempfile::tempdir().unwrap();
    let storage = ObjectCheckpointStorage::local(dir.path()).unwrap();
    storage.put("a", Bytes::from_static(b"x")).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        assert_eq!(&storage.get("a").unwrap()[..], b"x");
        drop(storage);
    });
    assert!(dir.path().join("a").exists());
}
