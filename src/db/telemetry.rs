//! What the metrics read from the database on a scrape (docs/api.md §4.12).

use diesel::sql_types::{BigInt, Double, Integer, Text};
use diesel::QueryableByName;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use kinitro_actors::states::{CycleStatus, TaskStatus};

use super::states::{CycleStatusCount, TaskStatusCount};
use super::DbError;

/// The database-derived values of the metrics.
#[derive(Debug, Clone, Default)]
pub struct MetricsSnapshot {
    /// Cycles per status.
    pub cycles: Vec<(CycleStatus, i64)>,
    /// Tasks per status.
    pub tasks: Vec<(TaskStatus, i64)>,
    /// Active miners of the latest snapshot.
    pub active_miners: i64,
    /// `(cycle id, duration_seconds)` of completed cycles after the given id, in id order.
    pub durations: Vec<(i32, f64)>,
    /// `(uid, env_id, success_rate)` of the latest completed cycle.
    pub scores: Vec<(i32, String, f64)>,
}

#[derive(QueryableByName)]
struct Duration {
    #[diesel(sql_type = Integer)]
    id: i32,
    #[diesel(sql_type = Double)]
    seconds: f64,
}

#[derive(QueryableByName)]
struct Score {
    #[diesel(sql_type = Integer)]
    uid: i32,
    #[diesel(sql_type = Text)]
    env_id: String,
    #[diesel(sql_type = Double)]
    success_rate: f64,
}

#[derive(QueryableByName)]
struct Active {
    #[diesel(sql_type = BigInt)]
    count: i64,
}

/// Reads everything the metrics derive from the database; `after_cycle` is the last completed
/// cycle whose duration was already observed.
// Raw SQL: GROUP BY counts and `max(...)` sub-selects, which diesel's DSL cannot express simply.
pub async fn metrics_snapshot(
    conn: &mut AsyncPgConnection,
    after_cycle: i32,
) -> Result<MetricsSnapshot, DbError> {
    let cycles: Vec<CycleStatusCount> = diesel::sql_query(
        "SELECT status, count(*) AS count FROM evaluation_cycles GROUP BY status",
    )
    .load(conn)
    .await?;
    let tasks: Vec<TaskStatusCount> =
        diesel::sql_query("SELECT status, count(*) AS count FROM task_pool GROUP BY status")
            .load(conn)
            .await?;
    let active: Active = diesel::sql_query(
        "SELECT count(*) AS count FROM miners \
         WHERE status = 'active' AND cycle_id = (SELECT max(cycle_id) FROM miners)",
    )
    .get_result(conn)
    .await?;
    let durations: Vec<Duration> = diesel::sql_query(
        "SELECT id, duration_seconds AS seconds FROM evaluation_cycles \
         WHERE status = 'completed' AND duration_seconds IS NOT NULL AND id > $1 ORDER BY id",
    )
    .bind::<Integer, _>(after_cycle)
    .load(conn)
    .await?;
    let scores: Vec<Score> = diesel::sql_query(
        "SELECT uid, env_id, success_rate FROM miner_scores \
         WHERE cycle_id = (SELECT max(id) FROM evaluation_cycles WHERE status = 'completed')",
    )
    .load(conn)
    .await?;
    Ok(MetricsSnapshot {
        cycles: cycles.into_iter().map(|c| (c.status, c.count)).collect(),
        tasks: tasks.into_iter().map(|c| (c.status, c.count)).collect(),
        active_miners: active.count,
        durations: durations.into_iter().map(|d| (d.id, d.seconds)).collect(),
        scores: scores
            .into_iter()
            .map(|s| (s.uid, s.env_id, s.success_rate))
            .collect(),
    })
}
