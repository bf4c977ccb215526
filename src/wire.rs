//! The API's wire format (docs/api.md): every request and response body, defined once with serde
//! and utoipa's `ToSchema`, and used by the API's handlers, its OpenAPI document and its Rust
//! clients (the executor's remote mode).
//!
//! Key order: bodies that predate these types were written as JSON maps, whose keys serialise in
//! alphabetical order; their fields are declared alphabetically so the bytes on the wire stay the
//! same. `FetchResponse` and [`ClaimedTask`] keep their historical declaration order.

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, Utc};
use kinitro_actors::scoring::aggregate::FailureKind;
use kinitro_actors::tasks::TaskResult;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

/// RFC 3339, UTC, `Z`, microseconds (docs/api.md §1).
pub fn timestamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// Every error body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// Human-readable message.
    pub detail: String,
}

/// `GET /health` (docs/api.md §4.1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// `connected` or `disconnected`.
    pub database: String,
    /// `healthy` or `unhealthy`.
    pub status: String,
    /// Crate version.
    pub version: String,
}

/// `EvaluationCycle` (docs/api.md §3.1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EvaluationCycle {
    /// Block at cycle start.
    pub block_number: i64,
    /// Completion or failure time.
    pub completed_at: Option<String>,
    /// Completed cycles only.
    pub duration_seconds: Option<f64>,
    /// Ordered env list.
    #[schema(value_type = Vec<String>)]
    pub env_ids: Value,
    /// Episodes per (miner, env).
    pub episodes_per_env: i32,
    /// Failed cycles only.
    pub error_message: Option<String>,
    /// Id.
    pub id: i32,
    /// Env count.
    pub n_environments: Option<i32>,
    /// Active miners.
    pub n_miners: Option<i32>,
    /// Start (RFC 3339, UTC).
    pub started_at: String,
    /// pending | running | completed | failed.
    pub status: String,
}

/// `GET /v1/status` (docs/api.md §4.2).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Status {
    /// Heartbeat block.
    pub current_block: Option<i64>,
    /// The running cycle.
    pub current_cycle: Option<EvaluationCycle>,
    /// Every registered env id.
    pub environments: Vec<String>,
    /// The scheduler's env list.
    pub environments_enabled: Vec<String>,
    /// A cycle is running.
    pub is_evaluating: bool,
    /// The latest completed cycle.
    pub last_completed_cycle: Option<EvaluationCycle>,
    /// Block of the latest completed cycle.
    pub last_eval_block: Option<i64>,
    /// Entries of the latest registry snapshot.
    pub miners_registered: i64,
    /// Seconds until the next cycle.
    pub next_eval_in_seconds: Option<i64>,
    /// running | degraded.
    pub status: String,
    /// All cycles.
    pub total_cycles: i64,
    /// Distinct uids with scores.
    pub total_miners_evaluated: i64,
}

/// u16 weights sorted by uid.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct U16Weights {
    /// Uids ascending.
    pub uids: Vec<u32>,
    /// Values, paired with `uids`.
    pub values: Vec<u16>,
}

/// Cycle facts attached to the weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WeightsMetadata {
    /// Cycle duration.
    pub evaluation_duration_seconds: Option<f64>,
    /// Env count.
    pub n_environments: Option<i32>,
    /// Active miners.
    pub n_miners_evaluated: Option<i32>,
}

/// `GET /v1/weights/*` (docs/api.md §4.3).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Weights {
    /// Block (backend guide name).
    pub block: i64,
    /// Block (upstream name).
    pub block_number: i64,
    /// Written at.
    pub created_at: String,
    /// Cycle.
    pub cycle_id: i32,
    /// Cycle facts.
    pub metadata: WeightsMetadata,
    /// Same as `created_at` (upstream name).
    pub timestamp: String,
    /// uid → softmax weight, as stored.
    #[schema(value_type = BTreeMap<String, f64>)]
    pub weights: Value,
    /// u16 pairs, as stored.
    #[schema(value_type = U16Weights)]
    pub weights_u16: Value,
}

/// One score row (docs/api.md §3.2).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct MinerScore {
    /// Env.
    pub env_id: String,
    /// Counted episodes without a miner fault.
    pub episodes_completed: i32,
    /// Infrastructure failures.
    pub episodes_excluded: i32,
    /// Counted episodes ended by a miner fault.
    pub episodes_failed: i32,
    /// Hotkey.
    pub hotkey: String,
    /// Mean return.
    pub mean_reward: f64,
    /// Success rate.
    pub success_rate: f64,
    /// Uid.
    pub uid: i32,
}

