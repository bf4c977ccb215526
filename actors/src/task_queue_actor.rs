//! The TaskQueueActor: claiming and leasing tasks for local pools (it never inserts them), stale
//! reaping with the attempts cap, and completion counting of the cycles it watches
//! (docs/database.md §4–6, docs/scheduler.md §3 step 4).
//!
//! Completion is counted per watched cycle (an indexed count of that cycle's open tasks), on every
//! poll and right after each local report, so remote executors' results (written by the API, maybe
//! in another process) are seen too without scanning the whole table.

use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use tokio::sync::Notify;

use crate::messages::{CancelCycle, Claim, CycleEnqueued, CycleFinished, Report};
use crate::ports::{QueuedTask, Store, StoreError, SubmitOutcome};
use crate::states::TaskStatus;

/// Timings of the queue.
#[derive(Debug, Clone)]
pub struct QueueConfig {
    /// Completion check and stale reaping period.
    pub poll_interval: Duration,
    /// An assignment older than this is stale.
    pub stale_threshold: Duration,
    /// Period of the `cycle_progress` event.
    pub progress_interval: Duration,
    /// Pause between commit attempts while the store is unreachable.
    pub commit_retry_pause: Duration,
    /// Commit attempts before a result is left to the stale reaper.
    pub commit_attempts: u32,
}

