//! State handles of the heap backend: the five keyed state kinds over [`StateTable`].
//!
//! A handle reads the backend's current key and key group from the shared
//! [`KeyContext`] and its own current namespace; every operation is one hash and one
//! probe into the current key group's table. Writes go through [`crate::table::KgSlot::to_mut`],
//! which copies the key group's table only while a snapshot still holds it.

use std::cell::RefCell;
use std::hash::{BuildHasher, Hash};
use std::rc::Rc;
use std::sync::Arc;

use flowstate_core::descriptor::{AggregateFunction, ReduceFn};
use flowstate_core::error::{StateError, StateResult};
use flowstate_core::state::{
    AggregatingState, InternalAggregatingState, InternalKvState, InternalListState,
    InternalMapState, InternalMergingState, InternalReducingState, InternalValueState, ListState,
    MapState, ReducingState, ValueState,
};
use hashbrown::hash_table::Entry as SlotEntry;

use crate::table::{Entry, KeyContext, KgSlot, KgTable, StateTable, UserMap};

/// A keyed state handle; `X` carries what the kind needs beyond storage.
pub(crate) struct HeapState<K, N, S, X> {
    pub(crate) ctx: Rc<KeyContext<K>>,
    pub(crate) table: Rc<StateTable<K, N, S>>,
    pub(crate) ns: RefCell<N>,
    pub(crate) extra: X,
}

/// Extra of value state: the descriptor's default.
pub(crate) struct ValueExtra<T>(pub(crate) Option<T>);
/// Extra of list state.
pub(crate) struct ListExtra;
/// Extra of map state.
pub(crate) struct MapExtra;
/// Extra of reducing state.
pub(crate) struct ReduceExtra<T>(pub(crate) ReduceFn<T>);
/// Extra of aggregating state.
pub(crate) struct AggExtra<IN, ACC, OUT>(pub(crate) Arc<dyn AggregateFunction<IN, ACC, OUT>>);

impl<K, N, S, X> HeapState<K, N, S, X>
where
    K: Clone + Eq + Hash + Send + Sync + 'static,
    N: Clone + Eq + Hash + Send + Sync + 'static,
    S: Clone + Send + Sync + 'static,
{
    fn no_key(&self) -> StateError {
        StateError::NoCurrentKey {
            state: self.table.meta.name.clone(),
        }
    }

    /// The tables, for writing; an error while a [`ListState::view`] of this state
    /// lends them out.
    #[inline]
    fn tables_mut(&self) -> StateResult<std::cell::RefMut<'_, Vec<KgSlot<K, N, S>>>> {
        self.table
            .maps
            .try_borrow_mut()
            .map_err(|_| StateError::Lent {
                state: self.table.meta.name.clone(),
            })
    }

    /// Runs `f` on the current entry's value, if any, which it reads inside.
    #[inline]
    fn read<R>(&self, f: impl FnOnce(Option<&S>) -> R) -> StateResult<R> {
        self.table.reads_inside.set(true);
        self.read_entry(f)
    }

    /// [`Self::read`] for an `f` that reads only what the entry holds in line (a
    /// map's length), not what the value keeps apart.
    #[inline]
    fn read_entry<R>(&self, f: impl FnOnce(Option<&S>) -> R) -> StateResult<R> {
        let key = self.ctx.key.borrow();
        let key = key.as_ref().ok_or_else(|| self.no_key())?;
        let ns = self.ns.borrow();
        let maps = self.table.maps.borrow();
        let table = maps
            .get(self.ctx.kg_index.get())
            .ok_or_else(|| self.no_key())?;
        let hash = self.table.hash(key, &ns);
        let r = f(table
            .find(hash, |e| e.key == *key && e.ns == *ns)
            .map(|e| &e.value));
        drop(maps);
        self.table.after_access();
        Ok(r)
    }

    /// Runs `f` with the current key group's table (unshared first), the hash, key and
    /// namespace of the current entry.
    #[inline]
    fn write<R>(&self, f: impl FnOnce(&mut KgTable<K, N, S>, u64, &K, &N) -> R) -> StateResult<R> {
        let key = self.ctx.key.borrow();
        let key = key.as_ref().ok_or_else(|| self.no_key())?;
        let ns = self.ns.borrow();
        let mut maps = self.tables_mut()?;
        let table = maps
            .get_mut(self.ctx.kg_index.get())
            .ok_or_else(|| self.no_key())?;
        let hash = self.table.hash(key, &ns);
        self.table.reads_inside.set(true);
        let r = f(table.to_mut(), hash, key, &ns);
        drop(maps);
        self.table.after_access();
        Ok(r)
    }

    /// Updates the current entry in place: `f` gets `Some(value)` when the entry exists
    /// (and mutates it), or `None` when it does not (and returns the value to insert,
    /// or `None` to leave it absent).
    #[inline]
    fn modify(&self, f: impl FnOnce(Option<&mut S>) -> Option<S>) -> StateResult<()> {
        let hasher = &self.table.hasher;
        self.write(|t, hash, key, ns| {
            match t.entry(
                hash,
                |e| e.key == *key && e.ns == *ns,
                |e| hasher.hash_one((&e.key, &e.ns)),
            ) {
                SlotEntry::Occupied(mut o) => {
                    f(Some(&mut o.get_mut().value));
                }
                SlotEntry::Vacant(v) => {
                    if let Some(value) = f(None) {
                        v.insert(Entry {
                            key: key.clone(),
                            ns: ns.clone(),
                            value,
                        });
                    }
                }
            }
        })
    }

    fn put(&self, value: S) -> StateResult<()> {
        self.modify(|slot| match slot {
            Some(s) => {
                *s = value;
                None
            }
            None => Some(value),
        })
    }

    /// Removes the entry of (current key, `ns`) and returns its value.
    fn take(&self, ns: &N) -> StateResult<Option<S>> {
        let present = {
            let key = self.ctx.key.borrow();
            let key = key.as_ref().ok_or_else(|| self.no_key())?;
            let maps = self.table.maps.borrow();
            let table = maps
                .get(self.ctx.kg_index.get())
                .ok_or_else(|| self.no_key())?;
            table
                .find(self.table.hash(key, ns), |e| e.key == *key && e.ns == *ns)
                .is_some()
        };
        if !present {
            // Avoids unsharing a key group for a no-op during a snapshot.
            return Ok(None);
        }
        let key = self.ctx.key.borrow();
        let key = key.as_ref().ok_or_else(|| self.no_key())?;
        let mut maps = self.tables_mut()?;
        let table = maps
            .get_mut(self.ctx.kg_index.get())
            .ok_or_else(|| self.no_key())?;
        let hash = self.table.hash(key, ns);
        Ok(table
            .to_mut()
            .find_entry(hash, |e| e.key == *key && e.ns == *ns)
            .ok()
            .map(|o| o.remove().0.value))
    }

    fn clear_current(&self) -> StateResult<()> {
        let ns = self.ns.borrow().clone();
        self.take(&ns).map(|_| ())
    }
}

