//! List state on RocksDB: one stored list per key and namespace, length-prefixed
//! elements and runs of integers (`flowstate_core::rocksdb_list`); appends are merge
//! operands, never a read-modify-write.

use flowstate_core::StateResult;
use flowstate_core::format::put_len_prefixed;
use flowstate_core::rocksdb_list::{
    begin_run, canonical_list_to_stored, stored_list_items, stored_list_to_canonical,
};
use flowstate_core::serializer::IntegerEncoding;
use flowstate_core::state::{
    InternalKvState, InternalListState, InternalMergingState, ListState, Namespace, StateKey,
    StateValue,
};

use super::{ListX, RocksState, ser_err};
use crate::buffers::Buf;

// ---- list ----

impl<K: StateKey, N: Namespace, T: StateValue> RocksState<K, N, ListX<T>> {
    /// `values` as stored list items, serialized in place into one of the handle's
    /// spare buffers: no allocation, and no buffer or copy per item. Postcard integers
    /// (`extra.integers`) go as one run when there are enough of them, without a
    /// length per element; other values, and fewer integers, each with its length.
    fn encode_items(&self, values: &[T]) -> StateResult<Buf<'_>> {
        let mut buf = self.buffers.take();
        // Through the `Vec` itself: the loop below then works on it directly.
        let out: &mut Vec<u8> = &mut buf;
        out.reserve(values.len() * 11 + 16);
        let run = self.extra.integers && begin_run(out, values.len());
        for v in values {
            match IntegerEncoding::of(v).filter(|_| self.extra.integers) {
                Some(e) if run => e.append_to(out),
                // At most ten bytes, so a one-byte length: what `put_len_prefixed`
                // writes, without a call through the serializer per item.
                Some(e) => {
                    out.push(e.len() as u8);
                    e.append_to(out);
                }
                None => put_len_prefixed(out, |o| self.extra.ser.serialize_into(v, o))?
                    .map_err(ser_err(&self.name))?,
            }
        }
        Ok(buf)
    }
}

impl<K: StateKey, N: Namespace, T: StateValue> ListState<T> for RocksState<K, N, ListX<T>> {
    fn get(&self) -> StateResult<Vec<T>> {
        let k = self.entry_key()?;
        self.with_raw(&k, |v| {
            let Some(stored) = v else {
                return Ok(Vec::new());
            };
            stored_list_items(stored, &self.name)?
                .into_iter()
                .map(|b| self.decode(self.extra.ser.as_ref(), b))
                .collect()
        })
    }
    fn add(&self, value: T) -> StateResult<()> {
        let k = self.entry_key()?;
        let operand = self.encode_items(std::slice::from_ref(&value))?;
        self.merge_raw(&k, &operand)
    }
    fn add_all(&self, values: Vec<T>) -> StateResult<()> {
        if values.is_empty() {
            return Ok(());
        }
        let k = self.entry_key()?;
        let operand = self.encode_items(&values)?;
        self.merge_raw(&k, &operand)
    }
    fn update(&self, values: Vec<T>) -> StateResult<()> {
        let k = self.entry_key()?;
        if values.is_empty() {
            return self.delete_raw(&k);
        }
        let stored = self.encode_items(&values)?;
        self.put_raw(&k, &stored)
    }
    fn clear(&self) -> StateResult<()> {
        let k = self.entry_key()?;
        self.delete_raw(&k)
    }
}

impl<K: StateKey, N: Namespace, T: StateValue> InternalKvState<N> for RocksState<K, N, ListX<T>> {
    fn name(&self) -> &str {
        &self.name
    }
    fn set_current_namespace(&self, namespace: N) {
        *self.ns.borrow_mut() = namespace;
    }
    fn get_serialized(&self) -> StateResult<Option<Vec<u8>>> {
        let k = self.entry_key()?;
        self.with_raw(&k, |v| {
            v.map(|s| stored_list_to_canonical(s, &self.name))
                .transpose()
        })
    }
    fn set_serialized(&self, payload: &[u8]) -> StateResult<()> {
        let stored = canonical_list_to_stored(payload, &self.name)?;
        for item in stored_list_items(&stored, &self.name)? {
            self.decode(self.extra.ser.as_ref(), item)?;
        }
        let k = self.entry_key()?;
        if stored.is_empty() {
            self.delete_raw(&k)
        } else {
            self.put_raw(&k, &stored)
        }
    }
}

