//! The ExecutorPool actor (docs/architecture.md §2.5; docs/executor.md §2): one per arbiter thread.
//! It runs its episodes' miner HTTP I/O and state machines on that arbiter, with the arbiter's own
//! miner client (awc's connector and the HTTP codec's configuration are not `Send`, so the pool
//! builds them on its thread), and sends every MuJoCo job to its one episode-worker thread — so a
//! miner's reply is time-stamped the moment it arrives and the simulation is never charged to the
//! miner.
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
use crate::metrics::Metrics;

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
        lower_arbiter_priority();
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
                limits: task.limits.as_ref().unwrap_or(&parts.limits),
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

/// How much nicer than the episode workers the arbiters run (`setpriority`, Linux per thread): a
/// miner's reply then waits for the worker's time slice instead of preempting MuJoCo once per step,
/// and the arbiter handles the replies that arrived meanwhile in one go. In benches/executor.sh
/// (images off) the workers were preempted 0.15–0.3 instead of 0.6–0.9 times per step, and the
/// arbiters' CPU per step fell from about 0.04 to 0.027 ms. Nice 5, 15 and 19 measured worse there
/// (0.26–0.29 ms of executor CPU per step against 0.24–0.26). Raising one's own nice value needs no
/// privilege. The miners are not charged that wait: their replies are stamped by the kernel
/// ([`super::arrival`]).
pub const ARBITER_NICE: i32 = 10;

/// Lowers the calling thread's priority to [`ARBITER_NICE`]; best effort (a failure leaves it as it
/// was, which only costs speed).
fn lower_arbiter_priority() {
    // SAFETY: plain system calls on the calling thread's own id.
    let failed = unsafe {
        libc::setpriority(
            libc::PRIO_PROCESS,
            libc::gettid() as libc::id_t,
            ARBITER_NICE,
        ) != 0
    };
    if failed {
        tracing::debug!(error = %std::io::Error::last_os_error(), "cannot lower the arbiter's priority");
    }
}
