//! Raw keyed state: per-key-group byte streams come back to whichever instance owns
//! the key group after a restore at any parallelism.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed expectation is a failure

use flowstate_core::StateError;
use flowstate_core::keygroup::{KeyGroupRange, key_group_range_for_operator};
use flowstate_core::raw::{RawKeyedStateOutput, read_raw_keyed_state};
use flowstate_core::storage::CheckpointStorage;
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

#[test]
fn large_files_are_read_in_spans_with_every_block_checked() {
    let dir = tempfile::tempdir().unwrap();
    let storage = ObjectCheckpointStorage::local(dir.path()).unwrap();
    let range = KeyGroupRange::new(0, 127).unwrap();
    // ~25 MB over 128 key groups (several 16 MiB read spans), plus one block larger
    // than a span on its own.
    let block = |kg: u32| -> Vec<u8> {
        let len = if kg == 5 { 17 << 20 } else { 200 << 10 };
        (0..len)
            .map(|i| (i as u32 ^ kg.wrapping_mul(2654435761)) as u8)
            .collect()
    };
    let mut out = RawKeyedStateOutput::new(128, range).unwrap();
    for kg in range.iter() {
        out.key_group(kg).unwrap().extend_from_slice(&block(kg));
    }
    let h = out.write(&storage, "raw/big").unwrap();
    assert!(h.size > 40 << 20);
    let got = read_raw_keyed_state(&storage, std::slice::from_ref(&h), 128, range).unwrap();
    assert_eq!(got.len(), 128);
    for (kg, bytes) in got {
        assert!(bytes[..] == block(kg)[..], "key group {kg}");
    }
    // A flipped byte deep inside a later span is still caught.
    let mut bytes = storage.get("raw/big").unwrap().to_vec();
    let at = bytes.len() - (1 << 20);
    bytes[at] ^= 1;
    storage.put("raw/big-bad", bytes.into()).unwrap();
    let bad = flowstate_core::snapshot::KeyedStateHandle {
        path: "raw/big-bad".into(),
        ..h
    };
    assert!(matches!(
        read_raw_keyed_state(&storage, &[bad], 128, range),
        Err(StateError::CorruptSnapshot { .. })
    ));
}
