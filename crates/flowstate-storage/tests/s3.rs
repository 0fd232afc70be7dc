//! The storage contract on a real S3-compatible server (`s3s-fs` on 127.0.0.1):
//! puts, ranged reads, listing under a prefix, multipart uploads past one part,
//! conditional writes, deletes, and two prefixes of one bucket kept apart.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::Bytes;
use flowstate_core::StorageError;
use flowstate_core::storage::CheckpointStorage;
use flowstate_storage::ObjectCheckpointStorage;
use flowstate_storage::s3_test_server::S3TestServer;

fn server() -> S3TestServer {
    S3TestServer::start_with_bucket("checkpoints").expect("s3s-fs (scripts/setup.sh installs it)")
}

#[test]
fn objects_round_trip_under_a_prefix() {
    let s = server();
    let a = ObjectCheckpointStorage::s3("checkpoints", "jobs/a", &s.settings()).unwrap();
    let b = ObjectCheckpointStorage::s3("checkpoints", "jobs/b", &s.settings()).unwrap();
    a.put("chk-1/_metadata", Bytes::from_static(b"meta"))
        .unwrap();
    a.put("shared/x.sst", Bytes::from_static(b"0123456789"))
        .unwrap();
    b.put("chk-9/_metadata", Bytes::from_static(b"other"))
        .unwrap();
    assert_eq!(&a.get("chk-1/_metadata").unwrap()[..], b"meta");
    assert_eq!(&a.get_range("shared/x.sst", 2..5).unwrap()[..], b"234");
    assert_eq!(a.size("shared/x.sst").unwrap(), 10);
    assert!(matches!(
        a.get_range("shared/x.sst", 5..11),
        Err(StorageError::OutOfRange { size: 10, .. })
    ));
    assert_eq!(a.list("").unwrap(), ["chk-1/_metadata", "shared/x.sst"]);
    assert_eq!(a.list("chk-1/").unwrap(), ["chk-1/_metadata"]);
    assert_eq!(b.list("").unwrap(), ["chk-9/_metadata"]);
    // The objects really are under the prefix in the bucket.
    assert!(
        s.root()
            .join("checkpoints/jobs/a/chk-1/_metadata")
            .is_file()
    );
    a.delete("chk-1/_metadata").unwrap();
    a.delete("chk-1/_metadata").unwrap();
    assert!(matches!(
        a.get("chk-1/_metadata"),
        Err(StorageError::NotFound { .. })
    ));
    assert_eq!(b.list("").unwrap(), ["chk-9/_metadata"]);
}

#[test]
fn large_objects_are_multipart_uploads() {
    let s = server();
    let st = ObjectCheckpointStorage::s3("checkpoints", "big", &s.settings()).unwrap();
    // 20 MiB in uneven writes: three parts of the 8 MiB part size.
    let data: Vec<u8> = (0..20u32 << 20).map(|i| (i % 251) as u8).collect();
    let mut w = st.create("chk-1/state.bin").unwrap();
    for chunk in data.chunks(777_777) {
        w.write(chunk).unwrap();
    }
    assert_eq!(w.finish().unwrap(), data.len() as u64);
    assert_eq!(st.size("chk-1/state.bin").unwrap(), data.len() as u64);
    assert_eq!(st.get("chk-1/state.bin").unwrap().as_ref(), &data[..]);
    let mid = (9u64 << 20)..((9u64 << 20) + 100);
    assert_eq!(
        st.get_range("chk-1/state.bin", mid.clone())
            .unwrap()
            .as_ref(),
        &data[mid.start as usize..mid.end as usize]
    );
    // An upload dropped unfinished publishes nothing.
    let mut w = st.create("chk-2/state.bin").unwrap();
    w.write(&data).unwrap();
    drop(w);
    assert!(st.list("chk-2/").unwrap().is_empty());
}

#[test]
fn put_if_absent_never_replaces() {
    let s = server();
    let st = ObjectCheckpointStorage::s3("checkpoints", "cond", &s.settings()).unwrap();
    assert!(
        st.put_if_absent("_flowstate", Bytes::from_static(b"first"))
            .unwrap()
    );
    assert!(
        !st.put_if_absent("_flowstate", Bytes::from_static(b"second"))
            .unwrap()
    );
    assert_eq!(&st.get("_flowstate").unwrap()[..], b"first");
}

#[test]
fn a_wrong_secret_or_a_missing_bucket_fails_loudly() {
    let s = server();
    let mut bad = s.settings();
    bad.credentials = Some(("flowstate-test".into(), "wrong".into()));
    let st = ObjectCheckpointStorage::s3("checkpoints", "x", &bad).unwrap();
    assert!(st.put("a", Bytes::from_static(b"1")).is_err());
    assert!(st.list("").is_err());
    // (`s3s-fs` makes a missing bucket's directory on a put; listing it fails.)
    let none = ObjectCheckpointStorage::s3("no-such-bucket", "x", &s.settings()).unwrap();
    assert!(none.list("").is_err());
}
