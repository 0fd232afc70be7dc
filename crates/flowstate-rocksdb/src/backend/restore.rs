//! Restoring [`RocksDbKeyedStateBackend`]: canonical snapshots key group by key group,
//! native ones by opening the best-overlapping one, clipping it to the owned range and
//! copying in the owned key groups of the others.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use flowstate_core::backend::KeyedBackendConfig;
use flowstate_core::format::put_vbytes;
use flowstate_core::rocksdb_list::canonical_list_to_stored;
use flowstate_core::serializer::require_same_layout;
use flowstate_core::snapshot::{
    ClaimMode, KeyedStateHandle, SnapshotFormat, StateMetaInfo, check_entry_key_group,
    check_header_consistency, payload, section_entries, visit_keyed_state,
};
use flowstate_core::state::{StateKey, StateKind};
use flowstate_core::storage::CheckpointStorage;
use flowstate_core::{StateError, StateResult};
use rocksdb::WriteBatch;

use crate::db::{
    DbHolder, DbSettings, DirGuard, fresh_dir, ioerr, rerr, total_order_read_options, write_options,
};
use crate::keys::{ALL_KEYS_END, key_group_start, key_prefix};
use crate::options::RocksDbOptions;
use crate::snapshot::{Manifest, lock};

use super::RocksDbKeyedStateBackend;

impl<K: StateKey> RocksDbKeyedStateBackend<K> {
    /// Restores from snapshots of any parallelism with the same max parallelism, reading
    /// only the key groups of `config.key_group_range`. Canonical snapshots (from any
    /// backend) are loaded key group by key group; native ones are rescaled by opening
    /// the best-overlapping one, clipping it to the range with range deletes, and copying
    /// in the owned key groups of the others.
    pub fn restore(
        config: KeyedBackendConfig<K>,
        options: RocksDbOptions,
        storage: &dyn CheckpointStorage,
        handles: &[KeyedStateHandle],
    ) -> StateResult<Self> {
        config.validate()?;
        let range = config.key_group_range;
        let overlapping: Vec<&KeyedStateHandle> = handles
            .iter()
            .filter(|h| !h.key_group_range.intersection(&range).is_empty())
            .collect();
        let native = overlapping
            .iter()
            .filter(|h| h.format == SnapshotFormat::RocksDbNative)
            .count();
        if native == 0 {
            let owned: Vec<KeyedStateHandle> = overlapping.into_iter().cloned().collect();
            return Self::restore_canonical(config, options, storage, &owned);
        }
        if native != overlapping.len() {
            return Err(StateError::InvalidArgument(
                "cannot restore from a mix of canonical and native snapshots".into(),
            ));
        }
        Self::restore_native(config, options, storage, &overlapping)
    }

    fn restore_canonical(
        config: KeyedBackendConfig<K>,
        options: RocksDbOptions,
        storage: &dyn CheckpointStorage,
        handles: &[KeyedStateHandle],
    ) -> StateResult<Self> {
        let backend = Self::new(config, options)?;
        let max_p = backend.config.max_parallelism;
        let db = &backend.shared.holder.db;
        let (mut key_serializer, mut kinds) = (None, HashMap::new());
        let mut metas: BTreeMap<String, StateMetaInfo> = BTreeMap::new();
        // Key groups arrive one at a time and go straight into the database: a restore
        // never holds the whole state in memory.
        visit_keyed_state(
            storage,
            handles,
            max_p,
            backend.config.key_group_range,
            |header| {
                check_header_consistency(&mut key_serializer, &mut kinds, header)?;
                require_same_layout(
                    "<keys>",
                    "key",
                    backend.config.key_serializer.as_ref(),
                    &header.key_serializer,
                )?;
                for meta in &header.metas {
                    if !metas.contains_key(&meta.name) {
                        db.create_cf(
                            &meta.name,
                            &backend.settings.cf_options(&meta.name, meta.kind),
                        )
                        .map_err(rerr("create column family"))?;
                        metas.insert(meta.name.clone(), meta.clone());
                    }
                }
                Ok(())
            },
            |header, meta, kg, section| {
                let path = header.path.as_str();
                let name = meta.name.as_str();
                let cf = db
                    .cf_handle(name)
                    .ok_or_else(|| StateError::UnknownState(name.to_string()))?;
                let mut batch = WriteBatch::default();
                for e in section_entries(&section, path)? {
                    check_entry_key_group(path, name, e.key, kg, max_p)?;
                    let mut k = key_prefix(kg, max_p, e.key)?;
                    put_vbytes(&mut k, e.namespace)?;
                    match meta.kind {
                        StateKind::List => {
                            batch.put_cf(&cf, &k, canonical_list_to_stored(e.payload, path)?)
                        }
                        StateKind::Map => {
                            for (uk, uv) in payload::map_pairs(e.payload, path)? {
                                let mut full = k.clone();
                                full.extend_from_slice(uk);
                                batch.put_cf(&cf, full, uv);
                            }
                        }
                        _ => batch.put_cf(&cf, &k, e.payload),
                    }
                }
                db.write_opt(batch, &backend.shared.write_options)
                    .map_err(rerr("write batch"))
            },
        )?;
        *backend.restored.borrow_mut() = metas;
        Ok(backend)
    }

