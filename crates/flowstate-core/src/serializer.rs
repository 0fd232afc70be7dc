//! Serializers: how stored values become bytes, and how a restore decides whether the
//! serializer of today can read the bytes of yesterday.
//!
//! Every state stores a [`SerializerSnapshot`] of each of its serializers in every
//! snapshot. On restore the new serializer resolves [`Compatibility`] against the old
//! snapshot with one of Flink's four outcomes. Key, namespace and map-user-key
//! serializers must be [`Compatibility::CompatibleAsIs`] (their bytes locate data);
//! value serializers may also migrate or be reconfigured.
//!
//! The default is [`SerdeSerializer`]: postcard (a compact, deterministic, documented
//! and stable serde format) for any `Serialize + DeserializeOwned` type.
//!
//! ```
//! use flowstate_core::serializer::{Compatibility, SerdeSerializer, TypeSerializer};
//! let s = SerdeSerializer::<(String, u64)>::new();
//! let mut buf = Vec::new();
//! s.serialize_into(&("a".to_string(), 7), &mut buf).unwrap();
//! assert_eq!(s.deserialize(&buf).unwrap(), ("a".to_string(), 7));
//! assert!(matches!(s.resolve_compatibility(&s.snapshot()), Compatibility::CompatibleAsIs));
//! ```

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{SerializationError, StateError, StateResult};

/// The stored description of a serializer: what wrote the bytes.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct SerializerSnapshot {
    /// Which serializer implementation wrote the bytes (e.g. `flowstate.serde-postcard`).
    pub identity: String,
    /// Version of that implementation's snapshot/format.
    pub version: u32,
    /// Implementation-defined configuration/schema bytes.
    pub schema: Vec<u8>,
}

/// Reads bytes written by an older serializer into today's type.
pub type MigrationReader<T> = Arc<dyn Fn(&[u8]) -> Result<T, SerializationError> + Send + Sync>;

/// Outcome of checking a new serializer against a stored [`SerializerSnapshot`].
pub enum Compatibility<T> {
    /// The new serializer reads and writes the stored bytes as they are.
    CompatibleAsIs,
    /// Stored bytes must be read with the given reader (the old format) and are
    /// rewritten with the new serializer.
    CompatibleAfterMigration(MigrationReader<T>),
    /// The given reconfigured serializer replaces the new one for reading and writing.
    CompatibleWithReconfiguredSerializer(Arc<dyn TypeSerializer<T>>),
    /// The stored bytes cannot be read; the reason is shown to the user.
    Incompatible(String),
}

impl<T> fmt::Debug for Compatibility<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Compatibility::CompatibleAsIs => write!(f, "CompatibleAsIs"),
            Compatibility::CompatibleAfterMigration(_) => write!(f, "CompatibleAfterMigration"),
            Compatibility::CompatibleWithReconfiguredSerializer(_) => {
                write!(f, "CompatibleWithReconfiguredSerializer")
            }
            Compatibility::Incompatible(r) => write!(f, "Incompatible({r})"),
        }
    }
}

/// Turns values of `T` into bytes and back, and describes itself for restores.
pub trait TypeSerializer<T>: Send + Sync + 'static {
    /// Appends the encoding of `value` to `out`.
    fn serialize_into(&self, value: &T, out: &mut Vec<u8>) -> Result<(), SerializationError>;
    /// Decodes exactly `bytes` (trailing bytes are an error).
    fn deserialize(&self, bytes: &[u8]) -> Result<T, SerializationError>;
    /// The description stored with the state.
    fn snapshot(&self) -> SerializerSnapshot;
    /// Decides whether this serializer can take over bytes written as `previous`.
    fn resolve_compatibility(&self, previous: &SerializerSnapshot) -> Compatibility<T>;
}

/// Identity of [`SerdeSerializer`] snapshots.
pub const SERDE_POSTCARD_IDENTITY: &str = "flowstate.serde-postcard";
const SERDE_POSTCARD_VERSION: u32 = 1;

/// The default serializer: postcard over serde.
///
/// Its snapshot records a type name (by default `std::any::type_name::<T>()` with
/// module paths stripped, e.g. `Vec<String>`, so it survives compiler upgrades and
/// moving a type between modules; give an explicit one with [`SerdeSerializer::named`])
/// and a schema version. A restore with another type name or schema version is
/// incompatible: serde formats like postcard do not survive layout changes, so
/// silently reading them would corrupt state.
pub struct SerdeSerializer<T> {
    type_name: Cow<'static, str>,
    schema_version: u32,
    _marker: PhantomData<fn() -> T>,
}

impl<T> Clone for SerdeSerializer<T> {
    fn clone(&self) -> Self {
        SerdeSerializer {
            type_name: self.type_name.clone(),
            schema_version: self.schema_version,
            _marker: PhantomData,
        }
    }
}

