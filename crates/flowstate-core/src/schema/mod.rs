//! State schemas: a machine-readable description of a serde type's stored layout, kept
//! with the state so that its bytes can be read without the Rust type that wrote them
//! and so that a changed type can take over the bytes of the old one.
//!
//! - [`Schema`] (this file): the model and its stored JSON form (`docs/formats.md`,
//!   "State schemas");
//! - [`trace`]: derives a [`Schema`] from a serde type with `serde-reflection`;
//! - [`de`]: a serde `Deserializer` over postcard bytes driven by a stored schema,
//!   which applies the evolution rules while it reads;
//! - [`evolve`]: decides before any state is touched whether a type may take over
//!   bytes of another schema, and builds the reader that migrates them.
//!
//! The model mirrors serde's data model as postcard encodes it: containers (structs
//! and enums) are named and listed once in [`Schema::types`] so recursive types stay
//! finite; everything else is an anonymous [`Shape`]. Fixed-size arrays `[T; N]` are
//! tuples of `N` elements, as serde sees them.

pub mod de;
pub mod evolve;
pub mod json;
pub mod trace;

use std::collections::{BTreeMap, HashSet};
use std::fmt;

use serde::{Deserialize, Serialize};

/// Version of the stored schema JSON (`"v"` in it); readers refuse newer ones.
pub const SCHEMA_VERSION: u32 = 1;

/// The layout of one anonymous value in serde's data model.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Shape {
    /// `()`: no bytes.
    Unit,
    /// `bool`: one byte, 0 or 1.
    Bool,
    /// `i8`: one byte.
    I8,
    /// `i16`: zigzag varint.
    I16,
    /// `i32`: zigzag varint.
    I32,
    /// `i64`: zigzag varint.
    I64,
    /// `i128`: zigzag varint.
    I128,
    /// `u8`: one byte.
    U8,
    /// `u16`: varint.
    U16,
    /// `u32`: varint.
    U32,
    /// `u64`: varint.
    U64,
    /// `u128`: varint.
    U128,
    /// `f32`: 4 bytes little-endian.
    F32,
    /// `f64`: 8 bytes little-endian.
    F64,
    /// `char`: varint length and UTF-8.
    Char,
    /// `String`/`&str`: varint length and UTF-8.
    Str,
    /// Byte strings (`serde_bytes`): varint length and bytes.
    Bytes,
    /// `Option<T>`: 0, or 1 and the value.
    Option(Box<Shape>),
    /// A sequence (`Vec<T>`, sets): varint count, then the elements.
    Seq(Box<Shape>),
    /// A map: varint count, then key and value per entry.
    Map {
        /// Layout of the keys.
        key: Box<Shape>,
        /// Layout of the values.
        value: Box<Shape>,
    },
    /// A tuple: the elements in order, no count.
    Tuple(Vec<Shape>),
    /// A named container, described in [`Schema::types`].
    Named(String),
}

/// A named container: a struct or an enum.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TypeDef {
    /// `struct A;`: no bytes.
    UnitStruct,
    /// `struct A(T);`: the inner value.
    NewtypeStruct(Shape),
    /// `struct A(T, U);`: the fields in order.
    TupleStruct(Vec<Shape>),
    /// `struct A { .. }`: the fields in order, no names in the bytes.
    Struct(Vec<Field>),
    /// An enum: varint variant index, then the variant's body.
    Enum(Vec<Variant>),
}

/// A named field of a struct or struct variant.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Field {
    /// The field's serde name.
    pub name: String,
    /// Its layout.
    pub shape: Shape,
}

/// One variant of an enum.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Variant {
    /// The index written in the bytes (serde's variant index).
    pub index: u32,
    /// The variant's serde name.
    pub name: String,
    /// What follows the index.
    pub body: VariantBody,
}

/// The body of an enum variant.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VariantBody {
    /// `A`: nothing.
    Unit,
    /// `A(T)`: the value.
    Newtype(Shape),
    /// `A(T, U)`: the values in order.
    Tuple(Vec<Shape>),
    /// `A { .. }`: the fields in order.
    Struct(Vec<Field>),
}

/// The schema of a stored type: its root shape and every named container it uses.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Schema {
    /// Version of this description ([`SCHEMA_VERSION`]).
    pub v: u32,
    /// Layout of the stored value.
    pub root: Shape,
    /// The named containers, by serde name.
    pub types: BTreeMap<String, TypeDef>,
}

