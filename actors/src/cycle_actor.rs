//! The CycleActor: the cycle clock and the running cycle (docs/scheduler.md §3), and the
//! scheduler's heartbeat with its lock check (docs/scheduler.md §1–2; docs/database.md §2.7, §7).
//!
//! One cycle at a time: Tick → RefreshMiners → create the cycle with its seeded tasks (one store
//! transaction) → CycleEnqueued → (CycleFinished from the queue, or the cycle timeout) →
//! ComputeWeights → the next Tick after the interval. The heartbeat runs on its own timer, so a slow
//! registry read or store never delays it; a heartbeat that finds the lock lost stops the actor at
//! once (its pending work is dropped, nothing more is written) and reports [`SchedulerExit::LockLost`].

use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use actix::prelude::*;
use tokio::sync::oneshot;

use crate::messages::{
    CancelCycle, ComputeWeights, CurrentBlock, CycleEnqueued, CycleFinished, MinerSnapshot,
    RefreshMiners, Shutdown, Tick,
};
use crate::ports::{CreatedCycle, CycleDraft, Heartbeat, RegistrySource, Store, TaskDraft};
use crate::registry::{ClassifiedMiner, MinerStatus};
use crate::registry_actor::MinerRegistryActor;
use crate::seeds;
use crate::task_queue_actor::TaskQueueActor;
use crate::weights_actor::WeightsActor;

/// The error of a cycle cancelled by a graceful stop.
pub const SHUTDOWN_ERROR: &str = "Cancelled on scheduler shutdown";
/// The error of a cycle whose tasks did not finish in time.
pub const TIMEOUT_ERROR: &str = "Cycle timed out waiting for tasks";
/// The exit message when the lock connection is lost (docs/database.md §7).
pub const LOCK_LOST: &str = "lost the scheduler lock (database connection dropped)";

/// Why the CycleActor stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchedulerExit {
    /// A graceful [`Shutdown`].
    Shutdown,
    /// The scheduler lock was lost: the process must exit with an error.
    LockLost,
}

/// What the cycle clock needs to know.
#[derive(Debug, Clone)]
pub struct CycleConfig {
    /// Env ids in order.
    pub env_ids: Vec<String>,
    /// Episodes per (miner, env).
    pub episodes_per_env: u32,
    /// Pause after a cycle ends.
    pub eval_interval: Duration,
    /// A cycle fails when its tasks are not all finished this long after its creation.
    pub cycle_timeout: Duration,
    /// Heartbeat (and lock check) period.
    pub heartbeat_interval: Duration,
    /// Claims allowed per task.
    pub task_max_attempts: u32,
    /// Secret from which each task's `sim_seed` is derived.
    pub seed_secret: Vec<u8>,
    /// The registry's kind, for the cycle rows and the heartbeat.
    pub source: RegistrySource,
}

/// The other actors a CycleActor talks to.
pub struct CyclePeers {
    /// The miner set.
    pub registry: Addr<MinerRegistryActor>,
    /// The task queue.
    pub queue: Addr<TaskQueueActor>,
    /// Scoring.
    pub weights: Addr<WeightsActor>,
}

struct Running {
    id: i32,
    block: i64,
    started: Instant,
    miners: Vec<ClassifiedMiner>,
    timeout: SpawnHandle,
}

enum Phase {
    /// Waiting for the next Tick.
    Idle,
    /// Reading the registry and creating the cycle.
    Starting,
    /// Tasks stored; waiting for them.
    Running(Running),
    /// Scoring or failing cycle `0`.
    Finishing(i32),
    /// Stopping: nothing more is started.
    Stopping,
}

/// The cycle clock.
pub struct CycleActor {
    store: Rc<dyn Store>,
    peers: CyclePeers,
    config: CycleConfig,
    phase: Phase,
    current_block: Option<i64>,
    registry_error: Option<String>,
    next_cycle_at: Option<SystemTime>,
    exit: Option<oneshot::Sender<SchedulerExit>>,
}

/// How starting a cycle failed.
enum StartError {
    /// The registry could not be read (after its retries).
    Registry(String),
    /// The store failed before the cycle existed.
    Store(String),
}

