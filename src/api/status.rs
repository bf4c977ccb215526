//! `GET /v1/status` (docs/api.md §4.2) and `GET /v1/environments` (docs/api.md §4.8).

use actix_web::{web, HttpResponse};
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Double, Nullable, Text};
use diesel::QueryableByName;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use kinitro_actors::envs::{family, task_name, ENV_IDS};
use serde_json::{json, Value};

use super::cycles::{Cycle, CycleJson};
use super::AppState;
use crate::db::cycles as db_cycles;
use crate::db::schema::scheduler_state as ss;
use crate::db::{count, DbError};
use kinitro_actors::states::CycleStatus;

type Heartbeat = (
    Option<i64>,
    bool,
    Value,
    i32,
    Option<DateTime<Utc>>,
    DateTime<Utc>,
);

async fn heartbeat(conn: &mut AsyncPgConnection) -> Result<Option<Heartbeat>, DbError> {
    Ok(ss::table
        .find(1i16)
        .select((
            ss::current_block,
            ss::chain_ok,
            ss::env_ids,
            ss::heartbeat_interval_seconds,
            ss::next_cycle_at,
            ss::heartbeat_at,
        ))
        .first(conn)
        .await
        .optional()?)
}

fn all_envs() -> Vec<String> {
    ENV_IDS.iter().map(|s| s.to_string()).collect()
}

/// The scheduler's env list: heartbeat, else the latest cycle's, else every registered id.
async fn enabled_envs(
    conn: &mut AsyncPgConnection,
    hb: &Option<Heartbeat>,
) -> Result<Vec<String>, DbError> {
    if let Some(list) = hb
        .as_ref()
        .and_then(|h| serde_json::from_value::<Vec<String>>(h.2.clone()).ok())
    {
        return Ok(list);
    }
    let latest: Option<Cycle> = db_cycles::latest(conn).await?;
    Ok(latest.map(|c| c.env_list()).unwrap_or_else(all_envs))
}

async fn status_body(conn: &mut AsyncPgConnection) -> Result<Value, DbError> {
    let hb = heartbeat(conn).await?;
    let running = db_cycles::latest_with_status(conn, CycleStatus::Running).await?;
    let completed = db_cycles::latest_with_status(conn, CycleStatus::Completed).await?;
    let fresh = hb.as_ref().is_some_and(|h| {
        let limit = (3 * i64::from(h.3)).max(120);
        (Utc::now() - h.5).num_seconds() <= limit && h.1
    });
    let next = hb
        .as_ref()
        .and_then(|h| h.4)
        .filter(|_| running.is_none())
        .map(|at| ((at - Utc::now()).num_milliseconds().max(0) + 999) / 1000);
    Ok(json!({
        "status": if fresh { "running" } else { "degraded" },
        "current_block": hb.as_ref().and_then(|h| h.0),
        "last_eval_block": completed.as_ref().map(|c| c.block_number),
        "next_eval_in_seconds": next,
        "miners_registered": count(conn, "SELECT count(*) AS count FROM miners WHERE cycle_id = (SELECT max(cycle_id) FROM miners)").await?,
        "environments_enabled": enabled_envs(conn, &hb).await?,
        "current_cycle": running.as_ref().map(CycleJson::of),
        "last_completed_cycle": completed.as_ref().map(CycleJson::of),
        "total_cycles": count(conn, "SELECT count(*) AS count FROM evaluation_cycles").await?,
        "total_miners_evaluated": count(conn, "SELECT count(DISTINCT uid) AS count FROM miner_scores").await?,
        "is_evaluating": running.is_some(),
        "environments": all_envs(),
    }))
}

/// Always 200; `degraded` with empty fields when the database is unreachable.
#[utoipa::path(get, path = "/v1/status", responses((status = 200, body = super::openapi::Status)))]
pub async fn status(state: web::Data<AppState>) -> HttpResponse {
    let body = match state.conn().await {
        Ok(mut conn) => status_body(&mut conn).await.ok(),
        Err(_) => None,
    };
    HttpResponse::Ok().json(body.unwrap_or_else(|| {
        json!({
            "status": "degraded", "current_block": null, "last_eval_block": null,
            "next_eval_in_seconds": null, "miners_registered": 0, "environments_enabled": [],
            "current_cycle": null, "last_completed_cycle": null, "total_cycles": 0,
            "total_miners_evaluated": 0, "is_evaluating": false, "environments": [],
        })
    }))
}

#[derive(QueryableByName)]
struct EnvStat {
    #[diesel(sql_type = Text)]
    env_id: String,
    #[diesel(sql_type = BigInt)]
    n: i64,
    #[diesel(sql_type = Nullable<Double>)]
    avg_rate: Option<f64>,
}

/// Every registered env with its latest completed cycle's statistics.
#[utoipa::path(get, path = "/v1/environments", responses((status = 200, body = Vec<super::openapi::Environment>), (status = 503, body = super::openapi::ErrorBody)))]
pub async fn environments(
    state: web::Data<AppState>,
) -> Result<HttpResponse, super::error::ApiError> {
    let mut conn = state.conn().await?;
    let hb = heartbeat(&mut conn).await?;
    let enabled = enabled_envs(&mut conn, &hb).await?;
    let stats: Vec<EnvStat> = diesel::sql_query(
        "SELECT env_id, count(*) AS n, avg(success_rate) AS avg_rate FROM miner_scores \
         WHERE cycle_id = (SELECT max(id) FROM evaluation_cycles WHERE status = 'completed') GROUP BY env_id",
    )
    .load(&mut conn)
    .await
    .map_err(DbError::from)?;
    let body: Vec<Value> = ENV_IDS
        .iter()
        .map(|id| {
            let s = stats.iter().find(|s| s.env_id == *id);
            json!({
                "env_id": id, "family": family(id), "env_name": family(id), "task_name": task_name(id),
                "enabled": enabled.iter().any(|e| e == id),
                "n_evaluations": s.map_or(0, |s| s.n),
                "avg_success_rate": s.and_then(|s| s.avg_rate),
            })
        })
        .collect();
    Ok(HttpResponse::Ok().json(body))
}
