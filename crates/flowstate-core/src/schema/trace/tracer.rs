//! The tracing `Deserializer`: hands a type made-up values and records the shapes it
//! asks for; enums one variant per pass, recursion cut by the Rust type on the path.

use std::any::TypeId;
use std::collections::{BTreeMap, HashMap, HashSet};

use serde::de::{self, Visitor};

use super::access::{Elements, EnumTrace};
use super::names::Names;
use super::shape::{merge, merge_all, merge_fields, name_fields, named, same_names, unknown};
use crate::schema::{SCHEMA_VERSION, Schema, Shape, TypeDef, Variant, VariantBody};

/// Deepest nesting traced.
const MAX_DEPTH: usize = 128;

struct EnumProgress {
    /// The enum's name as serde gives it (the key of its recorded variant names).
    names_key: &'static str,
    names: &'static [&'static str],
    bodies: Vec<Option<VariantBody>>,
}

#[derive(Default)]
pub(super) struct Tracer {
    types: BTreeMap<String, TypeDef>,
    enums: BTreeMap<String, EnumProgress>,
    /// Option/sequence/map types being traced on the current path (cut on re-entry).
    open: HashSet<TypeId>,
    /// Variants of each enum on the current path.
    open_variants: HashMap<&'static str, Vec<usize>>,
    depth: usize,
    /// Field names, from serializing the samples.
    pub(super) names: Names,
    /// Whether this pass saw something new.
    pub(super) learned: bool,
}

impl Tracer {
    /// Whether every variant of every enum met so far was traced.
    pub(super) fn complete(&self) -> bool {
        self.enums
            .values()
            .all(|e| e.bodies.iter().all(Option::is_some))
    }

    fn record(&mut self, name: &str, def: TypeDef) -> Result<(), String> {
        match self.types.get_mut(name) {
            None => {
                self.learned = true;
                self.types.insert(name.to_string(), def);
                Ok(())
            }
            Some(old) => {
                let before = old.clone();
                match (old, def) {
                    (TypeDef::UnitStruct, TypeDef::UnitStruct) => {}
                    (TypeDef::NewtypeStruct(a), TypeDef::NewtypeStruct(b)) => merge(a, b)?,
                    (TypeDef::TupleStruct(a), TypeDef::TupleStruct(b)) if a.len() == b.len() => {
                        merge_all(a, b)?
                    }
                    (TypeDef::Struct(a), TypeDef::Struct(b)) if same_names(a, &b) => {
                        merge_fields(a, b)?
                    }
                    _ => return Err(format!("two different types are both named `{name}`")),
                }
                if self.types.get(name) != Some(&before) {
                    self.learned = true;
                }
                Ok(())
            }
        }
    }

    /// The variant names recorded for enum `name` (none before it was met).
    pub(super) fn variant_names(&self, name: &str) -> &'static [&'static str] {
        self.enums.get(name).map(|e| e.names).unwrap_or(&[])
    }

    /// Records what one pass traced of variant `i` of enum `enum_name`, merged with
    /// what earlier passes traced of it.
    pub(super) fn record_variant(
        &mut self,
        enum_name: &str,
        i: usize,
        body: VariantBody,
    ) -> Result<(), String> {
        let Some(e) = self.enums.get_mut(enum_name) else {
            return Err(format!("enum `{enum_name}` not registered"));
        };
        let Some(slot) = e.bodies.get_mut(i) else {
            return Err(format!("variant {i} of `{enum_name}` out of range"));
        };
        let learned = match slot {
            None => {
                *slot = Some(body);
                true
            }
            Some(a) => {
                let before = a.clone();
                match (&mut *a, body) {
                    (VariantBody::Unit, VariantBody::Unit) => {}
                    (VariantBody::Newtype(x), VariantBody::Newtype(y)) => merge(x, y)?,
                    (VariantBody::Tuple(x), VariantBody::Tuple(y)) if x.len() == y.len() => {
                        merge_all(x, y)?
                    }
                    (VariantBody::Struct(x), VariantBody::Struct(y)) if same_names(x, &y) => {
                        merge_fields(x, y)?
                    }
                    _ => return Err(format!("variant {i} of `{enum_name}` changes shape")),
                }
                *a != before
            }
        };
        self.learned |= learned;
        Ok(())
    }

    /// The variant to trace at this occurrence of `name`: the first one not traced
    /// yet, else the first one; never one already on the path (recursion).
    fn choose_variant(&self, name: &str) -> Option<usize> {
        let e = self.enums.get(name)?;
        let open = self.open_variants.get(name);
        let free = |i: &usize| open.is_none_or(|o| !o.contains(i));
        (0..e.names.len())
            .filter(free)
            .find(|&i| e.bodies[i].is_none())
            .or_else(|| (0..e.names.len()).find(free))
    }

    pub(super) fn finish(mut self, root: Shape) -> Result<Schema, String> {
        for (name, def) in &mut self.types {
            if let TypeDef::Struct(fields) = def {
                name_fields(fields, self.names.structs.get(name.as_str()), name)?;
            }
        }
        for (name, e) in &mut self.enums {
            for (i, b) in e.bodies.iter_mut().enumerate() {
                if let Some(VariantBody::Struct(fields)) = b {
                    let key = (e.names_key, i as u32);
                    name_fields(fields, self.names.variants.get(&key), name)?;
                }
            }
        }
        for (name, e) in std::mem::take(&mut self.enums) {
            let variants = e
                .names
                .iter()
                .zip(e.bodies)
                .enumerate()
                .map(|(i, (n, b))| {
                    Ok(Variant {
                        index: u32::try_from(i).map_err(|_| "too many variants".to_string())?,
                        name: (*n).to_string(),
                        body: b.ok_or_else(|| format!("variant `{n}` of `{name}` not traced"))?,
                    })
                })
                .collect::<Result<Vec<_>, String>>()?;
            self.types.insert(name, TypeDef::Enum(variants));
        }
        let schema = Schema {
            v: SCHEMA_VERSION,
            root,
            types: self.types,
        };
        // Anything left unknown (a part only ever met cut) cannot be described.
        schema
            .check()
            .map_err(|_| "part of the type could not be traced".to_string())?;
        Ok(schema)
    }
}