impl<T> fmt::Debug for SerdeSerializer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "SerdeSerializer<{}>(v{})",
            self.type_name, self.schema_version
        )
    }
}

impl<T: Serialize + DeserializeOwned + 'static> Default for SerdeSerializer<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Serialize + DeserializeOwned + 'static> SerdeSerializer<T> {
    /// A serializer named after `T`'s Rust type name, schema version 1.
    pub fn new() -> Self {
        SerdeSerializer {
            type_name: Cow::Owned(short_type_name(std::any::type_name::<T>())),
            schema_version: 1,
            _marker: PhantomData,
        }
    }

    /// A serializer with a stable, user-chosen type name and schema version.
    pub fn named(type_name: impl Into<String>, schema_version: u32) -> Self {
        SerdeSerializer {
            type_name: Cow::Owned(type_name.into()),
            schema_version,
            _marker: PhantomData,
        }
    }

    /// Shared handle, as descriptors hold serializers.
    pub fn arc() -> Arc<dyn TypeSerializer<T>> {
        Arc::new(Self::new())
    }

    fn schema_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.type_name.len() + 8);
        out.extend_from_slice(&(self.type_name.len() as u32).to_le_bytes());
        out.extend_from_slice(self.type_name.as_bytes());
        out.extend_from_slice(&self.schema_version.to_le_bytes());
        out
    }
}

/// `std::any::type_name` without module paths: `alloc::vec::Vec<alloc::string::String>`
/// becomes `Vec<String>`. The full form is not stable across compiler versions.
pub fn short_type_name(full: &str) -> String {
    let mut out = String::with_capacity(full.len());
    let mut ident_start = 0;
    let mut chars = full.chars().peekable();
    while let Some(c) = chars.next() {
        if c == ':' && chars.peek() == Some(&':') {
            chars.next();
            out.truncate(ident_start);
        } else {
            out.push(c);
            if !(c.is_alphanumeric() || c == '_') {
                ident_start = out.len();
            }
        }
    }
    out
}

fn parse_serde_schema(schema: &[u8]) -> Option<(&str, u32)> {
    let len = u32::from_le_bytes(schema.get(0..4)?.try_into().ok()?) as usize;
    let name = std::str::from_utf8(schema.get(4..4usize.checked_add(len)?)?).ok()?;
    let rest = schema.get(4 + len..)?;
    if rest.len() != 4 {
        return None;
    }
    Some((name, u32::from_le_bytes(rest.try_into().ok()?)))
}

impl<T: Serialize + DeserializeOwned + 'static> TypeSerializer<T> for SerdeSerializer<T> {
    fn serialize_into(&self, value: &T, out: &mut Vec<u8>) -> Result<(), SerializationError> {
        let buf = std::mem::take(out);
        *out = postcard::to_extend(value, buf).map_err(SerializationError::new)?;
        Ok(())
    }

    fn deserialize(&self, bytes: &[u8]) -> Result<T, SerializationError> {
        let (value, rest) = postcard::take_from_bytes(bytes).map_err(|e| {
            SerializationError::new(format!("cannot decode {}: {e}", self.type_name))
        })?;
        if !rest.is_empty() {
            return Err(SerializationError::new(format!(
                "cannot decode {}: {} trailing bytes",
                self.type_name,
                rest.len()
            )));
        }
        Ok(value)
    }

    fn snapshot(&self) -> SerializerSnapshot {
        SerializerSnapshot {
            identity: SERDE_POSTCARD_IDENTITY.to_string(),
            version: SERDE_POSTCARD_VERSION,
            schema: self.schema_bytes(),
        }
    }

    fn resolve_compatibility(&self, previous: &SerializerSnapshot) -> Compatibility<T> {
        if previous.identity != SERDE_POSTCARD_IDENTITY {
            return Compatibility::Incompatible(format!(
                "stored by serializer `{}`, now `{SERDE_POSTCARD_IDENTITY}`",
                previous.identity
            ));
        }
        if previous.version > SERDE_POSTCARD_VERSION {
            return Compatibility::Incompatible(format!(
                "stored by {SERDE_POSTCARD_IDENTITY} version {}, this build knows up to {SERDE_POSTCARD_VERSION}",
                previous.version
            ));
        }
        let Some((name, version)) = parse_serde_schema(&previous.schema) else {
            return Compatibility::Incompatible("stored serializer schema is malformed".into());
        };
        if name != self.type_name {
            return Compatibility::Incompatible(format!(
                "stored type `{name}` differs from `{}` (if the type was only renamed or moved, \
                 name it stably with SerdeSerializer::named)",
                self.type_name
            ));
        }
        if version != self.schema_version {
            return Compatibility::Incompatible(format!(
                "type `{name}` changed from schema version {version} to {}; \
                 use a serializer that migrates from version {version}",
                self.schema_version
            ));
        }
        Compatibility::CompatibleAsIs
    }
}

