//! The default serializer: postcard over serde, with the type's schema stored beside
//! the bytes so that restored bytes of an older shape of the type can be migrated.
//!
//! Hot path: `serialize_into`/`deserialize` are postcard and nothing else (integers are
//! written by [`put_integer`], byte for byte what postcard writes); the schema is traced
//! once per type and process, only when a snapshot is written or restored.

use std::any::Any;
use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::fixed::{FIXED_INTEGER_IDENTITY, json_number, stored_kind};
use super::{Compatibility, Incompatibility, SerializerSnapshot, TypeSerializer};
use crate::error::SerializationError;
use crate::schema::trace::{Traced, schema_of};
use crate::schema::{Schema, SchemaError, evolve, first_difference};

/// Identity of [`SerdeSerializer`] snapshots.
pub const SERDE_POSTCARD_IDENTITY: &str = "flowstate.serde-postcard";
/// Version 1: type name and schema version. Version 2 adds the traced schema.
const SERDE_POSTCARD_VERSION: u32 = 2;

/// The default serializer: postcard over serde.
///
/// Its snapshot records a type name (by default `std::any::type_name::<T>()` with
/// module paths stripped, e.g. `Vec<String>`; give an explicit one with
/// [`SerdeSerializer::named`]), a schema version, and the type's traced
/// [`Schema`]. On restore:
/// - the same layout (equal schemas up to type names) reads as is;
/// - another layout the type can read under the evolution rules migrates
///   ([`crate::schema::evolve`]): every restored value is read through the stored
///   schema and written again in the new one;
/// - anything else is incompatible, naming the field path and the change;
/// - another schema version (set with [`SerdeSerializer::named`]) is a declared change
///   of meaning and is incompatible: use a serializer that migrates by hand;
/// - without a stored schema (snapshots before version 2, or types that cannot be
///   traced) the type names must match and the bytes are read as they are.
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

    /// `T`'s schema (traced once per process), or why it has none.
    pub fn schema(&self) -> Result<Arc<Traced>, SchemaError> {
        schema_of::<T>()
    }
}

/// What a [`SerdeSerializer`] snapshot's schema bytes hold.
pub(crate) struct Stored<'a> {
    pub(crate) type_name: &'a str,
    pub(crate) schema_version: u32,
    /// The traced schema's JSON; empty when none was stored.
    pub(crate) schema: &'a [u8],
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        b.get(at..at.checked_add(4)?)?.try_into().ok()?,
    ))
}

/// Layout: `u32 name length | name | u32 schema version` (version 1), then
/// `u32 schema length | schema JSON` (version 2; length 0 when untraceable).
pub(crate) fn parse_stored(version: u32, b: &[u8]) -> Option<Stored<'_>> {
    let len = u32_at(b, 0)? as usize;
    let name_end = 4usize.checked_add(len)?;
    let type_name = std::str::from_utf8(b.get(4..name_end)?).ok()?;
    let schema_version = u32_at(b, name_end)?;
    let rest = b.get(name_end + 4..)?;
    let schema = if version == 1 {
        if !rest.is_empty() {
            return None;
        }
        &[][..]
    } else {
        let n = u32_at(rest, 0)? as usize;
        let json = rest.get(4..4usize.checked_add(n)?)?;
        if rest.len() != 4 + n {
            return None;
        }
        json
    };
    Some(Stored {
        type_name,
        schema_version,
        schema,
    })
}

