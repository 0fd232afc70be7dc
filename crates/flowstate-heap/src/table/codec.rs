//! What each state kind does with its stored values beyond the table: the canonical
//! payload they are written as, and what a prefetch brings into the cache.

use std::hash::Hash;
use std::sync::Arc;

use flowstate_core::error::{StateError, StateResult};
use flowstate_core::serializer::{MigrationReader, TypeSerializer};
use flowstate_core::snapshot::payload;

use crate::user_map::UserMap;

/// What a state kind does with a stored value `S` beyond the table: encodes and
/// decodes it as a canonical payload, and brings what it points to into the cache.
pub(crate) trait Codec<S>: Send + Sync {
    fn encode(&self, state: &str, value: &S, out: &mut Vec<u8>) -> StateResult<()>;
    fn decode(&self, state: &str, path: &str, payload: &[u8]) -> StateResult<S>;
    /// Loads what `values` keep out of line (a list's last element, a map's first
    /// key), so that the accesses of coming records find it in cache
    /// ([`ErasedTable::touch`]). Inline values have nothing to load. A batch's values
    /// come at once: their loads depend only on the entries, all requested before,
    /// so they overlap.
    fn touch(&self, values: &[&S]) {
        let _ = values;
    }
    /// Whether [`Codec::touch`] loads anything: the prefetch skips it when not.
    fn touches(&self) -> bool {
        false
    }
}

/// Wraps a serializer's error with the state's name.
pub(super) fn ser_err(
    state: &str,
) -> impl Fn(flowstate_core::SerializationError) -> StateError + '_ {
    move |e| StateError::Serialization {
        state: state.to_string(),
        source: e,
    }
}

/// Value, reducing and aggregating state: the payload is the serialized value.
pub(crate) struct ValueCodec<T> {
    pub(crate) ser: Arc<dyn TypeSerializer<T>>,
    pub(crate) reader: MigrationReader<T>,
}

impl<T: 'static> Codec<T> for ValueCodec<T> {
    fn encode(&self, state: &str, value: &T, out: &mut Vec<u8>) -> StateResult<()> {
        payload::put_value(state, self.ser.as_ref(), value, out)
    }
    fn decode(&self, state: &str, _path: &str, bytes: &[u8]) -> StateResult<T> {
        (self.reader)(bytes).map_err(ser_err(state))
    }
}

/// List state: the payload is the element count and the elements.
pub(crate) struct ListCodec<T> {
    pub(crate) ser: Arc<dyn TypeSerializer<T>>,
    pub(crate) reader: MigrationReader<T>,
}

impl<T: Clone + 'static> Codec<Vec<T>> for ListCodec<T> {
    fn encode(&self, state: &str, value: &Vec<T>, out: &mut Vec<u8>) -> StateResult<()> {
        payload::put_list(state, self.ser.as_ref(), value.iter(), out)
    }
    fn decode(&self, state: &str, path: &str, bytes: &[u8]) -> StateResult<Vec<T>> {
        payload::list_items(bytes, path)?
            .into_iter()
            .map(|b| (self.reader)(b).map_err(ser_err(state)))
            .collect()
    }
    fn touch(&self, values: &[&Vec<T>]) {
        // The last element is where an append writes. A prefetch, not a load: a load
        // of it held its place in the CPU's reorder window until the line came, so a
        // read that never goes into the elements (`listGet` taking the length) paid
        // for it (prefetched `listGet` ~22 M -> ~26 M/s, back to back on a 480 MiB-L3
        // Xeon); it also needs no copy, so elements with drop glue are touched too.
        for value in values {
            if let Some(last) = value.last() {
                flowstate_prefetch::prefetch(last);
            }
        }
    }
    fn touches(&self) -> bool {
        true
    }
}

/// Map state: the payload is the pair count and the pairs.
pub(crate) struct MapCodec<UK, UV> {
    pub(crate) key_ser: Arc<dyn TypeSerializer<UK>>,
    pub(crate) value_ser: Arc<dyn TypeSerializer<UV>>,
    pub(crate) value_reader: MigrationReader<UV>,
}

impl<UK: Eq + Hash + 'static, UV: 'static> Codec<UserMap<UK, UV>> for MapCodec<UK, UV> {
    fn encode(&self, state: &str, value: &UserMap<UK, UV>, out: &mut Vec<u8>) -> StateResult<()> {
        payload::put_map(
            state,
            self.key_ser.as_ref(),
            self.value_ser.as_ref(),
            value.iter(),
            out,
        )
    }
    fn decode(&self, state: &str, path: &str, bytes: &[u8]) -> StateResult<UserMap<UK, UV>> {
        let pairs = payload::map_pairs(bytes, path)?;
        let mut map = UserMap::with_capacity(pairs.len());
        for (k, v) in pairs {
            let k = self.key_ser.deserialize(k).map_err(ser_err(state))?;
            map.insert(k, (self.value_reader)(v).map_err(ser_err(state))?);
        }
        Ok(map)
    }
    fn touch(&self, values: &[&UserMap<UK, UV>]) {
        // Every line of pairs, requested without waiting: the look-up of any user key
        // then finds its pair in cache (touching only the first pair left the others'
        // lines to miss: a map of ten pairs spans four).
        for value in values {
            value.prefetch_pairs();
        }
    }
    fn touches(&self) -> bool {
        true
    }
}
