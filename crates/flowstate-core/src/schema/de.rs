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

use std::collections::HashSet;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, DeserializeSeed, IntoDeserializer, Visitor};

use super::{Field, Schema, Shape, TypeDef, VariantBody};

/// Why bytes could not be read as the requested type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    /// Field path where it happened (`items[].price`; empty: the value itself).
    pub path: Option<String>,
    /// What happened.
    pub message: String,
}

impl DecodeError {
    fn or_at(mut self, path: impl FnOnce() -> String) -> Self {
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
    let mut r = Reader {
        input: bytes,
        path: Vec::new(),
    };
    let value = T::deserialize(ShapeDe {
        r: &mut r,
        schema,
        shape: &schema.root,
    })
    .map_err(|e| e.or_at(String::new))?;
    if !r.input.is_empty() {
        return Err(DecodeError {
            path: Some(String::new()),
            message: format!("{} trailing bytes", r.input.len()),
        });
    }
    Ok(value)
}

/// Deepest nesting read: a stored schema or bytes from a file must not exhaust the stack.
const MAX_DEPTH: usize = 256;

#[derive(Clone, Copy)]
enum Seg<'s> {
    /// Into an option's value or a newtype's inner value (not shown in paths).
    Inner,
    Field(&'s str),
    Elem,
    Key,
    Value,
    Variant(&'s str),
    Pos(usize),
}

struct Reader<'de, 's> {
    input: &'de [u8],
    path: Vec<Seg<'s>>,
}

impl<'de, 's> Reader<'de, 's> {
    fn path_string(&self) -> String {
        let mut out = String::new();
        for s in &self.path {
            match s {
                Seg::Inner => {}
                Seg::Field(n) => {
                    if !out.is_empty() {
                        out.push('.');
                    }
                    out.push_str(n);
                }
                Seg::Elem => out.push_str("[]"),
                Seg::Key => out.push_str("{key}"),
                Seg::Value => out.push_str("{value}"),
                Seg::Variant(n) => {
                    out.push_str("::");
                    out.push_str(n);
                }
                Seg::Pos(i) => {
                    if !out.is_empty() {
                        out.push('.');
                    }
                    out.push_str(&i.to_string());
                }
            }
        }
        out
    }

    /// Steps into a part of the value (bounded depth).
    fn enter(&mut self, seg: Seg<'s>) -> Result<()> {
        if self.path.len() >= MAX_DEPTH {
            return Err(self.err(format!("nested deeper than {MAX_DEPTH} levels")));
        }
        self.path.push(seg);
        Ok(())
    }

    /// Consumes one value of `shape` without handing it over.
    fn skip(&mut self, schema: &'s Schema, shape: &'s Shape) -> Result<()> {
        match shape {
            Shape::Unit => {}
            Shape::Bool | Shape::U8 | Shape::I8 => {
                self.byte()?;
            }
            Shape::U16 | Shape::U32 | Shape::U64 | Shape::U128 => {
                self.unsigned(shape)?;
            }
            Shape::I16 | Shape::I32 | Shape::I64 | Shape::I128 => {
                self.signed(shape)?;
            }
            Shape::F32 => {
                self.take(4)?;
            }
            Shape::F64 => {
                self.take(8)?;
            }
            Shape::Char | Shape::Str | Shape::Bytes => {
                let n = self.len()?;
                self.take(n)?;
            }
            Shape::Option(inner) => match self.byte()? {
                0 => {}
                1 => self.skip_in(schema, inner, Seg::Inner)?,
                b => return Err(self.err(format!("option tag {b}"))),
            },
            Shape::Seq(item) => {
                let n = self.len()?;
                self.skip_n(schema, item, n)?;
            }
            Shape::Map { key, value } => {
                let n = self.len()?;
                for _ in 0..n {
                    self.skip_in(schema, key, Seg::Key)?;
                    self.skip_in(schema, value, Seg::Value)?;
                }
            }
            Shape::Tuple(items) => {
                for (i, s) in items.iter().enumerate() {
                    self.skip_in(schema, s, Seg::Pos(i))?;
                }
            }
            Shape::Named(n) => {
                let def = schema
                    .def(n)
                    .ok_or_else(|| self.err(format!("type `{n}` is not in the schema")))?;
                match def {
                    TypeDef::UnitStruct => {}
                    TypeDef::NewtypeStruct(s) => self.skip_in(schema, s, Seg::Inner)?,
                    TypeDef::TupleStruct(items) => {
                        for (i, s) in items.iter().enumerate() {
                            self.skip_in(schema, s, Seg::Pos(i))?;
                        }
                    }
                    TypeDef::Struct(fs) => {
                        for f in fs {
                            self.skip_in(schema, &f.shape, Seg::Field(&f.name))?;
                        }
                    }
                    TypeDef::Enum(vs) => {
                        let index = self.varint(5, 32)? as u32;
                        let v = vs.iter().find(|v| v.index == index).ok_or_else(|| {
                            self.err(format!("variant index {index} is not a variant of `{n}`"))
                        })?;
                        match &v.body {
                            VariantBody::Unit => {}
                            VariantBody::Newtype(s) => {
                                self.skip_in(schema, s, Seg::Variant(&v.name))?
                            }
                            VariantBody::Tuple(items) => {
                                self.enter(Seg::Variant(&v.name))?;
                                for (i, s) in items.iter().enumerate() {
                                    self.skip_in(schema, s, Seg::Pos(i))?;
                                }
                                self.path.pop();
                            }
                            VariantBody::Struct(fs) => {
                                self.enter(Seg::Variant(&v.name))?;
                                for f in fs {
                                    self.skip_in(schema, &f.shape, Seg::Field(&f.name))?;
                                }
                                self.path.pop();
                            }
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn skip_in(&mut self, schema: &'s Schema, shape: &'s Shape, seg: Seg<'s>) -> Result<()> {
        self.enter(seg)?;
        self.skip(schema, shape)?;
        self.path.pop();
        Ok(())
    }

    fn skip_n(&mut self, schema: &'s Schema, item: &'s Shape, n: usize) -> Result<()> {
        if n > self.input.len() && !zero_sized(schema, item, &mut HashSet::new()) {
            return Err(self.err(format!(
                "count {n} exceeds the {} bytes left",
                self.input.len()
            )));
        }
        self.enter(Seg::Elem)?;
        for _ in 0..n {
            self.skip(schema, item)?;
        }
        self.path.pop();
        Ok(())
    }

    fn err(&self, message: impl Into<String>) -> DecodeError {
        DecodeError {
            path: Some(self.path_string()),
            message: message.into(),
        }
    }

    fn tag(&self, e: DecodeError) -> DecodeError {
        e.or_at(|| self.path_string())
    }

    fn take(&mut self, n: usize) -> Result<&'de [u8]> {
        if self.input.len() < n {
            return Err(self.err(format!(
                "needs {n} bytes, {} left: the value is cut short",
                self.input.len()
            )));
        }
        let (head, rest) = self.input.split_at(n);
        self.input = rest;
        Ok(head)
    }

    fn byte(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    /// A LEB128 varint of at most `max_bytes` bytes whose value fits in `bits`.
    fn varint(&mut self, max_bytes: usize, bits: u32) -> Result<u128> {
        let mut v: u128 = 0;
        for i in 0..max_bytes {
            let b = self.byte()?;
            v |= u128::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                if bits < 128 && v >> bits != 0 {
                    return Err(self.err(format!("varint out of range for {bits} bits")));
                }
                return Ok(v);
            }
        }
        Err(self.err("varint too long"))
    }

    fn len(&mut self) -> Result<usize> {
        let n = self.varint(10, 64)?;
        usize::try_from(n).map_err(|_| self.err("length out of range"))
    }

    fn str(&mut self) -> Result<&'de str> {
        let n = self.len()?;
        let b = self.take(n)?;
        std::str::from_utf8(b).map_err(|e| self.err(format!("invalid UTF-8: {e}")))
    }

    fn unsigned(&mut self, s: &Shape) -> Result<u128> {
        Ok(match s {
            Shape::U8 => u128::from(self.byte()?),
            Shape::U16 => self.varint(3, 16)?,
            Shape::U32 => self.varint(5, 32)?,
            Shape::U64 => self.varint(10, 64)?,
            _ => self.varint(19, 128)?,
        })
    }

    fn signed(&mut self, s: &Shape) -> Result<i128> {
        let zig = |u: u128| ((u >> 1) as i128) ^ -((u & 1) as i128);
        Ok(match s {
            Shape::I8 => i128::from(self.byte()? as i8),
            Shape::I16 => zig(self.varint(3, 16)?),
            Shape::I32 => zig(self.varint(5, 32)?),
            Shape::I64 => zig(self.varint(10, 64)?),
            _ => zig(self.varint(19, 128)?),
        })
    }
}

fn unsigned_rank(s: &Shape) -> Option<u8> {
    match s {
        Shape::U8 => Some(1),
        Shape::U16 => Some(2),
        Shape::U32 => Some(3),
        Shape::U64 => Some(4),
        Shape::U128 => Some(5),
        _ => None,
    }
}

fn signed_rank(s: &Shape) -> Option<u8> {
    match s {
        Shape::I8 => Some(1),
        Shape::I16 => Some(2),
        Shape::I32 => Some(3),
        Shape::I64 => Some(4),
        Shape::I128 => Some(5),
        _ => None,
    }
}

/// Whether values of `shape` take no bytes (so a count cannot be checked against the
/// bytes left).
fn zero_sized(schema: &Schema, shape: &Shape, seen: &mut HashSet<String>) -> bool {
    match shape {
        Shape::Unit => true,
        Shape::Tuple(items) => items.iter().all(|s| zero_sized(schema, s, seen)),
        Shape::Named(n) => {
            if !seen.insert(n.clone()) {
                return false;
            }
            match schema.def(n) {
                Some(TypeDef::UnitStruct) => true,
                Some(TypeDef::NewtypeStruct(s)) => zero_sized(schema, s, seen),
                Some(TypeDef::TupleStruct(items)) => {
                    items.iter().all(|s| zero_sized(schema, s, seen))
                }
                Some(TypeDef::Struct(fs)) => fs.iter().all(|f| zero_sized(schema, &f.shape, seen)),
                _ => false,
            }
        }
        _ => false,
    }
}

struct ShapeDe<'r, 'de, 's> {
    r: &'r mut Reader<'de, 's>,
    schema: &'s Schema,
    shape: &'s Shape,
}

impl<'r, 'de, 's> ShapeDe<'r, 'de, 's> {
    fn mismatch(&self, want: &str) -> DecodeError {
        let stored = self.describe();
        let hint = if matches!(self.shape, Shape::Option(_)) && !want.starts_with("Option") {
            " (an optional value cannot become required)"
        } else if unsigned_rank(self.shape).is_some() || signed_rank(self.shape).is_some() {
            " (integers may only widen, keeping their sign)"
        } else if *self.shape == Shape::F64 && want == "f32" {
            " (floats may only widen)"
        } else {
            ""
        };
        self.r
            .err(format!("stored {stored} cannot be read as {want}{hint}"))
    }

    fn describe(&self) -> String {
        match self.shape {
            Shape::Named(n) => match self.schema.def(n) {
                Some(d) => format!("{} `{n}`", d.kind()),
                None => format!("`{n}`"),
            },
            s => s.to_string(),
        }
    }

    fn def(&self) -> Result<(&'s str, &'s TypeDef)> {
        match self.shape {
            Shape::Named(n) => self
                .schema
                .def(n)
                .map(|d| (n.as_str(), d))
                .ok_or_else(|| self.r.err(format!("type `{n}` is not in the schema"))),
            _ => Err(self.r.err("not a named type")),
        }
    }

    fn count(&mut self, item: &Shape) -> Result<usize> {
        let n = self.r.len()?;
        if n > self.r.input.len() && !zero_sized(self.schema, item, &mut HashSet::new()) {
            return Err(self.r.err(format!(
                "count {n} exceeds the {} bytes left",
                self.r.input.len()
            )));
        }
        Ok(n)
    }

    fn uint<V: Visitor<'de>>(
        self,
        rank: u8,
        want: &str,
        visit: impl FnOnce(V, u128) -> Result<V::Value>,
        v: V,
    ) -> Result<V::Value> {
        match unsigned_rank(self.shape) {
            Some(r) if r <= rank => {
                let n = self.r.unsigned(self.shape)?;
                visit(v, n)
            }
            _ => Err(self.mismatch(want)),
        }
    }

    fn sint<V: Visitor<'de>>(
        self,
        rank: u8,
        want: &str,
        visit: impl FnOnce(V, i128) -> Result<V::Value>,
        v: V,
    ) -> Result<V::Value> {
        match signed_rank(self.shape) {
            Some(r) if r <= rank => {
                let n = self.r.signed(self.shape)?;
                visit(v, n)
            }
            _ => Err(self.mismatch(want)),
        }
    }

    /// Hands over the inner value of an option or newtype (one level deeper).
    fn inner<T>(
        self,
        shape: &'s Shape,
        f: impl FnOnce(ShapeDe<'_, 'de, 's>) -> Result<T>,
    ) -> Result<T> {
        let ShapeDe { r, schema, .. } = self;
        r.enter(Seg::Inner)?;
        let res = f(ShapeDe {
            r: &mut *r,
            schema,
            shape,
        })
        .map_err(|e| r.tag(e));
        r.path.pop();
        res
    }

    fn seq<V: Visitor<'de>>(self, items: Items<'s>, visitor: V) -> Result<V::Value> {
        let ShapeDe { r, schema, .. } = self;
        let res = visitor.visit_seq(SeqAccess {
            r: &mut *r,
            schema,
            items,
            pos: 0,
        });
        res.map_err(|e| r.tag(e))
    }

    fn fields<V: Visitor<'de>>(self, fields: &'s [Field], visitor: V) -> Result<V::Value> {
        let ShapeDe { r, schema, .. } = self;
        let res = visitor.visit_map(StructAccess {
            r: &mut *r,
            schema,
            fields,
            next: 0,
        });
        res.map_err(|e| r.tag(e))
    }
}

enum Items<'s> {
    Same(&'s Shape, usize),
    List(&'s [Shape]),
}

struct SeqAccess<'r, 'de, 's> {
    r: &'r mut Reader<'de, 's>,
    schema: &'s Schema,
    items: Items<'s>,
    pos: usize,
}

impl<'de> de::SeqAccess<'de> for SeqAccess<'_, 'de, '_> {
    type Error = DecodeError;

    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>> {
        let (shape, seg) = match &self.items {
            Items::Same(s, n) if self.pos < *n => (*s, Seg::Elem),
            Items::List(l) if self.pos < l.len() => (&l[self.pos], Seg::Pos(self.pos)),
            _ => return Ok(None),
        };
        self.pos += 1;
        self.r.enter(seg)?;
        let v = seed
            .deserialize(ShapeDe {
                r: &mut *self.r,
                schema: self.schema,
                shape,
            })
            .map_err(|e| self.r.tag(e));
        self.r.path.pop();
        v.map(Some)
    }

    fn size_hint(&self) -> Option<usize> {
        Some(match &self.items {
            Items::Same(_, n) => n - self.pos,
            Items::List(l) => l.len() - self.pos,
        })
    }
}

struct MapAccess<'r, 'de, 's> {
    r: &'r mut Reader<'de, 's>,
    schema: &'s Schema,
    key: &'s Shape,
    value: &'s Shape,
    left: usize,
}

