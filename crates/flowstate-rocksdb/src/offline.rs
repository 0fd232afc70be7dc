//! Native snapshots read offline: a RocksDB native (full or incremental) snapshot
//! opened in a temporary instance and presented as the canonical snapshot of the same
//! state, so tools read both formats through one reader.

use std::path::Path;
use std::sync::Arc;

use flowstate_core::snapshot::{KeyedSnapshot, KeyedStateHandle, KeyedStateWriter, SnapshotFormat};
use flowstate_core::storage::CheckpointStorage;
use flowstate_core::{StateError, StateResult};

use crate::backend::download;
use crate::db::{DbSettings, fresh_dir};
use crate::options::RocksDbOptions;
use crate::snapshot::{CfWriter, CheckpointSource, Manifest};

/// The canonical snapshot of the native snapshot `handle`: its files are downloaded
/// (every SST checked against its recorded size and checksum) into a fresh directory
/// under `work_dir`, opened read-only, and read column family by column family when
/// the returned snapshot is written. The directory is removed when the snapshot has
/// been written or dropped. Values are copied as stored: nothing is filtered (an
/// offline reader does not know the job's TTL).
pub fn native_as_canonical(
    storage: &dyn CheckpointStorage,
    handle: &KeyedStateHandle,
    work_dir: &Path,
) -> StateResult<KeyedSnapshot> {
    if handle.format != SnapshotFormat::RocksDbNative {
        return Err(StateError::InvalidArgument(format!(
            "`{}` is not a native RocksDB snapshot",
            handle.path
        )));
    }
    let m = Manifest::decode(&storage.get(&handle.path)?, &handle.path)?;
    if m.max_parallelism != handle.max_parallelism || m.range != handle.key_group_range {
        return Err(StateError::corrupt(
            &handle.path,
            "manifest disagrees with its handle",
        ));
    }
    let settings = Arc::new(DbSettings::new(
        RocksDbOptions::new(work_dir),
        m.max_parallelism,
    ));
    let dir = fresh_dir(work_dir, "offline")?;
    // Owned from here on: removed when the source is dropped, also on error.
    let source = Arc::new(CheckpointSource::new(settings, dir.clone()));
    download(storage, &m, &dir, &handle.path)?;
    let writers: Vec<Box<dyn KeyedStateWriter>> = m
        .metas
        .iter()
        .map(|meta| {
            Box::new(CfWriter {
                source: source.clone(),
                meta: meta.clone(),
                max_parallelism: m.max_parallelism,
            }) as Box<dyn KeyedStateWriter>
        })
        .collect();
    Ok(KeyedSnapshot::new(
        m.max_parallelism,
        m.range,
        m.key_serializer,
        writers,
    ))
}