/// Counts queue events (`reaped`, `given_up`) into the application's metrics.
pub type QueueObserver = Box<dyn Fn(&'static str, u64)>;

/// One round of stale reaping (docs/database.md §5): re-queues, or gives up after the attempts cap,
/// the tasks assigned longer than `threshold` ago, logs `stale_tasks_reaped` and reports the
/// `reaped` and `given_up` events to `observe`. Both reapers run it: the scheduler's task queue and
/// the API's, each with its own threshold and period. `reap` is the store's statement for one round.
pub async fn reap_stale_round(
    reap: impl std::future::Future<Output = Result<(usize, usize), StoreError>>,
    observe: &dyn Fn(&'static str, u64),
) -> Result<(usize, usize), StoreError> {
    let reaped = reap.await;
    match &reaped {
        Ok((requeued, given_up)) if requeued + given_up > 0 => {
            tracing::info!(event = "stale_tasks_reaped", requeued, given_up);
            observe("reaped", (requeued + given_up) as u64);
            if *given_up > 0 {
                observe("given_up", *given_up as u64);
            }
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "stale reaping failed"),
    }
    reaped
}

struct Watched {
    finished: Recipient<CycleFinished>,
    last_progress: Option<Instant>,
}

/// Claims, reports, reaping and completion counting.
pub struct TaskQueueActor {
    store: Rc<dyn Store>,
    config: QueueConfig,
    watched: BTreeMap<i32, Watched>,
    checking: bool,
    observer: Option<Rc<dyn Fn(&'static str, u64)>>,
    work_available: Option<Arc<Notify>>,
}

impl TaskQueueActor {
    /// A queue over `store`.
    pub fn new(store: Rc<dyn Store>, config: QueueConfig) -> Self {
        Self {
            store,
            config,
            watched: BTreeMap::new(),
            checking: false,
            observer: None,
            work_available: None,
        }
    }

    /// Reports queue events to `observer`.
    pub fn with_observer(mut self, observer: QueueObserver) -> Self {
        self.observer = Some(Rc::from(observer));
        self
    }

    /// Wakes the waiters of `notify` when a cycle's tasks are enqueued (local pools sleep on it
    /// between empty claims).
    pub fn with_wakeup(mut self, notify: Arc<Notify>) -> Self {
        self.work_available = Some(notify);
        self
    }

    /// One check: reap stale tasks (on the poll timer only), then count each watched cycle's open
    /// tasks.
    fn check(&mut self, reap: bool, ctx: &mut Context<Self>) {
        if self.checking || self.watched.is_empty() {
            return;
        }
        self.checking = true;
        let store = self.store.clone();
        let threshold = self.config.stale_threshold;
        let progress_due: Vec<(i32, bool)> = self
            .watched
            .iter()
            .map(|(id, w)| {
                let due = w
                    .last_progress
                    .is_none_or(|t| t.elapsed() >= self.config.progress_interval);
                (*id, due)
            })
            .collect();
        let observer = self.observer.clone();
        let work = async move {
            if reap {
                let observe = |event: &'static str, n: u64| {
                    if let Some(f) = &observer {
                        f(event, n);
                    }
                };
                let _ = reap_stale_round(store.reap_stale(threshold), &observe).await;
            }
            let mut open = Vec::new();
            for (id, due) in progress_due {
                let count = store.open_tasks(id).await;
                let progress = if due {
                    store.progress(id).await.ok()
                } else {
                    None
                };
                open.push((id, count, progress));
            }
            open
        };
        ctx.spawn(work.into_actor(self).map(|open, act, _| {
            act.checking = false;
            for (cycle_id, count, progress) in open {
                if let Some(p) = progress {
                    let n = |s: TaskStatus| p.iter().find(|(k, _)| *k == s).map_or(0, |(_, v)| *v);
                    tracing::info!(
                        event = "cycle_progress",
                        cycle_id,
                        pending = n(TaskStatus::Pending),
                        assigned = n(TaskStatus::Assigned),
                        completed = n(TaskStatus::Completed),
                        failed = n(TaskStatus::Failed)
                    );
                    if let Some(w) = act.watched.get_mut(&cycle_id) {
                        w.last_progress = Some(Instant::now());
                    }
                }
                match count {
                    Ok(0) => {
                        if let Some(w) = act.watched.remove(&cycle_id) {
                            w.finished.do_send(CycleFinished { cycle_id });
                        }
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(cycle_id, error = %e, "cannot count open tasks"),
                }
            }
        }));
    }
}

impl Actor for TaskQueueActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(self.config.poll_interval, |act, ctx| act.check(true, ctx));
    }
}

impl Handler<CycleEnqueued> for TaskQueueActor {
    type Result = ();

    fn handle(&mut self, msg: CycleEnqueued, ctx: &mut Context<Self>) {
        self.watched.insert(
            msg.cycle_id,
            Watched {
                finished: msg.finished,
                last_progress: None,
            },
        );
        if msg.tasks > 0 {
            if let Some(n) = &self.work_available {
                n.notify_waiters();
            }
        }
        self.check(false, ctx);
    }
}

impl Handler<CancelCycle> for TaskQueueActor {
    type Result = ();

    fn handle(&mut self, msg: CancelCycle, _: &mut Context<Self>) {
        self.watched.remove(&msg.cycle_id);
    }
}

impl Handler<Claim> for TaskQueueActor {
    type Result = ResponseFuture<Result<Vec<QueuedTask>, StoreError>>;

    fn handle(&mut self, msg: Claim, _: &mut Context<Self>) -> Self::Result {
        let store = self.store.clone();
        Box::pin(async move { store.claim(msg.executor_id, msg.max, msg.filter).await })
    }
}

impl Handler<Report> for TaskQueueActor {
    type Result = ResponseActFuture<Self, SubmitOutcome>;

    fn handle(&mut self, msg: Report, _: &mut Context<Self>) -> Self::Result {
        let store = self.store.clone();
        let pause = self.config.commit_retry_pause;
        let attempts = self.config.commit_attempts.max(1);
        // Where a locally reported result enters: its blame is settled here, once.
        let result = msg.result.settled();
        let executor_id = msg.executor_id;
        let commit = async move {
            let mut outcome = SubmitOutcome::Unavailable(String::new());
            for attempt in 1..=attempts {
                outcome = store.submit(executor_id.clone(), result.clone()).await;
                let SubmitOutcome::Unavailable(e) = &outcome else {
                    break;
                };
                tracing::warn!(task = %result.task_uuid, attempt, error = %e,
                    "result not committed yet; retrying");
                tokio::time::sleep(pause).await;
            }
            match &outcome {
                SubmitOutcome::Unavailable(_) => tracing::error!(task = %result.task_uuid,
                    "result not committed; the stale reaper will re-queue the task"),
                SubmitOutcome::Rejected(m) => {
                    tracing::warn!(task = %result.task_uuid, reason = %m, "result rejected")
                }
                _ => {}
            }
            outcome
        };
        Box::pin(commit.into_actor(self).map(|outcome, act, ctx| {
            if matches!(outcome, SubmitOutcome::Accepted { .. }) {
                act.check(false, ctx);
            }
            outcome
        }))
    }
}
