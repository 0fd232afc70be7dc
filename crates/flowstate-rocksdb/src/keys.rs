//! The RocksDB key layout.
//!
//! `key group (1 byte if max parallelism <= 128, else 2, big-endian) | varint length |
//! key | varint length | namespace | map user key`. The key group comes first so a key
//! group is one contiguous key range (clipping on rescale is a range delete); the length
//! prefixes make `(key group, key, namespace)` an unambiguous prefix whatever the key
//! serializer, so a map's entries for one key and namespace are one contiguous range.

use flowstate_core::StateResult;
use flowstate_core::format::{ByteReader, put_len_prefixed, put_vbytes};
use flowstate_core::keygroup::key_group_for_serialized_key;

/// Bytes of the key-group prefix for a max parallelism.
pub(crate) fn prefix_len(max_parallelism: u32) -> usize {
    if max_parallelism <= 128 { 1 } else { 2 }
}

/// The key-group prefix: its bytes, of which the first [`prefix_len`] count.
fn key_group_bytes(key_group: u32, max_parallelism: u32) -> [u8; 2] {
    if prefix_len(max_parallelism) == 1 {
        [key_group as u8, 0]
    } else {
        (key_group as u16).to_be_bytes()
    }
}

/// Appends the key-group prefix.
pub(crate) fn put_key_group(out: &mut Vec<u8>, key_group: u32, max_parallelism: u32) {
    out.extend_from_slice(
        &key_group_bytes(key_group, max_parallelism)[..prefix_len(max_parallelism)],
    );
}

/// The first key of `key_group`.
pub(crate) fn key_group_start(key_group: u32, max_parallelism: u32) -> Vec<u8> {
    let mut v = Vec::with_capacity(2);
    put_key_group(&mut v, key_group, max_parallelism);
    v
}

/// A bound above every key of every key group.
pub(crate) const ALL_KEYS_END: [u8; 3] = [0xff, 0xff, 0xff];

/// `key group | key` (what the current key contributes).
pub(crate) fn key_prefix(key_group: u32, max_parallelism: u32, key: &[u8]) -> StateResult<Vec<u8>> {
    let mut v = Vec::with_capacity(key.len() + 4);
    put_key_prefix(&mut v, key_group, max_parallelism, key)?;
    Ok(v)
}

/// Appends `key group | key` to `out` (a reused buffer).
pub(crate) fn put_key_prefix(
    out: &mut Vec<u8>,
    key_group: u32,
    max_parallelism: u32,
    key: &[u8],
) -> StateResult<()> {
    put_key_group(out, key_group, max_parallelism);
    put_vbytes(out, key)
}

/// Appends `key group | length | key`, the key written in place by `write`, and
/// returns the key group: `key_group` when the caller knows it, else the one the key's
/// bytes hash to. `Ok(Err(e))` when `write` failed (then `out` is as it was).
///
/// In place because copying a key from another buffer right after the serializer
/// stored it byte by byte made the copy's wide loads wait for those stores to drain,
/// and with them every store before (the copy showed as 5% of the RocksDB `value`
/// job's samples).
pub(crate) fn put_key_prefix_with<E>(
    out: &mut Vec<u8>,
    key_group: Option<u32>,
    max_parallelism: u32,
    write: impl FnOnce(&mut Vec<u8>) -> Result<(), E>,
) -> StateResult<Result<u32, E>> {
    let at = out.len();
    let kg_len = prefix_len(max_parallelism);
    out.extend_from_slice(&[0, 0][..kg_len]);
    if let Err(e) = put_len_prefixed(out, write)? {
        out.truncate(at);
        return Ok(Err(e));
    }
    let hashed = |out: &[u8]| -> StateResult<u32> {
        let key = ByteReader::new(&out[at + kg_len..], "<key>").vbytes("key")?;
        Ok(key_group_for_serialized_key(key, max_parallelism))
    };
    let kg = match key_group {
        Some(kg) => {
            debug_assert_eq!(Some(kg), hashed(out).ok(), "key group of the key");
            kg
        }
        None => hashed(out)?,
    };
    out[at..at + kg_len].copy_from_slice(&key_group_bytes(kg, max_parallelism)[..kg_len]);
    Ok(Ok(kg))
}

