//! Field tables handled as the bytes they arrived in: entries split without
//! decoding their values, and tables put back together from such entries.
//!
//! RabbitMQ decodes a table into a list that keeps the wire order of its
//! fields (nested tables included) and encodes it back in that order; where
//! it changes a table (adding a header, dead-lettering) it sorts only the
//! level it changed (`rabbit_misc:set_table_value`, a stable key sort). Going
//! through `amq-protocol`'s `FieldTable`, a `BTreeMap`, would sort every
//! level; these helpers touch only what the broker changes.

use crate::table_guard::value_len;

/// A table entry as encoded: the key and the value with its type octet.
pub type RawEntry<'a> = (&'a [u8], &'a [u8]);

/// The entries of the field table at the start of `table` (with its 4-byte
/// length prefix), in wire order. `None` if the bytes do not hold a table.
pub fn entries(table: &[u8]) -> Option<Vec<RawEntry<'_>>> {
    let len = u32::from_be_bytes(table.get(..4)?.try_into().ok()?) as usize;
    let body = table.get(4..4usize.checked_add(len)?)?;
    fields(body)
}

/// The entries of a table body (the bytes after its length prefix).
pub fn fields(body: &[u8]) -> Option<Vec<RawEntry<'_>>> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < body.len() {
        let klen = *body.get(pos)? as usize;
        let key = body.get(pos + 1..pos + 1 + klen)?;
        let at = pos + 1 + klen;
        let vlen = value_len(body, at)?;
        out.push((key, body.get(at..at.checked_add(vlen)?)?));
        pos = at + vlen;
    }
    Some(out)
}

/// The elements of a field array value (`A`, length, elements), each with
/// its type octet. `None` if `value` is not an array.
pub fn array_elements(value: &[u8]) -> Option<Vec<&[u8]>> {
    if *value.first()? != b'A' {
        return None;
    }
    let len = u32::from_be_bytes(value.get(1..5)?.try_into().ok()?) as usize;
    let body = value.get(5..5usize.checked_add(len)?)?;
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < body.len() {
        let vlen = value_len(body, pos)?;
        out.push(body.get(pos..pos.checked_add(vlen)?)?);
        pos += vlen;
    }
    Some(out)
}

/// A length-prefixed table of these entries, in the order given. Keys longer
/// than a short string allows are cut at 255 bytes.
pub fn encode<K: AsRef<[u8]>, V: AsRef<[u8]>>(entries: &[(K, V)]) -> Vec<u8> {
    let mut body = Vec::new();
    for (k, v) in entries {
        let k = k.as_ref();
        let k = &k[..k.len().min(255)];
        body.push(k.len() as u8);
        body.extend_from_slice(k);
        body.extend_from_slice(v.as_ref());
    }
    let mut out = (body.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(&body);
    out
}

/// An array value (`A`, length, elements) of these encoded elements.
pub fn encode_array<E: AsRef<[u8]>>(elements: &[E]) -> Vec<u8> {
    let len: usize = elements.iter().map(|e| e.as_ref().len()).sum();
    let mut out = Vec::with_capacity(5 + len);
    out.push(b'A');
    out.extend_from_slice(&(len as u32).to_be_bytes());
    for e in elements {
        out.extend_from_slice(e.as_ref());
    }
    out
}

/// A long string value (`S`).
pub fn long_string(s: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 + s.len());
    out.push(b'S');
    out.extend_from_slice(&(s.len() as u32).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
    out
}

/// `rabbit_misc:set_table_value`: replace the first entry with this key in
/// place (or append one), then sort the entries by key, keeping the order of
/// equal keys.
pub fn set_value<K, V>(entries: &mut Vec<(K, V)>, key: &[u8], value: V)
where
    K: AsRef<[u8]> + From<Vec<u8>>,
{
    match entries.iter_mut().find(|(k, _)| k.as_ref() == key) {
        Some(e) => e.1 = value,
        None => entries.push((K::from(key.to_vec()), value)),
    }
    entries.sort_by(|a, b| a.0.as_ref().cmp(b.0.as_ref()));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_in_wire_order() {
        let t = encode(&[
            (&b"z"[..], long_string("1")),
            (&b"a"[..], encode_array(&[long_string("x"), vec![b't', 1]])),
            (&b"m"[..], vec![b'F', 0, 0, 0, 0]),
        ]);
        let e = entries(&t).unwrap();
        let keys: Vec<&[u8]> = e.iter().map(|(k, _)| *k).collect();
        assert_eq!(keys, [&b"z"[..], b"a", b"m"]);
        assert_eq!(encode(&e), t);
        let arr = array_elements(e[1].1).unwrap();
        assert_eq!(arr, [&long_string("x")[..], &[b't', 1][..]]);
        assert!(array_elements(e[0].1).is_none());
        assert!(entries(&t[..t.len() - 1]).is_none(), "truncated");
    }

    #[test]
    fn set_value_replaces_in_place_then_sorts_stably() {
        let mut e: Vec<(Vec<u8>, Vec<u8>)> = vec![
            (b"b".to_vec(), b"1".to_vec()),
            (b"a".to_vec(), b"2".to_vec()),
            (b"b".to_vec(), b"3".to_vec()),
        ];
        set_value(&mut e, b"b", b"4".to_vec());
        set_value(&mut e, b"0", b"5".to_vec());
        let got: Vec<(&[u8], &[u8])> = e.iter().map(|(k, v)| (&k[..], &v[..])).collect();
        assert_eq!(
            got,
            [
                (&b"0"[..], &b"5"[..]),
                (b"a", b"2"),
                (b"b", b"4"),
                (b"b", b"3")
            ]
        );
    }
}
