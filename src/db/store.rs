//! [`PgStore`]: the core's [`Store`] port on PostgreSQL, over the functions of [`super::cycles`] and
//! [`super::tasks`], plus the scheduler's advisory lock.

use std::time::Duration;

use diesel_async::pooled_connection::deadpool::Object;
use diesel_async::AsyncPgConnection;
use kinitro_actors::ports::{
    CreatedCycle, CycleDraft, CycleRecord, FailedVerification, Heartbeat, PortFuture, QueuedTask,
    Store, StoreError, SubmitOutcome, TaskFilter,
};
use kinitro_actors::scoring::aggregate::EpisodeOutcome;
use kinitro_actors::states::TaskStatus;
use kinitro_actors::tasks::TaskResult;

use super::lock::SchedulerLock;
use super::{cycles, tasks, verifications, DbError, DbPool};

/// The store of a scheduler (and of `kinitro run`'s local task queue).
pub struct PgStore {
    pool: DbPool,
    lock: tokio::sync::Mutex<Option<SchedulerLock>>,
}

impl PgStore {
    /// A store on `pool`; `lock` is the scheduler lock this process holds (`None`: none, so
    /// [`Store::lock_held`] answers false).
    pub fn new(pool: DbPool, lock: Option<SchedulerLock>) -> Self {
        Self {
            pool,
            lock: tokio::sync::Mutex::new(lock),
        }
    }

    /// Releases the scheduler lock (graceful stop).
    pub async fn release_lock(&self) {
        if let Some(lock) = self.lock.lock().await.take() {
            lock.release().await;
        }
    }

    async fn conn(&self) -> Result<Object<AsyncPgConnection>, StoreError> {
        self.pool
            .get()
            .await
            .map_err(|e| StoreError(format!("database unavailable: {e}")))
    }
}

fn store_error(e: DbError) -> StoreError {
    StoreError(e.to_string())
}

impl Store for PgStore {
    fn failed_verifications(
        &self,
        pairs: Vec<(String, String)>,
    ) -> PortFuture<'_, Result<Vec<FailedVerification>, StoreError>> {
        Box::pin(async move {
            verifications::failed(&mut *self.conn().await?, &pairs)
                .await
                .map_err(store_error)
        })
    }

    fn last_block(&self) -> PortFuture<'_, Result<Option<i64>, StoreError>> {
        Box::pin(async move {
            cycles::last_block(&mut *self.conn().await?)
                .await
                .map_err(store_error)
        })
    }

    /// Creates the cycle, then vacuums the task table: a cycle can add 100,000 rows at once, and
    /// claiming from freshly vacuumed pages (hint bits set, autovacuum not about to start in the
    /// middle of the claims) costs PostgreSQL markedly less. A failed vacuum is only logged.
    fn create_cycle(&self, draft: CycleDraft) -> PortFuture<'_, Result<CreatedCycle, StoreError>> {
        Box::pin(async move {
            let mut conn = self.conn().await?;
            let created = cycles::create_cycle(&mut conn, &draft)
                .await
                .map_err(store_error)?;
            if created.tasks > 0 {
                if let Err(e) = tasks::vacuum_tasks(&mut conn).await {
                    tracing::warn!(error = %e, "could not vacuum task_pool after creating the cycle");
                }
            }
            Ok(created)
        })
    }

    fn open_tasks(&self, cycle_id: i32) -> PortFuture<'_, Result<i64, StoreError>> {
        Box::pin(async move {
            cycles::open_tasks(&mut *self.conn().await?, cycle_id)
                .await
                .map_err(store_error)
        })
    }

    fn progress(
        &self,
        cycle_id: i32,
    ) -> PortFuture<'_, Result<Vec<(TaskStatus, i64)>, StoreError>> {
        Box::pin(async move {
            cycles::progress(&mut *self.conn().await?, cycle_id)
                .await
                .map_err(store_error)
        })
    }

    fn reap_stale(
        &self,
        threshold: Duration,
    ) -> PortFuture<'_, Result<(usize, usize), StoreError>> {
        Box::pin(async move {
            tasks::reap_stale(&mut *self.conn().await?, threshold.as_secs_f64())
                .await
                .map_err(store_error)
        })
    }

    fn fail_cycle(
        &self,
        cycle_id: i32,
        message: String,
        task_error: String,
    ) -> PortFuture<'_, Result<usize, StoreError>> {
        Box::pin(async move {
            cycles::fail_cycle(&mut *self.conn().await?, cycle_id, &message, &task_error)
                .await
                .map_err(store_error)
        })
    }

    fn outcomes(&self, cycle_id: i32) -> PortFuture<'_, Result<Vec<EpisodeOutcome>, StoreError>> {
        Box::pin(async move {
            cycles::outcomes(&mut *self.conn().await?, cycle_id)
                .await
                .map_err(store_error)
        })
    }

    fn complete_cycle(&self, record: CycleRecord) -> PortFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            cycles::complete_cycle(&mut *self.conn().await?, &record)
                .await
                .map_err(store_error)
        })
    }

    fn write_heartbeat(&self, beat: Heartbeat) -> PortFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            cycles::write_heartbeat(&mut *self.conn().await?, &beat)
                .await
                .map_err(store_error)
        })
    }

    fn claim(
        &self,
        executor_id: String,
        max: usize,
        filter: TaskFilter,
    ) -> PortFuture<'_, Result<Vec<QueuedTask>, StoreError>> {
        Box::pin(async move {
            let rows = tasks::claim(&mut *self.conn().await?, &executor_id, max as i64, &filter)
                .await
                .map_err(store_error)?;
            Ok(rows
                .into_iter()
                .map(|t| QueuedTask {
                    task_uuid: t.task_uuid,
                    cycle_id: t.cycle_id,
                    miner_uid: t.miner_uid,
                    miner_endpoint: t.miner_endpoint,
                    env_id: t.env_id,
                    seed: t.seed,
                    sim_seed: t.sim_seed,
                    miner_hotkey: t.miner_hotkey,
                    miner_repo: t.miner_repo,
                    miner_revision: t.miner_revision,
                    verify: t.verify,
                })
                .collect())
        })
    }

    fn submit(&self, executor_id: String, result: TaskResult) -> PortFuture<'_, SubmitOutcome> {
        Box::pin(async move {
            match self.conn().await {
                Ok(mut conn) => tasks::submit_one(&mut conn, &executor_id, &result).await,
                Err(e) => SubmitOutcome::Unavailable(e.0),
            }
        })
    }

    fn lock_held(&self) -> PortFuture<'_, bool> {
        Box::pin(async move {
            match self.lock.lock().await.as_mut() {
                Some(lock) => lock.held().await,
                None => false,
            }
        })
    }
}
