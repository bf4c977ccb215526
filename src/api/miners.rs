//! `GET /v1/miners` (docs/api.md §4.7): the latest registry snapshot. Decrypted endpoints never
//! leave.

use actix_web::{web, HttpResponse};
use chrono::{DateTime, Utc};
use diesel::sql_types::{BigInt, Bool, Double, Integer, Jsonb, Nullable, Text, Timestamptz};
use diesel::QueryableByName;
use diesel_async::RunQueryDsl;
use serde_json::{json, Value};

use super::error::ApiError;
use super::AppState;
use crate::db::DbError;
use crate::wire::timestamp;

#[derive(QueryableByName)]
struct Snapshot {
    #[diesel(sql_type = Nullable<Integer>)]
    cycle_id: Option<i32>,
    #[diesel(sql_type = Nullable<BigInt>)]
    block: Option<i64>,
}

#[derive(QueryableByName)]
struct Row {
    #[diesel(sql_type = Integer)]
    uid: i32,
    #[diesel(sql_type = Text)]
    hotkey: String,
    #[diesel(sql_type = Nullable<Text>)]
    endpoint: Option<String>,
    #[diesel(sql_type = Text)]
    status: String,
    #[diesel(sql_type = Nullable<Text>)]
    repo: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    revision: Option<String>,
    #[diesel(sql_type = Nullable<BigInt>)]
    commit_block: Option<i64>,
    #[diesel(sql_type = Bool)]
    encrypted: bool,
    #[diesel(sql_type = Nullable<Text>)]
    status_reason: Option<String>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    last_evaluated: Option<DateTime<Utc>>,
    #[diesel(sql_type = Nullable<BigInt>)]
    last_evaluated_block: Option<i64>,
    #[diesel(sql_type = Nullable<Double>)]
    avg_success_rate: Option<f64>,
    #[diesel(sql_type = Nullable<Jsonb>)]
    environments_evaluated: Option<Value>,
}

/// The latest snapshot, ascending uid.
#[utoipa::path(get, path = "/v1/miners", responses((status = 200, body = super::openapi::Miners), (status = 503, body = super::openapi::ErrorBody)))]
pub async fn miners(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let mut conn = state.conn().await?;
    let snap: Snapshot = diesel::sql_query(
        "SELECT s.cycle_id, c.block_number AS block FROM (SELECT max(cycle_id) AS cycle_id FROM miners) s \
         LEFT JOIN evaluation_cycles c ON c.id = s.cycle_id",
    )
    .get_result(&mut conn)
    .await
    .map_err(DbError::from)?;
    let Some(cycle_id) = snap.cycle_id else {
        return Ok(HttpResponse::Ok().json(json!({"miners": [], "cycle_id": null, "block": null})));
    };
    let rows: Vec<Row> = diesel::sql_query(
        "SELECT m.uid, m.hotkey, m.endpoint, m.status, m.repo, m.revision, m.commit_block, m.encrypted, \
           m.status_reason, le.completed_at AS last_evaluated, le.block_number AS last_evaluated_block, \
           le.avg_rate AS avg_success_rate, le.envs AS environments_evaluated \
         FROM miners m LEFT JOIN LATERAL ( \
           SELECT c.completed_at, c.block_number, avg(s.success_rate) AS avg_rate, \
                  jsonb_agg(s.env_id ORDER BY s.id) AS envs \
           FROM evaluation_cycles c JOIN miner_scores s ON s.cycle_id = c.id \
           WHERE c.status = 'completed' AND s.uid = m.uid AND s.hotkey = m.hotkey \
           GROUP BY c.id ORDER BY c.id DESC LIMIT 1) le ON true \
         WHERE m.cycle_id = $1 ORDER BY m.uid",
    )
    .bind::<Integer, _>(cycle_id)
    .load(&mut conn)
    .await
    .map_err(DbError::from)?;
    let miners: Vec<Value> = rows
        .into_iter()
        .map(|r| {
            let public_endpoint = r.endpoint.filter(|_| r.status == "active" && !r.encrypted);
            json!({
                "uid": r.uid, "hotkey": r.hotkey, "endpoint": public_endpoint,
                "last_evaluated": r.last_evaluated.map(timestamp), "status": r.status,
                "repo": r.repo, "revision": r.revision, "commit_block": r.commit_block,
                "encrypted": r.encrypted, "status_reason": r.status_reason,
                "last_evaluated_block": r.last_evaluated_block, "avg_success_rate": r.avg_success_rate,
                "environments_evaluated": r.environments_evaluated.unwrap_or(json!([])),
            })
        })
        .collect();
    Ok(HttpResponse::Ok()
        .json(json!({"miners": miners, "cycle_id": cycle_id, "block": snap.block})))
}
