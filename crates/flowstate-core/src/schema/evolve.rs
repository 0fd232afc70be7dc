//! Schema evolution: whether a type may take over bytes stored with another schema,
//! decided before any state is touched, and the reader that migrates them.
//!
//! The decision is made by the same code that later migrates: sample values of the
//! stored schema are synthesized as bytes and read into the new type through
//! [`super::de`]. The samples cover every variant of every enum and enter every
//! option, sequence and map (cut only where a type recurses), so every field and
//! variant the stored data can hold is tried once. What the new type's `Deserialize`
//! accepts there (defaults, aliases, ignored fields, added variants) it accepts for
//! every stored value; what the strict leaves refuse (narrowing, changed kinds, a
//! removed variant, a field added without a default) is reported with its field path.

use std::collections::{HashMap, HashSet};

use serde::de::DeserializeOwned;

use super::de::{DecodeError, from_bytes};
use super::{Schema, Shape, TypeDef, VariantBody};
use crate::format::put_varint;

/// Checks that every value stored with `old` can be read as `T`; the first
/// problem found is returned with its field path.
pub fn check<T: DeserializeOwned>(old: &Schema) -> Result<(), DecodeError> {
    let mut synth = Synth::new(old);
    // Each round covers at least one variant not covered before, or ends.
    let rounds = 1 + old
        .types
        .values()
        .map(|d| match d {
            TypeDef::Enum(vs) => vs.len(),
            _ => 0,
        })
        .sum::<usize>();
    for round in 0..rounds {
        let before = synth.covered.len();
        let mut bytes = Vec::new();
        synth
            .value(&old.root, &mut bytes, 0)
            .map_err(|message| DecodeError {
                path: None,
                message,
            })?;
        from_bytes::<T>(old, &bytes)?;
        if round > 0 && synth.covered.len() == before {
            break;
        }
    }
    Ok(())
}

/// Most nesting synthesized (stored schemas come from files).
const MAX_DEPTH: usize = 256;

/// Writes postcard bytes of sample values of a schema.
struct Synth<'s> {
    schema: &'s Schema,
    /// Enum variants written so far, by (enum, variant index).
    covered: HashSet<(&'s str, u32)>,
    /// Named types on the current path.
    open: Vec<&'s str>,
    /// Names each named type can reach (itself included when recursive).
    reach: HashMap<&'s str, HashSet<&'s str>>,
}

impl<'s> Synth<'s> {
    fn new(schema: &'s Schema) -> Self {
        let mut direct: HashMap<&str, HashSet<&str>> = HashMap::new();
        for (name, def) in &schema.types {
            let mut names = HashSet::new();
            def.visit_shapes(&mut |s| {
                s.visit_names(&mut |n| {
                    names.insert(n);
                })
            });
            direct.insert(name.as_str(), names);
        }
        // Transitive closure (schemas are small).
        let mut reach = direct.clone();
        loop {
            let mut grew = false;
            for name in direct.keys() {
                let current: Vec<&str> = reach[name].iter().copied().collect();
                for n in current {
                    let more: Vec<&str> = direct
                        .get(n)
                        .map(|s| s.iter().copied().collect())
                        .unwrap_or_default();
                    if let Some(set) = reach.get_mut(name) {
                        for m in more {
                            grew |= set.insert(m);
                        }
                    }
                }
            }
            if !grew {
                break;
            }
        }
        Synth {
            schema,
            covered: HashSet::new(),
            open: Vec::new(),
            reach,
        }
    }

    /// Whether values of `shape` may contain a type already open on the path.
    fn recurses(&self, shape: &'s Shape) -> bool {
        let mut names = HashSet::new();
        shape.visit_names(&mut |n| {
            names.insert(n);
        });
        names.iter().any(|n| {
            self.open.contains(n)
                || self
                    .reach
                    .get(n)
                    .is_some_and(|r| r.iter().any(|m| self.open.contains(m)))
        })
    }

    fn body_recurses(&self, body: &'s VariantBody) -> bool {
        let mut any = false;
        body.visit_shapes(&mut |s| any |= self.recurses(s));
        any
    }

    /// Writes one sample value of each shape, in order.
    fn values(
        &mut self,
        shapes: Vec<&'s Shape>,
        out: &mut Vec<u8>,
        d: usize,
    ) -> Result<(), String> {
        shapes.into_iter().try_for_each(|s| self.value(s, out, d))
    }