/// A stored schema that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchemaError {
    /// The schema could not be derived from the type (see [`trace`]).
    #[error("cannot derive a schema for `{type_name}`: {reason}")]
    Untraceable {
        /// The Rust type.
        type_name: String,
        /// Why (from the tracer).
        reason: String,
    },
    /// Stored schema bytes are not a valid schema.
    #[error("malformed stored schema: {0}")]
    Malformed(String),
}

impl Schema {
    /// The stored form: compact JSON (`docs/formats.md`, "State schemas").
    pub fn to_json(&self) -> Vec<u8> {
        // A tree of strings, numbers and maps with string keys always serializes.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Reads and checks a stored schema: known version, every named container
    /// defined, variant indices unique.
    pub fn from_json(bytes: &[u8]) -> Result<Schema, SchemaError> {
        let s: Schema =
            serde_json::from_slice(bytes).map_err(|e| SchemaError::Malformed(e.to_string()))?;
        s.check()?;
        Ok(s)
    }

    /// Checks a schema: known version, every named container defined (a tracer's
    /// placeholder for an untraced part is a name never defined), variant indices,
    /// variant names and field names unique.
    pub fn check(&self) -> Result<(), SchemaError> {
        let s = self;
        if s.v == 0 || s.v > SCHEMA_VERSION {
            return Err(SchemaError::Malformed(format!(
                "schema version {} (this build reads up to {SCHEMA_VERSION})",
                s.v
            )));
        }
        let mut missing = None;
        let mut check = |shape: &Shape| {
            shape.visit_names(&mut |n| {
                if !s.types.contains_key(n) && missing.is_none() {
                    missing = Some(n.to_string());
                }
            })
        };
        check(&s.root);
        for def in s.types.values() {
            def.visit_shapes(&mut check);
            // Names are unique as serde makes them: a value is found by its name
            // (JSON rendering, evolution), so a repeated one would be ambiguous.
            let unique_fields = |fs: &[Field]| {
                let mut seen = HashSet::new();
                fs.iter().all(|f| seen.insert(f.name.as_str()))
            };
            match def {
                TypeDef::Enum(vs) => {
                    let mut seen = HashSet::new();
                    if !vs.iter().all(|v| seen.insert(v.index)) {
                        return Err(SchemaError::Malformed("duplicate variant index".into()));
                    }
                    let mut names = HashSet::new();
                    if !vs.iter().all(|v| names.insert(v.name.as_str())) {
                        return Err(SchemaError::Malformed("duplicate variant name".into()));
                    }
                    for v in vs {
                        if let VariantBody::Struct(fs) = &v.body
                            && !unique_fields(fs)
                        {
                            return Err(SchemaError::Malformed("duplicate field name".into()));
                        }
                    }
                }
                TypeDef::Struct(fs) if !unique_fields(fs) => {
                    return Err(SchemaError::Malformed("duplicate field name".into()));
                }
                _ => {}
            }
        }
        if let Some(n) = missing {
            return Err(SchemaError::Malformed(format!("type `{n}` is not defined")));
        }
        Ok(())
    }

    /// The container named `name`.
    pub fn def(&self, name: &str) -> Option<&TypeDef> {
        self.types.get(name)
    }

    /// Whether values of `self` and `other` have the same bytes: equal up to the names
    /// of containers (renaming a type changes no byte).
    pub fn same_layout(&self, other: &Schema) -> bool {
        first_difference(self, other).is_none()
    }
}

impl Shape {
    /// Calls `f` with every container name directly in this shape (not through the
    /// containers themselves).
    pub(crate) fn visit_names<'a>(&'a self, f: &mut dyn FnMut(&'a str)) {
        match self {
            Shape::Named(n) => f(n),
            Shape::Option(s) | Shape::Seq(s) => s.visit_names(f),
            Shape::Map { key, value } => {
                key.visit_names(f);
                value.visit_names(f);
            }
            Shape::Tuple(items) => items.iter().for_each(|s| s.visit_names(f)),
            _ => {}
        }
    }
}

impl VariantBody {
    /// Calls `f` with the shape of each of the body's values, in stored order.
    pub(crate) fn visit_shapes<'a>(&'a self, f: &mut dyn FnMut(&'a Shape)) {
        match self {
            VariantBody::Unit => {}
            VariantBody::Newtype(s) => f(s),
            VariantBody::Tuple(items) => items.iter().for_each(f),
            VariantBody::Struct(fields) => fields.iter().for_each(|x| f(&x.shape)),
        }
    }
}

impl TypeDef {
    /// Calls `f` with the shape of each value the container holds, in stored order
    /// (for an enum: of every variant, one after another).
    pub(crate) fn visit_shapes<'a>(&'a self, f: &mut dyn FnMut(&'a Shape)) {
        match self {
            TypeDef::UnitStruct => {}
            TypeDef::NewtypeStruct(s) => f(s),
            TypeDef::TupleStruct(items) => items.iter().for_each(f),
            TypeDef::Struct(fields) => fields.iter().for_each(|x| f(&x.shape)),
            TypeDef::Enum(vs) => vs.iter().for_each(|v| v.body.visit_shapes(f)),
        }
    }

