//! The byte side of schema-driven reading: postcard primitives, skipping a stored
//! value, and the field path for messages (bounded in depth).

use std::collections::HashSet;

use super::{DecodeError, Result};
use crate::schema::{Schema, Shape, TypeDef, VariantBody};

/// Deepest nesting read: a stored schema or bytes from a file must not exhaust the stack.
const MAX_DEPTH: usize = 256;

#[derive(Clone, Copy)]
pub(in crate::schema) enum Seg<'s> {
    /// Into an option's value or a newtype's inner value (not shown in paths).
    Inner,
    Field(&'s str),
    Elem,
    Key,
    Value,
    Variant(&'s str),
    Pos(usize),
}

pub(in crate::schema) struct Reader<'de, 's> {
    pub(in crate::schema) input: &'de [u8],
    pub(in crate::schema) path: Vec<Seg<'s>>,
}

impl<'de, 's> Reader<'de, 's> {
    pub(in crate::schema) fn new(input: &'de [u8]) -> Self {
        Reader {
            input,
            path: Vec::new(),
        }
    }

    /// Bytes not read yet.
    pub(in crate::schema) fn remaining(&self) -> usize {
        self.input.len()
    }

    pub(in crate::schema) fn path_string(&self) -> String {
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
    pub(in crate::schema) fn enter(&mut self, seg: Seg<'s>) -> Result<()> {
        if self.path.len() >= MAX_DEPTH {
            return Err(self.err(format!("nested deeper than {MAX_DEPTH} levels")));
        }
        self.path.push(seg);
        Ok(())
    }

    /// Consumes one value of `shape` without handing it over.
    pub(in crate::schema) fn skip(&mut self, schema: &'s Schema, shape: &'s Shape) -> Result<()> {
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

    pub(in crate::schema) fn err(&self, message: impl Into<String>) -> DecodeError {
        DecodeError {
            path: Some(self.path_string()),
            message: message.into(),
        }
    }

    pub(in crate::schema) fn tag(&self, e: DecodeError) -> DecodeError {
        e.or_at(|| self.path_string())
    }

    pub(in crate::schema) fn take(&mut self, n: usize) -> Result<&'de [u8]> {
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

    pub(in crate::schema) fn byte(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    /// A LEB128 varint of at most `max_bytes` bytes whose value fits in `bits`.
    pub(in crate::schema) fn varint(&mut self, max_bytes: usize, bits: u32) -> Result<u128> {
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

    pub(in crate::schema) fn len(&mut self) -> Result<usize> {
        let n = self.varint(10, 64)?;
        usize::try_from(n).map_err(|_| self.err("length out of range"))
    }

    pub(in crate::schema) fn str(&mut self) -> Result<&'de str> {
        let n = self.len()?;
        let b = self.take(n)?;
        std::str::from_utf8(b).map_err(|e| self.err(format!("invalid UTF-8: {e}")))
    }

    pub(in crate::schema) fn unsigned(&mut self, s: &Shape) -> Result<u128> {
        Ok(match s {
            Shape::U8 => u128::from(self.byte()?),
            Shape::U16 => self.varint(3, 16)?,
            Shape::U32 => self.varint(5, 32)?,
            Shape::U64 => self.varint(10, 64)?,
            _ => self.varint(19, 128)?,
        })
    }

    pub(in crate::schema) fn signed(&mut self, s: &Shape) -> Result<i128> {
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

pub(in crate::schema) fn unsigned_rank(s: &Shape) -> Option<u8> {
    match s {
        Shape::U8 => Some(1),
        Shape::U16 => Some(2),
        Shape::U32 => Some(3),
        Shape::U64 => Some(4),
        Shape::U128 => Some(5),
        _ => None,
    }
}

pub(in crate::schema) fn signed_rank(s: &Shape) -> Option<u8> {
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
pub(in crate::schema) fn zero_sized(
    schema: &Schema,
    shape: &Shape,
    seen: &mut HashSet<String>,
) -> bool {
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
