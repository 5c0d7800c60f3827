//! Password hashes in RabbitMQ's format, so definitions move between the two
//! brokers unchanged: base64(salt ‖ SHA-256(salt ‖ password)) with a 4-byte salt
//! (`rabbit_password_hashing_sha256`, RabbitMQ's default).

use base64::Engine;
use sha2::{Digest, Sha256};

/// The algorithm name RabbitMQ stores next to each hash.
pub const SHA256: &str = "rabbit_password_hashing_sha256";

const SALT_LEN: usize = 4;

/// Hash `password` with a fresh random salt.
pub fn hash(password: &str) -> String {
    hash_with_salt(rand::random(), password)
}

fn hash_with_salt(salt: [u8; SALT_LEN], password: &str) -> String {
    let mut h = Sha256::new();
    h.update(salt);
    h.update(password.as_bytes());
    let mut out = salt.to_vec();
    out.extend_from_slice(&h.finalize());
    base64::engine::general_purpose::STANDARD.encode(out)
}

/// Whether `password` matches `stored`. An empty or malformed hash matches
/// nothing: such a user cannot log in with a password (as in RabbitMQ).
pub fn verify(stored: &str, password: &str) -> bool {
    let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(stored) else {
        return false;
    };
    if raw.len() != SALT_LEN + 32 {
        return false;
    }
    let mut salt = [0u8; SALT_LEN];
    salt.copy_from_slice(&raw[..SALT_LEN]);
    constant_time_eq(hash_with_salt(salt, password).as_bytes(), stored.as_bytes())
}

/// Whether `hash` is something RabbitMQ would accept as a stored hash.
pub fn is_valid_hash(hash: &str) -> bool {
    hash.is_empty()
        || base64::engine::general_purpose::STANDARD
            .decode(hash)
            .is_ok_and(|raw| raw.len() == SALT_LEN + 32)
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifies_a_hash_made_by_rabbitmq() {
        // `PUT /api/users/bob {"password":"secret"}` on RabbitMQ 3.10.8 stored this.
        let stored = "9kFsVtxGAF73ZCHla9LIEIB+MuNBbamTyfZDivRWOI7OSHNV";
        assert!(verify(stored, "secret"));
        assert!(!verify(stored, "Secret"));
    }

    #[test]
    fn round_trips_and_salts() {
        let a = hash("pw");
        let b = hash("pw");
        assert_ne!(a, b, "each hash gets its own salt");
        assert!(verify(&a, "pw") && verify(&b, "pw"));
        assert!(!verify(&a, "pw2"));
        assert!(is_valid_hash(&a));
    }

    #[test]
    fn empty_or_garbage_hashes_match_nothing() {
        assert!(!verify("", ""));
        assert!(!verify("not base64!", "x"));
        assert!(!verify("AAAA", ""));
        assert!(is_valid_hash(""));
        assert!(!is_valid_hash("AAAA"));
    }
}
