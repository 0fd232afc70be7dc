//! The manifest of a RocksDB native snapshot: the backend's key-group range, its state
//! descriptions, the SST files it uploaded or shares (with sizes and CRC-32C), and the
//! small private files (MANIFEST, OPTIONS, CURRENT) inlined. Byte layout and version
//! log in `docs/formats.md`:
//!
//! - version 1: SST entries are `name | shared path | size u64`;
//! - version 2: each SST entry adds `flag u8 | crc32c u32 (when flag = 1)`, verified
//!   when the file is read back at restore. Version-1 manifests are still read.
//! - version 3: the manifest's bytes as version 2's; its SST files may hold list
//!   values with runs of integers (`docs/formats.md`, "Key and value layout"), which a
//!   reader of version 2 would fail on mid-job, so it refuses the manifest instead.
//!
//! Defined in core (not the RocksDB crate) so the decoder can be fuzzed and read
//! offline without linking RocksDB.

use crate::format::{ByteReader, PutLe, frame, unframe};
use crate::keygroup::KeyGroupRange;
use crate::serializer::SerializerSnapshot;
use crate::snapshot::{SharedFile, StateMetaInfo, decode_header, encode_header};
use crate::{StateError, StateResult};

const MANIFEST_MAGIC: &[u8; 8] = b"FLWSRDB\0";
/// Version 2 adds a CRC-32C per SST file; version 3 marks SST files whose list values
/// may hold runs of integers (versions 1 and 2 are still read).
pub const MANIFEST_VERSION: u32 = 3;

/// Everything a native manifest records.
pub struct NativeManifest {
    /// Key groups of the job.
    pub max_parallelism: u32,
    /// Key groups the snapshot covers.
    pub range: KeyGroupRange,
    /// The key serializer's snapshot.
    pub key_serializer: SerializerSnapshot,
    /// Every state's description.
    pub metas: Vec<StateMetaInfo>,
    /// (local file name, shared file)
    pub ssts: Vec<(String, SharedFile)>,
    /// (local file name, contents)
    pub private: Vec<(String, Vec<u8>)>,
}

impl NativeManifest {
    /// The manifest's bytes (current version).
    pub fn encode(&self) -> StateResult<Vec<u8>> {
        let mut body = Vec::new();
        body.put_u32(self.max_parallelism);
        body.put_u32(self.range.start());
        body.put_u32(self.range.start() + self.range.len() as u32);
        body.put_bytes(
            "state header",
            &encode_header(&self.key_serializer, &self.metas)?,
        )?;
        body.put_u32(self.ssts.len() as u32);
        for (name, f) in &self.ssts {
            body.put_bytes("file name", name.as_bytes())?;
            body.put_bytes("shared path", f.path.as_bytes())?;
            body.put_u64(f.size);
            // Version 2: the checksum, 0 flag byte when unknown (a file referenced
            // from a version-1 checkpoint).
            match f.crc32c {
                Some(c) => {
                    body.put_u8(1);
                    body.put_u32(c);
                }
                None => body.put_u8(0),
            }
        }
        body.put_u32(self.private.len() as u32);
        for (name, contents) in &self.private {
            body.put_bytes("file name", name.as_bytes())?;
            body.put_bytes("file contents", contents)?;
        }
        Ok(frame(MANIFEST_MAGIC, MANIFEST_VERSION, &body))
    }

