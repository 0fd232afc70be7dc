//! What only the RocksDB backend does: incremental checkpoints, claim and no-claim
//! restores, moving state to and from the heap backend, and state larger than memory.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed expectation is a failure

use std::collections::{BTreeMap, BTreeSet};

use flowstate_conformance::{config, snapshot_to, temp_storage};
use flowstate_core::backend::KeyedStateBackend;
use flowstate_core::descriptor::{ListStateDescriptor, MapStateDescriptor, ValueStateDescriptor};
use flowstate_core::keygroup::{KeyGroupRange, key_group_range_for_operator};
use flowstate_core::snapshot::{AsyncKeyedSnapshot, KeyedStateHandle};
use flowstate_core::state::VoidNamespace;
use flowstate_heap::HeapKeyedStateBackend;
use flowstate_rocksdb::{ClaimMode, RocksDbKeyedStateBackend, RocksDbOptions, SnapshotMode};

fn all() -> KeyGroupRange {
    KeyGroupRange::all(128).unwrap()
}

fn value(k: u64, generation: u64) -> Vec<u8> {
    let mut v = Vec::with_capacity(64);
    let mut z = k ^ generation.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    while v.len() < 64 {
        z = z
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        v.extend_from_slice(&z.to_le_bytes());
    }
    v
}

#[test]
fn incremental_second_checkpoint_uploads_a_small_fraction() {
    let dir = tempfile::tempdir().unwrap();
    let (_s, storage) = temp_storage();
    let opts = RocksDbOptions::new(dir.path()).with_snapshot_mode(SnapshotMode::Incremental);
    let b = RocksDbKeyedStateBackend::<u64>::new(config(128, all()), opts.clone()).unwrap();
    let s = b
        .value_state::<VoidNamespace, Vec<u8>>(&ValueStateDescriptor::new("v"))
        .unwrap();
    for k in 0..100_000 {
        b.set_current_key(k).unwrap();
        s.update(value(k, 0)).unwrap();
    }
    let h1 = snapshot_to(&b, &storage, "chk-1/keyed-0");
    for k in (0..100_000).step_by(100) {
        b.set_current_key(k).unwrap();
        s.update(value(k, 1)).unwrap();
    }
    let h2 = snapshot_to(&b, &storage, "chk-2/keyed-0");
    assert!(
        h2.uploaded_bytes * 5 < h1.uploaded_bytes,
        "second checkpoint uploaded {} bytes, first {}",
        h2.uploaded_bytes,
        h1.uploaded_bytes
    );
    // The second refers to the first one's files rather than uploading them again.
    let first: BTreeSet<_> = h1.shared_files.iter().map(|f| &f.path).collect();
    assert!(h2.shared_files.iter().any(|f| first.contains(&f.path)));
    for (h, changed) in [(&h1, false), (&h2, true)] {
        let r = RocksDbKeyedStateBackend::<u64>::restore(
            config(128, all()),
            opts.clone(),
            &storage,
            std::slice::from_ref(h),
        )
        .unwrap();
        let s = r
            .value_state::<VoidNamespace, Vec<u8>>(&ValueStateDescriptor::new("v"))
            .unwrap();
        for k in 0..100_000 {
            r.set_current_key(k).unwrap();
            let g = u64::from(changed && k % 100 == 0);
            assert_eq!(s.value().unwrap(), Some(value(k, g)), "key {k}");
        }
    }
}

