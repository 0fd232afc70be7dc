//! The byte encodings every on-disk format here is built from: little-endian integers,
//! LEB128 varints, length-prefixed byte strings, a bounds-checked reader of them, and
//! the small checksummed frame of operator-state files and manifests (all specified in
//! `docs/formats.md`).

use crate::error::{StateError, StateResult};

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