/// A tracing failure (serde's error type of the tracer).
#[derive(Debug)]
pub(super) struct TraceError(pub(super) String);

impl std::fmt::Display for TraceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TraceError {}

impl de::Error for TraceError {
    fn custom<T: std::fmt::Display>(msg: T) -> Self {
        TraceError(format!("the type rejected a made-up value: {msg}"))
    }
}

pub(super) type TResult<T> = std::result::Result<T, TraceError>;

pub(super) fn err<T>(msg: impl Into<String>) -> TResult<T> {
    Err(TraceError(msg.into()))
}

/// Traces one value; writes its shape to `out`.
pub(super) struct TraceDe<'t> {
    pub(super) t: &'t mut Tracer,
    pub(super) out: &'t mut Shape,
}

impl TraceDe<'_> {
    fn leaf(self, shape: Shape) {
        *self.out = shape;
    }

    /// Runs `f` one level deeper (bounded).
    pub(super) fn deeper<R>(
        t: &mut Tracer,
        f: impl FnOnce(&mut Tracer) -> TResult<R>,
    ) -> TResult<R> {
        if t.depth >= MAX_DEPTH {
            return err(format!("nested deeper than {MAX_DEPTH} levels"));
        }
        t.depth += 1;
        let r = f(t);
        t.depth -= 1;
        r
    }

    /// Traces a container of `V::Value` unless the same Rust type is already open on
    /// the path; `f` gets whether to explore.
    fn guarded<'de, V: Visitor<'de>, R>(
        t: &mut Tracer,
        f: impl FnOnce(&mut Tracer, bool) -> TResult<R>,
    ) -> TResult<R> {
        let id = typeid::of::<V::Value>();
        let explore = t.open.insert(id);
        let r = Self::deeper(t, |t| f(t, explore));
        if explore {
            t.open.remove(&id);
        }
        r
    }
}

macro_rules! leaf {
    ($method:ident, $shape:expr, $visit:ident, $value:expr) => {
        fn $method<V: Visitor<'de>>(self, visitor: V) -> TResult<V::Value> {
            self.leaf($shape);
            visitor.$visit($value)
        }
    };
}