impl<'de> de::MapAccess<'de> for MapAccess<'_, 'de, '_> {
    type Error = DecodeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>> {
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        self.r.enter(Seg::Key)?;
        let k = seed
            .deserialize(ShapeDe {
                r: &mut *self.r,
                schema: self.schema,
                shape: self.key,
            })
            .map_err(|e| self.r.tag(e));
        self.r.path.pop();
        k.map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value> {
        self.r.enter(Seg::Value)?;
        let v = seed
            .deserialize(ShapeDe {
                r: &mut *self.r,
                schema: self.schema,
                shape: self.value,
            })
            .map_err(|e| self.r.tag(e));
        self.r.path.pop();
        v
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.left)
    }
}

/// A struct offered as a map from field name to value, in stored order.
struct StructAccess<'r, 'de, 's> {
    r: &'r mut Reader<'de, 's>,
    schema: &'s Schema,
    fields: &'s [Field],
    next: usize,
}

impl<'de> de::MapAccess<'de> for StructAccess<'_, 'de, '_> {
    type Error = DecodeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>> {
        let Some(f) = self.fields.get(self.next) else {
            return Ok(None);
        };
        let key: de::value::StrDeserializer<'_, DecodeError> = f.name.as_str().into_deserializer();
        self.r.path.push(Seg::Field(&f.name));
        let k = seed.deserialize(key).map_err(|e| self.r.tag(e));
        self.r.path.pop();
        k.map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value> {
        let Some(f) = self.fields.get(self.next) else {
            return Err(self.r.err("value asked for past the last field"));
        };
        self.next += 1;
        self.r.enter(Seg::Field(&f.name))?;
        let v = seed
            .deserialize(ShapeDe {
                r: &mut *self.r,
                schema: self.schema,
                shape: &f.shape,
            })
            .map_err(|e| self.r.tag(e));
        self.r.path.pop();
        v
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.fields.len() - self.next)
    }
}