    fn restore_native(
        config: KeyedBackendConfig<K>,
        options: RocksDbOptions,
        storage: &dyn CheckpointStorage,
        handles: &[&KeyedStateHandle],
    ) -> StateResult<Self> {
        let range = config.key_group_range;
        let max_p = config.max_parallelism;
        let mut manifests = Vec::new();
        let mut owner: HashMap<u32, &str> = HashMap::new();
        for h in handles {
            if h.max_parallelism != max_p {
                return Err(StateError::MaxParallelismMismatch {
                    path: h.path.clone(),
                    snapshot: h.max_parallelism,
                    backend: max_p,
                });
            }
            for kg in h.key_group_range.intersection(&range).iter() {
                if let Some(other) = owner.insert(kg, &h.path) {
                    return Err(StateError::InvalidArgument(format!(
                        "snapshots `{other}` and `{}` both hold key group {kg}",
                        h.path
                    )));
                }
            }
            let m = Manifest::decode(&storage.get(&h.path)?, &h.path)?;
            if m.max_parallelism != max_p || m.range != h.key_group_range {
                return Err(StateError::corrupt(
                    &h.path,
                    "manifest disagrees with its handle",
                ));
            }
            require_same_layout(
                "<keys>",
                "key",
                config.key_serializer.as_ref(),
                &m.key_serializer,
            )?;
            manifests.push((*h, m));
        }
        // The base is the snapshot holding most of the new range.
        let base_index = (0..manifests.len())
            .max_by_key(|i| manifests[*i].1.range.intersection(&range).len())
            .unwrap_or(0);
        let (base_handle, base) = manifests.remove(base_index);
        let settings = Arc::new(DbSettings::new(options, max_p));
        let dir = fresh_dir(&settings.options.local_dir, "instance")?;
        let guard = DirGuard(dir.clone());
        download(storage, &base, &dir, &base_handle.path)?;
        let cfs: Vec<(String, StateKind)> = base
            .metas
            .iter()
            .map(|m| (m.name.clone(), m.kind))
            .collect();
        let db = settings.open(&dir, &cfs)?;
        // Clip the base to the new range.
        let start = key_group_start(range.start(), max_p);
        let end = match range.end() {
            Some(e) if e + 1 < max_p => key_group_start(e + 1, max_p),
            _ => ALL_KEYS_END.to_vec(),
        };
        for (name, _) in &cfs {
            let cf = db
                .cf_handle(name)
                .ok_or_else(|| StateError::UnknownState(name.clone()))?;
            let mut batch = WriteBatch::default();
            batch.delete_range_cf(&cf, Vec::new(), start.clone());
            batch.delete_range_cf(&cf, end.clone(), ALL_KEYS_END.to_vec());
            db.write_opt(batch, &write_options())
                .map_err(rerr("clip key groups"))?;
        }
        let mut metas: BTreeMap<String, StateMetaInfo> = base
            .metas
            .iter()
            .map(|m| (m.name.clone(), m.clone()))
            .collect();
        // Copy in the owned key groups of every other snapshot.
        for (h, m) in &manifests {
            let tmp = fresh_dir(&settings.options.local_dir, "merge")?;
            let _tmp_guard = DirGuard(tmp.clone());
            download(storage, m, &tmp, &h.path)?;
            let other = settings.open_read_only(&tmp)?;
            let overlap = m.range.intersection(&range);
            for meta in &m.metas {
                match metas.get(&meta.name) {
                    Some(existing) if existing.kind != meta.kind => {
                        return Err(StateError::KindMismatch {
                            name: meta.name.clone(),
                            existing: existing.kind,
                            requested: meta.kind,
                        });
                    }
                    Some(_) => {}
                    None => {
                        db.create_cf(&meta.name, &settings.cf_options(&meta.name, meta.kind))
                            .map_err(rerr("create column family"))?;
                        metas.insert(meta.name.clone(), meta.clone());
                    }
                }
                let (Some(src), Some(dst)) =
                    (other.cf_handle(&meta.name), db.cf_handle(&meta.name))
                else {
                    continue;
                };
                let mut ro = total_order_read_options();
                ro.fill_cache(false);
                let upper = match overlap.end() {
                    Some(e) if e + 1 < max_p => key_group_start(e + 1, max_p),
                    _ => ALL_KEYS_END.to_vec(),
                };
                ro.set_iterate_upper_bound(upper);
                let mut it = other.raw_iterator_cf_opt(&src, ro);
                it.seek(key_group_start(overlap.start(), max_p));
                let mut batch = WriteBatch::default();
                while it.valid() {
                    if let (Some(k), Some(v)) = (it.key(), it.value()) {
                        batch.put_cf(&dst, k, v);
                    }
                    if batch.size_in_bytes() > 4 << 20 {
                        db.write_opt(std::mem::take(&mut batch), &write_options())
                            .map_err(rerr("write batch"))?;
                    }
                    it.next();
                }
                it.status().map_err(rerr("iterate snapshot"))?;
                db.write_opt(batch, &write_options())
                    .map_err(rerr("write batch"))?;
            }
        }
        let claim = settings.options.claim_mode == ClaimMode::Claim;
        let backend = Self::assemble(config, settings, DbHolder { db, _dir: guard });
        *backend.restored.borrow_mut() = metas;
        if claim {
            lock(&backend.tracker)?.confirmed = base.ssts.iter().cloned().collect();
        }
        Ok(backend)
    }
}

/// Downloads the files of a native snapshot into `dir`, checking sizes.
pub(crate) fn download(
    storage: &dyn CheckpointStorage,
    m: &Manifest,
    dir: &Path,
    manifest_path: &str,
) -> StateResult<()> {
    for (name, f) in &m.ssts {
        let data: Bytes = storage.get(&f.path)?;
        f.verify(&data, manifest_path)?;
        let p = dir.join(name);
        std::fs::write(&p, &data).map_err(ioerr("write restored file", &p))?;
    }
    for (name, contents) in &m.private {
        let p = dir.join(name);
        std::fs::write(&p, contents).map_err(ioerr("write restored file", &p))?;
    }
    Ok(())
}