    fn value(&mut self, shape: &'s Shape, out: &mut Vec<u8>, depth: usize) -> Result<(), String> {
        if depth > MAX_DEPTH {
            return Err(format!(
                "stored schema nests deeper than {MAX_DEPTH} levels"
            ));
        }
        let d = depth + 1;
        match shape {
            Shape::Unit => {}
            Shape::Bool
            | Shape::I8
            | Shape::I16
            | Shape::I32
            | Shape::I64
            | Shape::I128
            | Shape::U8
            | Shape::U16
            | Shape::U32
            | Shape::U64
            | Shape::U128
            | Shape::Str
            | Shape::Bytes => out.push(0),
            Shape::F32 => out.extend_from_slice(&[0; 4]),
            Shape::F64 => out.extend_from_slice(&[0; 8]),
            Shape::Char => out.extend_from_slice(&[1, b'a']),
            // An option's tag and a one-element sequence's count are both the byte 1.
            Shape::Option(inner) | Shape::Seq(inner) => {
                if self.recurses(inner) {
                    out.push(0);
                } else {
                    out.push(1);
                    self.value(inner, out, d)?;
                }
            }
            Shape::Map { key, value } => {
                if self.recurses(key) || self.recurses(value) {
                    out.push(0);
                } else {
                    out.push(1);
                    self.value(key, out, d)?;
                    self.value(value, out, d)?;
                }
            }
            Shape::Tuple(items) => self.values(items.iter().collect(), out, d)?,
            Shape::Named(name) => {
                let def = self
                    .schema
                    .def(name)
                    .ok_or_else(|| format!("type `{name}` is not in the stored schema"))?;
                self.open.push(name);
                let r = self.def(name, def, out, d);
                self.open.pop();
                r?;
            }
        }
        Ok(())
    }

