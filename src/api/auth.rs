//! Bearer authentication of the task endpoints (docs/api.md §2).

use actix_web::HttpRequest;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::error::ApiError;

/// The accepted keys, kept as SHA-256 digests so every comparison is constant-time and of equal length.
#[derive(Clone)]
pub struct Auth {
    disabled: bool,
    digests: Vec<[u8; 32]>,
}

impl Auth {
    /// From the configured keys; `disabled` ignores the header entirely.
    pub fn new(keys: &[String], disabled: bool) -> Self {
        Self {
            disabled,
            digests: keys
                .iter()
                .map(|k| Sha256::digest(k.as_bytes()).into())
                .collect(),
        }
    }

    /// Checks the `Authorization: Bearer <key>` header.
    pub fn check(&self, req: &HttpRequest) -> Result<(), ApiError> {
        if self.disabled {
            return Ok(());
        }
        let header = req
            .headers()
            .get(actix_web::http::header::AUTHORIZATION)
            .and_then(|h| h.to_str().ok());
        let token = header
            .and_then(|h| h.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token)
            .ok_or_else(|| ApiError::unauthorized("Missing authorization header"))?;
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        // Compare with every key, each in constant time, without stopping at the first match.
        let matched = self
            .digests
            .iter()
            .fold(subtle::Choice::from(0), |acc, k| acc | k.ct_eq(&digest));
        if bool::from(matched) {
            Ok(())
        } else {
            Err(ApiError::unauthorized("Invalid API key"))
        }
    }
}
