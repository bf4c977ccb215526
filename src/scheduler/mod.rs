//! The scheduler (spec: scheduler.md): reads the miner set, creates one task per (miner, env,
//! episode), waits for executors, scores the results and stores the weights — one cycle after another.
//!
//! Design note: the spec leaves the split across actors open as long as rows, timings and log events
//! are the same (scheduler.md, introduction). A cycle is one sequential procedure, so it runs as one
//! async loop; the heartbeat (with its lock check) and shutdown are `select!`ed against it in the same
//! task, which makes "lost lock → stop at once, write nothing more" a plain early return.

pub mod miners_file;

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use diesel_async::pooled_connection::deadpool::Object;
use diesel_async::AsyncPgConnection;
use kinitro_actors::registry::{classify, ClassifiedMiner, MinerEntry, MinerStatus};
use kinitro_actors::scoring::aggregate::aggregate;
use kinitro_actors::scoring::{score, MinerRates, ScoringParams};
use kinitro_actors::{envs, seeds};
use serde_json::json;

use crate::chain::client::ChainSource;
use crate::config::scheduler::SchedulerConfig;
use crate::db::cycles::{self, CycleResult, Heartbeat, NewCycle, NewTask, RegistrySource};
use crate::db::lock::SchedulerLock;
use crate::db::{tasks, DbError, DbPool};

/// Exit message when the lock connection is lost (database.md 7).
pub const LOCK_LOST: &str = "lost the scheduler lock (database connection dropped)";
/// Pauses between registry read attempts (scheduler.md 3, step 1).
const REGISTRY_RETRIES: [u64; 3] = [2, 5, 10];

/// Where the miners come from.
pub enum MinerSource {
    /// A TOML or JSON miners file, re-read every cycle.
    File(PathBuf),
    /// The chain (`network`, `netuid`), read at the finalized block. The heartbeat has its own
    /// connection: it runs while the cycle future is paused, so it must never wait for the cycle's.
    Chain {
        /// Registry reads of the cycles.
        cycles: tokio::sync::Mutex<ChainSource>,
        /// Finalized-block reads of the heartbeat.
        heartbeat: tokio::sync::Mutex<ChainSource>,
    },
}

impl MinerSource {
    fn kind(&self) -> RegistrySource {
        match self {
            Self::File(_) => RegistrySource::File,
            Self::Chain { .. } => RegistrySource::Chain,
        }
    }
}

/// One registry read: the block it was read at (`None`: synthetic) and the entries.
struct RegistryRead {
    block: Option<i64>,
    entries: Vec<MinerEntry>,
}

/// What the heartbeat reports, shared by the cycle loop and the heartbeat.
#[derive(Debug, Default)]
struct Beat {
    current_block: Option<i64>,
    registry_error: Option<String>,
    next_cycle_at: Option<chrono::DateTime<Utc>>,
    running: Option<i32>,
}

/// A prepared scheduler: configuration checked, lock held, restart cleanup done, secret loaded.
pub struct Scheduler {
    config: SchedulerConfig,
    envs: Vec<String>,
    pool: DbPool,
    secret: Vec<u8>,
    source: MinerSource,
    private_key: Option<[u8; 32]>,
    lock: tokio::sync::Mutex<Option<SchedulerLock>>,
    beat: Mutex<Beat>,
    on_weights: Option<Arc<dyn Fn() + Send + Sync>>,
    metrics: Option<Arc<crate::api::metrics::Metrics>>,
}

fn load_private_key(config: &SchedulerConfig) -> Result<Option<[u8; 32]>, String> {
    let hex_text = match (
        &config.backend_private_key,
        &config.backend_private_key_file,
    ) {
        (Some(k), _) => k.clone(),
        (None, Some(path)) => std::fs::read_to_string(path)
            .map_err(|e| {
                format!(
                    "cannot read the backend private key file {}: {e}",
                    path.display()
                )
            })?
            .trim()
            .to_string(),
        (None, None) => return Ok(None),
    };
    let bytes = hex::decode(&hex_text).map_err(|e| format!("Invalid hex key: {e}"))?;
    let key: [u8; 32] = bytes
        .as_slice()
        .try_into()
        .map_err(|_| format!("Invalid private key length: {} (expected 32)", bytes.len()))?;
    Ok(Some(key))
}

