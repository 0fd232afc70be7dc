//! The key-group-indexed file: the container of every keyed snapshot.
//!
//! A file holds one block of bytes per key group of a contiguous range, an opaque
//! header, an index of block offsets and a footer. Every byte is covered by a CRC32C
//! (header, each block, index, footer) or is a magic number, so one flipped byte or a
//! truncation is always detected. A reader fetches the footer, index and header, then
//! only the blocks of the key groups it owns (contiguous blocks in one ranged read).
//! The byte layout is specified in `docs/formats.md` ("Key-group-indexed file").
//!
//! ```no_run
//! # use flowstate_core::format::{KeyGroupFileWriter, KIND_KEYED_RAW};
//! # use flowstate_core::keygroup::KeyGroupRange;
//! # fn demo(storage: &dyn flowstate_core::storage::CheckpointStorage) -> flowstate_core::StateResult<()> {
//! let range = KeyGroupRange::new(0, 3)?;
//! let mut w = KeyGroupFileWriter::new(storage.create("chk-1/raw-0")?, KIND_KEYED_RAW, 128, range, b"")?;
//! for kg in range.iter() {
//!     w.begin_key_group(kg)?;
//!     w.buffer().extend_from_slice(&[kg as u8; 3]);
//! }
//! let size = w.finish()?;
//! # Ok(()) }
//! ```

use bytes::Bytes;

use crate::error::{StateError, StateResult};
use crate::keygroup::{KeyGroupRange, check_max_parallelism};
use crate::storage::{CheckpointStorage, StorageWrite};

/// Magic at the start of a key-group-indexed file.
pub const FILE_MAGIC: &[u8; 8] = b"FLWSKGF\0";
/// Magic at the very end of a key-group-indexed file.
pub const FOOTER_MAGIC: &[u8; 8] = b"FLWSEND\0";
/// Current format version.
pub const FORMAT_VERSION: u32 = 1;
/// Payload kind: managed keyed state (see `snapshot`).
pub const KIND_KEYED_MANAGED: u32 = 1;
/// Payload kind: raw keyed state written by operators.
pub const KIND_KEYED_RAW: u32 = 2;

const PRELUDE_LEN: u64 = 16;
const FOOTER_LEN: u64 = 40;
const INDEX_ENTRY_LEN: u64 = 24;

/// Little-endian appends used by all writers.
/// Little-endian and length-prefixed appends (the encodings of `docs/formats.md`).
pub trait PutLe {
    /// One byte.
    fn put_u8(&mut self, v: u8);
    /// A little-endian `u32`.
    fn put_u32(&mut self, v: u32);
    /// A little-endian `u64`.
    fn put_u64(&mut self, v: u64);
    /// `u32` length then the bytes; errors past 4 GiB.
    fn put_bytes(&mut self, what: &str, v: &[u8]) -> StateResult<()>;
}

impl PutLe for Vec<u8> {
    fn put_u8(&mut self, v: u8) {
        self.push(v);
    }
    fn put_u32(&mut self, v: u32) {
        self.extend_from_slice(&v.to_le_bytes());
    }
    fn put_u64(&mut self, v: u64) {
        self.extend_from_slice(&v.to_le_bytes());
    }
    fn put_bytes(&mut self, what: &str, v: &[u8]) -> StateResult<()> {
        let len = u32::try_from(v.len()).map_err(|_| {
            StateError::InvalidArgument(format!("{what} of {} bytes exceeds 4 GiB", v.len()))
        })?;
        self.put_u32(len);
        self.extend_from_slice(v);
        Ok(())
    }
}

/// Appends `v` as an unsigned LEB128 varint (1 to 5 bytes).
pub fn put_varint(out: &mut Vec<u8>, mut v: u32) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn checked_len(len: usize) -> StateResult<u32> {
    u32::try_from(len).map_err(|_| {
        StateError::InvalidArgument(format!("an encoded value of {len} bytes exceeds 4 GiB"))
    })
}

