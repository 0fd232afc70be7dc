//! Local recovery over a real remote (here a second local directory): what is
//! copied, reads served from a whole copy, and a missing, truncated or corrupted copy
//! read remotely instead (and removed); deletes and pruning reach the copies.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use bytes::Bytes;
use flowstate_core::storage::CheckpointStorage;
use flowstate_storage::{LOCAL_RECOVERY_MARKER, LocalRecovery, ObjectCheckpointStorage};

struct Setup {
    _dirs: tempfile::TempDir,
    remote: Arc<ObjectCheckpointStorage>,
    copy_dir: std::path::PathBuf,
}

fn setup() -> Setup {
    let dirs = tempfile::tempdir().unwrap();
    let remote = Arc::new(ObjectCheckpointStorage::local(dirs.path().join("remote")).unwrap());
    let copy_dir = dirs.path().join("copy");
    Setup {
        _dirs: dirs,
        remote,
        copy_dir,
    }
}

fn data(n: usize, seed: u8) -> Bytes {
    Bytes::from(
        (0..n)
            .map(|i| (i as u8).wrapping_mul(31) ^ seed)
            .collect::<Vec<u8>>(),
    )
}

#[test]
fn checkpoint_files_are_copied_and_read_locally() {
    let s = setup();
    let lr = LocalRecovery::new(s.remote.clone(), &s.copy_dir).unwrap();
    lr.put("chk-1/keyed-0.kgs", data(1000, 1)).unwrap();
    let mut w = lr.create("shared/a.sst").unwrap();
    w.write(&data(700, 2)).unwrap();
    w.write(&data(300, 3)).unwrap();
    w.finish().unwrap();
    lr.put("chk-1/_metadata", Bytes::from_static(b"{}"))
        .unwrap();
    // Copies of the task and shared files, not of the metadata.
    assert!(s.copy_dir.join("chk-1/keyed-0.kgs").is_file());
    assert!(s.copy_dir.join("shared/a.sst").is_file());
    assert!(!s.copy_dir.join("chk-1/_metadata").exists());
    assert!(s.copy_dir.join(LOCAL_RECOVERY_MARKER).is_file());
    // A restart: a new instance reads the copies after checking them whole.
    drop(lr);
    let lr = LocalRecovery::new(s.remote.clone(), &s.copy_dir).unwrap();
    assert_eq!(lr.get("chk-1/keyed-0.kgs").unwrap(), data(1000, 1));
    let mut whole = data(700, 2).to_vec();
    whole.extend_from_slice(&data(300, 3));
    assert_eq!(
        &lr.get_range("shared/a.sst", 650..760).unwrap()[..],
        &whole[650..760]
    );
    assert_eq!(lr.size("shared/a.sst").unwrap(), 1000);
    assert_eq!(&lr.get("chk-1/_metadata").unwrap()[..], b"{}");
    assert_eq!((lr.local_reads(), lr.remote_reads()), (3, 0));
    assert_eq!(lr.list("chk-1/").unwrap(), s.remote.list("chk-1/").unwrap());
}

#[test]
fn a_damaged_or_missing_copy_is_read_remotely_and_removed() {
    let s = setup();
    let lr = LocalRecovery::new(s.remote.clone(), &s.copy_dir).unwrap();
    for (i, f) in ["a", "b", "c"].iter().enumerate() {
        lr.put(&format!("chk-2/{f}.kgs"), data(4096, i as u8))
            .unwrap();
    }
    drop(lr);
    // `a`: one byte flipped; `b`: truncated; `c`: gone.
    let a = s.copy_dir.join("chk-2/a.kgs");
    let mut bytes = std::fs::read(&a).unwrap();
    bytes[100] ^= 0x40;
    std::fs::write(&a, bytes).unwrap();
    let b = s.copy_dir.join("chk-2/b.kgs");
    std::fs::write(&b, &std::fs::read(&b).unwrap()[..10]).unwrap();
    std::fs::remove_file(s.copy_dir.join("chk-2/c.kgs")).unwrap();
    let lr = LocalRecovery::new(s.remote.clone(), &s.copy_dir).unwrap();
    for (i, f) in ["a", "b", "c"].iter().enumerate() {
        assert_eq!(
            lr.get(&format!("chk-2/{f}.kgs")).unwrap(),
            data(4096, i as u8)
        );
    }
    assert_eq!((lr.local_reads(), lr.remote_reads()), (0, 3));
    assert!(!a.exists() && !b.exists(), "damaged copies are removed");
}

#[test]
fn deletes_and_newer_checkpoints_remove_old_copies() {
    let s = setup();
    let lr = LocalRecovery::new(s.remote.clone(), &s.copy_dir).unwrap();
    lr.put("chk-1/a.kgs", data(10, 1)).unwrap();
    lr.put("chk-2/a.kgs", data(10, 2)).unwrap();
    lr.delete("chk-1/a.kgs").unwrap();
    assert!(!s.copy_dir.join("chk-1/a.kgs").exists());
    // Another process's retention deleted chk-2 remotely: the first copy of chk-3
    // prunes it here.
    s.remote.delete("chk-2/a.kgs").unwrap();
    lr.put("chk-3/a.kgs", data(10, 3)).unwrap();
    assert!(!s.copy_dir.join("chk-2/a.kgs").exists());
    assert!(s.copy_dir.join("chk-3/a.kgs").is_file());
}

#[test]
fn a_directory_of_someone_elses_is_refused() {
    let s = setup();
    std::fs::create_dir_all(&s.copy_dir).unwrap();
    std::fs::write(s.copy_dir.join("notes.txt"), "mine").unwrap();
    assert!(LocalRecovery::new(s.remote.clone(), &s.copy_dir).is_err());
    assert_eq!(
        std::fs::read_to_string(s.copy_dir.join("notes.txt")).unwrap(),
        "mine"
    );
}
