//! In-memory implementations of the ports, for the actor tests: a [`MemoryStore`] that follows the
//! task rules of docs/database.md (claims, the submission decision of [`crate::tasks::decide`],
//! stale reaping, cancellation) and a [`StaticMiners`] source whose answers the test sets.

use std::cell::{Cell, RefCell};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use crate::ports::{
    CreatedCycle, CycleDraft, CycleRecord, Heartbeat, MinerSource, PortFuture, QueuedTask,
    RegistryRead, RegistrySource, Store, StoreError, SubmitOutcome, TaskDraft, TaskFilter,
};
use crate::registry::{MinerEntry, MinerStatus};
use crate::scoring::aggregate::{EpisodeOutcome, FailureKind};
use crate::states::{CycleStatus, TaskStatus};
use crate::tasks::{decide, max_attempts_result, Decision, TaskResult, TaskState};

/// A stored cycle.
#[derive(Debug, Clone)]
pub struct MemoryCycle {
    /// Id (1, 2, …).
    pub id: i32,
    /// Block.
    pub block: i64,
    /// `running`, `completed` or `failed`.
    pub status: CycleStatus,
    /// Error of a failed cycle.
    pub error: Option<String>,
    /// The completion record of a completed cycle.
    pub record: Option<CycleRecord>,
}

/// A stored task.
#[derive(Debug, Clone)]
pub struct MemoryTask {
    /// The draft it was made from.
    pub draft: TaskDraft,
    /// Cycle.
    pub cycle_id: i32,
    /// The row's state as the submission rules see it.
    pub state: TaskState,
    /// When it was last claimed.
    pub assigned_at: Option<Instant>,
    /// The `result` column.
    pub result: Option<Value>,
}

/// Everything a [`MemoryStore`] holds.
#[derive(Debug, Clone, Default)]
pub struct MemoryData {
    /// Cycles in creation order.
    pub cycles: Vec<MemoryCycle>,
    /// Tasks in creation order.
    pub tasks: Vec<MemoryTask>,
    /// Every heartbeat written, oldest first.
    pub heartbeats: Vec<Heartbeat>,
}

/// An in-memory [`Store`]. `set_down(true)` makes every call fail as a dead database would;
/// `set_lock_held(false)` makes the lock look lost.
#[derive(Debug)]
pub struct MemoryStore {
    data: RefCell<MemoryData>,
    down: Cell<bool>,
    lock: Cell<bool>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self {
            data: RefCell::default(),
            down: Cell::new(false),
            lock: Cell::new(true),
        }
    }
}

fn ready<'a, T: 'a>(value: T) -> PortFuture<'a, T> {
    Box::pin(std::future::ready(value))
}

impl MemoryStore {
    /// A copy of everything stored.
    pub fn data(&self) -> MemoryData {
        self.data.borrow().clone()
    }

    /// Simulates a database outage (`true`) or its end.
    pub fn set_down(&self, down: bool) {
        self.down.set(down);
    }

    /// Simulates losing (`false`) the scheduler lock.
    pub fn set_lock_held(&self, held: bool) {
        self.lock.set(held);
    }

    fn with<T>(&self, f: impl FnOnce(&mut MemoryData) -> T) -> Result<T, StoreError> {
        if self.down.get() {
            return Err(StoreError("database unavailable".into()));
        }
        Ok(f(&mut self.data.borrow_mut()))
    }
}

fn open(t: &MemoryTask) -> bool {
    t.state.status.is_open()
}

fn outcome_of(miner_uid: i32, env_id: &str, result: &Value) -> EpisodeOutcome {
    EpisodeOutcome {
        miner_uid: miner_uid as u32,
        env_id: env_id.to_string(),
        success: result["success"].as_bool().unwrap_or(false),
        failure_kind: serde_json::from_value::<FailureKind>(result["failure_kind"].clone()).ok(),
        total_reward: result["total_reward"].as_f64().unwrap_or(0.0),
    }
}