impl<'de> de::Deserializer<'de> for TraceDe<'_> {
    type Error = TraceError;

    fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> TResult<V::Value> {
        err(
            "the type is not fixed-layout (it asks for any value: untagged, flatten or self-describing)",
        )
    }

    leaf!(deserialize_bool, Shape::Bool, visit_bool, false);
    leaf!(deserialize_i8, Shape::I8, visit_i8, 0);
    leaf!(deserialize_i16, Shape::I16, visit_i16, 0);
    leaf!(deserialize_i32, Shape::I32, visit_i32, 0);
    leaf!(deserialize_i64, Shape::I64, visit_i64, 0);
    leaf!(deserialize_i128, Shape::I128, visit_i128, 0);
    leaf!(deserialize_u8, Shape::U8, visit_u8, 0);
    leaf!(deserialize_u16, Shape::U16, visit_u16, 0);
    leaf!(deserialize_u32, Shape::U32, visit_u32, 0);
    leaf!(deserialize_u64, Shape::U64, visit_u64, 0);
    leaf!(deserialize_u128, Shape::U128, visit_u128, 0);
    leaf!(deserialize_f32, Shape::F32, visit_f32, 0.0);
    leaf!(deserialize_f64, Shape::F64, visit_f64, 0.0);
    leaf!(deserialize_char, Shape::Char, visit_char, 'a');
    leaf!(deserialize_str, Shape::Str, visit_str, "");
    leaf!(deserialize_string, Shape::Str, visit_str, "");
    leaf!(deserialize_bytes, Shape::Bytes, visit_bytes, &[]);
    leaf!(deserialize_byte_buf, Shape::Bytes, visit_bytes, &[]);

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> TResult<V::Value> {
        self.leaf(Shape::Unit);
        visitor.visit_unit()
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> TResult<V::Value> {
        let TraceDe { t, out } = self;
        let mut inner = unknown();
        let v = TraceDe::guarded::<V, _>(t, |t, explore| {
            if explore {
                visitor.visit_some(TraceDe { t, out: &mut inner })
            } else {
                visitor.visit_none()
            }
        })?;
        *out = Shape::Option(Box::new(inner));
        Ok(v)
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> TResult<V::Value> {
        self.t
            .record(name, TypeDef::UnitStruct)
            .map_err(TraceError)?;
        *self.out = Shape::Named(name.to_string());
        visitor.visit_unit()
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> TResult<V::Value> {
        let TraceDe { t, out } = self;
        let mut inner = unknown();
        let v = TraceDe::deeper(t, |t| {
            visitor.visit_newtype_struct(TraceDe { t, out: &mut inner })
        })?;
        t.record(name, TypeDef::NewtypeStruct(inner))
            .map_err(TraceError)?;
        *out = Shape::Named(name.to_string());
        Ok(v)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> TResult<V::Value> {
        let TraceDe { t, out } = self;
        let mut item = [unknown()];
        let v = TraceDe::guarded::<V, _>(t, |t, explore| {
            let n = usize::from(explore);
            visitor.visit_seq(Elements {
                t,
                shapes: &mut item[..n],
                next: 0,
            })
        })?;
        let [item] = item;
        *out = Shape::Seq(Box::new(item));
        Ok(v)
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, len: usize, visitor: V) -> TResult<V::Value> {
        let TraceDe { t, out } = self;
        let mut shapes = vec![unknown(); len];
        let v = visitor.visit_seq(Elements {
            t,
            shapes: &mut shapes,
            next: 0,
        })?;
        *out = Shape::Tuple(shapes);
        Ok(v)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        len: usize,
        visitor: V,
    ) -> TResult<V::Value> {
        let TraceDe { t, out } = self;
        let mut shapes = vec![unknown(); len];
        let v = visitor.visit_seq(Elements {
            t: &mut *t,
            shapes: &mut shapes,
            next: 0,
        })?;
        t.record(name, TypeDef::TupleStruct(shapes))
            .map_err(TraceError)?;
        *out = Shape::Named(name.to_string());
        Ok(v)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> TResult<V::Value> {
        let TraceDe { t, out } = self;
        let mut kv = [unknown(), unknown()];
        let v = TraceDe::guarded::<V, _>(t, |t, explore| {
            let n = if explore { 2 } else { 0 };
            visitor.visit_map(Elements {
                t,
                shapes: &mut kv[..n],
                next: 0,
            })
        })?;
        let [key, value] = kv;
        *out = Shape::Map {
            key: Box::new(key),
            value: Box::new(value),
        };
        Ok(v)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> TResult<V::Value> {
        let TraceDe { t, out } = self;
        let mut shapes = vec![unknown(); fields.len()];
        let v = visitor.visit_seq(Elements {
            t: &mut *t,
            shapes: &mut shapes,
            next: 0,
        })?;
        t.record(name, TypeDef::Struct(named(fields, shapes)))
            .map_err(TraceError)?;
        *out = Shape::Named(name.to_string());
        Ok(v)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> TResult<V::Value> {
        let TraceDe { t, out } = self;
        if variants.is_empty() {
            return err(format!("enum `{name}` has no variants"));
        }
        match t.enums.get(name) {
            Some(e) if e.names != variants => {
                return err(format!("two different enums are both named `{name}`"));
            }
            Some(_) => {}
            None => {
                t.learned = true;
                t.enums.insert(
                    name.to_string(),
                    EnumProgress {
                        names_key: name,
                        names: variants,
                        bodies: vec![None; variants.len()],
                    },
                );
            }
        }
        let Some(index) = t.choose_variant(name) else {
            return err(format!("every variant of `{name}` recurses into itself"));
        };
        t.open_variants.entry(name).or_default().push(index);
        let v = TraceDe::deeper(t, |t| visitor.visit_enum(EnumTrace { t, name, index }));
        if let Some(open) = t.open_variants.get_mut(name) {
            open.pop();
        }
        *out = Shape::Named(name.to_string());
        v
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, _visitor: V) -> TResult<V::Value> {
        err("an identifier outside an enum or struct")
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, _visitor: V) -> TResult<V::Value> {
        err("the type skips values it does not know (not fixed-layout)")
    }

    fn is_human_readable(&self) -> bool {
        // As postcard: types such as `IpAddr` choose their compact form.
        false
    }
}
