//! `kinitro db status`: a summary of what the database holds (docs/configuration.md §3.5).

use std::fmt;

use chrono::{DateTime, Utc};
use diesel::sql_types::{BigInt, Double, Integer, Nullable, Timestamptz};
use diesel::QueryableByName;
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use super::connect::DbError;
use super::{Count, StatusCount};

/// The latest completed cycle.
#[derive(QueryableByName, Debug, Clone)]
pub struct CompletedCycle {
    /// Cycle id.
    #[diesel(sql_type = Integer)]
    pub id: i32,
    /// Block.
    #[diesel(sql_type = BigInt)]
    pub block_number: i64,
    /// Completion time.
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub completed_at: Option<DateTime<Utc>>,
    /// Wall time.
    #[diesel(sql_type = Nullable<Double>)]
    pub duration_seconds: Option<f64>,
    /// Active miners.
    #[diesel(sql_type = Nullable<Integer>)]
    pub n_miners: Option<i32>,
}

/// The running cycle.
#[derive(QueryableByName, Debug, Clone)]
pub struct RunningCycle {
    /// Cycle id.
    #[diesel(sql_type = Integer)]
    pub id: i32,
    /// Block.
    #[diesel(sql_type = BigInt)]
    pub block_number: i64,
}

/// The latest weights row.
#[derive(QueryableByName, Debug, Clone)]
pub struct LatestWeights {
    /// Block.
    #[diesel(sql_type = BigInt)]
    pub block_number: i64,
    /// Miners with a weight.
    #[diesel(sql_type = BigInt)]
    pub n_miners: i64,
    /// Creation time.
    #[diesel(sql_type = Timestamptz)]
    pub created_at: DateTime<Utc>,
}

/// Everything `kinitro db status` prints.
#[derive(Debug, Clone)]
pub struct DbStatus {
    /// Cycles per status.
    pub cycles: Vec<(String, i64)>,
    /// Distinct uids with a score row.
    pub miners_evaluated: i64,
    /// Tasks per status.
    pub tasks: Vec<(String, i64)>,
    /// Latest completed cycle.
    pub latest_completed: Option<CompletedCycle>,
    /// Running cycle with its task counts per status.
    pub running: Option<(RunningCycle, Vec<(String, i64)>)>,
    /// Latest weights.
    pub latest_weights: Option<LatestWeights>,
}

async fn by_status(
    conn: &mut AsyncPgConnection,
    sql: &'static str,
) -> Result<Vec<(String, i64)>, DbError> {
    let rows: Vec<StatusCount> = diesel::sql_query(sql).load(conn).await?;
    Ok(rows.into_iter().map(|r| (r.status, r.count)).collect())
}

/// Reads the summary.
pub async fn read(conn: &mut AsyncPgConnection) -> Result<DbStatus, DbError> {
    let cycles = by_status(
        conn,
        "SELECT status, count(*) AS count FROM evaluation_cycles GROUP BY status ORDER BY status",
    )
    .await?;
    let tasks = by_status(
        conn,
        "SELECT status, count(*) AS count FROM task_pool GROUP BY status ORDER BY status",
    )
    .await?;
    let miners: Count = diesel::sql_query("SELECT count(DISTINCT uid) AS count FROM miner_scores")
        .get_result(conn)
        .await?;
    let latest_completed: Option<CompletedCycle> = diesel::sql_query(
        "SELECT id, block_number, completed_at, duration_seconds, n_miners FROM evaluation_cycles \
         WHERE status = 'completed' ORDER BY id DESC LIMIT 1",
    )
    .get_result(conn)
    .await
    .map(Some)
    .or_else(not_found_is_none)?;
    let running: Option<RunningCycle> = diesel::sql_query(
        "SELECT id, block_number FROM evaluation_cycles WHERE status = 'running' ORDER BY id DESC LIMIT 1",
    )
    .get_result(conn)
    .await
    .map(Some)
    .or_else(not_found_is_none)?;
    let running = match running {
        Some(cycle) => {
            let rows: Vec<StatusCount> = diesel::sql_query(
                "SELECT status, count(*) AS count FROM task_pool WHERE cycle_id = $1 \
                 GROUP BY status ORDER BY status",
            )
            .bind::<Integer, _>(cycle.id)
            .load(conn)
            .await?;
            Some((
                cycle,
                rows.into_iter().map(|r| (r.status, r.count)).collect(),
            ))
        }
        None => None,
    };
    let latest_weights: Option<LatestWeights> = diesel::sql_query(
        "SELECT block_number, (SELECT count(*) FROM jsonb_object_keys(weights_json)) AS n_miners, \
         created_at FROM computed_weights ORDER BY block_number DESC, id DESC LIMIT 1",
    )
    .get_result(conn)
    .await
    .map(Some)
    .or_else(not_found_is_none)?;
    Ok(DbStatus {
        cycles,
        miners_evaluated: miners.count,
        tasks,
        latest_completed,
        running,
        latest_weights,
    })
}

fn not_found_is_none<T>(e: diesel::result::Error) -> Result<Option<T>, DbError> {
    match e {
        diesel::result::Error::NotFound => Ok(None),
        e => Err(e.into()),
    }
}

fn counts(f: &mut fmt::Formatter<'_>, items: &[(String, i64)]) -> fmt::Result {
    let total: i64 = items.iter().map(|(_, n)| n).sum();
    write!(f, "{total}")?;
    if !items.is_empty() {
        let parts: Vec<String> = items.iter().map(|(s, n)| format!("{s} {n}")).collect();
        write!(f, " ({})", parts.join(", "))?;
    }
    Ok(())
}

fn time(t: Option<DateTime<Utc>>) -> String {
    t.map_or_else(
        || "-".into(),
        |t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    )
}

impl fmt::Display for DbStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cycles: ")?;
        counts(f, &self.cycles)?;
        writeln!(f)?;
        writeln!(f, "miners evaluated: {}", self.miners_evaluated)?;
        write!(f, "tasks: ")?;
        counts(f, &self.tasks)?;
        writeln!(f)?;
        match &self.latest_completed {
            Some(c) => writeln!(
                f,
                "latest completed cycle: id {} block {} completed_at {} duration {} miners {}",
                c.id,
                c.block_number,
                time(c.completed_at),
                c.duration_seconds
                    .map_or_else(|| "-".into(), |d| format!("{d:.1}s")),
                c.n_miners.map_or_else(|| "-".into(), |n| n.to_string()),
            )?,
            None => writeln!(f, "latest completed cycle: none")?,
        }
        match &self.running {
            Some((c, progress)) => {
                write!(
                    f,
                    "running cycle: id {} block {} tasks ",
                    c.id, c.block_number
                )?;
                counts(f, progress)?;
                writeln!(f)?;
            }
            None => writeln!(f, "running cycle: none")?,
        }
        match &self.latest_weights {
            Some(w) => write!(
                f,
                "latest weights: block {} miners {} created_at {}",
                w.block_number,
                w.n_miners,
                time(Some(w.created_at))
            ),
            None => write!(f, "latest weights: none"),
        }
    }
}
