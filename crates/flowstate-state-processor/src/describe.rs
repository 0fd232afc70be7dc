//! What a snapshot holds, without the job's code: operators by uid, their keyed states
//! (kind, types and schemas, TTL, entries and bytes per key group), timers, and
//! operator and broadcast state.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use flowstate_core::format::ByteReader;
use flowstate_core::serializer::StoredFormat;
use flowstate_core::snapshot::StateMetaInfo;
use flowstate_core::state::StateKind;
use flowstate_runtime::{EVENT_TIMER_STATE, PROCESSING_TIMER_STATE};
use serde::Serialize;
use serde_json::Value;

use crate::error::Result;
use crate::reader::Snapshot;

/// A whole snapshot described.
#[derive(Clone, Debug, Serialize)]
pub struct Description {
    /// The snapshot's directory.
    pub path: String,
    /// Checkpoint or savepoint id.
    pub id: u64,
    /// `Checkpoint`, `Savepoint` or `NativeSavepoint`.
    pub kind: String,
    /// Key groups.
    pub max_parallelism: u32,
    /// Instances of the job that wrote it.
    pub parallelism: u32,
    /// Its operators, by uid.
    pub operators: Vec<OperatorDescription>,
}

/// One operator.
#[derive(Clone, Debug, Serialize)]
pub struct OperatorDescription {
    /// Its uid (or derived id).
    pub uid: String,
    /// The uid was given by the user (not derived from the operator's position).
    pub user_uid: bool,
    /// Bytes of its snapshot files.
    pub bytes: u64,
    /// `canonical` or `native` keyed snapshots (absent: no keyed state).
    pub keyed_format: Option<String>,
    /// The key type (absent: no keyed state).
    pub key: Option<String>,
    /// The key's stored schema.
    pub key_schema: Option<Value>,
    /// Its keyed states (timers included, as the states they are stored in).
    pub keyed_states: Vec<KeyedStateDescription>,
    /// Its operator (list, union, broadcast) states.
    pub operator_states: Vec<OperatorStateDescription>,
}

/// One keyed state.
#[derive(Clone, Debug, Serialize)]
pub struct KeyedStateDescription {
    /// Its name.
    pub name: String,
    /// `value`, `list`, `map`, `reducing`, `aggregating`, or `event timers` /
    /// `processing timers` for the runtime's timer states.
    pub kind: String,
    /// The namespace type (`VoidNamespace` for plain keyed state, `TimeWindow` ...).
    pub namespace: String,
    /// The value type (list element, map value, accumulator).
    pub value: String,
    /// The map user-key type.
    pub user_key: Option<String>,
    /// Stored with a TTL timestamp.
    pub ttl: bool,
    /// The value's stored schema.
    pub value_schema: Option<Value>,
    /// Entries: (key, namespace) pairs.
    pub entries: u64,
    /// List elements or map entries (timers, for timer states) over all entries.
    pub items: u64,
    /// Bytes of the entries (keys, namespaces and payloads as stored).
    pub bytes: u64,
    /// Entries and bytes per key group that has any.
    pub key_groups: BTreeMap<u32, KeyGroupStats>,
}

/// What one key group holds of one state.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct KeyGroupStats {
    /// Entries.
    pub entries: u64,
    /// Bytes.
    pub bytes: u64,
}

/// One operator state.
#[derive(Clone, Debug, Serialize)]
pub struct OperatorStateDescription {
    /// Its name.
    pub name: String,
    /// `even-split list state`, `union list state` or `broadcast state`.
    pub mode: String,
    /// Element type (lists), or key and value types (broadcast).
    pub types: Vec<String>,
    /// Elements (lists, over all instances) or entries (broadcast, one copy).
    pub items: u64,
}

/// Whether `name` is one of the runtime's timer states (map states whose user keys are
/// `(timestamp, namespace)`).
pub fn is_timer_state(name: &str) -> bool {
    name == EVENT_TIMER_STATE || name == PROCESSING_TIMER_STATE
}

/// The kind of a state as shown: timers by their runtime role.
pub fn kind_name(meta: &StateMetaInfo) -> String {
    if meta.name == EVENT_TIMER_STATE {
        return "event timers".into();
    }
    if meta.name == PROCESSING_TIMER_STATE {
        return "processing timers".into();
    }
    match meta.kind {
        StateKind::Value => "value",
        StateKind::List => "list",
        StateKind::Map => "map",
        StateKind::Reducing => "reducing",
        StateKind::Aggregating => "aggregating",
    }
    .into()
}

/// Describes `snapshot`; `uid` restricts it to one operator. Scans every keyed entry
/// to count them (`stats = false` skips the scan: counts are 0).
pub fn describe(snapshot: &Snapshot, uid: Option<&str>, stats: bool) -> Result<Description> {
    let m = snapshot.metadata();
    let uids: Vec<String> = match uid {
        Some(u) => {
            snapshot.operator(u)?;
            vec![u.to_string()]
        }
        None => snapshot.uids().into_iter().map(String::from).collect(),
    };
    let mut operators = Vec::new();
    for uid in uids {
        operators.push(describe_operator(snapshot, &uid, stats)?);
    }
    Ok(Description {
        path: snapshot.path().display().to_string(),
        id: m.id,
        kind: format!("{:?}", m.kind),
        max_parallelism: m.max_parallelism,
        parallelism: m.parallelism,
        operators,
    })
}