/// How a restore reads stored values and which serializer writes from then on.
pub struct Resolved<T> {
    /// Decodes stored bytes.
    pub reader: MigrationReader<T>,
    /// Serializer used from now on.
    pub serializer: Arc<dyn TypeSerializer<T>>,
    /// Whether stored bytes are in another format than `serializer` writes.
    pub migrated: bool,
}

/// Resolves a value serializer (all four outcomes allowed) against a stored snapshot.
pub fn resolve_value_serializer<T: 'static>(
    state: &str,
    what: &'static str,
    new: &Arc<dyn TypeSerializer<T>>,
    previous: &SerializerSnapshot,
) -> StateResult<Resolved<T>> {
    // TTL switched off: the stored values carry timestamps the new serializer does not
    // know; resolve against the inner serializer and drop the timestamps.
    if new.snapshot().identity != crate::ttl::TTL_IDENTITY
        && let Some(inner) = crate::ttl::ttl_inner_snapshot(previous)
    {
        let r = resolve_value_serializer(state, what, new, &inner)?;
        return Ok(Resolved {
            reader: crate::ttl::strip_ttl_reader(r.reader),
            serializer: r.serializer,
            migrated: true,
        });
    }
    match new.resolve_compatibility(previous) {
        Compatibility::CompatibleAsIs => {
            let s = new.clone();
            Ok(Resolved {
                reader: Arc::new(move |b: &[u8]| s.deserialize(b)),
                serializer: new.clone(),
                migrated: false,
            })
        }
        Compatibility::CompatibleAfterMigration(reader) => Ok(Resolved {
            reader,
            serializer: new.clone(),
            migrated: true,
        }),
        Compatibility::CompatibleWithReconfiguredSerializer(s) => {
            let r = s.clone();
            Ok(Resolved {
                reader: Arc::new(move |b: &[u8]| r.deserialize(b)),
                serializer: s,
                migrated: false,
            })
        }
        Compatibility::Incompatible(reason) => Err(StateError::IncompatibleSerializer {
            state: state.to_string(),
            what,
            reason,
        }),
    }
}

/// Checks a serializer whose bytes locate data (key, namespace, map user key): only
/// [`Compatibility::CompatibleAsIs`] is acceptable.
pub fn require_same_layout<T: 'static>(
    state: &str,
    what: &'static str,
    new: &dyn TypeSerializer<T>,
    previous: &SerializerSnapshot,
) -> StateResult<()> {
    match new.resolve_compatibility(previous) {
        Compatibility::CompatibleAsIs => Ok(()),
        Compatibility::Incompatible(reason) => Err(StateError::IncompatibleSerializer {
            state: state.to_string(),
            what,
            reason,
        }),
        other => Err(StateError::IncompatibleSerializer {
            state: state.to_string(),
            what,
            reason: format!(
                "{what} bytes locate stored data and may not change layout, but the serializer answered {other:?}"
            ),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_type_names() {
        assert_eq!(short_type_name("alloc::string::String"), "String");
        assert_eq!(
            short_type_name("(alloc::string::String, u32)"),
            "(String, u32)"
        );
        assert_eq!(
            short_type_name("alloc::vec::Vec<my::mod::Event<core::option::Option<u8>>>"),
            "Vec<Event<Option<u8>>>"
        );
        assert_eq!(short_type_name("[u8; 4]"), "[u8; 4]");
    }

    #[test]
    fn rejects_trailing_bytes_and_garbage() {
        let s = SerdeSerializer::<u32>::new();
        assert!(s.deserialize(&[1, 2]).is_err());
        assert!(
            s.deserialize(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff])
                .is_err()
        );
        assert!(
            SerdeSerializer::<String>::new()
                .deserialize(&[5, b'a'])
                .is_err()
        );
    }

    #[test]
    fn compatibility_outcomes_of_serde_serializer() {
        let v1 = SerdeSerializer::<u64>::named("Counter", 1);
        let v2 = SerdeSerializer::<u64>::named("Counter", 2);
        let other = SerdeSerializer::<u64>::named("Other", 1);
        assert!(matches!(
            v1.resolve_compatibility(&v1.snapshot()),
            Compatibility::CompatibleAsIs
        ));
        assert!(matches!(
            v2.resolve_compatibility(&v1.snapshot()),
            Compatibility::Incompatible(_)
        ));
        assert!(matches!(
            other.resolve_compatibility(&v1.snapshot()),
            Compatibility::Incompatible(_)
        ));
        let foreign = SerializerSnapshot {
            identity: "x".into(),
            version: 1,
            schema: vec![],
        };
        assert!(matches!(
            v1.resolve_compatibility(&foreign),
            Compatibility::Incompatible(_)
        ));
        let malformed = SerializerSnapshot {
            schema: vec![9, 9],
            ..v1.snapshot()
        };
        assert!(matches!(
            v1.resolve_compatibility(&malformed),
            Compatibility::Incompatible(_)
        ));
    }
}
