//! Stored bytes as JSON and back, through a stored [`Schema`] alone: what offline tools
//! show and accept without the Rust type that wrote the state.
//!
//! The JSON is what `serde_json` makes of the Rust value, so a dump reads like the
//! user's own types: structs are objects by field name, enums externally tagged
//! (`"Unit"`, `{"Newtype": v}`, `{"Tuple": [..]}`, `{"Struct": {..}}`), tuples and
//! tuple structs arrays, newtype structs their inner value, `()` and unit structs
//! `null`, options `null` or the value. Maps are objects when their keys are strings,
//! chars, integers or bools (keys written as strings, as `serde_json` does) and arrays
//! of `[key, value]` pairs otherwise. Integers outside `i64`/`u64` and non-finite floats
//! are strings. Two values `serde_json` itself cannot tell apart stay ambiguous here
//! too: `Some(())` and `None` both show as `null` (and read back as `None`).
//!
//! [`encode`] is the inverse: it accepts exactly what [`render`] produces and writes
//! the postcard bytes of the schema, refusing anything else with the field path.

use std::collections::HashSet;

use serde_json::{Map, Number, Value};

use super::de::DecodeError;
use super::de::reader::{Reader, Seg, zero_sized};
use super::{Field, Schema, Shape, TypeDef, VariantBody};

/// A count of zero-sized elements above this is refused (it cannot be checked against
/// the bytes left, and would otherwise let a corrupt count run for ever).
const MAX_ZERO_SIZED: usize = 1 << 20;

type Result<T> = std::result::Result<T, DecodeError>;

/// Renders one stored value of `schema` as JSON; every byte must be used.
pub fn render(schema: &Schema, bytes: &[u8]) -> Result<Value> {
    let mut r = Reader::new(bytes);
    let v = render_shape(&mut r, schema, &schema.root)?;
    if r.remaining() > 0 {
        return Err(r.err(format!("{} trailing bytes", r.remaining())));
    }
    Ok(v)
}

/// Writes the postcard bytes of `value` as `schema` describes them (the inverse of
/// [`render`]).
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

fn render_in<'s>(
    r: &mut Reader<'_, 's>,
    schema: &'s Schema,
    shape: &'s Shape,
    seg: Seg<'s>,
) -> Result<Value> {
    r.enter(seg)?;
    let v = render_shape(r, schema, shape)?;
    r.path.pop();
    Ok(v)
}

fn count<'s>(r: &mut Reader<'_, 's>, schema: &Schema, items: &[&Shape]) -> Result<usize> {
    let n = r.len()?;
    let empty = items
        .iter()
        .all(|s| zero_sized(schema, s, &mut HashSet::new()));
    if (!empty && n > r.remaining()) || (empty && n > MAX_ZERO_SIZED) {
        return Err(r.err(format!(
            "count {n} exceeds the {} bytes left",
            r.remaining()
        )));
    }
    Ok(n)
}

fn big_signed(n: i128) -> Value {
    i64::try_from(n).map_or_else(|_| Value::String(n.to_string()), Value::from)
}

fn big_unsigned(n: u128) -> Value {
    u64::try_from(n).map_or_else(|_| Value::String(n.to_string()), Value::from)
}

fn float(f: f64) -> Value {
    Number::from_f64(f).map_or_else(|| Value::String(f.to_string()), Value::Number)
}

