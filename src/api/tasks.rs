//! `POST /v1/tasks/fetch`, `POST /v1/tasks/submit`, `GET /v1/tasks/stats` (docs/api.md §4.9–4.11).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use actix_web::{web, HttpRequest, HttpResponse};
use kinitro_actors::scoring::aggregate::FailureKind;
use kinitro_actors::states::TaskStatus;
use kinitro_actors::tasks::TaskResult;
use serde_json::Value;

use super::body::{check_string, non_negative, read_json, Fields};
use super::error::ApiError;
use super::AppState;
use crate::db::tasks::{self, ClaimFilter, SubmitOutcome};
use crate::wire::{
    timestamp, ClaimedTask, FailureKindBody, FetchResponse, SubmitResponse, TaskStats,
};
use serde::Deserialize;

/// How long one process reuses its `total_pending` count.
const PENDING_CACHE: Duration = Duration::from_secs(1);

fn parse_fetch(body: &Value) -> Result<(String, i64, ClaimFilter), ApiError> {
    let f = Fields::of(body, "")?;
    let executor = f.string("executor_id", 1, 64)?;
    let batch = f.opt_int("batch_size", 1, 100)?.unwrap_or(10);
    let env_ids = match f.opt_array("env_ids")? {
        None => None,
        Some(items) if items.len() > 100 => {
            return Err(ApiError::unprocessable("env_ids: at most 100 entries"));
        }
        Some(items) => Some(
            items
                .iter()
                .enumerate()
                .map(|(i, v)| check_string(v, &format!("env_ids[{i}]"), 1, 64))
                .collect::<Result<Vec<_>, _>>()?,
        ),
    };
    let shard = match f.get("shard") {
        None => None,
        Some(v) => {
            let s = Fields::of(v, "shard")?;
            let count = s
                .opt_int("count", 1, 65535)?
                .ok_or_else(|| ApiError::unprocessable("shard.count: missing field"))?;
            let index = s
                .opt_int("index", 0, 65535)?
                .ok_or_else(|| ApiError::unprocessable("shard.index: missing field"))?;
            if index >= count {
                return Err(ApiError::unprocessable(
                    "shard.index: must be smaller than shard.count",
                ));
            }
            Some((index as i32, count as i32))
        }
    };
    Ok((executor, batch, ClaimFilter { env_ids, shard }))
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
    }
}

/// Claims a batch of tasks; committed before the answer.
#[utoipa::path(post, path = "/v1/tasks/fetch", request_body = crate::wire::FetchRequest, security(("bearer" = [])), responses((status = 200, body = crate::wire::FetchResponse), (status = 400, body = crate::wire::ErrorBody), (status = 401, body = crate::wire::ErrorBody), (status = 413, body = crate::wire::ErrorBody), (status = 415, body = crate::wire::ErrorBody), (status = 422, body = crate::wire::ErrorBody), (status = 503, body = crate::wire::ErrorBody)))]
pub async fn fetch(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    state.auth.check(&req)?;
    let body = read_json(&req, payload, state.max_body_bytes).await?;
    let (executor, batch, filter) = parse_fetch(&body)?;
    let request = tasks::ClaimRequest {
        executor,
        batch_size: batch,
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

fn parse_result(v: &Value, path: &str) -> Result<TaskResult, ApiError> {
    let f = Fields::of(v, path)?;
    let success = f.bool("success")?;
    let failure_kind = match f.get("failure_kind") {
        None => None,
        Some(v) => match FailureKindBody::deserialize(v) {
            Ok(kind) => Some(FailureKind::from(kind)),
            Err(_) => {
                return Err(ApiError::unprocessable(format!(
                    "{}: must be one of: miner, infrastructure",
                    f.path("failure_kind")
                )))
            }
        },
    };
    if success && failure_kind.is_some() {
        return Err(ApiError::unprocessable(format!(
            "{}: must be null when success is true",
            f.path("failure_kind")
        )));
    }
    Ok(TaskResult {
        task_uuid: f.string("task_uuid", 1, 64)?,
        success,
        score: f.opt_number("score", None)?.unwrap_or(0.0),
        total_reward: f.opt_number("total_reward", None)?.unwrap_or(0.0),
        timesteps: f.opt_int("timesteps", 0, 1_000_000)?.unwrap_or(0) as u32,
        error: f.opt_text("error")?,
        failure_kind,
        action_time_mean: f.opt_number("action_time_mean", Some(0.0))?,
        action_time_max: f.opt_number("action_time_max", Some(0.0))?,
        verification_passed: f.opt_bool("verification_passed")?,
        verification_score: f.opt_number("verification_score", None)?,
    }
    // Where a submitted result becomes the typed value: its blame is settled here, once.
    .settled())
}

/// Applies results, each in its own transaction; 200 even when all are rejected.
#[utoipa::path(post, path = "/v1/tasks/submit", request_body = crate::wire::SubmitRequest, security(("bearer" = [])), responses((status = 200, body = crate::wire::SubmitResponse), (status = 400, body = crate::wire::ErrorBody), (status = 401, body = crate::wire::ErrorBody), (status = 413, body = crate::wire::ErrorBody), (status = 415, body = crate::wire::ErrorBody), (status = 422, body = crate::wire::ErrorBody), (status = 503, body = crate::wire::ErrorBody)))]
pub async fn submit(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    state.auth.check(&req)?;
    let body = read_json(&req, payload, state.max_body_bytes).await?;
    let f = Fields::of(&body, "")?;
    let executor = f.string("executor_id", 1, 64)?;
    let items = f
        .opt_array("results")?
        .ok_or_else(|| ApiError::unprocessable("results: missing field"))?;
    if items.is_empty() || items.len() > 1000 {
        return Err(ApiError::unprocessable(
            "results: must contain 1 to 1000 results",
        ));
    }
    let results = items
        .iter()
        .enumerate()
        .map(|(i, v)| parse_result(v, &format!("results[{i}]")))
        .collect::<Result<Vec<_>, _>>()?;
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

/// Task counts of a cycle (given, else the running one, else all).
#[utoipa::path(get, path = "/v1/tasks/stats", params(("cycle_id" = Option<u64>, Query, description = "Cycle (default: the running one)")), responses((status = 200, body = crate::wire::TaskStats), (status = 422, body = crate::wire::ErrorBody), (status = 503, body = crate::wire::ErrorBody)))]
pub async fn stats(
    state: web::Data<AppState>,
    query: web::Query<HashMap<String, String>>,
) -> Result<HttpResponse, ApiError> {
    let requested = query
        .get("cycle_id")
        .map(|raw| non_negative("cycle_id", raw))
        .transpose()?;
    let mut conn = state.conn().await?;
    let counts = tasks::counts(&mut conn, requested).await?;
    Ok(HttpResponse::Ok().json(TaskStats {
        assigned_tasks: counts.count(TaskStatus::Assigned),
        cancelled_tasks: counts.count(TaskStatus::Cancelled),
        completed_tasks: counts.count(TaskStatus::Completed),
        current_cycle_id: counts.cycle_id,
        failed_tasks: counts.count(TaskStatus::Failed),
        pending_tasks: counts.count(TaskStatus::Pending),
        total_tasks: counts.total(),
        active_executors: counts.active_executors,
    }))
}
