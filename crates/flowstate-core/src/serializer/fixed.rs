//! A fixed-width integer serializer, the layout of Flink's `LongSerializer` and
//! `IntSerializer` (every value its type's full width, big-endian) with the sign bit
//! flipped so that the bytes of signed values sort as the numbers do.
//!
//! The default serializer writes integers as postcard varints: one byte for small
//! values, but nine or ten for full-range `u64`s such as hashes, ids drawn at random
//! or timestamps in nanoseconds. Lists of such values are about 15% more bytes than
//! Flink's, and RocksDB throttles writes by bytes. This serializer is the choice for
//! them; it is never chosen for the user (descriptors default to postcard).
//!
//! Restores: the same type reads as is; a narrower integer of this serializer, or the
//! default serializer's bytes of an integer type that reads as `T`, migrate (each
//! value read in the old layout, written in this one). [`SerdeSerializer`] migrates the
//! other way (`crate::serializer::serde`).

use std::marker::PhantomData;
use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{Compatibility, Incompatibility, SerdeSerializer, SerializerSnapshot, TypeSerializer};
use crate::error::SerializationError;

/// Identity of [`FixedIntegerSerializer`] snapshots.
pub const FIXED_INTEGER_IDENTITY: &str = "flowstate.fixed-integer";
/// Version 1: the snapshot's schema bytes are the type's name (`u64`, `i32`, ...).
pub const FIXED_INTEGER_VERSION: u32 = 1;

/// The integer types [`FixedIntegerSerializer`] writes: `u8` to `u64`, `i8` to `i64`.
pub trait FixedInteger:
    Copy + Serialize + DeserializeOwned + TryFrom<i128> + Into<i128> + Send + Sync + 'static
{
    /// The layout of this type.
    const KIND: FixedKind;
}

macro_rules! fixed_integers {
    ($($t:ty => $kind:ident),*) => {
        $(impl FixedInteger for $t {
            const KIND: FixedKind = FixedKind::$kind;
        })*
    };
}
fixed_integers!(
    u8 => U8, u16 => U16, u32 => U32, u64 => U64,
    i8 => I8, i16 => I16, i32 => I32, i64 => I64
);

/// Width and signedness of a fixed-width integer, as a snapshot names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FixedKind {
    /// `u8`: one byte.
    U8,
    /// `u16`: two bytes.
    U16,
    /// `u32`: four bytes.
    U32,
    /// `u64`: eight bytes.
    U64,
    /// `i8`: one byte, sign bit flipped.
    I8,
    /// `i16`: two bytes, sign bit flipped.
    I16,
    /// `i32`: four bytes, sign bit flipped.
    I32,
    /// `i64`: eight bytes, sign bit flipped.
    I64,
}

impl FixedKind {
    const ALL: [FixedKind; 8] = [
        FixedKind::U8,
        FixedKind::U16,
        FixedKind::U32,
        FixedKind::U64,
        FixedKind::I8,
        FixedKind::I16,
        FixedKind::I32,
        FixedKind::I64,
    ];

    /// The Rust name, as stored in the snapshot.
    pub fn name(self) -> &'static str {
        match self {
            FixedKind::U8 => "u8",
            FixedKind::U16 => "u16",
            FixedKind::U32 => "u32",
            FixedKind::U64 => "u64",
            FixedKind::I8 => "i8",
            FixedKind::I16 => "i16",
            FixedKind::I32 => "i32",
            FixedKind::I64 => "i64",
        }
    }

    /// The kind a snapshot's name stands for.
    pub fn from_name(name: &str) -> Option<FixedKind> {
        Self::ALL.into_iter().find(|k| k.name() == name)
    }

    /// Bytes per value.
    pub fn width(self) -> usize {
        match self {
            FixedKind::U8 | FixedKind::I8 => 1,
            FixedKind::U16 | FixedKind::I16 => 2,
            FixedKind::U32 | FixedKind::I32 => 4,
            FixedKind::U64 | FixedKind::I64 => 8,
        }
    }

    fn signed(self) -> bool {
        matches!(
            self,
            FixedKind::I8 | FixedKind::I16 | FixedKind::I32 | FixedKind::I64
        )
    }

    /// The smallest and largest value.
    pub(crate) fn range(self) -> (i128, i128) {
        let bits = 8 * self.width() as u32;
        if self.signed() {
            (-(1i128 << (bits - 1)), (1i128 << (bits - 1)) - 1)
        } else {
            (0, (1i128 << bits) - 1)
        }
    }

    /// Whether every value of `self` is a value of `other`.
    pub fn fits_in(self, other: FixedKind) -> bool {
        let ((lo, hi), (olo, ohi)) = (self.range(), other.range());
        olo <= lo && hi <= ohi
    }

    /// Appends `v` (which must be in range): big-endian, sign bit flipped if signed.
    fn put(self, v: i128, out: &mut Vec<u8>) {
        let w = self.width();
        let offset = if self.signed() { self.range().0 } else { 0 };
        // `v - min` is the two's complement with the sign bit flipped, as unsigned.
        let biased = (v - offset) as u128;
        out.extend_from_slice(&biased.to_be_bytes()[16 - w..]);
    }

    /// The value of exactly `bytes`, or why they are not one.
    pub fn decode(self, bytes: &[u8]) -> Result<i128, SerializationError> {
        let w = self.width();
        if bytes.len() != w {
            return Err(SerializationError::new(format!(
                "a fixed-width {} is {w} bytes, found {}",
                self.name(),
                bytes.len()
            )));
        }
        let mut be = [0u8; 16];
        be[16 - w..].copy_from_slice(bytes);
        let offset = if self.signed() { self.range().0 } else { 0 };
        Ok(u128::from_be_bytes(be) as i128 + offset)
    }

    /// The bytes of `v`, or why it is out of this kind's range.
    pub fn encode(self, v: i128) -> Result<Vec<u8>, SerializationError> {
        let (lo, hi) = self.range();
        if v < lo || v > hi {
            return Err(SerializationError::new(format!(
                "{v} is out of the range of {} ({lo}..={hi})",
                self.name()
            )));
        }
        let mut out = Vec::with_capacity(self.width());
        self.put(v, &mut out);
        Ok(out)
    }
}

