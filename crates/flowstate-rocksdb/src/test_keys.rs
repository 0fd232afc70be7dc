//! Entry keys for the model tests of the in-memory tables (`deferred.rs`, `cache.rs`).

/// Key `k` of a length from 2 to 41 bytes, so that a table holds keys inline and
/// spilled alike.
pub(crate) fn key_of(k: u16) -> Vec<u8> {
    let mut key = k.to_be_bytes().to_vec();
    key.resize(2 + usize::from(k % 40), k as u8);
    key
}
