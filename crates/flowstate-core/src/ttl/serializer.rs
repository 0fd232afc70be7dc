//! The stored form of TTL values ([`TtlValue`]: timestamp first, then the inner
//! bytes), its serializer, and restores across TTL being switched on or off.

use std::sync::Arc;

use super::config::*;
use crate::error::{SerializationError, StateResult};
use crate::serializer::{
    Compatibility, MigrationReader, Resolved, SerializerSnapshot, TypeSerializer,
    resolve_value_serializer,
};

/// The stored form of a value of a TTL state: the value and its last access.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TtlValue<T> {
    /// The user value.
    pub value: T,
    /// Milliseconds of the state's clock at the last refreshing access.
    pub last_access: i64,
}

/// Serializer identity of [`TtlSerializer`].
pub const TTL_IDENTITY: &str = "flowstate.ttl";
const TTL_VERSION: u32 = 1;

/// Serializes [`TtlValue`]s: 8-byte little-endian timestamp, then the inner bytes.
/// Its snapshot embeds the inner serializer's snapshot, so compatibility is resolved
/// on the inner type.
pub struct TtlSerializer<T> {
    inner: Arc<dyn TypeSerializer<T>>,
    clock: Arc<dyn TtlClock>,
}

impl<T> TtlSerializer<T> {
    /// Wraps `inner`; `clock` stamps values migrated from a state without TTL.
    pub fn new(inner: Arc<dyn TypeSerializer<T>>, clock: Arc<dyn TtlClock>) -> Self {
        TtlSerializer { inner, clock }
    }
}

/// Encodes a serializer snapshot as bytes (the schema of a TTL snapshot).
fn encode_snapshot(s: &SerializerSnapshot) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.identity.len() + s.schema.len() + 12);
    out.extend_from_slice(&(s.identity.len() as u32).to_le_bytes());
    out.extend_from_slice(s.identity.as_bytes());
    out.extend_from_slice(&s.version.to_le_bytes());
    out.extend_from_slice(&s.schema);
    out
}

/// The inner snapshot of a [`TtlSerializer`] snapshot, if `s` is one and well formed.
pub fn ttl_inner_snapshot(s: &SerializerSnapshot) -> Option<SerializerSnapshot> {
    if s.identity != TTL_IDENTITY {
        return None;
    }
    let b = &s.schema;
    let len = u32::from_le_bytes(b.get(0..4)?.try_into().ok()?) as usize;
    let identity = std::str::from_utf8(b.get(4..4usize.checked_add(len)?)?).ok()?;
    let version = u32::from_le_bytes(b.get(4 + len..8 + len)?.try_into().ok()?);
    Some(SerializerSnapshot {
        identity: identity.to_string(),
        version,
        schema: b.get(8 + len..)?.to_vec(),
    })
}

/// The last-access timestamp of a stored TTL value, or `None` if too short.
#[inline]
pub fn stored_timestamp(bytes: &[u8]) -> Option<i64> {
    Some(i64::from_le_bytes(bytes.get(0..8)?.try_into().ok()?))
}

pub(super) fn split_ttl(bytes: &[u8]) -> Result<(i64, &[u8]), SerializationError> {
    match (stored_timestamp(bytes), bytes.get(8..)) {
        (Some(ts), Some(rest)) => Ok((ts, rest)),
        _ => Err(SerializationError::new(format!(
            "TTL value of {} bytes is shorter than its 8-byte timestamp",
            bytes.len()
        ))),
    }
}

