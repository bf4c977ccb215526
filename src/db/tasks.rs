//! The task queue on PostgreSQL: claiming with `FOR UPDATE SKIP LOCKED`, submissions, stale reaping
//! and progress counts (docs/database.md §4.2, §4.4, §5, §6). Used by the API handlers; the local
//! task queue of `kinitro run` uses the same functions.

use chrono::{DateTime, Utc};
use diesel::pg::Pg;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::sql_types::Untyped;
use diesel::sql_types::{Array, BigInt, Double, Integer, Jsonb, Nullable, Text, Timestamptz};
use diesel::{OptionalExtension, QueryResult, QueryableByName};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use kinitro_actors::states::TaskStatus;
use kinitro_actors::tasks::{decide, max_attempts_result, Decision, TaskResult, TaskState};

use super::connect::DbError;
use super::states::{task_status_text, TaskStatusColumn, TaskStatusCount};

/// A claimed task row (the API shows it as `wire::Task`, docs/api.md §3.3).
#[derive(Debug, Clone, QueryableByName)]
pub struct ClaimedTask {
    /// Row id (FIFO order; not part of the API body).
    #[diesel(sql_type = BigInt)]
    pub id: i64,
    /// UUID v4.
    #[diesel(sql_type = Text)]
    pub task_uuid: String,
    /// Cycle.
    #[diesel(sql_type = Integer)]
    pub cycle_id: i32,
    /// Miner uid.
    #[diesel(sql_type = Integer)]
    pub miner_uid: i32,
    /// Miner hotkey.
    #[diesel(sql_type = Text)]
    pub miner_hotkey: String,
    /// Miner base URL.
    #[diesel(sql_type = Text)]
    pub miner_endpoint: String,
    /// HuggingFace repo.
    #[diesel(sql_type = Nullable<Text>)]
    pub miner_repo: Option<String>,
    /// Revision.
    #[diesel(sql_type = Nullable<Text>)]
    pub miner_revision: Option<String>,
    /// Env id.
    #[diesel(sql_type = Text)]
    pub env_id: String,
    /// Public seed.
    #[diesel(sql_type = Integer)]
    pub seed: i32,
    /// Secret simulation seed, stored as the i64 with the same bits.
    #[diesel(sql_type = BigInt)]
    pub sim_seed: i64,
    /// Always `assigned`.
    #[diesel(sql_type = Text, deserialize_as = TaskStatusColumn)]
    pub status: TaskStatus,
    /// Creation time.
    #[diesel(sql_type = Timestamptz)]
    pub created_at: DateTime<Utc>,
    /// Which attempt this is.
    #[diesel(sql_type = Integer)]
    pub attempts: i32,
    /// Verify the miner whatever the executor's rate.
    #[diesel(sql_type = diesel::sql_types::Bool)]
    pub verify: bool,
}

/// Which pending tasks a claimer wants (the core's filter).
pub use kinitro_actors::ports::TaskFilter as ClaimFilter;

const CLAIMED_COLUMNS: &str = "task_pool.id, task_pool.task_uuid, task_pool.cycle_id, task_pool.miner_uid, \
    task_pool.miner_hotkey, task_pool.miner_endpoint, task_pool.miner_repo, task_pool.miner_revision, \
    task_pool.env_id, task_pool.seed, task_pool.sim_seed, task_pool.status, task_pool.created_at, \
    task_pool.attempts, task_pool.verify";

/// The claim statement of docs/database.md §6.1 with only the filters in use. Unlike `sql_query`,
/// it is safe to cache as a prepared statement (keyed by its SQL text), so each filter variant is
/// parsed and planned once per connection instead of on every claim.
struct ClaimQuery<'a> {
    executor: &'a str,
    batch_size: i64,
    env_ids: Option<&'a Vec<String>>,
    shard: Option<(i32, i32)>,
}

impl QueryId for ClaimQuery<'_> {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl Query for ClaimQuery<'_> {
    type SqlType = Untyped;
}

