//! What the scheduler writes (docs/database.md §3, §4.1, §6.3, §6.4, §7): cycle creation with its
//! registry snapshot and tasks in one transaction, failure with task cancellation, completion with
//! scores and weights, the restart cleanup, the heartbeat and the seed secret.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Integer, Jsonb, Nullable, Text};
use diesel::QueryableByName;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use kinitro_actors::ports::{CreatedCycle, CycleDraft, CycleRecord, Heartbeat, TaskDraft};
use kinitro_actors::registry::MinerStatus;
use kinitro_actors::scoring::aggregate::EpisodeOutcome;
use kinitro_actors::states::{CycleStatus, TaskStatus};
use serde_json::{json, Value};

use super::connect::DbError;
use super::schema::{evaluation_cycles as ec, miner_scores, miners, task_pool};
use super::states::{cycle_status_text, stored_failure_kind, CycleStatusColumn, TaskStatusCount};
use super::Count;

/// Largest multi-row INSERT (stays under PostgreSQL's bind-parameter limit).
const INSERT_CHUNK: usize = 1000;

/// One task row to insert.
#[derive(Insertable)]
#[diesel(table_name = task_pool)]
struct NewTask<'a> {
    task_uuid: &'a str,
    cycle_id: i32,
    miner_uid: i32,
    miner_hotkey: &'a str,
    miner_endpoint: &'a str,
    miner_repo: Option<&'a str>,
    miner_revision: Option<&'a str>,
    env_id: &'a str,
    seed: i32,
    sim_seed: i64,
    max_attempts: i32,
    verify: bool,
}

impl<'a> NewTask<'a> {
    fn new(cycle_id: i32, t: &'a TaskDraft) -> Self {
        Self {
            task_uuid: &t.task_uuid,
            cycle_id,
            miner_uid: t.miner_uid,
            miner_hotkey: &t.miner_hotkey,
            miner_endpoint: &t.miner_endpoint,
            miner_repo: t.miner_repo.as_deref(),
            miner_revision: t.miner_revision.as_deref(),
            env_id: &t.env_id,
            seed: t.seed,
            sim_seed: t.sim_seed,
            max_attempts: t.max_attempts,
            verify: t.verify,
        }
    }
}

#[derive(Insertable)]
#[diesel(table_name = miners)]
struct NewMiner<'a> {
    cycle_id: i32,
    uid: i32,
    hotkey: &'a str,
    commitment: Option<&'a str>,
    repo: Option<&'a str>,
    revision: Option<&'a str>,
    endpoint: Option<&'a str>,
    encrypted: bool,
    commit_block: Option<i64>,
    status: &'a str,
    status_reason: Option<&'a str>,
}

#[derive(QueryableByName)]
struct Id {
    #[diesel(sql_type = Integer)]
    id: i32,
}