/// uid (as text) → env → success rate.
pub type ScoreTable = BTreeMap<String, BTreeMap<String, f64>>;

/// `GET /v1/scores/*` (docs/api.md §4.5).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Scores {
    /// Block.
    pub block: i64,
    /// Completion (or start) time.
    pub created_at: String,
    /// The cycle.
    pub cycle: EvaluationCycle,
    /// Cycle.
    pub cycle_id: i32,
    /// Score rows.
    pub details: Vec<MinerScore>,
    /// Same as `scores` (upstream name).
    pub miner_summary: ScoreTable,
    /// Frontier uids ascending.
    #[schema(value_type = Vec<u32>)]
    pub pareto_frontier: Value,
    /// uid → env → success rate.
    pub scores: ScoreTable,
}

/// One `GET /v1/miners` entry (docs/api.md §4.7).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Miner {
    /// Mean success rate in the last evaluation.
    pub avg_success_rate: Option<f64>,
    /// Commit block.
    pub commit_block: Option<i64>,
    /// Encrypted commitment.
    pub encrypted: bool,
    /// Public endpoint (never a decrypted one).
    pub endpoint: Option<String>,
    /// Envs scored in the last evaluation.
    #[schema(value_type = Vec<String>)]
    pub environments_evaluated: Value,
    /// Hotkey.
    pub hotkey: String,
    /// Last evaluation time.
    pub last_evaluated: Option<String>,
    /// Block of the last evaluation.
    pub last_evaluated_block: Option<i64>,
    /// Repo.
    pub repo: Option<String>,
    /// Revision.
    pub revision: Option<String>,
    /// active | inactive | invalid_commitment.
    pub status: String,
    /// Why not active.
    pub status_reason: Option<String>,
    /// Uid.
    pub uid: i32,
    /// The latest verification of this hotkey, any revision (docs/verification.md §4).
    pub verification: Option<MinerVerification>,
}

/// The `verification` member of a miner (docs/api.md §4.7).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct MinerVerification {
    /// passed | mismatch | invalid | unverifiable.
    pub outcome: VerificationOutcome,
    /// Mean match over the samples, when one was computed.
    pub match_score: Option<f64>,
    /// The verified revision.
    pub revision: String,
    /// When it was recorded.
    #[schema(format = DateTime)]
    pub checked_at: String,
}

/// How a verification ended (docs/verification.md §4). `mismatch` and `invalid` count against the
/// miner; `unverifiable` (our side or the Hub failed) never does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum VerificationOutcome {
    /// The endpoint's actions match the committed policy's.
    Passed,
    /// The endpoint answered with different actions.
    Mismatch,
    /// The committed revision cannot be run as a policy, or the endpoint does not answer.
    Invalid,
    /// Our side or the Hub failed.
    Unverifiable,
}

impl VerificationOutcome {
    /// Every outcome, in the order the metrics list them.
    pub const ALL: [Self; 4] = [
        Self::Passed,
        Self::Mismatch,
        Self::Invalid,
        Self::Unverifiable,
    ];

    /// The column, label and API spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Passed => "passed",
            Self::Mismatch => "mismatch",
            Self::Invalid => "invalid",
            Self::Unverifiable => "unverifiable",
        }
    }

    /// The outcome spelled `text`.
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|o| o.as_str() == text)
    }

    /// `verification_passed` of a later task result: null for `unverifiable`.
    pub fn passed(self) -> Option<bool> {
        match self {
            Self::Passed => Some(true),
            Self::Mismatch | Self::Invalid => Some(false),
            Self::Unverifiable => None,
        }
    }
}

/// How a verification's samples were drawn, and how each scored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct VerificationSamples {
    /// `upstream` (the public seed of (uid, revision)) or `realistic` (a fresh seed).
    pub source: String,
    /// The NumPy seed the observations were drawn from.
    pub seed: u64,
    /// How many samples were asked for.
    pub count: u32,
    /// The match of each sample, when the comparison ran.
    pub scores: Vec<f64>,
}