#[test]
fn no_claim_restore_never_refers_to_restored_files_and_claim_does() {
    let dir = tempfile::tempdir().unwrap();
    let (_s, storage) = temp_storage();
    let opts = RocksDbOptions::new(dir.path()).with_snapshot_mode(SnapshotMode::Incremental);
    let b = RocksDbKeyedStateBackend::<u64>::new(config(128, all()), opts.clone()).unwrap();
    let s = b
        .value_state::<VoidNamespace, u64>(&ValueStateDescriptor::new("v"))
        .unwrap();
    for k in 0..20_000 {
        b.set_current_key(k).unwrap();
        s.update(k).unwrap();
    }
    let h = snapshot_to(&b, &storage, "chk-1/keyed-0");
    let restored_files: BTreeSet<_> = h.shared_files.iter().map(|f| f.path.clone()).collect();
    for (mode, expect_reuse) in [(ClaimMode::NoClaim, false), (ClaimMode::Claim, true)] {
        let r = RocksDbKeyedStateBackend::<u64>::restore(
            config(128, all()),
            opts.clone().with_claim_mode(mode),
            &storage,
            std::slice::from_ref(&h),
        )
        .unwrap();
        let s = r
            .value_state::<VoidNamespace, u64>(&ValueStateDescriptor::new("v"))
            .unwrap();
        r.set_current_key(1).unwrap();
        s.update(7).unwrap();
        let next = snapshot_to(&r, &storage, &format!("after-{mode:?}"));
        let reused = next
            .shared_files
            .iter()
            .any(|f| restored_files.contains(&f.path));
        assert_eq!(reused, expect_reuse, "{mode:?}");
    }
}

fn fill_mixed<B: KeyedStateBackend<u64>>(b: &B, keys: std::ops::Range<u64>) {
    let v = b
        .value_state::<VoidNamespace, u64>(&ValueStateDescriptor::new("v"))
        .unwrap();
    let l = b
        .list_state::<VoidNamespace, String>(&ListStateDescriptor::new("l"))
        .unwrap();
    let m = b
        .map_state::<u32, u16, String>(&MapStateDescriptor::new("m"))
        .unwrap();
    for k in keys {
        if !b.key_group_range().contains(b.key_group_of(&k).unwrap()) {
            continue;
        }
        b.set_current_key(k).unwrap();
        v.update(k * 3).unwrap();
        l.add_all(vec![k.to_string(), "x".into()]).unwrap();
        m.set_current_namespace((k % 3) as u32);
        m.put_all(vec![(1, format!("a{k}")), (2, "b".into())])
            .unwrap();
    }
}

fn check_mixed<B: KeyedStateBackend<u64>>(b: &B, keys: std::ops::Range<u64>) -> usize {
    let v = b
        .value_state::<VoidNamespace, u64>(&ValueStateDescriptor::new("v"))
        .unwrap();
    let l = b
        .list_state::<VoidNamespace, String>(&ListStateDescriptor::new("l"))
        .unwrap();
    let m = b
        .map_state::<u32, u16, String>(&MapStateDescriptor::new("m"))
        .unwrap();
    let mut n = 0;
    for k in keys {
        if !b.key_group_range().contains(b.key_group_of(&k).unwrap()) {
            continue;
        }
        b.set_current_key(k).unwrap();
        assert_eq!(v.value().unwrap(), Some(k * 3));
        assert_eq!(l.get().unwrap(), vec![k.to_string(), "x".into()]);
        m.set_current_namespace((k % 3) as u32);
        let mut e = m.entries().unwrap();
        e.sort();
        assert_eq!(e, vec![(1, format!("a{k}")), (2, "b".into())]);
        n += 1;
    }
    n
}

/// The integers of key `k`'s list: stored as a run (`add_all` of five), then one more
/// element of its own (`add`).
fn ints(k: u64) -> Vec<i64> {
    vec![
        k as i64,
        i64::MIN + k as i64,
        1 << 40,
        0,
        -(k as i64) * 1_000_003,
        7,
    ]
}

/// An integer list state (`ints`) beside `fill_mixed`'s; fixtures from `v3` hold it.
fn fill_ints<B: KeyedStateBackend<u64>>(b: &B, keys: std::ops::Range<u64>) {
    let n = b
        .list_state::<VoidNamespace, i64>(&ListStateDescriptor::new("n"))
        .unwrap();
    for k in keys {
        if b.key_group_range().contains(b.key_group_of(&k).unwrap()) {
            b.set_current_key(k).unwrap();
            let mut all = ints(k);
            let last = all.pop().unwrap();
            n.add_all(all).unwrap();
            n.add(last).unwrap();
        }
    }
}