struct EnumAccess<'r, 'de, 's> {
    r: &'r mut Reader<'de, 's>,
    schema: &'s Schema,
    enum_name: &'s str,
    variants: &'s [super::Variant],
}

impl<'r, 'de, 's> de::EnumAccess<'de> for EnumAccess<'r, 'de, 's> {
    type Error = DecodeError;
    type Variant = VariantAccess<'r, 'de, 's>;

    fn variant_seed<V: DeserializeSeed<'de>>(self, seed: V) -> Result<(V::Value, Self::Variant)> {
        let index = self.r.varint(5, 32)? as u32;
        let Some(v) = self.variants.iter().find(|v| v.index == index) else {
            return Err(self.r.err(format!(
                "variant index {index} is not a variant of `{}`",
                self.enum_name
            )));
        };
        self.r.enter(Seg::Variant(&v.name))?;
        let name: de::value::StrDeserializer<'_, DecodeError> = v.name.as_str().into_deserializer();
        let chosen = match seed.deserialize(name) {
            Ok(c) => c,
            Err(e) => {
                let e = self.r.tag(e);
                self.r.path.pop();
                return Err(e);
            }
        };
        Ok((
            chosen,
            VariantAccess {
                r: self.r,
                schema: self.schema,
                name: &v.name,
                body: &v.body,
            },
        ))
    }
}

