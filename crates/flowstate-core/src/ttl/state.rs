//! The decorators that give every keyed state kind TTL semantics on any backend, and
//! the functions that build them over a backend's registration of the stored form.

use std::rc::Rc;
use std::sync::Arc;

use super::config::*;
use super::serializer::*;
use crate::descriptor::{
    AggregateFunction, AggregatingStateDescriptor, ListStateDescriptor, MapStateDescriptor,
    ReducingStateDescriptor, ValueStateDescriptor,
};
use crate::error::StateResult;
use crate::state::{
    AggregatingState, InternalAggregatingState, InternalKvState, InternalListState,
    InternalMapState, InternalMergingState, InternalReducingState, InternalValueState, ListState,
    MapState, Namespace, ReducingState, StateKey, StateValue, ValueState,
};

/// What every decorator needs from the config.
#[derive(Clone)]
struct Ttl {
    ttl_ms: i64,
    refresh_on_read: bool,
    return_expired: bool,
    clock: Arc<dyn TtlClock>,
}

impl Ttl {
    fn new(cfg: &StateTtlConfig) -> Self {
        Ttl {
            ttl_ms: cfg.ttl_ms(),
            refresh_on_read: cfg.update_type() == UpdateType::OnReadAndWrite,
            return_expired: cfg.visibility() == StateVisibility::ReturnExpiredIfNotCleanedUp,
            clock: cfg.clock().clone(),
        }
    }
    #[inline]
    fn now(&self) -> i64 {
        self.clock.now_ms()
    }
    #[inline]
    fn expired(&self, last_access: i64, now: i64) -> bool {
        expired(last_access, self.ttl_ms, now)
    }
    #[inline]
    fn wrap<T>(&self, value: T, now: i64) -> TtlValue<T> {
        TtlValue {
            value,
            last_access: now,
        }
    }
}

/// Refreshes the timestamp of the stored value through its serialized form (reducing
/// and aggregating state have no typed access to the stored accumulator).
fn refresh_serialized<N>(inner: &dyn InternalKvState<N>, now: i64) -> StateResult<()> {
    if let Some(mut bytes) = inner.get_serialized()?
        && bytes.len() >= 8
    {
        bytes[..8].copy_from_slice(&now.to_le_bytes());
        inner.set_serialized(&bytes)?;
    }
    Ok(())
}

/// [`ValueState`] with TTL over a stored `TtlValue<T>` state.
pub struct TtlValueState<N, T> {
    inner: Rc<dyn InternalValueState<N, TtlValue<T>>>,
    ttl: Ttl,
    default: Option<T>,
}

impl<N, T: Clone> ValueState<T> for TtlValueState<N, T> {
    fn value(&self) -> StateResult<Option<T>> {
        let Some(tv) = self.inner.value()? else {
            return Ok(self.default.clone());
        };
        let now = self.ttl.now();
        if self.ttl.expired(tv.last_access, now) {
            self.inner.clear()?;
            return Ok(if self.ttl.return_expired {
                Some(tv.value)
            } else {
                self.default.clone()
            });
        }
        if self.ttl.refresh_on_read {
            self.inner.update(self.ttl.wrap(tv.value.clone(), now))?;
        }
        Ok(Some(tv.value))
    }
    fn update(&self, value: T) -> StateResult<()> {
        self.inner.update(self.ttl.wrap(value, self.ttl.now()))
    }
    fn clear(&self) -> StateResult<()> {
        self.inner.clear()
    }
}

/// Forwards the engine-only operations to the stored state (serialized access sees
/// the stored form, timestamps included).
macro_rules! forward_kv {
    ($ty:ident < $($p:ident),* >) => {
        impl<N, $($p),*> InternalKvState<N> for $ty<N, $($p),*> {
            fn name(&self) -> &str {
                self.inner.name()
            }
            fn set_current_namespace(&self, namespace: N) {
                self.inner.set_current_namespace(namespace)
            }
            fn get_serialized(&self) -> StateResult<Option<Vec<u8>>> {
                self.inner.get_serialized()
            }
            fn set_serialized(&self, payload: &[u8]) -> StateResult<()> {
                self.inner.set_serialized(payload)
            }
        }
    };
}