/// Writes the cycle row, the snapshot and the draft's tasks in one transaction; a snapshot without
/// an active miner fails the cycle with `no evaluable miners`.
pub async fn create_cycle(
    conn: &mut AsyncPgConnection,
    cycle: &CycleDraft,
) -> Result<CreatedCycle, DbError> {
    let active = cycle
        .miners
        .iter()
        .filter(|m| m.status == MinerStatus::Active)
        .count();
    let created = conn
        .transaction::<_, diesel::result::Error, _>(async |conn| {
            let row: Id = diesel::sql_query(
                "INSERT INTO evaluation_cycles (block_number, status, env_ids, n_environments, episodes_per_env, registry_source) \
                 VALUES ($1, 'running', $2, $3, $4, $5) RETURNING id",
            )
            .bind::<BigInt, _>(cycle.block)
            .bind::<Jsonb, _>(json!(cycle.env_ids))
            .bind::<Integer, _>(cycle.env_ids.len() as i32)
            .bind::<Integer, _>(cycle.episodes_per_env)
            .bind::<Text, _>(cycle.source.as_str())
            .get_result(conn)
            .await?;
            let rows: Vec<NewMiner> = cycle
                .miners
                .iter()
                .map(|m| NewMiner {
                    cycle_id: row.id,
                    uid: i32::from(m.entry.uid),
                    hotkey: &m.entry.hotkey,
                    commitment: m.entry.commitment.as_deref(),
                    repo: m.repo.as_deref(),
                    revision: m.revision.as_deref(),
                    endpoint: m.endpoint.as_deref(),
                    encrypted: m.encrypted,
                    commit_block: m.entry.commit_block.map(|b| b as i64),
                    status: m.status.as_str(),
                    status_reason: m.status_reason.as_deref(),
                })
                .collect();
            for chunk in rows.chunks(INSERT_CHUNK) {
                diesel::insert_into(miners::table).values(chunk).execute(conn).await?;
            }
            if active == 0 {
                diesel::sql_query(
                    "UPDATE evaluation_cycles SET status = 'failed', error_message = 'no evaluable miners', \
                     n_miners = 0, completed_at = now() WHERE id = $1",
                )
                .bind::<Integer, _>(row.id)
                .execute(conn)
                .await?;
                return Ok(CreatedCycle { id: row.id, active: 0, tasks: 0 });
            }
            let tasks: Vec<NewTask> = cycle.tasks.iter().map(|t| NewTask::new(row.id, t)).collect();
            for chunk in tasks.chunks(INSERT_CHUNK) {
                diesel::insert_into(task_pool::table).values(chunk).execute(conn).await?;
            }
            diesel::sql_query("UPDATE evaluation_cycles SET n_miners = $2 WHERE id = $1")
                .bind::<Integer, _>(row.id)
                .bind::<Integer, _>(active as i32)
                .execute(conn)
                .await?;
            Ok(CreatedCycle { id: row.id, active, tasks: tasks.len() })
        })
        .await?;
    Ok(created)
}

/// Tasks of the cycle still `pending` or `assigned`.
pub async fn open_tasks(conn: &mut AsyncPgConnection, cycle_id: i32) -> Result<i64, DbError> {
    let c: Count = diesel::sql_query(
        "SELECT count(*) AS count FROM task_pool WHERE cycle_id = $1 AND status IN ('pending', 'assigned')",
    )
    .bind::<Integer, _>(cycle_id)
    .get_result(conn)
    .await?;
    Ok(c.count)
}

/// Task counts of a cycle per status.
pub async fn progress(
    conn: &mut AsyncPgConnection,
    cycle_id: i32,
) -> Result<Vec<(TaskStatus, i64)>, DbError> {
    let rows: Vec<TaskStatusCount> = diesel::sql_query(
        "SELECT status, count(*) AS count FROM task_pool WHERE cycle_id = $1 GROUP BY status",
    )
    .bind::<Integer, _>(cycle_id)
    .load(conn)
    .await?;
    Ok(rows.into_iter().map(|r| (r.status, r.count)).collect())
}

/// Fails a running cycle with `message` and cancels its unfinished tasks with `{"error": task_error}`,
/// in one transaction. Returns the number of cancelled tasks.
pub async fn fail_cycle(
    conn: &mut AsyncPgConnection,
    cycle_id: i32,
    message: &str,
    task_error: &str,
) -> Result<usize, DbError> {
    let cancelled = conn
        .transaction::<_, diesel::result::Error, _>(async |conn| {
            diesel::sql_query(
                "UPDATE evaluation_cycles SET status = 'failed', error_message = $2, completed_at = now() \
                 WHERE id = $1 AND status IN ('running', 'pending')",
            )
            .bind::<Integer, _>(cycle_id)
            .bind::<Text, _>(message)
            .execute(conn)
            .await?;
            diesel::sql_query(
                "UPDATE task_pool SET status = 'cancelled', completed_at = now(), result = $2 \
                 WHERE cycle_id = $1 AND status IN ('pending', 'assigned')",
            )
            .bind::<Integer, _>(cycle_id)
            .bind::<Jsonb, _>(json!({ "error": task_error }))
            .execute(conn)
            .await
        })
        .await?;
    Ok(cancelled)
}

