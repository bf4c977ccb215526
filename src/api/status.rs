//! `GET /v1/status` (docs/api.md §4.2) and `GET /v1/environments` (docs/api.md §4.8).

use actix_web::{web, HttpResponse};
use chrono::Utc;
use diesel_async::AsyncPgConnection;
use kinitro_actors::envs::{family, task_name, ENV_IDS};

use super::cache::{bounded, Serialized};
use super::cycles::{cycle_body, Cycle};
use super::error::ApiError;
use super::AppState;
use crate::db::cycles as db_cycles;
use crate::db::views::{self, HeartbeatRow};
use crate::db::DbError;
use crate::wire::{Environment, Status};
use kinitro_actors::states::CycleStatus;

fn all_envs() -> Vec<String> {
    ENV_IDS.iter().map(|s| s.to_string()).collect()
}

/// The scheduler's env list: heartbeat, else the latest cycle's, else every registered id.
async fn enabled_envs(
    conn: &mut AsyncPgConnection,
    hb: &Option<HeartbeatRow>,
) -> Result<Vec<String>, DbError> {
    if let Some(list) = hb
        .as_ref()
        .and_then(|h| serde_json::from_value::<Vec<String>>(h.env_ids.clone()).ok())
    {
        return Ok(list);
    }
    let latest: Option<Cycle> = db_cycles::latest(conn).await?;
    Ok(latest.map(|c| c.env_list()).unwrap_or_else(all_envs))
}

async fn status_body(conn: &mut AsyncPgConnection) -> Result<Status, DbError> {
    let hb = views::heartbeat(conn).await?;
    let running = db_cycles::latest_with_status(conn, CycleStatus::Running).await?;
    let completed = db_cycles::latest_with_status(conn, CycleStatus::Completed).await?;
    let fresh = hb.as_ref().is_some_and(|h| {
        let limit = (3 * i64::from(h.heartbeat_interval_seconds)).max(120);
        (Utc::now() - h.heartbeat_at).num_seconds() <= limit && h.chain_ok
    });
    let next = hb
        .as_ref()
        .and_then(|h| h.next_cycle_at)
        .filter(|_| running.is_none())
        .map(|at| ((at - Utc::now()).num_milliseconds().max(0) + 999) / 1000);
    Ok(Status {
        current_block: hb.as_ref().and_then(|h| h.current_block),
        current_cycle: running.as_ref().map(cycle_body),
        environments: all_envs(),
        environments_enabled: enabled_envs(conn, &hb).await?,
        is_evaluating: running.is_some(),
        last_completed_cycle: completed.as_ref().map(cycle_body),
        last_eval_block: completed.as_ref().map(|c| c.block_number),
        miners_registered: views::miners_registered(conn).await?,
        next_eval_in_seconds: next,
        status: if fresh { "running" } else { "degraded" }.into(),
        total_cycles: views::total_cycles(conn).await?,
        total_miners_evaluated: views::total_miners_evaluated(conn).await?,
    })
}

/// Always 200; `degraded` with empty fields when the database is unreachable.
#[utoipa::path(get, path = "/v1/status", responses((status = 200, body = crate::wire::Status)))]
pub async fn status(state: web::Data<AppState>) -> HttpResponse {
    current(&state).await.response()
}

/// The status body (cached, docs/api.md §1.3); `degraded` with empty fields when the database is
/// unreachable.
pub async fn current(state: &AppState) -> Serialized<Status> {
    let answer = state
        .public
        .status
        .get_or(
            (),
            bounded(async {
                let mut conn = state.public_conn().await?;
                Ok(Serialized::new(status_body(&mut conn).await?))
            }),
        )
        .await;
    answer.unwrap_or_else(|_| Serialized::new(degraded()))
}

/// The status when the database cannot be read.
fn degraded() -> Status {
    Status {
        current_block: None,
        current_cycle: None,
        environments: Vec::new(),
        environments_enabled: Vec::new(),
        is_evaluating: false,
        last_completed_cycle: None,
        last_eval_block: None,
        miners_registered: 0,
        next_eval_in_seconds: None,
        status: "degraded".into(),
        total_cycles: 0,
        total_miners_evaluated: 0,
    }
}

/// Every registered env with its latest completed cycle's statistics.
#[utoipa::path(get, path = "/v1/environments", responses((status = 200, body = Vec<crate::wire::Environment>), (status = 503, body = crate::wire::ErrorBody)))]
pub async fn environments(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let body = state
        .public
        .environments
        .get_or((), async {
            Ok(Serialized::new(environments_body(&state).await?))
        })
        .await?;
    Ok(body.response())
}

async fn environments_body(state: &AppState) -> Result<Vec<Environment>, ApiError> {
    let mut conn = state.public_conn().await?;
    let hb = views::heartbeat(&mut conn).await?;
    let enabled = enabled_envs(&mut conn, &hb).await?;
    let stats = views::env_stats(&mut conn).await?;
    let body: Vec<Environment> = ENV_IDS
        .iter()
        .map(|id| {
            let s = stats.iter().find(|s| s.env_id == *id);
            Environment {
                avg_success_rate: s.and_then(|s| s.avg_rate),
                enabled: enabled.iter().any(|e| e == id),
                env_id: id.to_string(),
                env_name: family(id).to_string(),
                family: family(id).to_string(),
                n_evaluations: s.map_or(0, |s| s.n),
                task_name: task_name(id).to_string(),
            }
        })
        .collect();
    Ok(body)
}