/// Bytes of `key group | length | key | length | namespace` at the start of a stored
/// key with `kg_len` key-group bytes, or `None` when the key is shorter or malformed.
///
/// The RocksDB prefix extractor: every entry of one (key, namespace) shares it, so a
/// map's range scan can skip each file whose prefix bloom filter lacks it.
///
/// RocksDB calls it for every key it adds to a memtable or file filter and for every
/// seek, so it parses the two lengths itself (a `ByteReader` cost 8% of a map scan).
pub(crate) fn entry_prefix_len(raw: &[u8], kg_len: usize) -> Option<usize> {
    /// Skips one varint length and the bytes it counts, from `at`.
    fn skip_vbytes(raw: &[u8], mut at: usize) -> Option<usize> {
        let mut len = 0usize;
        for shift in (0..35).step_by(7) {
            let b = *raw.get(at)?;
            at += 1;
            len |= usize::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                let end = at.checked_add(len)?;
                return (end <= raw.len()).then_some(end);
            }
        }
        None
    }
    let at = skip_vbytes(raw, kg_len)?;
    skip_vbytes(raw, at)
}

/// A stored key split into its parts.
pub(crate) struct ParsedKey<'a> {
    pub(crate) key_group: u32,
    pub(crate) key: &'a [u8],
    pub(crate) namespace: &'a [u8],
    /// The map user key (empty for other kinds).
    pub(crate) user_key: &'a [u8],
}

/// Splits a stored key; a malformed key is reported as corrupt state of `what`.
pub(crate) fn parse_key<'a>(
    raw: &'a [u8],
    max_parallelism: u32,
    what: &'a str,
) -> StateResult<ParsedKey<'a>> {
    let mut r = ByteReader::new(raw, what);
    let kg_bytes = r.take(prefix_len(max_parallelism), "key group")?;
    let key_group = kg_bytes.iter().fold(0u32, |acc, b| (acc << 8) | *b as u32);
    let key = r.vbytes("key")?;
    let namespace = r.vbytes("namespace")?;
    let prefix_len = r.position();
    Ok(ParsedKey {
        key_group,
        key,
        namespace,
        user_key: &raw[prefix_len..],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_round_trips_and_orders_by_key_group() {
        for max_p in [128u32, 32768] {
            let mut k = key_prefix(7, max_p, b"user").unwrap();
            put_vbytes(&mut k, b"ns").unwrap();
            k.extend_from_slice(b"uk");
            let p = parse_key(&k, max_p, "t").unwrap();
            assert_eq!(
                (p.key_group, p.key, p.namespace, p.user_key),
                (7, &b"user"[..], &b"ns"[..], &b"uk"[..])
            );
            assert!(key_group_start(7, max_p) < k && k < key_group_start(8, max_p));
        }
        for (max_p, kg) in [(128u32, 77u32), (32768, 300)] {
            let key = b"user".repeat(40); // a length prefix of two bytes
            let mut given = vec![9];
            let r = put_key_prefix_with(&mut given, Some(kg), max_p, |o| {
                o.extend_from_slice(&key);
                Ok::<_, ()>(())
            });
            assert_eq!(r.unwrap(), Ok(kg));
            assert_eq!(given[1..], key_prefix(kg, max_p, &key).unwrap()[..]);
            let hashed = key_group_for_serialized_key(&key, max_p);
            let mut computed = Vec::new();
            let r = put_key_prefix_with(&mut computed, None, max_p, |o| {
                o.extend_from_slice(&key);
                Ok::<_, ()>(())
            });
            assert_eq!(r.unwrap(), Ok(hashed));
            assert_eq!(computed, key_prefix(hashed, max_p, &key).unwrap());
            let r = put_key_prefix_with(&mut given, Some(kg), max_p, |o| {
                o.push(1);
                Err("no")
            });
            assert_eq!(r.unwrap(), Err("no"));
            assert_eq!(given[1..], key_prefix(kg, max_p, &key).unwrap()[..]);
        }
        for max_p in [128u32, 32768] {
            let kg_len = prefix_len(max_p);
            let mut entry = key_prefix(5, max_p, &b"k".repeat(200)).unwrap();
            put_vbytes(&mut entry, b"ns").unwrap();
            let prefix = entry.len();
            assert_eq!(entry_prefix_len(&entry, kg_len), Some(prefix));
            entry.extend_from_slice(b"user key");
            let p = parse_key(&entry, max_p, "t").unwrap();
            assert_eq!(
                entry.len() - p.user_key.len(),
                prefix,
                "as parse_key splits it"
            );
            assert_eq!(entry_prefix_len(&entry, kg_len), Some(prefix));
            // Every shorter key (a key-group start, a cut key) is outside the domain.
            for cut in 0..prefix {
                assert_eq!(entry_prefix_len(&entry[..cut], kg_len), None, "cut {cut}");
            }
        }
    }
}
