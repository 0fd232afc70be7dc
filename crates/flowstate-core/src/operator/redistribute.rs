//! How a restore with another parallelism redistributes operator state: every old
//! instance's states merged, then list items split evenly (or handed to all, for union
//! state) over the new instances.

use std::collections::BTreeMap;

use crate::error::{StateError, StateResult};

use super::file::{EncodedState, OperatorStateMode};

/// Merges the operator states of every old instance (`(path, states)` in instance
/// order, read lazily; the first error stops the merge) as a restore sees them before redistributing: list items concatenated in
/// instance order, broadcast state once (identical everywhere: the lowest instance's
/// copy). A state whose mode or serializers differ between instances is refused (its
/// items could not be read with one serializer).
pub fn merge_operator_states(
    files: impl IntoIterator<Item = StateResult<(String, Vec<(String, EncodedState)>)>>,
) -> StateResult<BTreeMap<String, EncodedState>> {
    let mut merged: BTreeMap<String, EncodedState> = BTreeMap::new();
    for file in files {
        let (path, states) = file?;
        let path = path.as_str();
        for (name, enc) in states {
            match merged.get_mut(&name) {
                None => {
                    merged.insert(name, enc);
                }
                Some(m) if m.mode != enc.mode => {
                    return Err(StateError::corrupt(
                        path,
                        format!(
                            "state `{name}` is {} here but {} elsewhere",
                            enc.mode.describe(),
                            m.mode.describe()
                        ),
                    ));
                }
                Some(m) if m.serializers != enc.serializers => {
                    return Err(StateError::corrupt(
                        path,
                        format!("state `{name}` has other serializers here than elsewhere"),
                    ));
                }
                Some(m) if m.mode == OperatorStateMode::Broadcast => {}
                Some(m) => m.items.extend(enc.items),
            }
        }
    }
    Ok(merged)
}

/// The part of `n` items that instance `index` of `parts` receives under even-split
/// redistribution: contiguous, sizes differing by at most one, larger parts first.
pub fn even_split(n: usize, parts: usize, index: usize) -> std::ops::Range<usize> {
    let parts = parts.max(1);
    let (base, rem) = (n / parts, n % parts);
    let start = index * base + index.min(rem);
    let len = base + usize::from(index < rem);
    start.min(n)..(start + len).min(n)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::operator::Item;
    use crate::serializer::SerializerSnapshot;
    use bytes::Bytes;

    fn state(mode: OperatorStateMode, identity: &str, items: &[u8]) -> EncodedState {
        EncodedState {
            mode,
            serializers: vec![SerializerSnapshot {
                identity: identity.into(),
                version: 1,
                schema: vec![],
            }],
            items: items
                .iter()
                .map(|b| Item::Element(Bytes::from(vec![*b])))
                .collect(),
        }
    }

    #[test]
    fn merging_concatenates_lists_keeps_one_broadcast_copy_and_refuses_disagreement() {
        let file = |path: &str, states: Vec<(&str, EncodedState)>| {
            Ok((
                path.to_string(),
                states
                    .into_iter()
                    .map(|(n, s)| (n.to_string(), s))
                    .collect::<Vec<_>>(),
            ))
        };
        let split = OperatorStateMode::SplitDistribute;
        let bcast = OperatorStateMode::Broadcast;
        let merged = merge_operator_states([
            file(
                "0",
                vec![
                    ("l", state(split, "a", &[1, 2])),
                    ("b", state(bcast, "a", &[9])),
                ],
            ),
            file(
                "1",
                vec![
                    ("l", state(split, "a", &[3])),
                    ("b", state(bcast, "a", &[9])),
                ],
            ),
        ])
        .unwrap();
        assert_eq!(merged["l"], state(split, "a", &[1, 2, 3]));
        assert_eq!(merged["b"], state(bcast, "a", &[9]));
        for other in [
            state(OperatorStateMode::Union, "a", &[3]),
            state(split, "b", &[3]),
        ] {
            let e = merge_operator_states([
                file("0", vec![("l", state(split, "a", &[1]))]),
                file("1", vec![("l", other)]),
            ])
            .unwrap_err();
            assert!(
                matches!(e, StateError::CorruptSnapshot { ref path, .. } if path == "1"),
                "{e}"
            );
        }
    }

    #[test]
    fn even_split_is_contiguous_and_balanced() {
        assert_eq!(even_split(2, 2, 0), 0..1);
        assert_eq!(even_split(2, 2, 1), 1..2);
        for n in 0..40 {
            for p in 1..9 {
                let mut next = 0;
                for i in 0..p {
                    let r = even_split(n, p, i);
                    assert_eq!(r.start, next);
                    assert!(r.len() == n / p || r.len() == n / p + 1);
                    next = r.end;
                }
                assert_eq!(next, n);
            }
        }
    }
}
