//! Encrypted deployment ids (docs/scheduler.md §10.3): X25519 with a fresh ephemeral key, the raw
//! shared secret as the ChaCha20-Poly1305 key, the nonce from SHA-256 of the ephemeral public key,
//! base85 text. Bit-compatible with the upstream Python implementation (see the committed test
//! vector).

use chacha20poly1305::aead::Aead;
use chacha20poly1305::{ChaCha20Poly1305, KeyInit, Nonce};
use sha2::{Digest, Sha256};
use x25519_dalek::{PublicKey, StaticSecret};

use super::base85;

/// Length of the encrypted package: ephemeral public key, ciphertext, tag.
pub const PACKAGE_LEN: usize = 64;

/// 16 bytes of a UUID given with or without dashes (either case).
pub fn uuid_bytes(id: &str) -> Result<[u8; 16], String> {
    let hex_digits: String = id.chars().filter(|c| *c != '-').collect();
    if hex_digits.len() != 32 || !hex_digits.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(format!("Invalid UUID format: {id}"));
    }
    let bytes = hex::decode(&hex_digits).map_err(|_| format!("Invalid UUID format: {id}"))?;
    uuid_from_slice(&bytes).map(|_| bytes.try_into().expect("16 bytes"))
}

/// The lowercase dashed form of 16 UUID bytes.
pub fn uuid_from_slice(bytes: &[u8]) -> Result<String, String> {
    let b: [u8; 16] = bytes
        .try_into()
        .map_err(|_| format!("Invalid UUID bytes length: {} (expected 16)", bytes.len()))?;
    Ok(uuid::Uuid::from_bytes(b).hyphenated().to_string())
}

/// A 32-byte key from 64 hex characters; `what` is `public` or `private` for the messages.
pub fn parse_key(text: &str, what: &str) -> Result<[u8; 32], String> {
    let bytes = hex::decode(text.trim()).map_err(|e| format!("Invalid hex key: {e}"))?;
    bytes
        .as_slice()
        .try_into()
        .map_err(|_| format!("Invalid {what} key length: {} (expected 32)", bytes.len()))
}

/// The public key of a private key.
pub fn public_key(private: &[u8; 32]) -> [u8; 32] {
    PublicKey::from(&StaticSecret::from(*private)).to_bytes()
}

fn nonce_of(ephemeral_public: &[u8]) -> [u8; 12] {
    Sha256::digest(ephemeral_public)[..12]
        .try_into()
        .expect("12 bytes")
}

/// Encrypts a deployment UUID for `backend_public` with a fresh ephemeral key (80-character blob).
pub fn encrypt_deployment_id(
    backend_public: &[u8; 32],
    deployment_id: &str,
) -> Result<String, String> {
    encrypt_with_ephemeral(backend_public, deployment_id, rand::random())
}

/// [`encrypt_deployment_id`] with a given ephemeral secret (tests and interoperability vectors).
pub fn encrypt_with_ephemeral(
    backend_public: &[u8; 32],
    deployment_id: &str,
    ephemeral: [u8; 32],
) -> Result<String, String> {
    let plaintext = uuid_bytes(deployment_id)?;
    let secret = StaticSecret::from(ephemeral);
    let ephemeral_public = PublicKey::from(&secret).to_bytes();
    let shared = secret.diffie_hellman(&PublicKey::from(*backend_public));
    let cipher = ChaCha20Poly1305::new(shared.as_bytes().into());
    let sealed = cipher
        .encrypt(
            Nonce::from_slice(&nonce_of(&ephemeral_public)),
            plaintext.as_slice(),
        )
        .map_err(|e| format!("encryption failed: {e}"))?;
    let mut package = ephemeral_public.to_vec();
    package.extend_from_slice(&sealed);
    Ok(base85::encode(&package))
}

