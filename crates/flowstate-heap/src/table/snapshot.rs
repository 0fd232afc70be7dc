//! The asynchronous part of a heap snapshot: each state's key-group tables as they
//! were at the snapshot point, written one key group at a time, and restored states
//! never registered carried over unchanged.

use std::sync::Arc;

use flowstate_core::error::StateResult;
use flowstate_core::keygroup::KeyGroupRange;
use flowstate_core::serializer::TypeSerializer;
use flowstate_core::snapshot::{EntryEncoder, KeyedStateWriter, StateMetaInfo};

use super::{KgTable, codec::Codec};

/// The asynchronous part of a snapshot of one state: the key groups' tables as they
/// were at the snapshot point.
pub(super) struct TableSnapshot<K, N, S> {
    pub(super) meta: StateMetaInfo,
    pub(super) range: KeyGroupRange,
    /// Each key group's table, until it is written.
    pub(super) maps: Vec<Option<Arc<KgTable<K, N, S>>>>,
    pub(super) key_ser: Arc<dyn TypeSerializer<K>>,
    pub(super) ns_ser: Arc<dyn TypeSerializer<N>>,
    pub(super) codec: Arc<dyn Codec<S>>,
}

impl<K, N, S> KeyedStateWriter for TableSnapshot<K, N, S>
where
    K: Send + Sync + 'static,
    N: Send + Sync + 'static,
    S: Send + Sync + 'static,
{
    fn meta(&self) -> &StateMetaInfo {
        &self.meta
    }

    fn write_key_group(&mut self, key_group: u32, out: &mut EntryEncoder<'_>) -> StateResult<()> {
        let Some(table) = self
            .range
            .index_of(key_group)
            .and_then(|i| self.maps[i].take())
        else {
            return Ok(());
        };
        let name = &self.meta.name;
        for e in table.iter() {
            out.entry(
                name,
                self.key_ser.as_ref(),
                &e.key,
                self.ns_ser.as_ref(),
                &e.ns,
                |o| self.codec.encode(name, &e.value, o),
            )?;
        }
        // `table` drops here: the processing thread stops copying this key group.
        Ok(())
    }
}

/// Carries a restored state that was never registered into later snapshots unchanged.
pub(crate) struct PendingWriter {
    pub(crate) meta: StateMetaInfo,
    pub(crate) sections: hashbrown::HashMap<u32, Vec<bytes::Bytes>>,
}

impl KeyedStateWriter for PendingWriter {
    fn meta(&self) -> &StateMetaInfo {
        &self.meta
    }
    fn write_key_group(&mut self, key_group: u32, out: &mut EntryEncoder<'_>) -> StateResult<()> {
        for s in self.sections.remove(&key_group).unwrap_or_default() {
            out.raw_entries(&s);
        }
        Ok(())
    }
}
