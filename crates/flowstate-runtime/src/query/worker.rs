//! The worker's side of queryable state: while a keyed operator opens, each state
//! declared with a queryable name gets a reader; afterwards the operator answers the
//! look-ups in its mailbox, at most a slice per activation, between record batches.
//!
//! Values are rendered through the state's stored format (the same rendering the
//! state processor and `committed` reads use), so a value reads the same whichever
//! consistency asked for it.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;

use flowstate_core::backend::KeyedStateBackend;
use flowstate_core::descriptor::{
    ListStateDescriptor, MapStateDescriptor, ReducingStateDescriptor, ValueStateDescriptor,
};
use flowstate_core::keygroup::key_group_for_serialized_key;
use flowstate_core::schema::json::map_json;
use flowstate_core::serializer::{SerdeSerializer, StoredFormat, TypeSerializer};
use flowstate_core::state::{
    InternalListState, InternalReducingState, ListState, MapState, Namespace, ReducingState,
    StateKey, ValueState,
};
use flowstate_core::ttl::{StateTtlConfig, UpdateType};
use serde_json::Value;
use timely::scheduling::SyncActivator;

use super::hub::{KeyGroupFn, Mailbox, Registered};
use super::{LiveAnswer, LiveLookup, QueryError, QueryHub, QueryableState};
use crate::RuntimeError;
use crate::backend::AnyBackend;
use crate::stream::Data;

/// Reads one key's value of one state (the key already decoded).
type Read<K> = Box<dyn Fn(&AnyBackend<K>, &K, &LiveLookup) -> Result<Option<Value>, QueryError>>;

struct Entry<K> {
    info: QueryableState,
    key_group: KeyGroupFn,
    ttl: Option<StateTtlConfig>,
    read: Read<K>,
}

/// Decodes a key from its JSON form.
type DecodeKey<K> = Rc<dyn Fn(&Value) -> Result<K, QueryError>>;

/// What the declaration of a queryable state says.
struct Declared<'a> {
    /// The queryable name.
    name: &'a str,
    /// The state's own name.
    state: &'a str,
    kind: &'a str,
    /// The value's type and schema.
    value: (String, Option<Value>),
    /// A map's user key type and schema.
    user_key: Option<(String, Option<Value>)>,
    namespace_type: Option<&'a str>,
    ttl: Option<&'a StateTtlConfig>,
}

impl<'a> Declared<'a> {
    /// A state without a namespace; its value type is filled in by the caller.
    fn plain(
        name: &'a str,
        state: &'a str,
        kind: &'a str,
        ttl: Option<&'a StateTtlConfig>,
    ) -> Self {
        Declared {
            name,
            state,
            kind,
            value: (String::new(), None),
            user_key: None,
            namespace_type: None,
            ttl,
        }
    }

    /// A window's state (namespace `N`; windows have no TTL).
    fn window<N>(name: &'a str, state: &'a str, kind: &'a str) -> Self {
        Declared {
            namespace_type: std::any::type_name::<N>().rsplit("::").next(),
            ..Declared::plain(name, state, kind, None)
        }
    }
}

/// Collects the queryable states a keyed operator instance declares while it opens.
pub(crate) struct QueryRegistry<K> {
    enabled: bool,
    max_parallelism: u32,
    parallelism: u32,
    key_format: StoredFormat,
    key_group: KeyGroupFn,
    decode_key: DecodeKey<K>,
    entries: RefCell<Vec<Entry<K>>>,
}

/// How a stored value of a serializer renders as JSON.
fn renderer<T: 'static>(
    serializer: Arc<dyn TypeSerializer<T>>,
) -> (
    String,
    Option<Value>,
    impl Fn(&T) -> Result<Value, QueryError>,
) {
    let format = StoredFormat::of(&serializer.snapshot());
    let (name, schema) = (format.describe(), format.schema_json());
    let render = move |v: &T| {
        let mut bytes = Vec::new();
        serializer
            .serialize_into(v, &mut bytes)
            .map_err(|e| QueryError::State(e.to_string()))?;
        format
            .render(&bytes)
            .map_err(|e| QueryError::State(e.to_string()))
    };
    (name, schema, render)
}

