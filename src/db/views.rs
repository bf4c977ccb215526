//! What the HTTP API reads (docs/api.md §4): weights, scores, the registry snapshot, the scheduler's
//! heartbeat and the counts of `/v1/status`, as typed rows. The API shapes them into its bodies.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Bool, Double, Integer, Jsonb, Nullable, Text, Timestamptz};
use diesel::QueryableByName;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use kinitro_actors::registry::MinerStatus;
use serde_json::Value;

use super::schema::{
    computed_weights, evaluation_cycles, miner_scores as ms, scheduler_state as ss,
};
use super::states::{MinerStatusColumn, OutcomeColumn};
use super::{count, DbError};
use crate::wire::VerificationOutcome;

/// One `computed_weights` row with its cycle's facts.
#[derive(Debug, Clone, Queryable)]
pub struct WeightsRow {
    /// Cycle.
    pub cycle_id: i32,
    /// Block.
    pub block: i64,
    /// `{"<uid>": weight}`.
    pub weights: Value,
    /// `{"uids": [...], "values": [...]}`.
    pub weights_u16: Value,
    /// Written at.
    pub created_at: DateTime<Utc>,
    /// The cycle's active miners.
    pub n_miners: Option<i32>,
    /// The cycle's env count.
    pub n_environments: Option<i32>,
    /// The cycle's wall time.
    pub duration_seconds: Option<f64>,
}

/// The weights of `block`, or with the largest block (ties: largest id) when `None`.
pub async fn weights(
    conn: &mut AsyncPgConnection,
    block: Option<i64>,
) -> Result<Option<WeightsRow>, DbError> {
    let mut query = computed_weights::table
        .inner_join(evaluation_cycles::table)
        .select((
            computed_weights::cycle_id,
            computed_weights::block_number,
            computed_weights::weights_json,
            computed_weights::weights_u16_json,
            computed_weights::created_at,
            evaluation_cycles::n_miners,
            evaluation_cycles::n_environments,
            evaluation_cycles::duration_seconds,
        ))
        .order((
            computed_weights::block_number.desc(),
            computed_weights::id.desc(),
        ))
        .into_boxed();
    if let Some(b) = block {
        query = query.filter(computed_weights::block_number.eq(b));
    }
    Ok(query.first::<WeightsRow>(conn).await.optional()?)
}

/// One `miner_scores` row (docs/api.md §3.2).
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = ms)]
pub struct MinerScoreRow {
    /// Uid.
    pub uid: i32,
    /// Hotkey.
    pub hotkey: String,
    /// Env.
    pub env_id: String,
    /// Success rate.
    pub success_rate: f64,
    /// Mean return.
    pub mean_reward: f64,
    /// Counted episodes without a miner fault.
    pub episodes_completed: i32,
    /// Counted episodes ended by a miner fault.
    pub episodes_failed: i32,
    /// Infrastructure failures.
    pub episodes_excluded: i32,
}

/// The score rows of a cycle, in no particular order.
pub async fn scores(
    conn: &mut AsyncPgConnection,
    cycle_id: i32,
) -> Result<Vec<MinerScoreRow>, DbError> {
    Ok(ms::table
        .filter(ms::cycle_id.eq(cycle_id))
        .select(MinerScoreRow::as_select())
        .load(conn)
        .await?)
}

