//! The JSON-lines input of [`Bootstrap`]: declarations of each state's types (shapes
//! or whole schemas), then records as dumps write them.

use std::collections::BTreeMap;
use std::io::BufRead;

use flowstate_core::operator::Item;
use flowstate_core::schema::Schema;
use flowstate_core::serializer::{SerializerSnapshot, StoredFormat};
use flowstate_core::snapshot::StateMetaInfo;
use flowstate_core::state::{StateKind, VoidNamespace};
use flowstate_runtime::EVENT_TIMER_STATE;
use serde_json::Value;

use super::{Bootstrap, Contents};
use crate::describe::is_timer_state;
use crate::error::{ProcessorError, Result};

impl Bootstrap {
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
            if is_timer_state(&state) {
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