/// Decodes a JSON value as `T` through its serializer's stored schema.
fn decoder<T: 'static>(
    serializer: Arc<dyn TypeSerializer<T>>,
    what: &'static str,
) -> impl Fn(&Value) -> Result<T, QueryError> {
    let format = StoredFormat::of(&serializer.snapshot());
    move |v: &Value| {
        let bytes = format
            .encode(v)
            .map_err(|e| QueryError::BadKey(format!("{what} {v}: {e}")))?;
        serializer
            .deserialize(&bytes)
            .map_err(|e| QueryError::BadKey(format!("{what} {v}: {e}")))
    }
}

/// Whether reading the state through its handle would change it (TTL refreshed on
/// read): such a state cannot be queryable, a query must never affect the job.
fn check_read_only(name: &str, ttl: Option<&StateTtlConfig>) -> Result<(), RuntimeError> {
    match ttl {
        Some(t) if t.update_type() == UpdateType::OnReadAndWrite => {
            Err(RuntimeError::Config(format!(
                "state `{name}` refreshes its TTL on every read, so a query would change it: \
                 it cannot be queryable"
            )))
        }
        _ => Ok(()),
    }
}

impl<K: StateKey + Data> QueryRegistry<K> {
    /// A registry for an operator instance of `parallelism` (`enabled`: the job has
    /// a query hub; otherwise declarations are accepted and nothing is exposed).
    pub(crate) fn new(enabled: bool, max_parallelism: u32, parallelism: u32) -> Self {
        let key_group: KeyGroupFn = Arc::new(move |v: &Value| {
            let key: K = serde_json::from_value(v.clone())
                .map_err(|e| QueryError::BadKey(format!("key {v}: {e}")))?;
            let mut bytes = Vec::new();
            SerdeSerializer::<K>::new()
                .serialize_into(&key, &mut bytes)
                .map_err(|e| QueryError::BadKey(format!("key {v}: {e}")))?;
            Ok(key_group_for_serialized_key(&bytes, max_parallelism))
        });
        QueryRegistry {
            enabled,
            max_parallelism,
            parallelism,
            key_format: StoredFormat::of(&SerdeSerializer::<K>::new().snapshot()),
            key_group,
            decode_key: Rc::new(|v: &Value| {
                serde_json::from_value(v.clone())
                    .map_err(|e| QueryError::BadKey(format!("key {v}: {e}")))
            }),
            entries: RefCell::new(Vec::new()),
        }
    }
}

// Declarations need only `K: StateKey` (what `OpenContext` asks of keys); what needs
// serde was built in `new`.
impl<K: StateKey> QueryRegistry<K> {
    fn add(&self, d: Declared<'_>, read: Read<K>) -> Result<(), RuntimeError> {
        let Declared {
            name,
            state,
            kind,
            value,
            user_key,
            namespace_type,
            ttl,
        } = d;
        check_read_only(state, ttl)?;
        if self.entries.borrow().iter().any(|e| e.info.name == name) {
            return Err(RuntimeError::Config(format!(
                "queryable name `{name}` is declared twice in one operator"
            )));
        }
        let key_format = &self.key_format;
        let (user_key_type, user_key_schema) = match user_key {
            Some((t, s)) => (Some(t), s),
            None => (None, None),
        };
        self.entries.borrow_mut().push(Entry {
            info: QueryableState {
                name: name.to_string(),
                state: state.to_string(),
                operator: None,
                kind: kind.to_string(),
                key_type: key_format.describe(),
                key_schema: key_format.schema_json(),
                value_type: value.0,
                value_schema: value.1,
                user_key_type,
                user_key_schema,
                namespace_type: namespace_type.map(str::to_string),
                ttl_ms: ttl.map(StateTtlConfig::ttl_ms),
                max_parallelism: self.max_parallelism,
                parallelism: self.parallelism,
            },
            key_group: self.key_group.clone(),
            ttl: ttl.cloned(),
            read,
        });
        Ok(())
    }

