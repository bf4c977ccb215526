//! `GET /v1/weights/latest` and `GET /v1/weights/{block}` (docs/api.md §4.3, §4.4): what validators
//! poll.

use actix_web::{web, HttpResponse};
use serde_json::{json, Value};

use super::error::ApiError;
use super::AppState;
use crate::db::views::{self, WeightsRow};
use crate::wire::timestamp;

async fn load(state: &AppState, block: Option<i64>) -> Result<Option<WeightsRow>, ApiError> {
    let mut conn = state.conn().await?;
    Ok(views::weights(&mut conn, block).await?)
}

fn body(row: WeightsRow) -> Value {
    let created = timestamp(row.created_at);
    json!({
        "block": row.block,
        "block_number": row.block,
        "cycle_id": row.cycle_id,
        "weights": row.weights,
        "weights_u16": row.weights_u16,
        "created_at": created,
        "timestamp": created,
        "metadata": {
            "n_miners_evaluated": row.n_miners,
            "n_environments": row.n_environments,
            "evaluation_duration_seconds": row.duration_seconds,
        },
    })
}

/// How long one process serves the latest weights from memory (docs/api.md §5).
const LATEST_CACHE: std::time::Duration = std::time::Duration::from_secs(5);

/// The weights with the largest block (ties: largest id), cached per process for at most 5 s; a
/// 404 is never cached.
#[utoipa::path(get, path = "/v1/weights/latest", responses((status = 200, body = super::openapi::Weights), (status = 404, body = super::openapi::ErrorBody), (status = 503, body = super::openapi::ErrorBody)))]
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
#[utoipa::path(get, path = "/v1/weights/{block}", params(("block" = u64, Path, description = "Block number")), responses((status = 200, body = super::openapi::Weights), (status = 404, body = super::openapi::ErrorBody), (status = 422, body = super::openapi::ErrorBody), (status = 503, body = super::openapi::ErrorBody)))]
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
