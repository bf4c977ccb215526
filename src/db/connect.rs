//! Opening connections and pools, with errors that say where the server was expected.

use std::time::Duration;

use diesel_async::pooled_connection::deadpool::Pool;
use diesel_async::pooled_connection::{
    AsyncDieselConnectionManager, ManagerConfig, RecyclingMethod,
};
use diesel_async::AsyncPgConnection;
use futures_util::FutureExt;
use thiserror::Error;

use crate::config::DatabaseUrl;

/// How long a connection attempt and a pool checkout may take (docs/database.md §1).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The deadpool of diesel-async connections every service uses.
pub type DbPool = Pool<AsyncPgConnection>;

/// A database failure, worded for operators.
#[derive(Debug, Error)]
pub enum DbError {
    /// The server could not be reached or refused the login.
    #[error("cannot connect to PostgreSQL at {target}: {reason}")]
    Connect {
        /// `host:port` or socket path.
        target: String,
        /// The driver's explanation.
        reason: String,
    },
    /// A query failed.
    #[error("database error: {0}")]
    Query(#[from] diesel::result::Error),
    /// Migrations failed.
    #[error("migration failed: {0}")]
    Migration(String),
    /// Anything else, already worded.
    #[error("{0}")]
    Other(String),
}

/// The innermost cause of a tokio-postgres error (its `Display` alone says only "error connecting").
fn root_cause(e: &tokio_postgres::Error) -> String {
    let mut cause: &dyn std::error::Error = e;
    while let Some(inner) = cause.source() {
        cause = inner;
    }
    if let Some(db) = e.as_db_error() {
        return db.message().to_string();
    }
    cause.to_string()
}

/// Opens one connection to `url` (5 s timeout).
pub async fn connect(url: &DatabaseUrl) -> Result<AsyncPgConnection, DbError> {
    connect_with(url, url.pg_config()).await
}

/// Opens one connection with explicit settings (e.g. another database of the same server), with
/// TLS as `url`'s `sslmode` and `sslrootcert` say (docs/database.md §1.1).
pub async fn connect_with(
    url: &DatabaseUrl,
    mut config: tokio_postgres::Config,
) -> Result<AsyncPgConnection, DbError> {
    let err = |reason: String| DbError::Connect {
        target: url.target(),
        reason,
    };
    config.connect_timeout(CONNECT_TIMEOUT);
    let tls = super::tls::MakeRustls::new(&url.tls()).map_err(err)?;
    let (client, connection) = tokio::time::timeout(CONNECT_TIMEOUT, config.connect(tls))
        .await
        .map_err(|_| err("timed out".into()))?
        .map_err(|e| err(root_cause(&e)))?;
    AsyncPgConnection::try_from_client_and_connection(client, connection)
        .await
        .map_err(|e| err(e.to_string()))
}

/// Builds a pool of `size` connections; checkouts wait at most [`CONNECT_TIMEOUT`].
pub fn pool(url: &DatabaseUrl, size: usize) -> Result<DbPool, DbError> {
    pool_with(url, size, None)
}

/// How long one statement of the public read endpoints may run (docs/api.md §1.3).
pub const PUBLIC_STATEMENT_TIMEOUT: Duration = Duration::from_secs(5);

/// The pool of the API's public read endpoints: `size` connections whose statements are cancelled
/// by the server after [`PUBLIC_STATEMENT_TIMEOUT`].
pub fn public_pool(url: &DatabaseUrl, size: usize) -> Result<DbPool, DbError> {
    pool_with(url, size, Some(PUBLIC_STATEMENT_TIMEOUT))
}

/// Builds a pool; `statement_timeout` is set on each new connection when given.
fn pool_with(
    url: &DatabaseUrl,
    size: usize,
    statement_timeout: Option<Duration>,
) -> Result<DbPool, DbError> {
    let mut setup = ManagerConfig::<AsyncPgConnection>::default();
    // A checkout only checks that the connection is open and idle, without a test query per request:
    // a connection the server closed is seen as closed and replaced.
    setup.recycling_method = RecyclingMethod::Fast;
    let owned = url.clone();
    setup.custom_setup = Box::new(move |_| {
        let url = owned.clone();
        async move {
            let mut conn = connect(&url)
                .await
                .map_err(|e| diesel::ConnectionError::BadConnection(e.to_string()))?;
            if let Some(limit) = statement_timeout {
                use diesel_async::SimpleAsyncConnection;
                conn.batch_execute(&format!("SET statement_timeout = {}", limit.as_millis()))
                    .await
                    .map_err(|e| diesel::ConnectionError::BadConnection(e.to_string()))?;
            }
            Ok(conn)
        }
        .boxed()
    });
    let manager = AsyncDieselConnectionManager::new_with_config(url.as_str(), setup);
    Pool::builder(manager)
        .max_size(size)
        .wait_timeout(Some(CONNECT_TIMEOUT))
        .create_timeout(Some(CONNECT_TIMEOUT))
        .recycle_timeout(Some(CONNECT_TIMEOUT))
        .runtime(deadpool::Runtime::Tokio1)
        .build()
        .map_err(|e| DbError::Other(format!("cannot build the connection pool: {e}")))
}