forward_kv!(TtlValueState<T>);
impl<N, T: Clone> InternalValueState<N, T> for TtlValueState<N, T> {}

/// [`ListState`] with TTL: each element carries its own timestamp.
pub struct TtlListState<N, T> {
    inner: Rc<dyn InternalListState<N, TtlValue<T>>>,
    ttl: Ttl,
}

impl<N, T: Clone> ListState<T> for TtlListState<N, T> {
    fn get(&self) -> StateResult<Vec<T>> {
        let stored = self.inner.get()?;
        if stored.is_empty() {
            return Ok(Vec::new());
        }
        let now = self.ttl.now();
        let any_expired = stored.iter().any(|e| self.ttl.expired(e.last_access, now));
        if !any_expired && !self.ttl.refresh_on_read {
            return Ok(stored.into_iter().map(|e| e.value).collect());
        }
        let mut visible = Vec::with_capacity(stored.len());
        let mut kept = Vec::with_capacity(stored.len());
        for e in stored {
            if self.ttl.expired(e.last_access, now) {
                if self.ttl.return_expired {
                    visible.push(e.value);
                }
            } else {
                visible.push(e.value.clone());
                let last_access = if self.ttl.refresh_on_read {
                    now
                } else {
                    e.last_access
                };
                kept.push(TtlValue {
                    value: e.value,
                    last_access,
                });
            }
        }
        self.inner.update(kept)?;
        Ok(visible)
    }
    fn add(&self, value: T) -> StateResult<()> {
        self.inner.add(self.ttl.wrap(value, self.ttl.now()))
    }
    fn add_all(&self, values: Vec<T>) -> StateResult<()> {
        let now = self.ttl.now();
        self.inner
            .add_all(values.into_iter().map(|v| self.ttl.wrap(v, now)).collect())
    }
    fn update(&self, values: Vec<T>) -> StateResult<()> {
        let now = self.ttl.now();
        self.inner
            .update(values.into_iter().map(|v| self.ttl.wrap(v, now)).collect())
    }
    fn clear(&self) -> StateResult<()> {
        self.inner.clear()
    }
}

forward_kv!(TtlListState<T>);
impl<N, T> InternalMergingState<N> for TtlListState<N, T> {
    fn merge_namespaces(&self, target: &N, sources: &[N]) -> StateResult<()> {
        self.inner.merge_namespaces(target, sources)
    }
}
impl<N, T: Clone> InternalListState<N, T> for TtlListState<N, T> {}

/// [`MapState`] with TTL: each entry carries its own timestamp.
pub struct TtlMapState<N, K, V> {
    inner: Rc<dyn InternalMapState<N, K, TtlValue<V>>>,
    ttl: Ttl,
}

impl<N, K: Clone, V: Clone> TtlMapState<N, K, V> {
    /// Every stored entry, with expired ones removed (and returned only when the
    /// visibility allows) and read timestamps refreshed when configured.
    fn live_entries(&self) -> StateResult<Vec<(K, V)>> {
        let stored = self.inner.entries()?;
        let now = self.ttl.now();
        let mut out = Vec::with_capacity(stored.len());
        for (k, e) in stored {
            if self.ttl.expired(e.last_access, now) {
                self.inner.remove(&k)?;
                if self.ttl.return_expired {
                    out.push((k, e.value));
                }
            } else {
                if self.ttl.refresh_on_read {
                    self.inner
                        .put(k.clone(), self.ttl.wrap(e.value.clone(), now))?;
                }
                out.push((k, e.value));
            }
        }
        Ok(out)
    }
}