impl Store for MemoryStore {
    fn last_block(&self) -> PortFuture<'_, Result<Option<i64>, StoreError>> {
        ready(self.with(|d| d.cycles.iter().map(|c| c.block).max()))
    }

    fn create_cycle(&self, draft: CycleDraft) -> PortFuture<'_, Result<CreatedCycle, StoreError>> {
        ready(self.with(|d| {
            let id = d.cycles.len() as i32 + 1;
            let active = draft
                .miners
                .iter()
                .filter(|m| m.status == MinerStatus::Active)
                .count();
            d.cycles.push(MemoryCycle {
                id,
                block: draft.block,
                status: if active == 0 {
                    CycleStatus::Failed
                } else {
                    CycleStatus::Running
                },
                error: (active == 0).then(|| "no evaluable miners".into()),
                record: None,
            });
            let tasks = if active == 0 { Vec::new() } else { draft.tasks };
            let count = tasks.len();
            d.tasks.extend(tasks.into_iter().map(|t| MemoryTask {
                cycle_id: id,
                state: TaskState {
                    status: TaskStatus::Pending,
                    assigned_to: None,
                    attempts: 0,
                    max_attempts: t.max_attempts,
                    last_submitted_by: None,
                    last_submitted_attempt: None,
                },
                draft: t,
                assigned_at: None,
                result: None,
            }));
            CreatedCycle {
                id,
                active,
                tasks: count,
            }
        }))
    }

    fn open_tasks(&self, cycle_id: i32) -> PortFuture<'_, Result<i64, StoreError>> {
        ready(self.with(|d| {
            d.tasks
                .iter()
                .filter(|t| t.cycle_id == cycle_id && open(t))
                .count() as i64
        }))
    }

    fn progress(
        &self,
        cycle_id: i32,
    ) -> PortFuture<'_, Result<Vec<(TaskStatus, i64)>, StoreError>> {
        ready(self.with(|d| {
            let mut counts: std::collections::BTreeMap<TaskStatus, i64> = Default::default();
            for t in d.tasks.iter().filter(|t| t.cycle_id == cycle_id) {
                *counts.entry(t.state.status).or_default() += 1;
            }
            counts.into_iter().collect()
        }))
    }

    fn reap_stale(
        &self,
        threshold: Duration,
    ) -> PortFuture<'_, Result<(usize, usize), StoreError>> {
        ready(self.with(|d| {
            let running: Vec<i32> = d
                .cycles
                .iter()
                .filter(|c| c.status == CycleStatus::Running)
                .map(|c| c.id)
                .collect();
            let (mut requeued, mut given_up) = (0, 0);
            for t in d.tasks.iter_mut().filter(|t| {
                t.state.status == TaskStatus::Assigned
                    && running.contains(&t.cycle_id)
                    && t.assigned_at.is_some_and(|at| at.elapsed() > threshold)
            }) {
                t.assigned_at = None;
                if t.state.attempts >= t.state.max_attempts {
                    t.state.status = TaskStatus::Failed;
                    t.result = Some(max_attempts_result("stale assignment"));
                    given_up += 1;
                } else {
                    t.state.status = TaskStatus::Pending;
                    requeued += 1;
                }
            }
            (requeued, given_up)
        }))
    }

    fn fail_cycle(
        &self,
        cycle_id: i32,
        message: String,
        task_error: String,
    ) -> PortFuture<'_, Result<usize, StoreError>> {
        ready(self.with(|d| {
            for c in d.cycles.iter_mut().filter(|c| c.id == cycle_id) {
                if c.status == CycleStatus::Running {
                    c.status = CycleStatus::Failed;
                    c.error = Some(message.clone());
                }
            }
            let mut cancelled = 0;
            for t in d
                .tasks
                .iter_mut()
                .filter(|t| t.cycle_id == cycle_id && open(t))
            {
                t.state.status = TaskStatus::Cancelled;
                t.result = Some(json!({ "error": task_error }));
                cancelled += 1;
            }
            cancelled
        }))
    }

    fn outcomes(&self, cycle_id: i32) -> PortFuture<'_, Result<Vec<EpisodeOutcome>, StoreError>> {
        ready(self.with(|d| {
            d.tasks
                .iter()
                .filter(|t| {
                    t.cycle_id == cycle_id
                        && matches!(t.state.status, TaskStatus::Completed | TaskStatus::Failed)
                })
                .filter_map(|t| {
                    let r = t.result.as_ref()?;
                    Some(outcome_of(t.draft.miner_uid, &t.draft.env_id, r))
                })
                .collect()
        }))
    }

    fn complete_cycle(&self, record: CycleRecord) -> PortFuture<'_, Result<(), StoreError>> {
        ready(self.with(|d| {
            if let Some(c) = d.cycles.iter_mut().find(|c| c.id == record.cycle_id) {
                c.status = CycleStatus::Completed;
                c.record = Some(record);
            }
        }))
    }

    fn write_heartbeat(&self, beat: Heartbeat) -> PortFuture<'_, Result<(), StoreError>> {
        ready(self.with(|d| d.heartbeats.push(beat)))
    }

    fn claim(
        &self,
        executor_id: String,
        max: usize,
        filter: TaskFilter,
    ) -> PortFuture<'_, Result<Vec<QueuedTask>, StoreError>> {
        ready(self.with(|d| {
            let running: Vec<i32> = d
                .cycles
                .iter()
                .filter(|c| c.status == CycleStatus::Running)
                .map(|c| c.id)
                .collect();
            let mut out = Vec::new();
            for t in d.tasks.iter_mut() {
                if out.len() == max {
                    break;
                }
                if t.state.status != TaskStatus::Pending
                    || !running.contains(&t.cycle_id)
                    || !filter.admits(&t.draft.env_id, t.draft.miner_uid)
                {
                    continue;
                }
                t.state.status = TaskStatus::Assigned;
                t.state.assigned_to = Some(executor_id.clone());
                t.state.attempts += 1;
                t.assigned_at = Some(Instant::now());
                out.push(QueuedTask {
                    task_uuid: t.draft.task_uuid.clone(),
                    cycle_id: t.cycle_id,
                    miner_uid: t.draft.miner_uid,
                    miner_endpoint: t.draft.miner_endpoint.clone(),
                    env_id: t.draft.env_id.clone(),
                    seed: t.draft.seed,
                    sim_seed: t.draft.sim_seed,
                    miner_hotkey: t.draft.miner_hotkey.clone(),
                    miner_repo: t.draft.miner_repo.clone(),
                    miner_revision: t.draft.miner_revision.clone(),
                    verify: t.draft.verify,
                });
            }
            out
        }))
    }

    fn submit(&self, executor_id: String, result: TaskResult) -> PortFuture<'_, SubmitOutcome> {
        let applied = self.with(|d| {
            let Some(t) = d
                .tasks
                .iter_mut()
                .find(|t| t.draft.task_uuid == result.task_uuid)
            else {
                return SubmitOutcome::Rejected(format!(
                    "Task {}: not found or not assigned to executor",
                    result.task_uuid
                ));
            };
            match decide(&t.state, &executor_id, &result.task_uuid, &result) {
                Decision::Duplicate => SubmitOutcome::Duplicate,
                Decision::Rejected(m) => SubmitOutcome::Rejected(m),
                Decision::Apply {
                    status,
                    result,
                    terminal,
                } => {
                    t.state.status = status;
                    t.result = Some(result);
                    t.state.last_submitted_by = Some(executor_id.clone());
                    t.state.last_submitted_attempt = Some(t.state.attempts);
                    if terminal {
                        SubmitOutcome::Accepted { status }
                    } else {
                        t.assigned_at = None;
                        SubmitOutcome::Requeued
                    }
                }
            }
        });
        ready(applied.unwrap_or_else(|e| SubmitOutcome::Unavailable(e.0)))
    }

    fn lock_held(&self) -> PortFuture<'_, bool> {
        ready(self.lock.get())
    }
}

