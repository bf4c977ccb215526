//! `kinitro scheduler` (docs/configuration.md §3.2, docs/scheduler.md): the cycle loop against
//! PostgreSQL.

use std::path::PathBuf;

use clap::Args;

use super::{init_logging, CommandResult, Failure};
use crate::config::scheduler::{SchedulerConfig, SchedulerFlags};
use crate::config::{
    resolve_database_url, DatabaseUrl, Env, LogFormat, LogLevel, DEFAULT_DATABASE_URL,
};
use crate::db;
use crate::scheduler::Scheduler;

/// `kinitro scheduler` options.
#[derive(Debug, Args)]
pub struct SchedulerArgs {
    /// PostgreSQL URL [env: KINITRO_SCHEDULER_DATABASE_URL, then KINITRO_DATABASE_URL]
    #[arg(long, value_parser = DatabaseUrl::parse)]
    pub database_url: Option<DatabaseUrl>,
    /// File holding the X25519 private key [env: KINITRO_SCHEDULER_BACKEND_PRIVATE_KEY_FILE]
    #[arg(long)]
    pub backend_private_key_file: Option<PathBuf>,
    /// Scheduler flags.
    #[command(flatten)]
    pub flags: SchedulerFlags,
}

/// Resolves when the process receives SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// Prepares a scheduler on `url` (migrations already applied).
pub async fn prepare(mut config: SchedulerConfig, url: &DatabaseUrl) -> Result<Scheduler, Failure> {
    if config.netuid_defaulted && config.miners_file.is_none() {
        tracing::warn!(
            netuid = config.netuid,
            "no --netuid given: using the default"
        );
    }
    config.database_url = Some(url.clone());
    let pool = db::pool(url, config.db_pool_size)?;
    Scheduler::prepare(config, pool)
        .await
        .map_err(Failure::runtime)
}

/// Start-up, then cycles until SIGINT/SIGTERM (exit 0) or a lost lock (exit 1).
pub fn execute(
    args: SchedulerArgs,
    level: Option<LogLevel>,
    format: Option<LogFormat>,
) -> CommandResult {
    let env = Env::from_process(&["KINITRO_SCHEDULER_"]);
    let url = resolve_database_url(args.database_url, &env, Some(DEFAULT_DATABASE_URL))?
        .expect("a default is given");
    let config = SchedulerConfig::resolve(
        &args.flags,
        Some(url.clone()),
        args.backend_private_key_file,
        &env,
    )?;
    if config.miners_file.is_none() {
        crate::chain::registration::network_url(&config.network).map_err(Failure::runtime)?;
    }
    init_logging(level, format, Some(&env))?;
    actix_web::rt::System::new().block_on(async move {
        db::migrate::run_pending(&url).await?;
        let metrics = std::sync::Arc::new(crate::metrics::Metrics::new());
        if let Some(addr) = &config.metrics_addr {
            serve_metrics(addr, metrics.clone())?;
        }
        let scheduler = prepare(config, &url).await?.with_metrics(metrics);
        scheduler
            .run(shutdown_signal())
            .await
            .map_err(Failure::runtime)
    })
}

/// Serves `GET /metrics` of `metrics` on `addr` (`host:port`), for a standalone scheduler or executor.
pub fn serve_metrics(
    addr: &str,
    metrics: std::sync::Arc<crate::metrics::Metrics>,
) -> CommandResult {
    use actix_web::{web, App, HttpResponse, HttpServer};
    let server = HttpServer::new(move || {
        let m = metrics.clone();
        App::new().route(
            "/metrics",
            web::get().to(move || {
                let m = m.clone();
                async move {
                    HttpResponse::Ok()
                        .content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
                        .body(m.encode())
                }
            }),
        )
    })
    .workers(1)
    .disable_signals()
    .bind(addr)
    .map_err(|e| Failure::runtime(format!("cannot bind the metrics address {addr}: {e}")))?
    .run();
    actix_web::rt::spawn(server);
    tracing::info!(addr, "serving /metrics");
    Ok(())
}
