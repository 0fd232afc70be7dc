//! Expiry at the byte level, without the value type: snapshot writers and compaction
//! filters drop expired values from stored payloads.

use super::config::*;
use super::serializer::*;
use crate::error::StateResult;
use crate::format::{put_varint, put_vbytes};
use crate::snapshot::{EntryEncoder, KeyedStateWriter, StateMetaInfo, payload, section_entries};
use crate::state::StateKind;

/// Whether a stored TTL value (timestamp first) is expired; malformed values are kept
/// (they are reported when read, not silently dropped).
#[inline]
pub fn payload_expired(stored: &[u8], ttl_ms: i64, now: i64) -> bool {
    stored_timestamp(stored).is_some_and(|ts| expired(ts, ttl_ms, now))
}

/// Filters one canonical payload of a TTL state of `kind`: `None` when nothing in it is
/// alive, else the payload with expired list elements / map entries removed.
pub fn filter_expired_payload(
    kind: StateKind,
    payload_bytes: &[u8],
    ttl_ms: i64,
    now: i64,
    path: &str,
) -> StateResult<Option<Vec<u8>>> {
    match kind {
        StateKind::Value | StateKind::Reducing | StateKind::Aggregating => {
            Ok((!payload_expired(payload_bytes, ttl_ms, now)).then(|| payload_bytes.to_vec()))
        }
        StateKind::List => {
            let items = payload::list_items(payload_bytes, path)?;
            let alive: Vec<&[u8]> = items
                .into_iter()
                .filter(|i| !payload_expired(i, ttl_ms, now))
                .collect();
            if alive.is_empty() {
                return Ok(None);
            }
            let mut out = Vec::with_capacity(payload_bytes.len());
            put_varint(&mut out, alive.len() as u32);
            for i in alive {
                put_vbytes(&mut out, i)?;
            }
            Ok(Some(out))
        }
        StateKind::Map => {
            let pairs = payload::map_pairs(payload_bytes, path)?;
            let alive: Vec<(&[u8], &[u8])> = pairs
                .into_iter()
                .filter(|(_, v)| !payload_expired(v, ttl_ms, now))
                .collect();
            if alive.is_empty() {
                return Ok(None);
            }
            let mut out = Vec::with_capacity(payload_bytes.len());
            put_varint(&mut out, alive.len() as u32);
            for (k, v) in alive {
                put_vbytes(&mut out, k)?;
                put_vbytes(&mut out, v)?;
            }
            Ok(Some(out))
        }
    }
}

/// A snapshot writer that leaves expired entries of a TTL state out (full-snapshot
/// cleanup). `now` is read once, at the synchronous part, so the snapshot is the
/// state as of that instant.
struct ExpiryFilteringWriter {
    inner: Box<dyn KeyedStateWriter>,
    ttl_ms: i64,
    now: i64,
    scratch: Vec<u8>,
}

impl KeyedStateWriter for ExpiryFilteringWriter {
    fn meta(&self) -> &StateMetaInfo {
        self.inner.meta()
    }

    fn write_key_group(&mut self, key_group: u32, out: &mut EntryEncoder<'_>) -> StateResult<()> {
        self.scratch.clear();
        let mut enc = EntryEncoder::new(&mut self.scratch);
        self.inner.write_key_group(key_group, &mut enc)?;
        let kind = self.inner.meta().kind;
        let path = "<snapshot being written>";
        for e in section_entries(&self.scratch, path)? {
            if let Some(p) = filter_expired_payload(kind, e.payload, self.ttl_ms, self.now, path)? {
                out.raw_entry(e.key, e.namespace, &p)?;
            }
        }
        Ok(())
    }
}

/// Wraps a state's snapshot writer with full-snapshot cleanup when `ttl` asks for it.
pub fn filter_snapshot_writer(
    writer: Box<dyn KeyedStateWriter>,
    ttl: Option<&StateTtlConfig>,
) -> Box<dyn KeyedStateWriter> {
    match ttl {
        Some(cfg) if cfg.cleanup().full_snapshot => Box::new(ExpiryFilteringWriter {
            inner: writer,
            ttl_ms: cfg.ttl_ms(),
            now: cfg.clock().now_ms(),
            scratch: Vec::new(),
        }),
        _ => writer,
    }
}
