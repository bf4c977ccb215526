//! The ports: what the actors need from the outside world, as small object-safe traits over plain
//! data (docs/architecture.md). The application implements them on PostgreSQL and the chain or a
//! miners file; `memory` (behind the `test-util` feature) implements them in memory for the actor
//! tests.
//!
//! Every method takes `&self` and returns a boxed, non-`Send` future: an actor runs on one arbiter
//! thread, holds its port as `Rc<dyn …>` and may have several calls in flight at once.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, SystemTime};

use serde_json::Value;

use crate::registry::{ClassifiedMiner, MinerEntry};
use crate::scoring::aggregate::{EpisodeOutcome, PairStats};
use crate::states::TaskStatus;
use crate::tasks::TaskResult;

/// The future a port method returns.
pub type PortFuture<'a, T> = Pin<Box<dyn Future<Output = T> + 'a>>;

/// A store failure (database unreachable, statement failed), as text for logs and cycle errors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct StoreError(pub String);

/// Where a cycle's miners came from (`evaluation_cycles.registry_source`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegistrySource {
    /// The chain.
    Chain,
    /// A miners file.
    File,
}

impl RegistrySource {
    /// Column spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Chain => "chain",
            Self::File => "file",
        }
    }
}

/// One task of a new cycle (its cycle id is assigned by the store).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskDraft {
    /// UUID v4 text.
    pub task_uuid: String,
    /// Miner uid.
    pub miner_uid: i32,
    /// Miner hotkey.
    pub miner_hotkey: String,
    /// Miner base URL.
    pub miner_endpoint: String,
    /// Repo from the commitment.
    pub miner_repo: Option<String>,
    /// Revision from the commitment.
    pub miner_revision: Option<String>,
    /// Environment id.
    pub env_id: String,
    /// Public seed.
    pub seed: i32,
    /// Secret simulation seed (the u64's bits).
    pub sim_seed: i64,
    /// Claims allowed.
    pub max_attempts: i32,
    /// Verify the miner's (uid, revision) pair whatever the executor's rate (a re-admitted miner,
    /// docs/verification.md §4).
    pub verify: bool,
}

/// A cycle to create: its row, its registry snapshot and its tasks, written in one transaction.
#[derive(Debug, Clone)]
pub struct CycleDraft {
    /// Block of the snapshot.
    pub block: i64,
    /// Env ids in order.
    pub env_ids: Vec<String>,
    /// Episodes per (miner, env).
    pub episodes_per_env: i32,
    /// Where the miners came from.
    pub source: RegistrySource,
    /// Every snapshot entry, classified.
    pub miners: Vec<ClassifiedMiner>,
    /// One task per active miner × env × episode.
    pub tasks: Vec<TaskDraft>,
}

/// What creating a cycle did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatedCycle {
    /// Cycle id.
    pub id: i32,
    /// Active miners (0: the store failed the cycle with `no evaluable miners`).
    pub active: usize,
    /// Tasks inserted.
    pub tasks: usize,
}

/// Everything a completed cycle stores, with the cycle's completion, in one transaction.
#[derive(Debug, Clone)]
pub struct CycleRecord {
    /// Cycle.
    pub cycle_id: i32,
    /// Its block.
    pub block: i64,
    /// Score rows (counted pairs only).
    pub scores: Vec<PairStats>,
    /// Hotkey per uid from the snapshot (`unknown` when absent).
    pub hotkeys: BTreeMap<u32, String>,
    /// `{"<uid>": weight}`.
    pub weights: Value,
    /// `{"uids": [...], "values": [...]}`.
    pub weights_u16: Value,
    /// Frontier uids ascending.
    pub frontier: Vec<u32>,
}

/// The scheduler's heartbeat row (docs/database.md §2.7).
#[derive(Debug, Clone, PartialEq)]
pub struct Heartbeat {
    /// Last block read (`None` keeps the stored one).
    pub current_block: Option<i64>,
    /// The last registry read succeeded.
    pub chain_ok: bool,
    /// The last registry error.
    pub chain_error: Option<String>,
    /// Registry source.
    pub source: RegistrySource,
    /// Env list.
    pub env_ids: Vec<String>,
    /// Pause between cycles, seconds.
    pub eval_interval_seconds: i32,
    /// Heartbeat period, seconds.
    pub heartbeat_interval_seconds: i32,
    /// Next cycle start (`None` while a cycle runs).
    pub next_cycle_at: Option<SystemTime>,
}

/// Which pending tasks a claimer wants.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskFilter {
    /// Only these env ids (`None` or empty: any).
    pub env_ids: Option<Vec<String>>,
    /// Only `miner_uid % count == index`, as `(index, count)`.
    pub shard: Option<(i32, i32)>,
}

impl TaskFilter {
    /// Whether a task of `env_id` for `miner_uid` passes the filter.
    pub fn admits(&self, env_id: &str, miner_uid: i32) -> bool {
        let env_ok = match &self.env_ids {
            Some(envs) if !envs.is_empty() => envs.iter().any(|e| e == env_id),
            _ => true,
        };
        env_ok && self.shard.is_none_or(|(i, n)| miner_uid % n == i)
    }
}

/// A claimed task as the local pools receive it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedTask {
    /// UUID v4.
    pub task_uuid: String,
    /// Cycle.
    pub cycle_id: i32,
    /// Miner uid.
    pub miner_uid: i32,
    /// Miner base URL.
    pub miner_endpoint: String,
    /// Env id.
    pub env_id: String,
    /// Public seed.
    pub seed: i32,
    /// Secret simulation seed (the u64's bits).
    pub sim_seed: i64,
    /// Miner hotkey.
    pub miner_hotkey: String,
    /// HuggingFace repo of the commitment.
    pub miner_repo: Option<String>,
    /// Its revision.
    pub miner_revision: Option<String>,
    /// Verify the miner whatever the executor's rate.
    pub verify: bool,
}