/// Decrypts a blob with the backend private key to the lowercase dashed UUID
/// (docs/scheduler.md §10.3), or one of the messages of docs/scheduler.md §10.4.
pub fn decrypt_deployment_id(backend_private: &[u8; 32], blob: &str) -> Result<String, String> {
    let package = base85::decode(blob)?;
    if package.len() != PACKAGE_LEN {
        return Err(format!(
            "Invalid encrypted package size: {} (expected {PACKAGE_LEN})",
            package.len()
        ));
    }
    let (ephemeral_public, sealed) = package.split_at(32);
    let ephemeral: [u8; 32] = ephemeral_public.try_into().expect("32 bytes");
    let shared = StaticSecret::from(*backend_private).diffie_hellman(&PublicKey::from(ephemeral));
    let fail = |detail: &str| format!("Decryption failed (invalid key or tampered data): {detail}");
    if !shared.was_contributory() {
        return Err(fail("non-contributory key exchange"));
    }
    let plaintext = ChaCha20Poly1305::new(shared.as_bytes().into())
        .decrypt(Nonce::from_slice(&nonce_of(ephemeral_public)), sealed)
        .map_err(|_| fail("authentication tag mismatch"))?;
    uuid_from_slice(&plaintext)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "95edf2b6-e18b-400a-8398-5573df10e5e4";

    #[test]
    fn uuid_forms() {
        assert_eq!(
            hex::encode(uuid_bytes(ID).unwrap()),
            "95edf2b6e18b400a83985573df10e5e4"
        );
        assert_eq!(
            uuid_bytes("95EDF2B6E18B400A83985573DF10E5E4").unwrap(),
            uuid_bytes(ID).unwrap()
        );
        assert_eq!(uuid_from_slice(&uuid_bytes(ID).unwrap()).unwrap(), ID);
        assert_eq!(
            uuid_bytes("abc123").unwrap_err(),
            "Invalid UUID format: abc123"
        );
        assert_eq!(
            uuid_from_slice(&[0; 9]).unwrap_err(),
            "Invalid UUID bytes length: 9 (expected 16)"
        );
        assert_eq!(
            parse_key("abcd1234", "public").unwrap_err(),
            "Invalid public key length: 4 (expected 32)"
        );
        assert!(parse_key("zz", "private")
            .unwrap_err()
            .starts_with("Invalid hex key: "));
    }

    #[test]
    fn round_trips_and_tampering() {
        let backend: [u8; 32] = rand::random();
        let public = public_key(&backend);
        let a = encrypt_deployment_id(&public, ID).unwrap();
        let b = encrypt_deployment_id(&public, ID).unwrap();
        assert_eq!(a.len(), 80);
        assert_eq!(base85::decode(&a).unwrap().len(), 64);
        assert_ne!(a, b, "fresh ephemeral keys");
        assert_eq!(decrypt_deployment_id(&backend, &a).unwrap(), ID);
        assert_eq!(decrypt_deployment_id(&backend, &b).unwrap(), ID);
        let other: [u8; 32] = rand::random();
        assert!(decrypt_deployment_id(&other, &a)
            .unwrap_err()
            .starts_with("Decryption failed (invalid key or tampered data): "));
        let tampered = format!("{}XXXXX", &a[..75]);
        assert!(decrypt_deployment_id(&backend, &tampered).is_err());
        assert!(decrypt_deployment_id(&backend, "0000000000")
            .unwrap_err()
            .starts_with("Invalid encrypted package size: 8 (expected 64)"));
        assert!(decrypt_deployment_id(&backend, "\"\"\"\"\"")
            .unwrap_err()
            .starts_with("Invalid base85 encoding"));
    }
}

#[cfg(test)]
mod interop {
    use super::*;

    /// Generated by tests/fixtures/make_crypto_vector.py with Python's `cryptography` package.
    #[test]
    fn python_vector_decrypts_and_re_encrypts_exactly() {
        let v: serde_json::Value =
            serde_json::from_str(include_str!("../../tests/fixtures/crypto_vector.json")).unwrap();
        let s = |k: &str| v[k].as_str().unwrap().to_string();
        let backend = parse_key(&s("backend_private_key"), "private").unwrap();
        assert_eq!(hex::encode(public_key(&backend)), s("backend_public_key"));
        assert_eq!(
            decrypt_deployment_id(&backend, &s("blob")).unwrap(),
            s("deployment_id")
        );
        let ephemeral = parse_key(&s("ephemeral_private_key"), "private").unwrap();
        let public = parse_key(&s("backend_public_key"), "public").unwrap();
        assert_eq!(
            encrypt_with_ephemeral(&public, &s("deployment_id"), ephemeral).unwrap(),
            s("blob")
        );
    }
}
