//! Opening a checkpoint or savepoint and reading its operators' state as stored:
//! keyed entries key group by key group (native RocksDB snapshots through a temporary
//! RocksDB instance), and operator state files.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use flowstate_core::StateError;
use flowstate_core::checkpoint_metadata::{CheckpointMetadata, OperatorSnapshotMeta};
use flowstate_core::format::{KIND_KEYED_MANAGED, KeyGroupFileReader};
use flowstate_core::keygroup::KeyGroupRange;
use flowstate_core::operator::{EncodedState, merge_operator_states, parse_operator_file};
use flowstate_core::serializer::SerializerSnapshot;
use flowstate_core::snapshot::{
    KeyedStateHandle, RawEntry, SnapshotFormat, StateMetaInfo, check_entry_key_group,
    check_header_consistency, decode_header, section_entries, visit_keyed_state,
};
use flowstate_core::storage::CheckpointStorage;
use flowstate_storage::ObjectCheckpointStorage;

use crate::error::{ProcessorError, Result, io_err, state_err};

/// The keyed header of an operator: its key serializer and its states, in the order
/// of the first file that names each.
#[derive(Clone, Debug)]
pub struct KeyedHeader {
    /// Snapshot of the key serializer.
    pub key_serializer: SerializerSnapshot,
    /// The states.
    pub states: Vec<StateMetaInfo>,
}

/// An opened checkpoint or savepoint. Reading never modifies it.
pub struct Snapshot {
    path: PathBuf,
    metadata: CheckpointMetadata,
    storage: Arc<dyn CheckpointStorage>,
    /// Native snapshots converted to canonical ones, per operator (made on first use,
    /// in a temporary directory removed when this value drops).
    converted: RefCell<HashMap<String, Vec<KeyedStateHandle>>>,
    /// Keyed headers and merged operator states already read, per operator (the
    /// snapshot never changes while open; callers ask for them repeatedly).
    headers: RefCell<HashMap<String, Option<KeyedHeader>>>,
    operator_states: RefCell<HashMap<String, BTreeMap<String, EncodedState>>>,
    scratch: RefCell<Option<(tempfile::TempDir, Arc<dyn CheckpointStorage>)>>,
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Snapshot({})", self.path.display())
    }
}

impl Snapshot {
    /// Opens the checkpoint or savepoint in `path` (a directory holding `_metadata`),
    /// or the newest complete checkpoint of the checkpoint directory `path` (its newest
    /// savepoint when it has no checkpoint). Checks
    /// that every file it names exists with its recorded size.
    pub fn open(path: impl AsRef<Path>) -> Result<Snapshot> {
        let given = path.as_ref();
        let dir = given
            .canonicalize()
            .map_err(io_err(format!("opening {}", given.display())))?;
        let (dir, metadata) = if dir.join("_metadata").is_file() {
            let m = read_metadata(&dir)?;
            (dir, m)
        } else {
            let storage = ObjectCheckpointStorage::existing_local(&dir)
                .map_err(|e| ProcessorError::Metadata(format!("{}: {e}", dir.display())))?;
            let newest = flowstate_runtime::checkpoint::list_checkpoints(&storage)
                .map_err(|e| ProcessorError::Metadata(e.to_string()))?
                .into_iter()
                .find_map(Result::ok);
            match newest {
                Some(m) => (dir.join(&m.location), m),
                // A directory holding only savepoints (what `transform` and
                // `bootstrap` write into a new one): its newest savepoint.
                None => {
                    let sp =
                        newest_savepoint(&dir).ok_or_else(|| ProcessorError::NotASnapshot {
                            path: dir.clone(),
                            why: "no `_metadata`, no complete checkpoint `chk-<id>/_metadata` and \
                              no savepoint `savepoints/sp-<id>/_metadata`"
                                .into(),
                        })?;
                    let m = read_metadata(&sp)?;
                    (sp, m)
                }
            }
        };
        let mut root = dir.clone();
        for _ in Path::new(&metadata.location).components() {
            root.pop();
        }
        let storage: Arc<dyn CheckpointStorage> = Arc::new(
            ObjectCheckpointStorage::existing_local(&root)
                .map_err(|e| ProcessorError::Metadata(format!("{}: {e}", root.display())))?,
        );
        match metadata.check_files(storage.as_ref()) {
            Ok(Ok(())) => {}
            Ok(Err(why)) => {
                return Err(ProcessorError::Metadata(format!(
                    "{}: incomplete: {why}",
                    dir.display()
                )));
            }
            Err(e) => return Err(ProcessorError::Metadata(format!("{}: {e}", dir.display()))),
        }
        Ok(Snapshot {
            path: dir,
            metadata,
            storage,
            converted: RefCell::new(HashMap::new()),
            headers: RefCell::new(HashMap::new()),
            operator_states: RefCell::new(HashMap::new()),
            scratch: RefCell::new(None),
        })
    }

