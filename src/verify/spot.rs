//! When an executor verifies, and what becomes of the outcome (docs/verification.md §1, §4).
//!
//! Before a task runs, [`Spotter::consider`] draws for its (uid, revision) pair: a pair not yet
//! verified by this process starts a verification with probability `rate`; a task the scheduler
//! marked `verify` starts one whatever the rate and the process's memory (unless one of that pair
//! is already running). Verifications run in the background on a thread of their own (at most
//! [`CONCURRENT`] at once), so the task that triggered one never waits for it. When one finishes,
//! its report is stored (through the API for a remote executor, directly in the database inside
//! `kinitro run`) and later results of that pair carry `verification_passed` /
//! `verification_score` ([`Spotter::annotate`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::FutureExt;
use kinitro_actors::tasks::TaskResult;
use rand::Rng;
use tokio::sync::{mpsc, Semaphore};

use super::{Target, Verifier};
use crate::db::DbPool;
use crate::executor::episode::EpisodeTask;
use crate::wire::VerificationReport;

/// Starts verification for an executor when its settings enable it (`None` otherwise).
pub async fn start_if_enabled(
    config: &crate::config::executor::ExecutorConfig,
    executor_id: &str,
    sink: Sink,
) -> Result<Option<Arc<Spotter>>, String> {
    if !config.verification.enabled {
        return Ok(None);
    }
    let verifier =
        Verifier::connect(config.verification.clone(), config.allow_private_endpoints).await?;
    tracing::info!(rate = config.verification.rate, image = %config.verification.image,
        samples_from = %config.verification.samples_from, "verification enabled");
    Spotter::start(verifier, executor_id.to_string(), sink)
        .await
        .map(Some)
}

/// Verifications running at once in one executor.
pub const CONCURRENT: usize = 2;
/// Attempts to store one report through the API.
const STORE_ATTEMPTS: u32 = 5;

/// Where finished verifications are stored.
#[derive(Clone)]
pub enum Sink {
    /// `POST {base}/v1/verifications` with the executor's key (remote executors).
    Api {
        /// The API's base URL.
        base: String,
        /// The executor's key.
        key: Option<String>,
    },
    /// The database itself (`kinitro run`), counted in the process's metrics as the API would.
    Database(DbPool, Arc<crate::metrics::Metrics>),
}

/// A pair's state in this process.
#[derive(Debug, Clone, Copy, PartialEq)]
enum PairState {
    /// Being verified.
    Running,
    /// Verified: what later results carry.
    Done {
        passed: Option<bool>,
        score: Option<f64>,
    },
}

/// The (uid, revision) pairs this executor verified, and the queue of verifications to run.
pub struct Spotter {
    rate: f64,
    pairs: Mutex<HashMap<(u16, String), PairState>>,
    jobs: mpsc::UnboundedSender<Target>,
}

impl Spotter {
    /// Connects to the Docker engine (an error naming `DOCKER_HOST` without one) and starts the
    /// verification thread.
    pub async fn start(
        verifier: Verifier,
        executor_id: String,
        sink: Sink,
    ) -> Result<Arc<Self>, String> {
        let (jobs, mut queue) = mpsc::unbounded_channel::<Target>();
        let spotter = Arc::new(Self {
            rate: verifier.config().rate,
            pairs: Mutex::default(),
            jobs,
        });
        let this = Arc::downgrade(&spotter);
        std::thread::Builder::new()
            .name("verification".into())
            .spawn(move || {
                actix_rt::System::new().block_on(async move {
                    let slots = Arc::new(Semaphore::new(CONCURRENT));
                    while let Some(target) = queue.recv().await {
                        let Ok(permit) = slots.clone().acquire_owned().await else {
                            return;
                        };
                        let (verifier, sink, id, this) = (
                            verifier.clone(),
                            sink.clone(),
                            executor_id.clone(),
                            this.clone(),
                        );
                        actix_rt::spawn(async move {
                            // A panic (a bug) must not leave the pair `Running` for ever, which
                            // would stop even the scheduler's `verify` requests from starting one.
                            let verified =
                                std::panic::AssertUnwindSafe(verifier.verify(&target, &id))
                                    .catch_unwind()
                                    .await;
                            let Ok(report) = verified else {
                                tracing::error!(event = "verification_panicked", uid = target.uid,
                                    revision = %target.revision);
                                if let Some(this) = this.upgrade() {
                                    this.forget(&target);
                                }
                                return;
                            };
                            tracing::info!(
                                event = "verification_finished",
                                uid = target.uid,
                                revision = %target.revision,
                                outcome = report.outcome.as_str(),
                                match_score = report.match_score,
                                error = report.error.as_deref(),
                            );
                            if let Some(this) = this.upgrade() {
                                this.finished(&target, &report);
                            }
                            store(&sink, &report).await;
                            drop(permit);
                        });
                    }
                })
            })
            .map_err(|e| format!("cannot start the verification thread: {e}"))?;
        Ok(spotter)
    }

