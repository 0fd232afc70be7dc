//! What the tracer knows of a type's shape: the placeholder for a part not traced
//! yet, merging what each traced occurrence teaches, and naming a struct's fields.

use crate::schema::{Field, Shape};

/// A shape not traced yet (a cut option, sequence or map).
pub(super) fn unknown() -> Shape {
    Shape::Named(String::new())
}

/// Whether `s` is the placeholder of [`unknown`].
pub(super) fn is_unknown(s: &Shape) -> bool {
    matches!(s, Shape::Named(n) if n.is_empty())
}

/// Merges what one occurrence of a type taught into what is known.
pub(super) fn merge(into: &mut Shape, new: Shape) -> Result<(), String> {
    if is_unknown(&new) {
        return Ok(());
    }
    if is_unknown(into) {
        *into = new;
        return Ok(());
    }
    match (into, new) {
        (Shape::Option(a), Shape::Option(b)) | (Shape::Seq(a), Shape::Seq(b)) => merge(a, *b),
        (Shape::Map { key, value }, Shape::Map { key: k, value: v }) => {
            merge(key, *k)?;
            merge(value, *v)
        }
        (Shape::Tuple(a), Shape::Tuple(b)) if a.len() == b.len() => {
            a.iter_mut().zip(b).try_for_each(|(x, y)| merge(x, y))
        }
        (a, b) if *a == b => Ok(()),
        (a, b) => Err(format!(
            "two different types are both named `{a}`/`{b}` (give one a #[serde(rename)])"
        )),
    }
}

/// [`merge`] of each shape into the one at its position.
pub(super) fn merge_all(into: &mut [Shape], new: Vec<Shape>) -> Result<(), String> {
    into.iter_mut().zip(new).try_for_each(|(x, y)| merge(x, y))
}

/// Whether two traces of a struct (or struct variant) list the same fields.
pub(super) fn same_names(a: &[Field], b: &[Field]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.name == y.name)
}

/// [`merge`] of each field's shape into the field at its position.
pub(super) fn merge_fields(into: &mut [Field], new: Vec<Field>) -> Result<(), String> {
    into.iter_mut()
        .zip(new)
        .try_for_each(|(x, y)| merge(&mut x.shape, y.shape))
}

/// Fields of the shapes a struct's `Deserialize` read, in order. `FIELDS` lists every
/// accepted name (aliases too), so it names the fields only when it is as long as
/// what was read; otherwise names come from serializing the sample ([`name_fields`]).
pub(super) fn named(fields: &[&str], mut shapes: Vec<Shape>) -> Vec<Field> {
    let read = shapes.iter().take_while(|s| !is_unknown(s)).count();
    shapes.truncate(read);
    let exact = fields.len() == read;
    shapes
        .into_iter()
        .enumerate()
        .map(|(i, shape)| Field {
            name: if exact {
                fields[i].to_string()
            } else {
                String::new()
            },
            shape,
        })
        .collect()
}

/// Gives `fields` the names serialization used, when it recorded them.
pub(super) fn name_fields(
    fields: &mut [Field],
    recorded: Option<&Vec<&'static str>>,
    container: &str,
) -> Result<(), String> {
    match recorded {
        Some(names) if names.len() == fields.len() => {
            for (f, n) in fields.iter_mut().zip(names) {
                f.name = (*n).to_string();
            }
        }
        _ if fields.iter().all(|f| !f.name.is_empty()) => {}
        _ => {
            return Err(format!(
                "the field names of `{container}` could not be told apart from its aliases"
            ));
        }
    }
    Ok(())
}