/// The outcome of one submitted result (docs/database.md §4.4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubmitOutcome {
    /// Applied as a terminal result.
    Accepted {
        /// The new status (`completed` or `failed`).
        status: TaskStatus,
    },
    /// An infrastructure failure put the task back to pending.
    Requeued,
    /// Already applied earlier.
    Duplicate,
    /// Refused, with the message for `errors`.
    Rejected(String),
    /// The store could not be reached: nothing was applied, try again.
    Unavailable(String),
}

/// The task store: cycles, tasks, scores, weights and the heartbeat.
pub trait Store {
    /// The largest cycle block so far (synthetic blocks must strictly increase).
    fn last_block(&self) -> PortFuture<'_, Result<Option<i64>, StoreError>>;
    /// Creates a cycle with its snapshot and tasks; without an active miner the cycle is stored as
    /// failed with `no evaluable miners`.
    fn create_cycle(&self, draft: CycleDraft) -> PortFuture<'_, Result<CreatedCycle, StoreError>>;
    /// Tasks of the cycle still `pending` or `assigned`.
    fn open_tasks(&self, cycle_id: i32) -> PortFuture<'_, Result<i64, StoreError>>;
    /// Task counts of a cycle per status.
    fn progress(&self, cycle_id: i32)
        -> PortFuture<'_, Result<Vec<(TaskStatus, i64)>, StoreError>>;
    /// Re-queues (or gives up) tasks of running cycles assigned longer than `threshold` ago;
    /// returns (requeued, given_up).
    fn reap_stale(&self, threshold: Duration)
        -> PortFuture<'_, Result<(usize, usize), StoreError>>;
    /// Fails a running cycle with `message` and cancels its unfinished tasks with
    /// `{"error": task_error}`; returns the number of cancelled tasks.
    fn fail_cycle(
        &self,
        cycle_id: i32,
        message: String,
        task_error: String,
    ) -> PortFuture<'_, Result<usize, StoreError>>;
    /// The counted-or-excluded outcomes of the cycle's finished tasks.
    fn outcomes(&self, cycle_id: i32) -> PortFuture<'_, Result<Vec<EpisodeOutcome>, StoreError>>;
    /// Stores scores, weights and frontier and completes the cycle, in one transaction.
    fn complete_cycle(&self, record: CycleRecord) -> PortFuture<'_, Result<(), StoreError>>;
    /// Upserts the heartbeat.
    fn write_heartbeat(&self, beat: Heartbeat) -> PortFuture<'_, Result<(), StoreError>>;
    /// Claims up to `max` pending tasks of running cycles for `executor_id`, committed before
    /// they are returned.
    fn claim(
        &self,
        executor_id: String,
        max: usize,
        filter: TaskFilter,
    ) -> PortFuture<'_, Result<Vec<QueuedTask>, StoreError>>;
    /// Applies one result in its own transaction.
    fn submit(&self, executor_id: String, result: TaskResult) -> PortFuture<'_, SubmitOutcome>;
    /// Whether this process still holds the scheduler lock (one scheduler per database).
    fn lock_held(&self) -> PortFuture<'_, bool>;
    /// The latest verification of each (hotkey, revision) pair that failed it (`mismatch` or
    /// `invalid`), for the `exclude` policy. A store that keeps no verifications has none.
    fn failed_verifications(
        &self,
        pairs: Vec<(String, String)>,
    ) -> PortFuture<'_, Result<Vec<FailedVerification>, StoreError>> {
        let _ = pairs;
        Box::pin(async { Ok(Vec::new()) })
    }
}

/// A miner revision whose latest verification failed (docs/verification.md §4).
#[derive(Debug, Clone, PartialEq)]
pub struct FailedVerification {
    /// The miner's hotkey.
    pub hotkey: String,
    /// The verified revision.
    pub revision: String,
    /// Why, as the miner list shows it: `verification mismatch (match 0.42)`.
    pub reason: String,
    /// Cycles started since the verification was recorded.
    pub cycles_since: i64,
}

/// What the scheduler does with verification outcomes (`KINITRO_SCHEDULER_VERIFICATION_POLICY`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerificationPolicy {
    /// Record and show them; nothing else changes (upstream's behaviour).
    Log,
    /// Hold out a miner whose current revision failed for this many cycles, then evaluate it
    /// again with its tasks marked for verification.
    Exclude {
        /// Cycles a failed miner gets no tasks.
        cycles: u32,
    },
}

/// One read of the miner registry: the block it was read at (`None`: a miners file, which has no
/// block) and the raw entries.
#[derive(Debug, Clone, PartialEq)]
pub struct RegistryRead {
    /// Finalized block of the read.
    pub block: Option<i64>,
    /// Entries before classification.
    pub entries: Vec<MinerEntry>,
}

/// Where the miners come from: the chain or a miners file.
pub trait MinerSource {
    /// Which kind of source this is.
    fn kind(&self) -> RegistrySource;
    /// Reads the registry once (no retries: the registry actor retries).
    fn read(&self) -> PortFuture<'_, Result<RegistryRead, String>>;
    /// The current block for the heartbeat: the finalized block, or for a miners file the clock's
    /// synthetic block (`unix seconds / 12`).
    fn current_block(&self) -> PortFuture<'_, Result<Option<i64>, String>>;
}