/// How many of `keys` fall in `b`'s key groups.
fn owned<B: KeyedStateBackend<u64>>(b: &B, keys: std::ops::Range<u64>) -> usize {
    keys.filter(|k| b.key_group_range().contains(b.key_group_of(k).unwrap()))
        .count()
}

fn check_ints<B: KeyedStateBackend<u64>>(b: &B, keys: std::ops::Range<u64>) -> usize {
    let n = b
        .list_state::<VoidNamespace, i64>(&ListStateDescriptor::new("n"))
        .unwrap();
    let mut count = 0;
    for k in keys {
        if b.key_group_range().contains(b.key_group_of(&k).unwrap()) {
            b.set_current_key(k).unwrap();
            assert_eq!(n.get().unwrap(), ints(k), "key {k}");
            count += 1;
        }
    }
    count
}

#[test]
fn heap_and_rocksdb_exchange_state_through_savepoints_while_rescaling() {
    let dir = tempfile::tempdir().unwrap();
    let (_s, storage) = temp_storage();
    let opts = RocksDbOptions::new(dir.path());
    // Heap at parallelism 2 -> RocksDB at 3.
    let mut heap_handles = Vec::new();
    for i in 0..2 {
        let h = HeapKeyedStateBackend::<u64>::new(config(
            128,
            key_group_range_for_operator(128, 2, i).unwrap(),
        ))
        .unwrap();
        fill_mixed(&h, 0..3_000);
        fill_ints(&h, 0..3_000);
        heap_handles.push(
            h.savepoint()
                .unwrap()
                .write(&storage, &format!("sp-heap/{i}"))
                .unwrap(),
        );
    }
    let mut rocks_handles: Vec<KeyedStateHandle> = Vec::new();
    let mut total = 0;
    for j in 0..3 {
        let range = key_group_range_for_operator(128, 3, j).unwrap();
        let r = RocksDbKeyedStateBackend::<u64>::restore(
            config(128, range),
            opts.clone(),
            &storage,
            &heap_handles,
        )
        .unwrap();
        total += check_mixed(&r, 0..3_000);
        assert_eq!(check_ints(&r, 0..3_000), owned(&r, 0..3_000));
        // Written again here, so the RocksDB savepoint holds lists stored as runs.
        fill_ints(&r, 3_000..4_000);
        rocks_handles.push(
            r.savepoint()
                .unwrap()
                .write(&storage, &format!("sp-rocks/{j}"))
                .unwrap(),
        );
    }
    assert_eq!(total, 3_000);
    // RocksDB at 3 -> heap at 1 and at 4.
    for p in [1u32, 4] {
        let mut total = 0;
        for i in 0..p {
            let range = key_group_range_for_operator(128, p, i).unwrap();
            let h =
                HeapKeyedStateBackend::<u64>::restore(config(128, range), &storage, &rocks_handles)
                    .unwrap();
            total += check_mixed(&h, 0..3_000);
            assert_eq!(check_ints(&h, 0..4_000), owned(&h, 0..4_000));
        }
        assert_eq!(total, 3_000, "heap at {p}");
    }
}

