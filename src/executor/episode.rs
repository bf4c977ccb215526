//! One episode (docs/executor.md §5): address check, `/reset`, simulator reset, then `/act` and a
//! simulator step per step until the limit; every failure ends the episode with the error string
//! and failure kind of docs/miner-protocol.md §6.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use kinitro_actors::scoring::aggregate::FailureKind;
use kinitro_actors::tasks::TaskResult;
use prometheus_client::metrics::histogram::Histogram;
use tokio::sync::{oneshot, watch};

use super::worker::{reset_body, Answer, Job, SimAnswer};
use super::{guard, miner};
use crate::metrics::Metrics;
use crate::sim::env::MAX_STEPS;
use crate::sim::task::Task;

/// A task as an executor receives it (from the database or from the API).
#[derive(Debug, Clone, serde::Deserialize)]
pub struct EpisodeTask {
    /// Task id.
    pub task_uuid: String,
    /// Miner uid (logs).
    #[serde(default)]
    pub miner_uid: i64,
    /// Miner endpoint.
    pub miner_endpoint: String,
    /// Environment id.
    pub env_id: String,
    /// Public seed, sent to the miner.
    pub seed: i64,
    /// Secret simulation seed.
    pub sim_seed: u64,
    /// Limits of this episode instead of the pool's (an environment server's `evaluate` call sets
    /// them from its arguments).
    #[serde(skip)]
    pub limits: Option<Limits>,
    /// What verification needs to know of the miner (docs/verification.md §1).
    #[serde(flatten)]
    pub miner: MinerCommitment,
}

/// The commitment behind a task's miner, as claimed tasks carry it.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(default)]
pub struct MinerCommitment {
    /// Hotkey.
    pub miner_hotkey: String,
    /// HuggingFace repo.
    pub miner_repo: Option<String>,
    /// Revision.
    pub miner_revision: Option<String>,
    /// Verify whatever the rate (a re-admitted miner).
    pub verify: bool,
}

/// The per-episode limits (docs/executor.md §5.1).
#[derive(Debug, Clone)]
pub struct Limits {
    /// Steps per episode (at most 500).
    pub max_timesteps: u32,
    /// `/act` round-trip budget, seconds.
    pub action_timeout: f64,
    /// `/reset` round-trip budget, seconds.
    pub reset_timeout: f64,
    /// Whole-episode budget, seconds.
    pub eval_timeout: f64,
    /// `/act` response cap.
    pub max_response_bytes: usize,
    /// Skip the address guard.
    pub allow_private_endpoints: bool,
}

/// One episode's handles on the executor metrics (docs/api.md §4.12), looked up once per episode.
struct EpisodeMetrics<'a> {
    metrics: &'a Metrics,
    sim_step: Histogram,
    action_latency: Histogram,
}

impl<'a> EpisodeMetrics<'a> {
    fn new(metrics: &'a Metrics, env: &str) -> Self {
        let labels = vec![("env", env.to_string())];
        Self {
            metrics,
            sim_step: metrics.sim_step.get_or_create(&labels).clone(),
            action_latency: metrics.action_latency.get_or_create(&labels).clone(),
        }
    }

    /// Records the worker's timings of a reset or a step.
    fn simulated(&self, answer: &SimAnswer, step: bool) {
        if step {
            self.sim_step.observe(answer.timings[0]);
        }
        if answer.body.is_some() {
            if answer.timings[1] > 0.0 {
                self.metrics.render.observe(answer.timings[1]);
            }
            self.metrics.obs_encode.observe(answer.timings[2]);
        }
    }
}

/// Running sums of one episode.
struct Progress {
    timesteps: u32,
    total_reward: f64,
    success: bool,
    round_trips: Vec<Duration>,
    miner_time: Duration,
}

impl Progress {
    fn result(&self, task: &EpisodeTask, failure: Option<(String, FailureKind)>) -> TaskResult {
        let secs: Vec<f64> = self.round_trips.iter().map(Duration::as_secs_f64).collect();
        let (error, failure_kind) = failure.map_or((None, None), |(e, k)| (Some(e), Some(k)));
        let success = self.success && error.is_none();
        TaskResult {
            task_uuid: task.task_uuid.clone(),
            success,
            score: if success { 1.0 } else { 0.0 },
            total_reward: self.total_reward,
            timesteps: self.timesteps,
            error,
            failure_kind,
            action_time_mean: (!secs.is_empty())
                .then(|| secs.iter().sum::<f64>() / secs.len() as f64),
            action_time_max: secs.iter().copied().reduce(f64::max),
            verification_passed: None,
            verification_score: None,
        }
    }
}

fn infra(e: impl Into<String>) -> (String, FailureKind) {
    (e.into(), FailureKind::Infrastructure)
}

fn miner_fault(e: String) -> (String, FailureKind) {
    (e, FailureKind::Miner)
}

/// A failed `/reset` or `/act`: the miner's failure, unless its string is not a miner's (a local
/// failure to open a connection is `Executor error: …`, docs/miner-protocol.md §6.2); the prefix
/// rule is the one results without a failure kind are classified by (docs/database.md §4.3).
fn call_failure(e: String) -> (String, FailureKind) {
    if e.starts_with("Miner ") {
        miner_fault(e)
    } else {
        infra(e)
    }
}