fn describe_operator(snapshot: &Snapshot, uid: &str, stats: bool) -> Result<OperatorDescription> {
    let op = snapshot.operator(uid)?;
    let header = snapshot.keyed_header(uid)?;
    let mut keyed_states: Vec<KeyedStateDescription> = header
        .as_ref()
        .map(|h| h.states.iter().map(describe_state).collect())
        .unwrap_or_default();
    if stats && header.is_some() {
        let index: BTreeMap<String, usize> = keyed_states
            .iter()
            .enumerate()
            .map(|(i, s)| (s.name.clone(), i))
            .collect();
        snapshot.for_each_entry(uid, None, |meta, kg, e| {
            let Some(&i) = index.get(&meta.name) else {
                return Ok(());
            };
            let s = &mut keyed_states[i];
            let bytes = (e.key.len() + e.namespace.len() + e.payload.len()) as u64;
            s.entries += 1;
            s.bytes += bytes;
            if matches!(meta.kind, StateKind::List | StateKind::Map) {
                let mut r = ByteReader::new(e.payload, &meta.name);
                s.items += u64::from(r.varint("count").unwrap_or(0));
            }
            let g = s.key_groups.entry(kg).or_default();
            g.entries += 1;
            g.bytes += bytes;
            Ok(())
        })?;
    }
    let operator_states = snapshot
        .merged_operator_states(uid)?
        .into_iter()
        .map(|(name, s)| OperatorStateDescription {
            name,
            mode: s.mode.describe().into(),
            types: s
                .serializers
                .iter()
                .map(|x| StoredFormat::of(x).describe())
                .collect(),
            items: s.items.len() as u64,
        })
        .collect();
    let keyed_format = op
        .keyed
        .first()
        .map(|h| match h.format {
            flowstate_core::snapshot::SnapshotFormat::Canonical => "canonical",
            flowstate_core::snapshot::SnapshotFormat::RocksDbNative => "native",
        })
        .map(String::from);
    let key_format = header.as_ref().map(|h| StoredFormat::of(&h.key_serializer));
    Ok(OperatorDescription {
        uid: uid.to_string(),
        user_uid: op.user_uid,
        bytes: op.full_size() + op.operator.iter().map(|h| h.size).sum::<u64>(),
        keyed_format,
        key: key_format.as_ref().map(StoredFormat::describe),
        key_schema: key_format.as_ref().and_then(StoredFormat::schema_json),
        keyed_states,
        operator_states,
    })
}

fn describe_state(meta: &StateMetaInfo) -> KeyedStateDescription {
    let value = StoredFormat::of(&meta.value_serializer);
    let (ttl, inner) = match &value {
        StoredFormat::Ttl(inner) => (true, inner.as_ref().clone()),
        v => (false, v.clone()),
    };
    KeyedStateDescription {
        name: meta.name.clone(),
        kind: kind_name(meta),
        namespace: StoredFormat::of(&meta.namespace_serializer).describe(),
        value: inner.describe(),
        user_key: meta
            .user_key_serializer
            .as_ref()
            .map(|u| StoredFormat::of(u).describe()),
        ttl,
        value_schema: inner.schema_json(),
        entries: 0,
        items: 0,
        bytes: 0,
        key_groups: BTreeMap::new(),
    }
}

/// The description as text: one block per operator, one line per state.
pub fn to_text(d: &Description, key_groups: bool) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{} {} at {}: max parallelism {}, written at parallelism {}",
        d.kind, d.id, d.path, d.max_parallelism, d.parallelism
    );
    for o in &d.operators {
        let _ = writeln!(
            s,
            "\noperator {}{}: {} bytes",
            o.uid,
            if o.user_uid { "" } else { " (derived id)" },
            o.bytes
        );
        if let (Some(key), Some(format)) = (&o.key, &o.keyed_format) {
            let _ = writeln!(s, "  keyed by {key} ({format} snapshots)");
        }
        for k in &o.keyed_states {
            let user_key = k
                .user_key
                .as_ref()
                .map_or(String::new(), |u| format!("{u} -> "));
            let ns = if k.namespace == "VoidNamespace" {
                String::new()
            } else {
                format!(" per {}", k.namespace)
            };
            let _ = writeln!(
                s,
                "  {:<17} {:<24} {user_key}{}{}{ns}: {} entries, {} items, {} bytes in {} key groups",
                k.kind,
                k.name,
                k.value,
                if k.ttl { " (ttl)" } else { "" },
                k.entries,
                k.items,
                k.bytes,
                k.key_groups.len()
            );
            if key_groups {
                for (kg, g) in &k.key_groups {
                    let _ = writeln!(
                        s,
                        "      key group {kg}: {} entries, {} bytes",
                        g.entries, g.bytes
                    );
                }
            }
        }
        for st in &o.operator_states {
            let _ = writeln!(
                s,
                "  {:<17} {:<24} {}: {} items",
                st.mode,
                st.name,
                st.types.join(" -> "),
                st.items
            );
        }
    }
    s
}
