//! Writing a new canonical savepoint: operators' keyed entries placed in their key
//! groups for a chosen max parallelism and split over a chosen parallelism, operator
//! state distributed as a job would have written it, `_metadata` last, then the whole
//! savepoint read back and compared with what was meant; on a mismatch or any error
//! the files written are removed and nothing else is touched.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use flowstate_core::StateResult;
use flowstate_core::checkpoint_metadata::{
    CheckpointMetadata, METADATA_VERSION, OperatorSnapshotMeta, SnapshotKind, chk_id, sp_id,
};
use flowstate_core::format::put_vbytes;
use flowstate_core::keygroup::{
    check_max_parallelism, key_group_for_serialized_key, key_group_range_for_operator,
};
use flowstate_core::operator::{
    EncodedState, Item, OperatorStateMode, encode_operator_file, even_split,
};
use flowstate_core::serializer::SerializerSnapshot;
use flowstate_core::snapshot::{
    AsyncKeyedSnapshot, EntryEncoder, KeyedSnapshot, KeyedStateWriter, RawEntry, StateMetaInfo,
    check_kind, section_entries,
};
use flowstate_core::storage::CheckpointStorage;
use flowstate_runtime::ownership::claim_checkpoint_dir;
use flowstate_storage::ObjectCheckpointStorage;
use xxhash_rust::xxh3::xxh3_64;

use crate::error::{ProcessorError, Result, io_err, state_err};
use crate::reader::Snapshot;

/// Keyed state of one operator being written.
#[derive(Debug)]
pub struct KeyedData {
    key_serializer: SerializerSnapshot,
    states: Vec<StateMetaInfo>,
    /// Per state id: per key group, the encoded entries (canonical section body).
    sections: Vec<BTreeMap<u32, Vec<u8>>>,
}

impl KeyedData {
    /// The states, in id order.
    pub fn states(&self) -> &[StateMetaInfo] {
        &self.states
    }
}

/// One operator of the savepoint being written.
#[derive(Debug, Default)]
pub struct OperatorData {
    /// Whether the uid is the user's (restores only into the operator with that uid).
    pub user_uid: bool,
    keyed: Option<KeyedData>,
    operator_states: BTreeMap<String, EncodedState>,
}

impl OperatorData {
    /// Declares the keyed state's key serializer (every state of an operator has the
    /// same key).
    pub fn keyed(&mut self, key_serializer: SerializerSnapshot) -> Result<&mut Self> {
        match &self.keyed {
            Some(k) if k.key_serializer != key_serializer => {
                return Err(ProcessorError::Invalid(
                    "an operator's keyed states must all have the same key type".into(),
                ));
            }
            Some(_) => {}
            None => {
                self.keyed = Some(KeyedData {
                    key_serializer,
                    states: Vec::new(),
                    sections: Vec::new(),
                })
            }
        }
        Ok(self)
    }

    /// Adds (or finds) a keyed state and returns its id for [`SavepointWriter::put`].
    pub fn state(&mut self, meta: StateMetaInfo) -> Result<u32> {
        let k = self
            .keyed
            .as_mut()
            .ok_or_else(|| ProcessorError::Invalid("declare the key type first".into()))?;
        if let Some(i) = k.states.iter().position(|s| s.name == meta.name) {
            check_kind(&meta.name, k.states[i].kind, meta.kind).map_err(state_err(&meta.name))?;
            if k.states[i] != meta {
                return Err(ProcessorError::Invalid(format!(
                    "state `{}` declared twice with different serializers",
                    meta.name
                )));
            }
            return Ok(i as u32);
        }
        flowstate_core::snapshot::check_state_name(&meta.name).map_err(ProcessorError::Invalid)?;
        k.states.push(meta);
        k.sections.push(BTreeMap::new());
        Ok((k.states.len() - 1) as u32)
    }

    /// The keyed data, if any.
    pub fn keyed_data(&self) -> Option<&KeyedData> {
        self.keyed.as_ref()
    }

    /// Sets an operator state (replacing one of the same name).
    pub fn operator_state(&mut self, name: &str, state: EncodedState) {
        self.operator_states.insert(name.to_string(), state);
    }
}

