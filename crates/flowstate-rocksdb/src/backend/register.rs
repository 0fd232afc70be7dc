//! How the RocksDB backend registers a state: its column family, TTL compaction
//! filter, the checks of a restored state's kind and serializers, and the migration of
//! restored values to a new serializer's format; also the per-state maintenance calls
//! (`compact_state`, `raw_entry_count`).

use std::any::TypeId;
use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

use flowstate_core::descriptor::validate_state_name;
use flowstate_core::format::put_vbytes;
use flowstate_core::rocksdb_list::stored_list_items;
use flowstate_core::serializer::{MigrationReader, SerdeSerializer, TypeSerializer};
use flowstate_core::snapshot::{StateMetaInfo, check_kind};
use flowstate_core::state::{Namespace, StateKey, StateKind, VoidNamespace};
use flowstate_core::ttl::{StateTtlConfig, resolve_restored};
use flowstate_core::{StateError, StateResult};
use rocksdb::{BoundColumnFamily, WriteBatch};

use crate::cache::EntryCache;
use crate::db::{rerr, total_order_read_options};
use crate::states::RocksState;
use crate::ttl_filter::TtlFilterSpec;

use super::{Registered, Resolver, Rewrite, RocksDbKeyedStateBackend};

impl<K: StateKey> RocksDbKeyedStateBackend<K> {
    /// The column family of state `name`.
    pub(super) fn state_cf(&self, name: &str) -> StateResult<Arc<BoundColumnFamily<'_>>> {
        self.db()
            .cf_handle(name)
            .ok_or_else(|| StateError::UnknownState(name.to_string()))
    }

    /// Lets compactions of `name`'s column family drop expired values, and sets its
    /// periodic compaction, when the TTL config asks for it.
    pub(super) fn install_ttl_filter(
        &self,
        name: &str,
        kind: StateKind,
        ttl: &StateTtlConfig,
    ) -> StateResult<()> {
        let Some(c) = ttl.cleanup().compaction_filter else {
            return Ok(());
        };
        let spec = TtlFilterSpec {
            list: kind == StateKind::List,
            ttl_ms: ttl.ttl_ms(),
            clock: ttl.clock().clone(),
            query_time_after_num_entries: c.query_time_after_num_entries,
        };
        match self.settings.ttl_filters.write() {
            Ok(mut m) => m.insert(name.to_string(), spec),
            Err(p) => p.into_inner().insert(name.to_string(), spec),
        };
        let db = self.db();
        let cf = self.state_cf(name)?;
        let secs = c.periodic_compaction.as_secs().to_string();
        db.set_options_cf(&cf, &[("periodic_compaction_seconds", secs.as_str())])
            .map_err(rerr("set periodic compaction"))
    }

    /// Compacts the whole column family of state `name` now (what RocksDB does in the
    /// background over time): expired TTL values are dropped by the compaction filter.
    pub fn compact_state(&self, name: &str) -> StateResult<()> {
        self.write_deferred()?;
        let db = self.db();
        let cf = self.state_cf(name)?;
        db.compact_range_cf(&cf, None::<&[u8]>, None::<&[u8]>);
        Ok(())
    }

    /// Walks the column family of state `name` in key order, once its deferred writes
    /// are written, calling `f` on every entry the raw iterator stands on.
    fn for_each_raw(
        &self,
        name: &str,
        mut f: impl FnMut(&rocksdb::DBRawIterator<'_>),
    ) -> StateResult<()> {
        self.write_deferred()?;
        let db = self.db();
        let cf = self.state_cf(name)?;
        let mut it = db.raw_iterator_cf_opt(&cf, total_order_read_options());
        it.seek_to_first();
        while it.valid() {
            f(&it);
            it.next();
        }
        it.status().map_err(rerr("iterate"))
    }

    /// Number of physical RocksDB entries of state `name` (one per value, list, or map
    /// entry), as a raw iterator sees them: for operations and tests.
    pub fn raw_entry_count(&self, name: &str) -> StateResult<u64> {
        let mut n = 0;
        self.for_each_raw(name, |_| n += 1)?;
        Ok(n)
    }

    /// Every (key, value) of state `name` as RocksDB holds it (list appends merged):
    /// for tests of the stored layout.
    #[cfg(test)]
    pub(crate) fn raw_entries(&self, name: &str) -> StateResult<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut out = Vec::new();
        self.for_each_raw(name, |it| {
            if let (Some(k), Some(v)) = (it.key(), it.value()) {
                out.push((k.to_vec(), v.to_vec()));
            }
        })?;
        Ok(out)
    }

    /// Fails once a migration stopped part-way (see `half_migrated`).
    pub(super) fn check_not_half_migrated(&self) -> StateResult<()> {
        match self.half_migrated.borrow().iter().next() {
            Some(name) => Err(StateError::Backend {
                op: "use restored state",
                message: format!(
                    "the migration of state `{name}` failed part-way; its local copy is mixed, \
                     so this backend must be restored again"
                ),
            }),
            None => Ok(()),
        }
    }

    /// Rewrites every stored value of a restored state into the new serializer's format.
    pub(super) fn migrate(
        &self,
        name: &str,
        kind: StateKind,
        rewrite: &Rewrite,
    ) -> StateResult<()> {
        let db = self.db();
        let cf = self.state_cf(name)?;
        let mut batch = WriteBatch::default();
        let mut it = db.raw_iterator_cf_opt(&cf, total_order_read_options());
        it.seek_to_first();
        while it.valid() {
            if let (Some(k), Some(v)) = (it.key(), it.value()) {
                let new = if kind == StateKind::List {
                    let mut out = Vec::with_capacity(v.len());
                    for item in stored_list_items(v, name)? {
                        put_vbytes(&mut out, &rewrite(item)?)?;
                    }
                    out
                } else {
                    rewrite(v)?
                };
                batch.put_cf(&cf, k, new);
                // Bounded memory: the iterator reads from its own implicit snapshot,
                // so writing back while iterating is safe. A failure part-way leaves
                // the local working copy half-migrated (never the checkpoint): the
                // backend then refuses the state and snapshots (`half_migrated`).
                if batch.size_in_bytes() >= MIGRATION_BATCH_BYTES {
                    db.write_opt(std::mem::take(&mut batch), &self.shared.write_options)
                        .map_err(rerr("write migrated values"))?;
                }
            }
            it.next();
        }
        it.status().map_err(rerr("iterate for migration"))?;
        db.write_opt(batch, &self.shared.write_options)
            .map_err(rerr("write migrated values"))
    }

    /// Gets the registered state `name` or registers it: checks kind, types and
    /// serializers against what is registered or restored; migrates restored values
    /// when the new serializer asks for it.
    pub(super) fn register<N, X>(
        &self,
        name: &str,
        kind: StateKind,
        current: &dyn Fn(&StateMetaInfo) -> StateResult<()>,
        resolve: &Resolver<'_, X>,
        ttl: Option<&StateTtlConfig>,
    ) -> StateResult<Rc<RocksState<K, N, X>>>
    where
        N: Namespace,
        X: 'static,
    {
        validate_state_name(name)?;
        if let Some(r) = self.states.borrow().get(name) {
            check_kind(name, r.kind, kind)?;
            current(&r.meta)?;
            return r
                .handle
                .clone()
                .downcast::<RocksState<K, N, X>>()
                .map_err(|_| StateError::TypeMismatch {
                    name: name.to_string(),
                    detail: "registered with other namespace or value types".into(),
                });
        }
        self.check_not_half_migrated()?;
        let restored = self.restored.borrow().get(name).cloned();
        if let Some(m) = &restored {
            m.check_restorable_as::<N>(kind)?;
        }
        let (extra, meta, rewrite) = resolve(restored.as_ref())?;
        if restored.is_some() {
            if let Some(rw) = &rewrite
                && let Err(e) = self.migrate(name, kind, rw)
            {
                self.half_migrated.borrow_mut().insert(name.to_string());
                return Err(e);
            }
        } else if self.db().cf_handle(name).is_none() {
            flowstate_core::snapshot::check_state_name(name).map_err(|message| {
                StateError::Backend {
                    op: "register state",
                    message,
                }
            })?;
            self.db()
                .create_cf(name, &self.settings.cf_options(name, kind))
                .map_err(rerr("create column family"))?;
        }
        self.restored.borrow_mut().remove(name);
        if let Some(t) = ttl {
            self.install_ttl_filter(name, kind, t)?;
        }
        let handle = Rc::new(RocksState {
            shared: self.shared.clone(),
            name: name.to_string(),
            ns: RefCell::new(N::default()),
            ns_ser: SerdeSerializer::new(),
            extra,
            prefetched: Default::default(),
            deferred: Default::default(),
            cached: RefCell::new(EntryCache::new(self.shared.entry_cache_bytes)),
            buffers: Default::default(),
            scan: Default::default(),
        });
        self.deferring.borrow_mut().push(handle.clone());
        let one_value_per_key = matches!(
            kind,
            StateKind::Value | StateKind::Reducing | StateKind::Aggregating
        );
        if one_value_per_key && TypeId::of::<N>() == TypeId::of::<VoidNamespace>() {
            self.prefetched.borrow_mut().push(handle.clone());
        }
        self.states.borrow_mut().insert(
            name.to_string(),
            Registered {
                kind,
                handle: handle.clone(),
                meta,
                ttl: ttl.cloned(),
            },
        );
        Ok(handle)
    }
}

