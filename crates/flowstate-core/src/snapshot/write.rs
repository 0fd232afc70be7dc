//! Writing a keyed snapshot: backends capture one [`KeyedStateWriter`] per state in
//! their synchronous phase, and [`KeyedSnapshot`] writes the canonical file from them
//! on any thread.

use crate::error::StateResult;
use crate::format::{KIND_KEYED_MANAGED, KeyGroupFileWriter, PutLe};
use crate::keygroup::KeyGroupRange;
use crate::serializer::SerializerSnapshot;
use crate::storage::CheckpointStorage;

use super::entries::EntryEncoder;
use super::handle::KeyedStateHandle;
use super::meta::{StateMetaInfo, encode_header};

/// The asynchronous part of a keyed snapshot: written on any thread while processing
/// continues.
pub trait AsyncKeyedSnapshot: Send + 'static {
    /// Writes the snapshot under `path` and returns its handle.
    fn write(self, storage: &dyn CheckpointStorage, path: &str) -> StateResult<KeyedStateHandle>;
}

/// Writes the entries of one state, one key group at a time (the asynchronous part).
pub trait KeyedStateWriter: Send {
    /// The state's stored description.
    fn meta(&self) -> &StateMetaInfo;
    /// Appends every entry of `key_group` to `out` (see [`EntryEncoder`]), then may
    /// release whatever it held for that key group.
    fn write_key_group(&mut self, key_group: u32, out: &mut EntryEncoder<'_>) -> StateResult<()>;
}

/// The asynchronous part of a keyed snapshot: everything needed to write the file.
pub struct KeyedSnapshot {
    max_parallelism: u32,
    range: KeyGroupRange,
    key_serializer: SerializerSnapshot,
    writers: Vec<Box<dyn KeyedStateWriter>>,
}

impl KeyedSnapshot {
    /// Assembles a snapshot from per-state writers (backends call this in their
    /// synchronous phase).
    pub fn new(
        max_parallelism: u32,
        range: KeyGroupRange,
        key_serializer: SerializerSnapshot,
        writers: Vec<Box<dyn KeyedStateWriter>>,
    ) -> Self {
        KeyedSnapshot {
            max_parallelism,
            range,
            key_serializer,
            writers,
        }
    }

    /// Number of states captured.
    pub fn state_count(&self) -> usize {
        self.writers.len()
    }
}

impl AsyncKeyedSnapshot for KeyedSnapshot {
    fn write(
        mut self,
        storage: &dyn CheckpointStorage,
        path: &str,
    ) -> StateResult<KeyedStateHandle> {
        let metas: Vec<StateMetaInfo> = self.writers.iter().map(|w| w.meta().clone()).collect();
        let header = encode_header(&self.key_serializer, &metas)?;
        let mut file = KeyGroupFileWriter::new(
            storage.create(path)?,
            KIND_KEYED_MANAGED,
            self.max_parallelism,
            self.range,
            &header,
        )?;
        for kg in self.range.iter() {
            file.begin_key_group(kg)?;
            for (id, w) in self.writers.iter_mut().enumerate() {
                let out = file.buffer();
                let at = out.len();
                out.put_u32(id as u32);
                out.put_u64(0);
                let mut enc = EntryEncoder::new(out);
                w.write_key_group(kg, &mut enc)?;
                let entries = enc.entries;
                let len = (out.len() - at - 12) as u64;
                if entries == 0 {
                    out.truncate(at);
                } else {
                    out[at + 4..at + 12].copy_from_slice(&len.to_le_bytes());
                }
            }
        }
        let size = file.finish()?;
        Ok(KeyedStateHandle::canonical(
            path,
            self.range,
            self.max_parallelism,
            size,
        ))
    }
}
