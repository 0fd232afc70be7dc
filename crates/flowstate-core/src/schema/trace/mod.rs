//! Derives a [`Schema`] from a serde type by tracing its `Deserialize` implementation,
//! and caches it per type (tracing runs once per process and type, never on the hot
//! path).
//!
//! The tracer is a serde `Deserializer` that hands the type made-up values (zeros,
//! empty strings, one element per sequence) and records what the type asks for. An
//! enum is traced one variant per pass; passes repeat until every variant of every
//! enum met anywhere has been seen. Recursion is cut where the type allows it: an
//! option, sequence or map of a Rust type already being traced higher up is given as
//! `None` or empty, and a recursive enum picks a variant not already on the path.
//!
//! Why not `serde-reflection` (evaluated first: it is the established tool for
//! exactly this): once it knows a field's format it stops exploring inside options,
//! sequences and maps, so an enum nested in them is traced with its first variant
//! only, and its documented remedy is a separate `trace_simple_type::<E>()` for every
//! enum type, which a state backend that only holds `T` cannot do. The tracer here
//! follows the same principle, with the cut decided by the Rust type on the path
//! instead of by what is already known.
//!
//! Types that cannot be traced are those that are not fixed-layout serde types:
//! `deserialize_any` users (`#[serde(flatten)]`, untagged enums, `serde_json::Value`)
//! and types whose `Deserialize` rejects the made-up values (`NonZeroU32`). They keep
//! working; their states store no schema and restore as before (same type name and
//! version, no evolution).

mod access;
mod names;
mod shape;
mod tracer;

use std::any::TypeId;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use serde::Serialize;
use serde::de::DeserializeOwned;

use self::shape::{merge, unknown};
use self::tracer::{TraceDe, Tracer};
use super::{Schema, SchemaError};

/// A traced schema and its stored JSON, shared by every serializer of the type.
#[derive(Debug)]
pub struct Traced {
    /// The schema.
    pub schema: Schema,
    /// [`Schema::to_json`] of it.
    pub json: Vec<u8>,
}

type Cache = Mutex<HashMap<TypeId, Result<Arc<Traced>, SchemaError>>>;

fn cache() -> &'static Cache {
    static CACHE: OnceLock<Cache> = OnceLock::new();
    CACHE.get_or_init(Default::default)
}

/// The schema of `T` (traced on first use, then cached for the process).
pub fn schema_of<T: Serialize + DeserializeOwned + 'static>() -> Result<Arc<Traced>, SchemaError> {
    let id = TypeId::of::<T>();
    if let Some(r) = cache().lock().ok().and_then(|c| c.get(&id).cloned()) {
        return r;
    }
    // A `Deserialize` that panics on a made-up value (instead of returning an error)
    // must cost the type its schema, not the job.
    let traced = std::panic::catch_unwind(trace::<T>)
        .unwrap_or_else(|_| {
            Err(untraceable::<T>(
                "its Deserialize panicked on a made-up value".into(),
            ))
        })
        .map(|schema| {
            Arc::new(Traced {
                json: schema.to_json(),
                schema,
            })
        });
    if let Ok(mut c) = cache().lock() {
        c.insert(id, traced.clone());
    }
    traced
}

fn untraceable<T>(reason: String) -> SchemaError {
    SchemaError::Untraceable {
        type_name: crate::serializer::short_type_name(std::any::type_name::<T>()),
        reason,
    }
}

/// Most passes tried (each traces one enum variant at least).
const MAX_PASSES: usize = 10_000;

