//! The one mapping between the core's typed states and the database's text columns
//! (docs/database.md §2.3, §2.4, §4.3): task and cycle statuses, and the blame stored in a task's
//! `result`, and the miners' classification. Everything that reads or writes one of them goes through
//! here.

use diesel::deserialize::{FromSql, FromSqlRow};
use diesel::pg::{Pg, PgValue};
use diesel::sql_types::{BigInt, Text};
use diesel::QueryableByName;
use kinitro_actors::registry::MinerStatus;
use kinitro_actors::scoring::aggregate::FailureKind;
use kinitro_actors::states::{CycleStatus, TaskStatus};
use serde_json::Value;

use crate::wire::VerificationOutcome;

/// `task_pool.status` as stored.
pub fn task_status_text(status: TaskStatus) -> &'static str {
    status.as_str()
}

/// `evaluation_cycles.status` as stored.
pub fn cycle_status_text(status: CycleStatus) -> &'static str {
    status.as_str()
}

/// A `task_pool.status` column read as a [`TaskStatus`].
#[derive(Debug, Clone, Copy, FromSqlRow)]
pub struct TaskStatusColumn(pub TaskStatus);

impl FromSql<Text, Pg> for TaskStatusColumn {
    fn from_sql(bytes: PgValue<'_>) -> diesel::deserialize::Result<Self> {
        let text = <String as FromSql<Text, Pg>>::from_sql(bytes)?;
        TaskStatus::parse(&text)
            .map(Self)
            .ok_or_else(|| format!("unknown task status {text:?}").into())
    }
}

impl From<TaskStatusColumn> for TaskStatus {
    fn from(c: TaskStatusColumn) -> Self {
        c.0
    }
}

/// An `evaluation_cycles.status` column read as a [`CycleStatus`].
#[derive(Debug, Clone, Copy, FromSqlRow)]
pub struct CycleStatusColumn(pub CycleStatus);

impl FromSql<Text, Pg> for CycleStatusColumn {
    fn from_sql(bytes: PgValue<'_>) -> diesel::deserialize::Result<Self> {
        let text = <String as FromSql<Text, Pg>>::from_sql(bytes)?;
        CycleStatus::parse(&text)
            .map(Self)
            .ok_or_else(|| format!("unknown cycle status {text:?}").into())
    }
}

impl From<CycleStatusColumn> for CycleStatus {
    fn from(c: CycleStatusColumn) -> Self {
        c.0
    }
}

/// A `status, count(*) AS count … FROM task_pool GROUP BY status` row.
#[derive(Debug, Clone, Copy, QueryableByName)]
pub struct TaskStatusCount {
    /// The status.
    #[diesel(sql_type = Text, deserialize_as = TaskStatusColumn)]
    pub status: TaskStatus,
    /// Rows with it.
    #[diesel(sql_type = BigInt)]
    pub count: i64,
}

/// A `status, count(*) AS count … FROM evaluation_cycles GROUP BY status` row.
#[derive(Debug, Clone, Copy, QueryableByName)]
pub struct CycleStatusCount {
    /// The status.
    #[diesel(sql_type = Text, deserialize_as = CycleStatusColumn)]
    pub status: CycleStatus,
    /// Rows with it.
    #[diesel(sql_type = BigInt)]
    pub count: i64,
}

/// The blame stored in a task's `result` (`failure_kind`: `miner`, `infrastructure` or absent). The
/// stored value is already settled (docs/database.md §4.3): nothing is derived here.
pub fn stored_failure_kind(result: &Value) -> Option<FailureKind> {
    result
        .get("failure_kind")
        .and_then(|v| serde_json::from_value(v.clone()).ok())
}

/// A `miners.status` column read as a [`MinerStatus`].
#[derive(Debug, Clone, Copy, FromSqlRow)]
pub struct MinerStatusColumn(pub MinerStatus);

impl FromSql<Text, Pg> for MinerStatusColumn {
    fn from_sql(bytes: PgValue<'_>) -> diesel::deserialize::Result<Self> {
        let text = <String as FromSql<Text, Pg>>::from_sql(bytes)?;
        [
            MinerStatus::Active,
            MinerStatus::Inactive,
            MinerStatus::InvalidCommitment,
            MinerStatus::Excluded,
        ]
        .into_iter()
        .find(|s| s.as_str() == text)
        .map(Self)
        .ok_or_else(|| format!("unknown miner status {text:?}").into())
    }
}

impl From<MinerStatusColumn> for MinerStatus {
    fn from(c: MinerStatusColumn) -> Self {
        c.0
    }
}

/// A `verifications.outcome` column read as a [`VerificationOutcome`] (`NULL` stays `None`).
#[derive(Debug, Clone, Copy, FromSqlRow)]
pub struct OutcomeColumn(pub Option<VerificationOutcome>);

impl FromSql<diesel::sql_types::Nullable<Text>, Pg> for OutcomeColumn {
    fn from_sql(bytes: PgValue<'_>) -> diesel::deserialize::Result<Self> {
        let text = <String as FromSql<Text, Pg>>::from_sql(bytes)?;
        VerificationOutcome::parse(&text)
            .map(|o| Self(Some(o)))
            .ok_or_else(|| format!("unknown verification outcome {text:?}").into())
    }

    fn from_nullable_sql(bytes: Option<PgValue<'_>>) -> diesel::deserialize::Result<Self> {
        match bytes {
            Some(b) => Self::from_sql(b),
            None => Ok(Self(None)),
        }
    }
}

impl From<OutcomeColumn> for Option<VerificationOutcome> {
    fn from(c: OutcomeColumn) -> Self {
        c.0
    }
}