/// A savepoint being assembled; [`SavepointWriter::write`] writes and verifies it.
#[derive(Debug)]
pub struct SavepointWriter {
    max_parallelism: u32,
    parallelism: u32,
    operators: BTreeMap<String, OperatorData>,
}

/// Where a written savepoint is and what it holds.
#[derive(Clone, Debug)]
pub struct Written {
    /// The savepoint's directory (give it to `run --from`).
    pub path: PathBuf,
    /// Its id.
    pub id: u64,
    /// Keyed entries written.
    pub entries: u64,
    /// Bytes of the files written.
    pub bytes: u64,
}

impl SavepointWriter {
    /// A savepoint of `max_parallelism` key groups, written as `parallelism`
    /// instances' files (any parallelism restores it; this only decides the files).
    pub fn new(max_parallelism: u32, parallelism: u32) -> Result<Self> {
        check_max_parallelism(max_parallelism).map_err(state_err("max parallelism"))?;
        if parallelism == 0 || parallelism > max_parallelism {
            return Err(ProcessorError::Invalid(format!(
                "parallelism {parallelism} must be between 1 and the max parallelism {max_parallelism}"
            )));
        }
        Ok(SavepointWriter {
            max_parallelism,
            parallelism,
            operators: BTreeMap::new(),
        })
    }

    /// The max parallelism.
    pub fn max_parallelism(&self) -> u32 {
        self.max_parallelism
    }

    /// The operator `uid` (created empty, with a user uid, on first use).
    pub fn operator(&mut self, uid: &str) -> Result<&mut OperatorData> {
        if !flowstate_runtime::valid_uid(uid) {
            return Err(ProcessorError::Invalid(format!(
                "`{uid}` is not a valid uid (1 to 128 ASCII letters, digits, `-`, `_`, `.`, \
                 not starting with `.`)"
            )));
        }
        Ok(self
            .operators
            .entry(uid.to_string())
            .or_insert_with(|| OperatorData {
                user_uid: true,
                ..OperatorData::default()
            }))
    }

    /// Adds one keyed entry (serialized key, namespace and canonical payload) to
    /// state `state_id` of `uid`, in the key group its key belongs to under this
    /// savepoint's max parallelism. Each (key, namespace) must be added once per state.
    pub fn put(
        &mut self,
        uid: &str,
        state_id: u32,
        key: &[u8],
        namespace: &[u8],
        payload: &[u8],
    ) -> Result<()> {
        let max_p = self.max_parallelism;
        let k = self
            .operators
            .get_mut(uid)
            .and_then(|o| o.keyed.as_mut())
            .ok_or_else(|| ProcessorError::Invalid(format!("`{uid}` has no keyed state")))?;
        let section = k
            .sections
            .get_mut(state_id as usize)
            .ok_or_else(|| ProcessorError::Invalid(format!("no state id {state_id}")))?
            .entry(key_group_for_serialized_key(key, max_p))
            .or_default();
        let mut enc = EntryEncoder::new(section);
        enc.raw_entry(key, namespace, payload)
            .map_err(state_err(format!("an entry of `{uid}`")))
    }

    /// Writes the savepoint into the checkpoint directory `dir` (created if missing;
    /// a job's own directory is accepted, but not while a job holds it) as
    /// `savepoints/sp-<id>` with an id above every one present, then reads it back and
    /// compares. Nothing existing is overwritten; on failure the files written are
    /// removed.
    pub fn write(self, dir: &Path) -> Result<Written> {
        let lock = claim_checkpoint_dir(dir)
            .map_err(|e| ProcessorError::Invalid(format!("{}: {e}", dir.display())))?;
        let id = next_id(dir)?;
        let storage: Arc<dyn CheckpointStorage> = Arc::new(
            ObjectCheckpointStorage::local(dir)
                .map_err(|e| ProcessorError::Invalid(format!("{}: {e}", dir.display())))?,
        );
        let location = SnapshotKind::Savepoint.location(id);
        let mut written: Vec<String> = Vec::new();
        let result = self.write_files(storage.as_ref(), &location, id, &mut written);
        let result = result.and_then(|(expected, bytes, entries)| {
            let path = dir.join(&location);
            verify(&path, &expected).map(|()| Written {
                path,
                id,
                entries,
                bytes,
            })
        });
        if result.is_err() {
            // Only files this call created, `_metadata` first so a half-removed
            // savepoint is never taken for a complete one.
            written.sort_by_key(|p| !p.ends_with("/_metadata"));
            for p in &written {
                if let Err(e) = storage.delete(p) {
                    tracing::warn!("could not remove {p} after a failed write: {e}");
                }
            }
            let _ = std::fs::remove_dir(dir.join(&location));
        }
        drop(lock);
        result
    }

