//! TTL cleanup in RocksDB compactions: a compaction filter that drops expired values.
//!
//! Every column family gets a [`TtlFilterFactory`] when it is opened, because a
//! restored column family is opened before user code registers its state (and says
//! whether it has TTL). The factory looks up the column family in the backend's
//! [`TtlFilters`] each time RocksDB starts a compaction: a state without TTL gets a
//! filter that keeps everything at the cost of one branch per entry.
//!
//! Stored TTL values start with their 8-byte last-access timestamp
//! (`flowstate_core::ttl`). Values and map entries are removed when expired. Lists
//! (length-prefixed elements back to back, appended by merge) are removed when every
//! element has expired; a list with some live elements is kept whole and its expired
//! elements go when read or in full snapshots. (Flink rewrites such lists in the
//! filter; the `rocksdb` crate's filter can only return `'static` replacement bytes.)
//! The filter reads the clock when created and again every
//! `query_time_after_num_entries` entries, as Flink's does.

use std::collections::HashMap;
use std::ffi::{CStr, CString};
use std::sync::{Arc, RwLock};

use flowstate_core::rocksdb_list::StoredItems;
use flowstate_core::ttl::{TtlClock, payload_expired};
use rocksdb::CompactionDecision;
use rocksdb::compaction_filter::CompactionFilter;
use rocksdb::compaction_filter_factory::{CompactionFilterContext, CompactionFilterFactory};

/// What the filter of one column family needs.
#[derive(Clone)]
pub(crate) struct TtlFilterSpec {
    pub(crate) list: bool,
    pub(crate) ttl_ms: i64,
    pub(crate) clock: Arc<dyn TtlClock>,
    pub(crate) query_time_after_num_entries: u64,
}

/// TTL specs by column family, shared by the backend and its filter factories.
pub(crate) type TtlFilters = Arc<RwLock<HashMap<String, TtlFilterSpec>>>;

/// Creates a [`TtlFilter`] per compaction of one column family.
pub(crate) struct TtlFilterFactory {
    pub(crate) cf: String,
    pub(crate) filters: TtlFilters,
    pub(crate) name: CString,
}

impl TtlFilterFactory {
    pub(crate) fn new(cf: &str, filters: TtlFilters) -> Self {
        TtlFilterFactory {
            cf: cf.to_string(),
            filters,
            name: c"flowstate.ttl-filter-factory".to_owned(),
        }
    }
}

impl CompactionFilterFactory for TtlFilterFactory {
    type Filter = TtlFilter;

    fn create(&mut self, _context: CompactionFilterContext) -> TtlFilter {
        // A poisoned lock only means another thread panicked while holding it; the
        // map itself is still whole.
        let spec = match self.filters.read() {
            Ok(m) => m.get(&self.cf).cloned(),
            Err(p) => p.into_inner().get(&self.cf).cloned(),
        };
        let now = spec.as_ref().map_or(0, |s| s.clock.now_ms());
        TtlFilter {
            spec,
            now,
            seen: 0,
            name: c"flowstate.ttl-filter".to_owned(),
        }
    }

    fn name(&self) -> &CStr {
        &self.name
    }
}

/// The filter of one compaction run.
pub(crate) struct TtlFilter {
    spec: Option<TtlFilterSpec>,
    now: i64,
    seen: u64,
    name: CString,
}

/// Whether every element of a stored list is expired (malformed lists are kept, to be
/// reported when read).
fn list_all_expired(stored: &[u8], ttl_ms: i64, now: i64) -> bool {
    let mut any = false;
    for item in StoredItems::new(stored, "list") {
        match item {
            Ok(e) if payload_expired(e, ttl_ms, now) => any = true,
            _ => return false,
        }
    }
    any
}

impl CompactionFilter for TtlFilter {
    fn filter(&mut self, _level: u32, _key: &[u8], value: &[u8]) -> CompactionDecision {
        let Some(spec) = &self.spec else {
            return CompactionDecision::Keep;
        };
        self.seen += 1;
        if self.seen.is_multiple_of(spec.query_time_after_num_entries) {
            self.now = spec.clock.now_ms();
        }
        let expired = if spec.list {
            list_all_expired(value, spec.ttl_ms, self.now)
        } else {
            payload_expired(value, spec.ttl_ms, self.now)
        };
        if expired {
            CompactionDecision::Remove
        } else {
            CompactionDecision::Keep
        }
    }

    fn name(&self) -> &CStr {
        &self.name
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flowstate_core::format::put_vbytes;

    fn stamped(ts: i64) -> Vec<u8> {
        let mut v = ts.to_le_bytes().to_vec();
        v.push(1);
        v
    }

    /// The filter reads the clock when created and again every
    /// `query_time_after_num_entries` entries, not in between.
    #[test]
    fn clock_is_reread_every_n_entries() {
        use flowstate_core::ttl::ManualClock;
        let clock = ManualClock::new(0);
        let filters = TtlFilters::default();
        filters.write().unwrap().insert(
            "s".into(),
            TtlFilterSpec {
                list: false,
                ttl_ms: 10,
                clock: Arc::new(clock.clone()),
                query_time_after_num_entries: 3,
            },
        );
        let ctx = || CompactionFilterContext {
            is_full_compaction: true,
            is_manual_compaction: true,
        };
        let mut f = TtlFilterFactory::new("s", filters.clone()).create(ctx());
        let v = stamped(0);
        let removed = |d: CompactionDecision| matches!(d, CompactionDecision::Remove);
        clock.set(100); // moves after the filter read the time (0)
        assert!(!removed(f.filter(0, b"k", &v)), "entry 1: time 0");
        assert!(!removed(f.filter(0, b"k", &v)), "entry 2: time 0");
        assert!(removed(f.filter(0, b"k", &v)), "entry 3: time re-read, 100");
        // Column families without TTL keep everything.
        let mut other = TtlFilterFactory::new("other", filters).create(ctx());
        assert!(!removed(other.filter(0, b"k", &v)));
    }

    #[test]
    fn lists_go_only_when_every_element_expired() {
        let mut l = Vec::new();
        put_vbytes(&mut l, &stamped(0)).unwrap();
        put_vbytes(&mut l, &stamped(50)).unwrap();
        assert!(!list_all_expired(&l, 10, 20));
        assert!(list_all_expired(&l, 10, 60));
        assert!(!list_all_expired(&[0xff], 10, 60));
        assert!(!list_all_expired(&[], 10, 60));
    }
}
