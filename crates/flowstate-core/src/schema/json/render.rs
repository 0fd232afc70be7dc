//! Stored bytes to JSON through a schema (see the module docs for the mapping).

use std::collections::HashSet;

use serde_json::{Map, Number, Value};

use super::super::de::reader::{Reader, Seg, zero_sized};
use super::super::{Field, Schema, Shape, TypeDef, VariantBody};
use super::{Result, map_json, scalar_key};

/// A count of zero-sized elements above this is refused (it cannot be checked against
/// the bytes left, and would otherwise let a corrupt count run for ever).
const MAX_ZERO_SIZED: usize = 1 << 20;

/// Renders one stored value of `schema` as JSON; every byte must be used.
pub fn render(schema: &Schema, bytes: &[u8]) -> Result<Value> {
    let mut r = Reader::new(bytes);
    let v = render_shape(&mut r, schema, &schema.root)?;
    if r.remaining() > 0 {
        return Err(r.err(format!("{} trailing bytes", r.remaining())));
    }
    Ok(v)
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

pub(super) fn big_signed(n: i128) -> Value {
    i64::try_from(n).map_or_else(|_| Value::String(n.to_string()), Value::from)
}

pub(super) fn big_unsigned(n: u128) -> Value {
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
