//! What a stored [`SerializerSnapshot`] says about the bytes it wrote, for tools that
//! read and write state without the job's types: the default serializer's stored
//! schema, TTL's timestamp wrapper, or bytes only the writer understands.

use serde_json::{Map, Value};

use super::SerializerSnapshot;
use super::fixed::{FIXED_INTEGER_IDENTITY, FixedKind, json_number, stored_kind};
use super::serde::{SERDE_POSTCARD_IDENTITY, parse_stored, snapshot_of};
use crate::schema::de::DecodeError;
use crate::schema::{Schema, json};
use crate::ttl::serializer::{TTL_IDENTITY, stored_timestamp, ttl_inner_snapshot};

/// How the bytes of one serializer are laid out, as far as its snapshot tells.
#[derive(Clone, Debug, PartialEq)]
pub enum StoredFormat {
    /// The default serializer (postcard over serde).
    Serde {
        /// The Rust type's short name as stored.
        type_name: String,
        /// The declared schema version.
        schema_version: u32,
        /// The traced schema; `None` for snapshots without one (rendered as bytes).
        schema: Option<Schema>,
    },
    /// State TTL: an 8-byte little-endian last-access timestamp, then the inner bytes.
    Ttl(Box<StoredFormat>),
    /// [`super::FixedIntegerSerializer`]: an integer at its full width.
    FixedInteger(FixedKind),
    /// Any other serializer (Avro, protobuf, user-defined): bytes as they are.
    Other {
        /// The serializer's identity.
        identity: String,
        /// Its snapshot version.
        version: u32,
    },
}

impl StoredFormat {
    /// Reads a snapshot; a malformed default or TTL snapshot is [`StoredFormat::Other`]
    /// (its bytes are still shown, just not decoded).
    pub fn of(s: &SerializerSnapshot) -> StoredFormat {
        let other = || StoredFormat::Other {
            identity: s.identity.clone(),
            version: s.version,
        };
        if s.identity == TTL_IDENTITY {
            return ttl_inner_snapshot(s)
                .map_or_else(other, |inner| StoredFormat::Ttl(Box::new(Self::of(&inner))));
        }
        if s.identity == FIXED_INTEGER_IDENTITY {
            return stored_kind(s).map_or_else(|_| other(), StoredFormat::FixedInteger);
        }
        if s.identity != SERDE_POSTCARD_IDENTITY {
            return other();
        }
        let Some(stored) = parse_stored(s.version, &s.schema) else {
            return other();
        };
        let schema = if stored.schema.is_empty() {
            None
        } else {
            match Schema::from_json(stored.schema) {
                Ok(schema) => Some(schema),
                Err(_) => return other(),
            }
        };
        StoredFormat::Serde {
            type_name: stored.type_name.to_string(),
            schema_version: stored.schema_version,
            schema,
        }
    }

    /// The snapshot of the default serializer for values of `schema`, named
    /// `type_name` (a job restores such values as its own when its type has the same
    /// layout: names are not compared when schemas are stored).
    pub fn serde_snapshot(type_name: &str, schema: &Schema) -> SerializerSnapshot {
        snapshot_of(type_name, 1, &schema.to_json())
    }

    /// A short description: the type name, `ttl(..)` around it, or the identity.
    pub fn describe(&self) -> String {
        match self {
            StoredFormat::Serde {
                type_name, schema, ..
            } => match schema {
                Some(_) => type_name.clone(),
                None => format!("{type_name} (no stored schema)"),
            },
            StoredFormat::Ttl(inner) => format!("ttl({})", inner.describe()),
            StoredFormat::FixedInteger(k) => format!("{} (fixed-width)", k.name()),
            StoredFormat::Other { identity, version } => format!("{identity} v{version}"),
        }
    }

    /// The stored schema as JSON (`docs/formats.md`, "State schemas"), if any.
    pub fn schema_json(&self) -> Option<Value> {
        match self {
            StoredFormat::Serde {
                schema: Some(s), ..
            } => serde_json::to_value(s).ok(),
            StoredFormat::Ttl(inner) => inner.schema_json(),
            _ => None,
        }
    }

    /// Whether [`StoredFormat::render`] decodes values (rather than showing bytes).
    pub fn decodes(&self) -> bool {
        match self {
            StoredFormat::Serde { schema, .. } => schema.is_some(),
            StoredFormat::Ttl(inner) => inner.decodes(),
            StoredFormat::FixedInteger(_) => true,
            StoredFormat::Other { .. } => false,
        }
    }

    /// One stored value as JSON: decoded through the schema, `{"ttl_last_access_ms":
    /// .., "value": ..}` under TTL, and `"0x<hex>"` when nothing says how to decode it.
    pub fn render(&self, bytes: &[u8]) -> Result<Value, DecodeError> {
        match self {
            StoredFormat::Serde {
                schema: Some(s), ..
            } => json::render(s, bytes),
            StoredFormat::Ttl(inner) => {
                let ts = stored_timestamp(bytes).ok_or_else(|| DecodeError {
                    path: None,
                    message: "TTL value shorter than its 8-byte timestamp".into(),
                })?;
                let mut m = Map::new();
                m.insert("ttl_last_access_ms".into(), Value::from(ts));
                m.insert("value".into(), inner.render(&bytes[8..])?);
                Ok(Value::Object(m))
            }
            StoredFormat::FixedInteger(k) => {
                let v = k.decode(bytes).map_err(|e| DecodeError {
                    path: None,
                    message: e.to_string(),
                })?;
                json_number(v).ok_or_else(|| DecodeError {
                    path: None,
                    message: format!("{v} is wider than 64 bits"),
                })
            }
            _ => Ok(Value::String(hex(bytes))),
        }
    }