    /// Registers a state whose look-up reads one value (or nothing) with `get`
    /// (given the backend, the key and the look-up), rendered through `serializer`.
    fn single<T: 'static>(
        &self,
        d: Declared<'_>,
        serializer: &Arc<dyn TypeSerializer<T>>,
        get: impl Fn(&AnyBackend<K>, &K, &LiveLookup) -> Result<Option<T>, QueryError> + 'static,
    ) -> Result<(), RuntimeError> {
        let (ty, schema, render) = renderer(serializer.clone());
        let read: Read<K> =
            Box::new(move |b, k, l| get(b, k, l)?.as_ref().map(&render).transpose());
        self.add(
            Declared {
                value: (ty, schema),
                ..d
            },
            read,
        )
    }

    /// Registers a state whose look-up reads a list with `get` (empty: nothing
    /// stored), its elements rendered through `serializer`.
    fn items<T: 'static>(
        &self,
        d: Declared<'_>,
        serializer: &Arc<dyn TypeSerializer<T>>,
        get: impl Fn(&AnyBackend<K>, &K, &LiveLookup) -> Result<Vec<T>, QueryError> + 'static,
    ) -> Result<(), RuntimeError> {
        let (ty, schema, render) = renderer(serializer.clone());
        let read: Read<K> = Box::new(move |b, k, l| {
            let items = get(b, k, l)?;
            if items.is_empty() {
                return Ok(None);
            }
            Ok(Some(Value::Array(
                items.iter().map(&render).collect::<Result<_, _>>()?,
            )))
        });
        self.add(
            Declared {
                value: (ty, schema),
                ..d
            },
            read,
        )
    }

    /// A value state was declared.
    pub(crate) fn value<T: 'static>(
        &self,
        desc: &ValueStateDescriptor<T>,
        handle: &Rc<dyn ValueState<T>>,
    ) -> Result<(), RuntimeError> {
        let Some(name) = desc.queryable_name().filter(|_| self.enabled) else {
            return Ok(());
        };
        let h = handle.clone();
        let d = Declared::plain(name, desc.name(), "value", desc.enabled_ttl());
        self.single(d, desc.serializer(), move |b, k, lookup| {
            no_namespace(lookup)?;
            b.set_current_key(k.clone()).map_err(state_err)?;
            h.value().map_err(state_err)
        })
    }

    /// A list state was declared (an empty list reads as nothing stored).
    pub(crate) fn list<T: 'static>(
        &self,
        desc: &ListStateDescriptor<T>,
        handle: &Rc<dyn ListState<T>>,
    ) -> Result<(), RuntimeError> {
        let Some(name) = desc.queryable_name().filter(|_| self.enabled) else {
            return Ok(());
        };
        let h = handle.clone();
        let d = Declared::plain(name, desc.name(), "list", desc.enabled_ttl());
        self.items(d, desc.serializer(), move |b, k, lookup| {
            no_namespace(lookup)?;
            b.set_current_key(k.clone()).map_err(state_err)?;
            h.get().map_err(state_err)
        })
    }

    /// A map state was declared: a look-up reads one user key's value, or the whole
    /// map (an object when its keys are strings or numbers, else `[key, value]` pairs).
    pub(crate) fn map<UK: 'static, UV: 'static>(
        &self,
        desc: &MapStateDescriptor<UK, UV>,
        handle: &Rc<dyn MapState<UK, UV>>,
    ) -> Result<(), RuntimeError> {
        let Some(name) = desc.queryable_name().filter(|_| self.enabled) else {
            return Ok(());
        };
        let (vty, vschema, render) = renderer(desc.value_serializer().clone());
        let (kty, kschema, render_key) = renderer(desc.key_serializer().clone());
        let decode_key = decoder(desc.key_serializer().clone(), "user key");
        let h = handle.clone();
        let read: Read<K> = Box::new(move |b, k, lookup| {
            no_namespace(lookup)?;
            b.set_current_key(k.clone()).map_err(state_err)?;
            if let Some(uk) = &lookup.user_key {
                let uk = decode_key(uk)?;
                return h
                    .get(&uk)
                    .map_err(state_err)?
                    .as_ref()
                    .map(&render)
                    .transpose();
            }
            let entries = h.entries().map_err(state_err)?;
            if entries.is_empty() {
                return Ok(None);
            }
            let pairs = entries
                .iter()
                .map(|(uk, uv)| Ok((render_key(uk)?, render(uv)?)))
                .collect::<Result<Vec<_>, QueryError>>()?;
            let as_object = pairs
                .iter()
                .all(|(k, _)| matches!(k, Value::String(_) | Value::Number(_)));
            Ok(Some(map_json(pairs, as_object)))
        });
        self.add(
            Declared {
                name,
                state: desc.name(),
                kind: "map",
                value: (vty, vschema),
                user_key: Some((kty, kschema)),
                namespace_type: None,
                ttl: desc.enabled_ttl(),
            },
            read,
        )
    }

    /// A reducing state was declared.
    pub(crate) fn reducing<T: 'static>(
        &self,
        desc: &ReducingStateDescriptor<T>,
        handle: &Rc<dyn ReducingState<T>>,
    ) -> Result<(), RuntimeError> {
        let Some(name) = desc.queryable_name().filter(|_| self.enabled) else {
            return Ok(());
        };
        let h = handle.clone();
        let d = Declared::plain(name, desc.name(), "reducing", desc.enabled_ttl());
        self.single(d, desc.serializer(), move |b, k, lookup| {
            no_namespace(lookup)?;
            b.set_current_key(k.clone()).map_err(state_err)?;
            h.get().map_err(state_err)
        })
    }

    /// A window's reduced contents were declared queryable (the window operator's
    /// `_window_contents` under `name`): a look-up names the window.
    pub(crate) fn window_reduce<N: Namespace, T: 'static>(
        &self,
        name: &str,
        desc: &ReducingStateDescriptor<T>,
        handle: &Rc<dyn InternalReducingState<N, T>>,
    ) -> Result<(), RuntimeError> {
        if !self.enabled {
            return Ok(());
        }
        let h = handle.clone();
        let d = Declared::window::<N>(name, desc.name(), "window-reduce");
        self.single(d, desc.serializer(), move |b, k, lookup| {
            let n = window_of::<N>(lookup)?;
            b.set_current_key(k.clone()).map_err(state_err)?;
            h.set_current_namespace(n);
            h.get().map_err(state_err)
        })
    }

    /// A window's records were declared queryable (the window operator's
    /// `_window_contents` under `name`): a look-up names the window.
    pub(crate) fn window_contents<N: Namespace, T: 'static>(
        &self,
        name: &str,
        desc: &ListStateDescriptor<T>,
        handle: &Rc<dyn InternalListState<N, T>>,
    ) -> Result<(), RuntimeError> {
        if !self.enabled {
            return Ok(());
        }
        let h = handle.clone();
        let d = Declared::window::<N>(name, desc.name(), "window-contents");
        self.items(d, desc.serializer(), move |b, k, lookup| {
            let n = window_of::<N>(lookup)?;
            b.set_current_key(k.clone()).map_err(state_err)?;
            h.set_current_namespace(n);
            h.get().map_err(state_err)
        })
    }

    /// What was declared, ready to serve: `None` when nothing is queryable.
    pub(crate) fn finish(
        self,
        hub: Option<&QueryHub>,
        worker: u32,
        operator: Option<String>,
    ) -> Result<Option<LiveQueries<K>>, RuntimeError> {
        let entries = self.entries.into_inner();
        let Some(hub) = hub.filter(|_| !entries.is_empty()) else {
            return Ok(None);
        };
        let mailbox = Arc::new(Mailbox::default());
        let mut reads = HashMap::new();
        let mut registered = Vec::new();
        for mut e in entries {
            e.info.operator = operator.clone();
            registered.push(Registered {
                info: Arc::new(e.info.clone()),
                key_group: e.key_group,
                ttl: e.ttl,
            });
            reads.insert(e.info.name, e.read);
        }
        hub.register(worker, registered, &mailbox)
            .map_err(RuntimeError::Config)?;
        Ok(Some(LiveQueries {
            reads,
            decode_key: self.decode_key,
            mailbox,
            slice: hub.slice(),
            attempt: hub.current_attempt(),
        }))
    }
}

