//! State as records: every keyed entry and operator-state item rendered through its
//! stored schema, as JSON lines or CSV, filtered by operator, state, key groups or
//! one key.
//!
//! One JSON object per line:
//! - keyed: `{"operator", "state", "kind", "key_group", "key", ["namespace"], "value"}`
//!   where `value` is the value (value, reducing, aggregating), the elements (list),
//!   or the entries (map: an object when user keys are strings or numbers, else
//!   `[user key, value]` pairs); timer states have `"timers"` instead: the timestamps
//!   (or `[timestamp, namespace]` pairs for windowed timers). `namespace` is left out
//!   for plain keyed state.
//! - operator state: `{"operator", "state", "mode", "value"}` per list element, and
//!   `{"operator", "state", "mode": "broadcast", "key", "value"}` per broadcast entry.
//!
//! The same records are what `bootstrap` reads, so a dump is also a savepoint's
//! source.

use std::io::Write;

use flowstate_core::keygroup::{KeyGroupRange, key_group_for_serialized_key};
use flowstate_core::operator::{Item, OperatorStateMode};
use flowstate_core::serializer::StoredFormat;
use flowstate_core::snapshot::{RawEntry, StateMetaInfo, payload};
use flowstate_core::state::StateKind;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::describe::{is_timer_state, kind_name};
use crate::error::{ProcessorError, Result, io_err, state_err};
use crate::reader::Snapshot;

/// One record of a dump (and of a bootstrap's input), fields in this order.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// The operator's uid.
    pub operator: String,
    /// The state's name.
    pub state: String,
    /// Keyed state: `value`, `list`, `map`, `reducing`, `aggregating`, `event
    /// timers`, `processing timers`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Operator state: `list`, `union` or `broadcast`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// Keyed state: the key group the key belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_group: Option<u32>,
    /// Keyed state: the key; broadcast state: the entry's key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<Value>,
    /// Keyed state under a namespace other than the plain one (windows).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<Value>,
    /// Timer states: the timestamps (`[timestamp, namespace]` for windowed timers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timers: Option<Vec<Value>>,
    /// The value, list elements, map entries or operator-state element.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<Value>,
}

/// Which records to dump.
#[derive(Clone, Debug, Default)]
pub struct DumpFilter {
    /// Only this operator.
    pub uid: Option<String>,
    /// Only this state (keyed or operator state).
    pub state: Option<String>,
    /// Only these key groups (keyed state).
    pub key_groups: Option<KeyGroupRange>,
    /// Only this key (as JSON, as dumps show it).
    pub key: Option<Value>,
    /// Leave out keyed state.
    pub no_keyed: bool,
    /// Leave out operator state.
    pub no_operator: bool,
}

/// Output format of a dump.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DumpFormat {
    /// One JSON object per line.
    JsonLines,
    /// CSV with a header: operator, state, kind, key_group, key, namespace, value
    /// (cells that are not strings hold their JSON).
    Csv,
}

/// What a dump wrote.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DumpStats {
    /// Records written.
    pub records: u64,
    /// Keyed entries read (keys × namespaces).
    pub entries: u64,
    /// Bytes of the stored entries and items read.
    pub bytes: u64,
}

/// The formats of one keyed state's parts.
struct StateFormats {
    key: StoredFormat,
    namespace: StoredFormat,
    value: StoredFormat,
    user_key: Option<StoredFormat>,
    void_namespace: bool,
    timers: bool,
}

impl StateFormats {
    fn of(key: &StoredFormat, meta: &StateMetaInfo) -> Self {
        let namespace = StoredFormat::of(&meta.namespace_serializer);
        StateFormats {
            key: key.clone(),
            void_namespace: namespace.describe() == "VoidNamespace",
            namespace,
            value: StoredFormat::of(&meta.value_serializer),
            user_key: meta.user_key_serializer.as_ref().map(StoredFormat::of),
            timers: is_timer_state(&meta.name),
        }
    }
}

fn render(f: &StoredFormat, bytes: &[u8], what: impl FnOnce() -> String) -> Result<Value> {
    f.render(bytes).map_err(|source| ProcessorError::Value {
        what: what(),
        source,
    })
}