    /// Draws for `task`'s pair and starts a verification when due (never waits for it).
    pub fn consider(&self, task: &EpisodeTask) {
        let Some(target) = target(task) else {
            return;
        };
        let key = (target.uid, target.revision.clone());
        let mut pairs = self.pairs.lock().unwrap();
        let due = match pairs.get(&key) {
            Some(PairState::Running) => false,
            Some(PairState::Done { .. }) => task.miner.verify,
            None => task.miner.verify || rand::rng().random::<f64>() < self.rate,
        };
        if !due {
            return;
        }
        // An untried pair that the draw passed over is still untried: the next task draws again.
        pairs.insert(key, PairState::Running);
        tracing::info!(event = "verification_started", uid = target.uid, revision = %target.revision,
            requested = task.miner.verify);
        let _ = self.jobs.send(target);
    }

    /// Adds the pair's finished verification, if any, to a result of `task`.
    pub fn annotate(&self, task: &EpisodeTask, result: &mut TaskResult) {
        let Some(target) = target(task) else {
            return;
        };
        if let Some(PairState::Done { passed, score }) = self
            .pairs
            .lock()
            .unwrap()
            .get(&(target.uid, target.revision))
        {
            result.verification_passed = *passed;
            result.verification_score = *score;
        }
    }

    /// Forgets a pair whose verification did not finish, so that a later task draws again.
    fn forget(&self, target: &Target) {
        self.pairs
            .lock()
            .unwrap()
            .remove(&(target.uid, target.revision.clone()));
    }

    fn finished(&self, target: &Target, report: &VerificationReport) {
        self.pairs.lock().unwrap().insert(
            (target.uid, target.revision.clone()),
            PairState::Done {
                passed: report.outcome.passed(),
                score: report.match_score,
            },
        );
    }
}

/// What to verify for `task`, when it names a repo and a revision.
fn target(task: &EpisodeTask) -> Option<Target> {
    let m = &task.miner;
    Some(Target {
        uid: u16::try_from(task.miner_uid).ok()?,
        hotkey: m.miner_hotkey.clone(),
        repo: m.miner_repo.clone().filter(|r| !r.is_empty())?,
        revision: m.miner_revision.clone().filter(|r| !r.is_empty())?,
        endpoint: task.miner_endpoint.clone(),
    })
}

/// Stores a report, retrying the API a few times; a report that cannot be stored is logged.
pub async fn store(sink: &Sink, report: &VerificationReport) {
    let stored = match sink {
        Sink::Database(pool, metrics) => match pool.get().await {
            Ok(mut conn) => crate::db::verifications::insert(&mut conn, report)
                .await
                .map(|_| metrics.verification(report.outcome))
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        },
        Sink::Api { base, key } => post_report(base, key.as_deref(), report).await,
    };
    if let Err(e) = stored {
        tracing::error!(event = "verification_not_stored", uid = report.uid, error = %e);
    }
}

/// `POST /v1/verifications`, retried with a growing pause while the API is unreachable or
/// failing; a 4xx is final.
pub async fn post_report(
    base: &str,
    key: Option<&str>,
    report: &VerificationReport,
) -> Result<(), String> {
    let mut builder = awc::Client::builder().timeout(Duration::from_secs(30));
    if let Some(key) = key {
        builder = builder.bearer_auth(key);
    }
    let client = builder.finish();
    let url = format!("{}/v1/verifications", base.trim_end_matches('/'));
    let mut last = String::new();
    for attempt in 0..STORE_ATTEMPTS {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_secs(1 << attempt)).await;
        }
        match client.post(&url).send_json(report).await {
            Ok(r) if r.status().is_success() => return Ok(()),
            Ok(mut r) => {
                let body = r.body().limit(4096).await.unwrap_or_default();
                last = format!(
                    "HTTP {}: {}",
                    r.status().as_u16(),
                    String::from_utf8_lossy(&body)
                );
                if r.status().is_client_error() {
                    return Err(last);
                }
            }
            Err(e) => last = e.to_string(),
        }
    }
    Err(last)
}
