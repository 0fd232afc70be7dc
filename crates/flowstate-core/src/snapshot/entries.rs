//! The entries of a section: encoding them (`key | namespace | payload`, each
//! length-prefixed) and parsing them back.

use crate::error::{SerializationError, StateError, StateResult};
use crate::format::{ByteReader, put_len_prefixed, put_vbytes};
use crate::serializer::TypeSerializer;

/// Appends canonical entries to a section.
pub struct EntryEncoder<'a> {
    out: &'a mut Vec<u8>,
    /// Entries appended so far (a section without any is dropped).
    pub(super) entries: usize,
}

/// Wraps a serializer's error with the state's name.
pub(super) fn ser_err(state: &str) -> impl Fn(SerializationError) -> StateError + '_ {
    move |e| StateError::serialization(state, e)
}

impl<'a> EntryEncoder<'a> {
    /// An encoder appending to `out` (for writers that post-process a section).
    pub fn new(out: &'a mut Vec<u8>) -> Self {
        EntryEncoder { out, entries: 0 }
    }

    /// Appends an entry: `key` and `namespace` encoded by their serializers, then the
    /// payload produced by `payload`.
    pub fn entry<K: 'static, N: 'static>(
        &mut self,
        state: &str,
        key_serializer: &dyn TypeSerializer<K>,
        key: &K,
        namespace_serializer: &dyn TypeSerializer<N>,
        namespace: &N,
        payload: impl FnOnce(&mut Vec<u8>) -> StateResult<()>,
    ) -> StateResult<()> {
        put_len_prefixed(self.out, |o| key_serializer.serialize_into(key, o))?
            .map_err(ser_err(state))?;
        put_len_prefixed(self.out, |o| {
            namespace_serializer.serialize_into(namespace, o)
        })?
        .map_err(ser_err(state))?;
        put_len_prefixed(self.out, payload)??;
        self.entries += 1;
        Ok(())
    }

    /// Appends an already encoded entry (key, namespace and payload bytes).
    pub fn raw_entry(&mut self, key: &[u8], namespace: &[u8], payload: &[u8]) -> StateResult<()> {
        put_vbytes(self.out, key)?;
        put_vbytes(self.out, namespace)?;
        put_vbytes(self.out, payload)?;
        self.entries += 1;
        Ok(())
    }

    /// Appends already encoded entries verbatim (a section carried over from a restore).
    pub fn raw_entries(&mut self, section: &[u8]) {
        if !section.is_empty() {
            self.out.extend_from_slice(section);
            self.entries += 1;
        }
    }
}

/// One encoded entry of a section.
#[derive(Clone, Copy, Debug)]
pub struct RawEntry<'a> {
    /// Serialized key.
    pub key: &'a [u8],
    /// Serialized namespace.
    pub namespace: &'a [u8],
    /// Canonical payload.
    pub payload: &'a [u8],
}

/// Checks that an entry's key belongs to the key group it is stored under (every
/// reader of a keyed snapshot does: a key in the wrong group would be lost on rescale).
pub fn check_entry_key_group(
    path: &str,
    state: &str,
    key: &[u8],
    key_group: u32,
    max_parallelism: u32,
) -> StateResult<()> {
    if crate::keygroup::key_group_for_serialized_key(key, max_parallelism) != key_group {
        return Err(StateError::corrupt(
            path,
            format!("state `{state}`: a key stored in key group {key_group} belongs elsewhere"),
        ));
    }
    Ok(())
}

/// Parses every entry of a section.
pub fn section_entries<'a>(section: &'a [u8], path: &'a str) -> StateResult<Vec<RawEntry<'a>>> {
    let mut r = ByteReader::new(section, path);
    let mut out = Vec::new();
    while !r.is_empty() {
        let key = r.vbytes("entry key")?;
        let namespace = r.vbytes("entry namespace")?;
        let payload = r.vbytes("entry payload")?;
        out.push(RawEntry {
            key,
            namespace,
            payload,
        });
    }
    Ok(out)
}