/// Writes integers at their full width: `u64` as 8 big-endian bytes, `i32` as 4 with
/// the sign bit flipped (so byte order is numeric order), like Flink's primitive
/// serializers. Choose it with a descriptor's `with_serializer` for integers that are
/// mostly large (random ids, hashes, nanosecond times): they take 8 bytes instead of
/// the default's 9 or 10.
///
/// ```
/// use flowstate_core::serializer::{FixedIntegerSerializer, TypeSerializer};
/// let s = FixedIntegerSerializer::<i64>::new();
/// let mut buf = Vec::new();
/// s.serialize_into(&-1, &mut buf).unwrap();
/// assert_eq!(buf, [0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
/// assert_eq!(s.deserialize(&buf).unwrap(), -1);
/// ```
pub struct FixedIntegerSerializer<T>(PhantomData<fn() -> T>);

impl<T> Clone for FixedIntegerSerializer<T> {
    fn clone(&self) -> Self {
        FixedIntegerSerializer(PhantomData)
    }
}

impl<T> std::fmt::Debug for FixedIntegerSerializer<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FixedIntegerSerializer<{}>", std::any::type_name::<T>())
    }
}

impl<T: FixedInteger> Default for FixedIntegerSerializer<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: FixedInteger> FixedIntegerSerializer<T> {
    /// The serializer of `T`.
    pub fn new() -> Self {
        FixedIntegerSerializer(PhantomData)
    }

    /// Shared handle, as descriptors hold serializers.
    pub fn arc() -> Arc<dyn TypeSerializer<T>> {
        Arc::new(Self::new())
    }
}

/// `v` as `T`, or why `T` cannot hold it.
fn narrow<T: FixedInteger>(v: i128) -> Result<T, SerializationError> {
    T::try_from(v).map_err(|_| SerializationError::new(format!("{v} out of range")))
}

/// `v` as a JSON number: every value of a kind (at most 64 bits wide) is a `u64` or
/// an `i64`; `None` for anything wider.
pub(crate) fn json_number(v: i128) -> Option<serde_json::Value> {
    match u64::try_from(v) {
        Ok(u) => Some(u.into()),
        Err(_) => i64::try_from(v).ok().map(Into::into),
    }
}

/// The kind a fixed-integer snapshot names, or why it names none.
pub(crate) fn stored_kind(s: &SerializerSnapshot) -> Result<FixedKind, Incompatibility> {
    if s.version != FIXED_INTEGER_VERSION {
        return Err(format!(
            "fixed-width integers written by snapshot version {}; this build reads version \
             {FIXED_INTEGER_VERSION}",
            s.version
        )
        .into());
    }
    std::str::from_utf8(&s.schema)
        .ok()
        .and_then(FixedKind::from_name)
        .ok_or_else(|| {
            format!(
                "fixed-width integer snapshot names no integer type ({:?})",
                String::from_utf8_lossy(&s.schema)
            )
            .into()
        })
}

impl<T: FixedInteger> TypeSerializer<T> for FixedIntegerSerializer<T> {
    #[inline]
    fn serialize_into(&self, value: &T, out: &mut Vec<u8>) -> Result<(), SerializationError> {
        T::KIND.put((*value).into(), out);
        Ok(())
    }

