//! What the dashboard reads beyond the JSON API (docs/dashboard.md): recent cycles, a miner's rates
//! over the last cycles, the weights of the last cycles, a miner's latest episode errors and the
//! running cycle's recent pace.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use kinitro_actors::states::CycleStatus;
use serde_json::Value;

use super::connect::DbError;
use super::cycles::Cycle;
use super::schema::{
    computed_weights as cw, evaluation_cycles as ec, miner_scores as ms, task_pool,
};
use super::states::cycle_status_text;

/// The last `n` cycles, newest first.
pub async fn recent_cycles(conn: &mut AsyncPgConnection, n: i64) -> Result<Vec<Cycle>, DbError> {
    Ok(ec::table
        .order(ec::id.desc())
        .limit(n)
        .select(Cycle::as_select())
        .load(conn)
        .await?)
}

/// One success rate of a miner in a completed cycle.
#[derive(Debug, Clone, Queryable)]
pub struct RatePoint {
    /// Cycle.
    pub cycle_id: i32,
    /// Env.
    pub env_id: String,
    /// Success rate.
    pub success_rate: f64,
}

/// `uid`'s success rates in the last `n` completed cycles, oldest first.
pub async fn rate_history(
    conn: &mut AsyncPgConnection,
    uid: i32,
    n: i64,
) -> Result<Vec<RatePoint>, DbError> {
    let cycles: Vec<i32> = ec::table
        .filter(ec::status.eq(cycle_status_text(CycleStatus::Completed)))
        .order(ec::id.desc())
        .limit(n)
        .select(ec::id)
        .load(conn)
        .await?;
    Ok(ms::table
        .filter(ms::uid.eq(uid))
        .filter(ms::cycle_id.eq_any(cycles))
        .order((ms::cycle_id.asc(), ms::env_id.asc()))
        .select((ms::cycle_id, ms::env_id, ms::success_rate))
        .load(conn)
        .await?)
}

/// The stored weights of one cycle.
#[derive(Debug, Clone, Queryable)]
pub struct CycleWeights {
    /// Cycle.
    pub cycle_id: i32,
    /// Block.
    pub block: i64,
    /// `{"<uid>": weight}`.
    pub weights: Value,
}

/// The weights of the last `n` cycles that wrote some, oldest first.
pub async fn weights_history(
    conn: &mut AsyncPgConnection,
    n: i64,
) -> Result<Vec<CycleWeights>, DbError> {
    let mut rows: Vec<CycleWeights> = cw::table
        .order(cw::id.desc())
        .limit(n)
        .select((cw::cycle_id, cw::block_number, cw::weights_json))
        .load(conn)
        .await?;
    rows.reverse();
    Ok(rows)
}

/// One episode of a miner that ended with an error.
#[derive(Debug, Clone, Queryable)]
pub struct EpisodeError {
    /// Cycle.
    pub cycle_id: i32,
    /// Env.
    pub env_id: String,
    /// When the result was recorded.
    pub completed_at: Option<DateTime<Utc>>,
    /// The stored result (its `error` member is the text).
    pub result: Option<Value>,
}

/// `uid`'s latest `n` results that carry an error, newest first.
pub async fn recent_errors(
    conn: &mut AsyncPgConnection,
    uid: i32,
    n: i64,
) -> Result<Vec<EpisodeError>, DbError> {
    use diesel::dsl::sql;
    use diesel::sql_types::Bool;
    Ok(task_pool::table
        .filter(task_pool::miner_uid.eq(uid))
        .filter(task_pool::completed_at.is_not_null())
        // jsonb member test: diesel's builder has no `->>` operator.
        .filter(sql::<Bool>("result->>'error' IS NOT NULL"))
        .order(task_pool::completed_at.desc())
        .limit(n)
        .select((
            task_pool::cycle_id,
            task_pool::env_id,
            task_pool::completed_at,
            task_pool::result,
        ))
        .load(conn)
        .await?)
}

/// Results of `cycle_id` recorded in the last `seconds` (the cycle's current pace).
pub async fn finished_since(
    conn: &mut AsyncPgConnection,
    cycle_id: i32,
    seconds: i64,
) -> Result<i64, DbError> {
    let since = Utc::now() - chrono::Duration::seconds(seconds);
    Ok(task_pool::table
        .filter(task_pool::cycle_id.eq(cycle_id))
        .filter(task_pool::completed_at.gt(since))
        .count()
        .get_result(conn)
        .await?)
}
