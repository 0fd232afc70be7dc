//! How `key_by` routes a record: its key's key group (Flink's murmur hash of the
//! serialized key) and the worker that owns it.

use flowstate_core::keygroup::{KeyGroupOwners, key_group_for_hash, key_hash};
use flowstate_core::serializer::{IntegerEncoding, SerdeSerializer, TypeSerializer};

use crate::{ErrorSlot, record_error};

use super::Data;

/// How `key_by` finds a record's key group and worker.
pub(super) struct KeyRouter<K> {
    max_p: u32,
    /// `None` when the parallelism cannot be placed (reported when built).
    owners: Option<KeyGroupOwners>,
    ser: SerdeSerializer<K>,
    errors: ErrorSlot,
}

impl<K: Data> KeyRouter<K> {
    /// Routes to `peers` workers over `max_p` key groups; a configuration that cannot
    /// place them is reported into `errors`, and no record is routed.
    pub(super) fn new(max_p: u32, peers: u32, errors: ErrorSlot) -> Self {
        let owners = KeyGroupOwners::new(max_p, peers)
            .map_err(|e| record_error(&errors, e.into()))
            .ok();
        KeyRouter {
            max_p,
            owners,
            ser: SerdeSerializer::new(),
            errors,
        }
    }

    /// The keys of a batch of records, into `keys`, and their serialized bytes back to
    /// back into `bytes`, each ending at its entry of `ends` (`None` for a key that
    /// failed to serialize, which is reported). A whole batch is serialized
    /// before any key is hashed: hashing a key right after the serializer stored it
    /// byte by byte made the hash's wide loads wait for those stores to drain.
    pub(super) fn serialize<T>(
        &self,
        data: &[(i64, T)],
        key: &impl Fn(&T) -> K,
        keys: &mut Vec<K>,
        bytes: &mut Vec<u8>,
        ends: &mut Vec<Option<usize>>,
    ) {
        keys.clear();
        bytes.clear();
        ends.clear();
        for (_, t) in data {
            let k = key(t);
            let at = bytes.len();
            match self.ser.serialize_into(&k, bytes) {
                Ok(()) => ends.push(Some(bytes.len())),
                Err(e) => {
                    bytes.truncate(at);
                    ends.push(None);
                    self.key_failed(e);
                }
            }
            keys.push(k);
        }
    }

    /// The worker and key group of one key, serialized into `scratch` unless it is
    /// an integer (hashed from its value, [`IntegerEncoding::key_hash_of`]); `None`
    /// (reported) when it fails to serialize or the configuration cannot place it.
    ///
    /// Always inlined, the serializing path kept apart: called, this returned its
    /// pair through memory as two 4-byte stores that the caller read back as one
    /// 8-byte load, which cannot be forwarded from them and waited for both to
    /// retire (5% of the heap `value` job in `perf`).
    #[inline(always)]
    pub(super) fn route_key(&self, key: &K, scratch: &mut Vec<u8>) -> Option<(u32, u32)> {
        match IntegerEncoding::key_hash_of(key) {
            Some(hash) => self.route_hash(hash),
            None => self.route_serialized(key, scratch),
        }
    }

    /// [`KeyRouter::route_key`] of a key that is not an integer.
    pub(super) fn route_serialized(&self, key: &K, scratch: &mut Vec<u8>) -> Option<(u32, u32)> {
        scratch.clear();
        match self.ser.serialize_into(key, scratch) {
            Ok(()) => self.route(scratch),
            Err(e) => {
                self.key_failed(e);
                None
            }
        }
    }

    /// Reports a key that failed to serialize (its record is dropped).
    pub(super) fn key_failed(&self, e: flowstate_core::SerializationError) {
        record_error(
            &self.errors,
            flowstate_core::StateError::serialization("<key>", e).into(),
        );
    }

    /// The worker and key group of a serialized key; `None` when the configuration
    /// cannot place it (reported when the router was built).
    #[inline]
    pub(super) fn route(&self, serialized: &[u8]) -> Option<(u32, u32)> {
        self.route_hash(key_hash(serialized))
    }

    /// The worker and key group of a key whose [`key_hash`] is `hash`.
    #[inline]
    pub(super) fn route_hash(&self, hash: u32) -> Option<(u32, u32)> {
        let kg = key_group_for_hash(hash, self.max_p);
        Some((self.owners?.owner(kg), kg))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use flowstate_core::keygroup::{key_group_for_serialized_key, operator_index_for_key_group};
    use serde::de::DeserializeOwned;
    use serde::{Deserialize, Serialize, Serializer};
    use std::cell::RefCell;
    use std::rc::Rc;

    /// A key whose serialization fails when it is negative.
    #[derive(Clone, Debug, PartialEq, Deserialize)]
    struct Picky(i64);

    impl Serialize for Picky {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            if self.0 < 0 {
                return Err(serde::ser::Error::custom("negative"));
            }
            s.serialize_i64(self.0)
        }
    }

