//! State time-to-live: configuration, the stored form, and the decorators that give
//! every keyed state kind expiry semantics on any backend.
//!
//! TTL works the way Flink's does. A state declared with a [`StateTtlConfig`] is stored
//! as [`TtlValue`]s: the user value plus the 8-byte last-access timestamp (milliseconds
//! of the config's [`TtlClock`]). Backends store these like any other value; the
//! decorators here ([`value_state`], [`list_state`], ...) wrap the stored state so user
//! code keeps seeing `ValueState<T>` etc. List elements and map entries carry their own
//! timestamps and expire one by one; reducing and aggregating state expire as a whole.
//!
//! The stored encoding of a [`TtlValue`] (by [`TtlSerializer`]) is the timestamp as
//! 8 bytes little-endian followed by the inner serializer's bytes, so backends and
//! snapshot writers can test expiry without knowing the value type
//! ([`payload_expired`], [`filter_expired_payload`]).
//!
//! Cleanup of expired data:
//! - on read: a read that meets an expired value removes it (both visibilities);
//! - full snapshot: canonical snapshots and savepoints leave expired entries out
//!   ([`filter_snapshot_writer`]);
//! - incremental (heap backend): `cleanup_size` entries checked per state access, and
//!   optionally per record (each `set_current_key`);
//! - compaction filter (RocksDB backend): expired values dropped during compactions,
//!   clock re-read every `query_time_after_num_entries` entries, periodic compaction
//!   (30 days by default) so cold files are compacted too.
//!
//! Restores: a state that had no TTL and now has one is migrated (restored values get
//! the restore time as last access); a state that had TTL and now has none is migrated
//! by dropping the timestamps ([`resolve_restored`]). A changed duration applies to
//! restored data, because only timestamps are stored.
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use flowstate_core::descriptor::ValueStateDescriptor;
//! use flowstate_core::ttl::{ManualClock, StateTtlConfig, UpdateType};
//! let clock = ManualClock::new(0);
//! let ttl = StateTtlConfig::new(Duration::from_secs(60))
//!     .unwrap()
//!     .with_update_type(UpdateType::OnReadAndWrite)
//!     .with_clock(Arc::new(clock.clone()));
//! let desc = ValueStateDescriptor::<u64>::new("last-seen").with_ttl(ttl);
//! assert_eq!(desc.ttl().unwrap().ttl(), Duration::from_secs(60));
//! ```
//!
//! Layout: [`config`] (a leaf the descriptors carry), [`serializer`] (the stored
//! form), [`expiry`] (byte-level expiry), [`state`] (the decorators). The module sits
//! above the serializer, descriptor, state and snapshot layers and below the backend
//! interface, which builds TTL states through [`state`] when a descriptor asks.

pub mod config;
pub mod expiry;
pub mod serializer;
pub mod state;