/// The snapshot [`SerdeSerializer`] writes for a type named `type_name` whose schema
/// is the JSON `schema` (empty: none): also how offline tools describe values they
/// write from a schema alone, so a job restores them as its own.
pub fn snapshot_of(type_name: &str, schema_version: u32, schema: &[u8]) -> SerializerSnapshot {
    let mut out = Vec::with_capacity(type_name.len() + schema.len() + 12);
    out.extend_from_slice(&(type_name.len() as u32).to_le_bytes());
    out.extend_from_slice(type_name.as_bytes());
    out.extend_from_slice(&schema_version.to_le_bytes());
    out.extend_from_slice(&(schema.len() as u32).to_le_bytes());
    out.extend_from_slice(schema);
    SerializerSnapshot {
        identity: SERDE_POSTCARD_IDENTITY.to_string(),
        version: SERDE_POSTCARD_VERSION,
        schema: out,
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

impl<T: Serialize + DeserializeOwned + 'static> SerdeSerializer<T> {
    /// The stored schema of `previous`, checked against this serializer's identity,
    /// version and schema version.
    fn stored<'p>(&self, previous: &'p SerializerSnapshot) -> Result<Stored<'p>, Incompatibility> {
        if previous.identity != SERDE_POSTCARD_IDENTITY {
            return Err(format!(
                "stored by serializer `{}`, now `{SERDE_POSTCARD_IDENTITY}`",
                previous.identity
            )
            .into());
        }
        if previous.version == 0 || previous.version > SERDE_POSTCARD_VERSION {
            return Err(format!(
                "stored by {SERDE_POSTCARD_IDENTITY} version {}, this build knows up to {SERDE_POSTCARD_VERSION}",
                previous.version
            )
            .into());
        }
        let stored = parse_stored(previous.version, &previous.schema)
            .ok_or_else(|| Incompatibility::from("stored serializer schema is malformed"))?;
        if stored.schema_version != self.schema_version {
            return Err(format!(
                "type `{}` changed from schema version {} to {}; \
                 use a serializer that migrates from version {}",
                stored.type_name, stored.schema_version, self.schema_version, stored.schema_version
            )
            .into());
        }
        Ok(stored)
    }
}

impl<T: Serialize + DeserializeOwned + 'static> TypeSerializer<T> for SerdeSerializer<T> {
    fn serialize_into(&self, value: &T, out: &mut Vec<u8>) -> Result<(), SerializationError> {
        if put_integer(value, out) {
            return Ok(());
        }
        // Appended through a borrow, so that a failure can take back what it wrote
        // and leave `out` as it was (handing postcard the buffer itself lost it all).
        let at = out.len();
        let written = postcard::to_extend(value, Append(out)).map(|_| ());
        written.map_err(|e| {
            out.truncate(at);
            SerializationError::new(e)
        })
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
        let json = self.schema().ok();
        let json: &[u8] = json.as_ref().map_or(&[], |t| &t.json);
        snapshot_of(&self.type_name, self.schema_version, json)
    }

    fn resolve_compatibility(&self, previous: &SerializerSnapshot) -> Compatibility<T> {
        if previous.identity == FIXED_INTEGER_IDENTITY {
            return from_fixed_integers::<T>(previous);
        }
        let stored = match self.stored(previous) {
            Ok(s) => s,
            Err(i) => return Compatibility::Incompatible(i),
        };
        let current = self.schema().ok();
        let (false, Some(current)) = (stored.schema.is_empty(), current) else {
            // No schema on one side: only the names can be compared.
            if stored.type_name != self.type_name {
                return Compatibility::Incompatible(
                    format!(
                        "stored type `{}` differs from `{}` and no schema was stored to compare \
                         them (if the type was only renamed or moved, name it stably with \
                         SerdeSerializer::named)",
                        stored.type_name, self.type_name
                    )
                    .into(),
                );
            }
            return Compatibility::CompatibleAsIs;
        };
        // The common restore: the same type, byte for byte the same schema.
        if stored.schema == current.json.as_slice() {
            return Compatibility::CompatibleAsIs;
        }
        let old = match Schema::from_json(stored.schema) {
            Ok(s) => Arc::new(s),
            Err(e) => return Compatibility::Incompatible(e.to_string().into()),
        };
        if old.same_layout(&current.schema) {
            return Compatibility::CompatibleAsIs;
        }
        match evolve::check::<T>(&old) {
            Ok(()) => Compatibility::CompatibleAfterMigration(Arc::new(move |b: &[u8]| {
                crate::schema::de::from_bytes::<T>(&old, b).map_err(SerializationError::new)
            })),
            Err(e) => Compatibility::Incompatible(Incompatibility {
                path: Some(e.path().to_string()),
                change: e.message,
            }),
        }
    }

    fn layout_change(&self, previous: &SerializerSnapshot) -> Option<Incompatibility> {
        let stored = self.stored(previous).ok()?;
        let old = Schema::from_json(stored.schema).ok()?;
        let current = self.schema().ok()?;
        first_difference(&old, &current.schema).map(|(path, change)| Incompatibility {
            path: Some(path),
            change,
        })
    }
}

