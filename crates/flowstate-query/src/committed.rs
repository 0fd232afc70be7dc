//! `committed` reads: a key's value as of the last completed checkpoint, read from
//! that checkpoint's files through the state processor (native RocksDB checkpoints
//! are converted once per checkpoint, on the first read of an operator's state).
//!
//! Every process can answer them: the checkpoint directory is shared, so nothing is
//! forwarded. The worker threads are never involved.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use flowstate_core::keygroup::KeyGroupRange;
use flowstate_core::ttl::{StateTtlConfig, StateVisibility};
use flowstate_query_client::QueryableState;
use flowstate_runtime::query::{Committed, QueryError};
use flowstate_state_processor::{DumpFilter, Snapshot, records};
use serde_json::Value;

/// Entries of decoded key groups kept at most; beyond, the cache starts over.
const MAX_CACHED_ENTRIES: usize = 1 << 20;

/// The checkpoint being read, and the key groups of its states read so far.
struct Open {
    id: u64,
    snapshot: Snapshot,
    /// Per (state, key group): each entry's value by its key and namespace (as
    /// [`entry_id`] spells them).
    groups: HashMap<(String, u32), HashMap<String, Value>>,
    entries: usize,
}

/// How a cached entry is found: its key and namespace as JSON text.
fn entry_id(key: &Value, namespace: Option<&Value>) -> String {
    match namespace {
        Some(n) => format!("{key}\u{0}{n}"),
        None => key.to_string(),
    }
}

/// Opens checkpoint `at` for reads of operator `uid` (a native RocksDB checkpoint is
/// converted here, which takes a while).
fn open_for(at: &Committed, uid: &str) -> Result<Open, flowstate_state_processor::ProcessorError> {
    let snapshot = Snapshot::open(&at.path)?;
    snapshot.keyed_header(uid)?;
    Ok(Open {
        id: at.id,
        snapshot,
        groups: HashMap::new(),
        entries: 0,
    })
}

/// Reads keys of the last completed checkpoint, keeping that checkpoint open and the
/// key groups read from it decoded (a checkpoint does not change, so each key group
/// of a state is read from its files once).
///
/// A newer checkpoint is opened on a thread of its own while reads go on in the one
/// open, and replaces it once open: reads never wait for a conversion except the
/// very first, and a checkpoint whose files go while it is opened (retention, as a
/// newer one completes) leaves the older one answering. Every answer names the
/// checkpoint it read.
#[derive(Default)]
pub(crate) struct CommittedReader {
    open: Arc<Mutex<Option<Open>>>,
    /// A newer checkpoint is being opened.
    opening: Arc<AtomicBool>,
}

impl CommittedReader {
    /// Opens `at` on a thread of its own, unless one is opening already.
    fn refresh(&self, at: &Committed, uid: &str) {
        if self.opening.swap(true, Ordering::AcqRel) {
            return;
        }
        let (slot, opening, at, uid) = (
            self.open.clone(),
            self.opening.clone(),
            at.clone(),
            uid.to_string(),
        );
        let spawned = std::thread::Builder::new()
            .name("flowstate-committed".into())
            .spawn(move || {
                match open_for(&at, &uid) {
                    Ok(newer) => {
                        let older = slot
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .replace(newer);
                        drop(older);
                    }
                    Err(e) => tracing::debug!(
                        "checkpoint {} not readable ({e}); the last one answers",
                        at.id
                    ),
                }
                opening.store(false, Ordering::Release);
            });
        if spawned.is_err() {
            self.opening.store(false, Ordering::Release);
        }
    }

    /// The values of `keys` (already in the key type's JSON form, with their key
    /// groups) of `state` in the newest checkpoint open, at most `at` (opening `at`
    /// meanwhile when it is newer), with the id of the checkpoint read; `user_key`
    /// selects one entry of a map, `namespace` the window of window state.
    pub(crate) fn read(
        &self,
        at: &Committed,
        state: &QueryableState,
        ttl: Option<&StateTtlConfig>,
        keys: &[(Value, u32)],
        user_key: Option<&Value>,
        namespace: Option<&Value>,
    ) -> Result<(u64, Vec<Option<Value>>), QueryError> {
        let Some(uid) = &state.operator else {
            return Err(QueryError::BadRequest(
                "the job does not checkpoint: only `live` reads are possible".into(),
            ));
        };
        let unavailable = |e: flowstate_state_processor::ProcessorError| match e {
            // Asking again cannot help (e.g. a native RocksDB checkpoint and a build
            // without RocksDB): an error, not a 503 to retry.
            flowstate_state_processor::ProcessorError::Invalid(_) => {
                QueryError::State(format!("checkpoint {} cannot be read: {e}", at.id))
            }
            _ => QueryError::Unavailable(format!("checkpoint {} cannot be read now: {e}", at.id)),
        };
        let mut slot = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        match slot.as_ref() {
            None => *slot = Some(open_for(at, uid).map_err(unavailable)?),
            Some(o) if o.id < at.id => self.refresh(at, uid),
            Some(_) => {}
        }
        let Some(open) = slot.as_mut() else {
            return Err(QueryError::Unavailable("no checkpoint open".into()));
        };
        let now = ttl.map(|t| t.clock().now_ms());
        let mut out = Vec::with_capacity(keys.len());
        for (key, kg) in keys {
            let group = (state.state.clone(), *kg);
            if !open.groups.contains_key(&group) {
                let decoded =
                    read_group(&open.snapshot, uid, &state.state, *kg).map_err(unavailable)?;
                if open.entries + decoded.len() > MAX_CACHED_ENTRIES {
                    open.groups.clear();
                    open.entries = 0;
                }
                open.entries += decoded.len();
                open.groups.insert(group.clone(), decoded);
            }
            let value = open
                .groups
                .get(&group)
                .and_then(|g| g.get(&entry_id(key, namespace)))
                .cloned()
                .and_then(|v| match (ttl, now) {
                    (Some(t), Some(now)) => live_under_ttl(&state.kind, v, t, now),
                    _ => Some(v),
                });
            out.push(match (value, user_key) {
                (Some(map), Some(uk)) => map_entry(map, uk),
                (v, _) => v,
            });
        }
        Ok((open.id, out))
    }
}

/// Every entry of `state` of operator `uid` in key group `kg`, rendered.
fn read_group(
    snapshot: &Snapshot,
    uid: &str,
    state: &str,
    kg: u32,
) -> Result<HashMap<String, Value>, flowstate_state_processor::ProcessorError> {
    let range = KeyGroupRange::new(kg, kg).map_err(|e| {
        flowstate_state_processor::ProcessorError::Invalid(format!("key group {kg}: {e}"))
    })?;
    let filter = DumpFilter {
        uid: Some(uid.to_string()),
        state: Some(state.to_string()),
        key_groups: Some(range),
        no_operator: true,
        ..DumpFilter::default()
    };
    let mut group = HashMap::new();
    records(
        snapshot,
        &filter,
        |r| {
            if let (Some(key), Some(value)) = (r.key, r.value) {
                group.insert(entry_id(&key, r.namespace.as_ref()), value);
            }
            Ok(())
        },
        |_| {},
    )?;
    Ok(group)
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
