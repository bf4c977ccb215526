//! `POST /v1/tasks/fetch`, `POST /v1/tasks/submit`, `GET /v1/tasks/stats` (docs/api.md §4.9–4.11).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use actix_web::{web, HttpRequest, HttpResponse};
use kinitro_actors::states::TaskStatus;
use kinitro_actors::tasks::TaskResult;

use super::auth::Authorized;
use super::body::{check_length, check_range, non_negative, Json, Validate};
use super::error::ApiError;
use super::AppState;
use crate::db::tasks::{self, ClaimFilter, SubmitOutcome};
use crate::wire::{
    timestamp, ClaimedTask, FetchRequest, FetchResponse, SubmitRequest, SubmitResponse, TaskStats,
};

/// How long one process reuses its `total_pending` count.
const PENDING_CACHE: Duration = Duration::from_secs(1);

impl Validate for FetchRequest {
    fn validate(&self) -> Result<(), String> {
        check_length("executor_id", &self.executor_id, 1, 64)?;
        if let Some(n) = self.batch_size {
            check_range("batch_size", n, 1, 100)?;
        }
        if let Some(ids) = &self.env_ids {
            if ids.len() > 100 {
                return Err("env_ids: at most 100 entries".into());
            }
            for (i, id) in ids.iter().enumerate() {
                check_length(&format!("env_ids[{i}]"), id, 1, 64)?;
            }
        }
        if let Some(shard) = &self.shard {
            check_range("shard.count", shard.count, 1, 65535)?;
            check_range("shard.index", shard.index, 0, 65535)?;
            if shard.index >= shard.count {
                return Err("shard.index: must be smaller than shard.count".into());
            }
        }
        Ok(())
    }
}

impl Validate for SubmitRequest {
    fn validate(&self) -> Result<(), String> {
        check_length("executor_id", &self.executor_id, 1, 64)?;
        if self.results.is_empty() || self.results.len() > 1000 {
            return Err("results: must contain 1 to 1000 results".into());
        }
        for (i, r) in self.results.iter().enumerate() {
            let at = |field: &str| format!("results[{i}].{field}");
            check_length(&at("task_uuid"), &r.task_uuid, 1, 64)?;
            if r.success && r.failure_kind.is_some() {
                return Err(format!(
                    "{}: must be null when success is true",
                    at("failure_kind")
                ));
            }
            if let Some(t) = r.timesteps {
                check_range(&at("timesteps"), t, 0, 1_000_000)?;
            }
            for (name, value) in [
                ("action_time_mean", r.action_time_mean),
                ("action_time_max", r.action_time_max),
            ] {
                if value.is_some_and(|v| v < 0.0) {
                    return Err(format!("{}: must be at least 0", at(name)));
                }
            }
        }
        Ok(())
    }
}

async fn total_pending(state: &AppState) -> i64 {
    if let Some((at, n)) = *state.pending_cache.lock().unwrap() {
        if at.elapsed() < PENDING_CACHE {
            return n;
        }
    }
    let counted = match state.conn().await {
        Ok(mut conn) => tasks::count_pending(&mut conn).await,
        Err(_) => Err(crate::db::DbError::Other("database unavailable".into())),
    };
    match counted {
        Ok(n) => {
            *state.pending_cache.lock().unwrap() = Some((Instant::now(), n));
            n
        }
        Err(_) => state.pending_cache.lock().unwrap().map_or(0, |(_, n)| n),
    }
}

/// A claimed task as the API hands it out.
fn task_body(t: tasks::ClaimedTask) -> ClaimedTask {
    ClaimedTask {
        task_uuid: t.task_uuid,
        cycle_id: t.cycle_id,
        miner_uid: t.miner_uid,
        miner_hotkey: t.miner_hotkey,
        miner_endpoint: t.miner_endpoint,
        miner_repo: t.miner_repo,
        miner_revision: t.miner_revision,
        env_id: t.env_id,
        seed: t.seed,
        // The i64 column holds the u64 seed's bits.
        sim_seed: t.sim_seed as u64,
        status: t.status.as_str().to_string(),
        created_at: timestamp(t.created_at),
        attempts: t.attempts,
        verify: t.verify,
    }
}

/// Claims a batch of tasks; committed before the answer.
#[utoipa::path(post, path = "/v1/tasks/fetch", request_body = crate::wire::FetchRequest, security(("bearer" = [])), responses((status = 200, body = crate::wire::FetchResponse), (status = 400, body = crate::wire::ErrorBody), (status = 401, body = crate::wire::ErrorBody), (status = 403, body = crate::wire::ErrorBody), (status = 413, body = crate::wire::ErrorBody), (status = 415, body = crate::wire::ErrorBody), (status = 422, body = crate::wire::ErrorBody), (status = 503, body = crate::wire::ErrorBody)))]
pub async fn fetch(
    state: web::Data<AppState>,
    Authorized(scope): Authorized,
    Json(body): Json<FetchRequest>,
) -> Result<HttpResponse, ApiError> {
    scope.permit(&body.executor_id)?;
    let filter = ClaimFilter {
        env_ids: body.env_ids,
        shard: body.shard.map(|s| (s.index as i32, s.count as i32)),
    };
    let request = tasks::ClaimRequest {
        executor: body.executor_id,
        batch_size: body.batch_size.unwrap_or(10),
    };
    let claimed = state.claims.claim(&state.pool, request, filter).await;
    state.metrics.database(claimed.is_ok());
    let claimed = claimed.map_err(|e| {
        tracing::warn!(error = %e, "database unavailable");
        ApiError::database_unavailable()
    })?;
    state.metrics.task_event("claimed", claimed.len() as u64);
    let total_pending = total_pending(&state).await;
    Ok(HttpResponse::Ok().json(FetchResponse {
        tasks: claimed.into_iter().map(task_body).collect(),
        total_pending,
    }))
}

