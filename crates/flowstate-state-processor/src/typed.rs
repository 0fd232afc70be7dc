//! Reading state with the user's own types, for programs that post-process state:
//! every entry of one keyed state as `(key, value)` pairs. Values are read through
//! the stored schema when there is one, so a type that evolved since (fields added
//! with defaults, widened numbers, ...) reads old snapshots as a restore would; TTL
//! timestamps are skipped.

use flowstate_core::schema::de::{DecodeError, from_bytes};
use flowstate_core::serializer::StoredFormat;
use flowstate_core::snapshot::payload;
use flowstate_core::state::StateKind;
use serde::de::DeserializeOwned;

use crate::error::{ProcessorError, Result, state_err};
use crate::reader::Snapshot;

fn decode<T: DeserializeOwned>(f: &StoredFormat, bytes: &[u8], what: &str) -> Result<T> {
    let value_err = |source| ProcessorError::Value {
        what: what.to_string(),
        source,
    };
    match f {
        StoredFormat::Serde {
            schema: Some(s), ..
        } => from_bytes(s, bytes).map_err(value_err),
        StoredFormat::Ttl(inner) => decode(inner, bytes.get(8..).unwrap_or_default(), what),
        // Fixed-width integers: rendered as a JSON number, read into any integer type
        // that holds it.
        StoredFormat::FixedInteger(_) => {
            let number = f.render(bytes).map_err(value_err)?;
            serde_json::from_value(number).map_err(|e| {
                value_err(DecodeError {
                    path: None,
                    message: e.to_string(),
                })
            })
        }
        _ => postcard::from_bytes(bytes).map_err(|e| {
            value_err(DecodeError {
                path: None,
                message: e.to_string(),
            })
        }),
    }
}

/// The formats of one state's parts.
struct Formats {
    key: StoredFormat,
    value: StoredFormat,
    user_key: Option<StoredFormat>,
}

/// Calls `f` with the key and payload of every entry of `state` (of kind `kind`).
fn entries(
    snapshot: &Snapshot,
    uid: &str,
    state: &str,
    kinds: &[StateKind],
    mut f: impl FnMut(&Formats, &[u8], &[u8]) -> Result<()>,
) -> Result<()> {
    let header = snapshot
        .keyed_header(uid)?
        .ok_or_else(|| ProcessorError::Invalid(format!("operator `{uid}` has no keyed state")))?;
    let meta = header
        .states
        .iter()
        .find(|m| m.name == state)
        .ok_or_else(|| ProcessorError::UnknownState {
            uid: uid.to_string(),
            state: state.to_string(),
            known: header
                .states
                .iter()
                .map(|m| m.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        })?;
    if !kinds.contains(&meta.kind) {
        return Err(ProcessorError::Invalid(format!(
            "state `{state}` of `{uid}` is a {:?} state",
            meta.kind
        )));
    }
    let formats = Formats {
        key: StoredFormat::of(&header.key_serializer),
        value: StoredFormat::of(&meta.value_serializer),
        user_key: meta.user_key_serializer.as_ref().map(StoredFormat::of),
    };
    snapshot.for_each_entry(uid, None, |m, _, e| {
        if m.name != state {
            return Ok(());
        }
        if !e.namespace.is_empty() {
            return Err(ProcessorError::Invalid(format!(
                "state `{state}` of `{uid}` is namespaced (windows): read it with dump"
            )));
        }
        f(&formats, e.key, e.payload)
    })
}

/// Every entry of value, reducing or aggregating state `state` of operator `uid`, in
/// key-group order.
pub fn read_values<K, V>(snapshot: &Snapshot, uid: &str, state: &str) -> Result<Vec<(K, V)>>
where
    K: DeserializeOwned,
    V: DeserializeOwned,
{
    let mut out = Vec::new();
    let kinds = [
        StateKind::Value,
        StateKind::Reducing,
        StateKind::Aggregating,
    ];
    entries(snapshot, uid, state, &kinds, |f, k, p| {
        out.push((decode(&f.key, k, "key")?, decode(&f.value, p, state)?));
        Ok(())
    })?;
    Ok(out)
}

/// Every entry of list state `state` of operator `uid`: the key and its elements.
pub fn read_lists<K, E>(snapshot: &Snapshot, uid: &str, state: &str) -> Result<Vec<(K, Vec<E>)>>
where
    K: DeserializeOwned,
    E: DeserializeOwned,
{
    let mut out = Vec::new();
    entries(snapshot, uid, state, &[StateKind::List], |f, k, p| {
        let items = payload::list_items(p, state).map_err(state_err(state))?;
        let items = items
            .iter()
            .map(|b| decode(&f.value, b, state))
            .collect::<Result<_>>()?;
        out.push((decode(&f.key, k, "key")?, items));
        Ok(())
    })?;
    Ok(out)
}

/// One key of a map state and its entries.
pub type MapEntry<K, UK, UV> = (K, Vec<(UK, UV)>);

/// Every entry of map state `state` of operator `uid`: the key and its map entries.
pub fn read_maps<K, UK, UV>(
    snapshot: &Snapshot,
    uid: &str,
    state: &str,
) -> Result<Vec<MapEntry<K, UK, UV>>>
where
    K: DeserializeOwned,
    UK: DeserializeOwned,
    UV: DeserializeOwned,
{
    let mut out = Vec::new();
    entries(snapshot, uid, state, &[StateKind::Map], |f, k, p| {
        let uk = f.user_key.as_ref().ok_or_else(|| {
            ProcessorError::Metadata(format!("map state `{state}` without a user key type"))
        })?;
        let pairs = payload::map_pairs(p, state)
            .map_err(state_err(state))?
            .into_iter()
            .map(|(a, b)| Ok((decode(uk, a, state)?, decode(&f.value, b, state)?)))
            .collect::<Result<_>>()?;
        out.push((decode(&f.key, k, "key")?, pairs));
        Ok(())
    })?;
    Ok(out)
}
