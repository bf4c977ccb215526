//! Embedded migrations, applied under an advisory lock so that processes starting together do not
//! race (docs/database.md §1).

use diesel::RunQueryDsl;
use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
use diesel_async::AsyncPgConnection;
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};

use super::connect::{connect, DbError};
use crate::config::DatabaseUrl;

/// The SQL files under migrations/, compiled into the binary.
pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations");

/// Advisory-lock key serialising migrations ("kinitro" + 1 as bytes; distinct from the scheduler's).
pub const MIGRATION_LOCK_KEY: i64 = 0x6b69_6e69_7472_6f01;

/// Applies pending migrations and returns how many were applied.
///
/// diesel's migration harness is synchronous; it runs on a blocking thread through
/// `AsyncConnectionWrapper`, which works on actix's current-thread runtime too.
pub async fn run_pending(url: &DatabaseUrl) -> Result<usize, DbError> {
    let conn = connect(url).await?;
    tokio::task::spawn_blocking(move || {
        let mut wrapper: AsyncConnectionWrapper<AsyncPgConnection> = conn.into();
        let lock = |sql: &str, w: &mut AsyncConnectionWrapper<AsyncPgConnection>| {
            diesel::sql_query(sql)
                .bind::<diesel::sql_types::BigInt, _>(MIGRATION_LOCK_KEY)
                .execute(w)
                .map_err(DbError::Query)
        };
        lock("SELECT pg_advisory_lock($1)", &mut wrapper)?;
        let applied = wrapper
            .run_pending_migrations(MIGRATIONS)
            .map(|v| v.len())
            .map_err(|e| DbError::Migration(e.to_string()));
        let unlocked = lock("SELECT pg_advisory_unlock($1)", &mut wrapper);
        let applied = applied?;
        unlocked?;
        Ok(applied)
    })
    .await
    .map_err(|e| DbError::Other(format!("migration task failed: {e}")))?
}

/// The number of migrations compiled into this binary.
pub fn embedded_count() -> usize {
    use diesel::migration::MigrationSource;
    MigrationSource::<diesel::pg::Pg>::migrations(&MIGRATIONS).map_or(0, |m| m.len())
}
