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
use crate::ports::{
    CreatedCycle, CycleDraft, FailedVerification, Heartbeat, RegistrySource, Store, TaskDraft,
    VerificationPolicy,
};
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
    /// What failed verifications change (docs/verification.md §4).
    pub verification_policy: VerificationPolicy,
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

/// Applies the `exclude` policy to a snapshot (docs/verification.md §4): an active miner whose
/// current revision's latest verification failed fewer than `cycles` cycles ago becomes
/// `excluded` with the failure as its reason; one whose exclusion has run its course stays active
/// and is returned, so that its tasks are marked for verification.
pub fn apply_exclusions(
    miners: &mut [ClassifiedMiner],
    failed: &[FailedVerification],
    cycles: u32,
) -> Vec<u16> {
    let mut verify = Vec::new();
    for m in miners
        .iter_mut()
        .filter(|m| m.status == MinerStatus::Active)
    {
        let Some(f) = failed.iter().find(|f| {
            f.hotkey == m.entry.hotkey && Some(f.revision.as_str()) == m.revision.as_deref()
        }) else {
            continue;
        };
        if f.cycles_since < i64::from(cycles) {
            m.status = MinerStatus::Excluded;
            m.status_reason = Some(f.reason.clone());
        } else {
            verify.push(m.entry.uid);
        }
    }
    verify
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

    /// The cycle's tasks; the first task of each miner in `verify` is marked for verification.
    fn tasks_for(
        config: &CycleConfig,
        miners: &[ClassifiedMiner],
        verify: &[u16],
    ) -> Vec<TaskDraft> {
        let mut active: Vec<&ClassifiedMiner> = miners
            .iter()
            .filter(|m| m.status == MinerStatus::Active)
            .collect();
        active.sort_by_key(|m| m.entry.uid);
        let mut out: Vec<TaskDraft> = Vec::new();
        for m in active {
            let first = out.len();
            for env in &config.env_ids {
                for _ in 0..config.episodes_per_env {
                    let task_uuid = uuid::Uuid::new_v4().to_string();
                    out.push(TaskDraft {
                        seed: seeds::task_seed(&task_uuid),
                        sim_seed: seeds::sim_seed(&config.seed_secret, &task_uuid) as i64,
                        task_uuid,
                        miner_uid: i32::from(m.entry.uid),
                        miner_hotkey: m.entry.hotkey.clone(),
                        miner_endpoint: m.endpoint.clone().unwrap_or_default(),
                        miner_repo: m.repo.clone(),
                        miner_revision: m.revision.clone(),
                        env_id: env.clone(),
                        max_attempts: config.task_max_attempts as i32,
                        verify: false,
                    });
                }
            }
            // One verification per re-admission is enough: every task marked would start a
            // sandbox run per episode (docs/verification.md §4).
            if verify.contains(&m.entry.uid) {
                if let Some(t) = out.get_mut(first) {
                    t.verify = true;
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
            let config = act.config.clone();
            async move {
                let mut snapshot = read?;
                let verify = match config.verification_policy {
                    VerificationPolicy::Log => Vec::new(),
                    VerificationPolicy::Exclude { cycles } => {
                        let pairs = snapshot
                            .miners
                            .iter()
                            .filter(|m| m.status == MinerStatus::Active)
                            .filter_map(|m| Some((m.entry.hotkey.clone(), m.revision.clone()?)))
                            .collect();
                        let failed = store
                            .failed_verifications(pairs)
                            .await
                            .map_err(|e| StartError::Store(e.to_string()))?;
                        apply_exclusions(&mut snapshot.miners, &failed, cycles)
                    }
                };
                let mut draft = CycleDraft {
                    block: snapshot.block.unwrap_or(0),
                    env_ids: config.env_ids.clone(),
                    episodes_per_env: config.episodes_per_env as i32,
                    source: config.source,
                    tasks: Self::tasks_for(&config, &snapshot.miners, &verify),
                    miners: snapshot.miners.clone(),
                };
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
            miners_invalid = count(MinerStatus::InvalidCommitment),
            miners_excluded = count(MinerStatus::Excluded)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::MinerEntry;

    fn miner(uid: u16, revision: &str) -> ClassifiedMiner {
        ClassifiedMiner {
            entry: MinerEntry {
                uid,
                hotkey: format!("hk{uid}"),
                commitment: None,
                endpoint_override: Some("http://m".into()),
                commit_block: Some(1),
                repo: Some("o/r".into()),
                revision: Some(revision.into()),
            },
            status: MinerStatus::Active,
            status_reason: None,
            endpoint: Some("http://m".into()),
            encrypted: false,
            repo: Some("o/r".into()),
            revision: Some(revision.into()),
        }
    }

    fn failed(uid: u16, revision: &str, cycles_since: i64) -> FailedVerification {
        FailedVerification {
            hotkey: format!("hk{uid}"),
            revision: revision.into(),
            reason: "verification mismatch (match 0.42)".into(),
            cycles_since,
        }
    }

    #[test]
    fn a_failed_revision_is_held_out_for_its_cycles_then_marked_for_verification() {
        let mut miners = vec![miner(1, "a"), miner(2, "a"), miner(3, "b"), miner(4, "a")];
        miners[3].status = MinerStatus::Inactive;
        let failures = [
            failed(1, "a", 0),
            failed(2, "a", 3),
            // uid 3 failed at an older revision: its new one is not held out.
            failed(3, "a", 0),
            failed(4, "a", 0),
        ];
        let verify = apply_exclusions(&mut miners, &failures, 3);
        assert_eq!(miners[0].status, MinerStatus::Excluded);
        assert_eq!(
            miners[0].status_reason.as_deref(),
            Some("verification mismatch (match 0.42)")
        );
        assert_eq!(miners[1].status, MinerStatus::Active);
        assert_eq!(miners[2].status, MinerStatus::Active);
        assert_eq!(
            miners[3].status,
            MinerStatus::Inactive,
            "only active miners change"
        );
        assert_eq!(verify, vec![2]);
        let config = CycleConfig {
            env_ids: vec!["e1".into(), "e2".into()],
            episodes_per_env: 2,
            eval_interval: Duration::from_secs(1),
            cycle_timeout: Duration::from_secs(1),
            heartbeat_interval: Duration::from_secs(1),
            task_max_attempts: 3,
            seed_secret: vec![1; 32],
            source: RegistrySource::File,
            verification_policy: VerificationPolicy::Exclude { cycles: 3 },
        };
        let tasks = CycleActor::tasks_for(&config, &miners, &verify);
        assert!(tasks.iter().all(|t| t.miner_uid != 1), "excluded: no tasks");
        let marked: Vec<i32> = tasks
            .iter()
            .filter(|t| t.verify)
            .map(|t| t.miner_uid)
            .collect();
        assert_eq!(marked, vec![2], "one marked task for the re-admitted miner");
        assert_eq!(tasks.iter().filter(|t| t.miner_uid == 2).count(), 4);
    }
}
