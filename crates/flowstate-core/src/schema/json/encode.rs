//! JSON to stored bytes through a schema: the inverse of [`super::render`], strict,
//! errors naming the field path.

use serde_json::Value;

use super::super::de::DecodeError;
use super::super::{Field, Schema, Shape, TypeDef, VariantBody};
use super::{Result, integer_key};

/// Writes the postcard bytes of `value` as `schema` describes them (the inverse of
/// [`render`](super::render::render)).
pub fn encode(schema: &Schema, value: &Value) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut path = Vec::new();
    encode_shape(&mut out, &mut path, schema, &schema.root, value).map_err(|message| {
        DecodeError {
            path: Some(path.join("").trim_start_matches('.').to_string()),
            message,
        }
    })?;
    Ok(out)
}

type EncResult = std::result::Result<(), String>;

fn encode_in(
    out: &mut Vec<u8>,
    path: &mut Vec<String>,
    schema: &Schema,
    shape: &Shape,
    value: &Value,
    seg: String,
) -> EncResult {
    if path.len() >= 256 {
        return Err("nested deeper than 256 levels".into());
    }
    path.push(seg);
    encode_shape(out, path, schema, shape, value)?;
    path.pop();
    Ok(())
}

fn put_varint(out: &mut Vec<u8>, mut v: u128) {
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

fn expected(what: &str, value: &Value) -> String {
    let mut shown = value.to_string();
    if shown.len() > 60 {
        shown.truncate(60);
        shown.push('…');
    }
    format!("expected {what}, found {shown}")
}

fn as_i128(value: &Value) -> Option<i128> {
    match value {
        Value::Number(n) => n
            .as_i64()
            .map(i128::from)
            .or_else(|| n.as_u64().map(i128::from)),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

fn as_u128(value: &Value) -> Option<u128> {
    match value {
        Value::Number(n) => n.as_u64().map(u128::from),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

fn as_f64(value: &Value) -> Option<f64> {
    match value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

/// A map key given as an object key (a string) as the JSON value its shape expects.
fn key_value(schema: &Schema, shape: &Shape, key: &str) -> Value {
    match shape {
        Shape::Str | Shape::Char => Value::String(key.to_string()),
        Shape::Named(n) => match schema.def(n) {
            Some(TypeDef::NewtypeStruct(s)) => key_value(schema, s, key),
            _ => Value::String(key.to_string()),
        },
        Shape::Bool => match key {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            _ => Value::String(key.to_string()),
        },
        // Integers: the string form is accepted by the integer encoders.
        _ => Value::String(key.to_string()),
    }
}

fn encode_shape(
    out: &mut Vec<u8>,
    path: &mut Vec<String>,
    schema: &Schema,
    shape: &Shape,
    value: &Value,
) -> EncResult {
    match shape {
        Shape::Unit => match value {
            Value::Null => {}
            v => return Err(expected("null", v)),
        },
        Shape::Bool => match value {
            Value::Bool(b) => out.push(u8::from(*b)),
            v => return Err(expected("a bool", v)),
        },
        Shape::I8 | Shape::I16 | Shape::I32 | Shape::I64 | Shape::I128 => {
            let n = as_i128(value).ok_or_else(|| expected("an integer", value))?;
            let (min, max) = match shape {
                Shape::I8 => (i128::from(i8::MIN), i128::from(i8::MAX)),
                Shape::I16 => (i128::from(i16::MIN), i128::from(i16::MAX)),
                Shape::I32 => (i128::from(i32::MIN), i128::from(i32::MAX)),
                Shape::I64 => (i128::from(i64::MIN), i128::from(i64::MAX)),
                _ => (i128::MIN, i128::MAX),
            };
            if n < min || n > max {
                return Err(format!("{n} is out of range for {}", shape));
            }
            if matches!(shape, Shape::I8) {
                out.push(n as i8 as u8);
            } else {
                put_varint(out, ((n << 1) ^ (n >> 127)) as u128);
            }
        }
        Shape::U8 | Shape::U16 | Shape::U32 | Shape::U64 | Shape::U128 => {
            let n = as_u128(value).ok_or_else(|| expected("an unsigned integer", value))?;
            let max = match shape {
                Shape::U8 => u128::from(u8::MAX),
                Shape::U16 => u128::from(u16::MAX),
                Shape::U32 => u128::from(u32::MAX),
                Shape::U64 => u128::from(u64::MAX),
                _ => u128::MAX,
            };
            if n > max {
                return Err(format!("{n} is out of range for {}", shape));
            }
            if matches!(shape, Shape::U8) {
                out.push(n as u8);
            } else {
                put_varint(out, n);
            }
        }
        Shape::F32 => {
            let f = as_f64(value).ok_or_else(|| expected("a number", value))?;
            out.extend_from_slice(&(f as f32).to_le_bytes());
        }
        Shape::F64 => {
            let f = as_f64(value).ok_or_else(|| expected("a number", value))?;
            out.extend_from_slice(&f.to_le_bytes());
        }
        Shape::Char | Shape::Str => {
            let s = value.as_str().ok_or_else(|| expected("a string", value))?;
            if matches!(shape, Shape::Char) && s.chars().count() != 1 {
                return Err(expected("one character", value));
            }
            put_varint(out, s.len() as u128);
            out.extend_from_slice(s.as_bytes());
        }
        Shape::Bytes => {
            let items = value
                .as_array()
                .ok_or_else(|| expected("an array of bytes", value))?;
            put_varint(out, items.len() as u128);
            for b in items {
                let b = b
                    .as_u64()
                    .and_then(|b| u8::try_from(b).ok())
                    .ok_or_else(|| expected("a byte", b))?;
                out.push(b);
            }
        }
        Shape::Option(inner) => match value {
            Value::Null => out.push(0),
            v => {
                out.push(1);
                encode_in(out, path, schema, inner, v, String::new())?;
            }
        },
        Shape::Seq(item) => {
            let items = value
                .as_array()
                .ok_or_else(|| expected("an array", value))?;
            put_varint(out, items.len() as u128);
            for v in items {
                encode_in(out, path, schema, item, v, "[]".into())?;
            }
        }
        Shape::Map { key, value: val } => match value {
            Value::Object(m) => {
                put_varint(out, m.len() as u128);
                // Object keys come sorted as strings; integer keys go in numeric
                // order, as a `BTreeMap` of them writes them.
                let mut entries: Vec<(Value, &Value)> = m
                    .iter()
                    .map(|(k, v)| (key_value(schema, key, k), v))
                    .collect();
                match integer_key(schema, key) {
                    Some(true) => entries.sort_by_key(|(k, _)| as_i128(k)),
                    Some(false) => entries.sort_by_key(|(k, _)| as_u128(k)),
                    None => {}
                }
                for (kv, v) in entries {
                    encode_in(out, path, schema, key, &kv, "{key}".into())?;
                    encode_in(out, path, schema, val, v, "{value}".into())?;
                }
            }
            Value::Array(pairs) => {
                put_varint(out, pairs.len() as u128);
                for p in pairs {
                    let [k, v] = p.as_array().map(Vec::as_slice).unwrap_or_default() else {
                        return Err(expected("a [key, value] pair", p));
                    };
                    encode_in(out, path, schema, key, k, "{key}".into())?;
                    encode_in(out, path, schema, val, v, "{value}".into())?;
                }
            }
            v => return Err(expected("an object or an array of [key, value] pairs", v)),
        },
        Shape::Tuple(items) => encode_items(out, path, schema, items, value)?,
        Shape::Named(name) => {
            let def = schema
                .def(name)
                .ok_or_else(|| format!("type `{name}` is not in the schema"))?;
            match def {
                TypeDef::UnitStruct => match value {
                    Value::Null => {}
                    v => return Err(expected("null", v)),
                },
                TypeDef::NewtypeStruct(s) => encode_shape(out, path, schema, s, value)?,
                TypeDef::TupleStruct(items) => encode_items(out, path, schema, items, value)?,
                TypeDef::Struct(fields) => encode_fields(out, path, schema, fields, value)?,
                TypeDef::Enum(variants) => {
                    let (tag, body) = match value {
                        Value::String(s) => (s.as_str(), None),
                        Value::Object(m) if m.len() == 1 => {
                            let (k, v) = m.iter().next().ok_or("empty enum object")?;
                            (k.as_str(), Some(v))
                        }
                        v => return Err(expected(&format!("a variant of `{name}`"), v)),
                    };
                    // Variant names are unique in a checked schema.
                    let v = variants
                        .iter()
                        .find(|v| v.name == tag)
                        .ok_or_else(|| format!("`{tag}` is not a variant of `{name}`"))?;
                    put_varint(out, u128::from(v.index));
                    path.push(format!("::{}", v.name));
                    match (&v.body, body) {
                        (VariantBody::Unit, None | Some(Value::Null)) => {}
                        (VariantBody::Newtype(s), Some(b)) => {
                            encode_shape(out, path, schema, s, b)?
                        }
                        (VariantBody::Tuple(items), Some(b)) => {
                            encode_items(out, path, schema, items, b)?
                        }
                        (VariantBody::Struct(fields), Some(b)) => {
                            encode_fields(out, path, schema, fields, b)?
                        }
                        _ => return Err(format!("variant `{tag}` given the wrong body")),
                    }
                    path.pop();
                }
            }
        }
    }
    Ok(())
}

fn encode_items(
    out: &mut Vec<u8>,
    path: &mut Vec<String>,
    schema: &Schema,
    items: &[Shape],
    value: &Value,
) -> EncResult {
    let values = value
        .as_array()
        .filter(|a| a.len() == items.len())
        .ok_or_else(|| expected(&format!("an array of {}", items.len()), value))?;
    for (i, (s, v)) in items.iter().zip(values).enumerate() {
        encode_in(out, path, schema, s, v, format!(".{i}"))?;
    }
    Ok(())
}

fn encode_fields(
    out: &mut Vec<u8>,
    path: &mut Vec<String>,
    schema: &Schema,
    fields: &[Field],
    value: &Value,
) -> EncResult {
    let m = value
        .as_object()
        .ok_or_else(|| expected("an object", value))?;
    if let Some(unknown) = m.keys().find(|k| !fields.iter().any(|f| &f.name == *k)) {
        return Err(format!("unknown field `{unknown}`"));
    }
    for f in fields {
        let v = m.get(&f.name).unwrap_or(&Value::Null);
        if !m.contains_key(&f.name) && !matches!(f.shape, Shape::Option(_) | Shape::Unit) {
            return Err(format!("missing field `{}`", f.name));
        }
        encode_in(out, path, schema, &f.shape, v, format!(".{}", f.name))?;
    }
    Ok(())
}
