//! The connection state machine from the first byte (protocol header and
//! handshake are fuzzed too).
//!
//! Input: `[seed:u64][bytes...]`: `seed` drives chunking and the virtual clock.
#![no_main]
use libfuzzer_sys::fuzz_target;
use warren_fuzz::drive_connection;

fuzz_target!(|data: &[u8]| {
    let mut seed = [0u8; 8];
    let n = data.len().min(8);
    seed[..n].copy_from_slice(&data[..n]);
    // Output frames may be as large as the largest frame_max the server offers.
    drive_connection(u64::from_le_bytes(seed), &[], 131_072, &data[n..]);
});