impl<N, K: Clone, V: Clone> MapState<K, V> for TtlMapState<N, K, V> {
    fn get(&self, key: &K) -> StateResult<Option<V>> {
        let Some(e) = self.inner.get(key)? else {
            return Ok(None);
        };
        let now = self.ttl.now();
        if self.ttl.expired(e.last_access, now) {
            self.inner.remove(key)?;
            return Ok(self.ttl.return_expired.then_some(e.value));
        }
        if self.ttl.refresh_on_read {
            self.inner
                .put(key.clone(), self.ttl.wrap(e.value.clone(), now))?;
        }
        Ok(Some(e.value))
    }
    fn put(&self, key: K, value: V) -> StateResult<()> {
        self.inner.put(key, self.ttl.wrap(value, self.ttl.now()))
    }
    fn put_all(&self, entries: Vec<(K, V)>) -> StateResult<()> {
        let now = self.ttl.now();
        self.inner.put_all(
            entries
                .into_iter()
                .map(|(k, v)| (k, self.ttl.wrap(v, now)))
                .collect(),
        )
    }
    fn remove(&self, key: &K) -> StateResult<()> {
        self.inner.remove(key)
    }
    fn contains(&self, key: &K) -> StateResult<bool> {
        Ok(self.get(key)?.is_some())
    }
    fn entries(&self) -> StateResult<Vec<(K, V)>> {
        self.live_entries()
    }
    fn keys(&self) -> StateResult<Vec<K>> {
        Ok(self.live_entries()?.into_iter().map(|(k, _)| k).collect())
    }
    fn values(&self) -> StateResult<Vec<V>> {
        Ok(self.live_entries()?.into_iter().map(|(_, v)| v).collect())
    }
    fn is_empty(&self) -> StateResult<bool> {
        Ok(self.live_entries()?.is_empty())
    }
    fn clear(&self) -> StateResult<()> {
        self.inner.clear()
    }
}

forward_kv!(TtlMapState<K, V>);
impl<N, K: Clone, V: Clone> InternalMapState<N, K, V> for TtlMapState<N, K, V> {}

/// Reads a whole-value TTL state (reducing, aggregating) with expiry and refresh.
fn read_whole<N, T>(
    inner: &dyn InternalKvState<N>,
    stored: Option<TtlValue<T>>,
    clear: impl FnOnce() -> StateResult<()>,
    ttl: &Ttl,
) -> StateResult<Option<T>> {
    let Some(tv) = stored else { return Ok(None) };
    let now = ttl.now();
    if ttl.expired(tv.last_access, now) {
        clear()?;
        return Ok(ttl.return_expired.then_some(tv.value));
    }
    if ttl.refresh_on_read {
        refresh_serialized(inner, now)?;
    }
    Ok(Some(tv.value))
}

/// [`ReducingState`] with TTL: the folded value expires as a whole; adding to an
/// expired value starts afresh.
pub struct TtlReducingState<N, T> {
    inner: Rc<dyn InternalReducingState<N, TtlValue<T>>>,
    ttl: Ttl,
}

impl<N, T> ReducingState<T> for TtlReducingState<N, T> {
    fn get(&self) -> StateResult<Option<T>> {
        read_whole(
            self.inner.as_ref(),
            self.inner.get()?,
            || self.inner.clear(),
            &self.ttl,
        )
    }
    fn add(&self, value: T) -> StateResult<()> {
        self.inner.add(self.ttl.wrap(value, self.ttl.now()))
    }
    fn clear(&self) -> StateResult<()> {
        self.inner.clear()
    }
}

forward_kv!(TtlReducingState<T>);
impl<N, T> InternalMergingState<N> for TtlReducingState<N, T> {
    fn merge_namespaces(&self, target: &N, sources: &[N]) -> StateResult<()> {
        self.inner.merge_namespaces(target, sources)
    }
}
impl<N, T> InternalReducingState<N, T> for TtlReducingState<N, T> {}

/// [`AggregatingState`] with TTL: the accumulator expires as a whole; adding to an
/// expired accumulator starts a fresh one.
pub struct TtlAggregatingState<N, IN, OUT> {
    inner: Rc<dyn InternalAggregatingState<N, IN, TtlValue<OUT>>>,
    ttl: Ttl,
}

impl<N, IN, OUT> AggregatingState<IN, OUT> for TtlAggregatingState<N, IN, OUT> {
    fn get(&self) -> StateResult<Option<OUT>> {
        read_whole(
            self.inner.as_ref(),
            self.inner.get()?,
            || self.inner.clear(),
            &self.ttl,
        )
    }
    fn add(&self, value: IN) -> StateResult<()> {
        self.inner.add(value)
    }
    fn clear(&self) -> StateResult<()> {
        self.inner.clear()
    }
}

