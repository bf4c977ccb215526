//! The `EvaluationCycle` object (docs/api.md §3.1) several endpoints share.

pub use crate::db::cycles::Cycle;
use crate::wire::{timestamp, EvaluationCycle};

/// The API's view of a cycle row.
pub fn cycle_body(c: &Cycle) -> EvaluationCycle {
    EvaluationCycle {
        block_number: c.block_number,
        completed_at: c.completed_at.map(timestamp),
        duration_seconds: c.duration_seconds,
        env_ids: c.env_ids.clone(),
        episodes_per_env: c.episodes_per_env,
        error_message: c.error_message.clone(),
        id: c.id,
        n_environments: c.n_environments,
        n_miners: c.n_miners,
        started_at: timestamp(c.started_at),
        status: c.status.as_str().to_string(),
    }
}