pub use config::*;
pub use expiry::*;
pub use serializer::*;
pub use state::*;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::StateError;
    use crate::format::{put_varint, put_vbytes};
    use crate::serializer::SerdeSerializer;
    use crate::serializer::{Compatibility, TypeSerializer};
    use crate::snapshot::payload;
    use crate::state::StateKind;
    use config::wall_ms;
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn config_validation() {
        assert!(matches!(
            StateTtlConfig::new(Duration::ZERO),
            Err(StateError::InvalidTtlConfig(_))
        ));
        assert!(StateTtlConfig::new(Duration::from_micros(999)).is_err());
        assert!(StateTtlConfig::new(Duration::MAX).is_err());
        let c = StateTtlConfig::new(Duration::from_millis(1)).unwrap();
        assert!(c.clone().with_incremental_cleanup(0, false).is_err());
        assert!(
            c.clone()
                .with_compaction_filter_cleanup(0, Duration::ZERO)
                .is_err()
        );
        assert_eq!(c.cleanup(), &CleanupStrategies::default());
        let off = c.disable_cleanup_in_background();
        assert!(!off.cleanup().full_snapshot);
        assert!(off.cleanup().incremental.is_none() && off.cleanup().compaction_filter.is_none());
    }

    #[test]
    fn system_clock_follows_wall_time() {
        let before = wall_ms();
        let now = SystemClock.now_ms();
        std::thread::sleep(Duration::from_millis(30));
        let later = SystemClock.now_ms();
        // Anchored at the wall clock, moving forward with it (coarse resolution).
        assert!((now - before).abs() < 1000, "{now} vs {before}");
        assert!(later >= now + 20, "{later} vs {now}");
    }

    #[test]
    fn expiry_boundary_is_inclusive() {
        let c = StateTtlConfig::new(Duration::from_millis(10)).unwrap();
        assert!(!c.is_expired(100, 109));
        assert!(c.is_expired(100, 110));
        assert!(!c.is_expired(i64::MAX - 1, i64::MAX - 1));
    }

    #[test]
    fn serializer_round_trip_and_toggle_migration() {
        let inner = SerdeSerializer::<String>::arc();
        let s = TtlSerializer::new(inner.clone(), Arc::new(ManualClock::new(42)));
        let mut b = Vec::new();
        let v = TtlValue {
            value: "x".to_string(),
            last_access: -5,
        };
        s.serialize_into(&v, &mut b).unwrap();
        assert_eq!(stored_timestamp(&b), Some(-5));
        assert_eq!(s.deserialize(&b).unwrap(), v);
        assert!(s.deserialize(&b[..7]).is_err());
        assert!(matches!(
            s.resolve_compatibility(&s.snapshot()),
            Compatibility::CompatibleAsIs
        ));
        assert_eq!(ttl_inner_snapshot(&s.snapshot()), Some(inner.snapshot()));
        // TTL switched on: plain bytes are read and stamped.
        let Compatibility::CompatibleAfterMigration(r) = s.resolve_compatibility(&inner.snapshot())
        else {
            panic!("expected migration")
        };
        let mut plain = Vec::new();
        inner.serialize_into(&"y".to_string(), &mut plain).unwrap();
        let m = r(&plain).unwrap();
        assert_eq!(m.value, "y");
        assert_eq!(m.last_access, 42);
        // Another inner type stays incompatible.
        let other = SerdeSerializer::<u8>::arc();
        assert!(matches!(
            s.resolve_compatibility(&TtlSerializer::new(other, Arc::new(SystemClock)).snapshot()),
            Compatibility::Incompatible(_)
        ));
    }

    #[test]
    fn payload_filter_per_kind() {
        let ttl = 10;
        let stamp = |ts: i64, v: u8| {
            let mut b = ts.to_le_bytes().to_vec();
            b.push(v);
            b
        };
        assert!(
            filter_expired_payload(StateKind::Value, &stamp(0, 1), ttl, 10, "t")
                .unwrap()
                .is_none()
        );
        assert!(
            filter_expired_payload(StateKind::Value, &stamp(1, 1), ttl, 10, "t")
                .unwrap()
                .is_some()
        );
        let mut list = Vec::new();
        put_varint(&mut list, 3);
        for (ts, v) in [(0, 1), (5, 2), (0, 3)] {
            put_vbytes(&mut list, &stamp(ts, v)).unwrap();
        }
        let kept = filter_expired_payload(StateKind::List, &list, ttl, 12, "t")
            .unwrap()
            .unwrap();
        assert_eq!(
            payload::list_items(&kept, "t").unwrap(),
            vec![&stamp(5, 2)[..]]
        );
        assert!(
            filter_expired_payload(StateKind::List, &list, ttl, 100, "t")
                .unwrap()
                .is_none()
        );
        let mut map = Vec::new();
        put_varint(&mut map, 2);
        for (k, ts) in [(7u8, 0i64), (8, 5)] {
            put_vbytes(&mut map, &[k]).unwrap();
            put_vbytes(&mut map, &stamp(ts, k)).unwrap();
        }
        let kept = filter_expired_payload(StateKind::Map, &map, ttl, 12, "t")
            .unwrap()
            .unwrap();
        let pairs = payload::map_pairs(&kept, "t").unwrap();
        assert_eq!(pairs.len(), 1);
        assert_eq!(pairs[0].0, &[8u8][..]);
    }
}
