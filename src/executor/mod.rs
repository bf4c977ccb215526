//! The executor (docs/executor.md, docs/miner-protocol.md): pools that turn tasks into episode
//! results.
//!
//! N [`pool::ExecutorPool`] actors, each on its own actix arbiter (its own thread and single-threaded
//! runtime) running the miner HTTP I/O and the episode state machines, and owning one episode worker
//! thread for all MuJoCo work. Up to K episodes per pool are in flight; [`Pools`] sends each task to
//! the pool with the most free slots.
//! Task sources and result sinks live in [`remote`] (`kinitro executor`) and [`local`] (`kinitro run`).

pub mod arrival;
pub mod basilica;
pub mod docker;
pub mod episode;
pub mod guard;
pub mod local;
pub mod miner;
pub mod pool;
pub mod remote;
pub mod worker;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use actix::{Actor, Addr};
use kinitro_actors::tasks::TaskResult;
use tokio::sync::watch;

use episode::{EpisodeTask, Limits};
use pool::{ExecutorPool, PoolParts, RunTask};
use worker::ObsOptions;

use crate::config::executor::ExecutorConfig;
use crate::metrics::Metrics;

struct Pool {
    arbiter: actix_rt::Arbiter,
    addr: Addr<ExecutorPool>,
    in_flight: Arc<AtomicUsize>,
}

/// The executor's pools and the slot accounting that picks one per task.
pub struct Pools {
    pools: Vec<Pool>,
    per_pool: usize,
    next_episode: AtomicU64,
    stop: watch::Sender<bool>,
    metrics: Option<Arc<Metrics>>,
}

impl Pools {
    /// Starts `config.pools` pools of `config.episodes_per_pool` slots (must run inside an actix
    /// system), recording the executor metrics into `metrics`. The first call in a process first
    /// switches the kernel's receive stamps on ([`arrival::keep_stamps_on`]): a wait on the calling
    /// thread, at start-up and before any arbiter runs, normally well under a millisecond.
    pub fn start(config: &ExecutorConfig, assets: PathBuf, metrics: Option<Arc<Metrics>>) -> Self {
        arrival::keep_stamps_on();
        let options = ObsOptions {
            images: config.use_images,
            privileged_state: config.privileged_state,
        };
        let limits = Limits {
            max_timesteps: config.max_timesteps,
            action_timeout: config.action_timeout.0,
            reset_timeout: config.reset_timeout.0,
            eval_timeout: config.eval_timeout.0,
            max_response_bytes: config.max_response_bytes,
            allow_private_endpoints: config.allow_private_endpoints,
        };
        let stop = watch::channel(false).0;
        let pools = (0..config.pools.max(1))
            .map(|i| {
                let arbiter = actix_rt::Arbiter::new();
                let in_flight = Arc::new(AtomicUsize::new(0));
                let parts = PoolParts {
                    worker: worker::spawn(assets.clone(), options, format!("episode-worker-{i}")),
                    limits: limits.clone(),
                    stop: stop.subscribe(),
                    in_flight: in_flight.clone(),
                    metrics: metrics.clone(),
                };
                let addr = ExecutorPool::start_in_arbiter(&arbiter.handle(), move |_| {
                    ExecutorPool::new(parts)
                });
                Pool {
                    arbiter,
                    addr,
                    in_flight,
                }
            })
            .collect();
        Self {
            pools,
            per_pool: config.episodes_per_pool.max(1) as usize,
            next_episode: AtomicU64::new(1),
            stop,
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
        let episode_id = self.next_episode.fetch_add(1, Ordering::Relaxed);
        if let Some(m) = &self.metrics {
            m.episodes_in_flight.inc();
        }
        let fallback = task.task_uuid.clone();
        let (in_flight, metrics) = (pool.in_flight.clone(), self.metrics.clone());
        let rx = pool.addr.send(RunTask { task, episode_id });
        async move {
            rx.await.unwrap_or_else(|_| {
                // The pool's arbiter stopped before answering: the pool cannot count this one down.
                in_flight.fetch_sub(1, Ordering::SeqCst);
                if let Some(m) = &metrics {
                    m.episodes_in_flight.dec();
                }
                TaskResult {
                    task_uuid: fallback,
                    success: false,
                    score: 0.0,
                    total_reward: 0.0,
                    timesteps: 0,
                    error: Some("Executor error: the pool stopped".into()),
                    failure_kind: Some(
                        kinitro_actors::scoring::aggregate::FailureKind::Infrastructure,
                    ),
                    action_time_mean: None,
                    action_time_max: None,
                    verification_passed: None,
                    verification_score: None,
                }
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

/// What runs an executor's episodes: its own pools, or environment containers (docs/containers.md
/// §3). The task sources (remote and local) see only this.
pub enum Evaluator {
    /// In-process pools.
    InProcess(Pools),
    /// Environment containers on Docker hosts.
    Docker(docker::DockerEvaluator),
    /// Basilica deployments.
    Basilica(basilica::BasilicaEvaluator),
}

impl Evaluator {
    /// Total slots.
    pub fn slots(&self) -> usize {
        match self {
            Evaluator::InProcess(p) => p.slots(),
            Evaluator::Docker(d) => d.slots(),
            Evaluator::Basilica(b) => b.slots(),
        }
    }

    /// Slots free for another episode.
    pub fn free_slots(&self) -> usize {
        match self {
            Evaluator::InProcess(p) => p.free_slots(),
            Evaluator::Docker(d) => d.free_slots(),
            Evaluator::Basilica(b) => b.free_slots(),
        }
    }

    /// Episodes running.
    pub fn in_flight(&self) -> usize {
        match self {
            Evaluator::InProcess(p) => p.in_flight(),
            Evaluator::Docker(d) => d.in_flight(),
            Evaluator::Basilica(b) => b.in_flight(),
        }
    }

    /// Ends every running episode as `Executor shutting down`.
    pub fn stop_episodes(&self) {
        match self {
            Evaluator::InProcess(p) => p.stop_episodes(),
            Evaluator::Docker(d) => d.stop_episodes(),
            Evaluator::Basilica(b) => b.stop_episodes(),
        }
    }

    /// Runs one episode; resolves to its result.
    pub fn run(&self, task: EpisodeTask) -> futures_util::future::BoxFuture<'static, TaskResult> {
        use futures_util::FutureExt;
        match self {
            Evaluator::InProcess(p) => p.run(task).boxed(),
            Evaluator::Docker(d) => d.run(task),
            Evaluator::Basilica(b) => b.run(task),
        }
    }

    /// Releases what the evaluator holds outside this process (the docker mode's containers).
    pub async fn shutdown(&self) {
        match self {
            Evaluator::InProcess(_) => {}
            Evaluator::Docker(d) => d.shutdown().await,
            Evaluator::Basilica(b) => b.shutdown().await,
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