    /// What kind of container this is, for messages.
    pub fn kind(&self) -> &'static str {
        match self {
            TypeDef::UnitStruct => "unit struct",
            TypeDef::NewtypeStruct(_) => "newtype struct",
            TypeDef::TupleStruct(_) => "tuple struct",
            TypeDef::Struct(_) => "struct",
            TypeDef::Enum(_) => "enum",
        }
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |f: &mut fmt::Formatter<'_>, items: &[Shape]| {
            for (i, s) in items.iter().enumerate() {
                if i > 0 {
                    write!(f, ", ")?;
                }
                write!(f, "{s}")?;
            }
            Ok(())
        };
        match self {
            Shape::Unit => write!(f, "()"),
            Shape::Bool => write!(f, "bool"),
            Shape::I8 => write!(f, "i8"),
            Shape::I16 => write!(f, "i16"),
            Shape::I32 => write!(f, "i32"),
            Shape::I64 => write!(f, "i64"),
            Shape::I128 => write!(f, "i128"),
            Shape::U8 => write!(f, "u8"),
            Shape::U16 => write!(f, "u16"),
            Shape::U32 => write!(f, "u32"),
            Shape::U64 => write!(f, "u64"),
            Shape::U128 => write!(f, "u128"),
            Shape::F32 => write!(f, "f32"),
            Shape::F64 => write!(f, "f64"),
            Shape::Char => write!(f, "char"),
            Shape::Str => write!(f, "String"),
            Shape::Bytes => write!(f, "bytes"),
            Shape::Option(s) => write!(f, "Option<{s}>"),
            Shape::Seq(s) => write!(f, "Vec<{s}>"),
            Shape::Map { key, value } => write!(f, "Map<{key}, {value}>"),
            Shape::Tuple(items) => {
                write!(f, "(")?;
                list(f, items)?;
                write!(f, ")")
            }
            Shape::Named(n) => write!(f, "{n}"),
        }
    }
}

/// The first place where `old` and `new` lay bytes out differently, as
/// `(field path, change)`; `None` when every value has the same bytes in both.
/// Container names are ignored; recursion is followed once per pair of names.
pub fn first_difference(old: &Schema, new: &Schema) -> Option<(String, String)> {
    let mut seen = HashSet::new();
    diff_shape(old, &old.root, new, &new.root, String::new(), &mut seen)
        .map(|(path, change)| (path.trim_start_matches('.').to_string(), change))
}

fn diff_shape<'a>(
    os: &'a Schema,
    o: &'a Shape,
    ns: &'a Schema,
    n: &'a Shape,
    path: String,
    seen: &mut HashSet<(&'a str, &'a str)>,
) -> Option<(String, String)> {
    let changed = || Some((path.clone(), format!("{o} became {n}")));
    match (o, n) {
        (Shape::Option(a), Shape::Option(b)) => diff_shape(os, a, ns, b, path, seen),
        (Shape::Seq(a), Shape::Seq(b)) => diff_shape(os, a, ns, b, format!("{path}[]"), seen),
        (Shape::Map { key: ka, value: va }, Shape::Map { key: kb, value: vb }) => {
            diff_shape(os, ka, ns, kb, format!("{path}{{key}}"), seen)
                .or_else(|| diff_shape(os, va, ns, vb, format!("{path}{{value}}"), seen))
        }
        (Shape::Tuple(a), Shape::Tuple(b)) if a.len() == b.len() => {
            diff_list(os, a, ns, b, &path, seen)
        }
        (Shape::Named(a), Shape::Named(b)) => {
            if !seen.insert((a.as_str(), b.as_str())) {
                return None;
            }
            let (Some(da), Some(db)) = (os.def(a), ns.def(b)) else {
                return changed();
            };
            diff_def(os, da, ns, db, path, seen)
        }
        (a, b) if a == b && !matches!(a, Shape::Named(_) | Shape::Tuple(_)) => None,
        _ => changed(),
    }
}

