//! Payload encoders and decoders of the canonical format: a value, a list (count and
//! elements) and a map (count and pairs).

use crate::error::{StateError, StateResult};
use crate::format::{ByteReader, put_len_prefixed, put_varint};
use crate::serializer::TypeSerializer;

use super::entries::ser_err;

/// A single value (value, reducing, aggregating state).
pub fn put_value<T: 'static>(
    state: &str,
    ser: &dyn TypeSerializer<T>,
    v: &T,
    out: &mut Vec<u8>,
) -> StateResult<()> {
    ser.serialize_into(v, out).map_err(ser_err(state))
}

/// A list: varint count, then varint-length-prefixed elements.
pub fn put_list<'v, T: 'static>(
    state: &str,
    ser: &dyn TypeSerializer<T>,
    items: impl ExactSizeIterator<Item = &'v T>,
    out: &mut Vec<u8>,
) -> StateResult<()> {
    put_varint(
        out,
        u32::try_from(items.len())
            .map_err(|_| StateError::InvalidArgument("list too long".into()))?,
    );
    for v in items {
        put_len_prefixed(out, |o| ser.serialize_into(v, o))?.map_err(ser_err(state))?;
    }
    Ok(())
}

/// A map: varint count, then varint-length-prefixed user key and value per pair.
pub fn put_map<'v, K: 'static, V: 'static>(
    state: &str,
    key_ser: &dyn TypeSerializer<K>,
    value_ser: &dyn TypeSerializer<V>,
    pairs: impl ExactSizeIterator<Item = (&'v K, &'v V)>,
    out: &mut Vec<u8>,
) -> StateResult<()> {
    put_varint(
        out,
        u32::try_from(pairs.len())
            .map_err(|_| StateError::InvalidArgument("map too large".into()))?,
    );
    for (k, v) in pairs {
        put_len_prefixed(out, |o| key_ser.serialize_into(k, o))?.map_err(ser_err(state))?;
        put_len_prefixed(out, |o| value_ser.serialize_into(v, o))?.map_err(ser_err(state))?;
    }
    Ok(())
}

/// Splits a list payload into element encodings.
pub fn list_items<'a>(payload: &'a [u8], path: &'a str) -> StateResult<Vec<&'a [u8]>> {
    let mut r = ByteReader::new(payload, path);
    let n = r.varint("list length")?;
    let mut items = Vec::with_capacity((n as usize).min(payload.len()));
    for _ in 0..n {
        items.push(r.vbytes("list element")?);
    }
    if !r.is_empty() {
        return Err(StateError::corrupt(
            path,
            "trailing bytes after list elements",
        ));
    }
    Ok(items)
}

/// Splits a map payload into (user key, value) encodings.
pub fn map_pairs<'a>(payload: &'a [u8], path: &'a str) -> StateResult<Vec<(&'a [u8], &'a [u8])>> {
    let mut r = ByteReader::new(payload, path);
    let n = r.varint("map length")?;
    let mut pairs = Vec::with_capacity((n as usize).min(payload.len() / 2));
    for _ in 0..n {
        let k = r.vbytes("map user key")?;
        let v = r.vbytes("map value")?;
        pairs.push((k, v));
    }
    if !r.is_empty() {
        return Err(StateError::corrupt(
            path,
            "trailing bytes after map entries",
        ));
    }
    Ok(pairs)
}