/// Bytes of migrated values written to RocksDB at once.
const MIGRATION_BATCH_BYTES: usize = 8 << 20;

fn rewrite_with<T: 'static>(
    state: &str,
    reader: MigrationReader<T>,
    ser: Arc<dyn TypeSerializer<T>>,
) -> Rewrite {
    let state = state.to_string();
    Box::new(move |old: &[u8]| {
        let v = reader(old).map_err(|e| StateError::serialization(&state, e))?;
        let mut out = Vec::new();
        ser.serialize_into(&v, &mut out)
            .map_err(|e| StateError::serialization(&state, e))?;
        Ok(out)
    })
}

/// Resolves a value serializer against a restored description (or itself).
pub(super) fn resolve<T: 'static>(
    name: &str,
    what: &'static str,
    new: &Arc<dyn TypeSerializer<T>>,
    old: Option<&StateMetaInfo>,
) -> StateResult<(Arc<dyn TypeSerializer<T>>, Option<Rewrite>)> {
    let prev = old.map_or_else(|| new.snapshot(), |m| m.value_serializer.clone());
    let r = resolve_restored(name, what, new, &prev)?;
    let rewrite = r
        .migrated
        .then(|| rewrite_with(name, r.reader.clone(), r.serializer.clone()));
    Ok((r.serializer, rewrite))
}
