//! Value, reducing and aggregating state on RocksDB: one stored value per key and
//! namespace, read and written whole.

use flowstate_core::StateResult;
use flowstate_core::state::{
    AggregatingState, InternalAggregatingState, InternalMergingState, InternalReducingState,
    InternalValueState, Namespace, ReducingState, StateKey, StateValue, ValueState,
};

use super::{AggX, ReduceX, RocksState, ValueX};

// ---- value ----

impl<K: StateKey, N: Namespace, T: StateValue> ValueState<T> for RocksState<K, N, ValueX<T>> {
    fn value(&self) -> StateResult<Option<T>> {
        let k = self.entry_key()?;
        self.with_raw(&k, |v| match v {
            Some(b) => self.decode(self.extra.ser.as_ref(), b).map(Some),
            None => Ok(self.extra.default.clone()),
        })
    }
    fn update(&self, value: T) -> StateResult<()> {
        let k = self.entry_key()?;
        let v = self.encode(self.extra.ser.as_ref(), &value)?;
        self.put_raw(&k, &v)
    }
    fn clear(&self) -> StateResult<()> {
        let k = self.entry_key()?;
        self.delete_raw(&k)
    }
}

impl<K: StateKey, N: Namespace, T: StateValue> InternalValueState<N, T>
    for RocksState<K, N, ValueX<T>>
{
}

// ---- reducing ----

impl<K: StateKey, N: Namespace, T: StateValue> ReducingState<T> for RocksState<K, N, ReduceX<T>> {
    fn get(&self) -> StateResult<Option<T>> {
        let k = self.entry_key()?;
        self.with_raw(&k, |v| {
            v.map(|b| self.decode(self.extra.ser.as_ref(), b))
                .transpose()
        })
    }
    fn add(&self, value: T) -> StateResult<()> {
        let k = self.entry_key()?;
        let current = self.with_raw(&k, |v| {
            v.map(|b| self.decode(self.extra.ser.as_ref(), b))
                .transpose()
        })?;
        let next = match current {
            Some(c) => (self.extra.reduce)(&c, &value),
            None => value,
        };
        let b = self.encode(self.extra.ser.as_ref(), &next)?;
        self.put_raw(&k, &b)
    }
    fn clear(&self) -> StateResult<()> {
        let k = self.entry_key()?;
        self.delete_raw(&k)
    }
}

impl<K: StateKey, N: Namespace, T: StateValue> InternalMergingState<N>
    for RocksState<K, N, ReduceX<T>>
{
    fn merge_namespaces(&self, target: &N, sources: &[N]) -> StateResult<()> {
        let mut merged: Option<T> = None;
        for raw in self.take_sources(sources)? {
            let v = self.decode(self.extra.ser.as_ref(), &raw)?;
            merged = Some(match merged {
                Some(m) => (self.extra.reduce)(&m, &v),
                None => v,
            });
        }
        let Some(m) = merged else { return Ok(()) };
        self.at_namespace(target, |st, _| st.add(m))
    }
}

impl<K: StateKey, N: Namespace, T: StateValue> InternalReducingState<N, T>
    for RocksState<K, N, ReduceX<T>>
{
}

// ---- aggregating ----

impl<K: StateKey, N: Namespace, IN: 'static, ACC: StateValue, OUT: 'static>
    RocksState<K, N, AggX<IN, ACC, OUT>>
{
    fn accumulator(&self, key: &[u8]) -> StateResult<Option<ACC>> {
        self.with_raw(key, |v| {
            v.map(|b| self.decode(self.extra.ser.as_ref(), b))
                .transpose()
        })
    }
}

impl<K: StateKey, N: Namespace, IN: 'static, ACC: StateValue, OUT: 'static>
    AggregatingState<IN, OUT> for RocksState<K, N, AggX<IN, ACC, OUT>>
{
    fn get(&self) -> StateResult<Option<OUT>> {
        let k = self.entry_key()?;
        Ok(self
            .accumulator(&k)?
            .map(|a| self.extra.function.get_result(&a)))
    }
    fn add(&self, value: IN) -> StateResult<()> {
        let k = self.entry_key()?;
        let f = &self.extra.function;
        let mut acc = self
            .accumulator(&k)?
            .unwrap_or_else(|| f.create_accumulator());
        f.add(value, &mut acc);
        let b = self.encode(self.extra.ser.as_ref(), &acc)?;
        self.put_raw(&k, &b)
    }
    fn clear(&self) -> StateResult<()> {
        let k = self.entry_key()?;
        self.delete_raw(&k)
    }
}

impl<K: StateKey, N: Namespace, IN: 'static, ACC: StateValue, OUT: 'static> InternalMergingState<N>
    for RocksState<K, N, AggX<IN, ACC, OUT>>
{
    fn merge_namespaces(&self, target: &N, sources: &[N]) -> StateResult<()> {
        let f = &self.extra.function;
        let mut merged: Option<ACC> = None;
        for raw in self.take_sources(sources)? {
            let acc = self.decode(self.extra.ser.as_ref(), &raw)?;
            match merged.as_mut() {
                Some(m) => f.merge(m, acc),
                None => merged = Some(acc),
            }
        }
        let Some(m) = merged else { return Ok(()) };
        self.at_namespace(target, |st, k| {
            let acc = match st.accumulator(k)? {
                Some(mut a) => {
                    f.merge(&mut a, m);
                    a
                }
                None => m,
            };
            let b = st.encode(st.extra.ser.as_ref(), &acc)?;
            st.put_raw(k, &b)
        })
    }
}

impl<K: StateKey, N: Namespace, IN: 'static, ACC: StateValue, OUT: 'static>
    InternalAggregatingState<N, IN, OUT> for RocksState<K, N, AggX<IN, ACC, OUT>>
{
}
