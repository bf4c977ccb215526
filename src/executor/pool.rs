//! The ExecutorPool actor (ARCHITECTURE.md; executor.md 2): one per arbiter thread. It runs its
//! episodes' miner HTTP I/O and state machines on that arbiter, with the arbiter's own miner client
//! (awc's connector and the HTTP codec's configuration are not `Send`, so the pool builds them on its
//! thread), and sends every MuJoCo job to its one episode-worker thread — so a miner's reply is
//! time-stamped the moment it arrives and the simulation is never charged to the miner.
//!
//! The pool answers each [`RunTask`] with the episode's result; the caller (the local feeder or the
//! remote outbox) reports it onwards.

use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};

use actix::prelude::*;
use kinitro_actors::tasks::TaskResult;
use tokio::sync::watch;

use super::episode::{self, EpisodeTask, Limits};
use super::miner;
use super::worker::Job;
use crate::api::metrics::Metrics;

/// Run one episode; answered with its result.
#[derive(Debug, Message)]
#[rtype(result = "TaskResult")]
pub struct RunTask {
    /// The task.
    pub task: EpisodeTask,
    /// Names the episode on the worker (unique per executor).
    pub episode_id: u64,
}

/// What a pool is built from; `Send`, so the pool can be created on its own arbiter.
pub struct PoolParts {
    /// The pool's episode-worker thread.
    pub worker: mpsc::Sender<Job>,
    /// Per-episode limits.
    pub limits: Limits,
    /// Turns true when in-flight episodes must end (`Executor shutting down`).
    pub stop: watch::Receiver<bool>,
    /// Episodes running on this pool (shared with the front that picks pools).
    pub in_flight: Arc<AtomicUsize>,
    /// Executor metrics.
    pub metrics: Option<Arc<Metrics>>,
}

/// Up to K episodes in flight on one arbiter.
pub struct ExecutorPool {
    parts: Rc<PoolParts>,
    client: miner::MinerClient,
}

impl ExecutorPool {
    /// A pool from its parts, with a miner client built on the calling (arbiter) thread.
    pub fn new(parts: PoolParts) -> Self {
        let client = miner::MinerClient::new(parts.limits.allow_private_endpoints);
        super::arrival::lower_arbiter_priority();
        Self {
            parts: Rc::new(parts),
            client,
        }
    }
}

impl Actor for ExecutorPool {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // The front never has more than K tasks out per pool; the default of 16 would make the
        // senders of a larger K wait for mailbox room instead of starting their episodes.
        ctx.set_mailbox_capacity(usize::MAX);
    }
}

impl Handler<RunTask> for ExecutorPool {
    type Result = ResponseFuture<TaskResult>;

    fn handle(&mut self, msg: RunTask, _: &mut Context<Self>) -> Self::Result {
        let (parts, client) = (self.parts.clone(), self.client.clone());
        Box::pin(async move {
            let task = msg.task;
            let started = std::time::Instant::now();
            let cx = episode::Context {
                client: &client,
                worker: &parts.worker,
                limits: &parts.limits,
                stop: &parts.stop,
                metrics: parts.metrics.as_deref(),
            };
            let result = episode::run(&task, msg.episode_id, &cx).await;
            parts.in_flight.fetch_sub(1, Ordering::SeqCst);
            if let Some(m) = &parts.metrics {
                m.episodes_in_flight.dec();
            }
            tracing::info!(
                event = "episode_finished", task = %task.task_uuid, uid = task.miner_uid, env = %task.env_id,
                success = result.success, timesteps = result.timesteps, error = result.error.as_deref(),
                kind = ?result.failure_kind, seconds = started.elapsed().as_secs_f64(), "episode finished"
            );
            result
        })
    }
}