/// Refuses a namespace for state that has none.
fn no_namespace(lookup: &LiveLookup) -> Result<(), QueryError> {
    match lookup.namespace {
        Some(_) => Err(QueryError::BadRequest(format!(
            "state `{}` is not a window's: it takes no `namespace`",
            lookup.state
        ))),
        None => Ok(()),
    }
}

/// The window a look-up of window state names.
fn window_of<N: Namespace>(lookup: &LiveLookup) -> Result<N, QueryError> {
    let Some(v) = &lookup.namespace else {
        return Err(QueryError::BadRequest(format!(
            "state `{}` is a window's: name the window with `namespace` \
             ({{\"start\": ms, \"end\": ms}})",
            lookup.state
        )));
    };
    serde_json::from_value(v.clone()).map_err(|e| QueryError::BadKey(format!("namespace {v}: {e}")))
}

fn state_err(e: flowstate_core::StateError) -> QueryError {
    QueryError::State(e.to_string())
}

/// A keyed operator instance's queryable states, answering its mailbox.
pub(crate) struct LiveQueries<K> {
    reads: HashMap<String, Read<K>>,
    decode_key: DecodeKey<K>,
    mailbox: Arc<Mailbox>,
    slice: usize,
    attempt: u64,
}

impl<K: StateKey> LiveQueries<K> {
    /// The operator's worker wakes it through `activator` when look-ups arrive.
    pub(crate) fn set_activator(&self, activator: SyncActivator) {
        self.mailbox.set_activator(activator);
    }