impl<K, N, S, X> InternalKvState<N> for HeapState<K, N, S, X>
where
    K: Clone + Eq + Hash + Send + Sync + 'static,
    N: Clone + Eq + Hash + Send + Sync + 'static,
    S: Clone + Send + Sync + 'static,
{
    fn name(&self) -> &str {
        &self.table.meta.name
    }
    fn set_current_namespace(&self, namespace: N) {
        *self.ns.borrow_mut() = namespace;
    }
    fn get_serialized(&self) -> StateResult<Option<Vec<u8>>> {
        let name = &self.table.meta.name;
        self.read(|v| {
            v.map(|v| {
                let mut out = Vec::new();
                self.table.codec.encode(name, v, &mut out).map(|_| out)
            })
            .transpose()
        })?
    }
    fn set_serialized(&self, payload: &[u8]) -> StateResult<()> {
        let value =
            self.table
                .codec
                .decode(&self.table.meta.name, "<serialized value>", payload)?;
        self.put(value)
    }
}

// ---- value ----

impl<K, N, T> ValueState<T> for HeapState<K, N, T, ValueExtra<T>>
where
    K: Clone + Eq + Hash + Send + Sync + 'static,
    N: Clone + Eq + Hash + Send + Sync + 'static,
    T: Clone + Send + Sync + 'static,
{
    fn value(&self) -> StateResult<Option<T>> {
        self.read(|v| v.cloned().or_else(|| self.extra.0.clone()))
    }
    fn update(&self, value: T) -> StateResult<()> {
        self.put(value)
    }
    fn clear(&self) -> StateResult<()> {
        self.clear_current()
    }
}

impl<K, N, T> InternalValueState<N, T> for HeapState<K, N, T, ValueExtra<T>>
where
    K: Clone + Eq + Hash + Send + Sync + 'static,
    N: Clone + Eq + Hash + Send + Sync + 'static,
    T: Clone + Send + Sync + 'static,
{
}

// ---- list ----

