//! `GET /v1/miners` (docs/api.md §4.7): the latest registry snapshot. Decrypted endpoints never
//! leave.

use actix_web::{web, HttpResponse};
use kinitro_actors::registry::MinerStatus;
use serde_json::Value;

use super::cache::{bounded, Serialized};
use super::error::ApiError;
use super::AppState;
use crate::db::views;
use crate::wire::{timestamp, Miner, MinerVerification, Miners};

/// The latest snapshot, ascending uid.
#[utoipa::path(get, path = "/v1/miners", responses((status = 200, body = crate::wire::Miners), (status = 503, body = crate::wire::ErrorBody)))]
pub async fn miners(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    Ok(current(&state).await?.response())
}

/// The miners body (cached, docs/api.md §1.3).
pub async fn current(state: &AppState) -> Result<Serialized<Miners>, ApiError> {
    state
        .public
        .miners
        .get_or(
            (),
            bounded(async { Ok(Serialized::new(miners_body(state).await?)) }),
        )
        .await
}

async fn miners_body(state: &AppState) -> Result<Miners, ApiError> {
    let mut conn = state.public_conn().await?;
    let Some(snap) = views::miner_snapshot(&mut conn).await? else {
        return Ok(Miners {
            block: None,
            cycle_id: None,
            miners: Vec::new(),
        });
    };
    let miners: Vec<Miner> = snap
        .miners
        .into_iter()
        .map(|r| {
            let public_endpoint = r
                .endpoint
                .filter(|_| r.status == MinerStatus::Active && !r.encrypted);
            Miner {
                avg_success_rate: r.avg_success_rate,
                commit_block: r.commit_block,
                encrypted: r.encrypted,
                endpoint: public_endpoint,
                environments_evaluated: r
                    .environments_evaluated
                    .unwrap_or_else(|| Value::Array(Vec::new())),
                hotkey: r.hotkey,
                last_evaluated: r.last_evaluated.map(timestamp),
                last_evaluated_block: r.last_evaluated_block,
                repo: r.repo,
                revision: r.revision,
                status: r.status.as_str().to_string(),
                status_reason: r.status_reason,
                uid: r.uid,
                verification: match (
                    r.verification_outcome,
                    r.verification_revision,
                    r.verification_checked_at,
                ) {
                    (Some(outcome), Some(revision), Some(at)) => Some(MinerVerification {
                        outcome,
                        match_score: r.verification_match_score,
                        revision,
                        checked_at: timestamp(at),
                    }),
                    _ => None,
                },
            }
        })
        .collect();
    Ok(Miners {
        block: snap.block,
        cycle_id: Some(snap.cycle_id),
        miners,
    })
}