    fn write_files(
        self,
        storage: &dyn CheckpointStorage,
        location: &str,
        id: u64,
        written: &mut Vec<String>,
    ) -> Result<(Expected, u64, u64)> {
        let started = std::time::Instant::now();
        let (max_p, parallelism) = (self.max_parallelism, self.parallelism);
        let mut expected = Expected::default();
        let mut operators = BTreeMap::new();
        let (mut bytes, mut entries) = (0u64, 0u64);
        for (uid, op) in self.operators {
            let mut meta = OperatorSnapshotMeta {
                user_uid: op.user_uid,
                ..OperatorSnapshotMeta::default()
            };
            if let Some(k) = op.keyed {
                let mut per_state: Vec<BTreeMap<u32, Vec<u8>>> = k.sections;
                for (state, sections) in k.states.iter().zip(&per_state) {
                    let d = expected
                        .keyed
                        .entry((uid.clone(), state.name.clone()))
                        .or_default();
                    for (kg, section) in sections {
                        digest_section(d, *kg, section, &state.name)?;
                    }
                    entries += d.0;
                }
                for i in (0..parallelism).rev() {
                    let range = key_group_range_for_operator(max_p, parallelism, i)
                        .map_err(state_err("key group range"))?;
                    let writers: Vec<Box<dyn KeyedStateWriter>> = k
                        .states
                        .iter()
                        .zip(per_state.iter_mut())
                        .map(|(m, s)| {
                            Box::new(SectionWriter {
                                meta: m.clone(),
                                sections: s.split_off(&range.start()),
                            }) as Box<dyn KeyedStateWriter>
                        })
                        .collect();
                    let path = format!("{location}/{uid}-{i}.kgs");
                    written.push(path.clone());
                    let h = KeyedSnapshot::new(max_p, range, k.key_serializer.clone(), writers)
                        .write(storage, &path)
                        .map_err(state_err(&path))?;
                    bytes += h.size;
                    meta.keyed.push(h);
                }
                meta.keyed.reverse();
            }
            if !op.operator_states.is_empty() {
                expected
                    .operator
                    .insert(uid.clone(), op.operator_states.clone());
                for i in 0..parallelism {
                    let mine = instance_share(&op.operator_states, parallelism, i);
                    let path = format!("{location}/{uid}-{i}.ops");
                    written.push(path.clone());
                    let h = encode_operator_file(i, &mine)
                        .and_then(|s| s.write(storage, &path))
                        .map_err(state_err(&path))?;
                    bytes += h.size;
                    meta.operator.push(h);
                }
            }
            operators.insert(uid, meta);
        }
        let metadata = CheckpointMetadata {
            version: METADATA_VERSION,
            id,
            kind: SnapshotKind::Savepoint,
            location: location.to_string(),
            finished: false,
            triggered_at_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            duration_ms: started.elapsed().as_millis() as u64,
            parallelism,
            max_parallelism: max_p,
            operators,
        };
        let json = serde_json::to_vec_pretty(&metadata)
            .map_err(|e| ProcessorError::Invalid(format!("encoding _metadata: {e}")))?;
        let path = format!("{location}/_metadata");
        written.push(path.clone());
        storage
            .put(&path, Bytes::from(json))
            .map_err(|e| state_err(&path)(e.into()))?;
        Ok((expected, bytes, entries))
    }
}