/// List items of every length class, written by `add`, `add_all` and `update`: each
/// stored item carries its length in front (one byte below 128, more from 128), and
/// what RocksDB holds reads back, and moves to the heap backend, item for item.
#[test]
fn list_items_of_any_length_read_back_and_move_to_the_heap_backend() {
    let dir = tempfile::tempdir().unwrap();
    let (_s, storage) = temp_storage();
    let item = |len: usize, seed: u8| -> Vec<u8> { (0..len).map(|i| seed ^ i as u8).collect() };
    let lens = [0usize, 1, 127, 128, 129, 300, 16_384, 20_000];
    let expected = |k: u64| -> Vec<Vec<u8>> {
        let base: Vec<Vec<u8>> = lens.iter().map(|&l| item(l, k as u8)).collect();
        match k % 3 {
            // `add` one item at a time, after an `update` of the first.
            0 => base,
            // `add_all` twice.
            1 => base.iter().chain(base.iter()).cloned().collect(),
            // `update` with all of them.
            _ => base,
        }
    };
    let b =
        RocksDbKeyedStateBackend::<u64>::new(config(128, all()), RocksDbOptions::new(dir.path()))
            .unwrap();
    let desc = ListStateDescriptor::<Vec<u8>>::new("l");
    let l = b.list_state::<VoidNamespace, Vec<u8>>(&desc).unwrap();
    for k in 0..30u64 {
        b.set_current_key(k).unwrap();
        let items = expected(k);
        match k % 3 {
            0 => {
                l.update(vec![items[0].clone()]).unwrap();
                for it in &items[1..] {
                    l.add(it.clone()).unwrap();
                }
            }
            1 => {
                l.add_all(items[..lens.len()].to_vec()).unwrap();
                l.add_all(items[lens.len()..].to_vec()).unwrap();
            }
            _ => l.update(items).unwrap(),
        }
    }
    for k in 0..30u64 {
        b.set_current_key(k).unwrap();
        assert_eq!(l.get().unwrap(), expected(k), "key {k} in RocksDB");
    }
    let handle = b.savepoint().unwrap().write(&storage, "sp-lists").unwrap();
    let h = HeapKeyedStateBackend::<u64>::restore(config(128, all()), &storage, &[handle]).unwrap();
    let hl = h.list_state::<VoidNamespace, Vec<u8>>(&desc).unwrap();
    for k in 0..30u64 {
        h.set_current_key(k).unwrap();
        assert_eq!(hl.get().unwrap(), expected(k), "key {k} on the heap");
    }
}

#[test]
fn state_larger_than_memory_reads_back_exactly() {
    const KEYS: u64 = 1_200_000; // ~1.2M x (64-byte value + key) > 100 MB of state
    let dir = tempfile::tempdir().unwrap();
    let opts = RocksDbOptions::new(dir.path())
        .with_block_cache_bytes(8 << 20)
        .with_write_buffer_bytes(4 << 20)
        .with_compression(flowstate_rocksdb::Compression::None);
    let b = RocksDbKeyedStateBackend::<u64>::new(config(128, all()), opts).unwrap();
    let s = b
        .value_state::<VoidNamespace, Vec<u8>>(&ValueStateDescriptor::new("big"))
        .unwrap();
    let l = b
        .list_state::<VoidNamespace, u64>(&ListStateDescriptor::new("appends"))
        .unwrap();
    for k in 0..KEYS {
        b.set_current_key(k).unwrap();
        s.update(value(k, 0)).unwrap();
        if k % 10 == 0 {
            l.add(k).unwrap();
            l.add(k + 1).unwrap();
        }
    }
    let on_disk: u64 = walk_size(dir.path());
    // Far above the 8 MiB cache + 4 MiB write buffer; the exact size varies with
    // compaction timing (about 100 MiB), so the bound leaves room.
    assert!(on_disk > 64 << 20, "state on disk is only {on_disk} bytes");
    for k in 0..KEYS {
        b.set_current_key(k).unwrap();
        assert_eq!(s.value().unwrap(), Some(value(k, 0)), "key {k}");
        if k % 10 == 0 {
            assert_eq!(l.get().unwrap(), vec![k, k + 1]);
        }
    }
}

fn walk_size(p: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(p) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => walk_size(&e.path()),
            _ => e.metadata().map_or(0, |m| m.len()),
        })
        .sum()
}

#[test]
fn memory_bound_option_holds_and_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let opts = RocksDbOptions::new(dir.path()).with_memory_bound_bytes(16 << 20);
    let b = RocksDbKeyedStateBackend::<u64>::new(config(128, all()), opts).unwrap();
    let s = b
        .value_state::<VoidNamespace, Vec<u8>>(&ValueStateDescriptor::new("v"))
        .unwrap();
    for k in 0..200_000 {
        b.set_current_key(k).unwrap();
        s.update(value(k, 3)).unwrap();
    }
    for k in (0..200_000).step_by(7) {
        b.set_current_key(k).unwrap();
        assert_eq!(s.value().unwrap(), Some(value(k, 3)));
    }
}

