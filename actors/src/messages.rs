//! The typed messages between the actors (docs/architecture.md §2).

use actix::prelude::*;

use crate::ports::{QueuedTask, StoreError, SubmitOutcome, TaskFilter};
use crate::registry::ClassifiedMiner;
use crate::tasks::TaskResult;

/// CycleActor: start a cycle now unless one is running.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Tick;

/// CycleActor, from the TaskQueueActor: no task of the cycle is pending or assigned any more.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub struct CycleFinished {
    /// The finished cycle.
    pub cycle_id: i32,
}

/// CycleActor: graceful stop; the running cycle fails with `Cancelled on scheduler shutdown`.
/// Answered once that is stored.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Shutdown;

/// A registry read, classified.
#[derive(Debug, Clone, PartialEq)]
pub struct MinerSnapshot {
    /// The block it was read at (`None`: a miners file).
    pub block: Option<i64>,
    /// Every entry, classified.
    pub miners: Vec<ClassifiedMiner>,
}

/// MinerRegistryActor: read the registry (with the retries of docs/scheduler.md §3, step 1) and
/// classify it.
#[derive(Debug, Message)]
#[rtype(result = "Result<MinerSnapshot, String>")]
pub struct RefreshMiners;

/// MinerRegistryActor: the last snapshot read, if any.
#[derive(Debug, Message)]
#[rtype(result = "Option<MinerSnapshot>")]
pub struct GetMiners;

/// MinerRegistryActor: the current block for the heartbeat.
#[derive(Debug, Message)]
#[rtype(result = "Result<Option<i64>, String>")]
pub struct CurrentBlock;

/// TaskQueueActor, from the CycleActor: a cycle's tasks are stored; watch it until none is open.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct CycleEnqueued {
    /// The cycle.
    pub cycle_id: i32,
    /// Tasks it has.
    pub tasks: usize,
    /// Who is told when the cycle has no open task left.
    pub finished: Recipient<CycleFinished>,
}

/// TaskQueueActor: stop watching a cycle (it was failed or cancelled).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct CancelCycle {
    /// The cycle.
    pub cycle_id: i32,
}

/// TaskQueueActor, from local pools: claim up to `max` pending tasks.
#[derive(Debug, Message)]
#[rtype(result = "Result<Vec<QueuedTask>, StoreError>")]
pub struct Claim {
    /// The claimer's executor id.
    pub executor_id: String,
    /// Most tasks wanted.
    pub max: usize,
    /// Env and shard filter.
    pub filter: TaskFilter,
}

/// TaskQueueActor, from local pools: one episode's result, committed (with retries while the store is
/// unreachable) before it is answered.
#[derive(Debug, Message)]
#[rtype(result = "SubmitOutcome")]
pub struct Report {
    /// The executor id the task was claimed under.
    pub executor_id: String,
    /// The result.
    pub result: TaskResult,
}

/// WeightsActor: score a finished cycle and store scores, weights and frontier with its completion.
#[derive(Debug, Message)]
#[rtype(result = "Result<WeightsSummary, String>")]
pub struct ComputeWeights {
    /// The cycle.
    pub cycle_id: i32,
    /// Its block.
    pub block: i64,
    /// Its registry snapshot (commit blocks and hotkeys).
    pub miners: Vec<ClassifiedMiner>,
}

/// What a scored cycle produced, for the `cycle_completed` event.
#[derive(Debug, Clone, PartialEq)]
pub struct WeightsSummary {
    /// Miners with at least one counted pair.
    pub miners_scored: usize,
    /// Frontier size.
    pub frontier: usize,
    /// The five largest weights, (uid, weight), largest first.
    pub top: Vec<(u32, f64)>,
}

/// The latest weights stored by this process.
#[derive(Debug, Clone, PartialEq)]
pub struct LatestWeights {
    /// Cycle that produced them.
    pub cycle_id: i32,
    /// Its block.
    pub block: i64,
    /// (uid, weight), uid ascending.
    pub weights: Vec<(u32, f64)>,
    /// (uid, u16 weight), uid ascending.
    pub weights_u16: Vec<(u32, u16)>,
}

/// WeightsActor: the latest weights it stored, if any.
#[derive(Debug, Message)]
#[rtype(result = "Option<LatestWeights>")]
pub struct GetLatestWeights;