/// Renders one keyed entry as its record.
fn keyed_record(
    uid: &str,
    meta: &StateMetaInfo,
    f: &StateFormats,
    kg: u32,
    e: &RawEntry<'_>,
) -> Result<Record> {
    let name = &meta.name;
    let key = render(&f.key, e.key, || {
        format!("key in state `{name}` of `{uid}`")
    })?;
    let what = || format!("state `{name}` of `{uid}` at key {key}");
    let mut r = Record {
        operator: uid.to_string(),
        state: name.clone(),
        kind: Some(kind_name(meta)),
        key_group: Some(kg),
        key: Some(key.clone()),
        ..Record::default()
    };
    if !f.void_namespace {
        r.namespace = Some(render(&f.namespace, e.namespace, what)?);
    }
    let bad = |source: flowstate_core::StateError| ProcessorError::State {
        what: what(),
        source,
    };
    let value = match meta.kind {
        StateKind::List => Value::Array(
            payload::list_items(e.payload, name)
                .map_err(bad)?
                .into_iter()
                .map(|b| render(&f.value, b, what))
                .collect::<Result<_>>()?,
        ),
        StateKind::Map => {
            let uk = f.user_key.as_ref().ok_or_else(|| {
                ProcessorError::Metadata(format!(
                    "map state `{name}` without a user key serializer"
                ))
            })?;
            let mut pairs = Vec::new();
            for (k, v) in payload::map_pairs(e.payload, name).map_err(bad)? {
                pairs.push((render(uk, k, what)?, render(&f.value, v, what)?));
            }
            if f.timers {
                let mut timers: Vec<Value> = pairs
                    .into_iter()
                    .map(|(k, _)| match (f.void_namespace, k) {
                        (true, Value::Array(mut a)) if a.len() == 2 => a.swap_remove(0),
                        (_, k) => k,
                    })
                    .collect();
                // In time order (stored in the order of their encoded bytes).
                timers.sort_by_key(|t| t.as_i64().or_else(|| t.get(0).and_then(Value::as_i64)));
                r.timers = Some(timers);
                return Ok(r);
            }
            map_value(pairs)
        }
        _ => render(&f.value, e.payload, what)?,
    };
    r.value = Some(value);
    Ok(r)
}

/// Map entries as an object when every user key is a string or number, else pairs.
fn map_value(pairs: Vec<(Value, Value)>) -> Value {
    let as_object = pairs
        .iter()
        .all(|(k, _)| matches!(k, Value::String(_) | Value::Number(_)));
    flowstate_core::schema::json::map_json(pairs, as_object)
}

