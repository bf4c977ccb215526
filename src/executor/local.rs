//! Local mode (executor.md 4), inside `kinitro run`: the task queue claims from PostgreSQL as many
//! tasks as there are free slots (`FOR UPDATE SKIP LOCKED`, under `local-<8 hex>`), hands them to the
//! pools and commits each result with the submit procedure before it counts.

use std::sync::Arc;
use std::time::Duration;

use kinitro_actors::tasks::TaskResult;
use tokio::sync::watch;

use super::episode::EpisodeTask;
use super::Pools;
use crate::db::tasks::{self, ClaimFilter, SubmitOutcome};
use crate::db::DbPool;

/// Pause after a database error.
const RETRY: Duration = Duration::from_secs(1);

/// The local task queue: claims, runs and commits until `stop` turns true.
pub struct LocalQueue {
    /// The executor id the claims are made under.
    pub executor_id: String,
    /// Pools running the episodes.
    pub pools: Arc<Pools>,
    /// The database.
    pub db: DbPool,
    /// Env and shard filter.
    pub filter: ClaimFilter,
    /// Wait when there was nothing to claim.
    pub poll_interval: Duration,
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
                        running.spawn(async move {
                            let result = queue.pools.run(task).await;
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
                _ = stop.changed() => {}
                Some(_) = running.join_next(), if !running.is_empty() => {}
            }
        }
        this.pools.stop_episodes();
        let _ = tokio::time::timeout(Duration::from_secs(10), async {
            while running.join_next().await.is_some() {}
        })
        .await;
    }

    async fn claim(&self, free: usize) -> Result<Vec<EpisodeTask>, String> {
        let mut conn = self.db.get().await.map_err(|e| e.to_string())?;
        let rows = tasks::claim(&mut conn, &self.executor_id, free as i64, &self.filter)
            .await
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
            })
            .collect())
    }

    /// Commits one result, retrying while the database is unreachable.
    async fn commit(&self, result: &TaskResult) {
        for attempt in 0..60 {
            let outcome = match self.db.get().await {
                Ok(mut conn) => tasks::submit_one(&mut conn, &self.executor_id, result).await,
                Err(e) => SubmitOutcome::Rejected(format!("database error: {e}")),
            };
            match outcome {
                SubmitOutcome::Rejected(m) if m.contains("database error") => {
                    tracing::warn!(task = %result.task_uuid, attempt, error = %m, "result not committed yet; retrying");
                    tokio::time::sleep(RETRY).await;
                }
                SubmitOutcome::Rejected(m) => {
                    tracing::warn!(task = %result.task_uuid, reason = %m, "result rejected");
                    return;
                }
                _ => return,
            }
        }
        tracing::error!(task = %result.task_uuid, "result not committed after 60 attempts; the stale reaper will re-queue the task");
    }
}