impl<K: StateKey, N: Namespace, T: StateValue> InternalMergingState<N>
    for RocksState<K, N, ListX<T>>
{
    fn merge_namespaces(&self, target: &N, sources: &[N]) -> StateResult<()> {
        let merged: Vec<u8> = self.take_sources(sources)?.concat();
        if merged.is_empty() {
            return Ok(());
        }
        self.at_namespace(target, |st, k| st.merge_raw(k, &merged))
    }
}

impl<K: StateKey, N: Namespace, T: StateValue> InternalListState<N, T>
    for RocksState<K, N, ListX<T>>
{
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use flowstate_core::backend::{KeyedBackendConfig, KeyedStateBackend};
    use flowstate_core::descriptor::ListStateDescriptor;
    use flowstate_core::keygroup::KeyGroupRange;
    use flowstate_core::serializer::SerdeSerializer;
    use flowstate_core::state::VoidNamespace;

    use crate::{RocksDbKeyedStateBackend, RocksDbOptions};

    fn backend(dir: &tempfile::TempDir) -> RocksDbKeyedStateBackend<u64> {
        let config = KeyedBackendConfig {
            max_parallelism: 128,
            key_group_range: KeyGroupRange::all(128).unwrap(),
            key_serializer: SerdeSerializer::<u64>::arc(),
        };
        RocksDbKeyedStateBackend::new(config, RocksDbOptions::new(dir.path())).unwrap()
    }

    /// The one stored value of state `name` (one key was written).
    fn stored(b: &RocksDbKeyedStateBackend<u64>, name: &str) -> Vec<u8> {
        let entries = b.raw_entries(name).unwrap();
        assert_eq!(entries.len(), 1, "{name}");
        entries.into_iter().next().unwrap().1
    }

    /// What each write stores: integers as a run from four of them on (its count, then
    /// bare varints), fewer integers and other types each with its length; appends
    /// after a run are items of their own.
    #[test]
    fn whole_lists_of_integers_are_stored_as_runs() {
        let dir = tempfile::tempdir().unwrap();
        let b = backend(&dir);
        b.set_current_key(1).unwrap();
        let run = b
            .list_state::<VoidNamespace, u64>(&ListStateDescriptor::new("run"))
            .unwrap();
        run.update(vec![1, 300, u64::MAX, 0]).unwrap();
        run.add(5).unwrap();
        run.add_all(vec![7, 8, 9]).unwrap();
        let signed = b
            .list_state::<VoidNamespace, i32>(&ListStateDescriptor::new("signed"))
            .unwrap();
        signed.add_all(vec![-1, 1, -64, 64]).unwrap();
        let strings = b
            .list_state::<VoidNamespace, String>(&ListStateDescriptor::new("strings"))
            .unwrap();
        strings
            .update(["a", "bc", "", "d"].map(String::from).to_vec())
            .unwrap();
        #[rustfmt::skip]
        let want_run = [
            0x80, 0x00, 4, 0x01, 0xac, 0x02, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            0xff, 0x01, 0x00, // run: 1, 300, u64::MAX, 0
            1, 0x05, // add(5)
            1, 0x07, 1, 0x08, 1, 0x09, // add_all of three
        ];
        assert_eq!(stored(&b, "run"), want_run);
        // Zigzag: -1 -> 1, 1 -> 2, -64 -> 127, 64 -> 128.
        assert_eq!(
            stored(&b, "signed"),
            [0x80, 0x00, 4, 0x01, 0x02, 0x7f, 0x80, 0x01]
        );
        assert_eq!(
            stored(&b, "strings"),
            [2, 1, b'a', 3, 2, b'b', b'c', 1, 0, 2, 1, b'd']
        );
        assert_eq!(run.get().unwrap(), vec![1, 300, u64::MAX, 0, 5, 7, 8, 9]);
        assert_eq!(signed.get().unwrap(), vec![-1, 1, -64, 64]);
    }
}
