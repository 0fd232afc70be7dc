//! Placeholder while RocksDB builds.
