//! Raw keyed state: per-key-group byte streams come back to whichever instance owns
//! the key group after a restore at any parallelism.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed expectation is a failure

use flowstate_core::StateError;
use flowstate_core::keygroup::{KeyGroupRange, key_group_range_for_operator};
use flowstate_core::raw::{RawKeyedStateOutput, read_raw_keyed_state};
use flowstate_storage::ObjectCheckpointStorage;

#[test]
fn raw_streams_follow_their_key_groups() {
    let dir = tempfile::tempdir().unwrap();
    let storage = ObjectCheckpointStorage::local(dir.path()).unwrap();
    let bytes_of = |kg: u32| format!("raw bytes of key group {kg}").repeat((kg % 3) as usize);
    for p in [1u32, 3, 8] {
        let handles: Vec<_> = (0..p)
            .map(|i| {
                let range = key_group_range_for_operator(128, p, i).unwrap();
                let mut out = RawKeyedStateOutput::new(128, range).unwrap();
                for kg in range.iter() {
                    out.key_group(kg)
                        .unwrap()
                        .extend_from_slice(bytes_of(kg).as_bytes());
                }
                out.write(&storage, &format!("raw/p{p}/i{i}")).unwrap()
            })
            .collect();
        for new_p in 1..=8u32 {
            let mut seen = Vec::new();
            for j in 0..new_p {
                let range = key_group_range_for_operator(128, new_p, j).unwrap();
                for (kg, bytes) in read_raw_keyed_state(&storage, &handles, 128, range).unwrap() {
                    assert!(range.contains(kg));
                    assert_eq!(&bytes[..], bytes_of(kg).as_bytes());
                    seen.push(kg);
                }
            }
            let expected: Vec<u32> = (0..128).filter(|kg| kg % 3 != 0).collect();
            assert_eq!(seen, expected, "p={p} -> {new_p}");
        }
    }
}

#[test]
fn raw_output_checks_key_groups() {
    let mut out = RawKeyedStateOutput::new(128, KeyGroupRange::new(10, 20).unwrap()).unwrap();
    assert!(matches!(
        out.key_group(21),
        Err(StateError::KeyGroupOutOfRange { key_group: 21, .. })
    ));
    assert!(matches!(
        RawKeyedStateOutput::new(0, KeyGroupRange::empty()),
        Err(StateError::InvalidMaxParallelism(0))
    ));
    assert!(RawKeyedStateOutput::new(16, KeyGroupRange::new(0, 16).unwrap()).is_err());
}
