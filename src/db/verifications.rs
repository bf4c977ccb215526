//! The `verifications` table (docs/verification.md §4, docs/database.md §2.8): what executors
//! report, what the API lists and the miners view shows, and the failed verifications the
//! scheduler's `exclude` policy reads.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Double, Nullable, Text};
use diesel::QueryableByName;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use kinitro_actors::ports::FailedVerification;

use super::schema::verifications;
use super::DbError;
use crate::wire::{VerificationOutcome, VerificationReport, VerificationSamples};

/// One stored verification.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = verifications)]
pub struct VerificationRow {
    /// Row id.
    pub id: i64,
    /// Miner uid.
    pub uid: i32,
    /// Miner hotkey.
    pub hotkey: String,
    /// HuggingFace repo.
    pub repo: String,
    /// Revision.
    pub revision: String,
    /// The endpoint asked.
    pub endpoint: String,
    /// `passed`, `mismatch`, `invalid` or `unverifiable`.
    pub outcome: String,
    /// Mean match.
    pub match_score: Option<f64>,
    /// [`VerificationSamples`] as JSON.
    pub samples: serde_json::Value,
    /// Why it did not pass.
    pub error: Option<String>,
    /// The executor that ran it.
    pub executor_id: String,
    /// When it was recorded.
    pub created_at: DateTime<Utc>,
}

impl VerificationRow {
    /// The outcome (the column's CHECK admits only the four spellings).
    pub fn outcome(&self) -> VerificationOutcome {
        VerificationOutcome::parse(&self.outcome).unwrap_or(VerificationOutcome::Unverifiable)
    }

    /// The samples (a row written by an older build that does not parse shows none).
    pub fn samples(&self) -> VerificationSamples {
        serde_json::from_value(self.samples.clone()).unwrap_or(VerificationSamples {
            source: String::new(),
            seed: 0,
            count: 0,
            scores: Vec::new(),
        })
    }
}

/// Stores a reported verification; returns its id.
pub async fn insert(
    conn: &mut AsyncPgConnection,
    report: &VerificationReport,
) -> Result<i64, DbError> {
    let samples =
        serde_json::to_value(&report.samples).map_err(|e| DbError::Other(e.to_string()))?;
    let id = diesel::insert_into(verifications::table)
        .values((
            verifications::uid.eq(report.uid as i32),
            verifications::hotkey.eq(&report.hotkey),
            verifications::repo.eq(&report.repo),
            verifications::revision.eq(&report.revision),
            verifications::endpoint.eq(&report.endpoint),
            verifications::outcome.eq(report.outcome.as_str()),
            verifications::match_score.eq(report.match_score),
            verifications::samples.eq(samples),
            verifications::error.eq(&report.error),
            verifications::executor_id.eq(&report.executor_id),
        ))
        .returning(verifications::id)
        .get_result(conn)
        .await?;
    Ok(id)
}

/// The newest `limit` verifications, of one uid when given.
pub async fn list(
    conn: &mut AsyncPgConnection,
    uid: Option<i32>,
    limit: i64,
) -> Result<Vec<VerificationRow>, DbError> {
    let mut query = verifications::table
        .select(VerificationRow::as_select())
        .order(verifications::id.desc())
        .limit(limit)
        .into_boxed();
    if let Some(uid) = uid {
        query = query.filter(verifications::uid.eq(uid));
    }
    Ok(query.load(conn).await?)
}

/// Counts by outcome, for `kinitro_verifications_total`.
pub async fn counts(conn: &mut AsyncPgConnection) -> Result<Vec<(String, i64)>, DbError> {
    Ok(verifications::table
        .group_by(verifications::outcome)
        .select((verifications::outcome, diesel::dsl::count_star()))
        .load(conn)
        .await?)
}

#[derive(QueryableByName)]
struct FailedRow {
    #[diesel(sql_type = Text)]
    hotkey: String,
    #[diesel(sql_type = Text)]
    revision: String,
    #[diesel(sql_type = Text)]
    outcome: String,
    #[diesel(sql_type = Nullable<Double>)]
    match_score: Option<f64>,
    #[diesel(sql_type = Nullable<Text>)]
    error: Option<String>,
    #[diesel(sql_type = BigInt)]
    cycles_since: i64,
}

/// Of the given (hotkey, revision) pairs, those whose latest conclusive verification (`unverifiable`
/// says nothing about the miner, so it neither excludes nor lifts an exclusion) is a `mismatch` or
/// `invalid`, with the number of cycles started since it was recorded.
pub async fn failed(
    conn: &mut AsyncPgConnection,
    pairs: &[(String, String)],
) -> Result<Vec<FailedVerification>, DbError> {
    if pairs.is_empty() {
        return Ok(Vec::new());
    }
    let (hotkeys, revisions): (Vec<String>, Vec<String>) = pairs.iter().cloned().unzip();
    let rows: Vec<FailedRow> = diesel::sql_query(
        "SELECT v.hotkey, v.revision, v.outcome, v.match_score, v.error, \
           (SELECT count(*) FROM evaluation_cycles c WHERE c.started_at > v.created_at) AS cycles_since \
         FROM (SELECT DISTINCT ON (hotkey, revision) hotkey, revision, outcome, match_score, error, created_at \
               FROM verifications \
               WHERE (hotkey, revision) IN (SELECT * FROM unnest($1::text[], $2::text[])) \
                 AND outcome <> 'unverifiable' \
               ORDER BY hotkey, revision, id DESC) v \
         WHERE v.outcome IN ('mismatch', 'invalid')",
    )
    .bind::<Array<Text>, _>(&hotkeys)
    .bind::<Array<Text>, _>(&revisions)
    .load(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| FailedVerification {
            reason: exclusion_reason(&r.outcome, r.match_score, r.error.as_deref()),
            hotkey: r.hotkey,
            revision: r.revision,
            cycles_since: r.cycles_since,
        })
        .collect())
}

/// The `status_reason` of an excluded miner: `verification mismatch (match 0.42)` or
/// `verification invalid (<error>)`.
pub fn exclusion_reason(outcome: &str, match_score: Option<f64>, error: Option<&str>) -> String {
    match (outcome, match_score, error) {
        ("mismatch", Some(m), _) => format!("verification mismatch (match {m:.2})"),
        (_, _, Some(e)) => {
            let e: String = e.chars().take(200).collect();
            format!("verification {outcome} ({e})")
        }
        _ => format!("verification {outcome}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_name_the_outcome_and_its_evidence() {
        assert_eq!(
            exclusion_reason("mismatch", Some(0.4213), None),
            "verification mismatch (match 0.42)"
        );
        assert_eq!(
            exclusion_reason("invalid", None, Some("no policy.py")),
            "verification invalid (no policy.py)"
        );
        assert_eq!(
            exclusion_reason("invalid", None, None),
            "verification invalid"
        );
    }
}
