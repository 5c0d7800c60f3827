//! Replays one input of `connection` or `connection_raw` outside libFuzzer and
//! prints every frame the broker writes:
//! `WARREN_FUZZ_TRACE=1 cargo +nightly run --release --example trace -- connection FILE`.
use warren_fuzz::{drive_connection, handshake};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (target, file) = (&args[1], &args[2]);
    let data = std::fs::read(file).expect("read input");
    match target.as_str() {
        "connection" => {
            let (knobs, rest) = data.split_first().unwrap_or((&0, &[]));
            let mut seed = [0u8; 8];
            let n = rest.len().min(8);
            seed[..n].copy_from_slice(&rest[..n]);
            let heartbeat = [0u16, 0, 1, 3][(knobs & 3) as usize];
            let frame_max = [131_072u32, 131_072, 8192, 16_384][((knobs >> 2) & 3) as usize];
            drive_connection(u64::from_le_bytes(seed), &handshake(frame_max, heartbeat), frame_max, &rest[n..]);
        }
        "connection_raw" => {
            let mut seed = [0u8; 8];
            let n = data.len().min(8);
            seed[..n].copy_from_slice(&data[..n]);
            drive_connection(u64::from_le_bytes(seed), &[], 131_072, &data[n..]);
        }
        t => panic!("unknown target {t}"),
    }
    eprintln!("ok: no panic");
}
