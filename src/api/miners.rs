//! `GET /v1/miners` (docs/api.md §4.7): the latest registry snapshot. Decrypted endpoints never
//! leave.

use actix_web::{web, HttpResponse};
use kinitro_actors::registry::MinerStatus;
use serde_json::{json, Value};

use super::error::ApiError;
use super::AppState;
use crate::db::views;
use crate::wire::timestamp;

/// The latest snapshot, ascending uid.
#[utoipa::path(get, path = "/v1/miners", responses((status = 200, body = super::openapi::Miners), (status = 503, body = super::openapi::ErrorBody)))]
pub async fn miners(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let mut conn = state.conn().await?;
    let Some(snap) = views::miner_snapshot(&mut conn).await? else {
        return Ok(HttpResponse::Ok().json(json!({"miners": [], "cycle_id": null, "block": null})));
    };
    let miners: Vec<Value> = snap
        .miners
        .into_iter()
        .map(|r| {
            let public_endpoint = r
                .endpoint
                .filter(|_| r.status == MinerStatus::Active && !r.encrypted);
            json!({
                "uid": r.uid, "hotkey": r.hotkey, "endpoint": public_endpoint,
                "last_evaluated": r.last_evaluated.map(timestamp), "status": r.status.as_str(),
                "repo": r.repo, "revision": r.revision, "commit_block": r.commit_block,
                "encrypted": r.encrypted, "status_reason": r.status_reason,
                "last_evaluated_block": r.last_evaluated_block, "avg_success_rate": r.avg_success_rate,
                "environments_evaluated": r.environments_evaluated.unwrap_or(json!([])),
            })
        })
        .collect();
    Ok(HttpResponse::Ok()
        .json(json!({"miners": miners, "cycle_id": snap.cycle_id, "block": snap.block})))
}
