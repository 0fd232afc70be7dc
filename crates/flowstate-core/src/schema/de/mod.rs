//! Reads postcard bytes through a stored [`Schema`] into any serde type, applying the
//! evolution rules on the way.
//!
//! The stored schema says what the bytes are; the target type's `Deserialize` says what
//! it wants. Structs are offered as maps keyed by field name, enums by variant name, so
//! the target type's own serde attributes decide the rest: `#[serde(default)]` fills an
//! added field, `#[serde(alias)]` takes a renamed one, unknown (removed) fields are
//! skipped, field order does not matter, and an added variant is simply never met.
//! Leaves are strict: a stored value is handed over only as its own kind or a lossless
//! widening of it (`u8`→`u16`→`u32`→`u64`→`u128`, the same for signed integers,
//! `f32`→`f64`), and a required value may become optional (`T` → `Option<T>`).
//! Anything else is an error naming the field path.
//!
//! Postcard's encoding (its spec, "Serde Data Model"): varints are LEB128, signed ones
//! zigzag; `u8`/`i8` one byte; floats little-endian; strings and sequences a varint
//! length first; structs and tuples their fields in order; enums a varint variant
//! index, then the body; options a 0/1 tag.

mod access;
pub(super) mod reader;
mod shape;

use std::fmt;

use serde::Deserialize;
use serde::de;

use self::reader::Reader;
use self::shape::ShapeDe;
use super::Schema;

/// Why bytes could not be read as the requested type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    /// Field path where it happened (`items[].price`; empty: the value itself).
    pub path: Option<String>,
    /// What happened.
    pub message: String,
}

impl DecodeError {
    pub(crate) fn or_at(mut self, path: impl FnOnce() -> String) -> Self {
        if self.path.is_none() {
            self.path = Some(path());
        }
        self
    }

    /// The field path, empty for the stored value itself.
    pub fn path(&self) -> &str {
        self.path.as_deref().unwrap_or("")
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.path.as_deref() {
            Some(p) if !p.is_empty() => write!(f, "at `{p}`: {}", self.message),
            _ => write!(f, "{}", self.message),
        }
    }
}

impl std::error::Error for DecodeError {}

impl de::Error for DecodeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        DecodeError {
            path: None,
            message: msg.to_string(),
        }
    }

    fn missing_field(field: &'static str) -> Self {
        Self::custom(format!(
            "field `{field}` was added without a default (give it #[serde(default)])"
        ))
    }

    fn unknown_variant(variant: &str, expected: &'static [&'static str]) -> Self {
        Self::custom(format!(
            "variant `{variant}` was removed or renamed (the type now has {})",
            expected.join(", ")
        ))
    }

    fn unknown_field(field: &str, _expected: &'static [&'static str]) -> Self {
        Self::custom(format!(
            "field `{field}` was removed, but the type denies unknown fields"
        ))
    }
}

type Result<T> = std::result::Result<T, DecodeError>;

/// Reads one value of the type `T` from `bytes` written with `schema`; every byte must
/// be used.
pub fn from_bytes<'de, T: Deserialize<'de>>(schema: &Schema, bytes: &'de [u8]) -> Result<T> {
    let mut r = Reader::new(bytes);
    let value = T::deserialize(ShapeDe {
        r: &mut r,
        schema,
        shape: &schema.root,
    })
    .map_err(|e| e.or_at(String::new))?;
    if r.remaining() > 0 {
        return Err(DecodeError {
            path: Some(String::new()),
            message: format!("{} trailing bytes", r.remaining()),
        });
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::schema::trace::trace;
    use serde::{Deserialize, Serialize};
    use std::collections::BTreeMap;

    #[derive(Serialize, Deserialize, Debug, PartialEq, Clone)]
    enum Kind {
        A,
        B(u16),
        C { x: i32, y: Vec<u8> },
    }

    #[derive(Serialize, Deserialize, Debug, PartialEq, Clone)]
    struct Everything {
        b: bool,
        i: (i8, i16, i32, i64, i128),
        u: (u8, u16, u32, u64, u128),
        f: (f32, f64),
        c: char,
        s: String,
        o: Option<Box<Everything>>,
        v: Vec<Kind>,
        m: BTreeMap<String, [u32; 2]>,
        unit: (),
    }

    fn sample() -> Everything {
        let inner = Everything {
            b: false,
            i: (i8::MIN, i16::MIN, i32::MIN, i64::MIN, i128::MIN),
            u: (u8::MAX, u16::MAX, u32::MAX, u64::MAX, u128::MAX),
            f: (f32::MIN_POSITIVE, -0.5),
            c: 'é',
            s: "ünï".into(),
            o: None,
            v: vec![
                Kind::A,
                Kind::B(7),
                Kind::C {
                    x: -3,
                    y: vec![1, 2],
                },
            ],
            m: BTreeMap::from([("k".to_string(), [1, 2])]),
            unit: (),
        };
        Everything {
            b: true,
            o: Some(Box::new(inner.clone())),
            ..inner
        }
    }

    #[test]
    fn reads_postcard_through_the_schema_exactly() {
        let schema = trace::<Everything>().unwrap();
        let v = sample();
        let bytes = postcard::to_allocvec(&v).unwrap();
        let back: Everything = from_bytes(&schema, &bytes).unwrap();
        assert_eq!(back, v);
        // Cut short or extended bytes are errors, never a panic.
        for n in 0..bytes.len() {
            assert!(from_bytes::<Everything>(&schema, &bytes[..n]).is_err());
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(from_bytes::<Everything>(&schema, &longer).is_err());
        // Skipping everything (an unknown field) consumes exactly the bytes.
        let _: de::IgnoredAny = from_bytes(&schema, &bytes).unwrap();
    }

    #[test]
    fn narrowing_is_an_error_with_the_path() {
        #[derive(Serialize, Deserialize)]
        struct Old {
            n: Vec<Inner64>,
        }
        #[derive(Serialize, Deserialize)]
        struct Inner64 {
            price: u64,
        }
        #[derive(Deserialize, Debug)]
        struct New {
            #[allow(dead_code)]
            n: Vec<Inner32>,
        }
        #[derive(Deserialize, Debug)]
        struct Inner32 {
            #[allow(dead_code)]
            price: u32,
        }
        let schema = trace::<Old>().unwrap();
        let bytes = postcard::to_allocvec(&Old {
            n: vec![Inner64 { price: 1 }],
        })
        .unwrap();
        let e = from_bytes::<New>(&schema, &bytes).unwrap_err();
        assert_eq!(e.path(), "n[].price");
        assert!(e.message.contains("u64 cannot be read as u32"), "{e}");
    }
}