impl CycleActor {
    /// A cycle clock; `exit` receives why it stopped.
    pub fn new(
        store: Rc<dyn Store>,
        peers: CyclePeers,
        config: CycleConfig,
        exit: oneshot::Sender<SchedulerExit>,
    ) -> Self {
        Self {
            store,
            peers,
            config,
            phase: Phase::Idle,
            current_block: None,
            registry_error: None,
            next_cycle_at: None,
            exit: Some(exit),
        }
    }

    fn running_id(&self) -> Option<i32> {
        match &self.phase {
            Phase::Running(r) => Some(r.id),
            Phase::Finishing(id) => Some(*id),
            _ => None,
        }
    }

    fn heartbeat_row(&self) -> Heartbeat {
        let secs = |d: Duration| d.as_secs().min(i32::MAX as u64) as i32;
        Heartbeat {
            current_block: self.current_block,
            chain_ok: self.registry_error.is_none(),
            chain_error: self.registry_error.clone(),
            source: self.config.source,
            env_ids: self.config.env_ids.clone(),
            eval_interval_seconds: secs(self.config.eval_interval),
            heartbeat_interval_seconds: secs(self.config.heartbeat_interval),
            next_cycle_at: self.next_cycle_at.filter(|_| self.running_id().is_none()),
        }
    }

    fn write_heartbeat(&self, ctx: &mut Context<Self>) {
        let store = self.store.clone();
        let row = self.heartbeat_row();
        ctx.spawn(
            async move {
                if let Err(e) = store.write_heartbeat(row).await {
                    tracing::warn!(error = %e, "heartbeat not written");
                }
            }
            .into_actor(self),
        );
    }

    /// The timer's beat: lock check, current block, heartbeat row.
    fn beat(&mut self, ctx: &mut Context<Self>) {
        let store = self.store.clone();
        let registry = self.peers.registry.clone();
        let probe = async move {
            if !store.lock_held().await {
                return None;
            }
            Some(match registry.send(CurrentBlock).await {
                Ok(read) => read,
                Err(e) => Err(e.to_string()),
            })
        };
        ctx.spawn(probe.into_actor(self).map(|probe, act, ctx| {
            let Some(block) = probe else {
                tracing::error!(event = "scheduler_lock_lost", error = LOCK_LOST);
                act.finish(SchedulerExit::LockLost, ctx);
                return;
            };
            match block {
                Ok(b) => {
                    if b.is_some() {
                        act.current_block = b;
                    }
                    if act.config.source == RegistrySource::Chain {
                        act.registry_error = None;
                    }
                }
                Err(e) => {
                    tracing::warn!(event = "heartbeat_chain_error", error = %e);
                    act.registry_error = Some(e);
                }
            }
            act.write_heartbeat(ctx);
        }));
    }

    fn finish(&mut self, why: SchedulerExit, ctx: &mut Context<Self>) {
        self.phase = Phase::Stopping;
        if let Some(tx) = self.exit.take() {
            let _ = tx.send(why);
        }
        ctx.stop();
    }

    /// Schedules the next Tick after `pause` and publishes it in the heartbeat.
    fn schedule_next(&mut self, pause: Duration, ctx: &mut Context<Self>) {
        if matches!(self.phase, Phase::Stopping) {
            return;
        }
        self.phase = Phase::Idle;
        self.next_cycle_at = Some(SystemTime::now() + pause);
        self.write_heartbeat(ctx);
        ctx.notify_later(Tick, pause);
    }

    fn tasks_for(&self, miners: &[ClassifiedMiner]) -> Vec<TaskDraft> {
        let mut active: Vec<&ClassifiedMiner> = miners
            .iter()
            .filter(|m| m.status == MinerStatus::Active)
            .collect();
        active.sort_by_key(|m| m.entry.uid);
        let mut out = Vec::new();
        for m in active {
            for env in &self.config.env_ids {
                for _ in 0..self.config.episodes_per_env {
                    let task_uuid = uuid::Uuid::new_v4().to_string();
                    out.push(TaskDraft {
                        seed: seeds::task_seed(&task_uuid),
                        sim_seed: seeds::sim_seed(&self.config.seed_secret, &task_uuid) as i64,
                        task_uuid,
                        miner_uid: i32::from(m.entry.uid),
                        miner_hotkey: m.entry.hotkey.clone(),
                        miner_endpoint: m.endpoint.clone().unwrap_or_default(),
                        miner_repo: m.repo.clone(),
                        miner_revision: m.revision.clone(),
                        env_id: env.clone(),
                        max_attempts: self.config.task_max_attempts as i32,
                    });
                }
            }
        }
        out
    }

