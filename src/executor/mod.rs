//! The executor (spec: executor.md, miner-protocol.md): pools that turn tasks into episode results.
//!
//! N pools, each an actix arbiter (its own thread and single-threaded runtime) running the miner
//! HTTP I/O and the episode state machines, and owning one episode worker thread for all MuJoCo work.
//! Up to K episodes per pool are in flight; a task goes to the pool with the most free slots.
//! Task sources and result sinks live in [`remote`] (`kinitro executor`) and [`local`] (`kinitro run`).

pub mod episode;
pub mod guard;
pub mod local;
pub mod miner;
pub mod remote;
pub mod worker;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};

use kinitro_actors::tasks::TaskResult;
use tokio::sync::{oneshot, watch};

use episode::{EpisodeTask, Limits};
use worker::{Job, ObsOptions};

use crate::api::metrics::Metrics;
use crate::config::executor::ExecutorConfig;

thread_local! {
    /// The pool's miner client, one per arbiter thread (awc clients are not `Send`), created on
    /// first use with the guard setting of the pools.
    static MINER_CLIENT: std::cell::OnceCell<awc::Client> = const { std::cell::OnceCell::new() };
}

struct Pool {
    arbiter: actix_rt::Arbiter,
    worker: mpsc::Sender<Job>,
    in_flight: Arc<AtomicUsize>,
}

/// The executor's pools.
pub struct Pools {
    pools: Vec<Pool>,
    per_pool: usize,
    limits: Limits,
    next_episode: AtomicU64,
    stop: watch::Sender<bool>,
    metrics: Option<Arc<Metrics>>,
}

impl Pools {
    /// Starts `config.pools` pools of `config.episodes_per_pool` slots (must run inside an actix
    /// system), recording the executor metrics into `metrics`.
    pub fn start(config: &ExecutorConfig, assets: PathBuf, metrics: Option<Arc<Metrics>>) -> Self {
        let options = ObsOptions {
            images: config.use_images,
            privileged_state: config.privileged_state,
        };
        let pools = (0..config.pools.max(1))
            .map(|i| Pool {
                arbiter: actix_rt::Arbiter::new(),
                worker: worker::spawn(assets.clone(), options, format!("episode-worker-{i}")),
                in_flight: Arc::new(AtomicUsize::new(0)),
            })
            .collect();
        Self {
            pools,
            per_pool: config.episodes_per_pool.max(1) as usize,
            limits: Limits {
                max_timesteps: config.max_timesteps,
                action_timeout: config.action_timeout.0,
                reset_timeout: config.reset_timeout.0,
                eval_timeout: config.eval_timeout.0,
                max_response_bytes: config.max_response_bytes,
                allow_private_endpoints: config.allow_private_endpoints,
            },
            next_episode: AtomicU64::new(1),
            stop: watch::channel(false).0,
            metrics,
        }
    }

    /// Total slots (N × K).
    pub fn slots(&self) -> usize {
        self.pools.len() * self.per_pool
    }

    /// Slots not running an episode.
    pub fn free_slots(&self) -> usize {
        self.pools
            .iter()
            .map(|p| {
                self.per_pool
                    .saturating_sub(p.in_flight.load(Ordering::SeqCst))
            })
            .sum()
    }

    /// Episodes running.
    pub fn in_flight(&self) -> usize {
        self.slots() - self.free_slots()
    }

    /// Ends every running episode as `Executor shutting down` at its next step.
    pub fn stop_episodes(&self) {
        let _ = self.stop.send(true);
    }

    /// Runs one episode on the pool with the most free slots; resolves to its result.
    pub fn run(
        &self,
        task: EpisodeTask,
    ) -> impl std::future::Future<Output = TaskResult> + Send + 'static {
        let pool = self
            .pools
            .iter()
            .min_by_key(|p| p.in_flight.load(Ordering::SeqCst)) // most free slots, lowest index on ties
            .expect("at least one pool");
        pool.in_flight.fetch_add(1, Ordering::SeqCst);
        let id = self.next_episode.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        let (worker, limits, stop, in_flight, metrics) = (
            pool.worker.clone(),
            self.limits.clone(),
            self.stop.subscribe(),
            pool.in_flight.clone(),
            self.metrics.clone(),
        );
        if let Some(m) = &metrics {
            m.episodes_in_flight.inc();
        }
        let fallback = task.task_uuid.clone();
        pool.arbiter.spawn_fn(move || {
            actix_web::rt::spawn(async move {
                let client = MINER_CLIENT.with(|c| c.get_or_init(|| miner::client(limits.allow_private_endpoints)).clone());
                let started = std::time::Instant::now();
                let cx = episode::Context {
                    client: &client,
                    worker: &worker,
                    limits: &limits,
                    stop: &stop,
                    metrics: metrics.as_deref(),
                };
                let result = episode::run(&task, id, &cx).await;
                in_flight.fetch_sub(1, Ordering::SeqCst);
                if let Some(m) = &metrics {
                    m.episodes_in_flight.dec();
                }
                tracing::info!(
                    event = "episode_finished", task = %task.task_uuid, uid = task.miner_uid, env = %task.env_id,
                    success = result.success, timesteps = result.timesteps, error = result.error.as_deref(),
                    kind = ?result.failure_kind, seconds = started.elapsed().as_secs_f64(), "episode finished"
                );
                let _ = tx.send(result);
            });
        });
        async move {
            rx.await.unwrap_or_else(|_| TaskResult {
                task_uuid: fallback,
                success: false,
                score: 0.0,
                total_reward: 0.0,
                timesteps: 0,
                error: Some("Executor error: the pool stopped".into()),
                failure_kind: Some(kinitro_actors::scoring::aggregate::FailureKind::Infrastructure),
                action_time_mean: None,
                action_time_max: None,
                verification_passed: None,
                verification_score: None,
            })
        }
    }
}

impl Drop for Pools {
    fn drop(&mut self) {
        for p in &self.pools {
            p.arbiter.stop();
        }
    }
}

/// The env ids an executor serves: its filter, or every registered id.
pub fn served_tasks(config: &ExecutorConfig) -> Vec<crate::sim::task::Task> {
    use crate::sim::task::Task;
    match &config.env_ids {
        Some(ids) if !ids.is_empty() => ids.iter().filter_map(|id| Task::from_env_id(id)).collect(),
        _ => Task::ALL.to_vec(),
    }
}