fn render_shape<'s>(r: &mut Reader<'_, 's>, schema: &'s Schema, shape: &'s Shape) -> Result<Value> {
    Ok(match shape {
        Shape::Unit => Value::Null,
        Shape::Bool => match r.byte()? {
            0 => Value::Bool(false),
            1 => Value::Bool(true),
            b => return Err(r.err(format!("bool byte {b}"))),
        },
        Shape::I8 | Shape::I16 | Shape::I32 | Shape::I64 | Shape::I128 => {
            big_signed(r.signed(shape)?)
        }
        Shape::U8 | Shape::U16 | Shape::U32 | Shape::U64 | Shape::U128 => {
            big_unsigned(r.unsigned(shape)?)
        }
        Shape::F32 => {
            let b: [u8; 4] = r.take(4)?.try_into().map_err(|_| r.err("f32"))?;
            float(f64::from(f32::from_le_bytes(b)))
        }
        Shape::F64 => {
            let b: [u8; 8] = r.take(8)?.try_into().map_err(|_| r.err("f64"))?;
            float(f64::from_le_bytes(b))
        }
        Shape::Str => Value::String(r.str()?.to_string()),
        Shape::Char => {
            let s = r.str()?;
            if s.chars().count() != 1 {
                return Err(r.err(format!("a char holds {} characters", s.chars().count())));
            }
            Value::String(s.to_string())
        }
        Shape::Bytes => {
            let n = r.len()?;
            Value::Array(r.take(n)?.iter().map(|b| Value::from(*b)).collect())
        }
        Shape::Option(inner) => match r.byte()? {
            0 => Value::Null,
            1 => render_in(r, schema, inner, Seg::Inner)?,
            b => return Err(r.err(format!("option tag {b}"))),
        },
        Shape::Seq(item) => {
            let n = count(r, schema, &[item])?;
            r.enter(Seg::Elem)?;
            let mut out = Vec::with_capacity(n.min(4096));
            for _ in 0..n {
                out.push(render_shape(r, schema, item)?);
            }
            r.path.pop();
            Value::Array(out)
        }
        Shape::Map { key, value } => {
            let n = count(r, schema, &[key, value])?;
            let mut pairs = Vec::with_capacity(n.min(4096));
            for _ in 0..n {
                let k = render_in(r, schema, key, Seg::Key)?;
                let v = render_in(r, schema, value, Seg::Value)?;
                pairs.push((k, v));
            }
            map_json(pairs, scalar_key(schema, key))
        }
        Shape::Tuple(items) => Value::Array(render_items(r, schema, items)?),
        Shape::Named(name) => {
            let def = schema
                .def(name)
                .ok_or_else(|| r.err(format!("type `{name}` is not in the schema")))?;
            match def {
                TypeDef::UnitStruct => Value::Null,
                TypeDef::NewtypeStruct(s) => render_in(r, schema, s, Seg::Inner)?,
                TypeDef::TupleStruct(items) => Value::Array(render_items(r, schema, items)?),
                TypeDef::Struct(fields) => Value::Object(render_fields(r, schema, fields)?),
                TypeDef::Enum(variants) => {
                    let index = r.varint(5, 32)? as u32;
                    let v = variants.iter().find(|v| v.index == index).ok_or_else(|| {
                        r.err(format!(
                            "variant index {index} is not a variant of `{name}`"
                        ))
                    })?;
                    let body = match &v.body {
                        VariantBody::Unit => return Ok(Value::String(v.name.clone())),
                        VariantBody::Newtype(s) => render_in(r, schema, s, Seg::Variant(&v.name))?,
                        VariantBody::Tuple(items) => {
                            r.enter(Seg::Variant(&v.name))?;
                            let items = render_items(r, schema, items)?;
                            r.path.pop();
                            Value::Array(items)
                        }
                        VariantBody::Struct(fields) => {
                            r.enter(Seg::Variant(&v.name))?;
                            let fields = render_fields(r, schema, fields)?;
                            r.path.pop();
                            Value::Object(fields)
                        }
                    };
                    let mut m = Map::new();
                    m.insert(v.name.clone(), body);
                    Value::Object(m)
                }
            }
        }
    })
}

fn render_items<'s>(
    r: &mut Reader<'_, 's>,
    schema: &'s Schema,
    items: &'s [Shape],
) -> Result<Vec<Value>> {
    items
        .iter()
        .enumerate()
        .map(|(i, s)| render_in(r, schema, s, Seg::Pos(i)))
        .collect()
}

fn render_fields<'s>(
    r: &mut Reader<'_, 's>,
    schema: &'s Schema,
    fields: &'s [Field],
) -> Result<Map<String, Value>> {
    let mut m = Map::new();
    for f in fields {
        let v = render_in(r, schema, &f.shape, Seg::Field(&f.name))?;
        m.insert(f.name.clone(), v);
    }
    Ok(m)
}

