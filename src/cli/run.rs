//! `kinitro run`: everything in one process (config.md 3.4).
//!
//! This build runs the API and the scheduler (miners file or chain) on the given database or on the
//! managed local PostgreSQL; the local executor joins them when its issue lands (until then tasks
//! wait for remote executors), and `--demo` needs it.

use clap::Args;

use super::{init_logging, CommandResult, Failure};
use crate::api::{self, AppState};
use crate::config::run::{RunConfig, RunFlags};
use crate::config::{Env, LogFormat, LogLevel};
use crate::db::{self, managed};

/// `kinitro run` options.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Run flags.
    #[command(flatten)]
    pub flags: RunFlags,
}

/// Starts the database (managed or given), then the services, until SIGINT/SIGTERM.
pub fn execute(args: RunArgs, level: Option<LogLevel>, format: Option<LogFormat>) -> CommandResult {
    let config = RunConfig::resolve(&args.flags)?;
    if config.demo {
        return Err(Failure::runtime(
            "kinitro run --demo is not available yet in this build: it needs the scheduler, the \
             executor and the reference miners",
        ));
    }
    config.api.check_auth()?;
    init_logging(level, format, Some(&Env::from_process(&["KINITRO_RUN_"])))?;
    super::api::log_auth_mode(&config.api);
    actix_web::rt::System::new().block_on(async move {
        let mut cluster = None;
        let url = match &config.database_url {
            Some(url) => url.clone(),
            None => {
                let opts = managed::ClusterOptions {
                    data_dir: config.data_dir.clone(),
                    tcp_port: config.pg_port,
                };
                tracing::info!(data_dir = %config.data_dir.display(), "starting the managed PostgreSQL");
                let started = tokio::task::spawn_blocking(move || managed::ManagedPostgres::start(&opts))
                    .await
                    .map_err(Failure::runtime)??;
                let url = started.url().clone();
                cluster = Some(started);
                url
            }
        };
        let served = serve(&config, &url).await;
        if let Some(mut c) = cluster {
            tracing::info!("stopping the managed PostgreSQL");
            tokio::task::spawn_blocking(move || c.stop()).await.map_err(Failure::runtime)?;
        }
        served
    })
}

async fn serve(config: &RunConfig, url: &crate::config::DatabaseUrl) -> CommandResult {
    let applied = db::prepare(url).await?;
    tracing::info!(applied, target = %url.target(), "database ready");
    let pool = db::pool(url, config.api.db_pool_size)?;
    // One registry for every part of the process (api.md 4.12).
    let metrics = std::sync::Arc::new(api::metrics::Metrics::new());
    let state = AppState::new(&config.api, pool, metrics.clone());
    let cache = state.weights_cache.clone();
    let scheduler = super::scheduler::prepare(config.scheduler.clone(), url)
        .await?
        .on_new_weights(std::sync::Arc::new(move || *cache.lock().unwrap() = None))
        .with_metrics(metrics);
    let scheduler = actix_web::rt::spawn(scheduler.run(super::scheduler::shutdown_signal()));
    if config.executor.pools > 0 {
        tracing::warn!("the local executor is not in this build yet: tasks wait for remote executors (kinitro executor or upstream executors via the API)");
    }
    let server = api::serve(&config.api, state).map_err(|e| {
        Failure::runtime(format!(
            "cannot bind {}:{}: {e}",
            config.api.host, config.api.port
        ))
    })?;
    let handle = server.handle();
    let shown_host = if config.api.host == "0.0.0.0" {
        "127.0.0.1"
    } else {
        config.api.host.as_str()
    };
    println!(
        "kinitro API: http://{shown_host}:{}  (weights: /v1/weights/latest)",
        config.api.port
    );
    let server = actix_web::rt::spawn(server);
    // Shutdown order: the scheduler fails its running cycle first, then the API stops; a lost
    // scheduler lock stops the whole process.
    let outcome = scheduler.await.map_err(Failure::runtime)?;
    handle.stop(true).await;
    let _ = server.await;
    outcome.map_err(Failure::runtime)
}