/// The native manifest version this build writes (golden fixtures are per version).
const CURRENT_NATIVE: &str = "v3";

/// A committed native (incremental) snapshot of format `version`: manifest plus SST
/// files. Future versions must keep restoring every one. Writes only the current
/// version's, and only on request:
/// `FLOWSTATE_BLESS=1 cargo test --release -p flowstate-rocksdb --test rocksdb_specific golden`.
fn golden_native(version: &str) {
    let golden = manifest_dir().join("tests/golden");
    let storage = flowstate_storage::ObjectCheckpointStorage::local(&golden).unwrap();
    let handle_path = golden.join(format!("{version}-native-handle.json"));
    let dir = tempfile::tempdir().unwrap();
    let opts = RocksDbOptions::new(dir.path()).with_snapshot_mode(SnapshotMode::Incremental);
    if std::env::var_os("FLOWSTATE_BLESS").is_some() && version == CURRENT_NATIVE {
        let _ = std::fs::remove_dir_all(golden.join(version));
        let mut o = opts.clone();
        o.shared_prefix = format!("{version}/shared");
        let b = RocksDbKeyedStateBackend::<u64>::new(config(128, all()), o).unwrap();
        fill_mixed(&b, 0..60);
        fill_ints(&b, 0..60);
        let h = b
            .snapshot(1)
            .unwrap()
            .write(&storage, &format!("{version}/native-manifest"))
            .unwrap();
        std::fs::write(&handle_path, serde_json::to_vec_pretty(&h).unwrap()).unwrap();
    }
    let h: KeyedStateHandle =
        serde_json::from_slice(&std::fs::read(&handle_path).unwrap()).unwrap();
    assert_eq!(
        h.format,
        flowstate_core::snapshot::SnapshotFormat::RocksDbNative
    );
    if version != "v1" {
        assert!(h.shared_files.iter().all(|f| f.crc32c.is_some()), "{h:?}");
    }
    let r = RocksDbKeyedStateBackend::<u64>::restore(
        config(128, all()),
        opts.clone(),
        &storage,
        std::slice::from_ref(&h),
    )
    .unwrap();
    assert_eq!(check_mixed(&r, 0..60), 60);
    // From `v3` on, integer lists stored as runs (`docs/formats.md`).
    let ints_from_v3 = version >= "v3";
    if ints_from_v3 {
        assert_eq!(check_ints(&r, 0..60), 60);
    }
    // Rescaled from the fixture as well.
    let mut total = 0;
    for i in 0..2 {
        let range = key_group_range_for_operator(128, 2, i).unwrap();
        let r = RocksDbKeyedStateBackend::<u64>::restore(
            config(128, range),
            opts.clone(),
            &storage,
            std::slice::from_ref(&h),
        )
        .unwrap();
        total += check_mixed(&r, 0..60);
        if ints_from_v3 {
            assert_eq!(check_ints(&r, 0..60), owned(&r, 0..60));
        }
    }
    assert_eq!(total, 60);
}

#[test]
fn reads_golden_native_snapshots() {
    for version in ["v1", "v2", "v3"] {
        golden_native(version);
    }
}