struct VariantAccess<'r, 'de, 's> {
    r: &'r mut Reader<'de, 's>,
    schema: &'s Schema,
    name: &'s str,
    body: &'s VariantBody,
}

impl<'de> VariantAccess<'_, 'de, '_> {
    fn done<T>(self, res: Result<T>) -> Result<T> {
        let res = res.map_err(|e| self.r.tag(e));
        self.r.path.pop();
        res
    }

    fn wrong(&self, want: &str) -> DecodeError {
        let had = match self.body {
            VariantBody::Unit => "no fields",
            VariantBody::Newtype(_) => "one unnamed field",
            VariantBody::Tuple(_) => "unnamed fields",
            VariantBody::Struct(_) => "named fields",
        };
        self.r.err(format!(
            "variant `{}` had {had} and now has {want}",
            self.name
        ))
    }
}

impl<'de> de::VariantAccess<'de> for VariantAccess<'_, 'de, '_> {
    type Error = DecodeError;

    fn unit_variant(self) -> Result<()> {
        let res = match self.body {
            VariantBody::Unit => Ok(()),
            _ => Err(self.wrong("no fields")),
        };
        self.done(res)
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value> {
        let res = match self.body {
            VariantBody::Newtype(s) => seed.deserialize(ShapeDe {
                r: &mut *self.r,
                schema: self.schema,
                shape: s,
            }),
            _ => Err(self.wrong("one unnamed field")),
        };
        self.done(res)
    }

    fn tuple_variant<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value> {
        let res = match self.body {
            VariantBody::Tuple(items) if items.len() == len => visitor.visit_seq(SeqAccess {
                r: &mut *self.r,
                schema: self.schema,
                items: Items::List(items),
                pos: 0,
            }),
            _ => Err(self.wrong(&format!("{len} unnamed fields"))),
        };
        self.done(res)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value> {
        let res = match self.body {
            VariantBody::Struct(fields) => visitor.visit_map(StructAccess {
                r: &mut *self.r,
                schema: self.schema,
                fields,
                next: 0,
            }),
            _ => Err(self.wrong("named fields")),
        };
        self.done(res)
    }
}

macro_rules! uint_method {
    ($name:ident, $rank:expr, $want:expr, $visit:ident, $t:ty) => {
        fn $name<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
            // Widening only: the stored value always fits.
            self.uint($rank, $want, |v, n| v.$visit(n as $t), visitor)
        }
    };
}