/// The restart cleanup (docs/database.md §7): every running or pending cycle fails, its unfinished
/// tasks are cancelled. Returns (cycles, tasks).
pub async fn restart_cleanup(conn: &mut AsyncPgConnection) -> Result<(usize, usize), DbError> {
    let counts = conn
        .transaction::<_, diesel::result::Error, _>(async |conn| {
            let tasks = diesel::sql_query(
                "UPDATE task_pool SET status = 'cancelled', completed_at = now(), \
                 result = '{\"error\": \"Cycle cancelled on scheduler restart\"}' \
                 WHERE status IN ('pending', 'assigned') AND cycle_id IN \
                 (SELECT id FROM evaluation_cycles WHERE status IN ('running', 'pending'))",
            )
            .execute(conn)
            .await?;
            let cycles = diesel::sql_query(
                "UPDATE evaluation_cycles SET status = 'failed', completed_at = now(), \
                 error_message = 'Cancelled on scheduler restart (cycle isolation)' WHERE status IN ('running', 'pending')",
            )
            .execute(conn)
            .await?;
            Ok((cycles, tasks))
        })
        .await?;
    Ok(counts)
}

#[derive(QueryableByName)]
struct ResultRow {
    #[diesel(sql_type = Integer)]
    miner_uid: i32,
    #[diesel(sql_type = Text)]
    env_id: String,
    #[diesel(sql_type = Nullable<Jsonb>)]
    result: Option<Value>,
}

/// The counted-or-excluded outcomes of a cycle's finished tasks (docs/scoring.md §2, steps 1–3).
pub async fn outcomes(
    conn: &mut AsyncPgConnection,
    cycle_id: i32,
) -> Result<Vec<EpisodeOutcome>, DbError> {
    let rows: Vec<ResultRow> = diesel::sql_query(
        "SELECT miner_uid, env_id, result FROM task_pool WHERE cycle_id = $1 AND status IN ('completed', 'failed') \
         AND result IS NOT NULL ORDER BY id",
    )
    .bind::<Integer, _>(cycle_id)
    .load(conn)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|r| {
            let res = r.result?;
            let failure_kind = stored_failure_kind(&res);
            Some(EpisodeOutcome {
                miner_uid: r.miner_uid as u32,
                env_id: r.env_id,
                success: res.get("success").and_then(Value::as_bool).unwrap_or(false),
                failure_kind,
                total_reward: res
                    .get("total_reward")
                    .and_then(Value::as_f64)
                    .unwrap_or(0.0),
            })
        })
        .collect())
}

#[derive(Insertable)]
#[diesel(table_name = miner_scores)]
struct NewScore {
    cycle_id: i32,
    uid: i32,
    hotkey: String,
    env_id: String,
    success_rate: f64,
    mean_reward: f64,
    episodes_completed: i32,
    episodes_failed: i32,
    episodes_excluded: i32,
}

/// Stores scores, weights and the frontier and completes the cycle, in one transaction.
pub async fn complete_cycle(conn: &mut AsyncPgConnection, r: &CycleRecord) -> Result<(), DbError> {
    let scores: Vec<NewScore> = r
        .scores
        .iter()
        .map(|s| NewScore {
            cycle_id: r.cycle_id,
            uid: s.uid as i32,
            hotkey: r
                .hotkeys
                .get(&s.uid)
                .cloned()
                .unwrap_or_else(|| "unknown".into()),
            env_id: s.env_id.clone(),
            success_rate: s.success_rate,
            mean_reward: s.mean_reward,
            episodes_completed: s.episodes_completed as i32,
            episodes_failed: s.episodes_failed as i32,
            episodes_excluded: s.episodes_excluded as i32,
        })
        .collect();
    conn.transaction::<_, diesel::result::Error, _>(async |conn| {
        for chunk in scores.chunks(INSERT_CHUNK) {
            diesel::insert_into(miner_scores::table).values(chunk).execute(conn).await?;
        }
        diesel::sql_query(
            "INSERT INTO computed_weights (cycle_id, block_number, weights_json, weights_u16_json) VALUES ($1, $2, $3, $4)",
        )
        .bind::<Integer, _>(r.cycle_id)
        .bind::<BigInt, _>(r.block)
        .bind::<Jsonb, _>(&r.weights)
        .bind::<Jsonb, _>(&r.weights_u16)
        .execute(conn)
        .await?;
        diesel::sql_query(
            "UPDATE evaluation_cycles SET status = 'completed', completed_at = now(), pareto_frontier = $2, \
             duration_seconds = EXTRACT(EPOCH FROM (now() - started_at)) WHERE id = $1",
        )
        .bind::<Integer, _>(r.cycle_id)
        .bind::<Jsonb, _>(json!(r.frontier))
        .execute(conn)
        .await?;
        Ok(())
    })
    .await?;
    Ok(())
}

