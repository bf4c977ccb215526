//! The `EvaluationCycle` object (docs/api.md §3.1) several endpoints share.

use serde::Serialize;
use serde_json::Value;

pub use crate::db::cycles::Cycle;
use crate::wire::timestamp;

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

impl CycleJson {
    /// The API's view of a cycle row.
    pub fn of(cycle: &Cycle) -> Self {
        let c = cycle;
        CycleJson {
            id: c.id,
            block_number: c.block_number,
            started_at: timestamp(c.started_at),
            completed_at: c.completed_at.map(timestamp),
            status: c.status.as_str().to_string(),
            n_miners: c.n_miners,
            n_environments: c.n_environments,
            duration_seconds: c.duration_seconds,
            error_message: c.error_message.clone(),
            env_ids: c.env_ids.clone(),
            episodes_per_env: c.episodes_per_env,
        }
    }
}