/// `POST /v1/verifications` body: one finished verification, as an executor reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerificationReport {
    /// 1–64 characters.
    #[schema(min_length = 1, max_length = 64)]
    pub executor_id: String,
    /// Miner uid.
    #[schema(minimum = 0, maximum = 65535)]
    pub uid: i64,
    /// Miner hotkey.
    pub hotkey: String,
    /// HuggingFace repo.
    pub repo: String,
    /// Revision.
    pub revision: String,
    /// The endpoint asked.
    pub endpoint: String,
    /// The outcome.
    pub outcome: VerificationOutcome,
    /// Mean match, in [0, 1].
    pub match_score: Option<f64>,
    /// The samples.
    pub samples: VerificationSamples,
    /// Why it did not pass.
    pub error: Option<String>,
}

/// A stored verification (`GET /v1/verifications`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct VerificationRecord {
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
    /// The endpoint asked; only for callers with a valid key.
    pub endpoint: Option<String>,
    /// The outcome.
    pub outcome: VerificationOutcome,
    /// Mean match.
    pub match_score: Option<f64>,
    /// The samples.
    pub samples: VerificationSamples,
    /// Why it did not pass.
    pub error: Option<String>,
    /// The executor that ran it.
    pub executor_id: String,
    /// When it was recorded.
    #[schema(format = DateTime)]
    pub created_at: String,
}

/// `GET /v1/verifications` response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Verifications {
    /// Newest first.
    pub verifications: Vec<VerificationRecord>,
}

/// `POST /v1/verifications` response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct VerificationStored {
    /// The new row's id.
    pub id: i64,
}

/// `GET /v1/miners`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Miners {
    /// Its block.
    pub block: Option<i64>,
    /// Snapshot cycle.
    pub cycle_id: Option<i32>,
    /// Snapshot entries by uid.
    pub miners: Vec<Miner>,
}

/// One `GET /v1/environments` element (docs/api.md §4.8).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Environment {
    /// Their mean.
    pub avg_success_rate: Option<f64>,
    /// In the scheduler's list.
    pub enabled: bool,
    /// Id.
    pub env_id: String,
    /// Same as family.
    pub env_name: String,
    /// Family.
    pub family: String,
    /// Score rows in the latest completed cycle.
    pub n_evaluations: i64,
    /// Part after the family.
    pub task_name: String,
}

/// Whose fault a failure was (the core's [`FailureKind`] on the wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum FailureKindBody {
    /// The miner's.
    Miner,
    /// The executor's or simulator's.
    Infrastructure,
}

impl From<FailureKind> for FailureKindBody {
    fn from(k: FailureKind) -> Self {
        match k {
            FailureKind::Miner => Self::Miner,
            FailureKind::Infrastructure => Self::Infrastructure,
        }
    }
}

impl From<FailureKindBody> for FailureKind {
    fn from(k: FailureKindBody) -> Self {
        match k {
            FailureKindBody::Miner => Self::Miner,
            FailureKindBody::Infrastructure => Self::Infrastructure,
        }
    }
}

/// Shard filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Shard {
    /// ≥ 1.
    #[schema(minimum = 1, maximum = 65535)]
    pub count: i64,
    /// 0 ≤ index < count.
    #[schema(minimum = 0, maximum = 65535)]
    pub index: i64,
}

/// `POST /v1/tasks/fetch` request (docs/api.md §4.9).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct FetchRequest {
    /// 1–100, default 10.
    #[schema(minimum = 1, maximum = 100)]
    pub batch_size: Option<i64>,
    /// Env filter; null or empty = any (at most 100 ids of 1–64 characters).
    #[schema(max_items = 100)]
    pub env_ids: Option<Vec<String>>,
    /// 1–64 characters.
    #[schema(min_length = 1, max_length = 64)]
    pub executor_id: String,
    /// Shard filter.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shard: Option<Shard>,
}

/// A claimed task as handed to an executor (docs/api.md §3.3).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ClaimedTask {
    /// UUID v4.
    pub task_uuid: String,
    /// Cycle.
    pub cycle_id: i32,
    /// Miner uid.
    pub miner_uid: i32,
    /// Miner hotkey.
    pub miner_hotkey: String,
    /// Miner base URL.
    pub miner_endpoint: String,
    /// HuggingFace repo.
    pub miner_repo: Option<String>,
    /// Revision.
    pub miner_revision: Option<String>,
    /// Env id.
    pub env_id: String,
    /// Public seed.
    pub seed: i32,
    /// Secret simulation seed.
    pub sim_seed: u64,
    /// Always `assigned`.
    pub status: String,
    /// Creation time.
    #[schema(format = DateTime)]
    pub created_at: String,
    /// Which attempt this is.
    pub attempts: i32,
    /// Verify the miner's (uid, revision) pair whatever the executor's rate (docs/verification.md §4);
    /// absent means false.
    #[serde(default)]
    pub verify: bool,
}

