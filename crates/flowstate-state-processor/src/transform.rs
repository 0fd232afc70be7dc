//! Transforms: a new savepoint made from an existing checkpoint or savepoint, which
//! is only read. Drop or rename operators and states, drop keys, rewrite values, and
//! change the max parallelism (every key moves to its new key group) or the
//! parallelism the files are written for (operator list state is split anew).

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;

use flowstate_core::format::{ByteReader, put_varint, put_vbytes};
use flowstate_core::serializer::{
    SerdeSerializer, SerializerSnapshot, StoredFormat, TypeSerializer,
};
use flowstate_core::snapshot::StateMetaInfo;
use flowstate_core::state::StateKind;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::{ProcessorError, Result, state_err};
use crate::reader::Snapshot;
use crate::writer::{SavepointWriter, Written};

/// A function over stored values (one value, list element or map value).
pub type ValueFn = Arc<dyn Fn(&[u8]) -> std::result::Result<Vec<u8>, String> + Send + Sync>;

/// A predicate over keys as dumps show them (JSON).
pub type KeyPredicate = Arc<dyn Fn(&Value) -> bool + Send + Sync>;

/// One change applied by [`transform`].
#[derive(Clone)]
pub enum Transform {
    /// Leave out an operator's state (a job restoring the result no longer needs
    /// to allow non-restored state for it).
    DropOperator(String),
    /// Store an operator's state under another uid.
    RenameOperator {
        /// The uid in the input.
        from: String,
        /// The uid in the output.
        to: String,
    },
    /// Leave out one keyed or operator state of an operator.
    DropState {
        /// The operator.
        uid: String,
        /// The state.
        state: String,
    },
    /// Store one keyed or operator state under another name.
    RenameState {
        /// The operator.
        uid: String,
        /// The name in the input.
        from: String,
        /// The name in the output.
        to: String,
    },
    /// Keep only the keys `keep` accepts (of one operator, or of every operator).
    FilterKeys {
        /// The operator (`None`: every keyed operator).
        uid: Option<String>,
        /// Whether a key (as JSON) stays.
        keep: KeyPredicate,
    },
    /// Rewrite every value of one keyed state (each list element, each map value).
    MapValues {
        /// The operator.
        uid: String,
        /// The state.
        state: String,
        /// The value serializer of the rewritten values (`None`: unchanged).
        serializer: Option<SerializerSnapshot>,
        /// The rewrite.
        f: ValueFn,
    },
}

impl std::fmt::Debug for Transform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Transform::DropOperator(u) => write!(f, "DropOperator({u})"),
            Transform::RenameOperator { from, to } => write!(f, "RenameOperator({from} -> {to})"),
            Transform::DropState { uid, state } => write!(f, "DropState({uid}/{state})"),
            Transform::RenameState { uid, from, to } => {
                write!(f, "RenameState({uid}/{from} -> {to})")
            }
            Transform::FilterKeys { uid, .. } => write!(f, "FilterKeys({uid:?})"),
            Transform::MapValues { uid, state, .. } => write!(f, "MapValues({uid}/{state})"),
        }
    }
}

impl Transform {
    /// Drops the given keys (JSON, as dumps show them).
    pub fn drop_keys(uid: Option<String>, keys: Vec<Value>) -> Transform {
        let keys: BTreeSet<String> = keys.iter().map(Value::to_string).collect();
        Transform::FilterKeys {
            uid,
            keep: Arc::new(move |k| !keys.contains(&k.to_string())),
        }
    }

    /// A value migration with the user's types: every value of `state` is read as
    /// `Old` (its postcard bytes as stored) and written as
    /// `f(old)` of type `New`, and the state's value serializer becomes `New`'s.
    /// States with TTL are refused by [`transform`] (their timestamps would be lost).
    pub fn migrate<Old, New>(
        uid: &str,
        state: &str,
        f: impl Fn(Old) -> New + Send + Sync + 'static,
    ) -> Transform
    where
        Old: DeserializeOwned + 'static,
        New: Serialize + DeserializeOwned + 'static,
    {
        let new = SerdeSerializer::<New>::new();
        let serializer = new.snapshot();
        Transform::MapValues {
            uid: uid.to_string(),
            state: state.to_string(),
            serializer: Some(serializer),
            f: Arc::new(move |bytes| {
                let old: Old = postcard::from_bytes(bytes).map_err(|e| e.to_string())?;
                let mut out = Vec::new();
                new.serialize_into(&f(old), &mut out)
                    .map_err(|e| e.to_string())?;
                Ok(out)
            }),
        }
    }
}

