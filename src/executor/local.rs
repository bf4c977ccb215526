//! Local mode (docs/executor.md §4), inside `kinitro run`: the scheduler's TaskQueueActor claims
//! from PostgreSQL as many tasks as there are free slots (`FOR UPDATE SKIP LOCKED`, under
//! `local-<8 hex>`), this feeder hands them to the pools and reports each result back to the queue,
//! which commits it with the submit procedure before it counts.

use std::sync::Arc;
use std::time::Duration;

use actix::Addr;
use kinitro_actors::messages::{Claim, Report};
use kinitro_actors::ports::TaskFilter;
use kinitro_actors::task_queue_actor::TaskQueueActor;
use kinitro_actors::tasks::TaskResult;
use tokio::sync::{watch, Notify};

use super::episode::{EpisodeTask, MinerCommitment};
use super::Evaluator;
use crate::verify::spot::Spotter;

/// Pause after a failed claim.
const RETRY: Duration = Duration::from_secs(1);

/// The local feeder: claims, runs and reports until `stop` turns true.
pub struct LocalQueue {
    /// The executor id the claims are made under.
    pub executor_id: String,
    /// Pools running the episodes.
    pub pools: Arc<Evaluator>,
    /// The scheduler's task queue.
    pub queue: Addr<TaskQueueActor>,
    /// Woken when a cycle's tasks are enqueued.
    pub work_available: Arc<Notify>,
    /// Env and shard filter.
    pub filter: TaskFilter,
    /// Wait when there was nothing to claim.
    pub poll_interval: Duration,
    /// Verification, when enabled.
    pub spotter: Option<Arc<Spotter>>,
}

impl LocalQueue {
    /// Runs until `stop` turns true; then ends in-flight episodes and commits their results.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let this = Arc::new(self);
        let mut running = tokio::task::JoinSet::new();
        tracing::info!(event = "executor_started", id = %this.executor_id, mode = "local",
            slots = this.pools.slots(), "local executor started");
        while !*stop.borrow() {
            let free = this.pools.free_slots();
            let claimed = if free > 0 {
                this.claim(free).await
            } else {
                Ok(Vec::new())
            };
            let wait = match claimed {
                Ok(tasks) => {
                    let full = !tasks.is_empty() && tasks.len() == free;
                    for task in tasks {
                        let queue = this.clone();
                        if let Some(s) = &this.spotter {
                            s.consider(&task);
                        }
                        running.spawn(async move {
                            let mut result = queue.pools.run(task.clone()).await;
                            if let Some(s) = &queue.spotter {
                                s.annotate(&task, &mut result);
                            }
                            queue.commit(&result).await;
                        });
                    }
                    if full || free == 0 {
                        Duration::from_millis(50)
                    } else {
                        this.poll_interval
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot claim tasks");
                    RETRY
                }
            };
            while running.try_join_next().is_some() {}
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = this.work_available.notified() => {}
                _ = stop.changed() => {}
                Some(_) = running.join_next(), if !running.is_empty() => {}
            }
        }
        this.pools.stop_episodes();
        let _ = tokio::time::timeout(Duration::from_secs(10), async {
            while running.join_next().await.is_some() {}
        })
        .await;
        this.pools.shutdown().await;
    }

    async fn claim(&self, free: usize) -> Result<Vec<EpisodeTask>, String> {
        let claim = Claim {
            executor_id: self.executor_id.clone(),
            max: free,
            filter: self.filter.clone(),
        };
        let rows = self
            .queue
            .send(claim)
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        Ok(rows
            .into_iter()
            .map(|t| EpisodeTask {
                task_uuid: t.task_uuid,
                miner_uid: i64::from(t.miner_uid),
                miner_endpoint: t.miner_endpoint,
                env_id: t.env_id,
                seed: i64::from(t.seed),
                sim_seed: t.sim_seed as u64,
                limits: None,
                miner: MinerCommitment {
                    miner_hotkey: t.miner_hotkey,
                    miner_repo: t.miner_repo,
                    miner_revision: t.miner_revision,
                    verify: t.verify,
                },
            })
            .collect())
    }

    /// Reports one result; the queue commits it (retrying while the database is unreachable).
    async fn commit(&self, result: &TaskResult) {
        let report = Report {
            executor_id: self.executor_id.clone(),
            result: result.clone(),
        };
        if let Err(e) = self.queue.send(report).await {
            tracing::error!(task = %result.task_uuid, error = %e,
                "the task queue is gone; the stale reaper will re-queue the task");
        }
    }
}