fn diff_list<'a>(
    os: &'a Schema,
    a: &'a [Shape],
    ns: &'a Schema,
    b: &'a [Shape],
    path: &str,
    seen: &mut HashSet<(&'a str, &'a str)>,
) -> Option<(String, String)> {
    a.iter()
        .zip(b)
        .enumerate()
        .find_map(|(i, (x, y))| diff_shape(os, x, ns, y, format!("{path}.{i}"), seen))
}

fn diff_fields<'a>(
    os: &'a Schema,
    a: &'a [Field],
    ns: &'a Schema,
    b: &'a [Field],
    path: &str,
    seen: &mut HashSet<(&'a str, &'a str)>,
) -> Option<(String, String)> {
    for (i, x) in a.iter().enumerate() {
        match b.get(i) {
            Some(y) if y.name == x.name => {
                let p = format!("{path}.{}", x.name);
                if let Some(d) = diff_shape(os, &x.shape, ns, &y.shape, p, seen) {
                    return Some(d);
                }
            }
            Some(y) => {
                return Some((
                    format!("{path}.{}", x.name),
                    format!("field `{}` is now `{}` at this position", x.name, y.name),
                ));
            }
            None => {
                return Some((
                    format!("{path}.{}", x.name),
                    format!("field `{}` was removed", x.name),
                ));
            }
        }
    }
    b.get(a.len()).map(|y| {
        (
            format!("{path}.{}", y.name),
            format!("field `{}` was added", y.name),
        )
    })
}

fn diff_def<'a>(
    os: &'a Schema,
    a: &'a TypeDef,
    ns: &'a Schema,
    b: &'a TypeDef,
    path: String,
    seen: &mut HashSet<(&'a str, &'a str)>,
) -> Option<(String, String)> {
    match (a, b) {
        (TypeDef::UnitStruct, TypeDef::UnitStruct) => None,
        (TypeDef::NewtypeStruct(x), TypeDef::NewtypeStruct(y)) => {
            diff_shape(os, x, ns, y, path, seen)
        }
        (TypeDef::TupleStruct(x), TypeDef::TupleStruct(y)) if x.len() == y.len() => {
            diff_list(os, x, ns, y, &path, seen)
        }
        (TypeDef::Struct(x), TypeDef::Struct(y)) => diff_fields(os, x, ns, y, &path, seen),
        (TypeDef::Enum(x), TypeDef::Enum(y)) => {
            for v in x {
                let p = format!("{path}::{}", v.name);
                let Some(w) = y.iter().find(|w| w.index == v.index) else {
                    return Some((p, format!("variant `{}` was removed", v.name)));
                };
                if w.name != v.name {
                    return Some((
                        p,
                        format!(
                            "variant `{}` is now `{}` at index {}",
                            v.name, w.name, v.index
                        ),
                    ));
                }
                let d = match (&v.body, &w.body) {
                    (VariantBody::Unit, VariantBody::Unit) => None,
                    (VariantBody::Newtype(s), VariantBody::Newtype(t)) => {
                        diff_shape(os, s, ns, t, p.clone(), seen)
                    }
                    (VariantBody::Tuple(s), VariantBody::Tuple(t)) if s.len() == t.len() => {
                        diff_list(os, s, ns, t, &p, seen)
                    }
                    (VariantBody::Struct(s), VariantBody::Struct(t)) => {
                        diff_fields(os, s, ns, t, &p, seen)
                    }
                    _ => Some((
                        p.clone(),
                        format!("the body of variant `{}` changed", v.name),
                    )),
                };
                if d.is_some() {
                    return d;
                }
            }
            y.iter()
                .find(|w| !x.iter().any(|v| v.index == w.index))
                .map(|w| {
                    (
                        format!("{path}::{}", w.name),
                        format!("variant `{}` was added", w.name),
                    )
                })
        }
        _ => Some((path, format!("{} became {}", a.kind(), b.kind()))),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::schema::trace::trace;
    use serde::{Deserialize, Serialize};

    #[derive(Serialize, Deserialize)]
    struct A {
        xs: Vec<(u32, String)>,
    }
    #[derive(Serialize, Deserialize)]
    struct B {
        xs: Vec<(u64, String)>,
    }
    #[derive(Serialize, Deserialize)]
    struct Renamed {
        xs: Vec<(u32, String)>,
    }

    #[test]
    fn first_difference_names_the_path() {
        let (a, b) = (trace::<A>().unwrap(), trace::<B>().unwrap());
        assert_eq!(
            first_difference(&a, &b),
            Some(("xs[].0".to_string(), "u32 became u64".to_string()))
        );
        // A renamed container with the same layout has no difference.
        assert!(a.same_layout(&trace::<Renamed>().unwrap()));
        assert!(!a.same_layout(&b));
    }
}