/// What [`transform`] writes besides the transforms.
#[derive(Clone, Debug, Default)]
pub struct TransformPlan {
    /// The changes, applied together.
    pub transforms: Vec<Transform>,
    /// The new max parallelism (`None`: the input's).
    pub max_parallelism: Option<u32>,
    /// The parallelism the files are written for (`None`: the input's, capped by the
    /// max parallelism).
    pub parallelism: Option<u32>,
}

/// Writes a new savepoint into the checkpoint directory `out` from `input` changed
/// by `plan` (see [`SavepointWriter::write`] for where and how); `progress` sees the
/// keyed entries copied so far.
pub fn transform(
    input: &Snapshot,
    plan: &TransformPlan,
    out: &Path,
    mut progress: impl FnMut(u64, u64),
) -> Result<Written> {
    let max_p = plan.max_parallelism.unwrap_or(input.max_parallelism());
    let parallelism = plan
        .parallelism
        .unwrap_or(input.metadata().parallelism)
        .min(max_p);
    let mut writer = SavepointWriter::new(max_p, parallelism)?;
    let uids: Vec<String> = input.uids().into_iter().map(String::from).collect();
    let mut renamed: HashMap<&str, &str> = HashMap::new();
    let mut dropped: BTreeSet<&str> = BTreeSet::new();
    for t in &plan.transforms {
        let uid = match t {
            Transform::DropOperator(u) => {
                dropped.insert(u);
                u
            }
            Transform::RenameOperator { from, to } => {
                renamed.insert(from, to);
                from
            }
            Transform::DropState { uid, .. }
            | Transform::RenameState { uid, .. }
            | Transform::MapValues { uid, .. } => uid,
            Transform::FilterKeys { uid, .. } => match uid {
                Some(u) => u,
                None => continue,
            },
        };
        input.operator(uid)?;
    }
    let mut taken = BTreeSet::new();
    for uid in &uids {
        if dropped.contains(uid.as_str()) {
            continue;
        }
        let to = renamed.get(uid.as_str()).copied().unwrap_or(uid);
        if !taken.insert(to.to_string()) {
            return Err(ProcessorError::Invalid(format!(
                "two operators would be stored as `{to}`"
            )));
        }
    }
    let mut copied = (0u64, 0u64);
    for uid in &uids {
        if dropped.contains(uid.as_str()) {
            continue;
        }
        let to = renamed
            .get(uid.as_str())
            .copied()
            .unwrap_or(uid)
            .to_string();
        let user_uid = input.operator(uid)?.user_uid || to != *uid;
        writer.operator(&to)?.user_uid = user_uid;
        let names = state_names(input, uid)?;
        let mut state_to: HashMap<String, Option<String>> =
            names.iter().map(|n| (n.clone(), Some(n.clone()))).collect();
        let mut maps: HashMap<String, (Option<SerializerSnapshot>, ValueFn)> = HashMap::new();
        let mut filters: Vec<KeyPredicate> = Vec::new();
        for t in &plan.transforms {
            match t {
                Transform::DropState { uid: u, state } if u == uid => {
                    *known(&mut state_to, uid, state, &names)? = None;
                }
                Transform::RenameState { uid: u, from, to } if u == uid => {
                    *known(&mut state_to, uid, from, &names)? = Some(to.clone());
                }
                Transform::MapValues {
                    uid: u,
                    state,
                    serializer,
                    f,
                } if u == uid => {
                    known(&mut state_to, uid, state, &names)?;
                    maps.insert(state.clone(), (serializer.clone(), f.clone()));
                }
                Transform::FilterKeys { uid: u, keep } if u.as_ref().is_none_or(|u| u == uid) => {
                    filters.push(keep.clone());
                }
                _ => {}
            }
        }
        let targets: Vec<&String> = state_to.values().flatten().collect();
        if let Some(dup) = targets
            .iter()
            .find(|t| targets.iter().filter(|x| x == t).count() > 1)
        {
            return Err(ProcessorError::Invalid(format!(
                "operator `{uid}`: two states would be named `{dup}`"
            )));
        }
        copy_keyed(
            input,
            uid,
            &to,
            &mut writer,
            &state_to,
            &maps,
            &filters,
            &mut copied,
            &mut progress,
        )?;
        for (name, s) in input.merged_operator_states(uid)? {
            if let Some(Some(new)) = state_to.get(&name) {
                writer.operator(&to)?.operator_state(new, s);
            }
        }
    }
    progress(copied.0, copied.1);
    writer.write(out)
}

/// Names of every keyed and operator state of `uid`.
fn state_names(input: &Snapshot, uid: &str) -> Result<Vec<String>> {
    let mut names: Vec<String> = input
        .keyed_header(uid)?
        .map(|h| h.states.into_iter().map(|m| m.name).collect())
        .unwrap_or_default();
    names.extend(input.merged_operator_states(uid)?.into_keys());
    Ok(names)
}