/// Map entries as JSON: an object when `as_object` (keys as strings, as `serde_json`
/// writes scalar keys), else an array of `[key, value]` pairs.
pub fn map_json(pairs: Vec<(Value, Value)>, as_object: bool) -> Value {
    if as_object {
        let mut m = Map::new();
        for (k, v) in pairs {
            m.insert(key_string(k), v);
        }
        Value::Object(m)
    } else {
        Value::Array(
            pairs
                .into_iter()
                .map(|(k, v)| Value::Array(vec![k, v]))
                .collect(),
        )
    }
}

/// Whether map keys of `shape` are written as JSON object keys (strings).
fn scalar_key(schema: &Schema, shape: &Shape) -> bool {
    match shape {
        Shape::Str | Shape::Char | Shape::Bool => true,
        Shape::I8 | Shape::I16 | Shape::I32 | Shape::I64 | Shape::I128 => true,
        Shape::U8 | Shape::U16 | Shape::U32 | Shape::U64 | Shape::U128 => true,
        Shape::Named(n) => {
            matches!(schema.def(n), Some(TypeDef::NewtypeStruct(s)) if scalar_key(schema, s))
        }
        _ => false,
    }
}

/// `Some(signed)` when map keys of `shape` are integers.
fn integer_key(schema: &Schema, shape: &Shape) -> Option<bool> {
    match shape {
        Shape::I8 | Shape::I16 | Shape::I32 | Shape::I64 | Shape::I128 => Some(true),
        Shape::U8 | Shape::U16 | Shape::U32 | Shape::U64 | Shape::U128 => Some(false),
        Shape::Named(n) => match schema.def(n) {
            Some(TypeDef::NewtypeStruct(s)) => integer_key(schema, s),
            _ => None,
        },
        _ => None,
    }
}

