//! `GET /v1/weights/latest` and `GET /v1/weights/{block}` (docs/api.md §4.3, §4.4): what validators
//! poll.

use actix_web::{web, HttpResponse};

use super::error::ApiError;
use super::AppState;
use crate::db::views::{self, WeightsRow};
use crate::wire::{timestamp, Weights, WeightsMetadata};

async fn load(state: &AppState, block: Option<i64>) -> Result<Option<WeightsRow>, ApiError> {
    let mut conn = state.conn().await?;
    Ok(views::weights(&mut conn, block).await?)
}

/// The weights body of a stored row.
pub fn body(row: WeightsRow) -> Weights {
    let created = timestamp(row.created_at);
    Weights {
        block: row.block,
        block_number: row.block,
        created_at: created.clone(),
        cycle_id: row.cycle_id,
        metadata: WeightsMetadata {
            evaluation_duration_seconds: row.duration_seconds,
            n_environments: row.n_environments,
            n_miners_evaluated: row.n_miners,
        },
        timestamp: created,
        weights: row.weights,
        weights_u16: row.weights_u16,
    }
}

/// How long one process serves the latest weights from memory (docs/api.md §5).
const LATEST_CACHE: std::time::Duration = std::time::Duration::from_secs(5);

/// The weights with the largest block (ties: largest id), cached per process for at most 5 s; a
/// 404 is never cached.
#[utoipa::path(get, path = "/v1/weights/latest", responses((status = 200, body = crate::wire::Weights), (status = 404, body = crate::wire::ErrorBody), (status = 503, body = crate::wire::ErrorBody)))]
pub async fn latest(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let cached = state
        .weights_cache
        .lock()
        .unwrap()
        .as_ref()
        .filter(|(at, _)| at.elapsed() < LATEST_CACHE)
        .map(|(_, b)| b.clone());
    let bytes = match cached {
        Some(b) => b,
        None => {
            let row = load(&state, None)
                .await?
                .ok_or_else(|| ApiError::not_found("No weights available yet"))?;
            let b = bytes::Bytes::from(serde_json::to_vec(&body(row)).expect("JSON"));
            *state.weights_cache.lock().unwrap() = Some((std::time::Instant::now(), b.clone()));
            b
        }
    };
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .body(bytes))
}

/// The weights of one block.
#[utoipa::path(get, path = "/v1/weights/{block}", params(("block" = u64, Path, description = "Block number")), responses((status = 200, body = crate::wire::Weights), (status = 404, body = crate::wire::ErrorBody), (status = 422, body = crate::wire::ErrorBody), (status = 503, body = crate::wire::ErrorBody)))]
pub async fn by_block(
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let raw = path.into_inner();
    let block: i64 = raw.parse().ok().filter(|b: &i64| *b >= 0).ok_or_else(|| {
        ApiError::unprocessable(format!("block: '{raw}' is not a non-negative integer"))
    })?;
    match load(&state, Some(block)).await? {
        Some(row) => Ok(HttpResponse::Ok().json(body(row))),
        None => Err(ApiError::not_found(format!(
            "No weights found for block {block}"
        ))),
    }
}