fn known<'a>(
    state_to: &'a mut HashMap<String, Option<String>>,
    uid: &str,
    state: &str,
    names: &[String],
) -> Result<&'a mut Option<String>> {
    state_to
        .get_mut(state)
        .ok_or_else(|| ProcessorError::UnknownState {
            uid: uid.to_string(),
            state: state.to_string(),
            known: names.join(", "),
        })
}

#[allow(clippy::too_many_arguments)]
fn copy_keyed(
    input: &Snapshot,
    uid: &str,
    to: &str,
    writer: &mut SavepointWriter,
    state_to: &HashMap<String, Option<String>>,
    maps: &HashMap<String, (Option<SerializerSnapshot>, ValueFn)>,
    filters: &[KeyPredicate],
    copied: &mut (u64, u64),
    progress: &mut impl FnMut(u64, u64),
) -> Result<()> {
    let Some(header) = input.keyed_header(uid)? else {
        return Ok(());
    };
    let key_format = StoredFormat::of(&header.key_serializer);
    writer.operator(to)?.keyed(header.key_serializer.clone())?;
    let mut ids: HashMap<String, (u32, StateKind)> = HashMap::new();
    for m in &header.states {
        let Some(Some(name)) = state_to.get(&m.name) else {
            continue;
        };
        let mut meta: StateMetaInfo = m.clone();
        meta.name = name.clone();
        if let Some((serializer, _)) = maps.get(&m.name) {
            if matches!(StoredFormat::of(&m.value_serializer), StoredFormat::Ttl(_)) {
                return Err(ProcessorError::Invalid(format!(
                    "state `{}` of `{uid}` has a TTL: rewriting its values is not supported",
                    m.name
                )));
            }
            if let Some(s) = serializer {
                meta.value_serializer = s.clone();
            }
        }
        let id = writer.operator(to)?.state(meta)?;
        ids.insert(m.name.clone(), (id, m.kind));
    }
    let mut buf = Vec::new();
    input.for_each_entry(uid, None, |meta, _kg, e| {
        let Some(&(id, kind)) = ids.get(&meta.name) else {
            return Ok(());
        };
        if !filters.is_empty() {
            let key = key_format
                .render(e.key)
                .map_err(|source| ProcessorError::Value {
                    what: format!("a key of `{uid}`"),
                    source,
                })?;
            if !filters.iter().all(|keep| keep(&key)) {
                return Ok(());
            }
        }
        let payload = match maps.get(&meta.name) {
            None => e.payload,
            Some((_, f)) => {
                buf.clear();
                rewrite_payload(kind, e.payload, f, &mut buf).map_err(|message| {
                    ProcessorError::Invalid(format!(
                        "rewriting state `{}` of `{uid}`: {message}",
                        meta.name
                    ))
                })?;
                &buf
            }
        };
        writer.put(to, id, e.key, e.namespace, payload)?;
        copied.0 += 1;
        copied.1 += (e.key.len() + e.namespace.len() + payload.len()) as u64;
        if copied.0.is_multiple_of(16_384) {
            progress(copied.0, copied.1);
        }
        Ok(())
    })
}

/// Applies `f` to the value, each list element or each map value of a payload.
fn rewrite_payload(
    kind: StateKind,
    payload: &[u8],
    f: &ValueFn,
    out: &mut Vec<u8>,
) -> std::result::Result<(), String> {
    let put = |out: &mut Vec<u8>, b: &[u8]| put_vbytes(out, b).map_err(|e| e.to_string());
    match kind {
        StateKind::List | StateKind::Map => {
            let mut r = ByteReader::new(payload, "payload");
            let n = r.varint("count").map_err(|e| e.to_string())?;
            put_varint(out, n);
            for _ in 0..n {
                if kind == StateKind::Map {
                    put(out, r.vbytes("user key").map_err(|e| e.to_string())?)?;
                }
                let v = f(r.vbytes("value").map_err(|e| e.to_string())?)?;
                put(out, &v)?;
            }
            if !r.is_empty() {
                return Err("trailing bytes in a payload".into());
            }
        }
        _ => out.extend(f(payload)?),
    }
    Ok(())
}

/// Parses `a..b`, `a-b` (inclusive) or `a` as a key group range.
pub fn parse_key_groups(s: &str) -> Result<flowstate_core::keygroup::KeyGroupRange> {
    let (a, b) = s
        .split_once("..")
        .or_else(|| s.split_once('-'))
        .unwrap_or((s, s));
    let n = |x: &str| {
        x.trim()
            .parse::<u32>()
            .map_err(|_| ProcessorError::Invalid(format!("`{s}` is not a key group range (a-b)")))
    };
    flowstate_core::keygroup::KeyGroupRange::new(n(a)?, n(b)?).map_err(state_err("key groups"))
}