/// Calls `out` with every record `filter` selects, operator by operator (keyed state
/// first), and `progress` with the running totals every 4,096 records.
pub fn records(
    snapshot: &Snapshot,
    filter: &DumpFilter,
    mut out: impl FnMut(Record) -> Result<()>,
    mut progress: impl FnMut(&DumpStats),
) -> Result<DumpStats> {
    let mut stats = DumpStats::default();
    let uids: Vec<String> = match &filter.uid {
        Some(u) => {
            snapshot.operator(u)?;
            vec![u.clone()]
        }
        None => snapshot.uids().into_iter().map(String::from).collect(),
    };
    if let Some(state) = &filter.state {
        let mut known = Vec::new();
        for uid in &uids {
            if let Some(h) = snapshot.keyed_header(uid)? {
                known.extend(h.states.into_iter().map(|m| m.name));
            }
            known.extend(snapshot.merged_operator_states(uid)?.into_keys());
        }
        if !known.contains(state) {
            return Err(ProcessorError::UnknownState {
                uid: filter.uid.clone().unwrap_or_else(|| "*".into()),
                state: state.clone(),
                known: known.join(", "),
            });
        }
    }
    let max_p = snapshot.max_parallelism();
    for uid in &uids {
        if !filter.no_keyed
            && let Some(header) = snapshot.keyed_header(uid)?
        {
            let key_format = StoredFormat::of(&header.key_serializer);
            let formats: std::collections::HashMap<String, StateFormats> = header
                .states
                .iter()
                .map(|m| (m.name.clone(), StateFormats::of(&key_format, m)))
                .collect();
            let mut range = filter.key_groups;
            let key_bytes = match &filter.key {
                Some(k) => {
                    let bytes = key_format
                        .encode(k)
                        .map_err(|source| ProcessorError::Value {
                            what: format!("key {k} of `{uid}`"),
                            source,
                        })?;
                    let kg = key_group_for_serialized_key(&bytes, max_p);
                    let only = KeyGroupRange::new(kg, kg).map_err(state_err("key group"))?;
                    range = Some(range.map_or(only, |r| r.intersection(&only)));
                    Some(bytes)
                }
                None => None,
            };
            if range.is_none_or(|r| !r.is_empty()) {
                snapshot.for_each_entry(uid, range, |meta, kg, e| {
                    if filter.state.as_ref().is_some_and(|s| s != &meta.name)
                        || key_bytes.as_ref().is_some_and(|k| k.as_slice() != e.key)
                    {
                        return Ok(());
                    }
                    let Some(f) = formats.get(&meta.name) else {
                        return Ok(());
                    };
                    out(keyed_record(uid, meta, f, kg, &e)?)?;
                    stats.records += 1;
                    stats.entries += 1;
                    stats.bytes += (e.key.len() + e.namespace.len() + e.payload.len()) as u64;
                    if stats.records.is_multiple_of(4096) {
                        progress(&stats);
                    }
                    Ok(())
                })?;
            }
        }
        if filter.no_operator || filter.key.is_some() || filter.key_groups.is_some() {
            continue;
        }
        for (name, s) in snapshot.merged_operator_states(uid)? {
            if filter.state.as_ref().is_some_and(|f| f != &name) {
                continue;
            }
            let formats: Vec<StoredFormat> = s.serializers.iter().map(StoredFormat::of).collect();
            let what = || format!("operator state `{name}` of `{uid}`");
            let mode = match s.mode {
                OperatorStateMode::SplitDistribute => "list",
                OperatorStateMode::Union => "union",
                OperatorStateMode::Broadcast => "broadcast",
            };
            for item in &s.items {
                let mut r = Record {
                    operator: uid.clone(),
                    state: name.clone(),
                    mode: Some(mode.into()),
                    ..Record::default()
                };
                match (item, formats.as_slice()) {
                    (Item::Element(b), [f, ..]) => {
                        r.value = Some(render(f, b, what)?);
                        stats.bytes += b.len() as u64;
                    }
                    (Item::Pair(k, v), [kf, vf, ..]) => {
                        r.key = Some(render(kf, k, what)?);
                        r.value = Some(render(vf, v, what)?);
                        stats.bytes += (k.len() + v.len()) as u64;
                    }
                    _ => {
                        return Err(ProcessorError::Metadata(format!(
                            "{}: items do not match its serializers",
                            what()
                        )));
                    }
                }
                out(r)?;
                stats.records += 1;
            }
        }
    }
    progress(&stats);
    Ok(stats)
}

/// Writes the records `filter` selects to `w` in `format`.
pub fn dump(
    snapshot: &Snapshot,
    filter: &DumpFilter,
    format: DumpFormat,
    w: &mut dyn Write,
    progress: impl FnMut(&DumpStats),
) -> Result<DumpStats> {
    let werr = || io_err("writing the dump");
    match format {
        DumpFormat::JsonLines => records(
            snapshot,
            filter,
            |r| {
                serde_json::to_writer(&mut *w, &r).map_err(|e| werr()(std::io::Error::from(e)))?;
                w.write_all(b"\n").map_err(werr())
            },
            progress,
        ),
        DumpFormat::Csv => {
            let mut csv = csv::Writer::from_writer(w);
            let columns = [
                "operator",
                "state",
                "kind",
                "key_group",
                "key",
                "namespace",
                "value",
            ];
            csv.write_record(columns).map_err(|e| werr()(csv_io(e)))?;
            let stats = records(
                snapshot,
                filter,
                |r| {
                    let cell = |v: &Option<Value>| match v {
                        None => String::new(),
                        Some(Value::String(s)) => s.clone(),
                        Some(other) => other.to_string(),
                    };
                    let kind = r.kind.clone().or(r.mode.clone()).unwrap_or_default();
                    let value = match &r.timers {
                        Some(t) => Value::Array(t.clone()).to_string(),
                        None => cell(&r.value),
                    };
                    csv.write_record([
                        r.operator.clone(),
                        r.state.clone(),
                        kind,
                        r.key_group.map(|k| k.to_string()).unwrap_or_default(),
                        cell(&r.key),
                        cell(&r.namespace),
                        value,
                    ])
                    .map_err(|e| werr()(csv_io(e)))
                },
                progress,
            )?;
            csv.flush().map_err(werr())?;
            Ok(stats)
        }
    }
}

/// The I/O error inside a CSV error (a closed pipe stays recognisable).
fn csv_io(e: csv::Error) -> std::io::Error {
    match e.into_kind() {
        csv::ErrorKind::Io(e) => e,
        other => std::io::Error::other(format!("{other:?}")),
    }
}
