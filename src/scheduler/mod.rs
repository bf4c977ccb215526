//! The scheduler (docs/scheduler.md): reads the miner set, creates one task per (miner, env,
//! episode), waits for executors, scores the results and stores the weights — one cycle after another.
//!
//! Start-up (validation, the advisory lock, the restart cleanup, the seed secret) happens here; the
//! cycles themselves run in the core's actors (`kinitro_actors`: CycleActor, MinerRegistryActor,
//! TaskQueueActor, WeightsActor) on this crate's ports: [`PgStore`] and the miners-file or chain
//! [`sources`].

pub mod miners_file;
pub mod sources;

use std::future::Future;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use kinitro_actors::cycle_actor::{CycleActor, CycleConfig, CyclePeers, SchedulerExit};
use kinitro_actors::envs;
use kinitro_actors::messages::Shutdown;
use kinitro_actors::ports::MinerSource;
use kinitro_actors::registry_actor::MinerRegistryActor;
use kinitro_actors::scoring::ScoringParams;
use kinitro_actors::task_queue_actor::{QueueConfig, TaskQueueActor};
use kinitro_actors::weights_actor::WeightsActor;
use tokio::sync::{oneshot, Notify};

pub use kinitro_actors::cycle_actor::LOCK_LOST;

use crate::chain::client::ChainSource;
use crate::config::scheduler::SchedulerConfig;
use crate::db::lock::SchedulerLock;
use crate::db::store::PgStore;
use crate::db::{cycles, DbPool};
use crate::metrics::Metrics;
use sources::{ChainMiners, FileSource};

/// Pauses between registry read attempts (docs/scheduler.md §3, step 1).
const REGISTRY_RETRIES: [u64; 3] = [2, 5, 10];
/// Pause between commit attempts of a local result while the database is unreachable.
const COMMIT_RETRY: Duration = Duration::from_secs(1);

/// A prepared scheduler: configuration checked, lock held, restart cleanup done, secret loaded.
pub struct Scheduler {
    config: SchedulerConfig,
    envs: Vec<String>,
    store: Rc<PgStore>,
    secret: Vec<u8>,
    source: Rc<dyn MinerSource>,
    private_key: Option<[u8; 32]>,
    on_weights: Option<Arc<dyn Fn() + Send + Sync>>,
    metrics: Option<Arc<Metrics>>,
}

