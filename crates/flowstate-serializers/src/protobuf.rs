//! Protobuf through `prost`: values are encoded messages; protobuf's numbered fields
//! are its evolution rules, so stored bytes of the same message type are always read
//! as they are by today's definition of it.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use flowstate_core::error::SerializationError;
use flowstate_core::serializer::{
    Compatibility, SerializerSnapshot, TypeSerializer, short_type_name,
};

/// Identity of [`ProstSerializer`] snapshots; the schema bytes are the message type's
/// name.
pub const PROTOBUF_IDENTITY: &str = "flowstate.protobuf";
const PROTOBUF_VERSION: u32 = 1;

/// Serializes protobuf messages (`prost::Message`).
///
/// Evolution follows protobuf: add fields with new numbers (old values read them as
/// the field's default), remove fields (their numbers must not be reused: stored
/// values still hold them and they are skipped), never change a field's number or
/// wire type. The message name stored with the state must stay the same (name the
/// type stably with [`ProstSerializer::named`] before renaming it in Rust).
pub struct ProstSerializer<T> {
    message: Cow<'static, str>,
    _marker: PhantomData<fn() -> T>,
}

impl<T> fmt::Debug for ProstSerializer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ProstSerializer({})", self.message)
    }
}

impl<T: prost::Message + Default + 'static> Default for ProstSerializer<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: prost::Message + Default + 'static> ProstSerializer<T> {
    /// A serializer named after `T`'s Rust type name.
    pub fn new() -> Self {
        ProstSerializer {
            message: Cow::Owned(short_type_name(std::any::type_name::<T>())),
            _marker: PhantomData,
        }
    }

    /// A serializer with a stable message name (e.g. the protobuf full name).
    pub fn named(message: impl Into<String>) -> Self {
        ProstSerializer {
            message: Cow::Owned(message.into()),
            _marker: PhantomData,
        }
    }
}

impl<T: prost::Message + Default + 'static> TypeSerializer<T> for ProstSerializer<T> {
    fn serialize_into(&self, value: &T, out: &mut Vec<u8>) -> Result<(), SerializationError> {
        value
            .encode(out)
            .map_err(|e| SerializationError::new(format!("protobuf: {e}")))
    }

    fn deserialize(&self, bytes: &[u8]) -> Result<T, SerializationError> {
        T::decode(bytes)
            .map_err(|e| SerializationError::new(format!("protobuf `{}`: {e}", self.message)))
    }

    fn snapshot(&self) -> SerializerSnapshot {
        SerializerSnapshot {
            identity: PROTOBUF_IDENTITY.to_string(),
            version: PROTOBUF_VERSION,
            schema: self.message.as_bytes().to_vec(),
        }
    }

    fn resolve_compatibility(&self, previous: &SerializerSnapshot) -> Compatibility<T> {
        if previous.identity != PROTOBUF_IDENTITY || previous.version > PROTOBUF_VERSION {
            return Compatibility::Incompatible(
                format!(
                    "stored by `{}` version {}, now `{PROTOBUF_IDENTITY}` version {PROTOBUF_VERSION}",
                    previous.identity, previous.version
                )
                .into(),
            );
        }
        if previous.schema != self.message.as_bytes() {
            return Compatibility::Incompatible(
                format!(
                    "stored message `{}` differs from `{}`",
                    String::from_utf8_lossy(&previous.schema),
                    self.message
                )
                .into(),
            );
        }
        Compatibility::CompatibleAsIs
    }
}
