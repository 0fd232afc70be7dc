//! Snapshots of the RocksDB backend.
//!
//! Every snapshot starts the same way in its synchronous part: a RocksDB checkpoint
//! (memtables flushed, SST files hard-linked into a scratch directory), which freezes
//! the state at the snapshot point while processing goes on. The asynchronous part then
//! either
//! - reads the checkpoint and writes the canonical key-group format ([`CfWriter`]), or
//! - uploads the checkpoint's files ([`NativeSnapshot`]): SST files go to the shared
//!   prefix, except those an earlier completed checkpoint already uploaded
//!   (incremental), and the small private files (MANIFEST, OPTIONS, CURRENT) are
//!   inlined into a manifest written at the snapshot's path. The format of the
//!   manifest is in `docs/formats.md`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use flowstate_core::format::{put_varint, put_vbytes};
use flowstate_core::keygroup::KeyGroupRange;
pub(crate) use flowstate_core::native_manifest::NativeManifest as Manifest;
use flowstate_core::rocksdb_list::stored_list_to_canonical;
use flowstate_core::serializer::SerializerSnapshot;
use flowstate_core::snapshot::{
    AsyncKeyedSnapshot, EntryEncoder, KeyedSnapshot, KeyedStateHandle, KeyedStateWriter,
    SharedFile, SnapshotFormat, StateMetaInfo,
};
use flowstate_core::state::StateKind;
use flowstate_core::storage::CheckpointStorage;
use flowstate_core::{StateError, StateResult};
use rocksdb::DB;

use crate::db::{DbSettings, DirGuard, ioerr, rerr, total_order_read_options};
use crate::keys::{key_group_start, parse_key};

/// Which uploaded SST files later checkpoints may refer to.
#[derive(Default)]
pub(crate) struct Tracker {
    /// SST files of checkpoints written but not yet confirmed complete.
    pub(crate) pending: HashMap<u64, HashMap<String, SharedFile>>,
    /// SST files of the last completed checkpoint (or claimed restore), by local name.
    pub(crate) confirmed: HashMap<String, SharedFile>,
}

pub(crate) fn lock(t: &Mutex<Tracker>) -> StateResult<std::sync::MutexGuard<'_, Tracker>> {
    t.lock().map_err(|_| StateError::Backend {
        op: "lock incremental tracker",
        message: "poisoned by a panic in another thread".into(),
    })
}

/// A hard-linked RocksDB checkpoint, opened read-only on first use and deleted when the
/// last user drops it.
pub(crate) struct CheckpointSource {
    settings: Arc<DbSettings>,
    db: Mutex<Option<Arc<DB>>>,
    dir: DirGuard,
}

impl CheckpointSource {
    pub(crate) fn new(settings: Arc<DbSettings>, dir: PathBuf) -> Self {
        CheckpointSource {
            settings,
            db: Mutex::new(None),
            dir: DirGuard(dir),
        }
    }

    fn db(&self) -> StateResult<Arc<DB>> {
        let mut slot = self.db.lock().map_err(|_| StateError::Backend {
            op: "open checkpoint",
            message: "poisoned lock".into(),
        })?;
        if let Some(db) = slot.as_ref() {
            return Ok(db.clone());
        }
        let db = Arc::new(self.settings.open_read_only(&self.dir.0)?);
        *slot = Some(db.clone());
        Ok(db)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.dir.0
    }
}

/// Writes one column family of a checkpoint in the canonical format.
pub(crate) struct CfWriter {
    pub(crate) source: Arc<CheckpointSource>,
    pub(crate) meta: StateMetaInfo,
    pub(crate) max_parallelism: u32,
}

impl KeyedStateWriter for CfWriter {
    fn meta(&self) -> &StateMetaInfo {
        &self.meta
    }

    fn write_key_group(&mut self, key_group: u32, out: &mut EntryEncoder<'_>) -> StateResult<()> {
        let db = self.source.db()?;
        let Some(cf) = db.cf_handle(&self.meta.name) else {
            return Ok(());
        };
        let name = self.meta.name.as_str();
        let mut ro = total_order_read_options();
        ro.fill_cache(false);
        ro.set_iterate_upper_bound(key_group_start(key_group + 1, self.max_parallelism));
        let mut it = db.raw_iterator_cf_opt(&cf, ro);
        it.seek(key_group_start(key_group, self.max_parallelism));
        // Map state: consecutive entries of one (key, namespace) form one payload.
        let mut group: Option<MapGroup> = None;
        while it.valid() {
            let (Some(raw_key), Some(value)) = (it.key(), it.value()) else {
                break;
            };
            let p = parse_key(raw_key, self.max_parallelism, name)?;
            if p.key_group != key_group {
                return Err(StateError::corrupt(
                    name,
                    format!("key of key group {} found in {key_group}", p.key_group),
                ));
            }
            match self.meta.kind {
                StateKind::Map => {
                    let same = group
                        .as_ref()
                        .is_some_and(|g| g.key == p.key && g.namespace == p.namespace);
                    if !same && let Some(g) = group.take() {
                        g.write(out)?;
                    }
                    group
                        .get_or_insert_with(|| MapGroup {
                            key: p.key.to_vec(),
                            namespace: p.namespace.to_vec(),
                            pairs: Vec::new(),
                        })
                        .pairs
                        .push((p.user_key.to_vec(), value.to_vec()));
                }
                StateKind::List => {
                    out.raw_entry(p.key, p.namespace, &stored_list_to_canonical(value, name)?)?
                }
                _ => out.raw_entry(p.key, p.namespace, value)?,
            }
            it.next();
        }
        it.status().map_err(rerr("iterate checkpoint"))?;
        if let Some(g) = group.take() {
            g.write(out)?;
        }
        Ok(())
    }
}