    /// The snapshot's directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Its `_metadata`.
    pub fn metadata(&self) -> &CheckpointMetadata {
        &self.metadata
    }

    /// Its max parallelism (number of key groups).
    pub fn max_parallelism(&self) -> u32 {
        self.metadata.max_parallelism
    }

    /// The uids of its operators, sorted.
    pub fn uids(&self) -> Vec<&str> {
        self.metadata.operators.keys().map(String::as_str).collect()
    }

    /// The snapshot of operator `uid`.
    pub fn operator(&self, uid: &str) -> Result<&OperatorSnapshotMeta> {
        self.metadata
            .operators
            .get(uid)
            .ok_or_else(|| ProcessorError::UnknownOperator {
                uid: uid.to_string(),
                known: self.uids().join(", "),
            })
    }

    /// The canonical handles of `uid`'s keyed state and the storage they are in:
    /// the snapshot's own, or for native snapshots their canonical copies.
    fn canonical(&self, uid: &str) -> Result<(Arc<dyn CheckpointStorage>, Vec<KeyedStateHandle>)> {
        let op = self.operator(uid)?;
        let native = op
            .keyed
            .iter()
            .filter(|h| h.format == SnapshotFormat::RocksDbNative)
            .count();
        if native == 0 {
            return Ok((self.storage.clone(), op.keyed.clone()));
        }
        if native != op.keyed.len() {
            return Err(ProcessorError::Metadata(format!(
                "operator `{uid}` mixes canonical and native keyed snapshots"
            )));
        }
        let (scratch_dir, scratch) = self.scratch()?;
        if let Some(h) = self.converted.borrow().get(uid) {
            return Ok((scratch, h.clone()));
        }
        let handles = self.convert_native(uid, &op.keyed, &scratch_dir, &scratch)?;
        self.converted
            .borrow_mut()
            .insert(uid.to_string(), handles.clone());
        Ok((scratch, handles))
    }

    /// The scratch directory (made on first use) and the storage of its canonical
    /// copies.
    fn scratch(&self) -> Result<(PathBuf, Arc<dyn CheckpointStorage>)> {
        let mut slot = self.scratch.borrow_mut();
        if let Some((d, s)) = slot.as_ref() {
            return Ok((d.path().to_path_buf(), s.clone()));
        }
        let dir = tempfile::Builder::new()
            .prefix("flowstate-state-")
            .tempdir()
            .map_err(io_err("creating a scratch directory"))?;
        std::fs::create_dir(dir.path().join("canonical"))
            .map_err(io_err("creating a scratch directory"))?;
        let storage: Arc<dyn CheckpointStorage> = Arc::new(
            ObjectCheckpointStorage::existing_local(dir.path().join("canonical"))
                .map_err(|e| ProcessorError::Metadata(e.to_string()))?,
        );
        let path = dir.path().to_path_buf();
        *slot = Some((dir, storage.clone()));
        Ok((path, storage))
    }

    #[cfg(feature = "rocksdb")]
    fn convert_native(
        &self,
        uid: &str,
        handles: &[KeyedStateHandle],
        scratch_dir: &Path,
        scratch: &Arc<dyn CheckpointStorage>,
    ) -> Result<Vec<KeyedStateHandle>> {
        use flowstate_core::snapshot::AsyncKeyedSnapshot;
        let work = scratch_dir.join("rocksdb");
        std::fs::create_dir_all(&work).map_err(io_err("creating a scratch directory"))?;
        let mut out = Vec::new();
        for (i, h) in handles.iter().enumerate() {
            let what = format!("native snapshot {}", h.path);
            let snapshot = flowstate_rocksdb::native_as_canonical(self.storage.as_ref(), h, &work)
                .map_err(state_err(&what))?;
            out.push(
                snapshot
                    .write(scratch.as_ref(), &format!("{uid}-{i}.kgs"))
                    .map_err(state_err(&what))?,
            );
        }
        Ok(out)
    }

    #[cfg(not(feature = "rocksdb"))]
    fn convert_native(
        &self,
        uid: &str,
        _handles: &[KeyedStateHandle],
        _scratch_dir: &Path,
        _scratch: &Arc<dyn CheckpointStorage>,
    ) -> Result<Vec<KeyedStateHandle>> {
        Err(ProcessorError::Invalid(format!(
            "operator `{uid}` has native RocksDB snapshots and this build has no RocksDB \
             (feature `rocksdb`)"
        )))
    }

