//! Bootstrapping a new savepoint from records: keyed value, list and map state, event
//! and processing timers, operator list and broadcast state, from Rust iterators with the
//! user's types or from JSON lines (the records `dump` writes, after declarations of
//! each state's types).
//!
//! JSON lines: a declaration per state before its records,
//! `{"declare": {"operator": "counts", "state": "count", "kind": "value", "key": "str",
//! "value": "u64"}}` (`kind`: `value`, `list`, `map` (also `"user_key"`), or for
//! operator state `"mode": "list" | "union"` with `"value"`; types are shapes of the
//! stored schema format, `docs/formats.md`, or whole schemas `{"v": 1, "root": ..,
//! "types": {..}}`), then records as dumps write them. Timer records
//! (`{"operator", "state": "_timer_state/event", "key", "timers": [ts, ..]}`) need
//! only a declared key: any keyed state of the operator declares it.

use std::collections::BTreeMap;
use std::path::Path;

use flowstate_core::format::{put_varint, put_vbytes};
use flowstate_core::operator::{EncodedState, Item, OperatorStateMode};
use flowstate_core::serializer::{SerdeSerializer, SerializerSnapshot, TypeSerializer};
use flowstate_core::snapshot::StateMetaInfo;
use flowstate_core::state::{StateKind, VoidNamespace};
use flowstate_runtime::{EVENT_TIMER_STATE, PROCESSING_TIMER_STATE};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{ProcessorError, Result};

mod json_lines;
use crate::writer::{SavepointWriter, Written};

/// The contents of one keyed state per serialized key.
#[derive(Debug)]
enum Contents {
    Value(BTreeMap<Vec<u8>, Vec<u8>>),
    List(BTreeMap<Vec<u8>, Vec<Vec<u8>>>),
    Map(BTreeMap<Vec<u8>, BTreeMap<Vec<u8>, Vec<u8>>>),
}

#[derive(Debug)]
struct KeyedState {
    meta: StateMetaInfo,
    contents: Contents,
}

#[derive(Debug, Default)]
struct Operator {
    key: Option<SerializerSnapshot>,
    keyed: BTreeMap<String, KeyedState>,
    operator: BTreeMap<String, EncodedState>,
    /// Broadcast states: key and value serializers, entries by key bytes.
    broadcast: BTreeMap<String, Broadcast>,
}

/// A broadcast state being bootstrapped.
type Broadcast = ([SerializerSnapshot; 2], BTreeMap<Vec<u8>, Vec<u8>>);

/// A savepoint being bootstrapped. Records of the same key and state merge: a value
/// is replaced, list elements append, map entries are added.
#[derive(Debug)]
pub struct Bootstrap {
    max_parallelism: u32,
    parallelism: u32,
    operators: BTreeMap<String, Operator>,
}

fn ser<T: Serialize + DeserializeOwned + 'static>(v: &T, what: &str) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    SerdeSerializer::<T>::new()
        .serialize_into(v, &mut out)
        .map_err(|e| ProcessorError::Invalid(format!("{what}: {e}")))?;
    Ok(out)
}

fn timer_meta(name: &str) -> StateMetaInfo {
    StateMetaInfo::new::<VoidNamespace>(
        name,
        StateKind::Map,
        SerdeSerializer::<()>::new().snapshot(),
        Some(SerdeSerializer::<(i64, VoidNamespace)>::new().snapshot()),
    )
}

impl Bootstrap {
    /// A savepoint of `max_parallelism` key groups written for `parallelism`.
    pub fn new(max_parallelism: u32, parallelism: u32) -> Result<Self> {
        SavepointWriter::new(max_parallelism, parallelism)?;
        Ok(Bootstrap {
            max_parallelism,
            parallelism,
            operators: BTreeMap::new(),
        })
    }

    fn operator(&mut self, uid: &str, key: Option<SerializerSnapshot>) -> Result<&mut Operator> {
        let op = self.operators.entry(uid.to_string()).or_default();
        match (&op.key, key) {
            (None, k) => op.key = k,
            (Some(a), Some(b)) if *a != b => {
                return Err(ProcessorError::Invalid(format!(
                    "operator `{uid}`: keyed states declared with different key types"
                )));
            }
            _ => {}
        }
        Ok(op)
    }

    fn keyed_state(
        &mut self,
        uid: &str,
        key: SerializerSnapshot,
        meta: StateMetaInfo,
    ) -> Result<&mut Contents> {
        let op = self.operator(uid, Some(key))?;
        let name = meta.name.clone();
        let kind = meta.kind;
        let s = op.keyed.entry(name.clone()).or_insert_with(|| KeyedState {
            contents: match kind {
                StateKind::List => Contents::List(BTreeMap::new()),
                StateKind::Map => Contents::Map(BTreeMap::new()),
                _ => Contents::Value(BTreeMap::new()),
            },
            meta: meta.clone(),
        });
        if s.meta != meta {
            return Err(ProcessorError::Invalid(format!(
                "state `{name}` of `{uid}` declared twice with different types"
            )));
        }
        Ok(&mut s.contents)
    }