/// Applies results, each in its own transaction; 200 even when all are rejected.
#[utoipa::path(post, path = "/v1/tasks/submit", request_body = crate::wire::SubmitRequest, security(("bearer" = [])), responses((status = 200, body = crate::wire::SubmitResponse), (status = 400, body = crate::wire::ErrorBody), (status = 401, body = crate::wire::ErrorBody), (status = 403, body = crate::wire::ErrorBody), (status = 413, body = crate::wire::ErrorBody), (status = 415, body = crate::wire::ErrorBody), (status = 422, body = crate::wire::ErrorBody), (status = 503, body = crate::wire::ErrorBody)))]
pub async fn submit(
    state: web::Data<AppState>,
    Authorized(scope): Authorized,
    Json(body): Json<SubmitRequest>,
) -> Result<HttpResponse, ApiError> {
    scope.permit(&body.executor_id)?;
    let executor = body.executor_id;
    let results: Vec<TaskResult> = body.results.into_iter().map(TaskResult::from).collect();
    let mut conn = state.conn().await?;
    let (mut accepted, mut rejected, mut duplicates, mut requeued) = (0, 0, 0, 0);
    let mut errors = Vec::new();
    for r in &results {
        match tasks::submit_one(&mut conn, &executor, r).await {
            SubmitOutcome::Accepted { status } => {
                accepted += 1;
                state.metrics.task_event("accepted", 1);
                state.metrics.episode(r, status.as_str());
            }
            SubmitOutcome::Requeued => {
                accepted += 1;
                requeued += 1;
                state.metrics.task_event("accepted", 1);
                state.metrics.task_event("requeued", 1);
                state.metrics.episode(r, TaskStatus::Pending.as_str());
            }
            SubmitOutcome::Duplicate => {
                duplicates += 1;
                state.metrics.task_event("duplicate", 1);
            }
            // A per-result database error is reported like any rejection; the executor retries it.
            SubmitOutcome::Rejected(m) | SubmitOutcome::Unavailable(m) => {
                rejected += 1;
                state.metrics.task_event("rejected", 1);
                errors.push(m);
            }
        }
    }
    Ok(HttpResponse::Ok().json(SubmitResponse {
        accepted,
        duplicates,
        errors,
        rejected,
        requeued,
    }))
}

/// Task counts of `cycle` (else the running one, else all), cached (docs/api.md §1.3).
pub async fn task_counts(
    state: &AppState,
    cycle: Option<i64>,
) -> Result<tasks::TaskCounts, ApiError> {
    state
        .public
        .task_counts
        .get_or(
            cycle,
            super::cache::bounded(async {
                let mut conn = state.public_conn().await?;
                Ok(tasks::counts(&mut conn, cycle).await?)
            }),
        )
        .await
}

/// Task counts of a cycle (given, else the running one, else all). The active executors' ids go
/// only to a caller with a valid key; everyone gets their number (docs/api.md §4.11).
#[utoipa::path(get, path = "/v1/tasks/stats", params(("cycle_id" = Option<u64>, Query, description = "Cycle (default: the running one)")), responses((status = 200, body = crate::wire::TaskStats), (status = 422, body = crate::wire::ErrorBody), (status = 503, body = crate::wire::ErrorBody)))]
pub async fn stats(
    state: web::Data<AppState>,
    req: HttpRequest,
    query: web::Query<HashMap<String, String>>,
) -> Result<HttpResponse, ApiError> {
    let requested = query
        .get("cycle_id")
        .map(|raw| non_negative("cycle_id", raw))
        .transpose()?;
    let counts = task_counts(&state, requested).await?;
    Ok(HttpResponse::Ok().json(TaskStats {
        assigned_tasks: counts.count(TaskStatus::Assigned),
        cancelled_tasks: counts.count(TaskStatus::Cancelled),
        completed_tasks: counts.count(TaskStatus::Completed),
        current_cycle_id: counts.cycle_id,
        failed_tasks: counts.count(TaskStatus::Failed),
        pending_tasks: counts.count(TaskStatus::Pending),
        total_tasks: counts.total(),
        active_executor_count: counts.active_executor_count(),
        active_executors: state.auth.accepts(&req).then_some(counts.active_executors),
    }))
}