/// Writes the `picked` CTE of docs/database.md §6.1: pending tasks of running cycles, optionally
/// filtered, in id order via `idx_task_pool_pending`, `limit` of them, locked with SKIP LOCKED.
fn push_picked<'b>(
    out: &mut AstPass<'_, 'b, Pg>,
    env_ids: Option<&'b Vec<String>>,
    shard: &'b Option<(i32, i32)>,
    limit: &'b i64,
) -> QueryResult<()> {
    out.push_sql(
        "picked AS (SELECT t.id FROM task_pool t JOIN evaluation_cycles c ON c.id = t.cycle_id \
         WHERE t.status = 'pending' AND c.status = 'running'",
    );
    if let Some(envs) = env_ids {
        out.push_sql(" AND t.env_id = ANY(");
        out.push_bind_param::<Array<Text>, _>(envs)?;
        out.push_sql(")");
    }
    if let Some((index, count)) = shard {
        out.push_sql(" AND t.miner_uid % ");
        out.push_bind_param::<Integer, _>(count)?;
        out.push_sql(" = ");
        out.push_bind_param::<Integer, _>(index)?;
    }
    out.push_sql(" ORDER BY t.id LIMIT ");
    out.push_bind_param::<BigInt, _>(limit)?;
    out.push_sql(" FOR UPDATE OF t SKIP LOCKED)");
    Ok(())
}

impl QueryFragment<Pg> for ClaimQuery<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql("WITH ");
        push_picked(&mut out, self.env_ids, &self.shard, &self.batch_size)?;
        out.push_sql(" UPDATE task_pool SET status = 'assigned', assigned_to = ");
        out.push_bind_param::<Text, _>(self.executor)?;
        out.push_sql(", assigned_at = now(), attempts = attempts + 1 FROM picked WHERE task_pool.id = picked.id RETURNING ");
        out.push_sql(CLAIMED_COLUMNS);
        Ok(())
    }
}

/// Several claims with the same filter in one statement: the picked rows, in id order, are dealt
/// out in request order, `sizes[i]` rows to `executors[i]`, each row returned with its request's
/// 1-based position as `ord`. Same scan, same locking, one commit for all.
struct MergedClaimQuery<'a> {
    executors: &'a Vec<String>,
    sizes: &'a Vec<i32>,
    total: i64,
    env_ids: Option<&'a Vec<String>>,
    shard: Option<(i32, i32)>,
}

impl QueryId for MergedClaimQuery<'_> {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl Query for MergedClaimQuery<'_> {
    type SqlType = Untyped;
}

impl QueryFragment<Pg> for MergedClaimQuery<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql("WITH bounds AS (SELECT r.executor, r.ord, \
             sum(r.size) OVER (ORDER BY r.ord) - r.size AS lo, sum(r.size) OVER (ORDER BY r.ord) AS hi \
             FROM unnest(");
        out.push_bind_param::<Array<Text>, _>(self.executors)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Integer>, _>(self.sizes)?;
        out.push_sql(") WITH ORDINALITY AS r(executor, size, ord)), ");
        push_picked(&mut out, self.env_ids, &self.shard, &self.total)?;
        out.push_sql(
            ", numbered AS (SELECT id, row_number() OVER (ORDER BY id) - 1 AS rn FROM picked) \
             UPDATE task_pool SET status = 'assigned', assigned_to = b.executor, assigned_at = now(), \
             attempts = attempts + 1 FROM numbered n JOIN bounds b ON n.rn >= b.lo AND n.rn < b.hi \
             WHERE task_pool.id = n.id RETURNING b.ord, ",
        );
        out.push_sql(CLAIMED_COLUMNS);
        Ok(())
    }
}

/// A row of a merged claim: the task and the position of the request it belongs to.
#[derive(QueryableByName)]
struct MergedRow {
    #[diesel(sql_type = BigInt)]
    ord: i64,
    #[diesel(embed)]
    task: ClaimedTask,
}

/// One claimer's part of a merged claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimRequest {
    /// Executor id.
    pub executor: String,
    /// Tasks wanted (1…100).
    pub batch_size: i64,
}

/// Claims for several claimers with the same filter in one committed statement; element `i` of the
/// answer holds request `i`'s tasks, sorted by id.
pub async fn claim_many(
    conn: &mut AsyncPgConnection,
    requests: &[ClaimRequest],
    filter: &ClaimFilter,
) -> Result<Vec<Vec<ClaimedTask>>, DbError> {
    let executors: Vec<String> = requests.iter().map(|r| r.executor.clone()).collect();
    let sizes: Vec<i32> = requests.iter().map(|r| r.batch_size as i32).collect();
    let query = MergedClaimQuery {
        executors: &executors,
        sizes: &sizes,
        total: requests.iter().map(|r| r.batch_size).sum(),
        env_ids: filter.env_ids.as_ref().filter(|e| !e.is_empty()),
        shard: filter.shard,
    };
    let rows: Vec<MergedRow> = query.load(conn).await?;
    let mut out = vec![Vec::new(); requests.len()];
    for row in rows {
        if let Some(slot) = usize::try_from(row.ord - 1)
            .ok()
            .and_then(|i| out.get_mut(i))
        {
            slot.push(row.task);
        }
    }
    for tasks in &mut out {
        tasks.sort_by_key(|t| t.id);
    }
    Ok(out)
}

