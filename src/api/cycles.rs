//! The `EvaluationCycle` object (docs/api.md §3.1) and the cycle look-ups several endpoints share.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use serde::Serialize;
use serde_json::Value;

use crate::db::schema::evaluation_cycles as ec;
use crate::db::DbError;
use crate::wire::timestamp;

/// One `evaluation_cycles` row as the API shows it.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = ec)]
pub struct Cycle {
    /// Id.
    pub id: i32,
    /// Block at cycle start.
    pub block_number: i64,
    /// Start.
    pub started_at: DateTime<Utc>,
    /// Completion or failure time.
    pub completed_at: Option<DateTime<Utc>>,
    /// Status.
    pub status: String,
    /// Active miners.
    pub n_miners: Option<i32>,
    /// Env count.
    pub n_environments: Option<i32>,
    /// Wall time.
    pub duration_seconds: Option<f64>,
    /// Failure text.
    pub error_message: Option<String>,
    /// Env list.
    pub env_ids: Value,
    /// Episodes per (miner, env).
    pub episodes_per_env: i32,
    /// Frontier uids.
    pub pareto_frontier: Option<Value>,
}

/// The JSON shape of docs/api.md §3.1.
#[derive(Serialize)]
pub struct CycleJson {
    id: i32,
    block_number: i64,
    started_at: String,
    completed_at: Option<String>,
    status: String,
    n_miners: Option<i32>,
    n_environments: Option<i32>,
    duration_seconds: Option<f64>,
    error_message: Option<String>,
    env_ids: Value,
    episodes_per_env: i32,
}

impl Cycle {
    /// As the API shows it.
    pub fn json(&self) -> CycleJson {
        CycleJson {
            id: self.id,
            block_number: self.block_number,
            started_at: timestamp(self.started_at),
            completed_at: self.completed_at.map(timestamp),
            status: self.status.clone(),
            n_miners: self.n_miners,
            n_environments: self.n_environments,
            duration_seconds: self.duration_seconds,
            error_message: self.error_message.clone(),
            env_ids: self.env_ids.clone(),
            episodes_per_env: self.episodes_per_env,
        }
    }

    /// The env list as strings.
    pub fn env_list(&self) -> Vec<String> {
        serde_json::from_value(self.env_ids.clone()).unwrap_or_default()
    }
}

/// The highest-id cycle with `status`, if any.
pub async fn latest_with_status(
    conn: &mut AsyncPgConnection,
    status: &str,
) -> Result<Option<Cycle>, DbError> {
    Ok(ec::table
        .filter(ec::status.eq(status))
        .order(ec::id.desc())
        .select(Cycle::as_select())
        .first(conn)
        .await
        .optional()?)
}

/// A cycle by id.
pub async fn by_id(conn: &mut AsyncPgConnection, id: i64) -> Result<Option<Cycle>, DbError> {
    let Ok(id) = i32::try_from(id) else {
        return Ok(None);
    };
    Ok(ec::table
        .find(id)
        .select(Cycle::as_select())
        .first(conn)
        .await
        .optional()?)
}
