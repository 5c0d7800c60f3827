//! `table_guard::check_table` against amq-protocol's recursive table parser.
//!
//! Checks:
//! - `check_table` never panics and `Ok(n)` lies inside the input;
//! - whenever it returns `Ok(n)`, `parse_field_table` on those `n` bytes neither
//!   panics nor overflows a 256 KiB stack (it runs on a thread with that stack),
//!   and if it parses, it consumes exactly `n` bytes; if it refuses, the only
//!   allowed reason is a key that is not UTF-8 (amq-protocol requires UTF-8 keys,
//!   the guard does not look at key bytes);
//! - differential: a table that `parse_field_table` accepts (run on a 256 MiB
//!   stack) is accepted by `check_table` with the same length when it is nested at
//!   most `MAX_DEPTH` deep, and refused as `TooDeep` when deeper.
#![no_main]
use amq_protocol::types::parsing::parse_field_table;
use amq_protocol::types::{AMQPValue, FieldTable};
use libfuzzer_sys::fuzz_target;
use warren_codec::table_guard::{check_table, TableShapeError, MAX_DEPTH};
use warren_fuzz::{run_with_stack, WorkerSlot};

static SMALL: WorkerSlot = WorkerSlot::new();
static BIG: WorkerSlot = WorkerSlot::new();
const SMALL_STACK: usize = 256 * 1024;
const BIG_STACK: usize = 256 * 1024 * 1024;

/// Nesting depth, counting the outer table as 1 (the guard's convention).
fn table_depth(t: &FieldTable) -> usize {
    1 + t.inner().values().map(value_depth).max().unwrap_or(0)
}

fn value_depth(v: &AMQPValue) -> usize {
    match v {
        AMQPValue::FieldTable(t) => table_depth(t),
        AMQPValue::FieldArray(a) => 1 + a.as_slice().iter().map(value_depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// Whether a table already accepted by `check_table` has a key that is not UTF-8.
/// Recursion is bounded by the guard's MAX_DEPTH.
fn has_non_utf8_key(d: &[u8]) -> bool {
    fn container(d: &[u8], mut pos: usize, end: usize, is_table: bool) -> bool {
        while pos < end {
            if is_table {
                let k = d[pos] as usize;
                if std::str::from_utf8(&d[pos + 1..pos + 1 + k]).is_err() {
                    return true;
                }
                pos += 1 + k;
            }
            let tag = d[pos];
            let len = warren_codec::table_guard::value_len(d, pos).expect("guard-checked value");
            if matches!(tag, b'F' | b'A') && container(d, pos + 5, pos + len, tag == b'F') {
                return true;
            }
            pos += len;
        }
        false
    }
    let len = u32::from_be_bytes([d[0], d[1], d[2], d[3]]) as usize;
    container(d, 4, 4 + len, true)
}

fuzz_target!(|data: &[u8]| {
    let guard = check_table(data);
    if let Ok(n) = guard {
        assert!((4..=data.len()).contains(&n), "Ok({n}) for {} bytes", data.len());
        let table = data[..n].to_vec();
        let parsed = run_with_stack(&SMALL, SMALL_STACK, move || {
            parse_field_table(&table[..])
                .ok()
                .map(|(rest, t)| (table.len() - rest.len(), table_depth(&t)))
        });
        match parsed {
            Some((used, depth)) => {
                assert_eq!(used, n, "guard and parser disagree on the table's length");
                assert!(depth <= MAX_DEPTH, "guard passed a table {depth} deep");
            }
            None => assert!(
                has_non_utf8_key(&data[..n]),
                "guard accepted a table amq-protocol refuses (and not for a non-UTF-8 key): {:02x?}",
                &data[..n]
            ),
        }
    }

    // Differential: what amq-protocol accepts (within MAX_DEPTH) the guard accepts.
    let owned = data.to_vec();
    let reference = run_with_stack(&BIG, BIG_STACK, move || {
        parse_field_table(&owned[..])
            .ok()
            .map(|(rest, t)| (owned.len() - rest.len(), table_depth(&t)))
    });
    if let Some((used, depth)) = reference {
        if depth <= MAX_DEPTH {
            assert_eq!(guard, Ok(used), "amq-protocol accepts a {depth}-deep table of {used} bytes that the guard refuses");
        } else {
            assert_eq!(guard, Err(TableShapeError::TooDeep), "a {depth}-deep table was not refused as too deep");
        }
    }
});