/// A [`MinerSource`] answering what the test set: a miners-file-like source without a block, or a
/// chain-like one with `block`.
#[derive(Debug)]
pub struct StaticMiners {
    entries: Vec<MinerEntry>,
    error: RefCell<Option<String>>,
    block: Option<i64>,
    reads: Cell<usize>,
}

impl StaticMiners {
    /// A source answering `entries` at `block` (`None`: a miners file).
    pub fn new(entries: Vec<MinerEntry>, block: Option<i64>) -> Self {
        Self {
            entries,
            error: RefCell::new(None),
            block,
            reads: Cell::new(0),
        }
    }

    /// Makes every following read fail with `error` (`None`: succeed again).
    pub fn set_error(&self, error: Option<&str>) {
        *self.error.borrow_mut() = error.map(str::to_string);
    }

    /// Registry reads so far.
    pub fn reads(&self) -> usize {
        self.reads.get()
    }
}

impl MinerSource for StaticMiners {
    fn kind(&self) -> RegistrySource {
        if self.block.is_some() {
            RegistrySource::Chain
        } else {
            RegistrySource::File
        }
    }

    fn read(&self) -> PortFuture<'_, Result<RegistryRead, String>> {
        self.reads.set(self.reads.get() + 1);
        ready(match &*self.error.borrow() {
            Some(e) => Err(e.clone()),
            None => Ok(RegistryRead {
                block: self.block,
                entries: self.entries.clone(),
            }),
        })
    }

    fn current_block(&self) -> PortFuture<'_, Result<Option<i64>, String>> {
        let block = match (&*self.error.borrow(), self.block) {
            (Some(e), Some(_)) => Err(e.clone()),
            (_, Some(b)) => Ok(Some(b)),
            (_, None) => Ok(Some(
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_secs() as i64
                    / 12,
            )),
        };
        ready(block)
    }
}