/// Appends `v` with a varint length prefix.
pub fn put_vbytes(out: &mut Vec<u8>, v: &[u8]) -> StateResult<()> {
    put_varint(out, checked_len(v.len())?);
    out.extend_from_slice(v);
    Ok(())
}

/// Lets `f` append a value, then puts a varint length in front of it. Values shorter
/// than 128 bytes (almost all keys and values) need no move. `Ok(Err(e))` when `f`
/// failed with `e` (then `out` is as it was).
pub fn put_len_prefixed<E>(
    out: &mut Vec<u8>,
    f: impl FnOnce(&mut Vec<u8>) -> Result<(), E>,
) -> StateResult<Result<(), E>> {
    let at = out.len();
    out.push(0);
    if let Err(e) = f(out) {
        out.truncate(at);
        return Ok(Err(e));
    }
    let len = checked_len(out.len() - at - 1)?;
    if len < 0x80 {
        out[at] = len as u8;
    } else {
        let mut prefix = Vec::with_capacity(5);
        put_varint(&mut prefix, len);
        out.splice(at..at + 1, prefix);
    }
    Ok(Ok(()))
}

/// A bounds-checked little-endian reader; every failure is a
/// [`StateError::CorruptSnapshot`] naming the file.
pub struct ByteReader<'a> {
    buf: &'a [u8],
    pos: usize,
    path: &'a str,
}

impl<'a> ByteReader<'a> {
    /// A reader over `buf`; errors name `path`.
    pub fn new(buf: &'a [u8], path: &'a str) -> Self {
        ByteReader { buf, pos: 0, path }
    }
    /// Bytes consumed so far.
    pub fn position(&self) -> usize {
        self.pos
    }
    /// Whether every byte was consumed.
    pub fn is_empty(&self) -> bool {
        self.pos >= self.buf.len()
    }
    /// The next `n` bytes.
    pub fn take(&mut self, n: usize, what: &str) -> StateResult<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|e| *e <= self.buf.len())
            .ok_or_else(|| {
                StateError::corrupt(
                    self.path,
                    format!(
                        "{what}: needs {n} bytes at offset {}, only {} left",
                        self.pos,
                        self.buf.len().saturating_sub(self.pos)
                    ),
                )
            })?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    /// One byte.
    pub fn u8(&mut self, what: &str) -> StateResult<u8> {
        Ok(self.take(1, what)?[0])
    }
    /// A little-endian `u32`.
    pub fn u32(&mut self, what: &str) -> StateResult<u32> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    /// A little-endian `u64`.
    pub fn u64(&mut self, what: &str) -> StateResult<u64> {
        let b = self.take(8, what)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
    /// An unsigned LEB128 varint of at most 5 bytes that fits a `u32`, in its shortest form.
    pub fn varint(&mut self, what: &str) -> StateResult<u32> {
        let mut v: u64 = 0;
        for i in 0..5 {
            let b = self.u8(what)?;
            v |= ((b & 0x7f) as u64) << (7 * i);
            if b & 0x80 == 0 {
                if (i > 0 && b == 0) || v > u32::MAX as u64 {
                    break;
                }
                return Ok(v as u32);
            }
        }
        Err(StateError::corrupt(
            self.path,
            format!("{what}: malformed varint"),
        ))
    }
    /// A varint length, then that many bytes.
    pub fn vbytes(&mut self, what: &str) -> StateResult<&'a [u8]> {
        let n = self.varint(what)? as usize;
        self.take(n, what)
    }
    /// A `u32` length, then that many bytes.
    pub fn bytes(&mut self, what: &str) -> StateResult<&'a [u8]> {
        let n = self.u32(what)? as usize;
        self.take(n, what)
    }
    /// [`ByteReader::bytes`] holding UTF-8.
    pub fn string(&mut self, what: &str) -> StateResult<String> {
        let b = self.bytes(what)?;
        std::str::from_utf8(b)
            .map(str::to_string)
            .map_err(|_| StateError::corrupt(self.path, format!("{what} is not UTF-8")))
    }
}