/// The largest cycle block so far (synthetic blocks must strictly increase).
pub async fn last_block(conn: &mut AsyncPgConnection) -> Result<Option<i64>, DbError> {
    #[derive(QueryableByName)]
    struct B {
        #[diesel(sql_type = Nullable<BigInt>)]
        b: Option<i64>,
    }
    let b: B = diesel::sql_query("SELECT max(block_number) AS b FROM evaluation_cycles")
        .get_result(conn)
        .await?;
    Ok(b.b)
}

/// Upserts the heartbeat with `heartbeat_at = now()`; an unknown block keeps the stored one.
pub async fn write_heartbeat(conn: &mut AsyncPgConnection, h: &Heartbeat) -> Result<(), DbError> {
    diesel::sql_query(
        "INSERT INTO scheduler_state (id, current_block, chain_ok, chain_error, registry_source, env_ids, \
           eval_interval_seconds, heartbeat_interval_seconds, next_cycle_at, heartbeat_at) \
         VALUES (1, $1, $2, $3, $4, $5, $6, $7, $8, now()) \
         ON CONFLICT (id) DO UPDATE SET current_block = COALESCE(EXCLUDED.current_block, scheduler_state.current_block), \
           chain_ok = EXCLUDED.chain_ok, chain_error = EXCLUDED.chain_error, registry_source = EXCLUDED.registry_source, \
           env_ids = EXCLUDED.env_ids, eval_interval_seconds = EXCLUDED.eval_interval_seconds, \
           heartbeat_interval_seconds = EXCLUDED.heartbeat_interval_seconds, next_cycle_at = EXCLUDED.next_cycle_at, \
           heartbeat_at = now()",
    )
    .bind::<Nullable<BigInt>, _>(h.current_block)
    .bind::<diesel::sql_types::Bool, _>(h.chain_ok)
    .bind::<Nullable<Text>, _>(h.chain_error.as_deref())
    .bind::<Text, _>(h.source.as_str())
    .bind::<Jsonb, _>(json!(h.env_ids))
    .bind::<Integer, _>(h.eval_interval_seconds)
    .bind::<Integer, _>(h.heartbeat_interval_seconds)
    .bind::<Nullable<diesel::sql_types::Timestamptz>, _>(
        h.next_cycle_at.map(chrono::DateTime::<chrono::Utc>::from),
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// The stored seed secret, created with 32 random bytes on first use (docs/database.md §2.8).
pub async fn seed_secret(conn: &mut AsyncPgConnection) -> Result<Vec<u8>, DbError> {
    diesel::sql_query(
        "INSERT INTO scheduler_secret (id, seed_secret) VALUES (1, $1) ON CONFLICT (id) DO NOTHING",
    )
    .bind::<diesel::sql_types::Bytea, _>(rand::random::<[u8; 32]>().to_vec())
    .execute(conn)
    .await?;
    use super::schema::scheduler_secret::dsl as s;
    Ok(s::scheduler_secret
        .find(1i16)
        .select(s::seed_secret)
        .first(conn)
        .await?)
}

/// One `evaluation_cycles` row.
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
    #[diesel(deserialize_as = CycleStatusColumn)]
    pub status: CycleStatus,
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

impl Cycle {
    /// The env list as strings.
    pub fn env_list(&self) -> Vec<String> {
        serde_json::from_value(self.env_ids.clone()).unwrap_or_default()
    }
}

/// The highest-id cycle with `status`, if any.
pub async fn latest_with_status(
    conn: &mut AsyncPgConnection,
    status: CycleStatus,
) -> Result<Option<Cycle>, DbError> {
    Ok(ec::table
        .filter(ec::status.eq(cycle_status_text(status)))
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

/// The highest-id cycle, whatever its status.
pub async fn latest(conn: &mut AsyncPgConnection) -> Result<Option<Cycle>, DbError> {
    Ok(ec::table
        .order(ec::id.desc())
        .select(Cycle::as_select())
        .first(conn)
        .await
        .optional()?)
}
