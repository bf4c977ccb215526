//! The scheduler singleton (docs/database.md §7): an advisory lock held by a dedicated connection
//! for the whole process lifetime, checked at every heartbeat.

use diesel::sql_types::{BigInt, Bool};
use diesel::QueryableByName;
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use super::connect::{connect, DbError};
use crate::config::DatabaseUrl;

/// Advisory-lock key of the scheduler ("kinitro" + 2; distinct from the migration key).
pub const SCHEDULER_LOCK_KEY: i64 = 0x6b69_6e69_7472_6f02;

#[derive(QueryableByName)]
struct Granted {
    #[diesel(sql_type = Bool)]
    granted: bool,
}

/// The held lock and its connection.
pub struct SchedulerLock {
    conn: AsyncPgConnection,
}

impl SchedulerLock {
    /// Takes the lock, or fails with `another scheduler is already running against this database`.
    pub async fn acquire(url: &DatabaseUrl) -> Result<Self, DbError> {
        let mut conn = connect(url).await?;
        let got: Granted = diesel::sql_query("SELECT pg_try_advisory_lock($1) AS granted")
            .bind::<BigInt, _>(SCHEDULER_LOCK_KEY)
            .get_result(&mut conn)
            .await?;
        if !got.granted {
            return Err(DbError::Other(
                "another scheduler is already running against this database".into(),
            ));
        }
        Ok(Self { conn })
    }

    /// Whether this connection is alive and still holds the lock.
    pub async fn held(&mut self) -> bool {
        let q = diesel::sql_query(
            "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted \
             AND pid = pg_backend_pid() AND objid = ($1 & 4294967295)::oid) AS granted",
        )
        .bind::<BigInt, _>(SCHEDULER_LOCK_KEY);
        let probe = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            q.get_result::<Granted>(&mut self.conn),
        );
        matches!(probe.await, Ok(Ok(Granted { granted: true })))
    }

    /// Releases the lock (also released when the connection closes).
    pub async fn release(mut self) {
        let _ = diesel::sql_query("SELECT pg_advisory_unlock($1)")
            .bind::<BigInt, _>(SCHEDULER_LOCK_KEY)
            .execute(&mut self.conn)
            .await;
    }
}
