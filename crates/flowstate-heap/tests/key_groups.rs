//! A key's group as the heap backend finds it: from the bytes of the configured key
//! serializer, whether the backend builds them itself (postcard integers) or asks the
//! serializer (any other key type or serializer).
#![allow(clippy::unwrap_used)] // tests: a failed expectation is a failure

use std::sync::Arc;

use flowstate_conformance::config;
use flowstate_conformance::serializers::EndianU64;
use flowstate_core::backend::{KeyedBackendConfig, KeyedStateBackend};
use flowstate_core::keygroup::{KeyGroupRange, key_group_for_serialized_key};
use flowstate_core::serializer::TypeSerializer;
use flowstate_core::state::StateKey;
use flowstate_heap::HeapKeyedStateBackend;
use proptest::prelude::*;

const MAX_P: u32 = 128;

/// The group of `key`'s bytes from `config`'s serializer, and the backend's answer.
fn both<K: StateKey>(config: KeyedBackendConfig<K>, key: K) -> (u32, u32) {
    let mut bytes = Vec::new();
    config
        .key_serializer
        .serialize_into(&key, &mut bytes)
        .unwrap();
    let expected = key_group_for_serialized_key(&bytes, MAX_P);
    let backend = HeapKeyedStateBackend::new(config).unwrap();
    let found = backend.key_group_of(&key).unwrap();
    backend.set_current_key(key).unwrap();
    assert_eq!(backend.current_key_group(), Some(found));
    (found, expected)
}

fn all() -> KeyGroupRange {
    KeyGroupRange::all(MAX_P).unwrap()
}

proptest! {
    #[test]
    fn a_keys_group_is_that_of_its_serialized_bytes(
        v in prop_oneof![-300i64..300, any::<i64>()],
        s in ".{0,12}",
    ) {
        let (found, expected) = both(config::<u64>(MAX_P, all()), v as u64);
        prop_assert_eq!(found, expected);
        let (found, expected) = both(config::<i64>(MAX_P, all()), v);
        prop_assert_eq!(found, expected);
        let (found, expected) = both(config::<i32>(MAX_P, all()), v as i32);
        prop_assert_eq!(found, expected);
        let (found, expected) = both(config::<u32>(MAX_P, all()), v as u32);
        prop_assert_eq!(found, expected);
        let (found, expected) = both(config::<String>(MAX_P, all()), s);
        prop_assert_eq!(found, expected);
        // Integers through a serializer of other bytes: that serializer's bytes.
        for little in [false, true] {
            let endian = KeyedBackendConfig {
                max_parallelism: MAX_P,
                key_group_range: all(),
                key_serializer: Arc::new(EndianU64 { little }) as Arc<dyn TypeSerializer<u64>>,
            };
            let (found, expected) = both(endian, v as u64);
            prop_assert_eq!(found, expected);
        }
    }
}