forward_kv!(TtlAggregatingState<IN, OUT>);
impl<N, IN, OUT> InternalMergingState<N> for TtlAggregatingState<N, IN, OUT> {
    fn merge_namespaces(&self, target: &N, sources: &[N]) -> StateResult<()> {
        self.inner.merge_namespaces(target, sources)
    }
}
impl<N, IN, OUT> InternalAggregatingState<N, IN, OUT> for TtlAggregatingState<N, IN, OUT> {}

/// The user's aggregate function over timestamped accumulators: an expired
/// accumulator is replaced by a fresh one before adding; results carry the timestamp
/// so the decorator can check expiry.
struct TtlAggregateFunction<IN, ACC, OUT> {
    function: Arc<dyn AggregateFunction<IN, ACC, OUT>>,
    ttl: Ttl,
}

impl<IN: 'static, ACC: 'static, OUT: 'static> AggregateFunction<IN, TtlValue<ACC>, TtlValue<OUT>>
    for TtlAggregateFunction<IN, ACC, OUT>
{
    fn create_accumulator(&self) -> TtlValue<ACC> {
        self.ttl
            .wrap(self.function.create_accumulator(), self.ttl.now())
    }
    fn add(&self, value: IN, acc: &mut TtlValue<ACC>) {
        let now = self.ttl.now();
        if self.ttl.expired(acc.last_access, now) {
            acc.value = self.function.create_accumulator();
        }
        self.function.add(value, &mut acc.value);
        acc.last_access = now;
    }
    fn get_result(&self, acc: &TtlValue<ACC>) -> TtlValue<OUT> {
        TtlValue {
            value: self.function.get_result(&acc.value),
            last_access: acc.last_access,
        }
    }
    fn merge(&self, acc: &mut TtlValue<ACC>, other: TtlValue<ACC>) {
        let now = self.ttl.now();
        match (
            self.ttl.expired(acc.last_access, now),
            self.ttl.expired(other.last_access, now),
        ) {
            (false, false) => {
                self.function.merge(&mut acc.value, other.value);
                acc.last_access = now;
            }
            (true, false) => *acc = other,
            _ => {}
        }
    }
}

// ---- building TTL states over a backend's registration ----

/// The value state of `desc` with TTL `cfg` over the stored form that `create`
/// registers with a backend (the backend interface calls this when a descriptor
/// carries an enabled TTL).
pub fn value_state<N, T>(
    desc: &ValueStateDescriptor<T>,
    cfg: &StateTtlConfig,
    create: impl FnOnce(
        &ValueStateDescriptor<TtlValue<T>>,
    ) -> StateResult<Rc<dyn InternalValueState<N, TtlValue<T>>>>,
) -> StateResult<Rc<dyn InternalValueState<N, T>>>
where
    N: Namespace,
    T: StateValue,
{
    let stored = ValueStateDescriptor::with_serializer(
        desc.name(),
        Arc::new(TtlSerializer::new(
            desc.serializer().clone(),
            cfg.clock().clone(),
        )),
    )
    .with_ttl_storage(storage_for::<T>(cfg));
    Ok(Rc::new(TtlValueState {
        inner: create(&stored)?,
        ttl: Ttl::new(cfg),
        default: desc.default_value().cloned(),
    }))
}

/// The list state of `desc` with TTL `cfg` over the stored form `create` registers.
pub fn list_state<N, T>(
    desc: &ListStateDescriptor<T>,
    cfg: &StateTtlConfig,
    create: impl FnOnce(
        &ListStateDescriptor<TtlValue<T>>,
    ) -> StateResult<Rc<dyn InternalListState<N, TtlValue<T>>>>,
) -> StateResult<Rc<dyn InternalListState<N, T>>>
where
    N: Namespace,
    T: StateValue,
{
    let stored = ListStateDescriptor::with_serializer(
        desc.name(),
        Arc::new(TtlSerializer::new(
            desc.serializer().clone(),
            cfg.clock().clone(),
        )),
    )
    .with_ttl_storage(storage_for::<T>(cfg));
    Ok(Rc::new(TtlListState {
        inner: create(&stored)?,
        ttl: Ttl::new(cfg),
    }))
}