/// One entry of a registry snapshot with its latest evaluation.
#[derive(Debug, Clone, QueryableByName)]
pub struct MinerRow {
    /// Uid.
    #[diesel(sql_type = Integer)]
    pub uid: i32,
    /// Hotkey.
    #[diesel(sql_type = Text)]
    pub hotkey: String,
    /// Endpoint as committed (the API hides it unless public).
    #[diesel(sql_type = Nullable<Text>)]
    pub endpoint: Option<String>,
    /// Classification.
    #[diesel(sql_type = Text, deserialize_as = MinerStatusColumn)]
    pub status: MinerStatus,
    /// Repo.
    #[diesel(sql_type = Nullable<Text>)]
    pub repo: Option<String>,
    /// Revision.
    #[diesel(sql_type = Nullable<Text>)]
    pub revision: Option<String>,
    /// Commit block.
    #[diesel(sql_type = Nullable<BigInt>)]
    pub commit_block: Option<i64>,
    /// Encrypted commitment.
    #[diesel(sql_type = Bool)]
    pub encrypted: bool,
    /// Why not active.
    #[diesel(sql_type = Nullable<Text>)]
    pub status_reason: Option<String>,
    /// Completion of the latest completed cycle that scored it.
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub last_evaluated: Option<DateTime<Utc>>,
    /// That cycle's block.
    #[diesel(sql_type = Nullable<BigInt>)]
    pub last_evaluated_block: Option<i64>,
    /// Mean success rate there.
    #[diesel(sql_type = Nullable<Double>)]
    pub avg_success_rate: Option<f64>,
    /// Envs scored there, as a JSON array.
    #[diesel(sql_type = Nullable<Jsonb>)]
    pub environments_evaluated: Option<Value>,
    /// Outcome of the hotkey's latest verification.
    #[diesel(sql_type = Nullable<Text>, deserialize_as = OutcomeColumn)]
    pub verification_outcome: Option<VerificationOutcome>,
    /// Its mean match.
    #[diesel(sql_type = Nullable<Double>)]
    pub verification_match_score: Option<f64>,
    /// Its revision.
    #[diesel(sql_type = Nullable<Text>)]
    pub verification_revision: Option<String>,
    /// When it was recorded.
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub verification_checked_at: Option<DateTime<Utc>>,
}

/// The latest registry snapshot.
#[derive(Debug, Clone)]
pub struct MinerSnapshot {
    /// The snapshot's cycle.
    pub cycle_id: i32,
    /// Its block.
    pub block: Option<i64>,
    /// Entries by ascending uid.
    pub miners: Vec<MinerRow>,
}

/// The latest registry snapshot, if any.
// Raw SQL: a LATERAL join with an aggregate per miner, which diesel's DSL cannot express.
pub async fn miner_snapshot(
    conn: &mut AsyncPgConnection,
) -> Result<Option<MinerSnapshot>, DbError> {
    #[derive(QueryableByName)]
    struct Snapshot {
        #[diesel(sql_type = Nullable<Integer>)]
        cycle_id: Option<i32>,
        #[diesel(sql_type = Nullable<BigInt>)]
        block: Option<i64>,
    }
    let snap: Snapshot = diesel::sql_query(
        "SELECT s.cycle_id, c.block_number AS block FROM (SELECT max(cycle_id) AS cycle_id FROM miners) s \
         LEFT JOIN evaluation_cycles c ON c.id = s.cycle_id",
    )
    .get_result(conn)
    .await?;
    let Some(cycle_id) = snap.cycle_id else {
        return Ok(None);
    };
    let miners: Vec<MinerRow> = diesel::sql_query(
        "SELECT m.uid, m.hotkey, m.endpoint, m.status, m.repo, m.revision, m.commit_block, m.encrypted, \
           m.status_reason, le.completed_at AS last_evaluated, le.block_number AS last_evaluated_block, \
           le.avg_rate AS avg_success_rate, le.envs AS environments_evaluated, \
           lv.outcome AS verification_outcome, lv.match_score AS verification_match_score, \
           lv.revision AS verification_revision, lv.created_at AS verification_checked_at \
         FROM miners m LEFT JOIN LATERAL ( \
           SELECT c.completed_at, c.block_number, avg(s.success_rate) AS avg_rate, \
                  jsonb_agg(s.env_id ORDER BY s.id) AS envs \
           FROM evaluation_cycles c JOIN miner_scores s ON s.cycle_id = c.id \
           WHERE c.status = 'completed' AND s.uid = m.uid AND s.hotkey = m.hotkey \
           GROUP BY c.id ORDER BY c.id DESC LIMIT 1) le ON true \
         LEFT JOIN LATERAL ( \
           SELECT v.outcome, v.match_score, v.revision, v.created_at FROM verifications v \
           WHERE v.uid = m.uid AND v.hotkey = m.hotkey ORDER BY v.id DESC LIMIT 1) lv ON true \
         WHERE m.cycle_id = $1 ORDER BY m.uid",
    )
    .bind::<Integer, _>(cycle_id)
    .load(conn)
    .await?;
    Ok(Some(MinerSnapshot {
        cycle_id,
        block: snap.block,
        miners,
    }))
}