/// Taking over values a [`super::FixedIntegerSerializer`] wrote: `T` must be an
/// integer type that holds every value of the stored one (each is read at its fixed
/// width and written again as postcard).
fn from_fixed_integers<T: DeserializeOwned + 'static>(
    previous: &SerializerSnapshot,
) -> Compatibility<T> {
    use std::any::TypeId;
    let old = match stored_kind(previous) {
        Ok(k) => k,
        Err(i) => return Compatibility::Incompatible(i),
    };
    let as_t = |v: i128| -> Result<T, SerializationError> {
        let json =
            json_number(v).ok_or_else(|| SerializationError::new(format!("{v} out of range")))?;
        T::deserialize(json).map_err(SerializationError::new)
    };
    let integer = [
        TypeId::of::<u8>(),
        TypeId::of::<u16>(),
        TypeId::of::<u32>(),
        TypeId::of::<u64>(),
        TypeId::of::<u128>(),
        TypeId::of::<i8>(),
        TypeId::of::<i16>(),
        TypeId::of::<i32>(),
        TypeId::of::<i64>(),
        TypeId::of::<i128>(),
    ]
    .contains(&TypeId::of::<T>());
    let (lo, hi) = old.range();
    if !integer || as_t(lo).is_err() || as_t(hi).is_err() {
        return Compatibility::Incompatible(
            format!(
                "stored as fixed-width {}, which `{}` cannot hold",
                old.name(),
                short_type_name(std::any::type_name::<T>())
            )
            .into(),
        );
    }
    Compatibility::CompatibleAfterMigration(Arc::new(move |b: &[u8]| as_t(old.decode(b)?)))
}

/// Postcard's output: appends to a borrowed buffer.
struct Append<'a>(&'a mut Vec<u8>);

impl Extend<u8> for Append<'_> {
    fn extend<I: IntoIterator<Item = u8>>(&mut self, bytes: I) {
        self.0.extend(bytes);
    }
}

/// Appends `value` as postcard does if it is a `u64`, `i64`, `u32` or `i32` (the
/// usual keys): a LEB128 varint, zigzag-encoded when signed. `false` for other types
/// (the type test is resolved at compile time).
///
/// The encoding is built in a register and stored 16 bytes at once, then trimmed:
/// postcard stores it a byte at a time, and a key's hash or copy that loads it right
/// after (a wide load over several narrow stores cannot be forwarded from them) then
/// waited for the stores to drain. Postcard's serializer built per call and its
/// byte-wise pushes were about 4% of the heap keyed job's samples.
fn put_integer<T: 'static>(value: &T, out: &mut Vec<u8>) -> bool {
    let Some(encoded) = IntegerEncoding::of(value) else {
        return false;
    };
    encoded.append_to(out);
    true
}

/// An integer's postcard encoding, built in registers (see `put_integer`).
#[derive(Clone, Copy, Debug)]
pub struct IntegerEncoding {
    bytes: [u8; 16],
    len: usize,
}