/// Claims up to `batch_size` pending tasks for `executor` in one committed statement; sorted by id.
pub async fn claim(
    conn: &mut AsyncPgConnection,
    executor: &str,
    batch_size: i64,
    filter: &ClaimFilter,
) -> Result<Vec<ClaimedTask>, DbError> {
    let query = ClaimQuery {
        executor,
        batch_size,
        env_ids: filter.env_ids.as_ref().filter(|e| !e.is_empty()),
        shard: filter.shard,
    };
    let mut rows: Vec<ClaimedTask> = query.load(conn).await?;
    rows.sort_by_key(|t| t.id);
    Ok(rows)
}

/// `VACUUM (ANALYZE)` of the task table (outside any transaction).
pub async fn vacuum_tasks(conn: &mut AsyncPgConnection) -> Result<(), DbError> {
    diesel::sql_query("VACUUM (ANALYZE) task_pool")
        .execute(conn)
        .await?;
    Ok(())
}

/// Pending tasks in the whole pool.
pub async fn count_pending(conn: &mut AsyncPgConnection) -> Result<i64, DbError> {
    super::count(
        conn,
        "SELECT count(*) AS count FROM task_pool WHERE status = 'pending'",
    )
    .await
}

#[derive(QueryableByName)]
struct StateRow {
    #[diesel(sql_type = Text, deserialize_as = TaskStatusColumn)]
    status: TaskStatus,
    #[diesel(sql_type = Nullable<Text>)]
    assigned_to: Option<String>,
    #[diesel(sql_type = Integer)]
    attempts: i32,
    #[diesel(sql_type = Integer)]
    max_attempts: i32,
    #[diesel(sql_type = Nullable<Text>)]
    last_submitted_by: Option<String>,
    #[diesel(sql_type = Nullable<Integer>)]
    last_submitted_attempt: Option<i32>,
}

pub use kinitro_actors::ports::SubmitOutcome;

/// Applies one result in its own transaction (docs/database.md §4.4); a database error rejects only
/// it.
pub async fn submit_one(
    conn: &mut AsyncPgConnection,
    executor: &str,
    result: &TaskResult,
) -> SubmitOutcome {
    let outcome = conn
        .transaction::<_, diesel::result::Error, _>(async |conn| {
            apply(conn, executor, result).await
        })
        .await;
    outcome.unwrap_or_else(|e| {
        tracing::warn!(task = %result.task_uuid, error = %e, "submission failed");
        SubmitOutcome::Unavailable(format!("Task {}: database error", result.task_uuid))
    })
}

async fn apply(
    conn: &mut AsyncPgConnection,
    executor: &str,
    result: &TaskResult,
) -> Result<SubmitOutcome, diesel::result::Error> {
    let row: Option<StateRow> = diesel::sql_query(
        "SELECT status, assigned_to, attempts, max_attempts, last_submitted_by, \
         last_submitted_attempt FROM task_pool WHERE task_uuid = $1 FOR UPDATE",
    )
    .bind::<Text, _>(&result.task_uuid)
    .get_result(conn)
    .await
    .optional()?;
    let Some(row) = row else {
        return Ok(SubmitOutcome::Rejected(format!(
            "Task {}: not found or not assigned to executor",
            result.task_uuid
        )));
    };
    let state = TaskState {
        status: row.status,
        assigned_to: row.assigned_to,
        attempts: row.attempts,
        max_attempts: row.max_attempts,
        last_submitted_by: row.last_submitted_by,
        last_submitted_attempt: row.last_submitted_attempt,
    };
    match decide(&state, executor, &result.task_uuid, result) {
        Decision::Duplicate => Ok(SubmitOutcome::Duplicate),
        Decision::Rejected(m) => Ok(SubmitOutcome::Rejected(m)),
        Decision::Apply {
            status,
            result: json,
            terminal,
        } => {
            let sql = if terminal {
                "UPDATE task_pool SET status = $2, result = $3, completed_at = now(), \
                 last_submitted_by = $4, last_submitted_attempt = attempts WHERE task_uuid = $1"
            } else {
                "UPDATE task_pool SET status = $2, result = $3, assigned_at = NULL, \
                 last_submitted_by = $4, last_submitted_attempt = attempts WHERE task_uuid = $1"
            };
            diesel::sql_query(sql)
                .bind::<Text, _>(&result.task_uuid)
                .bind::<Text, _>(task_status_text(status))
                .bind::<Jsonb, _>(json)
                .bind::<Text, _>(executor)
                .execute(conn)
                .await?;
            Ok(if terminal {
                SubmitOutcome::Accepted { status }
            } else {
                SubmitOutcome::Requeued
            })
        }
    }
}