    /// The contents of a state declared with the user's types (the default
    /// serializer's snapshots, exactly what the job's descriptors store).
    fn typed<K, V>(
        &mut self,
        uid: &str,
        state: &str,
        kind: StateKind,
        user_key: Option<SerializerSnapshot>,
    ) -> Result<&mut Contents>
    where
        K: Serialize + DeserializeOwned + 'static,
        V: Serialize + DeserializeOwned + 'static,
    {
        let value = SerdeSerializer::<V>::new().snapshot();
        let meta = StateMetaInfo::new::<VoidNamespace>(state, kind, value, user_key);
        self.keyed_state(uid, SerdeSerializer::<K>::new().snapshot(), meta)
    }

    /// Value state `state` of operator `uid`: one value per key.
    pub fn value_state<K, V>(
        &mut self,
        uid: &str,
        state: &str,
        entries: impl IntoIterator<Item = (K, V)>,
    ) -> Result<()>
    where
        K: Serialize + DeserializeOwned + 'static,
        V: Serialize + DeserializeOwned + 'static,
    {
        let Contents::Value(m) = self.typed::<K, V>(uid, state, StateKind::Value, None)? else {
            return Err(ProcessorError::Invalid(format!(
                "`{state}` is not a value state"
            )));
        };
        for (k, v) in entries {
            m.insert(ser(&k, state)?, ser(&v, state)?);
        }
        Ok(())
    }

    /// List state `state` of operator `uid`: elements per key.
    pub fn list_state<K, V>(
        &mut self,
        uid: &str,
        state: &str,
        entries: impl IntoIterator<Item = (K, Vec<V>)>,
    ) -> Result<()>
    where
        K: Serialize + DeserializeOwned + 'static,
        V: Serialize + DeserializeOwned + 'static,
    {
        let Contents::List(m) = self.typed::<K, V>(uid, state, StateKind::List, None)? else {
            return Err(ProcessorError::Invalid(format!(
                "`{state}` is not a list state"
            )));
        };
        for (k, vs) in entries {
            let list = m.entry(ser(&k, state)?).or_default();
            for v in vs {
                list.push(ser(&v, state)?);
            }
        }
        Ok(())
    }

    /// Map state `state` of operator `uid`: entries per key.
    pub fn map_state<K, UK, UV>(
        &mut self,
        uid: &str,
        state: &str,
        entries: impl IntoIterator<Item = (K, Vec<(UK, UV)>)>,
    ) -> Result<()>
    where
        K: Serialize + DeserializeOwned + 'static,
        UK: Serialize + DeserializeOwned + 'static,
        UV: Serialize + DeserializeOwned + 'static,
    {
        let user_key = Some(SerdeSerializer::<UK>::new().snapshot());
        let Contents::Map(m) = self.typed::<K, UV>(uid, state, StateKind::Map, user_key)? else {
            return Err(ProcessorError::Invalid(format!(
                "`{state}` is not a map state"
            )));
        };
        for (k, pairs) in entries {
            let map = m.entry(ser(&k, state)?).or_default();
            for (uk, uv) in pairs {
                map.insert(ser(&uk, state)?, ser(&uv, state)?);
            }
        }
        Ok(())
    }

    /// Event-time (`event = true`) or processing-time timers of operator `uid`, per
    /// key; they fire in the restored job as if it had registered them.
    pub fn timers<K>(
        &mut self,
        uid: &str,
        event: bool,
        timers: impl IntoIterator<Item = (K, i64)>,
    ) -> Result<()>
    where
        K: Serialize + DeserializeOwned + 'static,
    {
        let key = SerdeSerializer::<K>::new().snapshot();
        let entries: Vec<(Vec<u8>, i64)> = timers
            .into_iter()
            .map(|(k, t)| Ok((ser(&k, "timer key")?, t)))
            .collect::<Result<_>>()?;
        self.raw_timers(uid, key, event, entries)
    }

    fn raw_timers(
        &mut self,
        uid: &str,
        key: SerializerSnapshot,
        event: bool,
        timers: Vec<(Vec<u8>, i64)>,
    ) -> Result<()> {
        let name = if event {
            EVENT_TIMER_STATE
        } else {
            PROCESSING_TIMER_STATE
        };
        let Contents::Map(m) = self.keyed_state(uid, key, timer_meta(name))? else {
            return Err(ProcessorError::Invalid("timer state is a map".into()));
        };
        for (k, t) in timers {
            m.entry(k)
                .or_default()
                .insert(ser(&(t, VoidNamespace), "timer")?, Vec::new());
        }
        Ok(())
    }