/// The entries of one map (key and namespace), gathered into one canonical payload.
struct MapGroup {
    key: Vec<u8>,
    namespace: Vec<u8>,
    pairs: Vec<(Vec<u8>, Vec<u8>)>,
}

impl MapGroup {
    fn write(self, out: &mut EntryEncoder<'_>) -> StateResult<()> {
        let mut payload = Vec::new();
        put_varint(&mut payload, self.pairs.len() as u32);
        for (k, v) in &self.pairs {
            put_vbytes(&mut payload, k)?;
            put_vbytes(&mut payload, v)?;
        }
        out.raw_entry(&self.key, &self.namespace, &payload)
    }
}

/// The asynchronous part of a native (full or incremental) snapshot.
pub struct NativeSnapshot {
    pub(crate) checkpoint_id: u64,
    pub(crate) source: CheckpointSource,
    pub(crate) metas: Vec<StateMetaInfo>,
    pub(crate) key_serializer: SerializerSnapshot,
    pub(crate) range: KeyGroupRange,
    pub(crate) max_parallelism: u32,
    /// SST files that may be referenced instead of uploaded.
    pub(crate) base: HashMap<String, SharedFile>,
    pub(crate) tracker: Arc<Mutex<Tracker>>,
    pub(crate) session: String,
    pub(crate) shared_prefix: String,
    /// Recorded for `notify_checkpoint_complete` (checkpoints): its files become the
    /// base of later incremental snapshots. A native savepoint's never do.
    pub(crate) track: bool,
}

impl AsyncKeyedSnapshot for NativeSnapshot {
    fn write(self, storage: &dyn CheckpointStorage, path: &str) -> StateResult<KeyedStateHandle> {
        let dir = self.source.path().to_path_buf();
        let mut entries: Vec<(String, PathBuf)> = std::fs::read_dir(&dir)
            .map_err(ioerr("list checkpoint", &dir))?
            .map(|e| e.map(|e| (e.file_name().to_string_lossy().into_owned(), e.path())))
            .collect::<Result<_, _>>()
            .map_err(ioerr("list checkpoint", &dir))?;
        entries.sort();
        let mut manifest = Manifest {
            max_parallelism: self.max_parallelism,
            range: self.range,
            key_serializer: self.key_serializer,
            metas: self.metas,
            ssts: Vec::new(),
            private: Vec::new(),
        };
        let mut uploaded = 0u64;
        for (name, file) in entries {
            if name.ends_with(".sst") {
                let shared = match self.base.get(&name) {
                    Some(f) => f.clone(),
                    None => {
                        let path = format!("{}/{}-{}", self.shared_prefix, self.session, name);
                        let (size, crc) = upload_file(storage, &file, &path)?;
                        uploaded += size;
                        SharedFile {
                            path,
                            size,
                            crc32c: Some(crc),
                        }
                    }
                };
                manifest.ssts.push((name, shared));
            } else {
                let data = std::fs::read(&file).map_err(ioerr("read checkpoint file", &file))?;
                manifest.private.push((name, data));
            }
        }
        let bytes = manifest.encode()?;
        let size = bytes.len() as u64;
        storage.put(path, Bytes::from(bytes))?;
        if self.track {
            lock(&self.tracker)?
                .pending
                .insert(self.checkpoint_id, manifest.ssts.iter().cloned().collect());
        }
        Ok(KeyedStateHandle {
            path: path.to_string(),
            key_group_range: self.range,
            max_parallelism: self.max_parallelism,
            size,
            format: SnapshotFormat::RocksDbNative,
            shared_files: manifest.ssts.into_iter().map(|(_, f)| f).collect(),
            uploaded_bytes: uploaded + size,
        })
        // `self.source` drops here and removes the local checkpoint.
    }
}

/// Streams a local file to `path` in storage without holding it in memory; returns
/// its size and CRC-32C.
fn upload_file(
    storage: &dyn CheckpointStorage,
    file: &Path,
    path: &str,
) -> StateResult<(u64, u32)> {
    use std::io::Read;
    let mut src = std::fs::File::open(file).map_err(ioerr("open checkpoint file", file))?;
    let mut out = storage.create(path)?;
    let mut chunk = vec![0u8; 4 << 20];
    let mut crc = 0u32;
    loop {
        let n = src
            .read(&mut chunk)
            .map_err(ioerr("read checkpoint file", file))?;
        if n == 0 {
            break;
        }
        crc = crc32c::crc32c_append(crc, &chunk[..n]);
        out.write(&chunk[..n])?;
    }
    Ok((out.finish()?, crc))
}

/// A checkpoint in whichever format the backend is configured for.
pub enum RocksDbSnapshot {
    /// Canonical key-group stream.
    Canonical(KeyedSnapshot),
    /// Native files (full or incremental).
    Native(NativeSnapshot),
}

impl AsyncKeyedSnapshot for RocksDbSnapshot {
    fn write(self, storage: &dyn CheckpointStorage, path: &str) -> StateResult<KeyedStateHandle> {
        match self {
            RocksDbSnapshot::Canonical(s) => s.write(storage, path),
            RocksDbSnapshot::Native(s) => s.write(storage, path),
        }
    }
}
