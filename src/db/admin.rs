//! `kinitro db create | reset | drop`: database administration (docs/configuration.md §3.5).

use diesel::sql_types::{Bool, Text};
use diesel::QueryableByName;
use diesel_async::{RunQueryDsl, SimpleAsyncConnection};

use super::connect::{connect, connect_with, DbError};
use super::migrate;
use crate::config::DatabaseUrl;

/// The project's tables, children first (docs/database.md §2), and diesel's bookkeeping table.
pub const PROJECT_TABLES: [&str; 9] = [
    "verifications",
    "scheduler_secret",
    "scheduler_state",
    "computed_weights",
    "miner_scores",
    "task_pool",
    "miners",
    "evaluation_cycles",
    "__diesel_schema_migrations",
];

#[derive(QueryableByName)]
struct Exists {
    #[diesel(sql_type = Bool)]
    exists: bool,
}

/// Quotes an identifier for SQL (`"` doubled).
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A connection to the `postgres` maintenance database of the same server, same credentials.
async fn maintenance(url: &DatabaseUrl) -> Result<diesel_async::AsyncPgConnection, DbError> {
    let mut config = url.pg_config();
    config.dbname("postgres");
    connect_with(url, config).await
}

async fn database_exists(
    conn: &mut diesel_async::AsyncPgConnection,
    name: &str,
) -> Result<bool, DbError> {
    let row: Exists =
        diesel::sql_query("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1) AS exists")
            .bind::<Text, _>(name)
            .get_result(conn)
            .await?;
    Ok(row.exists)
}

/// Creates the target database if missing; returns the line to print.
pub async fn create(url: &DatabaseUrl) -> Result<String, DbError> {
    let name = url.database();
    let mut conn = maintenance(url).await?;
    if database_exists(&mut conn, &name).await? {
        return Ok(format!("database {name} already exists"));
    }
    conn.batch_execute(&format!("CREATE DATABASE {}", quote_ident(&name)))
        .await?;
    Ok(format!("created {name}"))
}

/// Drops the project's schema objects inside the database and re-applies the migrations.
pub async fn reset(url: &DatabaseUrl) -> Result<usize, DbError> {
    let mut conn = connect(url).await?;
    let drops: String = PROJECT_TABLES
        .iter()
        .map(|t| format!("DROP TABLE IF EXISTS {} CASCADE;", quote_ident(t)))
        .collect();
    conn.batch_execute(&drops).await?;
    drop(conn);
    migrate::run_pending(url).await
}

/// Terminates other connections and drops the database; returns the line to print.
pub async fn drop_database(url: &DatabaseUrl) -> Result<String, DbError> {
    let name = url.database();
    let mut conn = maintenance(url).await?;
    if !database_exists(&mut conn, &name).await? {
        return Ok(format!("database {name} does not exist"));
    }
    diesel::sql_query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = $1 AND pid <> pg_backend_pid()",
    )
    .bind::<Text, _>(&name)
    .execute(&mut conn)
    .await?;
    conn.batch_execute(&format!("DROP DATABASE IF EXISTS {}", quote_ident(&name)))
        .await?;
    Ok(format!("dropped {name}"))
}