    /// Reads a manifest of any version up to [`MANIFEST_VERSION`]; `path` names it in
    /// errors. Every length is checked, names are validated (no path separators; state
    /// names RocksDB can take), nothing trails.
    pub fn decode(bytes: &[u8], path: &str) -> StateResult<Self> {
        let body = unframe(
            bytes,
            path,
            MANIFEST_MAGIC,
            MANIFEST_VERSION,
            "RocksDB manifest",
        )?;
        // `unframe` checked the version is 1..=MANIFEST_VERSION; it sits after the magic.
        let version = bytes
            .get(8..12)
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .map_or(1, u32::from_le_bytes);
        let mut r = ByteReader::new(body, path);
        let max_parallelism = r.u32("max parallelism")?;
        let start = r.u32("range start")?;
        let end = r.u32("range end")?;
        let range = if end > start {
            KeyGroupRange::new(start, end - 1)?
        } else {
            KeyGroupRange::empty()
        };
        let (key_serializer, metas) = decode_header(r.bytes("state header")?, path)?;
        let n = r.u32("file count")?;
        let mut ssts = Vec::new();
        for _ in 0..n {
            let name = r.string("file name")?;
            let shared = r.string("shared path")?;
            let size = r.u64("file size")?;
            let crc32c = if version >= 2 {
                match r.u8("checksum flag")? {
                    0 => None,
                    1 => Some(r.u32("checksum")?),
                    f => {
                        return Err(StateError::corrupt(path, format!("bad checksum flag {f}")));
                    }
                }
            } else {
                None
            };
            ssts.push((
                name,
                SharedFile {
                    path: shared,
                    size,
                    crc32c,
                },
            ));
        }
        let n = r.u32("private file count")?;
        let mut private = Vec::new();
        for _ in 0..n {
            private.push((r.string("file name")?, r.bytes("file contents")?.to_vec()));
        }
        if !r.is_empty() {
            return Err(StateError::corrupt(path, "trailing bytes in manifest"));
        }
        for name in ssts
            .iter()
            .map(|(n, _)| n)
            .chain(private.iter().map(|(n, _)| n))
        {
            if name.is_empty() || name.contains('/') || name.contains("..") {
                return Err(StateError::corrupt(
                    path,
                    format!("bad file name `{name}` in manifest"),
                ));
            }
        }
        Ok(NativeManifest {
            max_parallelism,
            range,
            key_serializer,
            metas,
            ssts,
            private,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::StateKind;

    fn manifest(state: &str) -> NativeManifest {
        let ser = SerializerSnapshot {
            identity: "flowstate.serde-postcard".into(),
            version: 1,
            schema: Vec::new(),
        };
        NativeManifest {
            max_parallelism: 128,
            range: KeyGroupRange::all(128).unwrap_or_else(|_| KeyGroupRange::empty()),
            key_serializer: ser.clone(),
            metas: vec![StateMetaInfo {
                name: state.into(),
                kind: StateKind::Value,
                namespace_serializer: ser.clone(),
                value_serializer: ser,
                user_key_serializer: None,
            }],
            ssts: vec![(
                "000012.sst".into(),
                SharedFile {
                    path: "shared/x-000012.sst".into(),
                    size: 10,
                    crc32c: Some(7),
                },
            )],
            private: vec![("CURRENT".into(), b"MANIFEST-000001\n".to_vec())],
        }
    }

    #[test]
    fn manifest_round_trips_with_checksums() {
        let m = manifest("count");
        let bytes = m.encode().unwrap_or_default();
        let back = NativeManifest::decode(&bytes, "m").map_err(|e| e.to_string());
        let back = back
            .as_ref()
            .map(|b| (b.ssts.clone(), b.metas[0].name.clone()));
        assert_eq!(back, Ok((m.ssts.clone(), "count".to_string())));
    }

    /// Version 3 changed what the SST files may hold, not the manifest's bytes: the
    /// same body framed as version 2 reads the same, and a later version is refused.
    #[test]
    fn version_3_has_version_2_bytes() {
        let m = manifest("count");
        let bytes = m.encode().unwrap_or_default();
        assert_eq!(bytes.get(8..12), Some(&3u32.to_le_bytes()[..]));
        let body = unframe(&bytes, "m", MANIFEST_MAGIC, MANIFEST_VERSION, "t").unwrap_or_default();
        let v2 = NativeManifest::decode(&frame(MANIFEST_MAGIC, 2, body), "m")
            .map(|b| b.ssts)
            .map_err(|e| e.to_string());
        assert_eq!(v2, Ok(m.ssts));
        let v4 = NativeManifest::decode(&frame(MANIFEST_MAGIC, 4, body), "m");
        assert!(
            matches!(v4, Err(StateError::UnsupportedVersion { found: 4, .. })),
            "{:?}",
            v4.err()
        );
    }

    /// A manifest whose frame checksum is valid but whose state name RocksDB cannot
    /// take (a NUL byte: a panic inside the `rocksdb` crate once) is a typed error.
    #[test]
    fn invalid_state_name_is_a_typed_error() {
        for bad in ["a\0b", "", "tab\there"] {
            let bytes = manifest(bad).encode().unwrap_or_default();
            let e = NativeManifest::decode(&bytes, "m")
                .err()
                .map(|e| e.to_string());
            assert!(
                e.as_deref().is_some_and(|e| e.contains("state name")),
                "{bad:?}: {e:?}"
            );
        }
    }
}