impl<T: 'static> TypeSerializer<TtlValue<T>> for TtlSerializer<T> {
    fn serialize_into(
        &self,
        value: &TtlValue<T>,
        out: &mut Vec<u8>,
    ) -> Result<(), SerializationError> {
        out.extend_from_slice(&value.last_access.to_le_bytes());
        self.inner.serialize_into(&value.value, out)
    }

    fn deserialize(&self, bytes: &[u8]) -> Result<TtlValue<T>, SerializationError> {
        let (last_access, rest) = split_ttl(bytes)?;
        Ok(TtlValue {
            value: self.inner.deserialize(rest)?,
            last_access,
        })
    }

    fn snapshot(&self) -> SerializerSnapshot {
        SerializerSnapshot {
            identity: TTL_IDENTITY.to_string(),
            version: TTL_VERSION,
            schema: encode_snapshot(&self.inner.snapshot()),
        }
    }

    /// A TTL snapshot resolves on its inner one; a snapshot without TTL migrates:
    /// each restored value gets the restore time as its last access.
    fn resolve_compatibility(&self, previous: &SerializerSnapshot) -> Compatibility<TtlValue<T>> {
        if previous.identity == TTL_IDENTITY {
            if previous.version > TTL_VERSION {
                return Compatibility::Incompatible(
                    format!(
                        "stored by {TTL_IDENTITY} version {}, this build knows up to {TTL_VERSION}",
                        previous.version
                    )
                    .into(),
                );
            }
            let Some(inner_prev) = ttl_inner_snapshot(previous) else {
                return Compatibility::Incompatible(
                    "stored TTL serializer schema is malformed".into(),
                );
            };
            return match self.inner.resolve_compatibility(&inner_prev) {
                Compatibility::CompatibleAsIs => Compatibility::CompatibleAsIs,
                Compatibility::CompatibleAfterMigration(reader) => {
                    Compatibility::CompatibleAfterMigration(Arc::new(move |b: &[u8]| {
                        let (last_access, rest) = split_ttl(b)?;
                        Ok(TtlValue {
                            value: reader(rest)?,
                            last_access,
                        })
                    }))
                }
                Compatibility::CompatibleWithReconfiguredSerializer(s) => {
                    Compatibility::CompatibleWithReconfiguredSerializer(Arc::new(
                        TtlSerializer::new(s, self.clock.clone()),
                    ))
                }
                Compatibility::Incompatible(r) => Compatibility::Incompatible(r),
            };
        }
        // TTL switched on for a state stored without it.
        let reader: MigrationReader<T> = match self.inner.resolve_compatibility(previous) {
            Compatibility::CompatibleAsIs => {
                let s = self.inner.clone();
                Arc::new(move |b: &[u8]| s.deserialize(b))
            }
            Compatibility::CompatibleAfterMigration(r) => r,
            Compatibility::CompatibleWithReconfiguredSerializer(s) => {
                Arc::new(move |b: &[u8]| s.deserialize(b))
            }
            Compatibility::Incompatible(r) => return Compatibility::Incompatible(r),
        };
        let now = self.clock.now_ms();
        Compatibility::CompatibleAfterMigration(Arc::new(move |b: &[u8]| {
            Ok(TtlValue {
                value: reader(b)?,
                last_access: now,
            })
        }))
    }
}

/// Resolves a restored value serializer like
/// [`crate::serializer::resolve_value_serializer`], and also when TTL was switched
/// off: the stored values carry timestamps the new serializer does not know, so the
/// new serializer is resolved against the inner snapshot and the timestamps dropped.
/// Backends resolve every restored value serializer through this.
pub fn resolve_restored<T: 'static>(
    state: &str,
    what: &'static str,
    new: &Arc<dyn TypeSerializer<T>>,
    previous: &SerializerSnapshot,
) -> StateResult<Resolved<T>> {
    if new.snapshot().identity != TTL_IDENTITY
        && let Some(inner) = ttl_inner_snapshot(previous)
    {
        let r = resolve_value_serializer(state, what, new, &inner)?;
        return Ok(Resolved {
            reader: strip_ttl_reader(r.reader),
            serializer: r.serializer,
            migrated: true,
        });
    }
    resolve_value_serializer(state, what, new, previous)
}

/// Reader of values stored with TTL by a state that now has none: drops timestamps.
fn strip_ttl_reader<T: 'static>(inner: MigrationReader<T>) -> MigrationReader<T> {
    Arc::new(move |b: &[u8]| {
        let (_, rest) = split_ttl(b)?;
        inner(rest)
    })
}

fn last_access_of<T>(v: &TtlValue<T>) -> i64 {
    v.last_access
}

pub(super) fn storage_for<T>(config: &StateTtlConfig) -> TtlStorage<TtlValue<T>> {
    TtlStorage {
        config: config.clone(),
        last_access: last_access_of::<T>,
    }
}