impl<K, N, T> ListState<T> for HeapState<K, N, Vec<T>, ListExtra>
where
    K: Clone + Eq + Hash + Send + Sync + 'static,
    N: Clone + Eq + Hash + Send + Sync + 'static,
    T: Clone + Send + Sync + 'static,
{
    fn get(&self) -> StateResult<Vec<T>> {
        self.read(|v| v.cloned().unwrap_or_default())
    }
    fn view(&self, f: &mut dyn FnMut(&[T])) -> StateResult<()> {
        self.read(|v| f(v.map_or(&[], Vec::as_slice)))
    }
    fn add(&self, value: T) -> StateResult<()> {
        self.modify(|slot| match slot {
            Some(l) => {
                l.push(value);
                None
            }
            None => Some(vec![value]),
        })
    }
    fn add_all(&self, values: Vec<T>) -> StateResult<()> {
        if values.is_empty() {
            return Ok(());
        }
        self.modify(|slot| match slot {
            Some(l) => {
                l.extend(values);
                None
            }
            None => Some(values),
        })
    }
    fn update(&self, values: Vec<T>) -> StateResult<()> {
        if values.is_empty() {
            return self.clear_current();
        }
        self.put(values)
    }
    fn clear(&self) -> StateResult<()> {
        self.clear_current()
    }
}

impl<K, N, T> InternalMergingState<N> for HeapState<K, N, Vec<T>, ListExtra>
where
    K: Clone + Eq + Hash + Send + Sync + 'static,
    N: Clone + Eq + Hash + Send + Sync + 'static,
    T: Clone + Send + Sync + 'static,
{
    fn merge_namespaces(&self, target: &N, sources: &[N]) -> StateResult<()> {
        let mut merged = Vec::new();
        for s in sources {
            if let Some(v) = self.take(s)? {
                merged.extend(v);
            }
        }
        if merged.is_empty() {
            return Ok(());
        }
        let previous = self.ns.replace(target.clone());
        let r = self.add_all(merged);
        *self.ns.borrow_mut() = previous;
        r
    }
}

impl<K, N, T> InternalListState<N, T> for HeapState<K, N, Vec<T>, ListExtra>
where
    K: Clone + Eq + Hash + Send + Sync + 'static,
    N: Clone + Eq + Hash + Send + Sync + 'static,
    T: Clone + Send + Sync + 'static,
{
}

// ---- map ----

impl<K, N, UK, UV> MapState<UK, UV> for HeapState<K, N, UserMap<UK, UV>, MapExtra>
where
    K: Clone + Eq + Hash + Send + Sync + 'static,
    N: Clone + Eq + Hash + Send + Sync + 'static,
    UK: Clone + Eq + Hash + Send + Sync + 'static,
    UV: Clone + Send + Sync + 'static,
{
    fn get(&self, key: &UK) -> StateResult<Option<UV>> {
        self.read(|m| m.and_then(|m| m.get(key).cloned()))
    }
    fn put(&self, key: UK, value: UV) -> StateResult<()> {
        self.modify(|slot| match slot {
            Some(m) => {
                m.insert(key, value);
                None
            }
            None => Some(UserMap::single(key, value)),
        })
    }
    fn put_all(&self, entries: Vec<(UK, UV)>) -> StateResult<()> {
        if entries.is_empty() {
            return Ok(());
        }
        self.modify(|slot| match slot {
            Some(m) => {
                m.extend(entries);
                None
            }
            None => Some(entries.into_iter().collect()),
        })
    }
    fn remove(&self, key: &UK) -> StateResult<()> {
        match self.read(|m| m.map(|m| (m.contains_key(key), m.len())))? {
            // The last user key: drop the whole entry, as Flink does.
            Some((true, 1)) => self.clear_current(),
            Some((true, _)) => self.modify(|slot| {
                if let Some(m) = slot {
                    m.remove(key);
                }
                None
            }),
            _ => Ok(()),
        }
    }
    fn contains(&self, key: &UK) -> StateResult<bool> {
        self.read(|m| m.is_some_and(|m| m.contains_key(key)))
    }
    fn entries(&self) -> StateResult<Vec<(UK, UV)>> {
        self.read(|m| {
            m.map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                .unwrap_or_default()
        })
    }
    fn keys(&self) -> StateResult<Vec<UK>> {
        self.read(|m| m.map(|m| m.keys().cloned().collect()).unwrap_or_default())
    }
    fn values(&self) -> StateResult<Vec<UV>> {
        self.read(|m| m.map(|m| m.values().cloned().collect()).unwrap_or_default())
    }
    fn is_empty(&self) -> StateResult<bool> {
        self.read_entry(|m| m.is_none_or(|m| m.is_empty()))
    }
    fn clear(&self) -> StateResult<()> {
        self.clear_current()
    }
}