/// One flipped bit in an uploaded SST file is caught by its checksum at restore (a
/// typed corruption error naming the file), not by RocksDB mid-run.
#[test]
fn flipped_bit_in_shared_file_is_caught_at_restore() {
    let golden = manifest_dir().join("tests/golden");
    let copy = tempfile::tempdir().unwrap();
    let h: KeyedStateHandle = serde_json::from_slice(
        &std::fs::read(golden.join(format!("{CURRENT_NATIVE}-native-handle.json"))).unwrap(),
    )
    .unwrap();
    for f in h
        .shared_files
        .iter()
        .map(|f| f.path.as_str())
        .chain([h.path.as_str()])
    {
        let to = copy.path().join(f);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(golden.join(f), &to).unwrap();
    }
    let victim = copy.path().join(&h.shared_files[0].path);
    let mut bytes = std::fs::read(&victim).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x10;
    std::fs::write(&victim, bytes).unwrap();
    let storage = flowstate_storage::ObjectCheckpointStorage::local(copy.path()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let err = RocksDbKeyedStateBackend::<u64>::restore(
        config(128, all()),
        RocksDbOptions::new(dir.path()),
        &storage,
        std::slice::from_ref(&h),
    )
    .err()
    .expect("restored a damaged file");
    let text = err.to_string();
    assert!(
        text.contains("damaged") && text.contains(&h.shared_files[0].path),
        "{text}"
    );
}

/// This crate's directory, found at run time (cargo sets `CARGO_MANIFEST_DIR` for the
/// tests it runs): the compiled-in path is that of whichever checkout built a cached
/// test binary.
fn manifest_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(
        || env!("CARGO_MANIFEST_DIR").into(),
        std::path::PathBuf::from,
    )
}

/// A value serializer whose migration reader fails on its `fail_at`-th value, as
/// corrupt stored bytes would after the compatibility check passed.
struct FailsMidway {
    fail_at: usize,
}

impl flowstate_core::serializer::TypeSerializer<u64> for FailsMidway {
    fn serialize_into(
        &self,
        value: &u64,
        out: &mut Vec<u8>,
    ) -> Result<(), flowstate_core::error::SerializationError> {
        out.extend_from_slice(&value.to_le_bytes());
        Ok(())
    }
    fn deserialize(&self, bytes: &[u8]) -> Result<u64, flowstate_core::error::SerializationError> {
        flowstate_conformance::serializers::CounterV2.deserialize(bytes)
    }
    fn snapshot(&self) -> flowstate_core::serializer::SerializerSnapshot {
        flowstate_conformance::serializers::CounterV2.snapshot()
    }
    fn resolve_compatibility(
        &self,
        _previous: &flowstate_core::serializer::SerializerSnapshot,
    ) -> flowstate_core::serializer::Compatibility<u64> {
        let calls = std::sync::atomic::AtomicUsize::new(0);
        let fail_at = self.fail_at;
        flowstate_core::serializer::Compatibility::CompatibleAfterMigration(std::sync::Arc::new(
            move |b: &[u8]| {
                if calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1 == fail_at {
                    return Err(flowstate_core::error::SerializationError::new(
                        "damaged value",
                    ));
                }
                flowstate_conformance::serializers::CounterV1.deserialize(b)
            },
        ))
    }
}

