//! PostgreSQL: schema, connections and pool, embedded migrations, administration, and the managed
//! local cluster (spec: database.md).

pub mod admin;
pub mod connect;
pub mod cycles;
pub mod lock;
pub mod managed;
pub mod migrate;
pub mod schema;
pub mod status;
pub mod tasks;

pub use connect::{connect, pool, DbError, DbPool};

use crate::config::DatabaseUrl;

/// Creates the database if missing and applies the migrations: what every service does at start-up
/// on a database it manages itself.
pub async fn prepare(url: &DatabaseUrl) -> Result<usize, DbError> {
    admin::create(url).await?;
    migrate::run_pending(url).await
}