async fn conn(pool: &DbPool) -> Result<Object<AsyncPgConnection>, DbError> {
    pool.get()
        .await
        .map_err(|e| DbError::Other(format!("database unavailable: {e}")))
}

impl Scheduler {
    /// Start-up (scheduler.md 1): validate, resolve the env list, take the lock, clean up, load the
    /// secret. Migrations must already be applied. Every error here is fatal.
    pub async fn prepare(config: SchedulerConfig, pool: DbPool) -> Result<Self, String> {
        if config.eval_interval_seconds < 1 {
            return Err("eval_interval_seconds must be at least 1".into());
        }
        let envs = envs::resolve(config.env_ids.as_deref(), config.env_families.as_deref())?;
        let private_key = load_private_key(&config)?;
        if private_key.is_none() {
            tracing::warn!("no backend private key: encrypted commitments will be inactive");
        }
        let source = match &config.miners_file {
            Some(path) if path.is_file() => MinerSource::File(path.clone()),
            Some(path) => {
                return Err(format!(
                    "miners file error: {}: file not found",
                    path.display()
                ))
            }
            None => {
                let chain = || {
                    ChainSource::new(
                        &config.network,
                        config.netuid,
                        config.chain_timeout.duration(),
                    )
                };
                MinerSource::Chain {
                    cycles: tokio::sync::Mutex::new(chain()?),
                    heartbeat: tokio::sync::Mutex::new(chain()?),
                }
            }
        };
        let url = config
            .database_url
            .clone()
            .ok_or("the scheduler needs a database URL")?;
        let lock = SchedulerLock::acquire(&url)
            .await
            .map_err(|e| e.to_string())?;
        let mut c = conn(&pool).await.map_err(|e| e.to_string())?;
        let (cycles, cancelled) = cycles::restart_cleanup(&mut c)
            .await
            .map_err(|e| e.to_string())?;
        if cycles > 0 {
            tracing::warn!(
                cycles,
                tasks = cancelled,
                "restart cleanup failed incomplete cycles"
            );
        }
        let secret = match &config.seed_secret {
            Some(s) => s.clone(),
            None => cycles::seed_secret(&mut c)
                .await
                .map_err(|e| e.to_string())?,
        };
        drop(c);
        match &source {
            MinerSource::File(path) => tracing::info!(event = "scheduler_started", source = "file",
                miners_file = %path.display(), env_ids = ?envs, episodes_per_env = config.episodes_per_env, "scheduler started"),
            MinerSource::Chain { .. } => {
                tracing::info!(event = "scheduler_started", source = "chain", network = %config.network,
                netuid = config.netuid, env_ids = ?envs, episodes_per_env = config.episodes_per_env, "scheduler started")
            }
        }
        Ok(Self {
            config,
            envs,
            pool,
            secret,
            source,
            private_key,
            lock: tokio::sync::Mutex::new(Some(lock)),
            beat: Mutex::default(),
            on_weights: None,
            metrics: None,
        })
    }

    /// Calls `f` whenever a cycle has stored new weights (the API's cache in `kinitro run`).
    pub fn on_new_weights(mut self, f: Arc<dyn Fn() + Send + Sync>) -> Self {
        self.on_weights = Some(f);
        self
    }