/// `POST /v1/tasks/fetch` response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct FetchResponse {
    /// Claimed tasks in FIFO order.
    pub tasks: Vec<ClaimedTask>,
    /// Approximate pending count.
    pub total_pending: i64,
}

/// `TaskResult` (docs/api.md §4.10): one episode result as an executor submits it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TaskResultBody {
    /// Slowest /act round trip, s.
    #[schema(minimum = 0)]
    pub action_time_max: Option<f64>,
    /// Mean /act round trip, s.
    #[schema(minimum = 0)]
    pub action_time_mean: Option<f64>,
    /// Error text.
    pub error: Option<String>,
    /// miner | infrastructure | null; must be null when `success` is true.
    pub failure_kind: Option<FailureKindBody>,
    /// Default 0.0.
    pub score: Option<f64>,
    /// Success latched over the episode.
    pub success: bool,
    /// Task.
    #[schema(min_length = 1, max_length = 64)]
    pub task_uuid: String,
    /// 0…1 000 000.
    #[schema(minimum = 0, maximum = 1000000)]
    pub timesteps: Option<i64>,
    /// Default 0.0.
    pub total_reward: Option<f64>,
    /// Stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification_passed: Option<bool>,
    /// Stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification_score: Option<f64>,
}

impl From<&TaskResult> for TaskResultBody {
    fn from(r: &TaskResult) -> Self {
        Self {
            action_time_max: r.action_time_max,
            action_time_mean: r.action_time_mean,
            error: r.error.clone(),
            failure_kind: r.failure_kind.map(FailureKindBody::from),
            score: Some(r.score),
            success: r.success,
            task_uuid: r.task_uuid.clone(),
            timesteps: Some(r.timesteps.into()),
            total_reward: Some(r.total_reward),
            verification_passed: r.verification_passed,
            verification_score: r.verification_score,
        }
    }
}

/// A submitted result as the core's value, its blame settled once, here (docs/database.md §4.3).
/// The API validates the body's limits before converting it.
impl From<TaskResultBody> for TaskResult {
    fn from(b: TaskResultBody) -> Self {
        TaskResult {
            task_uuid: b.task_uuid,
            success: b.success,
            score: b.score.unwrap_or(0.0),
            total_reward: b.total_reward.unwrap_or(0.0),
            timesteps: b
                .timesteps
                .map_or(0, |t| t.clamp(0, u32::MAX.into()) as u32),
            error: b.error,
            failure_kind: b.failure_kind.map(FailureKind::from),
            action_time_mean: b.action_time_mean,
            action_time_max: b.action_time_max,
            verification_passed: b.verification_passed,
            verification_score: b.verification_score,
        }
        .settled()
    }
}

/// `POST /v1/tasks/submit` request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SubmitRequest {
    /// 1–64 characters.
    #[schema(min_length = 1, max_length = 64)]
    pub executor_id: String,
    /// 1–1000 results.
    #[schema(min_items = 1, max_items = 1000)]
    pub results: Vec<TaskResultBody>,
}

/// `POST /v1/tasks/submit` response.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SubmitResponse {
    /// Applied.
    pub accepted: i64,
    /// Already applied.
    pub duplicates: i64,
    /// One message per rejection.
    pub errors: Vec<String>,
    /// Refused.
    pub rejected: i64,
    /// Accepted and re-queued.
    pub requeued: i64,
}

/// `GET /v1/tasks/stats` (docs/api.md §4.11).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TaskStats {
    /// Number of executors holding tasks.
    pub active_executor_count: i64,
    /// Their ids, sorted: only for a caller with a valid key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_executors: Option<Vec<String>>,
    /// Assigned.
    pub assigned_tasks: i64,
    /// Cancelled.
    pub cancelled_tasks: i64,
    /// Completed.
    pub completed_tasks: i64,
    /// The scope's cycle.
    pub current_cycle_id: Option<i64>,
    /// Failed.
    pub failed_tasks: i64,
    /// Pending.
    pub pending_tasks: i64,
    /// Sum of the counts.
    pub total_tasks: i64,
}
