//! What every snapshot of [`RocksDbKeyedStateBackend`] starts from: a hard-linked
//! RocksDB checkpoint of the database (deferred writes first), with the descriptions
//! of every state; and the native savepoint built on it.

use std::collections::{BTreeMap, HashMap};

use flowstate_core::StateResult;
use flowstate_core::snapshot::StateMetaInfo;
use flowstate_core::state::StateKey;
use rocksdb::checkpoint::Checkpoint;

use super::RocksDbKeyedStateBackend;
use crate::db::{rerr, unique_id};
use crate::snapshot::{CheckpointSource, NativeSnapshot};

impl<K: StateKey> RocksDbKeyedStateBackend<K> {
    /// A native savepoint: every RocksDB file of the state, uploaded under `dir`
    /// (e.g. `savepoints/sp-9/sst`) so the savepoint is self-contained, never reusing
    /// nor becoming the base of checkpoints' incremental files. Restores faster than a
    /// canonical savepoint but only on this backend (Flink's native savepoint format).
    pub fn native_savepoint(&self, dir: &str) -> StateResult<NativeSnapshot> {
        Ok(NativeSnapshot {
            checkpoint_id: 0,
            source: self.checkpoint()?,
            metas: self.all_metas(),
            key_serializer: self.config.key_serializer.snapshot(),
            range: self.config.key_group_range,
            max_parallelism: self.config.max_parallelism,
            base: HashMap::new(),
            tracker: self.tracker.clone(),
            session: self.session.clone(),
            shared_prefix: dir.to_string(),
            track: false,
        })
    }

    /// Descriptions of every state in the database (registered or restored).
    pub(super) fn all_metas(&self) -> Vec<StateMetaInfo> {
        let mut metas: BTreeMap<String, StateMetaInfo> = self
            .restored
            .borrow()
            .iter()
            .map(|(n, m)| (n.clone(), m.clone()))
            .collect();
        for (n, r) in self.states.borrow().iter() {
            metas.insert(n.clone(), r.meta.clone());
        }
        metas.into_values().collect()
    }

    /// Synchronous part shared by every snapshot: a hard-linked RocksDB checkpoint.
    pub(super) fn checkpoint(&self) -> StateResult<CheckpointSource> {
        self.write_deferred()?;
        // No scan's iterator keeps a version (memtables, files) past a checkpoint.
        for s in self.deferring.borrow().iter() {
            s.release_scan();
        }
        let dir = self
            .settings
            .options
            .local_dir
            .join(format!("snapshot-{}", unique_id()));
        let cp = Checkpoint::new(self.db()).map_err(rerr("create checkpoint"))?;
        cp.create_checkpoint(&dir)
            .map_err(rerr("create checkpoint"))?;
        Ok(CheckpointSource::new(self.settings.clone(), dir))
    }
}