impl<K, N, UK, UV> InternalMapState<N, UK, UV> for HeapState<K, N, UserMap<UK, UV>, MapExtra>
where
    K: Clone + Eq + Hash + Send + Sync + 'static,
    N: Clone + Eq + Hash + Send + Sync + 'static,
    UK: Clone + Eq + Hash + Send + Sync + 'static,
    UV: Clone + Send + Sync + 'static,
{
}

// ---- reducing ----

impl<K, N, T> ReducingState<T> for HeapState<K, N, T, ReduceExtra<T>>
where
    K: Clone + Eq + Hash + Send + Sync + 'static,
    N: Clone + Eq + Hash + Send + Sync + 'static,
    T: Clone + Send + Sync + 'static,
{
    fn get(&self) -> StateResult<Option<T>> {
        self.read(|v| v.cloned())
    }
    fn add(&self, value: T) -> StateResult<()> {
        let reduce = &self.extra.0;
        self.modify(|slot| match slot {
            Some(s) => {
                *s = reduce(s, &value);
                None
            }
            None => Some(value),
        })
    }
    fn clear(&self) -> StateResult<()> {
        self.clear_current()
    }
}

impl<K, N, T> InternalMergingState<N> for HeapState<K, N, T, ReduceExtra<T>>
where
    K: Clone + Eq + Hash + Send + Sync + 'static,
    N: Clone + Eq + Hash + Send + Sync + 'static,
    T: Clone + Send + Sync + 'static,
{
    fn merge_namespaces(&self, target: &N, sources: &[N]) -> StateResult<()> {
        let mut merged: Option<T> = None;
        for s in sources {
            if let Some(v) = self.take(s)? {
                merged = Some(match merged {
                    Some(m) => (self.extra.0)(&m, &v),
                    None => v,
                });
            }
        }
        let Some(merged) = merged else { return Ok(()) };
        let previous = self.ns.replace(target.clone());
        let r = self.add(merged);
        *self.ns.borrow_mut() = previous;
        r
    }
}

impl<K, N, T> InternalReducingState<N, T> for HeapState<K, N, T, ReduceExtra<T>>
where
    K: Clone + Eq + Hash + Send + Sync + 'static,
    N: Clone + Eq + Hash + Send + Sync + 'static,
    T: Clone + Send + Sync + 'static,
{
}

// ---- aggregating ----

impl<K, N, IN: 'static, ACC, OUT: 'static> AggregatingState<IN, OUT>
    for HeapState<K, N, ACC, AggExtra<IN, ACC, OUT>>
where
    K: Clone + Eq + Hash + Send + Sync + 'static,
    N: Clone + Eq + Hash + Send + Sync + 'static,
    ACC: Clone + Send + Sync + 'static,
{
    fn get(&self) -> StateResult<Option<OUT>> {
        self.read(|acc| acc.map(|a| self.extra.0.get_result(a)))
    }
    fn add(&self, value: IN) -> StateResult<()> {
        let f = &self.extra.0;
        self.modify(|slot| match slot {
            Some(acc) => {
                f.add(value, acc);
                None
            }
            None => {
                let mut acc = f.create_accumulator();
                f.add(value, &mut acc);
                Some(acc)
            }
        })
    }
    fn clear(&self) -> StateResult<()> {
        self.clear_current()
    }
}

impl<K, N, IN: 'static, ACC, OUT: 'static> InternalMergingState<N>
    for HeapState<K, N, ACC, AggExtra<IN, ACC, OUT>>
where
    K: Clone + Eq + Hash + Send + Sync + 'static,
    N: Clone + Eq + Hash + Send + Sync + 'static,
    ACC: Clone + Send + Sync + 'static,
{
    fn merge_namespaces(&self, target: &N, sources: &[N]) -> StateResult<()> {
        let f = &self.extra.0;
        let mut merged: Option<ACC> = None;
        for s in sources {
            if let Some(acc) = self.take(s)? {
                match merged.as_mut() {
                    Some(m) => f.merge(m, acc),
                    None => merged = Some(acc),
                }
            }
        }
        let Some(merged) = merged else { return Ok(()) };
        let previous = self.ns.replace(target.clone());
        let r = self.modify(|slot| match slot {
            Some(acc) => {
                f.merge(acc, merged);
                None
            }
            None => Some(merged),
        });
        *self.ns.borrow_mut() = previous;
        r
    }
}

impl<K, N, IN: 'static, ACC, OUT: 'static> InternalAggregatingState<N, IN, OUT>
    for HeapState<K, N, ACC, AggExtra<IN, ACC, OUT>>
where
    K: Clone + Eq + Hash + Send + Sync + 'static,
    N: Clone + Eq + Hash + Send + Sync + 'static,
    ACC: Clone + Send + Sync + 'static,
{
}
