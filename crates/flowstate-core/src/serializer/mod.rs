//! Serializers: how stored values become bytes, and how a restore decides whether the
//! serializer of today can read the bytes of yesterday.
//!
//! Every state stores a [`SerializerSnapshot`] of each of its serializers in every
//! snapshot. On restore the new serializer resolves [`Compatibility`] against the old
//! snapshot with one of Flink's four outcomes. Key, namespace and map-user-key
//! serializers must be [`Compatibility::CompatibleAsIs`] (their bytes locate data);
//! value serializers may also migrate or be reconfigured.
//!
//! The default is [`SerdeSerializer`] (`serde.rs`): postcard (a compact, deterministic,
//! documented and stable serde format) for any `Serialize + DeserializeOwned` type,
//! with the type's [`crate::schema::Schema`] stored beside the bytes so that the type
//! may evolve (fields added with defaults, removed, reordered, renamed through
//! aliases, variants added, numbers widened, values made optional).
//!
//! [`FixedIntegerSerializer`] (`fixed.rs`) writes integers at their full width, for
//! values that are mostly large; a user chooses it per state.
//!
//! ```
//! use flowstate_core::serializer::{Compatibility, SerdeSerializer, TypeSerializer};
//! let s = SerdeSerializer::<(String, u64)>::new();
//! let mut buf = Vec::new();
//! s.serialize_into(&("a".to_string(), 7), &mut buf).unwrap();
//! assert_eq!(s.deserialize(&buf).unwrap(), ("a".to_string(), 7));
//! assert!(matches!(s.resolve_compatibility(&s.snapshot()), Compatibility::CompatibleAsIs));
//! ```

mod fixed;
mod serde;
pub mod stored;

use std::fmt;
use std::sync::Arc;

use crate::error::{SerializationError, StateError, StateResult};

pub use self::fixed::{
    FIXED_INTEGER_IDENTITY, FIXED_INTEGER_VERSION, FixedInteger, FixedIntegerSerializer, FixedKind,
};
pub use self::serde::{
    IntegerEncoding, SERDE_POSTCARD_IDENTITY, SerdeSerializer, short_type_name, snapshot_of,
};
pub use self::stored::StoredFormat;

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
    Incompatible(Incompatibility),
}

/// Why a serializer cannot take over stored bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Incompatibility {
    /// Field path of the change inside the value (`lines[].qty`; empty: the value
    /// itself), when the serializer can tell.
    pub path: Option<String>,
    /// What changed and why it cannot be read.
    pub change: String,
}

impl From<String> for Incompatibility {
    fn from(change: String) -> Self {
        Incompatibility { path: None, change }
    }
}

impl From<&str> for Incompatibility {
    fn from(change: &str) -> Self {
        change.to_string().into()
    }
}

impl fmt::Display for Incompatibility {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.path.as_deref() {
            Some("") => write!(f, "the value itself: {}", self.change),
            Some(p) => write!(f, "at `{p}`: {}", self.change),
            None => write!(f, "{}", self.change),
        }
    }
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
    /// Where and how the layout of `previous` differs from this serializer's, for the
    /// message when a layout may not change (keys); `None` when it cannot tell.
    fn layout_change(&self, _previous: &SerializerSnapshot) -> Option<Incompatibility> {
        None
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
        Compatibility::Incompatible(i) => Err(incompatible(state, what, i)),
    }
}

fn incompatible(state: &str, what: &'static str, i: Incompatibility) -> StateError {
    StateError::IncompatibleSerializer {
        state: state.to_string(),
        what,
        path: i.path,
        reason: i.change,
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
        Compatibility::Incompatible(i) => Err(incompatible(state, what, i)),
        other => {
            let change = new.layout_change(previous);
            Err(StateError::IncompatibleSerializer {
                state: state.to_string(),
                what,
                path: change.as_ref().and_then(|c| c.path.clone()),
                reason: format!(
                    "{what} bytes locate stored data and may not change layout ({})",
                    change.map_or_else(
                        || format!("the serializer answered {other:?}"),
                        |c| c.change
                    )
                ),
            })
        }
    }
}