    fn start_cycle(&mut self, ctx: &mut Context<Self>) {
        self.phase = Phase::Starting;
        self.next_cycle_at = None;
        let registry = self.peers.registry.clone();
        let read = async move {
            match registry.send(RefreshMiners).await {
                Ok(Ok(snapshot)) => Ok(snapshot),
                Ok(Err(e)) => Err(StartError::Registry(e)),
                Err(e) => Err(StartError::Registry(e.to_string())),
            }
        };
        ctx.spawn(read.into_actor(self).then(|read, act, _| {
            let store = act.store.clone();
            let draft = read.map(|snapshot| {
                let draft = CycleDraft {
                    block: snapshot.block.unwrap_or(0),
                    env_ids: act.config.env_ids.clone(),
                    episodes_per_env: act.config.episodes_per_env as i32,
                    source: act.config.source,
                    tasks: act.tasks_for(&snapshot.miners),
                    miners: snapshot.miners.clone(),
                };
                (snapshot, draft)
            });
            async move {
                let (snapshot, mut draft) = draft?;
                if snapshot.block.is_none() {
                    draft.block = synthetic_block(
                        store
                            .last_block()
                            .await
                            .map_err(|e| StartError::Store(e.to_string()))?,
                    );
                }
                let block = draft.block;
                let created = store
                    .create_cycle(draft)
                    .await
                    .map_err(|e| StartError::Store(e.to_string()))?;
                Ok((snapshot, block, created))
            }
            .into_actor(act)
            .map(|started, act, ctx| act.cycle_created(started, ctx))
        }));
    }

    fn cycle_created(
        &mut self,
        started: Result<(MinerSnapshot, i64, CreatedCycle), StartError>,
        ctx: &mut Context<Self>,
    ) {
        if matches!(self.phase, Phase::Stopping) {
            return;
        }
        let (snapshot, block, created) = match started {
            Ok(s) => s,
            Err(StartError::Registry(e)) => {
                let retry = self.config.eval_interval.min(Duration::from_secs(60));
                tracing::error!(event = "registry_read_failed", error = %e, retry_in_s = retry.as_secs());
                self.registry_error = Some(e);
                return self.schedule_next(retry, ctx);
            }
            Err(StartError::Store(e)) => {
                tracing::error!(event = "cycle_failed", error = %e);
                return self.schedule_next(self.config.eval_interval, ctx);
            }
        };
        self.registry_error = None;
        if snapshot.block.is_some() {
            self.current_block = snapshot.block;
        }
        let count = |s: MinerStatus| snapshot.miners.iter().filter(|m| m.status == s).count();
        tracing::info!(
            event = "cycle_started",
            cycle_id = created.id,
            block,
            miners_active = created.active,
            miners_inactive = count(MinerStatus::Inactive),
            miners_invalid = count(MinerStatus::InvalidCommitment)
        );
        if created.active == 0 {
            tracing::warn!(
                event = "cycle_failed",
                cycle_id = created.id,
                error = "no evaluable miners"
            );
            return self.schedule_next(self.config.eval_interval, ctx);
        }
        tracing::info!(
            event = "tasks_created",
            cycle_id = created.id,
            count = created.tasks
        );
        let id = created.id;
        let timeout = ctx.run_later(self.config.cycle_timeout, move |act, ctx| {
            act.timed_out(id, ctx)
        });
        self.phase = Phase::Running(Running {
            id,
            block,
            started: Instant::now(),
            miners: snapshot.miners,
            timeout,
        });
        self.peers.queue.do_send(CycleEnqueued {
            cycle_id: id,
            tasks: created.tasks,
            finished: ctx.address().recipient(),
        });
        self.write_heartbeat(ctx);
    }