fn key_string(k: Value) -> String {
    match k {
        Value::String(s) => s,
        other => other.to_string(),
    }
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::schema::trace::trace;
    use proptest::prelude::*;
    use serde::{Deserialize, Serialize};
    use std::collections::BTreeMap;

    #[derive(Serialize, Deserialize, Debug, PartialEq, Clone)]
    enum Kind {
        A,
        B(u16),
        C(i8, String),
        D { x: i32, y: Vec<u8> },
    }

    #[derive(Serialize, Deserialize, Debug, PartialEq, Clone)]
    struct Wrapper(u32);

    #[derive(Serialize, Deserialize, Debug, PartialEq, Clone)]
    struct Record {
        b: bool,
        i: (i8, i16, i32, i64),
        u: (u8, u16, u32, u64),
        big: (i128, u128),
        f: f64,
        c: char,
        s: String,
        o: Option<Box<Record>>,
        kinds: Vec<Kind>,
        by_name: BTreeMap<String, Wrapper>,
        by_id: BTreeMap<u64, i32>,
        by_pair: BTreeMap<(u8, u8), bool>,
        unit: (),
    }

    fn kind() -> impl Strategy<Value = Kind> {
        prop_oneof![
            Just(Kind::A),
            any::<u16>().prop_map(Kind::B),
            (any::<i8>(), ".{0,4}").prop_map(|(a, b)| Kind::C(a, b)),
            (any::<i32>(), proptest::collection::vec(any::<u8>(), 0..4))
                .prop_map(|(x, y)| Kind::D { x, y }),
        ]
    }

    fn record(inner: Option<Record>) -> impl Strategy<Value = Record> {
        (
            any::<(bool, (i8, i16, i32, i64), (u8, u16, u32, u64), (i128, u128))>(),
            (-1e9f64..1e9, any::<char>(), ".{0,6}"),
            proptest::collection::vec(kind(), 0..4),
            proptest::collection::btree_map(".{0,3}", any::<u32>().prop_map(Wrapper), 0..3),
            proptest::collection::btree_map(any::<u64>(), any::<i32>(), 0..3),
            proptest::collection::btree_map(any::<(u8, u8)>(), any::<bool>(), 0..3),
        )
            .prop_map(
                move |((b, i, u, big), (f, c, s), kinds, by_name, by_id, by_pair)| Record {
                    b,
                    i,
                    u,
                    big,
                    f,
                    c,
                    s,
                    o: inner.clone().map(Box::new),
                    kinds,
                    by_name,
                    by_id,
                    by_pair,
                    unit: (),
                },
            )
    }

    fn nested() -> impl Strategy<Value = Record> {
        record(None).prop_flat_map(|r| prop_oneof![Just(r.clone()), record(Some(r))])
    }

    proptest! {
        /// Rendering through the traced schema is what serde_json makes of the value
        /// (except for the documented pair form of compound map keys and big
        /// integers), and encoding the rendering gives back the very bytes.
        #[test]
        fn render_matches_serde_json_and_encode_inverts_it(r in nested()) {
            let schema = trace::<Record>().unwrap();
            let bytes = postcard::to_stdvec(&r).unwrap();
            let json = render(&schema, &bytes).unwrap();
            let mut expect = serde_json::to_value(Record { by_pair: BTreeMap::new(), big: (0, 0), o: None, ..r.clone() }).unwrap();
            let mut got = json.clone();
            for v in [&mut expect, &mut got] {
                let m = v.as_object_mut().unwrap();
                m.remove("by_pair");
                m.remove("big");
                m.remove("o");
            }
            prop_assert_eq!(got, expect);
            let pairs: Vec<Value> = r.by_pair.iter().map(|((a, b), v)| serde_json::json!([[a, b], v])).collect();
            prop_assert_eq!(&json["by_pair"], &Value::Array(pairs));
            prop_assert_eq!(&json["big"], &Value::Array(vec![big_signed(r.big.0), big_unsigned(r.big.1)]));
            prop_assert_eq!(encode(&schema, &json).unwrap(), bytes);
        }

        /// Arbitrary bytes never panic the renderer.
        #[test]
        fn arbitrary_bytes_are_refused_or_rendered(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let schema = trace::<Record>().unwrap();
            let _ = render(&schema, &bytes);
        }
    }

    #[test]
    fn schemas_repeating_a_name_are_refused() {
        // A value is found by name (here and in evolution): a repeated name would be
        // ambiguous, and serde never makes one.
        for json in [
            r#"{"v":1,"root":{"named":"S"},"types":{"S":{"struct":[{"name":"a","shape":"u8"},{"name":"a","shape":"str"}]}}}"#,
            r#"{"v":1,"root":{"named":"E"},"types":{"E":{"enum":[{"index":0,"name":"A","body":"unit"},{"index":1,"name":"A","body":{"newtype":"u8"}}]}}}"#,
            r#"{"v":1,"root":{"named":"E"},"types":{"E":{"enum":[{"index":0,"name":"A","body":{"struct":[{"name":"x","shape":"u8"},{"name":"x","shape":"u8"}]}}]}}}"#,
        ] {
            assert!(Schema::from_json(json.as_bytes()).is_err(), "{json}");
        }
    }

    #[test]
    fn encode_names_the_field_path() {
        let schema = trace::<Record>().unwrap();
        let r = Record {
            b: true,
            i: (1, 2, 3, 4),
            u: (1, 2, 3, 4),
            big: (5, 6),
            f: 1.5,
            c: 'x',
            s: "s".into(),
            o: None,
            kinds: vec![Kind::D { x: 1, y: vec![2] }],
            by_name: BTreeMap::new(),
            by_id: BTreeMap::new(),
            by_pair: BTreeMap::new(),
            unit: (),
        };
        let mut json = render(&schema, &postcard::to_stdvec(&r).unwrap()).unwrap();
        json["kinds"][0]["D"]["x"] = Value::from(1u64 << 40);
        let e = encode(&schema, &json).unwrap_err();
        assert_eq!(e.path(), "kinds[]::D.x", "{e}");
        assert!(e.message.contains("out of range for i32"), "{e}");
        json["kinds"][0] = Value::String("Z".into());
        let e = encode(&schema, &json).unwrap_err();
        assert!(e.message.contains("`Z` is not a variant"), "{e}");
    }
}
