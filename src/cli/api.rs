//! `kinitro api`: the HTTP API only (docs/configuration.md §3.1, docs/api.md §5).

use clap::Args;

use super::{init_logging, CommandResult, Failure};
use crate::api::{self, AppState};
use crate::config::api::{ApiConfig, ApiFlags};
use crate::config::{
    resolve_database_url, DatabaseUrl, Env, LogFormat, LogLevel, DEFAULT_DATABASE_URL,
};
use crate::db;

/// `kinitro api` options.
#[derive(Debug, Args)]
pub struct ApiArgs {
    /// PostgreSQL URL [env: KINITRO_API_DATABASE_URL, then KINITRO_DATABASE_URL]
    #[arg(long, value_parser = DatabaseUrl::parse)]
    pub database_url: Option<DatabaseUrl>,
    /// actix-web workers [env: KINITRO_API_WORKERS, default CPUs]
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    pub workers: Option<u16>,
    /// API flags.
    #[command(flatten)]
    pub flags: ApiFlags,
}

/// Logs how the task endpoints are protected.
pub fn log_auth_mode(config: &ApiConfig) {
    if config.auth_disabled {
        tracing::warn!("task endpoint authentication is DISABLED (--no-auth)");
    } else {
        tracing::info!(
            keys = config.api_keys.len(),
            "task endpoints require a Bearer API key"
        );
    }
}

/// Start-up: configuration check, migrations, bind, serve (docs/api.md §5).
pub fn execute(args: ApiArgs, level: Option<LogLevel>, format: Option<LogFormat>) -> CommandResult {
    let env = Env::from_process(&["KINITRO_API_"]);
    let url = resolve_database_url(args.database_url, &env, Some(DEFAULT_DATABASE_URL))?;
    let config = ApiConfig::resolve(&args.flags, url, args.workers.map(usize::from), &env)?;
    config.check_auth()?;
    init_logging(level, format, Some(&env))?;
    log_auth_mode(&config);
    let url = config
        .database_url
        .clone()
        .expect("api always has a database URL");
    actix_web::rt::System::new().block_on(async move {
        let applied = db::migrate::run_pending(&url).await?;
        tracing::info!(applied, database = %url.target(), "database ready");
        let pool = db::pool(&url, config.db_pool_size)?;
        let public_pool = db::public_pool(&url, api::PUBLIC_POOL_SIZE)?;
        let state = AppState::new(
            &config,
            pool,
            public_pool,
            std::sync::Arc::new(crate::metrics::Metrics::new()),
        );
        let server = api::serve(&config, state).map_err(|e| {
            Failure::runtime(format!("cannot bind {}:{}: {e}", config.host, config.port))
        })?;
        tracing::info!(host = %config.host, port = config.port, "API listening");
        server.await.map_err(Failure::runtime)
    })
}