    fn timed_out(&mut self, cycle_id: i32, ctx: &mut Context<Self>) {
        if !matches!(&self.phase, Phase::Running(r) if r.id == cycle_id) {
            return;
        }
        tracing::warn!(event = "cycle_timeout", cycle_id);
        self.peers.queue.do_send(CancelCycle { cycle_id });
        self.fail_then_continue(cycle_id, TIMEOUT_ERROR.to_string(), ctx);
    }

    /// Fails cycle `cycle_id` with `error` (its open tasks cancelled), then waits for the next one.
    fn fail_then_continue(&mut self, cycle_id: i32, error: String, ctx: &mut Context<Self>) {
        self.phase = Phase::Finishing(cycle_id);
        let store = self.store.clone();
        let failing = async move {
            let task_error = format!("Cycle cancelled: {error}");
            if let Err(e) = store.fail_cycle(cycle_id, error.clone(), task_error).await {
                tracing::error!(cycle_id, error = %e, "could not fail the cycle");
            }
            tracing::warn!(event = "cycle_failed", cycle_id, error = %error);
        };
        ctx.spawn(
            failing
                .into_actor(self)
                .map(|_, act, ctx| act.schedule_next(act.config.eval_interval, ctx)),
        );
    }
}

/// The block of a miners-file cycle: grows like chain blocks (12 s) and strictly increases.
fn synthetic_block(last: Option<i64>) -> i64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs() as i64;
    (now / 12).max(last.map_or(0, |b| b + 1))
}

impl Actor for CycleActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.beat(ctx);
        ctx.run_interval(self.config.heartbeat_interval, |act, ctx| act.beat(ctx));
        ctx.notify(Tick);
    }
}

impl Handler<Tick> for CycleActor {
    type Result = ();

    fn handle(&mut self, _: Tick, ctx: &mut Context<Self>) {
        if matches!(self.phase, Phase::Idle) {
            self.start_cycle(ctx);
        }
    }
}

impl Handler<CycleFinished> for CycleActor {
    type Result = ();

    fn handle(&mut self, msg: CycleFinished, ctx: &mut Context<Self>) {
        let Phase::Running(running) = std::mem::replace(&mut self.phase, Phase::Idle) else {
            return;
        };
        if running.id != msg.cycle_id {
            self.phase = Phase::Running(running);
            return;
        }
        ctx.cancel_future(running.timeout);
        self.phase = Phase::Finishing(running.id);
        let scoring = self.peers.weights.send(ComputeWeights {
            cycle_id: running.id,
            block: running.block,
            miners: running.miners,
        });
        let (cycle_id, started) = (running.id, running.started);
        ctx.spawn(scoring.into_actor(self).map(move |scored, act, ctx| {
            if matches!(act.phase, Phase::Stopping) {
                return;
            }
            match scored.map_err(|e| e.to_string()).and_then(|r| r) {
                Ok(summary) => {
                    tracing::info!(event = "cycle_completed", cycle_id,
                        duration_s = started.elapsed().as_secs_f64(), miners_scored = summary.miners_scored, frontier = summary.frontier,
                        top_weights = ?summary.top, "cycle completed");
                    act.schedule_next(act.config.eval_interval, ctx);
                }
                Err(e) => act.fail_then_continue(cycle_id, e, ctx),
            }
        }));
    }
}

impl Handler<Shutdown> for CycleActor {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, _: Shutdown, _: &mut Context<Self>) -> Self::Result {
        let running = self.running_id();
        self.phase = Phase::Stopping;
        self.next_cycle_at = None;
        let store = self.store.clone();
        let row = self.heartbeat_row();
        let stopping = async move {
            if let Some(id) = running {
                let cancelled = store
                    .fail_cycle(
                        id,
                        SHUTDOWN_ERROR.into(),
                        "Cycle cancelled on scheduler shutdown".into(),
                    )
                    .await;
                if let Err(e) = cancelled {
                    tracing::error!(cycle_id = id, error = %e, "could not cancel the running cycle");
                }
                tracing::info!(
                    event = "cycle_failed",
                    cycle_id = id,
                    error = SHUTDOWN_ERROR
                );
            }
            if let Err(e) = store.write_heartbeat(row).await {
                tracing::warn!(error = %e, "heartbeat not written");
            }
        };
        Box::pin(
            stopping
                .into_actor(self)
                .map(|_, act, ctx| act.finish(SchedulerExit::Shutdown, ctx)),
        )
    }
}