    /// The bytes of a value given as [`StoredFormat::render`] shows it.
    pub fn encode(&self, value: &Value) -> Result<Vec<u8>, DecodeError> {
        let err = |message: String| DecodeError {
            path: None,
            message,
        };
        match self {
            StoredFormat::Serde {
                schema: Some(s), ..
            } => json::encode(s, value),
            StoredFormat::Ttl(inner) => {
                let ts = value
                    .get("ttl_last_access_ms")
                    .and_then(Value::as_i64)
                    .ok_or_else(|| err("a TTL value needs `ttl_last_access_ms`".into()))?;
                let inner_value = value
                    .get("value")
                    .ok_or_else(|| err("a TTL value needs `value`".into()))?;
                let mut out = ts.to_le_bytes().to_vec();
                out.extend(inner.encode(inner_value)?);
                Ok(out)
            }
            StoredFormat::FixedInteger(k) => {
                let v = value
                    .as_u64()
                    .map(i128::from)
                    .or_else(|| value.as_i64().map(i128::from))
                    .ok_or_else(|| err(format!("expected an integer, found {value}")))?;
                k.encode(v).map_err(|e| err(e.to_string()))
            }
            _ => value
                .as_str()
                .and_then(unhex)
                .ok_or_else(|| err(format!("expected \"0x<hex>\" bytes, found {value}"))),
        }
    }
}

/// `0x` and lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(2 + bytes.len() * 2);
    s.push_str("0x");
    for b in bytes {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// The bytes of `0x<hex>`, or `None`.
pub fn unhex(s: &str) -> Option<Vec<u8>> {
    let digits = s.strip_prefix("0x")?;
    if digits.len() % 2 != 0 {
        return None;
    }
    (0..digits.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(digits.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::serializer::{SerdeSerializer, TypeSerializer};
    use crate::ttl::TtlSerializer;
    use crate::ttl::TtlValue;
    use std::sync::Arc;

    #[test]
    fn default_and_ttl_values_render_and_encode_back() {
        let s = SerdeSerializer::<(String, Vec<u32>)>::new();
        let f = StoredFormat::of(&s.snapshot());
        assert_eq!(f.describe(), "(String, Vec<u32>)");
        let mut bytes = Vec::new();
        s.serialize_into(&("a".into(), vec![1, 2]), &mut bytes)
            .unwrap();
        let v = f.render(&bytes).unwrap();
        assert_eq!(v, serde_json::json!(["a", [1, 2]]));
        assert_eq!(f.encode(&v).unwrap(), bytes);

        let ttl = TtlSerializer::new(
            SerdeSerializer::<u64>::arc(),
            Arc::new(crate::ttl::ManualClock::new(0)),
        );
        let f = StoredFormat::of(&ttl.snapshot());
        assert_eq!(f.describe(), "ttl(u64)");
        let mut bytes = Vec::new();
        ttl.serialize_into(
            &TtlValue {
                value: 7u64,
                last_access: 1234,
            },
            &mut bytes,
        )
        .unwrap();
        let v = f.render(&bytes).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"ttl_last_access_ms": 1234, "value": 7})
        );
        assert_eq!(f.encode(&v).unwrap(), bytes);
    }

    #[test]
    fn fixed_integers_render_and_encode_back() {
        use crate::serializer::FixedIntegerSerializer;
        let f = StoredFormat::of(&FixedIntegerSerializer::<i64>::new().snapshot());
        assert_eq!(f.describe(), "i64 (fixed-width)");
        assert!(f.decodes());
        let mut bytes = Vec::new();
        FixedIntegerSerializer::<i64>::new()
            .serialize_into(&-3, &mut bytes)
            .unwrap();
        assert_eq!(f.render(&bytes).unwrap(), serde_json::json!(-3));
        assert_eq!(f.encode(&serde_json::json!(-3)).unwrap(), bytes);
        assert!(f.render(&bytes[1..]).is_err());
        assert!(f.encode(&serde_json::json!("x")).is_err());
        let u = StoredFormat::of(&FixedIntegerSerializer::<u64>::new().snapshot());
        assert_eq!(u.render(&[0xff; 8]).unwrap(), serde_json::json!(u64::MAX));
        assert!(u.encode(&serde_json::json!(-1)).is_err());
        // A snapshot naming no integer type shows bytes.
        let mut odd = FixedIntegerSerializer::<u64>::new().snapshot();
        odd.schema = b"u65".to_vec();
        assert!(!StoredFormat::of(&odd).decodes());
    }

    #[test]
    fn unknown_serializers_show_bytes() {
        let f = StoredFormat::of(&SerializerSnapshot {
            identity: "flowstate.avro".into(),
            version: 1,
            schema: vec![],
        });
        assert!(!f.decodes());
        let v = f.render(&[0, 15, 255]).unwrap();
        assert_eq!(v, Value::String("0x000fff".into()));
        assert_eq!(f.encode(&v).unwrap(), vec![0, 15, 255]);
        assert!(f.encode(&Value::String("0x0".into())).is_err());
    }
}