    /// The keyed header of `uid` (`None`: it has no keyed state), read from every
    /// file's header and checked for agreement.
    pub fn keyed_header(&self, uid: &str) -> Result<Option<KeyedHeader>> {
        if let Some(h) = self.headers.borrow().get(uid) {
            return Ok(h.clone());
        }
        let header = self.read_keyed_header(uid)?;
        self.headers
            .borrow_mut()
            .insert(uid.to_string(), header.clone());
        Ok(header)
    }

    fn read_keyed_header(&self, uid: &str) -> Result<Option<KeyedHeader>> {
        let (storage, handles) = self.canonical(uid)?;
        let mut key_serializer = None;
        let mut kinds = HashMap::new();
        let mut states: Vec<StateMetaInfo> = Vec::new();
        for h in &handles {
            let what = format!("keyed state {}", h.path);
            let file = KeyGroupFileReader::open(storage.as_ref(), &h.path, KIND_KEYED_MANAGED)
                .map_err(state_err(&what))?;
            let (key, metas) = decode_header(file.header(), &h.path).map_err(state_err(&what))?;
            let header = flowstate_core::snapshot::RestoredFileHeader {
                path: h.path.clone(),
                key_serializer: key,
                metas,
            };
            check_header_consistency(&mut key_serializer, &mut kinds, &header)
                .map_err(state_err(&what))?;
            for m in header.metas {
                if !states.iter().any(|s| s.name == m.name) {
                    states.push(m);
                }
            }
        }
        Ok(key_serializer.map(|key_serializer| KeyedHeader {
            key_serializer,
            states,
        }))
    }

    /// Calls `f` with every keyed entry of `uid` in the key groups of `range` (all
    /// when `None`), key group by key group: the state it belongs to, its key group
    /// and the stored key, namespace and canonical payload. Every key is checked to
    /// belong to the key group it is stored under.
    pub fn for_each_entry(
        &self,
        uid: &str,
        range: Option<KeyGroupRange>,
        mut f: impl FnMut(&StateMetaInfo, u32, RawEntry<'_>) -> Result<()>,
    ) -> Result<()> {
        let (storage, handles) = self.canonical(uid)?;
        let max_p = self.max_parallelism();
        let all = KeyGroupRange::all(max_p).map_err(state_err("max parallelism"))?;
        let range = range.map_or(all, |r| r.intersection(&all));
        let mut failure: Option<ProcessorError> = None;
        let mut key_serializer = None;
        let mut kinds = HashMap::new();
        let visited = visit_keyed_state(
            storage.as_ref(),
            &handles,
            max_p,
            range,
            |header| check_header_consistency(&mut key_serializer, &mut kinds, header),
            |header, meta, kg, section| {
                for e in section_entries(&section, &header.path)? {
                    check_entry_key_group(&header.path, &meta.name, e.key, kg, max_p)?;
                    if let Err(e) = f(meta, kg, e) {
                        failure = Some(e);
                        return Err(StateError::InvalidArgument("stopped".into()));
                    }
                }
                Ok(())
            },
        );
        if let Some(e) = failure {
            return Err(e);
        }
        visited.map_err(state_err(format!("keyed state of `{uid}`")))
    }

    /// The operator state of `uid` merged over its instances as a restore reads it
    /// ([`merge_operator_states`]): list elements of every instance in instance
    /// order, broadcast state once (every instance holds the same copy).
    pub fn merged_operator_states(&self, uid: &str) -> Result<BTreeMap<String, EncodedState>> {
        if let Some(m) = self.operator_states.borrow().get(uid) {
            return Ok(m.clone());
        }
        let op = self.operator(uid)?;
        let merged = merge_operator_states(op.operator.iter().map(|h| {
            let bytes = self.storage.get(&h.path)?;
            Ok((h.path.clone(), parse_operator_file(&bytes, &h.path)?))
        }))
        .map_err(state_err(format!("operator state of `{uid}`")))?;
        self.operator_states
            .borrow_mut()
            .insert(uid.to_string(), merged.clone());
        Ok(merged)
    }
}

/// The savepoint `savepoints/sp-<id>` of `dir` with the highest id and a `_metadata`.
fn newest_savepoint(dir: &Path) -> Option<PathBuf> {
    std::fs::read_dir(dir.join("savepoints"))
        .ok()?
        .flatten()
        .filter_map(|e| {
            let id = flowstate_core::checkpoint_metadata::sp_id(e.file_name().to_str()?)?;
            e.path().join("_metadata").is_file().then(|| (id, e.path()))
        })
        .max_by_key(|(id, _)| *id)
        .map(|(_, p)| p)
}

fn read_metadata(dir: &Path) -> Result<CheckpointMetadata> {
    let path = dir.join("_metadata");
    let bytes = std::fs::read(&path).map_err(io_err(format!("reading {}", path.display())))?;
    CheckpointMetadata::parse(&bytes, &path.display().to_string()).map_err(ProcessorError::Metadata)
}