/// The scheduler's heartbeat row, as `/v1/status` reads it.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = ss)]
pub struct HeartbeatRow {
    /// Last block read.
    pub current_block: Option<i64>,
    /// The last registry read succeeded.
    pub chain_ok: bool,
    /// Env list (JSON array).
    pub env_ids: Value,
    /// Heartbeat period, seconds.
    pub heartbeat_interval_seconds: i32,
    /// Next cycle start.
    pub next_cycle_at: Option<DateTime<Utc>>,
    /// When it was written.
    pub heartbeat_at: DateTime<Utc>,
}

/// The heartbeat, if a scheduler ever wrote one.
pub async fn heartbeat(conn: &mut AsyncPgConnection) -> Result<Option<HeartbeatRow>, DbError> {
    Ok(ss::table
        .find(1i16)
        .select(HeartbeatRow::as_select())
        .first(conn)
        .await
        .optional()?)
}

// Raw SQL below: counts over sub-selects (`max(...)`, `DISTINCT`), short and clearer as text.

/// Entries of the latest registry snapshot.
pub async fn miners_registered(conn: &mut AsyncPgConnection) -> Result<i64, DbError> {
    count(
        conn,
        "SELECT count(*) AS count FROM miners WHERE cycle_id = (SELECT max(cycle_id) FROM miners)",
    )
    .await
}

/// All cycles.
pub async fn total_cycles(conn: &mut AsyncPgConnection) -> Result<i64, DbError> {
    count(conn, "SELECT count(*) AS count FROM evaluation_cycles").await
}

/// Distinct uids with scores.
pub async fn total_miners_evaluated(conn: &mut AsyncPgConnection) -> Result<i64, DbError> {
    count(
        conn,
        "SELECT count(DISTINCT uid) AS count FROM miner_scores",
    )
    .await
}

/// Score rows of one env in the latest completed cycle.
#[derive(Debug, Clone, QueryableByName)]
pub struct EnvStat {
    /// Env.
    #[diesel(sql_type = Text)]
    pub env_id: String,
    /// Score rows.
    #[diesel(sql_type = BigInt)]
    pub n: i64,
    /// Their mean success rate.
    #[diesel(sql_type = Nullable<Double>)]
    pub avg_rate: Option<f64>,
}

/// Per-env statistics of the latest completed cycle.
// Raw SQL: GROUP BY with an aggregate over a `max(id)` sub-select.
pub async fn env_stats(conn: &mut AsyncPgConnection) -> Result<Vec<EnvStat>, DbError> {
    Ok(diesel::sql_query(
        "SELECT env_id, count(*) AS n, avg(success_rate) AS avg_rate FROM miner_scores \
         WHERE cycle_id = (SELECT max(id) FROM evaluation_cycles WHERE status = 'completed') GROUP BY env_id",
    )
    .load(conn)
    .await?)
}

/// `SELECT 1`: whether the database answers.
// Raw SQL: there is no table to build the probe from.
pub async fn ping(conn: &mut AsyncPgConnection) -> Result<(), DbError> {
    diesel::sql_query("SELECT 1").execute(conn).await?;
    Ok(())
}
