//! `POST /v1/verifications` (executors report a finished verification) and
//! `GET /v1/verifications` (anyone lists them; the endpoint asked only with a key, since it may
//! have been decrypted from a private commitment) (docs/api.md §4.13, docs/verification.md §4).

use std::collections::HashMap;

use actix_web::{web, HttpRequest, HttpResponse};

use super::auth::Authorized;
use super::body::{check_length, check_range, non_negative, Json, Validate};
use super::cache::bounded;
use super::error::ApiError;
use super::AppState;
use crate::db::verifications::{self, VerificationRow};
use crate::wire::{
    timestamp, VerificationOutcome, VerificationRecord, VerificationReport, VerificationStored,
    Verifications,
};

/// Records listed when the caller gives no `limit`.
const DEFAULT_LIMIT: i64 = 50;
/// The largest `limit`.
const MAX_LIMIT: i64 = 500;

impl Validate for VerificationReport {
    fn validate(&self) -> Result<(), String> {
        check_length("executor_id", &self.executor_id, 1, 64)?;
        check_range("uid", self.uid, 0, 65535)?;
        check_length("hotkey", &self.hotkey, 1, 64)?;
        check_length("repo", &self.repo, 1, 256)?;
        check_length("revision", &self.revision, 1, 64)?;
        check_length("endpoint", &self.endpoint, 1, 2048)?;
        check_length("samples.source", &self.samples.source, 1, 16)?;
        if let Some(m) = self.match_score {
            if !(0.0..=1.0).contains(&m) {
                return Err("match_score: must be within [0, 1]".into());
            }
        }
        if self.samples.scores.len() > 64 || self.samples.count > 64 {
            return Err("samples: at most 64 samples".into());
        }
        if self.samples.scores.iter().any(|s| !(0.0..=1.0).contains(s)) {
            return Err("samples.scores: each must be within [0, 1]".into());
        }
        if let Some(e) = &self.error {
            if e.chars().count() > 4096 {
                return Err("error: at most 4096 characters".into());
            }
        }
        if self.outcome == VerificationOutcome::Passed && self.match_score.is_none() {
            return Err("match_score: required when outcome is passed".into());
        }
        Ok(())
    }
}

/// Stores one verification and counts it in `kinitro_verifications_total`.
#[utoipa::path(post, path = "/v1/verifications", request_body = crate::wire::VerificationReport, security(("bearer" = [])), responses((status = 201, body = crate::wire::VerificationStored), (status = 400, body = crate::wire::ErrorBody), (status = 401, body = crate::wire::ErrorBody), (status = 403, body = crate::wire::ErrorBody), (status = 413, body = crate::wire::ErrorBody), (status = 415, body = crate::wire::ErrorBody), (status = 422, body = crate::wire::ErrorBody), (status = 503, body = crate::wire::ErrorBody)))]
pub async fn report(
    state: web::Data<AppState>,
    Authorized(scope): Authorized,
    Json(body): Json<VerificationReport>,
) -> Result<HttpResponse, ApiError> {
    scope.permit(&body.executor_id)?;
    let mut conn = state.conn().await?;
    let id = verifications::insert(&mut conn, &body).await?;
    state.metrics.verification(body.outcome);
    tracing::info!(
        event = "verification_stored",
        id,
        uid = body.uid,
        revision = %body.revision,
        outcome = body.outcome.as_str(),
        match_score = body.match_score,
        executor_id = %body.executor_id
    );
    Ok(HttpResponse::Created().json(VerificationStored { id }))
}

/// The newest verifications, of one miner when `uid` is given.
#[utoipa::path(get, path = "/v1/verifications", params(("uid" = Option<u16>, Query, description = "Only this miner"), ("limit" = Option<u16>, Query, description = "1–500, default 50")), responses((status = 200, body = crate::wire::Verifications), (status = 422, body = crate::wire::ErrorBody), (status = 503, body = crate::wire::ErrorBody)))]
pub async fn list(
    state: web::Data<AppState>,
    req: HttpRequest,
    query: web::Query<HashMap<String, String>>,
) -> Result<HttpResponse, ApiError> {
    let uid = query
        .get("uid")
        .map(|raw| non_negative("uid", raw))
        .transpose()?;
    if uid.is_some_and(|u| u > 65535) {
        return Err(ApiError::unprocessable("uid: must be at most 65535"));
    }
    let limit = query
        .get("limit")
        .map(|raw| non_negative("limit", raw))
        .transpose()?
        .unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::unprocessable(format!(
            "limit: must be 1 to {MAX_LIMIT}"
        )));
    }
    let rows = bounded(async {
        let mut conn = state.public_conn().await?;
        Ok(verifications::list(&mut conn, uid.map(|u| u as i32), limit).await?)
    })
    .await?;
    // The endpoint asked may be one decrypted from a private commitment: keyed callers only.
    let keyed = state.auth.accepts(&req);
    Ok(HttpResponse::Ok().json(Verifications {
        verifications: rows.into_iter().map(|r| record(r, keyed)).collect(),
    }))
}

/// A row as the API shows it.
fn record(row: VerificationRow, keyed: bool) -> VerificationRecord {
    VerificationRecord {
        outcome: row.outcome(),
        samples: row.samples(),
        id: row.id,
        uid: row.uid,
        hotkey: row.hotkey,
        repo: row.repo,
        revision: row.revision,
        endpoint: keyed.then_some(row.endpoint),
        match_score: row.match_score,
        error: row.error,
        executor_id: row.executor_id,
        created_at: timestamp(row.created_at),
    }
}