    fn deserialize(&self, bytes: &[u8]) -> Result<T, SerializationError> {
        // In range by construction of `decode`.
        narrow(T::KIND.decode(bytes)?)
    }

    fn snapshot(&self) -> SerializerSnapshot {
        SerializerSnapshot {
            identity: FIXED_INTEGER_IDENTITY.to_string(),
            version: FIXED_INTEGER_VERSION,
            schema: T::KIND.name().as_bytes().to_vec(),
        }
    }

    fn resolve_compatibility(&self, previous: &SerializerSnapshot) -> Compatibility<T> {
        if previous.identity != FIXED_INTEGER_IDENTITY {
            // The default serializer's bytes (or anything it can take over) migrate
            // through it.
            let serde = SerdeSerializer::<T>::new();
            return match serde.resolve_compatibility(previous) {
                Compatibility::CompatibleAsIs => {
                    Compatibility::CompatibleAfterMigration(Arc::new(move |b: &[u8]| {
                        serde.deserialize(b)
                    }))
                }
                Compatibility::CompatibleWithReconfiguredSerializer(s) => {
                    Compatibility::CompatibleAfterMigration(Arc::new(move |b: &[u8]| {
                        s.deserialize(b)
                    }))
                }
                other => other,
            };
        }
        let old = match stored_kind(previous) {
            Ok(k) => k,
            Err(i) => return Compatibility::Incompatible(i),
        };
        if old == T::KIND {
            Compatibility::CompatibleAsIs
        } else if old.fits_in(T::KIND) {
            Compatibility::CompatibleAfterMigration(Arc::new(move |b: &[u8]| {
                narrow(old.decode(b)?)
            }))
        } else {
            Compatibility::Incompatible(
                format!(
                    "stored fixed-width {} has values that {} cannot hold",
                    old.name(),
                    T::KIND.name()
                )
                .into(),
            )
        }
    }