/// A small checksummed file: `magic (8) | version u32 | body_len u64 | body | crc32c(body) u32`
/// (operator state, RocksDB manifests; see `docs/formats.md`).
pub fn frame(magic: &[u8; 8], version: u32, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 24);
    out.extend_from_slice(magic);
    out.put_u32(version);
    out.put_u64(body.len() as u64);
    out.extend_from_slice(body);
    out.put_u32(crc32c::crc32c(body));
    out
}

/// Checks what [`frame`] wrote (magic, a version in `1..=supported`, length, checksum,
/// nothing after) and returns the body; `what` names the kind of file in errors.
pub fn unframe<'a>(
    bytes: &'a [u8],
    path: &'a str,
    magic: &[u8; 8],
    supported: u32,
    what: &str,
) -> StateResult<&'a [u8]> {
    let mut r = ByteReader::new(bytes, path);
    if r.take(8, "magic")? != magic {
        return Err(StateError::corrupt(
            path,
            format!("not a flowstate {what} (bad magic)"),
        ));
    }
    let version = r.u32("version")?;
    if version == 0 || version > supported {
        return Err(StateError::UnsupportedVersion {
            path: path.to_string(),
            found: version,
            supported,
        });
    }
    let len = usize::try_from(r.u64("body length")?)
        .map_err(|_| StateError::corrupt(path, "body too long"))?;
    let body = r.take(len, "body")?;
    let crc = r.u32("body crc")?;
    if !r.is_empty() {
        return Err(StateError::corrupt(path, "trailing bytes after the body"));
    }
    if crc32c::crc32c(body) != crc {
        return Err(StateError::corrupt(path, "checksum mismatch"));
    }
    Ok(body)
}

/// Writes a key-group-indexed file into a [`StorageWrite`], one key group at a time:
/// memory holds at most the current key group's block (plus buffering), never the file.
pub struct KeyGroupFileWriter<'w> {
    sink: Box<dyn StorageWrite + 'w>,
    /// Bytes not yet handed to the sink; starts at file offset `flushed`.
    buf: Vec<u8>,
    flushed: u64,
    max_parallelism: u32,
    range: KeyGroupRange,
    /// (key group, offset, length, crc) of finished blocks.
    index: Vec<(u32, u64, u64, u32)>,
    /// Key group and buffer position of the block being written.
    current: Option<(u32, usize)>,
}

/// Hand buffered bytes to the sink once this many accumulate (at block boundaries).
const FLUSH_BYTES: usize = 1 << 20;

impl<'w> KeyGroupFileWriter<'w> {
    /// Starts a file of `kind` for `range` with an opaque `header`.
    pub fn new(
        sink: Box<dyn StorageWrite + 'w>,
        kind: u32,
        max_parallelism: u32,
        range: KeyGroupRange,
        header: &[u8],
    ) -> StateResult<Self> {
        let header_len = u32::try_from(header.len())
            .map_err(|_| StateError::InvalidArgument("snapshot header exceeds 4 GiB".into()))?;
        let mut buf = Vec::with_capacity(64 + header.len());
        buf.extend_from_slice(FILE_MAGIC);
        buf.put_u32(FORMAT_VERSION);
        buf.put_u32(kind);
        buf.put_u32(header_len);
        buf.extend_from_slice(header);
        buf.put_u32(crc32c::crc32c(header));
        Ok(KeyGroupFileWriter {
            sink,
            buf,
            flushed: 0,
            max_parallelism,
            range,
            index: Vec::with_capacity(range.len()),
            current: None,
        })
    }