    /// Operator list state `state` of `uid` (even-split; `union` for union state).
    pub fn operator_list_state<T>(
        &mut self,
        uid: &str,
        state: &str,
        union: bool,
        items: impl IntoIterator<Item = T>,
    ) -> Result<()>
    where
        T: Serialize + DeserializeOwned + 'static,
    {
        let items = items
            .into_iter()
            .map(|t| Ok(Item::Element(ser(&t, state)?.into())))
            .collect::<Result<Vec<_>>>()?;
        self.raw_operator_list(
            uid,
            state,
            union,
            SerdeSerializer::<T>::new().snapshot(),
            items,
        )
    }

    /// Broadcast state `state` of `uid` (every instance restores all of it; a later
    /// entry of the same key replaces an earlier one).
    pub fn broadcast_state<K, V>(
        &mut self,
        uid: &str,
        state: &str,
        entries: impl IntoIterator<Item = (K, V)>,
    ) -> Result<()>
    where
        K: Serialize + DeserializeOwned + 'static,
        V: Serialize + DeserializeOwned + 'static,
    {
        let serializers = [
            SerdeSerializer::<K>::new().snapshot(),
            SerdeSerializer::<V>::new().snapshot(),
        ];
        let entries = entries
            .into_iter()
            .map(|(k, v)| Ok((ser(&k, state)?, ser(&v, state)?)))
            .collect::<Result<Vec<_>>>()?;
        self.raw_broadcast(uid, state, serializers, entries)
    }

    fn raw_broadcast(
        &mut self,
        uid: &str,
        state: &str,
        serializers: [SerializerSnapshot; 2],
        entries: Vec<(Vec<u8>, Vec<u8>)>,
    ) -> Result<()> {
        let op = self.operator(uid, None)?;
        let (declared, map) = op
            .broadcast
            .entry(state.to_string())
            .or_insert_with(|| (serializers.clone(), BTreeMap::new()));
        if *declared != serializers {
            return Err(ProcessorError::Invalid(format!(
                "broadcast state `{state}` of `{uid}` declared twice with different types"
            )));
        }
        map.extend(entries);
        Ok(())
    }

    fn raw_operator_list(
        &mut self,
        uid: &str,
        state: &str,
        union: bool,
        serializer: SerializerSnapshot,
        items: Vec<Item>,
    ) -> Result<()> {
        let mode = if union {
            OperatorStateMode::Union
        } else {
            OperatorStateMode::SplitDistribute
        };
        let op = self.operator(uid, None)?;
        let s = op
            .operator
            .entry(state.to_string())
            .or_insert_with(|| EncodedState {
                mode,
                serializers: vec![serializer.clone()],
                items: Vec::new(),
            });
        if s.mode != mode || s.serializers != [serializer] {
            return Err(ProcessorError::Invalid(format!(
                "operator state `{state}` of `{uid}` declared twice with different types"
            )));
        }
        s.items.extend(items);
        Ok(())
    }

    /// Writes the savepoint into the checkpoint directory `dir` and verifies it.
    pub fn write(self, dir: &Path) -> Result<Written> {
        let mut w = SavepointWriter::new(self.max_parallelism, self.parallelism)?;
        for (uid, op) in self.operators {
            let o = w.operator(&uid)?;
            if let Some(key) = op.key.filter(|_| !op.keyed.is_empty()) {
                o.keyed(key)?;
            }
            for (name, s) in op.operator {
                o.operator_state(&name, s);
            }
            // Entries sorted by key bytes, as every instance of a job writes them.
            for (name, (serializers, map)) in op.broadcast {
                let items = map
                    .into_iter()
                    .map(|(k, v)| Item::Pair(k.into(), v.into()))
                    .collect();
                o.operator_state(
                    &name,
                    EncodedState {
                        mode: OperatorStateMode::Broadcast,
                        serializers: serializers.to_vec(),
                        items,
                    },
                );
            }
            for s in op.keyed.into_values() {
                let id = w.operator(&uid)?.state(s.meta)?;
                let mut payload = Vec::new();
                let put = |w: &mut SavepointWriter, k: &[u8], p: &[u8]| w.put(&uid, id, k, &[], p);
                match s.contents {
                    Contents::Value(m) => {
                        for (k, v) in m {
                            put(&mut w, &k, &v)?;
                        }
                    }
                    Contents::List(m) => {
                        for (k, items) in m {
                            payload.clear();
                            put_varint(&mut payload, items.len() as u32);
                            for i in &items {
                                put_vbytes(&mut payload, i).map_err(too_big)?;
                            }
                            put(&mut w, &k, &payload)?;
                        }
                    }
                    Contents::Map(m) => {
                        for (k, pairs) in m {
                            payload.clear();
                            put_varint(&mut payload, pairs.len() as u32);
                            for (a, b) in &pairs {
                                put_vbytes(&mut payload, a).map_err(too_big)?;
                                put_vbytes(&mut payload, b).map_err(too_big)?;
                            }
                            put(&mut w, &k, &payload)?;
                        }
                    }
                }
            }
        }
        w.write(dir)
    }
}

fn too_big(e: flowstate_core::StateError) -> ProcessorError {
    ProcessorError::Invalid(e.to_string())
}