    /// Counts this scheduler's task-queue events (stale reaping) in `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<crate::api::metrics::Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Runs cycles until `shutdown` resolves (graceful: the running cycle fails with
    /// `Cancelled on scheduler shutdown`) or the lock is lost (`Err(LOCK_LOST)`).
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), String> {
        let cycles = self.cycle_loop();
        tokio::pin!(cycles);
        tokio::pin!(shutdown);
        let mut beat = tokio::time::interval(Duration::from_secs(u64::from(
            self.config.heartbeat_interval_seconds,
        )));
        loop {
            tokio::select! {
                _ = &mut shutdown => {
                    self.shut_down().await;
                    if let Some(lock) = self.lock.lock().await.take() {
                        lock.release().await;
                    }
                    return Ok(());
                }
                _ = beat.tick() => {
                    let held = match self.lock.lock().await.as_mut() {
                        Some(lock) => lock.held().await,
                        None => false,
                    };
                    if !held {
                        tracing::error!(event = "scheduler_lock_lost", error = LOCK_LOST);
                        return Err(LOCK_LOST.into());
                    }
                    self.heartbeat().await;
                }
                () = &mut cycles => unreachable!("the cycle loop never ends"),
            }
        }
    }

    async fn shut_down(&self) {
        let running = self.beat.lock().unwrap().running.take();
        if let Some(id) = running {
            match conn(&self.pool).await {
                Ok(mut c) => {
                    if let Err(e) = cycles::fail_cycle(
                        &mut c,
                        id,
                        "Cancelled on scheduler shutdown",
                        "Cycle cancelled on scheduler shutdown",
                    )
                    .await
                    {
                        tracing::error!(cycle_id = id, error = %e, "could not cancel the running cycle");
                    }
                }
                Err(e) => {
                    tracing::error!(cycle_id = id, error = %e, "could not cancel the running cycle")
                }
            }
            tracing::info!(
                event = "cycle_failed",
                cycle_id = id,
                error = "Cancelled on scheduler shutdown"
            );
        }
        self.beat.lock().unwrap().next_cycle_at = None;
        self.heartbeat().await;
    }

    async fn heartbeat(&self) {
        match &self.source {
            // Miners-file source: the clock part of the synthetic block (scheduler.md 2).
            MinerSource::File(_) => {
                self.beat.lock().unwrap().current_block = Some(Utc::now().timestamp() / 12)
            }
            MinerSource::Chain { heartbeat, .. } => {
                let read = heartbeat.lock().await.finalized_block().await;
                let mut b = self.beat.lock().unwrap();
                match read {
                    Ok(block) => {
                        b.current_block = Some(block as i64);
                        b.registry_error = None;
                    }
                    Err(e) => {
                        tracing::warn!(event = "heartbeat_chain_error", error = %e);
                        b.registry_error = Some(e);
                    }
                }
            }
        }
        let h = {
            let b = self.beat.lock().unwrap();
            Heartbeat {
                current_block: b.current_block,
                chain_ok: b.registry_error.is_none(),
                chain_error: b.registry_error.clone(),
                source: self.source.kind(),
                env_ids: self.envs.clone(),
                eval_interval_seconds: self.config.eval_interval_seconds.min(i32::MAX as u64)
                    as i32,
                heartbeat_interval_seconds: self.config.heartbeat_interval_seconds as i32,
                next_cycle_at: b.next_cycle_at.filter(|_| b.running.is_none()),
            }
        };
        let written = match conn(&self.pool).await {
            Ok(mut c) => cycles::write_heartbeat(&mut c, &h).await,
            Err(e) => Err(e),
        };
        if let Err(e) = written {
            tracing::warn!(error = %e, "heartbeat not written");
        }
    }

    async fn read_registry_once(&self) -> Result<RegistryRead, String> {
        match &self.source {
            MinerSource::File(path) => Ok(RegistryRead {
                block: None,
                entries: miners_file::read(path)?,
            }),
            MinerSource::Chain { cycles, .. } => {
                let snap = cycles.lock().await.snapshot().await?;
                Ok(RegistryRead {
                    block: Some(snap.block as i64),
                    entries: snap.entries,
                })
            }
        }
    }

    async fn read_registry(&self) -> Result<RegistryRead, String> {
        let mut last = String::new();
        for (attempt, pause) in std::iter::once(0).chain(REGISTRY_RETRIES).enumerate() {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_secs(pause)).await;
            }
            match self.read_registry_once().await {
                Ok(read) => return Ok(read),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    fn decrypt(&self) -> Option<impl Fn(&str) -> Result<String, String> + '_> {
        self.private_key
            .as_ref()
            .map(|key| move |blob: &str| crate::chain::crypto::decrypt_deployment_id(key, blob))
    }

    fn make_tasks(&self, cycle_id: i32, miners: &[ClassifiedMiner]) -> Vec<NewTask> {
        let mut active: Vec<&ClassifiedMiner> = miners
            .iter()
            .filter(|m| m.status == MinerStatus::Active)
            .collect();
        active.sort_by_key(|m| m.entry.uid);
        let mut out = Vec::new();
        for m in active {
            for env in &self.envs {
                for _ in 0..self.config.episodes_per_env {
                    let task_uuid = uuid::Uuid::new_v4().to_string();
                    out.push(NewTask {
                        seed: seeds::task_seed(&task_uuid),
                        sim_seed: seeds::sim_seed(&self.secret, &task_uuid) as i64,
                        task_uuid,
                        cycle_id,
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

    async fn cycle_loop(&self) {
        loop {
            let pause = match self.one_cycle().await {
                CycleEnd::Finished => Duration::from_secs(self.config.eval_interval_seconds),
                CycleEnd::RegistryFailed => {
                    Duration::from_secs(self.config.eval_interval_seconds.min(60))
                }
            };
            {
                let mut b = self.beat.lock().unwrap();
                b.running = None;
                b.next_cycle_at =
                    Some(Utc::now() + chrono::Duration::from_std(pause).unwrap_or_default());
            }
            self.heartbeat().await;
            tokio::time::sleep(pause).await;
        }
    }

    async fn one_cycle(&self) -> CycleEnd {
        let read = match self.read_registry().await {
            Ok(r) => {
                let mut b = self.beat.lock().unwrap();
                b.registry_error = None;
                if r.block.is_some() {
                    b.current_block = r.block;
                }
                r
            }
            Err(e) => {
                tracing::error!(event = "registry_read_failed", error = %e, retry_in_s = self.config.eval_interval_seconds.min(60));
                self.beat.lock().unwrap().registry_error = Some(e);
                return CycleEnd::RegistryFailed;
            }
        };
        let decrypt = self.decrypt();
        let miners: Vec<ClassifiedMiner> = read
            .entries
            .into_iter()
            .map(|e| {
                classify(
                    e,
                    decrypt
                        .as_ref()
                        .map(|d| d as &dyn Fn(&str) -> Result<String, String>),
                )
            })
            .collect();
        if let Err(e) = self.evaluate(read.block, &miners).await {
            tracing::error!(event = "cycle_failed", error = %e);
        }
        CycleEnd::Finished
    }

    /// Steps 3–7 of scheduler.md 3. An error after the cycle row exists fails the cycle.
    async fn evaluate(
        &self,
        chain_block: Option<i64>,
        miners: &[ClassifiedMiner],
    ) -> Result<(), DbError> {
        let mut c = conn(&self.pool).await?;
        // Miners-file source: a synthetic block that grows like chain blocks and strictly increases.
        let block = match chain_block {
            Some(b) => b,
            None => (Utc::now().timestamp() / 12)
                .max(cycles::last_block(&mut c).await?.map_or(0, |b| b + 1)),
        };
        let new = NewCycle {
            block,
            env_ids: &self.envs,
            episodes_per_env: self.config.episodes_per_env as i32,
            source: self.source.kind(),
            miners,
        };
        let created = cycles::create_cycle(&mut c, &new, |id| self.make_tasks(id, miners)).await?;
        let count = |s: MinerStatus| miners.iter().filter(|m| m.status == s).count();
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
            return Ok(());
        }
        tracing::info!(
            event = "tasks_created",
            cycle_id = created.id,
            count = created.tasks
        );
        self.beat.lock().unwrap().running = Some(created.id);
        drop(c);
        self.heartbeat().await;
        if let Err(e) = self.wait_and_score(created.id, block, miners).await {
            fail(&mut *conn(&self.pool).await?, created.id, &e.to_string()).await?;
        }
        Ok(())
    }

    async fn wait_and_score(
        &self,
        cycle_id: i32,
        block: i64,
        miners: &[ClassifiedMiner],
    ) -> Result<(), DbError> {
        let created = Instant::now();
        let mut last_progress: Option<Instant> = None;
        loop {
            let mut c = conn(&self.pool).await?;
            if cycles::open_tasks(&mut c, cycle_id).await? == 0 {
                break;
            }
            let (requeued, given_up) =
                tasks::reap_stale(&mut c, self.config.task_stale_threshold.0).await?;
            if requeued + given_up > 0 {
                tracing::info!(event = "stale_tasks_reaped", requeued, given_up);
                if let Some(m) = &self.metrics {
                    m.task_event("reaped", (requeued + given_up) as u64);
                    m.task_event("given_up", given_up as u64);
                }
            }
            if last_progress.is_none_or(|t| t.elapsed() >= Duration::from_secs(60)) {
                let p = cycles::progress(&mut c, cycle_id).await?;
                let n = |s: &str| p.iter().find(|(k, _)| k == s).map_or(0, |(_, v)| *v);
                tracing::info!(
                    event = "cycle_progress",
                    cycle_id,
                    pending = n("pending"),
                    assigned = n("assigned"),
                    completed = n("completed"),
                    failed = n("failed")
                );
                last_progress = Some(Instant::now());
            }
            if created.elapsed() > self.config.cycle_timeout.duration() {
                tracing::warn!(event = "cycle_timeout", cycle_id);
                return fail(&mut c, cycle_id, "Cycle timed out waiting for tasks").await;
            }
            drop(c);
            tokio::time::sleep(self.config.poll_interval.duration()).await;
        }
        self.score_and_store(cycle_id, block, miners).await
    }

    async fn score_and_store(
        &self,
        cycle_id: i32,
        block: i64,
        miners: &[ClassifiedMiner],
    ) -> Result<(), DbError> {
        let mut c = conn(&self.pool).await?;
        let stats: Vec<_> = aggregate(&cycles::outcomes(&mut c, cycle_id).await?)
            .into_iter()
            .filter(|s| s.counted())
            .collect();
        if stats.is_empty() {
            return fail(&mut c, cycle_id, "no countable results").await;
        }
        let snapshot: BTreeMap<u32, &ClassifiedMiner> =
            miners.iter().map(|m| (u32::from(m.entry.uid), m)).collect();
        let mut rates: BTreeMap<u32, Vec<Option<f64>>> = BTreeMap::new();
        for s in &stats {
            let slot = self.envs.iter().position(|e| *e == s.env_id);
            let row = rates
                .entry(s.uid)
                .or_insert_with(|| vec![None; self.envs.len()]);
            if let Some(i) = slot {
                row[i] = Some(s.success_rate);
            }
        }
        let input: Vec<MinerRates> = rates
            .into_iter()
            .map(|(uid, rates)| MinerRates {
                uid,
                block: snapshot.get(&uid).and_then(|m| m.entry.commit_block),
                rates,
            })
            .collect();
        let params = ScoringParams {
            episodes_per_env: i64::from(self.config.episodes_per_env),
            temperature: self.config.pareto_temperature,
            threshold_z: self.config.threshold_z_score,
            threshold_min_gap: self.config.threshold_min_gap,
            threshold_max_gap: self.config.threshold_max_gap,
        };
        let outcome = score(self.envs.len(), &input, &params)
            .map_err(|e| DbError::Other(format!("scoring failed: {e}")))?;
        let weights: BTreeMap<String, f64> = outcome
            .uids
            .iter()
            .zip(&outcome.weights)
            .map(|(u, w)| (u.to_string(), *w))
            .collect();
        let hotkeys: BTreeMap<u32, String> = snapshot
            .iter()
            .map(|(u, m)| (*u, m.entry.hotkey.clone()))
            .collect();
        cycles::complete_cycle(
            &mut c,
            &CycleResult {
                cycle_id,
                block,
                scores: &stats,
                hotkeys: &hotkeys,
                weights: json!(weights),
                weights_u16: json!(outcome.weights_u16),
                frontier: outcome.pareto_frontier.clone(),
            },
        )
        .await?;
        if let Some(f) = &self.on_weights {
            f();
        }
        let mut top: Vec<(u32, f64)> = outcome
            .uids
            .iter()
            .copied()
            .zip(outcome.weights.iter().copied())
            .collect();
        top.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        top.truncate(5);
        tracing::info!(event = "cycle_completed", cycle_id, miners_scored = outcome.uids.len(),
            frontier = outcome.pareto_frontier.len(), top_weights = ?top, "cycle completed");
        Ok(())
    }
}

/// Fails a running cycle with `message`, cancelling its unfinished tasks (database.md 4.1).
async fn fail(c: &mut AsyncPgConnection, cycle_id: i32, message: &str) -> Result<(), DbError> {
    cycles::fail_cycle(c, cycle_id, message, &format!("Cycle cancelled: {message}")).await?;
    tracing::warn!(event = "cycle_failed", cycle_id, error = message);
    Ok(())
}

enum CycleEnd {
    Finished,
    RegistryFailed,
}