    fn close_block(&mut self) -> StateResult<()> {
        if let Some((kg, start)) = self.current.take() {
            let block = &self.buf[start..];
            self.index.push((
                kg,
                self.flushed + start as u64,
                block.len() as u64,
                crc32c::crc32c(block),
            ));
            if self.buf.len() >= FLUSH_BYTES {
                self.sink.write(&self.buf)?;
                self.flushed += self.buf.len() as u64;
                self.buf.clear();
            }
        }
        Ok(())
    }

    /// Starts the block of `key_group`; key groups must come in order, each once.
    pub fn begin_key_group(&mut self, key_group: u32) -> StateResult<()> {
        self.close_block()?;
        let expected = self.range.start() + self.index.len() as u32;
        if !self.range.contains(key_group) || key_group != expected {
            return Err(StateError::InvalidArgument(format!(
                "key group {key_group} written out of order (expected {expected} within {})",
                self.range
            )));
        }
        self.current = Some((key_group, self.buf.len()));
        Ok(())
    }

    /// The buffer the current key group's bytes are appended to.
    pub fn buffer(&mut self) -> &mut Vec<u8> {
        &mut self.buf
    }

    /// Writes the index and footer, publishes the file and returns its size.
    pub fn finish(mut self) -> StateResult<u64> {
        self.close_block()?;
        if self.index.len() != self.range.len() {
            return Err(StateError::InvalidArgument(format!(
                "{} of {} key groups written",
                self.index.len(),
                self.range.len()
            )));
        }
        let index_offset = self.flushed + self.buf.len() as u64;
        let mut index = Vec::with_capacity(self.index.len() * INDEX_ENTRY_LEN as usize);
        for (kg, offset, len, crc) in &self.index {
            index.put_u32(*kg);
            index.put_u64(*offset);
            index.put_u64(*len);
            index.put_u32(*crc);
        }
        let index_crc = crc32c::crc32c(&index);
        self.buf.extend_from_slice(&index);
        let footer_start = self.buf.len();
        self.buf.put_u32(self.max_parallelism);
        self.buf.put_u32(self.range.start());
        self.buf
            .put_u32(self.range.start() + self.range.len() as u32);
        self.buf.put_u64(index_offset);
        self.buf.put_u32(self.index.len() as u32);
        self.buf.put_u32(index_crc);
        let footer_crc = crc32c::crc32c(&self.buf[footer_start..]);
        self.buf.put_u32(footer_crc);
        self.buf.extend_from_slice(FOOTER_MAGIC);
        self.sink.write(&self.buf)?;
        Ok(self.sink.finish()?)
    }
}

#[derive(Clone, Copy)]
struct IndexEntry {
    offset: u64,
    len: u64,
    crc: u32,
}

/// An opened key-group-indexed file: footer, index and header verified.
pub struct KeyGroupFileReader<'s> {
    storage: &'s dyn CheckpointStorage,
    path: String,
    kind: u32,
    max_parallelism: u32,
    range: KeyGroupRange,
    header: Bytes,
    index: Vec<IndexEntry>,
}

