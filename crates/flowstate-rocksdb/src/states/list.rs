//! List state on RocksDB: a concatenation of length-prefixed elements per key and
//! namespace; appends are merge operands, never a read-modify-write.

use flowstate_core::StateResult;
use flowstate_core::format::{ByteReader, put_len_prefixed, put_varint, put_vbytes};
use flowstate_core::serializer::IntegerEncoding;
use flowstate_core::snapshot::payload;
use flowstate_core::state::{
    InternalKvState, InternalListState, InternalMergingState, ListState, Namespace, StateKey,
    StateValue,
};

use super::{ListX, RocksState, ser_err};
use crate::buffers::Buf;

/// Splits a stored list (length-prefixed elements back to back) into elements.
pub(crate) fn stored_list_items<'a>(stored: &'a [u8], what: &'a str) -> StateResult<Vec<&'a [u8]>> {
    let mut r = ByteReader::new(stored, what);
    let mut items = Vec::new();
    while !r.is_empty() {
        items.push(r.vbytes("list element")?);
    }
    Ok(items)
}

/// Canonical list payload (count, then elements) of a stored list.
pub(crate) fn stored_list_to_canonical(stored: &[u8], what: &str) -> StateResult<Vec<u8>> {
    let n = stored_list_items(stored, what)?.len();
    let mut out = Vec::with_capacity(stored.len() + 5);
    put_varint(&mut out, n as u32);
    out.extend_from_slice(stored);
    Ok(out)
}

/// Stored form of a canonical list payload (checks every element).
pub(crate) fn canonical_list_to_stored(canonical: &[u8], what: &str) -> StateResult<Vec<u8>> {
    let mut out = Vec::with_capacity(canonical.len());
    for item in payload::list_items(canonical, what)? {
        put_vbytes(&mut out, item)?;
    }
    Ok(out)
}

// ---- list ----

impl<K: StateKey, N: Namespace, T: StateValue> RocksState<K, N, ListX<T>> {
    /// `values` as stored list items (each with its length in front), serialized in
    /// place into one of the handle's spare buffers: no allocation, and no buffer or
    /// copy per item.
    fn encode_items(&self, values: &[T]) -> StateResult<Buf<'_>> {
        let mut buf = self.buffers.take();
        // Through the `Vec` itself: the loop below then works on it directly.
        let out: &mut Vec<u8> = &mut buf;
        out.reserve(values.len() * 11 + 16);
        for v in values {
            match IntegerEncoding::of(v).filter(|_| self.extra.integers) {
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