/// Traces `T` (uncached).
pub fn trace<T: Serialize + DeserializeOwned>() -> Result<Schema, SchemaError> {
    let fail = untraceable::<T>;
    let mut t = Tracer::default();
    let mut root = unknown();
    for _ in 0..MAX_PASSES {
        t.learned = false;
        let mut shape = unknown();
        let sample = T::deserialize(TraceDe {
            t: &mut t,
            out: &mut shape,
        })
        .map_err(|e| fail(e.0))?;
        t.names.record(&sample).map_err(fail)?;
        merge(&mut root, shape).map_err(fail)?;
        if !t.learned && t.complete() {
            return t.finish(root).map_err(fail);
        }
    }
    Err(fail("too many enum variants to trace".into()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;
    use crate::schema::{Field, Shape, TypeDef, VariantBody};
    use serde::{Deserialize, Serialize};

    #[derive(Serialize, Deserialize)]
    enum Inner {
        A,
        B(u32),
        C { x: String },
    }

    #[derive(Serialize, Deserialize)]
    struct Outer {
        id: u64,
        tags: Vec<Option<Inner>>,
        by_name: std::collections::BTreeMap<String, Inner>,
        pair: (i32, [u8; 2]),
    }

    #[derive(Serialize, Deserialize)]
    enum Tree {
        Node(Box<Tree>, Box<Tree>),
        Leaf(u8),
    }

    #[derive(Serialize, Deserialize)]
    struct Dir {
        name: String,
        children: Vec<Dir>,
        parent: Option<Box<Dir>>,
    }

    #[test]
    fn traces_nested_enums_completely() {
        let s = trace::<Outer>().unwrap();
        assert_eq!(s.root, Shape::Named("Outer".into()));
        let Some(TypeDef::Enum(vs)) = s.def("Inner") else {
            panic!("{s:?}")
        };
        let names: Vec<_> = vs.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(names, ["A", "B", "C"]);
        assert_eq!(
            vs[2].body,
            VariantBody::Struct(vec![Field {
                name: "x".into(),
                shape: Shape::Str
            }])
        );
        let Some(TypeDef::Struct(fs)) = s.def("Outer") else {
            panic!()
        };
        assert_eq!(fs[1].shape.to_string(), "Vec<Option<Inner>>");
        assert_eq!(fs[2].shape.to_string(), "Map<String, Inner>");
        assert_eq!(fs[3].shape.to_string(), "(i32, (u8, u8))");
        // Stored JSON reads back to the same schema.
        assert_eq!(Schema::from_json(&s.to_json()).unwrap(), s);
    }

    #[test]
    fn aliases_do_not_become_fields() {
        #[derive(Serialize, Deserialize)]
        struct Renamed {
            #[serde(alias = "zzz", alias = "aaa")]
            total: u32,
            label: String,
        }
        #[derive(Serialize, Deserialize)]
        enum E {
            S {
                #[serde(alias = "old")]
                new: u8,
            },
        }
        let s = trace::<Renamed>().unwrap();
        let Some(TypeDef::Struct(fs)) = s.def("Renamed") else {
            panic!("{s:?}")
        };
        let names: Vec<_> = fs.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["total", "label"]);
        let e = trace::<E>().unwrap();
        let Some(TypeDef::Enum(vs)) = e.def("E") else {
            panic!()
        };
        assert_eq!(
            vs[0].body,
            VariantBody::Struct(vec![Field {
                name: "new".into(),
                shape: Shape::U8
            }])
        );
    }

    #[test]
    fn traces_recursive_and_primitive_types() {
        let t = trace::<Tree>().unwrap();
        assert!(matches!(t.def("Tree"), Some(TypeDef::Enum(v)) if v.len() == 2));
        let d = trace::<Dir>().unwrap();
        let Some(TypeDef::Struct(fs)) = d.def("Dir") else {
            panic!()
        };
        assert_eq!(fs[1].shape.to_string(), "Vec<Dir>");
        assert_eq!(fs[2].shape.to_string(), "Option<Dir>");
        assert_eq!(trace::<u64>().unwrap().root, Shape::U64);
        assert_eq!(
            trace::<std::collections::HashMap<String, Vec<f32>>>()
                .unwrap()
                .root
                .to_string(),
            "Map<String, Vec<f32>>"
        );
    }

    #[test]
    fn untraceable_types_are_errors_not_panics() {
        #[derive(Serialize, Deserialize)]
        #[serde(untagged)]
        #[allow(dead_code)]
        enum Loose {
            A(u8),
            B(String),
        }
        assert!(matches!(
            trace::<std::num::NonZeroU32>(),
            Err(SchemaError::Untraceable { .. })
        ));
        assert!(matches!(
            trace::<Loose>(),
            Err(SchemaError::Untraceable { .. })
        ));
    }

    #[test]
    fn a_panicking_deserialize_costs_the_schema_not_the_process() {
        #[derive(Serialize)]
        struct Touchy(u32);
        impl<'de> serde::Deserialize<'de> for Touchy {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let v = u32::deserialize(d)?;
                assert!(v > 0, "zero is not allowed");
                Ok(Touchy(v))
            }
        }
        assert!(matches!(
            schema_of::<Touchy>(),
            Err(SchemaError::Untraceable { .. })
        ));
    }

    #[test]
    fn malformed_stored_schemas_are_refused() {
        for bad in [
            &b"{"[..],
            br#"{"v":1,"root":{"named":"X"},"types":{}}"#,
            br#"{"v":99,"root":"u8","types":{}}"#,
            br#"{"v":1,"root":{"named":"E"},"types":{"E":{"enum":[{"index":0,"name":"a","body":"unit"},{"index":0,"name":"b","body":"unit"}]}}}"#,
        ] {
            assert!(Schema::from_json(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }
}