impl IntegerEncoding {
    /// Whether values of `T` have an encoding here: `u64`, `i64`, `u32` and `i32`.
    #[inline]
    pub fn covers<T: 'static>() -> bool {
        use std::any::TypeId;
        let t = TypeId::of::<T>();
        t == TypeId::of::<u64>()
            || t == TypeId::of::<i64>()
            || t == TypeId::of::<u32>()
            || t == TypeId::of::<i32>()
    }

    /// Whether `serializer` writes values of `T` exactly as [`IntegerEncoding`] encodes
    /// them: `T` is one of the covered integers and the serializer is postcard's
    /// ([`SerdeSerializer`]). Asks the serializer for its snapshot: call it once, when
    /// a state or backend is made, not per value.
    pub fn writes<T: 'static>(serializer: &dyn TypeSerializer<T>) -> bool {
        Self::covers::<T>() && serializer.snapshot().identity == SERDE_POSTCARD_IDENTITY
    }

    /// The encoding of `value` if it is a `u64`, `i64`, `u32` or `i32`; `None` for
    /// other types (the type test is resolved at compile time).
    #[inline]
    pub fn of<T: 'static>(value: &T) -> Option<Self> {
        varint_input(value).map(Self::of_varint)
    }

    /// The varint encoding of `v` (already zigzagged if it came from a signed type),
    /// without a loop: its length from the count of significant bits, its 7-bit groups
    /// spread one per byte by three shift-and-mask steps (28, 14, then 7 bits per
    /// lane), the continuation bits set on every byte but the last. A loop of one
    /// 128-bit shift per byte was half of a RocksDB `listAddAll`'s own samples for
    /// full-range `u64`s (nine or ten bytes each); a quarter after.
    #[inline]
    fn of_varint(v: u64) -> Self {
        // Significant bits (one for zero), seven per byte: 1..=10 bytes.
        let bits = 64 - (v | 1).leading_zeros() as usize;
        let len = bits.div_ceil(7);
        // The low 56 bits, eight groups of seven, one per byte.
        let mut low = v & ((1 << 56) - 1);
        low = (low & 0x0000_0000_0FFF_FFFF) | ((low & 0x00FF_FFFF_F000_0000) << 4);
        low = (low & 0x0000_3FFF_0000_3FFF) | ((low & 0x0FFF_C000_0FFF_C000) << 2);
        low = (low & 0x007F_007F_007F_007F) | ((low & 0x3F80_3F80_3F80_3F80) << 1);
        // The top eight bits: seven in byte 8, the last one in byte 9.
        let top = v >> 56;
        let high = u128::from((top & 0x7f) | ((top >> 7) << 8));
        let continuation = 0x8080_8080_8080_8080_8080u128 & ((1u128 << (8 * (len - 1))) - 1);
        let encoded = u128::from(low) | (high << 64) | continuation;
        IntegerEncoding {
            bytes: encoded.to_le_bytes(),
            len,
        }
    }

    /// [`crate::keygroup::key_hash`] of `value`'s encoding, if it is a `u64`, `i64`,
    /// `u32` or `i32`, without building the encoding when it is at most three bytes
    /// (values below 2^21, most keys). Routing a keyed record hashes its key this way:
    /// building the varint (a loop over a 128-bit register) and hashing the bytes
    /// back from memory took about half of a key's routing.
    #[inline]
    pub fn key_hash_of<T: 'static>(value: &T) -> Option<u32> {
        let v = varint_input(value)?;
        Some(if v < 1 << 21 {
            short_varint_key_hash(v)
        } else {
            crate::keygroup::key_hash(Self::of_varint(v).as_bytes())
        })
    }

    /// The encoded bytes: exactly what [`SerdeSerializer`] writes for the value.
    #[inline]
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }

    /// Appends the encoded bytes to `out`: all 16 of the register stored at once, then
    /// trimmed to [`IntegerEncoding::len`] (one wide store instead of a copy of a
    /// variable length, which is a `memcpy` call; see `put_integer`).
    #[inline]
    pub fn append_to(&self, out: &mut Vec<u8>) {
        let at = out.len();
        out.extend_from_slice(&self.bytes);
        out.truncate(at + self.len);
    }

    /// How many bytes the encoding has (1 to 10).
    #[inline]
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> usize {
        self.len
    }
}

/// The unsigned value postcard writes as a varint for `value` if it is a `u64`,
/// `i64`, `u32` or `i32` (signed ones zigzag-encoded); `None` for other types (the
/// type test is resolved at compile time).
#[inline]
fn varint_input<T: 'static>(value: &T) -> Option<u64> {
    let any = value as &dyn Any;
    if let Some(v) = any.downcast_ref::<u64>() {
        Some(*v)
    } else if let Some(v) = any.downcast_ref::<i64>() {
        Some(((*v << 1) ^ (*v >> 63)) as u64)
    } else if let Some(v) = any.downcast_ref::<u32>() {
        Some(*v as u64)
    } else {
        any.downcast_ref::<i32>()
            .map(|v| ((*v << 1) ^ (*v >> 31)) as u32 as u64)
    }
}

