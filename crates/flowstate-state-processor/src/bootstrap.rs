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
use std::io::BufRead;
use std::path::Path;

use flowstate_core::format::{put_varint, put_vbytes};
use flowstate_core::operator::{EncodedState, Item, OperatorStateMode};
use flowstate_core::schema::Schema;
use flowstate_core::serializer::{
    SerdeSerializer, SerializerSnapshot, StoredFormat, TypeSerializer,
};
use flowstate_core::snapshot::StateMetaInfo;
use flowstate_core::state::{StateKind, VoidNamespace};
use flowstate_runtime::{EVENT_TIMER_STATE, PROCESSING_TIMER_STATE};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::{ProcessorError, Result};
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

    /// Reads JSON lines (see the module docs); `source` names the input in errors.
    /// Returns the records read.
    pub fn json_lines(&mut self, input: impl BufRead, source: &str) -> Result<u64> {
        let mut declared: BTreeMap<(String, String), Declared> = BTreeMap::new();
        let mut keys: BTreeMap<String, StoredFormat> = BTreeMap::new();
        let mut n = 0;
        for (i, line) in input.lines().enumerate() {
            let at = || format!("{source}:{}", i + 1);
            let line = line.map_err(|e| ProcessorError::Input {
                what: at(),
                message: e.to_string(),
            })?;
            if line.trim().is_empty() {
                continue;
            }
            let bad = |message: String| ProcessorError::Input {
                what: at(),
                message,
            };
            let v: Value = serde_json::from_str(&line).map_err(|e| bad(e.to_string()))?;
            if let Some(d) = v.get("declare") {
                let (uid, state, decl) = declare(d).map_err(bad)?;
                if let Declared::Keyed { key, meta, .. } = &decl {
                    self.keyed_state(&uid, key.clone(), meta.as_ref().clone())
                        .map_err(|e| bad(e.to_string()))?;
                    keys.insert(uid.clone(), StoredFormat::of(key));
                }
                declared.insert((uid, state), decl);
                continue;
            }
            let field = |name: &str| {
                v.get(name)
                    .and_then(Value::as_str)
                    .map(String::from)
                    .ok_or_else(|| bad(format!("a record needs a string `{name}`")))
            };
            let (uid, state) = (field("operator")?, field("state")?);
            n += 1;
            if state == EVENT_TIMER_STATE || state == PROCESSING_TIMER_STATE {
                let key_format = keys
                    .get(&uid)
                    .ok_or_else(|| bad(format!("declare a keyed state of `{uid}` first")))?;
                let key = encode(key_format, v.get("key"), "key").map_err(bad)?;
                let ts = v
                    .get("timers")
                    .and_then(Value::as_array)
                    .ok_or_else(|| bad("a timer record needs `timers`: [timestamps]".into()))?
                    .iter()
                    .map(|t| {
                        t.as_i64()
                            .ok_or_else(|| bad(format!("timer {t} is not an i64")))
                    })
                    .collect::<Result<Vec<_>>>()?;
                let key_snapshot = self
                    .operators
                    .get(&uid)
                    .and_then(|o| o.key.clone())
                    .ok_or_else(|| bad(format!("`{uid}` has no key type")))?;
                self.raw_timers(
                    &uid,
                    key_snapshot,
                    state == EVENT_TIMER_STATE,
                    ts.into_iter().map(|t| (key.clone(), t)).collect(),
                )?;
                continue;
            }
            let decl = declared
                .get(&(uid.clone(), state.clone()))
                .ok_or_else(|| bad(format!("state `{state}` of `{uid}` is not declared")))?;
            match decl {
                Declared::Keyed {
                    key,
                    meta,
                    value,
                    user_key,
                } => {
                    let k = encode(&StoredFormat::of(key), v.get("key"), "key").map_err(bad)?;
                    let value_json = v.get("value");
                    let contents = self.keyed_state(&uid, key.clone(), meta.as_ref().clone())?;
                    match contents {
                        Contents::Value(m) => {
                            m.insert(k, encode(value, value_json, "value").map_err(bad)?);
                        }
                        Contents::List(m) => {
                            let items = value_json
                                .and_then(Value::as_array)
                                .ok_or_else(|| bad("a list record's `value` is an array".into()))?;
                            let list = m.entry(k).or_default();
                            for item in items {
                                list.push(encode(value, Some(item), "element").map_err(bad)?);
                            }
                        }
                        Contents::Map(m) => {
                            let uk = user_key
                                .as_ref()
                                .ok_or_else(|| bad("no user key type".into()))?;
                            let map = m.entry(k).or_default();
                            for (a, b) in map_entries(value_json).map_err(bad)? {
                                map.insert(
                                    encode(uk, Some(&a), "user key").map_err(bad)?,
                                    encode(value, Some(b), "value").map_err(bad)?,
                                );
                            }
                        }
                    }
                }
                Declared::Operator {
                    union,
                    serializer,
                    value,
                } => {
                    let item = encode(value, v.get("value"), "value").map_err(bad)?;
                    self.raw_operator_list(
                        &uid,
                        &state,
                        *union,
                        serializer.clone(),
                        vec![Item::Element(item.into())],
                    )?;
                }
                Declared::Broadcast {
                    serializers,
                    formats,
                } => {
                    let [kf, vf] = formats.as_ref();
                    let k = encode(kf, v.get("key"), "key").map_err(bad)?;
                    let value = encode(vf, v.get("value"), "value").map_err(bad)?;
                    self.raw_broadcast(&uid, &state, serializers.clone(), vec![(k, value)])?;
                }
            }
        }
        Ok(n)
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

/// A declared state's types.
enum Declared {
    Keyed {
        key: SerializerSnapshot,
        meta: Box<StateMetaInfo>,
        value: StoredFormat,
        user_key: Option<StoredFormat>,
    },
    Operator {
        union: bool,
        serializer: SerializerSnapshot,
        value: StoredFormat,
    },
    Broadcast {
        serializers: [SerializerSnapshot; 2],
        formats: Box<[StoredFormat; 2]>,
    },
}

/// A type in a declaration: a shape, or a whole schema.
fn schema_of(v: Option<&Value>, what: &str) -> std::result::Result<(String, Schema), String> {
    let v = v.ok_or_else(|| format!("the declaration needs `{what}`"))?;
    let schema = if v.get("root").is_some() {
        Schema::from_json(v.to_string().as_bytes()).map_err(|e| format!("`{what}`: {e}"))?
    } else {
        let root = serde_json::from_value(v.clone()).map_err(|e| format!("`{what}`: {e}"))?;
        let s = Schema {
            v: flowstate_core::schema::SCHEMA_VERSION,
            root,
            types: BTreeMap::new(),
        };
        s.check().map_err(|e| format!("`{what}`: {e}"))?;
        s
    };
    Ok((schema.root.to_string(), schema))
}

fn snapshot_of(v: Option<&Value>, what: &str) -> std::result::Result<SerializerSnapshot, String> {
    let (name, schema) = schema_of(v, what)?;
    Ok(StoredFormat::serde_snapshot(&name, &schema))
}

fn declare(d: &Value) -> std::result::Result<(String, String, Declared), String> {
    let s = |name: &str| {
        d.get(name)
            .and_then(Value::as_str)
            .map(String::from)
            .ok_or_else(|| format!("a declaration needs a string `{name}`"))
    };
    let (uid, state) = (s("operator")?, s("state")?);
    if d.get("mode").and_then(Value::as_str) == Some("broadcast") {
        let key = snapshot_of(d.get("key"), "key")?;
        let value = snapshot_of(d.get("value"), "value")?;
        let formats = [StoredFormat::of(&key), StoredFormat::of(&value)];
        return Ok((
            uid,
            state,
            Declared::Broadcast {
                serializers: [key, value],
                formats: Box::new(formats),
            },
        ));
    }
    if let Some(mode) = d.get("mode").and_then(Value::as_str) {
        let union = match mode {
            "list" => false,
            "union" => true,
            m => {
                return Err(format!(
                    "operator state mode `{m}`: `list`, `union` or `broadcast`"
                ));
            }
        };
        let serializer = snapshot_of(d.get("value"), "value")?;
        let value = StoredFormat::of(&serializer);
        return Ok((
            uid,
            state,
            Declared::Operator {
                union,
                serializer,
                value,
            },
        ));
    }
    let kind = match s("kind")?.as_str() {
        "value" => StateKind::Value,
        "list" => StateKind::List,
        "map" => StateKind::Map,
        k => return Err(format!("kind `{k}`: `value`, `list` or `map`")),
    };
    let key = snapshot_of(d.get("key"), "key")?;
    let value_snapshot = snapshot_of(d.get("value"), "value")?;
    let user_key = match kind {
        StateKind::Map => Some(snapshot_of(d.get("user_key"), "user_key")?),
        _ => None,
    };
    let meta = StateMetaInfo::new::<VoidNamespace>(&state, kind, value_snapshot, user_key.clone());
    Ok((
        uid,
        state,
        Declared::Keyed {
            key,
            value: StoredFormat::of(&meta.value_serializer),
            user_key: user_key.as_ref().map(StoredFormat::of),
            meta: Box::new(meta),
        },
    ))
}

fn encode(f: &StoredFormat, v: Option<&Value>, what: &str) -> std::result::Result<Vec<u8>, String> {
    let v = v.ok_or_else(|| format!("the record needs `{what}`"))?;
    f.encode(v).map_err(|e| format!("{what} {v}: {e}"))
}

/// Map entries given as an object or as `[user key, value]` pairs.
fn map_entries(v: Option<&Value>) -> std::result::Result<Vec<(Value, &Value)>, String> {
    match v {
        Some(Value::Object(m)) => Ok(m
            .iter()
            .map(|(k, v)| (Value::String(k.clone()), v))
            .collect()),
        Some(Value::Array(pairs)) => pairs
            .iter()
            .map(|p| match p.as_array().map(Vec::as_slice) {
                Some([k, v]) => Ok((k.clone(), v)),
                _ => Err(format!("{p} is not a [user key, value] pair")),
            })
            .collect(),
        _ => Err("a map record's `value` is an object or [user key, value] pairs".into()),
    }
}