    fn layout_change(&self, previous: &SerializerSnapshot) -> Option<Incompatibility> {
        if previous.identity == FIXED_INTEGER_IDENTITY {
            let old = stored_kind(previous).ok()?;
            return Some(
                format!(
                    "stored as fixed-width {}, now {}",
                    old.name(),
                    T::KIND.name()
                )
                .into(),
            );
        }
        Some(
            format!(
                "stored by `{}`, now fixed-width {}",
                previous.identity,
                T::KIND.name()
            )
            .into(),
        )
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    fn bytes<T: FixedInteger>(v: T) -> Vec<u8> {
        let mut out = Vec::new();
        FixedIntegerSerializer::<T>::new()
            .serialize_into(&v, &mut out)
            .unwrap();
        out
    }

    #[test]
    fn full_width_big_endian_with_the_sign_bit_flipped() {
        assert_eq!(bytes(0x0102_0304_0506_0708u64), [1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(bytes(7u32), [0, 0, 0, 7]);
        assert_eq!(bytes(0i64), [0x80, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(bytes(-1i32), [0x7f, 0xff, 0xff, 0xff]);
        assert_eq!(bytes(i16::MIN), [0, 0]);
        assert_eq!(bytes(u8::MAX), [0xff]);
    }

    #[test]
    fn wrong_lengths_are_errors() {
        let s = FixedIntegerSerializer::<u64>::new();
        assert!(s.deserialize(&[0; 7]).is_err());
        assert!(s.deserialize(&[0; 9]).is_err());
        assert!(s.deserialize(&[]).is_err());
    }

    proptest! {
        #[test]
        fn round_trips_and_sorts_as_numbers(a: i64, b: i64, c: u64, d: u64) {
            let s = FixedIntegerSerializer::<i64>::new();
            prop_assert_eq!(s.deserialize(&bytes(a)).unwrap(), a);
            prop_assert_eq!(bytes(a).cmp(&bytes(b)), a.cmp(&b));
            let u = FixedIntegerSerializer::<u64>::new();
            prop_assert_eq!(u.deserialize(&bytes(c)).unwrap(), c);
            prop_assert_eq!(bytes(c).cmp(&bytes(d)), c.cmp(&d));
            let n = a as i16;
            prop_assert_eq!(FixedIntegerSerializer::<i16>::new().deserialize(&bytes(n)).unwrap(), n);
            prop_assert_eq!(FixedKind::I16.decode(&FixedKind::I16.encode(n.into()).unwrap()).unwrap(), i128::from(n));
        }

        #[test]
        fn narrower_and_default_bytes_migrate(v: u32, w: i16) {
            let to_u64 = FixedIntegerSerializer::<u64>::new();
            let Compatibility::CompatibleAfterMigration(read) =
                to_u64.resolve_compatibility(&FixedIntegerSerializer::<u32>::new().snapshot())
            else {
                panic!("u32 -> u64 must migrate");
            };
            prop_assert_eq!(read(&bytes(v)).unwrap(), u64::from(v));

            let to_i64 = FixedIntegerSerializer::<i64>::new();
            let Compatibility::CompatibleAfterMigration(read) =
                to_i64.resolve_compatibility(&SerdeSerializer::<i64>::new().snapshot())
            else {
                panic!("postcard i64 -> fixed i64 must migrate");
            };
            let mut postcard = Vec::new();
            SerdeSerializer::<i64>::new().serialize_into(&i64::from(w), &mut postcard).unwrap();
            prop_assert_eq!(read(&postcard).unwrap(), i64::from(w));
        }
    }

    #[test]
    fn same_type_reads_as_is_and_narrowing_or_sign_changes_are_refused() {
        let u64s = FixedIntegerSerializer::<u64>::new();
        assert!(matches!(
            u64s.resolve_compatibility(&u64s.snapshot()),
            Compatibility::CompatibleAsIs
        ));
        for previous in [
            FixedIntegerSerializer::<i8>::new().snapshot(),
            FixedIntegerSerializer::<i64>::new().snapshot(),
        ] {
            assert!(matches!(
                u64s.resolve_compatibility(&previous),
                Compatibility::Incompatible(_)
            ));
        }
        assert!(matches!(
            FixedIntegerSerializer::<u32>::new()
                .resolve_compatibility(&FixedIntegerSerializer::<u64>::new().snapshot()),
            Compatibility::Incompatible(_)
        ));
        // i32 holds every u16.
        assert!(matches!(
            FixedIntegerSerializer::<i32>::new()
                .resolve_compatibility(&FixedIntegerSerializer::<u16>::new().snapshot()),
            Compatibility::CompatibleAfterMigration(_)
        ));
        // A string never becomes an integer; a snapshot of a later version is refused.
        assert!(matches!(
            u64s.resolve_compatibility(&SerdeSerializer::<String>::new().snapshot()),
            Compatibility::Incompatible(_)
        ));
        let mut later = u64s.snapshot();
        later.version = 2;
        assert!(matches!(
            u64s.resolve_compatibility(&later),
            Compatibility::Incompatible(_)
        ));
    }

    #[test]
    fn the_default_serializer_takes_fixed_integers_back() {
        let Compatibility::CompatibleAfterMigration(read) = SerdeSerializer::<i64>::new()
            .resolve_compatibility(&FixedIntegerSerializer::<i32>::new().snapshot())
        else {
            panic!("fixed i32 -> postcard i64 must migrate");
        };
        assert_eq!(read(&bytes(-5i32)).unwrap(), -5);
        assert_eq!(read(&bytes(i32::MIN)).unwrap(), i64::from(i32::MIN));
        let Compatibility::CompatibleAfterMigration(read) = SerdeSerializer::<u64>::new()
            .resolve_compatibility(&FixedIntegerSerializer::<u64>::new().snapshot())
        else {
            panic!("fixed u64 -> postcard u64 must migrate");
        };
        assert_eq!(read(&bytes(u64::MAX)).unwrap(), u64::MAX);
        assert!(read(&[0; 3]).is_err());
        assert!(matches!(
            SerdeSerializer::<u64>::new()
                .resolve_compatibility(&FixedIntegerSerializer::<i32>::new().snapshot()),
            Compatibility::Incompatible(_)
        ));
        assert!(matches!(
            SerdeSerializer::<u16>::new()
                .resolve_compatibility(&FixedIntegerSerializer::<u32>::new().snapshot()),
            Compatibility::Incompatible(_)
        ));
        assert!(matches!(
            SerdeSerializer::<f64>::new()
                .resolve_compatibility(&FixedIntegerSerializer::<u8>::new().snapshot()),
            Compatibility::Incompatible(_)
        ));
        assert!(matches!(
            SerdeSerializer::<String>::new()
                .resolve_compatibility(&FixedIntegerSerializer::<u8>::new().snapshot()),
            Compatibility::Incompatible(_)
        ));
    }

    #[test]
    fn encode_checks_the_range() {
        assert!(FixedKind::U8.encode(256).is_err());
        assert!(FixedKind::U8.encode(-1).is_err());
        assert!(FixedKind::I8.encode(-129).is_err());
        assert_eq!(FixedKind::I8.encode(-128).unwrap(), [0]);
        assert_eq!(FixedKind::U64.encode(u64::MAX.into()).unwrap(), [0xff; 8]);
    }
}