/// XXH3-64 (seed 0, the default secret) of the one to three varint bytes of
/// `v < 2^21`, truncated to 32 bits: [`crate::keygroup::key_hash`] of them, computed
/// from `v` in registers. It is XXH3's path for inputs of one to three bytes: the
/// first, middle and last byte and the length packed into one word, mixed with the
/// secret's first eight bytes and finished with the XXH64 avalanche. A test checks it
/// against the `xxhash-rust` crate for every `v` below 2^21.
#[inline]
fn short_varint_key_hash(v: u64) -> u32 {
    debug_assert!(v < 1 << 21);
    // XXH3 packs bytes 0, len / 2 and len - 1 with the length: byte 0 in bits 16-23,
    // the middle one in 24-31, the last in 0-7, the length in 8-15. One case per
    // length (each byte but the last has its continuation bit set): keys of one
    // length dominate a key space, so the branch is predicted, and the three-byte
    // case (keys from 2^14, most of them) takes a third of the operations of a
    // branch-free form that builds every byte and selects among them.
    let v = v as u32;
    let combo = if v >= 1 << 14 {
        let (b0, b1, b2) = (v & 0x7f | 0x80, (v >> 7) & 0x7f | 0x80, v >> 14);
        b0 << 16 | b1 << 24 | b2 | 3 << 8
    } else if v >= 1 << 7 {
        let (b0, b1) = (v & 0x7f | 0x80, v >> 7);
        b0 << 16 | b1 << 24 | b1 | 2 << 8
    } else {
        v << 16 | v << 24 | v | 1 << 8
    };
    // The secret's first two little-endian words, XORed (seed 0 adds nothing).
    const SECRET_FLIP: u64 = 0x396c_feb8 ^ 0xbe4b_a423;
    const PRIME64_2: u64 = 0xC2B2_AE3D_27D4_EB4F;
    const PRIME64_3: u64 = 0x1656_67B1_9E37_79F9;
    let mut h = combo as u64 ^ SECRET_FLIP;
    h ^= h >> 33;
    h = h.wrapping_mul(PRIME64_2);
    h ^= h >> 29;
    h = h.wrapping_mul(PRIME64_3);
    h ^= h >> 32;
    h as u32
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// The integer fast path writes exactly postcard's bytes.
    #[test]
    fn integers_encode_as_postcard_does() {
        use std::any::TypeId;
        fn check<T: Serialize + DeserializeOwned + 'static>(v: T) {
            let mut fast = vec![7];
            SerdeSerializer::<T>::new()
                .serialize_into(&v, &mut fast)
                .unwrap();
            let mut expected = vec![7];
            expected = postcard::to_extend(&v, expected).unwrap();
            assert_eq!(fast, expected);
            // An integer's encoding on its own is the same bytes; other types have none.
            let integer = [
                TypeId::of::<u64>(),
                TypeId::of::<i64>(),
                TypeId::of::<u32>(),
                TypeId::of::<i32>(),
            ]
            .contains(&TypeId::of::<T>());
            assert_eq!(IntegerEncoding::covers::<T>(), integer);
            assert_eq!(
                IntegerEncoding::of(&v).map(|e| e.as_bytes().to_vec()),
                integer.then(|| expected[1..].to_vec())
            );
            // Appended after other bytes, it is the same bytes, and nothing more.
            if let Some(e) = IntegerEncoding::of(&v) {
                assert_eq!(e.len(), e.as_bytes().len());
                let mut out = vec![7];
                e.append_to(&mut out);
                assert_eq!(out, expected);
            }
        }
        let mut edges = vec![0u64, 1, u64::MAX, u64::MAX - 1];
        for bits in 1..64 {
            edges.extend([(1u64 << bits) - 1, 1u64 << bits, (1u64 << bits) + 1]);
        }
        // A splitmix-like walk over the rest of the range.
        let mut z = 0x9E37_79B9_7F4A_7C15u64;
        for _ in 0..2000 {
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            edges.push(z >> (z % 64));
        }
        for v in edges {
            check(v);
            check(v as i64);
            check(v as u32);
            check(v as i32);
            check((v as i64).wrapping_neg());
        }
        check(i64::MIN);
        check(i32::MIN);
        // Other types still go through postcard.
        check(String::from("key"));
        check((1u64, 2u32));
        assert!(IntegerEncoding::of(&7u16).is_none());
    }

    /// The key hash of an integer is the hash of its encoding: computed from the value
    /// for every value below 2^21 (all of them), and for longer encodings of each
    /// covered type.
    #[test]
    fn integer_key_hashes_are_the_hashes_of_their_encodings() {
        fn check<T: Serialize + DeserializeOwned + 'static>(v: T) {
            let bytes = postcard::to_allocvec(&v).unwrap();
            assert_eq!(
                IntegerEncoding::key_hash_of(&v),
                Some(crate::keygroup::key_hash(&bytes)),
                "{bytes:?}"
            );
        }
        for v in 0..(1u64 << 21) + 2 {
            check(v);
        }
        for bits in 20..64 {
            for v in [(1u64 << bits) - 1, 1u64 << bits, (1u64 << bits) + 1] {
                check(v);
                check(v as i64);
                check((v as i64).wrapping_neg());
                check(v as u32);
                check(v as i32);
            }
        }
        for v in [-1i64, 0, 1, i64::MIN, i64::MAX] {
            check(v);
            check(v as i32);
        }
        assert_eq!(IntegerEncoding::key_hash_of(&String::from("key")), None);
    }

    /// A value that fails to serialize leaves the buffer as it was, even after it
    /// wrote part of itself.
    #[test]
    fn a_failed_serialization_leaves_the_buffer_as_it_was() {
        struct HalfWay;
        impl Serialize for HalfWay {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                use serde::ser::SerializeTuple;
                let mut t = s.serialize_tuple(2)?;
                t.serialize_element(&"written")?;
                Err(serde::ser::Error::custom("then failed"))
            }
        }
        impl<'de> serde::Deserialize<'de> for HalfWay {
            fn deserialize<D: serde::Deserializer<'de>>(_: D) -> Result<Self, D::Error> {
                Ok(HalfWay)
            }
        }
        let mut out = vec![1, 2, 3];
        let r = SerdeSerializer::<HalfWay>::new().serialize_into(&HalfWay, &mut out);
        assert!(r.is_err());
        assert_eq!(out, vec![1, 2, 3]);
    }

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
        // Only the name differs and the schemas are equal: the same bytes.
        assert!(matches!(
            other.resolve_compatibility(&v1.snapshot()),
            Compatibility::CompatibleAsIs
        ));
        // A version-1 snapshot (no schema): names decide.
        let legacy = |name: &str| {
            let mut schema = (name.len() as u32).to_le_bytes().to_vec();
            schema.extend_from_slice(name.as_bytes());
            schema.extend_from_slice(&1u32.to_le_bytes());
            SerializerSnapshot {
                identity: SERDE_POSTCARD_IDENTITY.into(),
                version: 1,
                schema,
            }
        };
        assert!(matches!(
            v1.resolve_compatibility(&legacy("Counter")),
            Compatibility::CompatibleAsIs
        ));
        assert!(matches!(
            other.resolve_compatibility(&legacy("Counter")),
            Compatibility::Incompatible(_)
        ));
        // A changed layout the rules allow migrates; one they do not is refused.
        let wide = SerdeSerializer::<u64>::new();
        let narrow = SerdeSerializer::<u32>::new();
        assert!(matches!(
            wide.resolve_compatibility(&narrow.snapshot()),
            Compatibility::CompatibleAfterMigration(_)
        ));
        assert!(matches!(
            narrow.resolve_compatibility(&wide.snapshot()),
            Compatibility::Incompatible(Incompatibility { path: Some(p), .. }) if p.is_empty()
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
