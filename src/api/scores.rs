//! `GET /v1/scores/latest` and `GET /v1/scores/{cycle_id}` (docs/api.md §4.5, §4.6).

use actix_web::{web, HttpResponse};
use serde_json::Value;

use super::body::non_negative;
use super::cycles::{cycle_body, Cycle};
use super::error::ApiError;
use super::AppState;
use crate::db::cycles as db_cycles;
use crate::db::views::{self, MinerScoreRow};
use crate::wire::{timestamp, MinerScore, ScoreTable, Scores};
use kinitro_actors::states::CycleStatus;

impl From<MinerScoreRow> for MinerScore {
    fn from(r: MinerScoreRow) -> Self {
        Self {
            episodes_completed: r.episodes_completed,
            episodes_excluded: r.episodes_excluded,
            episodes_failed: r.episodes_failed,
            env_id: r.env_id,
            hotkey: r.hotkey,
            mean_reward: r.mean_reward,
            success_rate: r.success_rate,
            uid: r.uid,
        }
    }
}

/// Score rows of a cycle, ordered by uid, then by the cycle's env order.
pub async fn rows(
    conn: &mut diesel_async::AsyncPgConnection,
    cycle: &Cycle,
) -> Result<Vec<MinerScore>, ApiError> {
    let mut rows: Vec<MinerScore> = views::scores(conn, cycle.id)
        .await?
        .into_iter()
        .map(MinerScore::from)
        .collect();
    let order = cycle.env_list();
    let pos = |e: &str| order.iter().position(|x| x == e).unwrap_or(usize::MAX);
    rows.sort_by(|a, b| {
        (a.uid, pos(&a.env_id), &a.env_id).cmp(&(b.uid, pos(&b.env_id), &b.env_id))
    });
    Ok(rows)
}

/// The scores body of `cycle`.
pub async fn body(state: &AppState, cycle: Cycle) -> Result<Scores, ApiError> {
    let mut conn = state.public_conn().await?;
    let completed = cycle.status == CycleStatus::Completed;
    let details = if completed {
        rows(&mut conn, &cycle).await?
    } else {
        Vec::new()
    };
    let mut scores = ScoreTable::new();
    for r in &details {
        scores
            .entry(r.uid.to_string())
            .or_default()
            .insert(r.env_id.clone(), r.success_rate);
    }
    let frontier = if completed {
        cycle
            .pareto_frontier
            .clone()
            .unwrap_or_else(|| Value::Array(Vec::new()))
    } else {
        Value::Array(Vec::new())
    };
    Ok(Scores {
        block: cycle.block_number,
        created_at: timestamp(cycle.completed_at.unwrap_or(cycle.started_at)),
        cycle: cycle_body(&cycle),
        cycle_id: cycle.id,
        details,
        miner_summary: scores.clone(),
        pareto_frontier: frontier,
        scores,
    })
}

/// The scores of the highest-id completed cycle, if any.
pub async fn latest_scores(state: &AppState) -> Result<Option<Scores>, ApiError> {
    let mut conn = state.public_conn().await?;
    let cycle = db_cycles::latest_with_status(&mut conn, CycleStatus::Completed).await?;
    drop(conn);
    match cycle {
        Some(c) => Ok(Some(body(state, c).await?)),
        None => Ok(None),
    }
}

/// Scores of the highest-id completed cycle.
#[utoipa::path(get, path = "/v1/scores/latest", responses((status = 200, body = crate::wire::Scores), (status = 404, body = crate::wire::ErrorBody), (status = 503, body = crate::wire::ErrorBody)))]
pub async fn latest(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    match latest_scores(&state).await? {
        Some(s) => Ok(HttpResponse::Ok().json(s)),
        None => Err(ApiError::not_found("No completed evaluations yet")),
    }
}

/// Scores of any cycle.
#[utoipa::path(get, path = "/v1/scores/{cycle_id}", params(("cycle_id" = u64, Path, description = "Cycle id")), responses((status = 200, body = crate::wire::Scores), (status = 404, body = crate::wire::ErrorBody), (status = 422, body = crate::wire::ErrorBody), (status = 503, body = crate::wire::ErrorBody)))]
pub async fn by_cycle(
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = non_negative("cycle_id", &path.into_inner())?;
    let mut conn = state.public_conn().await?;
    let cycle = db_cycles::by_id(&mut conn, id).await?;
    drop(conn);
    match cycle {
        Some(c) => Ok(HttpResponse::Ok().json(body(&state, c).await?)),
        None => Err(ApiError::not_found(format!("Cycle {id} not found"))),
    }
}