/// A migration that fails after part of it was written (migrated values go to
/// RocksDB in bounded batches) leaves a mixed local copy: the backend refuses the
/// state under any serializer and refuses to snapshot, instead of serving or
/// checkpointing mixed bytes. The checkpoint itself is untouched and restores again.
#[test]
fn a_migration_failing_part_way_poisons_the_backend_not_the_checkpoint() {
    use std::sync::Arc;
    let dir = tempfile::tempdir().unwrap();
    let (_s, storage) = temp_storage();
    let opts = RocksDbOptions::new(dir.path()).with_snapshot_mode(SnapshotMode::Incremental);
    let v1 = || {
        ValueStateDescriptor::with_serializer(
            "counter",
            Arc::new(flowstate_conformance::serializers::CounterV1),
        )
    };
    let b = RocksDbKeyedStateBackend::<u64>::new(config(128, all()), opts.clone()).unwrap();
    let s = b.value_state::<VoidNamespace, u64>(&v1()).unwrap();
    let keys = 600_000u64;
    for k in 0..keys {
        b.set_current_key(k).unwrap();
        s.update(k).unwrap();
    }
    let h = snapshot_to(&b, &storage, "chk-1/keyed-0");
    drop(b);

    let dir2 = tempfile::tempdir().unwrap();
    let opts2 = RocksDbOptions::new(dir2.path()).with_snapshot_mode(SnapshotMode::Incremental);
    let r = RocksDbKeyedStateBackend::<u64>::restore(
        config(128, all()),
        opts2,
        &storage,
        std::slice::from_ref(&h),
    )
    .unwrap();
    // Far past the first 8 MiB batch of migrated values.
    let failing = ValueStateDescriptor::with_serializer(
        "counter",
        Arc::new(FailsMidway { fail_at: 550_000 }),
    );
    let e = r.value_state::<VoidNamespace, u64>(&failing).err().unwrap();
    assert!(e.to_string().contains("damaged value"), "{e}");
    let e = r.value_state::<VoidNamespace, u64>(&v1()).err().unwrap();
    assert!(e.to_string().contains("failed part-way"), "{e}");
    assert!(r.snapshot(9).is_err());
    assert!(r.savepoint().is_err());
    drop(r);

    // The checkpoint is whole: a new restore reads every value with the old type.
    let dir3 = tempfile::tempdir().unwrap();
    let r = RocksDbKeyedStateBackend::<u64>::restore(
        config(128, all()),
        RocksDbOptions::new(dir3.path()),
        &storage,
        std::slice::from_ref(&h),
    )
    .unwrap();
    let s = r.value_state::<VoidNamespace, u64>(&v1()).unwrap();
    for k in (0..keys).step_by(997) {
        r.set_current_key(k).unwrap();
        assert_eq!(s.value().unwrap(), Some(k));
    }
}

/// Whether each column family of the one live database under `local` names the
/// entry-prefix extractor, by the newest OPTIONS file RocksDB wrote for it.
fn prefix_extractors(local: &std::path::Path) -> BTreeMap<String, bool> {
    cf_options(local)
        .into_iter()
        .map(|(name, options)| (name, options.contains("flowstate.entry-prefix")))
        .collect()
}

/// The options text of each column family (but `default`) of the one live database
/// under `local`, from the newest OPTIONS file RocksDB wrote for it.
fn cf_options(local: &std::path::Path) -> BTreeMap<String, String> {
    let named = |dir: &std::path::Path, start: &str| -> Vec<std::path::PathBuf> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with(start))
            .collect()
    };
    let instances = named(local, "instance-");
    assert_eq!(instances.len(), 1, "{instances:?}");
    let newest = named(&instances[0], "OPTIONS-")
        .into_iter()
        .filter_map(|p| {
            let n = p
                .file_name()?
                .to_str()?
                .strip_prefix("OPTIONS-")?
                .parse::<u64>();
            Some((n.ok()?, p))
        })
        .max()
        .unwrap()
        .1;
    let text = std::fs::read_to_string(newest).unwrap();
    text.split("[CFOptions \"")
        .skip(1)
        .filter_map(|section| {
            let (name, options) = section.split_once('"')?;
            (name != "default").then(|| (name.to_string(), options.to_string()))
        })
        .collect()
}

/// The level-0 compaction trigger reaches every state's column family: 10 by default,
/// and what `with_level0_compaction_trigger` sets.
#[test]
fn level0_compaction_trigger_reaches_every_column_family() {
    for (set, want) in [(None, 10), (Some(7), 7), (Some(0), 1)] {
        let dir = tempfile::tempdir().unwrap();
        let mut opts = RocksDbOptions::new(dir.path());
        if let Some(files) = set {
            opts = opts.with_level0_compaction_trigger(files);
        }
        let b = RocksDbKeyedStateBackend::<u64>::new(config(128, all()), opts).unwrap();
        fill_mixed(&b, 0..10);
        let cfs = cf_options(dir.path());
        assert_eq!(cfs.len(), 3, "{:?}", cfs.keys());
        for (name, options) in cfs {
            let line = format!("level0_file_num_compaction_trigger={want}\n");
            assert!(options.contains(&line), "{name} (set {set:?}): {options}");
        }
    }
}