    /// Answers up to a slice of waiting look-ups from `backend` (the current key is
    /// put back afterwards); returns whether more wait (the caller activates itself
    /// again).
    pub(crate) fn serve(&self, backend: &AnyBackend<K>, checkpoint: u64, watermark: i64) -> bool {
        let (pending, more) = self.mailbox.take(self.slice);
        if pending.is_empty() {
            return more;
        }
        let current = backend.current_key();
        for p in pending {
            let answer = self.answer(backend, &p.lookup, checkpoint, watermark);
            // The asker may have given up (timeout, closed connection).
            let _ = p.reply.send(answer);
        }
        if let Some(k) = current {
            // Setting back a key that was set before cannot fail for a reason a
            // query caused; a failure shows on the next record.
            let _ = backend.set_current_key(k);
        }
        more
    }

    fn answer(
        &self,
        backend: &AnyBackend<K>,
        lookup: &LiveLookup,
        checkpoint: u64,
        watermark: i64,
    ) -> Result<LiveAnswer, QueryError> {
        let read = self
            .reads
            .get(&lookup.state)
            .ok_or_else(|| QueryError::UnknownState(lookup.state.clone()))?;
        let mut values = Vec::with_capacity(lookup.keys.len());
        for key in &lookup.keys {
            values.push(read(backend, &(self.decode_key)(key)?, lookup)?);
        }
        Ok(LiveAnswer {
            values,
            checkpoint,
            watermark,
            attempt: self.attempt,
        })
    }
}