/// The map state of `desc` with TTL `cfg` over the stored form `create` registers.
pub fn map_state<N, UK, UV>(
    desc: &MapStateDescriptor<UK, UV>,
    cfg: &StateTtlConfig,
    create: impl FnOnce(
        &MapStateDescriptor<UK, TtlValue<UV>>,
    ) -> StateResult<Rc<dyn InternalMapState<N, UK, TtlValue<UV>>>>,
) -> StateResult<Rc<dyn InternalMapState<N, UK, UV>>>
where
    N: Namespace,
    UK: StateKey,
    UV: StateValue,
{
    let stored = MapStateDescriptor::with_serializers(
        desc.name(),
        desc.key_serializer().clone(),
        Arc::new(TtlSerializer::new(
            desc.value_serializer().clone(),
            cfg.clock().clone(),
        )),
    )
    .with_ttl_storage(storage_for::<UV>(cfg));
    Ok(Rc::new(TtlMapState {
        inner: create(&stored)?,
        ttl: Ttl::new(cfg),
    }))
}

/// The reducing state of `desc` with TTL `cfg` over the stored form `create`
/// registers.
pub fn reducing_state<N, T>(
    desc: &ReducingStateDescriptor<T>,
    cfg: &StateTtlConfig,
    create: impl FnOnce(
        &ReducingStateDescriptor<TtlValue<T>>,
    ) -> StateResult<Rc<dyn InternalReducingState<N, TtlValue<T>>>>,
) -> StateResult<Rc<dyn InternalReducingState<N, T>>>
where
    N: Namespace,
    T: StateValue,
{
    let ttl = Ttl::new(cfg);
    let reduce = desc.reduce_fn().clone();
    let t = ttl.clone();
    // Folding into an expired value starts afresh (Flink's TtlReduceFunction).
    let ttl_reduce = move |acc: &TtlValue<T>, new: &TtlValue<T>| -> TtlValue<T> {
        let now = t.now();
        match (
            t.expired(acc.last_access, now),
            t.expired(new.last_access, now),
        ) {
            (false, false) => t.wrap(reduce(&acc.value, &new.value), now),
            (true, false) => new.clone(),
            (false, true) => acc.clone(),
            (true, true) => new.clone(),
        }
    };
    let stored = ReducingStateDescriptor::with_serializer(
        desc.name(),
        Arc::new(ttl_reduce),
        Arc::new(TtlSerializer::new(
            desc.serializer().clone(),
            cfg.clock().clone(),
        )),
    )
    .with_ttl_storage(storage_for::<T>(cfg));
    Ok(Rc::new(TtlReducingState {
        inner: create(&stored)?,
        ttl,
    }))
}

/// The aggregating state of `desc` with TTL `cfg` over the stored form `create`
/// registers.
#[allow(clippy::type_complexity)]
pub fn aggregating_state<N, IN, ACC, OUT>(
    desc: &AggregatingStateDescriptor<IN, ACC, OUT>,
    cfg: &StateTtlConfig,
    create: impl FnOnce(
        &AggregatingStateDescriptor<IN, TtlValue<ACC>, TtlValue<OUT>>,
    ) -> StateResult<Rc<dyn InternalAggregatingState<N, IN, TtlValue<OUT>>>>,
) -> StateResult<Rc<dyn InternalAggregatingState<N, IN, OUT>>>
where
    N: Namespace,
    IN: 'static,
    ACC: StateValue,
    OUT: 'static,
{
    let ttl = Ttl::new(cfg);
    let stored = AggregatingStateDescriptor::with_serializer(
        desc.name(),
        Arc::new(TtlAggregateFunction {
            function: desc.function().clone(),
            ttl: ttl.clone(),
        }),
        Arc::new(TtlSerializer::new(
            desc.serializer().clone(),
            cfg.clock().clone(),
        )),
    )
    .with_ttl_storage(storage_for::<ACC>(cfg));
    Ok(Rc::new(TtlAggregatingState {
        inner: create(&stored)?,
        ttl,
    }))
}
