//! Task seeds (docs/scheduler.md §7): the public `seed` anyone can recompute from the task uuid,
//! and the secret `sim_seed` that drives the simulation, an HMAC of the uuid under the operator's
//! secret.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// First 4 bytes of SHA-256 of the uuid text, big-endian, masked to 31 bits.
pub fn task_seed(task_uuid: &str) -> i32 {
    let d = Sha256::digest(task_uuid.as_bytes());
    (u32::from_be_bytes([d[0], d[1], d[2], d[3]]) & 0x7FFF_FFFF) as i32
}

/// First 8 bytes, big-endian, of HMAC-SHA256(secret, uuid text).
pub fn sim_seed(secret: &[u8], task_uuid: &str) -> u64 {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(task_uuid.as_bytes());
    let d = mac.finalize().into_bytes();
    u64::from_be_bytes(d[..8].try_into().expect("32-byte digest"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_vectors() {
        let uuid = "550e8400-e29b-41d4-a716-446655440000";
        assert_eq!(task_seed(uuid), 598_335_981);
        let secret: Vec<u8> = (0u8..32).collect();
        assert_eq!(sim_seed(&secret, uuid), 1_221_837_438_520_379_077);
        assert_eq!(
            format!("{:016x}", sim_seed(&secret, uuid)),
            "10f4d6ad4047c6c5"
        );
    }
}
