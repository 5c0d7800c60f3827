//! A non-recursive shape check for field tables, run before `amq-protocol` parses one.
//!
//! `amq-protocol`'s table parser recurses once per nesting level with no limit, so a
//! few thousand nested arrays (a few KB, small enough to arrive before login)
//! overflow the stack and abort the whole process. This walker uses an explicit
//! stack, refuses anything nested deeper than [`MAX_DEPTH`], and also checks that
//! every length stays inside its parent, so the parser that follows cannot be
//! asked to read past the frame.

/// Deepest nesting of tables/arrays accepted (rabbitmq-c uses 100 for the same reason).
pub const MAX_DEPTH: usize = 64;

/// Why a table was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableShapeError {
    TooDeep,
    Malformed,
}

/// Check the field table that starts at `data[0]` (with its 4-byte length prefix).
/// Returns the number of bytes the table occupies.
pub fn check_table(data: &[u8]) -> Result<usize, TableShapeError> {
    let len = read_u32(data, 0)? as usize;
    let end = 4usize.checked_add(len).ok_or(TableShapeError::Malformed)?;
    if end > data.len() {
        return Err(TableShapeError::Malformed);
    }
    // Each open container: (end offset, is_table).
    let mut stack: Vec<(usize, bool)> = vec![(end, true)];
    let mut pos = 4;
    while let Some(&(container_end, is_table)) = stack.last() {
        if pos == container_end {
            stack.pop();
            continue;
        }
        if pos > container_end {
            return Err(TableShapeError::Malformed);
        }
        if is_table {
            // key: shortstr
            let klen = *data.get(pos).ok_or(TableShapeError::Malformed)? as usize;
            // Keys must be UTF-8: the decoder behind this guard refuses anything
            // else, and a table it cannot read would later be mistaken for none.
            let key = data
                .get(pos + 1..pos + 1 + klen)
                .ok_or(TableShapeError::Malformed)?;
            if std::str::from_utf8(key).is_err() {
                return Err(TableShapeError::Malformed);
            }
            pos += 1 + klen;
        }
        let tag = *data.get(pos).ok_or(TableShapeError::Malformed)?;
        pos += 1;
        let fixed = match tag {
            b't' | b'b' | b'B' => Some(1),
            b's' | b'U' | b'u' => Some(2),
            b'I' | b'i' | b'f' => Some(4),
            b'l' | b'L' | b'd' | b'T' => Some(8),
            b'D' => Some(5),
            b'V' => Some(0),
            b'S' | b'x' => None,
            b'A' | b'F' => {
                let inner = read_u32(data, pos)? as usize;
                let inner_end = (pos + 4)
                    .checked_add(inner)
                    .ok_or(TableShapeError::Malformed)?;
                if inner_end > container_end {
                    return Err(TableShapeError::Malformed);
                }
                if stack.len() >= MAX_DEPTH {
                    return Err(TableShapeError::TooDeep);
                }
                stack.push((inner_end, tag == b'F'));
                pos += 4;
                continue;
            }
            _ => return Err(TableShapeError::Malformed),
        };
        match fixed {
            Some(n) => pos += n,
            None => {
                let n = read_u32(data, pos)? as usize;
                pos = (pos + 4).checked_add(n).ok_or(TableShapeError::Malformed)?;
            }
        }
        if pos > container_end {
            return Err(TableShapeError::Malformed);
        }
    }
    Ok(end)
}

/// Byte length of the value whose type tag is at `data[pos]` (tag included), in
/// a table already checked by [`check_table`].
pub fn value_len(data: &[u8], pos: usize) -> Option<usize> {
    let fixed = match *data.get(pos)? {
        b't' | b'b' | b'B' => 1,
        b's' | b'U' | b'u' => 2,
        b'I' | b'i' | b'f' => 4,
        b'l' | b'L' | b'd' | b'T' => 8,
        b'D' => 5,
        b'V' => 0,
        b'S' | b'x' | b'A' | b'F' => 4 + read_u32(data, pos + 1).ok()? as usize,
        _ => return None,
    };
    Some(1 + fixed)
}

fn read_u32(data: &[u8], at: usize) -> Result<u32, TableShapeError> {
    let b = data
        .get(at..at.checked_add(4).ok_or(TableShapeError::Malformed)?)
        .ok_or(TableShapeError::Malformed)?;
    Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

/// A cursor that skips the fixed-layout fields in front of a method's table.
pub(crate) struct Skip<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Skip<'a> {
    pub(crate) fn new(data: &'a [u8], pos: usize) -> Self {
        Skip { data, pos }
    }
    pub(crate) fn fixed(mut self, n: usize) -> Option<Self> {
        self.pos = self.pos.checked_add(n)?;
        (self.pos <= self.data.len()).then_some(self)
    }
    pub(crate) fn short_str(self) -> Option<Self> {
        let n = *self.data.get(self.pos)? as usize;
        self.fixed(1 + n)
    }
    pub(crate) fn rest(&self) -> &'a [u8] {
        &self.data[self.pos..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nested_arrays(depth: usize) -> Vec<u8> {
        // table { "k": A[ A[ ... ] ] }
        let mut inner: Vec<u8> = Vec::new();
        for _ in 0..depth {
            let mut next = vec![b'A'];
            next.extend_from_slice(&(inner.len() as u32).to_be_bytes());
            next.extend_from_slice(&inner);
            inner = next;
        }
        let mut entry = vec![1, b'k'];
        entry.extend_from_slice(&inner);
        let mut table = (entry.len() as u32).to_be_bytes().to_vec();
        table.extend_from_slice(&entry);
        table
    }

    #[test]
    fn accepts_shallow_and_refuses_deep() {
        let ok = nested_arrays(10);
        assert_eq!(check_table(&ok), Ok(ok.len()));
        assert_eq!(
            check_table(&nested_arrays(5000)),
            Err(TableShapeError::TooDeep)
        );
    }

    #[test]
    fn refuses_lengths_past_the_end() {
        assert_eq!(
            check_table(&[0, 0, 0, 9, 1, b'a']),
            Err(TableShapeError::Malformed)
        );
        // inner string claims more than its table holds
        let t = [0, 0, 0, 7, 1, b'a', b'S', 0, 0, 0, 200];
        assert_eq!(check_table(&t), Err(TableShapeError::Malformed));
        assert_eq!(check_table(&[0, 0, 0, 0]), Ok(4));
        // A key that is not UTF-8 is refused (the decoder after us would fail).
        assert_eq!(
            check_table(&[0, 0, 0, 3, 1, 0xFF, b'V']),
            Err(TableShapeError::Malformed)
        );
    }

    #[test]
    fn never_panics_on_arbitrary_bytes() {
        for seed in 0..2000u32 {
            let mut v = Vec::new();
            let mut x = seed.wrapping_mul(2654435761);
            for _ in 0..(seed % 40) {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                v.push((x & 0xff) as u8);
            }
            let _ = check_table(&v);
        }
    }
}