/// A started scheduler: its actors run on the current arbiter.
pub struct RunningScheduler {
    cycle: Addr<CycleActor>,
    /// The task queue (local pools claim and report through it in `kinitro run`).
    pub queue: Addr<TaskQueueActor>,
    /// Woken when a cycle's tasks are enqueued.
    pub work_available: Arc<Notify>,
    store: Rc<PgStore>,
    exit: oneshot::Receiver<SchedulerExit>,
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

impl Scheduler {
    /// Start-up (docs/scheduler.md §1): validate, resolve the env list, take the lock, clean up,
    /// load the secret. Migrations must already be applied. Every error here is fatal.
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
            Some(path) if path.is_file() => {
                Rc::new(FileSource(path.clone())) as Rc<dyn MinerSource>
            }
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
                Rc::new(ChainMiners {
                    cycles: tokio::sync::Mutex::new(chain()?),
                    heartbeat: tokio::sync::Mutex::new(chain()?),
                })
            }
        };
        let url = config
            .database_url
            .clone()
            .ok_or("the scheduler needs a database URL")?;
        let lock = SchedulerLock::acquire(&url)
            .await
            .map_err(|e| e.to_string())?;
        let mut c = pool
            .get()
            .await
            .map_err(|e| format!("database unavailable: {e}"))?;
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
        match &config.miners_file {
            Some(path) => tracing::info!(event = "scheduler_started", source = "file",
                miners_file = %path.display(), env_ids = ?envs, episodes_per_env = config.episodes_per_env, "scheduler started"),
            None => {
                tracing::info!(event = "scheduler_started", source = "chain", network = %config.network,
                netuid = config.netuid, env_ids = ?envs, episodes_per_env = config.episodes_per_env, "scheduler started")
            }
        }
        Ok(Self {
            config,
            envs,
            store: Rc::new(PgStore::new(pool, Some(lock))),
            secret,
            source,
            private_key,
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
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Starts the actors on the current arbiter; the first cycle begins at once.
    pub fn start(self) -> RunningScheduler {
        let c = &self.config;
        let decrypt = self.private_key.map(|key| {
            Box::new(move |blob: &str| crate::chain::crypto::decrypt_deployment_id(&key, blob))
                as kinitro_actors::registry_actor::Decrypt
        });
        let retries = REGISTRY_RETRIES.map(Duration::from_secs).to_vec();
        let registry = MinerRegistryActor::new(self.source.clone(), decrypt, retries).start();
        let work_available = Arc::new(Notify::new());
        let mut queue = TaskQueueActor::new(
            self.store.clone(),
            QueueConfig {
                poll_interval: c.poll_interval.duration(),
                stale_threshold: Duration::from_secs_f64(c.task_stale_threshold.0.max(0.0)),
                progress_interval: Duration::from_secs(60),
                commit_retry_pause: COMMIT_RETRY,
                commit_attempts: 60,
            },
        )
        .with_wakeup(work_available.clone());
        if let Some(m) = self.metrics.clone() {
            queue = queue.with_observer(Box::new(move |event, n| m.task_event(event, n)));
        }
        let queue = queue.start();
        let params = ScoringParams {
            episodes_per_env: i64::from(c.episodes_per_env),
            temperature: c.pareto_temperature,
            threshold_z: c.threshold_z_score,
            threshold_min_gap: c.threshold_min_gap,
            threshold_max_gap: c.threshold_max_gap,
        };
        let mut weights = WeightsActor::new(self.store.clone(), self.envs.clone(), params);
        if let Some(f) = self.on_weights.clone() {
            weights = weights.on_new_weights(Box::new(move || f()));
        }
        let weights = weights.start();
        let (tx, exit) = oneshot::channel();
        let cycle = CycleActor::new(
            self.store.clone(),
            CyclePeers {
                registry,
                queue: queue.clone(),
                weights,
            },
            CycleConfig {
                env_ids: self.envs.clone(),
                episodes_per_env: c.episodes_per_env,
                eval_interval: Duration::from_secs(c.eval_interval_seconds),
                cycle_timeout: c.cycle_timeout.duration(),
                heartbeat_interval: Duration::from_secs(u64::from(c.heartbeat_interval_seconds)),
                task_max_attempts: c.task_max_attempts,
                seed_secret: self.secret.clone(),
                source: self.source.kind(),
                verification_policy: c.verification_policy,
            },
            tx,
        )
        .start();
        RunningScheduler {
            cycle,
            queue,
            work_available,
            store: self.store,
            exit,
        }
    }

    /// Starts the actors and runs cycles until `shutdown` resolves (graceful: the running cycle
    /// fails with `Cancelled on scheduler shutdown`) or the lock is lost (`Err(LOCK_LOST)`).
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), String> {
        self.start().wait(shutdown).await
    }
}

impl RunningScheduler {
    /// Waits until `shutdown` resolves (then stops gracefully and releases the lock) or the
    /// CycleActor stops on its own (a lost lock: `Err(LOCK_LOST)`).
    pub async fn wait(self, shutdown: impl Future<Output = ()>) -> Result<(), String> {
        let mut exit = self.exit;
        let why = tokio::select! {
            _ = shutdown => {
                let _ = self.cycle.send(Shutdown).await;
                (&mut exit).await.unwrap_or(SchedulerExit::Shutdown)
            }
            why = &mut exit => why.unwrap_or(SchedulerExit::LockLost),
        };
        match why {
            SchedulerExit::Shutdown => {
                self.store.release_lock().await;
                Ok(())
            }
            SchedulerExit::LockLost => Err(LOCK_LOST.into()),
        }
    }
}
