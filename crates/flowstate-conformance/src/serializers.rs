//! Serializers used to drive each compatibility outcome on restore.
//!
//! - [`CounterV1`] stores a `u64` in 4 bytes; [`CounterV2`] in 8 bytes and reads V1's
//!   bytes through a migration (`CompatibleAfterMigration`).
//! - [`EndianU64`] has a byte-order configuration; a new instance facing bytes of the
//!   other order answers `CompatibleWithReconfiguredSerializer`.

use std::sync::Arc;

use flowstate_core::error::SerializationError;
use flowstate_core::serializer::{Compatibility, SerializerSnapshot, TypeSerializer};

const COUNTER: &str = "conformance.counter";
const ENDIAN: &str = "conformance.endian-u64";

fn fixed<const N: usize>(bytes: &[u8]) -> Result<[u8; N], SerializationError> {
    bytes
        .try_into()
        .map_err(|_| SerializationError::new(format!("expected {N} bytes, got {}", bytes.len())))
}

/// Version 1: a `u64` counter stored as 4 little-endian bytes.
pub struct CounterV1;

impl TypeSerializer<u64> for CounterV1 {
    fn serialize_into(&self, value: &u64, out: &mut Vec<u8>) -> Result<(), SerializationError> {
        let v =
            u32::try_from(*value).map_err(|_| SerializationError::new("counter exceeds u32"))?;
        out.extend_from_slice(&v.to_le_bytes());
        Ok(())
    }
    fn deserialize(&self, bytes: &[u8]) -> Result<u64, SerializationError> {
        Ok(u32::from_le_bytes(fixed(bytes)?) as u64)
    }
    fn snapshot(&self) -> SerializerSnapshot {
        SerializerSnapshot {
            identity: COUNTER.into(),
            version: 1,
            schema: vec![],
        }
    }
    fn resolve_compatibility(&self, previous: &SerializerSnapshot) -> Compatibility<u64> {
        if previous.identity == COUNTER && previous.version == 1 {
            Compatibility::CompatibleAsIs
        } else {
            Compatibility::Incompatible(
                format!("cannot read {} v{}", previous.identity, previous.version).into(),
            )
        }
    }
}

/// Version 2: 8 bytes; migrates version 1's 4-byte values.
pub struct CounterV2;

impl TypeSerializer<u64> for CounterV2 {
    fn serialize_into(&self, value: &u64, out: &mut Vec<u8>) -> Result<(), SerializationError> {
        out.extend_from_slice(&value.to_le_bytes());
        Ok(())
    }
    fn deserialize(&self, bytes: &[u8]) -> Result<u64, SerializationError> {
        Ok(u64::from_le_bytes(fixed(bytes)?))
    }
    fn snapshot(&self) -> SerializerSnapshot {
        SerializerSnapshot {
            identity: COUNTER.into(),
            version: 2,
            schema: vec![],
        }
    }
    fn resolve_compatibility(&self, previous: &SerializerSnapshot) -> Compatibility<u64> {
        match (previous.identity.as_str(), previous.version) {
            (COUNTER, 2) => Compatibility::CompatibleAsIs,
            (COUNTER, 1) => Compatibility::CompatibleAfterMigration(Arc::new(|b: &[u8]| {
                CounterV1.deserialize(b)
            })),
            (id, v) => Compatibility::Incompatible(format!("cannot read {id} v{v}").into()),
        }
    }
}

/// A `u64` in a configurable byte order.
pub struct EndianU64 {
    /// Little-endian when true.
    pub little: bool,
}

impl TypeSerializer<u64> for EndianU64 {
    fn serialize_into(&self, value: &u64, out: &mut Vec<u8>) -> Result<(), SerializationError> {
        out.extend_from_slice(&if self.little {
            value.to_le_bytes()
        } else {
            value.to_be_bytes()
        });
        Ok(())
    }
    fn deserialize(&self, bytes: &[u8]) -> Result<u64, SerializationError> {
        let b = fixed(bytes)?;
        Ok(if self.little {
            u64::from_le_bytes(b)
        } else {
            u64::from_be_bytes(b)
        })
    }
    fn snapshot(&self) -> SerializerSnapshot {
        SerializerSnapshot {
            identity: ENDIAN.into(),
            version: 1,
            schema: vec![u8::from(self.little)],
        }
    }
    fn resolve_compatibility(&self, previous: &SerializerSnapshot) -> Compatibility<u64> {
        if previous.identity != ENDIAN {
            return Compatibility::Incompatible(format!("not {ENDIAN}").into());
        }
        match previous.schema.as_slice() {
            [l] if (*l == 1) == self.little => Compatibility::CompatibleAsIs,
            [l] => Compatibility::CompatibleWithReconfiguredSerializer(Arc::new(EndianU64 {
                little: *l == 1,
            })),
            _ => Compatibility::Incompatible("malformed endian schema".into()),
        }
    }
}