/// What instance `i` of `parallelism` stores of the operator states: an even share
/// of each list, union lists all in instance 0 (every instance gets the union on
/// restore), broadcast state in full (every instance holds the same copy).
fn instance_share(
    states: &BTreeMap<String, EncodedState>,
    parallelism: u32,
    i: u32,
) -> BTreeMap<String, EncodedState> {
    states
        .iter()
        .map(|(name, s)| {
            let items: Vec<Item> = match s.mode {
                OperatorStateMode::SplitDistribute => {
                    s.items[even_split(s.items.len(), parallelism as usize, i as usize)].to_vec()
                }
                OperatorStateMode::Union if i == 0 => s.items.clone(),
                OperatorStateMode::Union => Vec::new(),
                OperatorStateMode::Broadcast => s.items.clone(),
            };
            (
                name.clone(),
                EncodedState {
                    mode: s.mode,
                    serializers: s.serializers.clone(),
                    items,
                },
            )
        })
        .collect()
}

/// A state's sections of one instance's key groups.
struct SectionWriter {
    meta: StateMetaInfo,
    sections: BTreeMap<u32, Vec<u8>>,
}

impl KeyedStateWriter for SectionWriter {
    fn meta(&self) -> &StateMetaInfo {
        &self.meta
    }

    fn write_key_group(&mut self, key_group: u32, out: &mut EntryEncoder<'_>) -> StateResult<()> {
        if let Some(s) = self.sections.remove(&key_group) {
            out.raw_entries(&s);
        }
        Ok(())
    }
}

/// Entries and an order-independent digest per (operator, state), and operator
/// states, as meant.
#[derive(Debug, Default, PartialEq)]
struct Expected {
    keyed: BTreeMap<(String, String), (u64, u64)>,
    operator: BTreeMap<String, BTreeMap<String, EncodedState>>,
}

/// Counts an entry into `(entries, digest)`: the digest is a wrapping sum of XXH3
/// over (key group, key, namespace, payload), so the order entries come in does not
/// matter.
fn add_entry(d: &mut (u64, u64), kg: u32, e: &RawEntry<'_>) -> StateResult<()> {
    let mut buf = kg.to_le_bytes().to_vec();
    put_vbytes(&mut buf, e.key)?;
    put_vbytes(&mut buf, e.namespace)?;
    put_vbytes(&mut buf, e.payload)?;
    d.0 += 1;
    d.1 = d.1.wrapping_add(xxh3_64(&buf));
    Ok(())
}

fn digest_section(d: &mut (u64, u64), kg: u32, section: &[u8], state: &str) -> Result<()> {
    for e in section_entries(section, state).map_err(state_err(state))? {
        add_entry(d, kg, &e).map_err(state_err(state))?;
    }
    Ok(())
}

/// Reads the written savepoint back through the same reader jobs restore with and
/// compares it with what was meant.
fn verify(path: &Path, expected: &Expected) -> Result<()> {
    let snapshot = Snapshot::open(path)?;
    let mut got = Expected::default();
    for uid in snapshot.uids() {
        if let Some(header) = snapshot.keyed_header(uid)? {
            let mut d: HashMap<String, (u64, u64)> = HashMap::new();
            snapshot.for_each_entry(uid, None, |meta, kg, e| {
                add_entry(d.entry(meta.name.clone()).or_default(), kg, &e)
                    .map_err(state_err(&meta.name))
            })?;
            for m in header.states {
                let x = d.remove(&m.name).unwrap_or_default();
                got.keyed.insert((uid.to_string(), m.name), x);
            }
        }
        let ops = snapshot.merged_operator_states(uid)?;
        if !ops.is_empty() {
            got.operator.insert(uid.to_string(), ops);
        }
    }
    if &got != expected {
        let diff = expected
            .keyed
            .iter()
            .find(|(k, v)| got.keyed.get(*k) != Some(*v))
            .map_or_else(
                || "operator state differs".to_string(),
                |((uid, state), (n, _))| {
                    format!(
                        "state `{state}` of `{uid}`: {n} entries meant, {} read back",
                        got.keyed
                            .get(&(uid.clone(), state.clone()))
                            .map_or(0, |x| x.0)
                    )
                },
            );
        return Err(ProcessorError::Verification(diff));
    }
    Ok(())
}