    fn def(
        &mut self,
        name: &'s str,
        def: &'s TypeDef,
        out: &mut Vec<u8>,
        d: usize,
    ) -> Result<(), String> {
        let TypeDef::Enum(vs) = def else {
            let mut shapes = Vec::new();
            def.visit_shapes(&mut |s| shapes.push(s));
            return self.values(shapes, out, d);
        };
        // The first variant not covered yet that does not recurse, else the first that
        // does not recurse.
        let ok = |v: &&'s super::Variant| !self.body_recurses(&v.body);
        let v = vs
            .iter()
            .filter(ok)
            .find(|v| !self.covered.contains(&(name, v.index)))
            .or_else(|| vs.iter().find(ok))
            .ok_or_else(|| format!("every variant of `{name}` recurses"))?;
        self.covered.insert((name, v.index));
        put_varint(out, v.index);
        let mut shapes = Vec::new();
        v.body.visit_shapes(&mut |s| shapes.push(s));
        self.values(shapes, out, d)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, dead_code)]
    use super::*;
    use crate::schema::trace::trace;
    use serde::{Deserialize, Serialize};
    use std::collections::BTreeMap;

    mod v1 {
        use super::*;
        #[derive(Serialize, Deserialize, Debug, PartialEq, Clone)]
        pub enum Status {
            Open,
            Closed { at: u32 },
        }
        #[derive(Serialize, Deserialize, Debug, PartialEq, Clone)]
        pub struct Line {
            pub sku: String,
            pub qty: u32,
            pub price: f32,
        }
        #[derive(Serialize, Deserialize, Debug, PartialEq, Clone)]
        pub struct Order {
            pub id: u32,
            pub lines: Vec<Line>,
            pub status: Status,
            pub notes: BTreeMap<String, i32>,
            pub legacy: bool,
        }
    }

    mod v2 {
        use super::*;
        #[derive(Serialize, Deserialize, Debug, PartialEq, Clone)]
        pub enum Status {
            Open,
            Closed { at: u64 },
            Cancelled(String),
        }
        #[derive(Serialize, Deserialize, Debug, PartialEq, Clone)]
        pub struct Line {
            pub qty: u64,
            #[serde(alias = "sku")]
            pub item: String,
            pub price: f64,
            #[serde(default)]
            pub discount: Option<u8>,
        }
        #[derive(Serialize, Deserialize, Debug, PartialEq, Clone)]
        pub struct Order {
            pub id: Option<u64>,
            pub lines: Vec<Line>,
            pub status: Status,
            pub notes: BTreeMap<String, i64>,
            #[serde(default)]
            pub region: String,
        }
    }

    #[test]
    fn every_allowed_change_at_once_migrates_values() {
        let old = trace::<v1::Order>().unwrap();
        check::<v2::Order>(&old).unwrap();
        let o = v1::Order {
            id: 7,
            lines: vec![v1::Line {
                sku: "a".into(),
                qty: 3,
                price: 1.5,
            }],
            status: v1::Status::Closed { at: 9 },
            notes: BTreeMap::from([("n".into(), -4)]),
            legacy: true,
        };
        let bytes = postcard::to_allocvec(&o).unwrap();
        let n: v2::Order = from_bytes(&old, &bytes).unwrap();
        assert_eq!(
            n,
            v2::Order {
                id: Some(7),
                lines: vec![v2::Line {
                    qty: 3,
                    item: "a".into(),
                    price: 1.5,
                    discount: None
                }],
                status: v2::Status::Closed { at: 9 },
                notes: BTreeMap::from([("n".into(), -4)]),
                region: String::new(),
            }
        );
    }

    #[test]
    fn disallowed_changes_name_the_field() {
        #[derive(Deserialize)]
        struct NoDefault {
            id: u32,
            lines: Vec<v1::Line>,
            status: v1::Status,
            notes: BTreeMap<String, i32>,
            added: u8,
        }
        #[derive(Deserialize)]
        enum StatusLess {
            Open,
        }
        #[derive(Deserialize)]
        struct Removed {
            id: u32,
            lines: Vec<v1::Line>,
            status: StatusLess,
        }
        #[derive(Deserialize)]
        struct NarrowLine {
            sku: String,
            qty: u16,
            price: f32,
        }
        #[derive(Deserialize)]
        struct Narrow {
            id: u32,
            lines: Vec<NarrowLine>,
            status: v1::Status,
        }
        let old = trace::<v1::Order>().unwrap();
        let e = check::<NoDefault>(&old).unwrap_err();
        assert_eq!(e.path(), "");
        assert!(
            e.message
                .contains("field `added` was added without a default"),
            "{e}"
        );
        let e = check::<Removed>(&old).unwrap_err();
        assert_eq!(e.path(), "status::Closed", "{e}");
        assert!(e.message.contains("variant `Closed` was removed"), "{e}");
        let e = check::<Narrow>(&old).unwrap_err();
        assert_eq!(e.path(), "lines[].qty");
        assert!(
            e.message.contains("stored u32 cannot be read as u16"),
            "{e}"
        );
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        fn status() -> impl Strategy<Value = v1::Status> {
            prop_oneof![
                Just(v1::Status::Open),
                any::<u32>().prop_map(|at| v1::Status::Closed { at }),
            ]
        }

        fn order() -> impl Strategy<Value = v1::Order> {
            let line = (".{0,8}", any::<u32>(), any::<f32>())
                .prop_map(|(sku, qty, price)| v1::Line { sku, qty, price });
            (
                any::<u32>(),
                prop::collection::vec(line, 0..4),
                status(),
                prop::collection::btree_map(".{0,4}", any::<i32>(), 0..4),
                any::<bool>(),
            )
                .prop_map(|(id, lines, status, notes, legacy)| v1::Order {
                    id,
                    lines,
                    status,
                    notes,
                    legacy,
                })
        }

        fn expected(o: &v1::Order) -> v2::Order {
            v2::Order {
                id: Some(u64::from(o.id)),
                lines: o
                    .lines
                    .iter()
                    .map(|l| v2::Line {
                        qty: u64::from(l.qty),
                        item: l.sku.clone(),
                        price: f64::from(l.price),
                        discount: None,
                    })
                    .collect(),
                status: match o.status {
                    v1::Status::Open => v2::Status::Open,
                    v1::Status::Closed { at } => v2::Status::Closed { at: u64::from(at) },
                },
                notes: o
                    .notes
                    .iter()
                    .map(|(k, v)| (k.clone(), i64::from(*v)))
                    .collect(),
                region: String::new(),
            }
        }

        proptest! {
            /// Every old value migrates to exactly the value the rules say (NaN
            /// prices compare by bits).
            #[test]
            fn migration_matches_the_model(o in order()) {
                let old = trace::<v1::Order>().unwrap();
                let bytes = postcard::to_allocvec(&o).unwrap();
                let got: v2::Order = from_bytes(&old, &bytes).unwrap();
                let want = expected(&o);
                prop_assert_eq!(format!("{got:?}"), format!("{want:?}"));
            }

            /// Arbitrary bytes through a schema are a value or an error, never a panic;
            /// what reads as the old type reads as the new one too.
            #[test]
            fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
                let old = trace::<v1::Order>().unwrap();
                let as_old = from_bytes::<v1::Order>(&old, &bytes);
                let as_new = from_bytes::<v2::Order>(&old, &bytes);
                prop_assert_eq!(as_old.is_ok(), as_new.is_ok());
                if let Ok(o) = as_old {
                    let direct = postcard::from_bytes::<v1::Order>(&bytes).ok();
                    prop_assert_eq!(format!("{direct:?}"), format!("{:?}", Some(o)));
                }
            }
        }
    }
}
