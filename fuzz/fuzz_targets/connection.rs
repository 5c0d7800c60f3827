//! The connection state machine after a valid handshake.
//!
//! Input: `[knobs:u8][seed:u64][bytes...]`. `knobs` picks the negotiated
//! frame_max and heartbeat; `seed` drives chunking and the virtual clock; the
//! bytes are what the client sends after connection.open.
#![no_main]
use libfuzzer_sys::fuzz_target;
use warren_fuzz::{drive_connection, handshake};

fuzz_target!(|data: &[u8]| {
    let (knobs, rest) = data.split_first().unwrap_or((&0, &[]));
    let mut seed = [0u8; 8];
    let n = rest.len().min(8);
    seed[..n].copy_from_slice(&rest[..n]);
    let rest = &rest[n..];
    let heartbeat = [0u16, 0, 1, 3][(knobs & 3) as usize];
    let frame_max = [131_072u32, 131_072, 8192, 16_384][((knobs >> 2) & 3) as usize];
    drive_connection(u64::from_le_bytes(seed), &handshake(frame_max, heartbeat), frame_max, rest);
});