impl<'s> KeyGroupFileReader<'s> {
    /// Opens `path`, verifying magic numbers, version, kind and checksums of the
    /// footer, index and header.
    pub fn open(
        storage: &'s dyn CheckpointStorage,
        path: &str,
        expected_kind: u32,
    ) -> StateResult<Self> {
        let size = storage.size(path)?;
        if size < PRELUDE_LEN + 4 + 4 + FOOTER_LEN {
            return Err(StateError::corrupt(
                path,
                format!("file of {size} bytes is truncated"),
            ));
        }
        let prelude = storage.get_range(path, 0..PRELUDE_LEN + 4)?;
        let mut r = ByteReader::new(&prelude, path);
        if r.take(8, "magic")? != FILE_MAGIC {
            return Err(StateError::corrupt(
                path,
                "not a flowstate key-group file (bad magic)",
            ));
        }
        let version = r.u32("version")?;
        if version == 0 || version > FORMAT_VERSION {
            return Err(StateError::UnsupportedVersion {
                path: path.to_string(),
                found: version,
                supported: FORMAT_VERSION,
            });
        }
        let kind = r.u32("kind")?;
        let header_len = r.u32("header length")? as u64;

        let footer = storage.get_range(path, size - FOOTER_LEN..size)?;
        let mut f = ByteReader::new(&footer, path);
        let max_parallelism = f.u32("max parallelism")?;
        let start = f.u32("range start")?;
        let end_exclusive = f.u32("range end")?;
        let index_offset = f.u64("index offset")?;
        let count = f.u32("index count")?;
        let index_crc = f.u32("index crc")?;
        let footer_crc = f.u32("footer crc")?;
        if f.take(8, "footer magic")? != FOOTER_MAGIC {
            return Err(StateError::corrupt(
                path,
                "bad footer magic (file truncated or overwritten)",
            ));
        }
        if crc32c::crc32c(&footer[..28]) != footer_crc {
            return Err(StateError::corrupt(path, "footer checksum mismatch"));
        }
        if kind != expected_kind {
            return Err(StateError::corrupt(
                path,
                format!("file holds payload kind {kind}, expected {expected_kind}"),
            ));
        }
        check_max_parallelism(max_parallelism).map_err(|_| {
            StateError::corrupt(path, format!("max parallelism {max_parallelism} invalid"))
        })?;
        if end_exclusive < start
            || end_exclusive > max_parallelism
            || (end_exclusive - start) != count
        {
            return Err(StateError::corrupt(
                path,
                "key-group range and index count disagree",
            ));
        }
        let range = if count == 0 {
            KeyGroupRange::empty()
        } else {
            KeyGroupRange::new(start, end_exclusive - 1)?
        };
        let header_end = PRELUDE_LEN + 4 + header_len + 4;
        let index_len = count as u64 * INDEX_ENTRY_LEN;
        if index_offset < header_end
            || index_offset.checked_add(index_len) != Some(size - FOOTER_LEN)
        {
            return Err(StateError::corrupt(
                path,
                "index offset does not match the file size",
            ));
        }
        let index_bytes = storage.get_range(path, index_offset..index_offset + index_len)?;
        if crc32c::crc32c(&index_bytes) != index_crc {
            return Err(StateError::corrupt(path, "index checksum mismatch"));
        }
        let mut ir = ByteReader::new(&index_bytes, path);
        let mut index = Vec::with_capacity(count as usize);
        let mut expected_offset = header_end;
        for kg in range.iter() {
            let stored_kg = ir.u32("index key group")?;
            let offset = ir.u64("index offset")?;
            let len = ir.u64("index length")?;
            let crc = ir.u32("index crc")?;
            if stored_kg != kg || offset != expected_offset {
                return Err(StateError::corrupt(
                    path,
                    format!("index entry of key group {kg} is inconsistent"),
                ));
            }
            expected_offset = offset
                .checked_add(len)
                .filter(|e| *e <= index_offset)
                .ok_or_else(|| {
                    StateError::corrupt(path, format!("block of key group {kg} overruns the index"))
                })?;
            index.push(IndexEntry { offset, len, crc });
        }
        if expected_offset != index_offset {
            return Err(StateError::corrupt(
                path,
                "blocks do not end where the index starts",
            ));
        }
        let header_block = storage.get_range(path, PRELUDE_LEN + 4..header_end)?;
        let (header, crc) = header_block.split_at(header_block.len() - 4);
        let stored = u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]);
        if crc32c::crc32c(header) != stored {
            return Err(StateError::corrupt(path, "header checksum mismatch"));
        }
        Ok(KeyGroupFileReader {
            storage,
            path: path.to_string(),
            kind,
            max_parallelism,
            range,
            header: header_block.slice(..header_block.len() - 4),
            index,
        })
    }

    /// The file's path.
    pub fn path(&self) -> &str {
        &self.path
    }
    /// The payload kind.
    pub fn kind(&self) -> u32 {
        self.kind
    }
    /// Max parallelism the file was written with.
    pub fn max_parallelism(&self) -> u32 {
        self.max_parallelism
    }
    /// The key groups the file holds.
    pub fn key_group_range(&self) -> KeyGroupRange {
        self.range
    }
    /// The opaque header.
    pub fn header(&self) -> &Bytes {
        &self.header
    }

    /// Reads and verifies the blocks of every key group in `wanted ∩ file range`, in
    /// order, fetching contiguous blocks together in reads of at most 16 MiB (or one
    /// block, if larger), and hands each to `visit`.
    pub fn for_each_key_group(
        &self,
        wanted: KeyGroupRange,
        mut visit: impl FnMut(u32, Bytes) -> StateResult<()>,
    ) -> StateResult<()> {
        const SPAN_BYTES: u64 = 16 << 20;
        let span = self.range.intersection(&wanted);
        let kgs: Vec<u32> = span.iter().collect();
        let mut i = 0;
        while i < kgs.len() {
            // Extend the read while it stays under the span limit.
            let first = self.entry(kgs[i])?;
            let mut j = i + 1;
            while j < kgs.len() {
                let e = self.entry(kgs[j])?;
                if e.offset + e.len - first.offset > SPAN_BYTES {
                    break;
                }
                j += 1;
            }
            let last = self.entry(kgs[j - 1])?;
            let expected = last.offset + last.len - first.offset;
            let data = self
                .storage
                .get_range(&self.path, first.offset..last.offset + last.len)?;
            if data.len() as u64 != expected {
                return Err(StateError::corrupt(
                    &self.path,
                    "storage returned a short read",
                ));
            }
            for kg in &kgs[i..j] {
                let e = self.entry(*kg)?;
                let from = (e.offset - first.offset) as usize;
                let block = data.slice(from..from + e.len as usize);
                if crc32c::crc32c(&block) != e.crc {
                    return Err(StateError::corrupt(
                        &self.path,
                        format!("checksum mismatch in key group {kg}"),
                    ));
                }
                visit(*kg, block)?;
            }
            i = j;
        }
        Ok(())
    }

    /// The blocks of every key group in `wanted ∩ file range`, in order.
    pub fn read_key_groups(&self, wanted: KeyGroupRange) -> StateResult<Vec<(u32, Bytes)>> {
        let mut out = Vec::new();
        self.for_each_key_group(wanted, |kg, b| {
            out.push((kg, b));
            Ok(())
        })?;
        Ok(out)
    }

    fn entry(&self, key_group: u32) -> StateResult<IndexEntry> {
        self.range
            .index_of(key_group)
            .and_then(|i| self.index.get(i).copied())
            .ok_or_else(|| {
                StateError::corrupt(
                    &self.path,
                    format!("no index entry for key group {key_group}"),
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_round_trip_and_reject_malformed() {
        for v in [0u32, 1, 127, 128, 300, 16383, 16384, u32::MAX] {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            let mut r = ByteReader::new(&out, "t");
            assert_eq!(r.varint("v").unwrap(), v);
            assert!(r.is_empty());
        }
        for bad in [
            &[0x80u8][..],
            &[0x80, 0x00],
            &[0xff, 0xff, 0xff, 0xff, 0x1f],
            &[0xff; 6],
        ] {
            assert!(ByteReader::new(bad, "t").varint("v").is_err(), "{bad:?}");
        }
    }

    #[test]
    fn long_values_get_multi_byte_prefixes() {
        let mut out = vec![9u8];
        put_len_prefixed(&mut out, |o| {
            o.extend_from_slice(&[7u8; 300]);
            Ok::<(), ()>(())
        })
        .unwrap()
        .unwrap();
        let mut r = ByteReader::new(&out[1..], "t");
        assert_eq!(r.vbytes("v").unwrap(), &[7u8; 300][..]);
        assert!(r.is_empty());
        assert_eq!(out[0], 9);
    }
}
