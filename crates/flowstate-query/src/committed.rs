//! `committed` reads: a key's value as of the last completed checkpoint, read from
//! that checkpoint's files through the state processor (native RocksDB checkpoints
//! are converted once per checkpoint, on the first read of an operator's state).
//!
//! Every process can answer them: the checkpoint directory is shared, so nothing is
//! forwarded. The worker threads are never involved.

use std::sync::{Mutex, PoisonError};

use flowstate_core::ttl::{StateTtlConfig, StateVisibility};
use flowstate_query_client::QueryableState;
use flowstate_runtime::query::{Committed, QueryError};
use flowstate_state_processor::{DumpFilter, Snapshot, records};
use serde_json::Value;

/// Reads keys of the last completed checkpoint, keeping that checkpoint open.
#[derive(Default)]
pub(crate) struct CommittedReader {
    open: Mutex<Option<(u64, Snapshot)>>,
}

impl CommittedReader {
    /// The values of `keys` (already in the key type's JSON form) of `state` in
    /// checkpoint `at`; `user_key` selects one entry of a map, `namespace` the window
    /// of window state.
    pub(crate) fn read(
        &self,
        at: &Committed,
        state: &QueryableState,
        ttl: Option<&StateTtlConfig>,
        keys: &[Value],
        user_key: Option<&Value>,
        namespace: Option<&Value>,
    ) -> Result<Vec<Option<Value>>, QueryError> {
        let Some(uid) = &state.operator else {
            return Err(QueryError::BadRequest(
                "the job does not checkpoint: only `live` reads are possible".into(),
            ));
        };
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        if open.as_ref().is_none_or(|(id, _)| *id != at.id) {
            // The previous checkpoint's scratch copies (native RocksDB) go with it.
            *open = None;
            let snapshot = Snapshot::open(&at.path).map_err(|e| {
                QueryError::Unavailable(format!("checkpoint {} cannot be read now: {e}", at.id))
            })?;
            *open = Some((at.id, snapshot));
        }
        let Some((_, snapshot)) = open.as_ref() else {
            return Err(QueryError::Unavailable("no checkpoint open".into()));
        };
        let now = ttl.map(|t| t.clock().now_ms());
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            let filter = DumpFilter {
                uid: Some(uid.clone()),
                state: Some(state.state.clone()),
                key: Some(key.clone()),
                no_operator: true,
                ..DumpFilter::default()
            };
            let mut found = None;
            records(
                snapshot,
                &filter,
                |r| {
                    if r.namespace.as_ref() == namespace {
                        found = r.value;
                    }
                    Ok(())
                },
                |_| {},
            )
            .map_err(|e| {
                QueryError::Unavailable(format!("checkpoint {} cannot be read now: {e}", at.id))
            })?;
            let value = found.and_then(|v| match (ttl, now) {
                (Some(t), Some(now)) => live_under_ttl(&state.kind, v, t, now),
                _ => Some(v),
            });
            out.push(match (value, user_key) {
                (Some(map), Some(uk)) => map_entry(map, uk),
                (v, _) => v,
            });
        }
        Ok(out)
    }
}

/// One TTL-stored value (`{"ttl_last_access_ms", "value"}`) as a read sees it at
/// `now`: its value, or nothing once expired (unless the state returns expired
/// values not cleaned up yet).
fn unwrap_ttl(v: Value, ttl: &StateTtlConfig, now: i64) -> Option<Value> {
    let Value::Object(mut m) = v else {
        return Some(v);
    };
    let ts = m.get("ttl_last_access_ms").and_then(Value::as_i64)?;
    let inner = m.remove("value")?;
    let expired = ttl.is_expired(ts, now);
    (!expired || ttl.visibility() == StateVisibility::ReturnExpiredIfNotCleanedUp).then_some(inner)
}

/// A stored value of a TTL state as a read sees it: list elements and map entries
/// expire one by one; an empty result is nothing stored.
fn live_under_ttl(kind: &str, v: Value, ttl: &StateTtlConfig, now: i64) -> Option<Value> {
    match (kind, v) {
        ("list", Value::Array(items)) => {
            let kept: Vec<Value> = items
                .into_iter()
                .filter_map(|i| unwrap_ttl(i, ttl, now))
                .collect();
            (!kept.is_empty()).then_some(Value::Array(kept))
        }
        ("map", Value::Object(m)) => {
            let kept: serde_json::Map<String, Value> = m
                .into_iter()
                .filter_map(|(k, v)| unwrap_ttl(v, ttl, now).map(|v| (k, v)))
                .collect();
            (!kept.is_empty()).then_some(Value::Object(kept))
        }
        ("map", Value::Array(pairs)) => {
            let kept: Vec<Value> = pairs
                .into_iter()
                .filter_map(|p| match p {
                    Value::Array(mut kv) if kv.len() == 2 => {
                        let v = kv.pop()?;
                        let k = kv.pop()?;
                        unwrap_ttl(v, ttl, now).map(|v| Value::Array(vec![k, v]))
                    }
                    other => Some(other),
                })
                .collect();
            (!kept.is_empty()).then_some(Value::Array(kept))
        }
        (_, v) => unwrap_ttl(v, ttl, now),
    }
}

/// One user key's value of a map rendered as a whole (an object keyed by the user
/// key's text, or `[key, value]` pairs).
fn map_entry(map: Value, user_key: &Value) -> Option<Value> {
    match map {
        Value::Object(mut m) => {
            let text = match user_key {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            m.remove(&text)
        }
        Value::Array(pairs) => pairs.into_iter().find_map(|p| match p {
            Value::Array(mut kv) if kv.len() == 2 && &kv[0] == user_key => kv.pop(),
            _ => None,
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn map_entries_are_found_in_objects_and_pairs() {
        let obj = json!({"1": "a", "x": "b"});
        assert_eq!(map_entry(obj.clone(), &json!(1)), Some(json!("a")));
        assert_eq!(map_entry(obj.clone(), &json!("x")), Some(json!("b")));
        assert_eq!(map_entry(obj, &json!("y")), None);
        let pairs = json!([[[1, 2], "p"], [[3, 4], "q"]]);
        assert_eq!(map_entry(pairs.clone(), &json!([3, 4])), Some(json!("q")));
        assert_eq!(map_entry(pairs, &json!([5, 6])), None);
    }

    #[test]
    fn expired_values_read_as_nothing_stored() -> Result<(), flowstate_core::StateError> {
        let ttl = StateTtlConfig::new(std::time::Duration::from_millis(100))?;
        let at = |ts: i64, v: Value| json!({"ttl_last_access_ms": ts, "value": v});
        assert_eq!(
            live_under_ttl("value", at(1_000, json!(5)), &ttl, 1_050),
            Some(json!(5))
        );
        assert_eq!(
            live_under_ttl("value", at(1_000, json!(5)), &ttl, 1_100),
            None
        );
        let list = json!([at(1_000, json!(1)), at(1_060, json!(2))]);
        assert_eq!(live_under_ttl("list", list, &ttl, 1_120), Some(json!([2])));
        let map = json!({"a": at(1_000, json!(1)), "b": at(1_000, json!(2))});
        assert_eq!(live_under_ttl("map", map, &ttl, 2_000), None);
        Ok(())
    }
}