    /// A batch is serialized back to back, a failed key leaving no bytes and an error,
    /// and each key's slice routes as the key alone does.
    #[test]
    fn a_batch_routes_each_key_as_alone_and_reports_failures() {
        let errors: ErrorSlot = Rc::new(RefCell::new(None));
        let router = router::<Picky>(&errors);
        let data: Vec<(i64, i64)> = vec![(0, 5), (1, 300), (2, -1), (3, 70_000), (4, -9), (5, 0)];
        let (mut keys, mut bytes, mut ends) = (Vec::new(), Vec::new(), Vec::new());
        router.serialize(
            &data,
            &|v: &i64| Picky(*v),
            &mut keys,
            &mut bytes,
            &mut ends,
        );
        assert_eq!(
            keys,
            data.iter().map(|(_, v)| Picky(*v)).collect::<Vec<_>>()
        );
        assert!(errors.borrow().is_some(), "the failure is reported");
        let mut start = 0;
        for ((_, v), end) in data.iter().zip(&ends) {
            let Some(end) = *end else {
                assert!(*v < 0, "only the negative keys fail");
                continue;
            };
            let mut alone = Vec::new();
            SerdeSerializer::<Picky>::new()
                .serialize_into(&Picky(*v), &mut alone)
                .unwrap();
            assert_eq!(&bytes[start..end], &alone[..], "key {v}");
            assert_eq!(
                router.route(&bytes[start..end]),
                Some(expected_route(&Picky(*v)))
            );
            start = end;
        }
        assert_eq!(start, bytes.len());
        assert_eq!(ends.iter().filter(|e| e.is_none()).count(), 2);
    }

    /// The route of one key of a type `T`, serialized by `SerdeSerializer` and
    /// placed as Flink places it.
    fn expected_route<T: Serialize + DeserializeOwned + 'static>(key: &T) -> (u32, u32) {
        let mut bytes = Vec::new();
        SerdeSerializer::<T>::new()
            .serialize_into(key, &mut bytes)
            .unwrap();
        let kg = key_group_for_serialized_key(&bytes, 128);
        (operator_index_for_key_group(128, 3, kg).unwrap(), kg)
    }

    /// A router for 3 workers and 128 key groups, reporting into `errors`.
    fn router<T: Data>(errors: &ErrorSlot) -> KeyRouter<T> {
        KeyRouter::new(128, 3, errors.clone())
    }

    /// A parallelism that cannot be placed is reported once, when the router is
    /// built, and nothing is routed.
    #[test]
    fn a_router_that_cannot_place_its_workers_reports_it_and_routes_nothing() {
        let errors: ErrorSlot = Rc::new(RefCell::new(None));
        let router = KeyRouter::<u64>::new(4, 5, errors.clone());
        assert!(errors.borrow().is_some(), "the configuration is reported");
        assert_eq!(router.route_key(&7, &mut Vec::new()), None);
    }

    proptest::proptest! {
        /// Every key group goes to the worker Flink's assignment gives, at any valid
        /// maximum parallelism and parallelism.
        #[test]
        fn a_router_places_key_groups_as_flink_does(
            max_p in proptest::prop_oneof![1u32..300, proptest::sample::select(vec![128u32, 4096, 32768])],
            peers_seed in proptest::num::u32::ANY,
            // Keys below 2^21 are hashed from their value without their encoding.
            key in proptest::prop_oneof![0u64..1 << 22, proptest::num::u64::ANY],
        ) {
            let peers = 1 + peers_seed % max_p;
            let errors: ErrorSlot = Rc::new(RefCell::new(None));
            let router = KeyRouter::<u64>::new(max_p, peers, errors.clone());
            let mut bytes = Vec::new();
            SerdeSerializer::<u64>::new().serialize_into(&key, &mut bytes).unwrap();
            let kg = key_group_for_serialized_key(&bytes, max_p);
            let expected = operator_index_for_key_group(max_p, peers, kg).unwrap();
            proptest::prop_assert_eq!(router.route_key(&key, &mut Vec::new()), Some((expected, kg)));
            proptest::prop_assert!(expected < peers);
            proptest::prop_assert!(errors.borrow().is_none());
        }

        /// A key routed alone (integers from registers, others serialized) goes where
        /// its serialized bytes place it.
        #[test]
        fn a_key_alone_routes_as_its_serialized_bytes(
            v in proptest::prop_oneof![-300i64..300, proptest::num::i64::ANY],
            s in ".{0,12}",
        ) {
            let errors: ErrorSlot = Rc::new(RefCell::new(None));
            let mut scratch = vec![9, 9];
            proptest::prop_assert_eq!(
                router::<u64>(&errors).route_key(&(v as u64), &mut scratch),
                Some(expected_route(&(v as u64)))
            );
            proptest::prop_assert_eq!(router::<i64>(&errors).route_key(&v, &mut scratch), Some(expected_route(&v)));
            proptest::prop_assert_eq!(
                router::<i32>(&errors).route_key(&(v as i32), &mut scratch),
                Some(expected_route(&(v as i32)))
            );
            proptest::prop_assert_eq!(
                router::<u32>(&errors).route_key(&(v as u32), &mut scratch),
                Some(expected_route(&(v as u32)))
            );
            proptest::prop_assert_eq!(router::<String>(&errors).route_key(&s, &mut scratch), Some(expected_route(&s)));
            proptest::prop_assert!(errors.borrow().is_none());
        }
    }

    /// A key that fails to serialize alone is not routed, and the failure is reported.
    #[test]
    fn a_key_alone_that_fails_to_serialize_is_reported() {
        let errors: ErrorSlot = Rc::new(RefCell::new(None));
        let router = router::<Picky>(&errors);
        let mut scratch = Vec::new();
        assert_eq!(router.route_key(&Picky(-3), &mut scratch), None);
        assert!(errors.borrow().is_some(), "the failure is reported");
        assert_eq!(
            router.route_key(&Picky(3), &mut scratch),
            Some(expected_route(&3i64))
        );
    }
}