/// Only map states' column families get the entry-prefix extractor (value and list
/// states never scan by prefix), on every path that makes one: registering a state,
/// restoring a savepoint, and restoring incremental checkpoints while rescaling (the
/// base database reopened with its column families, the other's added to it); and
/// state written with either options reads back.
#[test]
fn only_map_states_column_families_have_the_prefix_extractor() {
    let (_s, storage) = temp_storage();
    let want = BTreeMap::from([
        ("l".to_string(), false),
        ("m".to_string(), true),
        ("v".to_string(), false),
    ]);
    let incremental = |dir: &tempfile::TempDir| {
        RocksDbOptions::new(dir.path()).with_snapshot_mode(SnapshotMode::Incremental)
    };
    let dir = tempfile::tempdir().unwrap();
    let b = RocksDbKeyedStateBackend::<u64>::new(config(128, all()), incremental(&dir)).unwrap();
    fill_mixed(&b, 0..300);
    assert_eq!(prefix_extractors(dir.path()), want, "registered");
    let savepoint = b.savepoint().unwrap().write(&storage, "sp/0").unwrap();
    drop(b);

    let dir = tempfile::tempdir().unwrap();
    let r = RocksDbKeyedStateBackend::<u64>::restore(
        config(128, all()),
        incremental(&dir),
        &storage,
        std::slice::from_ref(&savepoint),
    )
    .unwrap();
    assert_eq!(prefix_extractors(dir.path()), want, "savepoint restored");
    assert_eq!(check_mixed(&r, 0..300), 300);
    drop(r);

    // Two halves, each registering all three states but writing different ones (one
    // value and list, the other map); restored together at parallelism 1, the states
    // come through both restore paths (the base database reopened, the other's
    // column families added to it).
    let mut handles = Vec::new();
    for i in 0..2 {
        let dir = tempfile::tempdir().unwrap();
        let range = key_group_range_for_operator(128, 2, i).unwrap();
        let b =
            RocksDbKeyedStateBackend::<u64>::new(config(128, range), incremental(&dir)).unwrap();
        let (v, m) = (
            b.value_state::<VoidNamespace, u64>(&ValueStateDescriptor::new("v"))
                .unwrap(),
            b.map_state::<VoidNamespace, u64, u64>(&MapStateDescriptor::new("m"))
                .unwrap(),
        );
        let l = b
            .list_state::<VoidNamespace, u64>(&ListStateDescriptor::new("l"))
            .unwrap();
        for k in (0..300).filter(|k| range.contains(b.key_group_of(k).unwrap())) {
            b.set_current_key(k).unwrap();
            if i == 0 {
                v.update(k).unwrap();
                l.add(k).unwrap();
            } else {
                m.put(k, k + 1).unwrap();
            }
        }
        handles.push(snapshot_to(&b, &storage, &format!("chk-1/keyed-{i}")));
    }
    let dir = tempfile::tempdir().unwrap();
    let r = RocksDbKeyedStateBackend::<u64>::restore(
        config(128, all()),
        incremental(&dir),
        &storage,
        &handles,
    )
    .unwrap();
    assert_eq!(prefix_extractors(dir.path()), want, "checkpoints restored");
    let (v, l, m) = (
        r.value_state::<VoidNamespace, u64>(&ValueStateDescriptor::new("v"))
            .unwrap(),
        r.list_state::<VoidNamespace, u64>(&ListStateDescriptor::new("l"))
            .unwrap(),
        r.map_state::<VoidNamespace, u64, u64>(&MapStateDescriptor::new("m"))
            .unwrap(),
    );
    let half = key_group_range_for_operator(128, 2, 0).unwrap();
    for k in 0..300 {
        r.set_current_key(k).unwrap();
        if half.contains(r.key_group_of(&k).unwrap()) {
            assert_eq!((v.value().unwrap(), l.get().unwrap()), (Some(k), vec![k]));
            assert!(m.is_empty().unwrap(), "key {k}");
        } else {
            assert_eq!((v.value().unwrap(), l.get().unwrap()), (None, vec![]));
            assert_eq!(m.entries().unwrap(), vec![(k, k + 1)], "key {k}");
        }
    }
}
