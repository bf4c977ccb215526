//! PostgreSQL: schema, connections and pool, embedded migrations, administration, and the managed
//! local cluster (docs/database.md).

pub mod admin;
pub mod connect;
pub mod cycles;
pub mod history;
pub mod lock;
pub mod managed;
pub mod migrate;
pub mod schema;
pub mod states;
pub mod status;
pub mod store;
pub mod tasks;
pub mod telemetry;
pub mod tls;
pub mod verifications;
pub mod views;

pub use connect::{connect, pool, public_pool, DbError, DbPool};

use diesel::sql_types::{BigInt, Text};
use diesel::QueryableByName;
use diesel_async::{AsyncPgConnection, RunQueryDsl};

/// A `count(*) AS count` row.
#[derive(Debug, Clone, Copy, QueryableByName)]
pub struct Count {
    /// The count.
    #[diesel(sql_type = BigInt)]
    pub count: i64,
}

/// A `status, count(*) AS count … GROUP BY status` row.
#[derive(Debug, Clone, QueryableByName)]
pub struct StatusCount {
    /// The status.
    #[diesel(sql_type = Text)]
    pub status: String,
    /// Rows with it.
    #[diesel(sql_type = BigInt)]
    pub count: i64,
}

/// Runs a `SELECT count(*) AS count …` statement without parameters.
pub async fn count(conn: &mut AsyncPgConnection, sql: &str) -> Result<i64, DbError> {
    let c: Count = diesel::sql_query(sql).get_result(conn).await?;
    Ok(c.count)
}

use crate::config::DatabaseUrl;

/// Creates the database if missing and applies the migrations: what every service does at start-up
/// on a database it manages itself.
pub async fn prepare(url: &DatabaseUrl) -> Result<usize, DbError> {
    admin::create(url).await?;
    migrate::run_pending(url).await
}