#[derive(QueryableByName)]
struct Reaped {
    #[diesel(sql_type = Text, deserialize_as = TaskStatusColumn)]
    status: TaskStatus,
}

/// Re-queues (or gives up) stale assigned tasks of running cycles; returns (requeued, given_up).
pub async fn reap_stale(
    conn: &mut AsyncPgConnection,
    threshold_seconds: f64,
) -> Result<(usize, usize), DbError> {
    let rows: Vec<Reaped> = diesel::sql_query(
        "UPDATE task_pool t SET \
           status = CASE WHEN t.attempts >= t.max_attempts THEN 'failed' ELSE 'pending' END, \
           assigned_at = NULL, \
           completed_at = CASE WHEN t.attempts >= t.max_attempts THEN now() ELSE NULL END, \
           result = CASE WHEN t.attempts >= t.max_attempts THEN $2 ELSE t.result END \
         WHERE t.id IN (SELECT s.id FROM task_pool s JOIN evaluation_cycles c ON c.id = s.cycle_id \
           WHERE s.status = 'assigned' AND c.status = 'running' \
             AND s.assigned_at < now() - make_interval(secs => $1) \
           FOR UPDATE OF s SKIP LOCKED) \
         RETURNING t.status",
    )
    .bind::<Double, _>(threshold_seconds)
    .bind::<Jsonb, _>(max_attempts_result("stale assignment"))
    .load(conn)
    .await?;
    let given_up = rows
        .iter()
        .filter(|r| r.status == TaskStatus::Failed)
        .count();
    Ok((rows.len() - given_up, given_up))
}

/// Task counts of one cycle, or of the whole pool (docs/api.md §4.11).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskCounts {
    /// The cycle counted: the one asked for, else the running one, else `None` (all tasks).
    pub cycle_id: Option<i64>,
    /// Tasks per status.
    pub by_status: Vec<(TaskStatus, i64)>,
    /// Executors holding an assigned task, sorted.
    pub active_executors: Vec<String>,
}

impl TaskCounts {
    /// How many executors hold an assigned task.
    pub fn active_executor_count(&self) -> i64 {
        self.active_executors.len() as i64
    }

    /// Tasks with `status`.
    pub fn count(&self, status: TaskStatus) -> i64 {
        self.by_status
            .iter()
            .find(|(s, _)| *s == status)
            .map_or(0, |(_, n)| *n)
    }

    /// All tasks counted.
    pub fn total(&self) -> i64 {
        self.by_status.iter().map(|(_, n)| n).sum()
    }
}

/// Task counts of cycle `requested`, else of the running cycle, else of all tasks.
// Raw SQL: `GROUP BY` counts over an optional cycle, with a `$1 IS NULL` switch kept as one
// prepared statement per form.
pub async fn counts(
    conn: &mut AsyncPgConnection,
    requested: Option<i64>,
) -> Result<TaskCounts, DbError> {
    #[derive(QueryableByName)]
    struct CycleId {
        #[diesel(sql_type = Nullable<Integer>)]
        id: Option<i32>,
    }
    #[derive(QueryableByName)]
    struct Executor {
        #[diesel(sql_type = Text)]
        assigned_to: String,
    }
    let scope: Option<i64> = match requested {
        Some(id) => Some(id),
        None => {
            let running: CycleId = diesel::sql_query(
                "SELECT max(id) AS id FROM evaluation_cycles WHERE status = 'running'",
            )
            .get_result(conn)
            .await?;
            running.id.map(i64::from)
        }
    };
    let filter = if scope.is_some() {
        "WHERE cycle_id = $1"
    } else {
        "WHERE $1 IS NULL"
    };
    let counts: Vec<TaskStatusCount> = diesel::sql_query(format!(
        "SELECT status, count(*) AS count FROM task_pool {filter} GROUP BY status"
    ))
    .bind::<Nullable<BigInt>, _>(scope)
    .load(conn)
    .await?;
    let executors: Vec<Executor> = diesel::sql_query(format!(
        "SELECT DISTINCT assigned_to FROM task_pool {filter} AND status = 'assigned' \
         AND assigned_to IS NOT NULL ORDER BY assigned_to"
    ))
    .bind::<Nullable<BigInt>, _>(scope)
    .load(conn)
    .await?;
    Ok(TaskCounts {
        cycle_id: scope,
        by_status: counts.into_iter().map(|c| (c.status, c.count)).collect(),
        active_executors: executors.into_iter().map(|e| e.assigned_to).collect(),
    })
}
