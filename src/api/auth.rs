//! Bearer authentication of the task endpoints (docs/api.md §2): shared keys good for any executor
//! id, and per-executor keys good only for the ids that start with their prefix.

use actix_web::dev::Payload;
use actix_web::{web, FromRequest, HttpRequest};
use futures_util::future::{ready, Ready};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::error::ApiError;
use crate::config::api::ExecutorKey;

/// What an accepted key may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Act as any executor (a shared key, or authentication disabled).
    AnyExecutor,
    /// Act only as executors whose id starts with this prefix.
    ExecutorsNamed(String),
}

impl Scope {
    /// Refuses an `executor_id` outside the scope with a 403 (docs/api.md §2).
    pub fn permit(&self, executor_id: &str) -> Result<(), ApiError> {
        match self {
            Scope::ExecutorsNamed(prefix) if !executor_id.starts_with(prefix.as_str()) => {
                Err(ApiError::new(
                    403,
                    format!("executor_id: this key may only act as executors named {prefix}…"),
                ))
            }
            _ => Ok(()),
        }
    }
}

/// The accepted keys, kept as SHA-256 digests so every comparison is constant-time and of equal
/// length, each with its scope.
#[derive(Clone)]
pub struct Auth {
    disabled: bool,
    keys: Vec<([u8; 32], Scope)>,
}

impl Auth {
    /// From the configured keys; `disabled` ignores the header entirely.
    pub fn new(shared: &[String], per_executor: &[ExecutorKey], disabled: bool) -> Self {
        let digest = |k: &str| -> [u8; 32] { Sha256::digest(k.as_bytes()).into() };
        let shared = shared.iter().map(|k| (digest(k), Scope::AnyExecutor));
        let scoped = per_executor
            .iter()
            .map(|k| (digest(&k.key), Scope::ExecutorsNamed(k.prefix.clone())));
        Self {
            disabled,
            keys: shared.chain(scoped).collect(),
        }
    }

    /// Checks the `Authorization: Bearer <key>` header and answers the key's scope.
    pub fn check(&self, req: &HttpRequest) -> Result<Scope, ApiError> {
        if self.disabled {
            return Ok(Scope::AnyExecutor);
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
        let mut matched = None;
        for (key, scope) in &self.keys {
            if bool::from(key.ct_eq(&digest)) && matched.is_none() {
                matched = Some(scope.clone());
            }
        }
        matched.ok_or_else(|| ApiError::unauthorized("Invalid API key"))
    }

    /// Whether the request carries an accepted key (or authentication is off); never an error.
    pub fn accepts(&self, req: &HttpRequest) -> bool {
        self.check(req).is_ok()
    }
}

/// A request whose key [`Auth::check`] accepted, with the key's scope. As a handler's first
/// extractor it runs before the body is read, so a caller without a valid key learns nothing about
/// its body (docs/api.md §2).
pub struct Authorized(pub Scope);

impl FromRequest for Authorized {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(match req.app_data::<web::Data<super::AppState>>() {
            Some(state) => state.auth.check(req).map(Authorized),
            None => Err(ApiError::new(500, "Internal server error")),
        })
    }
}