macro_rules! sint_method {
    ($name:ident, $rank:expr, $want:expr, $visit:ident, $t:ty) => {
        fn $name<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
            self.sint($rank, $want, |v, n| v.$visit(n as $t), visitor)
        }
    };
}

impl<'de> de::Deserializer<'de> for ShapeDe<'_, 'de, '_> {
    type Error = DecodeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        match self.shape {
            Shape::Unit => visitor.visit_unit(),
            Shape::Bool => self.deserialize_bool(visitor),
            Shape::I8 | Shape::I16 | Shape::I32 | Shape::I64 => {
                let n = self.r.signed(self.shape)?;
                visitor.visit_i64(n as i64)
            }
            Shape::I128 => self.deserialize_i128(visitor),
            Shape::U8 | Shape::U16 | Shape::U32 | Shape::U64 => {
                let n = self.r.unsigned(self.shape)?;
                visitor.visit_u64(n as u64)
            }
            Shape::U128 => self.deserialize_u128(visitor),
            Shape::F32 => self.deserialize_f32(visitor),
            Shape::F64 => self.deserialize_f64(visitor),
            Shape::Char => self.deserialize_char(visitor),
            Shape::Str => self.deserialize_str(visitor),
            Shape::Bytes => self.deserialize_bytes(visitor),
            Shape::Option(_) => self.deserialize_option(visitor),
            Shape::Seq(_) => self.deserialize_seq(visitor),
            Shape::Map { .. } => self.deserialize_map(visitor),
            Shape::Tuple(items) => self.seq(Items::List(items), visitor),
            Shape::Named(_) => {
                let (_, def) = self.def()?;
                match def {
                    TypeDef::UnitStruct => visitor.visit_unit(),
                    TypeDef::NewtypeStruct(inner) => {
                        self.inner(inner, |d| visitor.visit_newtype_struct(d))
                    }
                    TypeDef::TupleStruct(items) => self.seq(Items::List(items), visitor),
                    TypeDef::Struct(fields) => self.fields(fields, visitor),
                    TypeDef::Enum(_) => self.deserialize_enum("enum", &[], visitor),
                }
            }
        }
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        if *self.shape != Shape::Bool {
            return Err(self.mismatch("bool"));
        }
        match self.r.byte()? {
            0 => visitor.visit_bool(false),
            1 => visitor.visit_bool(true),
            b => Err(self.r.err(format!("bool byte {b}"))),
        }
    }

    sint_method!(deserialize_i8, 1, "i8", visit_i8, i8);
    sint_method!(deserialize_i16, 2, "i16", visit_i16, i16);
    sint_method!(deserialize_i32, 3, "i32", visit_i32, i32);
    sint_method!(deserialize_i64, 4, "i64", visit_i64, i64);
    sint_method!(deserialize_i128, 5, "i128", visit_i128, i128);
    uint_method!(deserialize_u8, 1, "u8", visit_u8, u8);
    uint_method!(deserialize_u16, 2, "u16", visit_u16, u16);
    uint_method!(deserialize_u32, 3, "u32", visit_u32, u32);
    uint_method!(deserialize_u64, 4, "u64", visit_u64, u64);
    uint_method!(deserialize_u128, 5, "u128", visit_u128, u128);

    fn deserialize_f32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        if *self.shape != Shape::F32 {
            return Err(self.mismatch("f32"));
        }
        let b = self.r.take(4)?;
        visitor.visit_f32(f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        match self.shape {
            Shape::F32 => {
                let b = self.r.take(4)?;
                visitor.visit_f64(f64::from(f32::from_le_bytes([b[0], b[1], b[2], b[3]])))
            }
            Shape::F64 => {
                let b = self.r.take(8)?;
                let mut a = [0u8; 8];
                a.copy_from_slice(b);
                visitor.visit_f64(f64::from_le_bytes(a))
            }
            _ => Err(self.mismatch("f64")),
        }
    }

    fn deserialize_char<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        if *self.shape != Shape::Char {
            return Err(self.mismatch("char"));
        }
        let s = self.r.str()?;
        let mut it = s.chars();
        match (it.next(), it.next()) {
            (Some(c), None) => visitor.visit_char(c),
            _ => Err(self.r.err("a char is not one character")),
        }
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        if *self.shape != Shape::Str {
            return Err(self.mismatch("String"));
        }
        visitor.visit_borrowed_str(self.r.str()?)
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        self.deserialize_str(visitor)
    }

    fn deserialize_bytes<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        if *self.shape != Shape::Bytes {
            return Err(self.mismatch("bytes"));
        }
        let n = self.r.len()?;
        visitor.visit_borrowed_bytes(self.r.take(n)?)
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        self.deserialize_bytes(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        match self.shape {
            Shape::Option(inner) => match self.r.byte()? {
                0 => visitor.visit_none(),
                1 => self.inner(inner, |d| visitor.visit_some(d)),
                b => Err(self.r.err(format!("option tag {b}"))),
            },
            // `T` → `Option<T>`: every stored value is present.
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        match self.shape {
            Shape::Unit => visitor.visit_unit(),
            Shape::Named(_) if matches!(self.def()?.1, TypeDef::UnitStruct) => visitor.visit_unit(),
            _ => Err(self.mismatch("()")),
        }
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value> {
        match self.shape {
            Shape::Unit => visitor.visit_unit(),
            Shape::Named(_) if matches!(self.def()?.1, TypeDef::UnitStruct) => visitor.visit_unit(),
            _ => Err(self.mismatch(&format!("unit struct `{name}`"))),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value> {
        if let Shape::Named(_) = self.shape
            && let TypeDef::NewtypeStruct(inner) = self.def()?.1
        {
            return self.inner(inner, |d| visitor.visit_newtype_struct(d));
        }
        Err(self.mismatch(&format!("newtype struct `{name}`")))
    }

    fn deserialize_seq<V: Visitor<'de>>(mut self, visitor: V) -> Result<V::Value> {
        match self.shape {
            Shape::Seq(item) => {
                let n = self.count(item)?;
                self.seq(Items::Same(item, n), visitor)
            }
            _ => Err(self.mismatch("a sequence")),
        }
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value> {
        match self.shape {
            Shape::Tuple(items) if items.len() == len => self.seq(Items::List(items), visitor),
            _ => Err(self.mismatch(&format!("a tuple or array of {len}"))),
        }
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        len: usize,
        visitor: V,
    ) -> Result<V::Value> {
        if let Shape::Named(_) = self.shape
            && let TypeDef::TupleStruct(items) = self.def()?.1
            && items.len() == len
        {
            return self.seq(Items::List(items), visitor);
        }
        Err(self.mismatch(&format!("tuple struct `{name}` of {len}")))
    }

    fn deserialize_map<V: Visitor<'de>>(mut self, visitor: V) -> Result<V::Value> {
        let Shape::Map { key, value } = self.shape else {
            return Err(self.mismatch("a map"));
        };
        let left = self.count(&Shape::Tuple(Vec::new()))?;
        let ShapeDe { r, schema, .. } = self;
        let res = visitor.visit_map(MapAccess {
            r: &mut *r,
            schema,
            key,
            value,
            left,
        });
        res.map_err(|e| r.tag(e))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value> {
        if let Shape::Named(_) = self.shape
            && let TypeDef::Struct(fields) = self.def()?.1
        {
            return self.fields(fields, visitor);
        }
        Err(self.mismatch(&format!("struct `{name}`")))
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value> {
        let (enum_name, variants) = match self.shape {
            Shape::Named(_) => match self.def()? {
                (n, TypeDef::Enum(vs)) => (n, vs),
                _ => return Err(self.mismatch(&format!("enum `{name}`"))),
            },
            _ => return Err(self.mismatch(&format!("enum `{name}`"))),
        };
        let ShapeDe { r, schema, .. } = self;
        let res = visitor.visit_enum(EnumAccess {
            r: &mut *r,
            schema,
            enum_name,
            variants,
        });
        res.map_err(|e| r.tag(e))
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        self.deserialize_str(visitor)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        self.r.skip(self.schema, self.shape)?;
        visitor.visit_unit()
    }

    fn is_human_readable(&self) -> bool {
        // Postcard is not: types such as `IpAddr` choose their compact form.
        false
    }
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
