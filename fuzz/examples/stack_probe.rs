//! How much stack amq-protocol's recursive table parser needs for the deepest
//! table `check_table` lets through (MAX_DEPTH), with arrays and with tables:
//! `cargo run --release --example stack_probe` (and without --release).
use amq_protocol::types::parsing::parse_field_table;
use warren_codec::table_guard::{check_table, MAX_DEPTH};

fn nested_arrays(depth: usize) -> Vec<u8> {
    let mut inner: Vec<u8> = Vec::new();
    for _ in 0..depth {
        let mut next = vec![b'A'];
        next.extend_from_slice(&(inner.len() as u32).to_be_bytes());
        next.extend_from_slice(&inner);
        inner = next;
    }
    let mut entry = vec![1, b'k'];
    entry.extend_from_slice(&inner);
    let mut t = (entry.len() as u32).to_be_bytes().to_vec();
    t.extend_from_slice(&entry);
    t
}

fn nested_tables(depth: usize) -> Vec<u8> {
    let mut t = warren_fuzz::table(&[("leaf", b't', &[1])]);
    for _ in 1..depth {
        t = warren_fuzz::table(&[("t", b'F', &t)]);
    }
    t
}

/// Smallest stack (in KiB, to 4 KiB) on which parsing `data` succeeds, found by
/// running it in a child process per size (an overflow aborts the child).
fn min_stack(kind: &str) -> usize {
    let exe = std::env::current_exe().unwrap();
    let (mut lo, mut hi) = (4usize, 4096usize);
    while lo < hi {
        let mid = (lo + hi) / 2;
        let ok = std::process::Command::new(&exe)
            .args(["child", kind, &mid.to_string()])
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap()
            .success();
        if ok { hi = mid } else { lo = mid + 1 }
    }
    lo
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() == 4 && args[1] == "child" {
        let data = if args[2] == "arrays" { nested_arrays(MAX_DEPTH - 1) } else { nested_tables(MAX_DEPTH) };
        assert_eq!(check_table(&data), Ok(data.len()));
        let kib: usize = args[3].parse().unwrap();
        let t = std::thread::Builder::new()
            .stack_size(kib * 1024)
            .spawn(move || parse_field_table(&data[..]).is_ok())
            .unwrap();
        std::process::exit(if t.join().unwrap() { 0 } else { 2 });
    }
    for kind in ["arrays", "tables"] {
        println!("depth {MAX_DEPTH} {kind}: parse_field_table needs about {} KiB of stack", min_stack(kind));
    }
}