/// The next free snapshot id of the checkpoint directory `dir`.
fn next_id(dir: &Path) -> Result<u64> {
    let mut highest = 0;
    let mut scan = |d: &Path, parse: fn(&str) -> Option<u64>| -> Result<()> {
        let entries = match std::fs::read_dir(d) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io_err(format!("listing {}", d.display()))(e)),
        };
        for e in entries.flatten() {
            if let Some(id) = e.file_name().to_str().and_then(parse) {
                highest = highest.max(id);
            }
        }
        Ok(())
    };
    scan(dir, chk_id)?;
    scan(&dir.join("savepoints"), sp_id)?;
    Ok(highest + 1)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use flowstate_core::serializer::{SerdeSerializer, TypeSerializer};
    use flowstate_core::state::{StateKind, VoidNamespace};

    fn one_state(parallelism: u32) -> SavepointWriter {
        let mut w = SavepointWriter::new(128, parallelism).unwrap();
        let op = w.operator("op").unwrap();
        op.keyed(SerdeSerializer::<u32>::new().snapshot()).unwrap();
        let id = op
            .state(StateMetaInfo::new::<VoidNamespace>(
                "v",
                StateKind::Value,
                SerdeSerializer::<u32>::new().snapshot(),
                None,
            ))
            .unwrap();
        for k in 0..100u32 {
            let key = postcard::to_stdvec(&k).unwrap();
            w.put("op", id, &key, &[], &key).unwrap();
        }
        w
    }

    #[test]
    fn verification_compares_every_entry_and_refuses_a_difference() {
        let dir = tempfile::tempdir().unwrap();
        let written = one_state(3).write(dir.path()).unwrap();
        assert_eq!((written.id, written.entries), (1, 100));
        let snapshot = Snapshot::open(&written.path).unwrap();
        assert_eq!(snapshot.operator("op").unwrap().keyed.len(), 3);
        let mut expected = Expected::default();
        expected.keyed.insert(("op".into(), "v".into()), (100, 0));
        let e = verify(&written.path, &expected).unwrap_err();
        assert!(matches!(e, ProcessorError::Verification(_)), "{e}");
        // The next write takes the next id; nothing is overwritten.
        let again = one_state(1).write(dir.path()).unwrap();
        assert_eq!(again.id, 2);
        assert!(written.path.join("_metadata").is_file());
    }

    #[test]
    fn a_directory_that_is_not_a_jobs_is_refused_untouched() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("notes.txt"), b"mine").unwrap();
        assert!(one_state(1).write(dir.path()).is_err());
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("notes.txt")]);
    }

    #[test]
    fn operator_state_is_shared_out_as_a_job_writes_it() {
        let item = |b: u8| Item::Element(Bytes::from(vec![b]));
        let states: BTreeMap<String, EncodedState> = [
            ("split", OperatorStateMode::SplitDistribute),
            ("union", OperatorStateMode::Union),
            ("bcast", OperatorStateMode::Broadcast),
        ]
        .into_iter()
        .map(|(n, mode)| {
            (
                n.to_string(),
                EncodedState {
                    mode,
                    serializers: vec![],
                    items: (0..5).map(item).collect(),
                },
            )
        })
        .collect();
        let shares: Vec<_> = (0..2).map(|i| instance_share(&states, 2, i)).collect();
        assert_eq!(
            shares[0]["split"].items.len() + shares[1]["split"].items.len(),
            5
        );
        assert_eq!(shares[0]["union"].items.len(), 5);
        assert!(shares[1]["union"].items.is_empty());
        assert_eq!(shares[1]["bcast"].items.len(), 5);
        let merged = flowstate_core::operator::merge_operator_states(
            shares
                .into_iter()
                .enumerate()
                .map(|(i, s)| Ok((format!("{i}.ops"), s.into_iter().collect()))),
        )
        .unwrap();
        assert_eq!(merged, states);
    }
}