async fn ask(
    worker: &mpsc::Sender<Job>,
    job: impl FnOnce(oneshot::Sender<Answer>) -> Job,
) -> Result<SimAnswer, (String, FailureKind)> {
    let (tx, rx) = oneshot::channel();
    worker
        .send(job(tx))
        .map_err(|_| infra("Executor error: the episode worker stopped"))?;
    rx.await
        .map_err(|_| infra("Executor error: the episode worker stopped"))?
        .map_err(infra)
}

/// What an episode runs with: the pool's client and worker, the limits, the shutdown flag (true when
/// the executor gives up on in-flight episodes) and the metrics registry.
pub struct Context<'a> {
    /// The pool's miner client.
    pub client: &'a miner::MinerClient,
    /// The pool's episode worker.
    pub worker: &'a mpsc::Sender<Job>,
    /// Per-episode limits.
    pub limits: &'a Limits,
    /// Shutdown flag.
    pub stop: &'a watch::Receiver<bool>,
    /// Executor metrics.
    pub metrics: Option<&'a Metrics>,
}

/// Runs one episode to its result; `id` names the episode on the worker.
pub async fn run(task: &EpisodeTask, id: u64, cx: &Context<'_>) -> TaskResult {
    let mut p = Progress {
        timesteps: 0,
        total_reward: 0.0,
        success: false,
        round_trips: Vec::new(),
        miner_time: Duration::ZERO,
    };
    let outcome = drive(task, id, cx, &mut p).await;
    let _ = cx.worker.send(Job::End { id });
    let result = p.result(task, outcome.err());
    if let Some(m) = cx.metrics {
        m.episode(&result, "");
    }
    result
}

async fn drive(
    task: &EpisodeTask,
    id: u64,
    cx: &Context<'_>,
    p: &mut Progress,
) -> Result<(), (String, FailureKind)> {
    let (client, worker, limits, stop) = (cx.client, cx.worker, cx.limits, cx.stop);
    let metrics = cx.metrics.map(|m| EpisodeMetrics::new(m, &task.env_id));
    let kind = Task::from_env_id(&task.env_id)
        .ok_or_else(|| infra(format!("Unknown environment: {}", task.env_id)))?;
    guard::check_endpoint(&task.miner_endpoint, limits.allow_private_endpoints)
        .await
        .map_err(miner_fault)?;
    let started = Instant::now();
    let budget = Duration::from_secs_f64(limits.eval_timeout);
    let mut calls = miner::MinerCalls::new(client, &task.miner_endpoint, &task.task_uuid)
        .map_err(miner_fault)?;
    let rt = calls
        .reset(reset_body(kind, task.seed), limits.reset_timeout)
        .await
        .map_err(call_failure)?;
    p.miner_time += rt;
    if let Some(m) = &metrics {
        m.metrics.reset_latency.observe(rt.as_secs_f64());
    }
    let sim_seed = task.sim_seed;
    let mut answer = ask(worker, |reply| Job::Reset {
        id,
        task: kind,
        sim_seed,
        reply,
    })
    .await?;
    if let Some(m) = &metrics {
        m.simulated(&answer, false);
    }
    let steps = limits.max_timesteps.min(MAX_STEPS);
    for t in 0..steps {
        if *stop.borrow() {
            return Err(infra("Executor shutting down"));
        }
        if started.elapsed() >= budget {
            return Err(over_budget(limits.eval_timeout, p, calls.reaching(), t));
        }
        let body = answer
            .body
            .take()
            .ok_or_else(|| infra("Executor error: missing observation"))?;
        let (action, rt) = calls
            .act(body, limits.action_timeout, limits.max_response_bytes, t)
            .await
            .map_err(call_failure)?;
        p.round_trips.push(rt);
        p.miner_time += rt;
        if let Some(m) = &metrics {
            m.action_latency.observe(rt.as_secs_f64());
        }
        let native = action.native();
        let observe = t + 1 < steps;
        answer = ask(worker, |reply| Job::Step {
            id,
            action: native,
            observe,
            reply,
        })
        .await?;
        if let Some(m) = &metrics {
            m.simulated(&answer, true);
        }
        p.timesteps = t + 1;
        p.total_reward += answer.reward;
        p.success |= answer.success;
    }
    Ok(())
}

/// docs/executor.md §5.3: whose fault an exhausted episode budget is. The miner's time is its round
/// trips plus the time spent `reaching` its server: a miner that closes every connection and stalls
/// each new one spends the budget outside its round trips, and must not pass that off as ours.
fn over_budget(budget: f64, p: &Progress, reaching: Duration, t: u32) -> (String, FailureKind) {
    if (p.miner_time + reaching).as_secs_f64() >= 0.5 * budget {
        miner_fault(format!(
            "Miner too slow: episode budget of {}s exhausted at step {t}",
            fmt_budget(budget)
        ))
    } else {
        infra(format!("Evaluation timeout after {}s", fmt_budget(budget)))
    }
}

fn fmt_budget(s: f64) -> String {
    if s.fract() == 0.0 {
        format!("{}", s as u64)
    } else {
        format!("{s}")
    }
}
