//! `kinitro executor`: the remote executor (docs/executor.md §3).

use std::sync::Arc;

use clap::Args;

use super::{init_logging, CommandResult, Failure};
use crate::config::executor::{EvalMode, ExecutorConfig, ExecutorFlags};
use crate::config::{Env, LogFormat, LogLevel};
use crate::executor::basilica::BasilicaEvaluator;
use crate::executor::docker::DockerEvaluator;
use crate::executor::{self, Evaluator, Pools};

/// `kinitro executor` options.
#[derive(Debug, Args)]
pub struct ExecutorArgs {
    /// Executor flags.
    #[command(flatten)]
    pub flags: ExecutorFlags,
}

/// Start-up checks shared with the local executor of `kinitro run`: assets, scenes, rendering.
pub fn check_simulation(config: &ExecutorConfig) -> Result<std::path::PathBuf, Failure> {
    let assets = crate::config::metaworld_assets_dir()?;
    crate::sim::assets::check(&assets).map_err(Failure::runtime)?;
    executor::worker::probe(&assets, &executor::served_tasks(config), config.use_images)
        .map_err(Failure::runtime)?;
    if config.privileged_state {
        tracing::warn!("KINITRO_EXECUTOR_PRIVILEGED_STATE is on: observations reveal object and goal positions (reference policies only)");
    }
    if config.allow_private_endpoints {
        tracing::warn!(
            "KINITRO_EXECUTOR_ALLOW_PRIVATE_ENDPOINTS is on: the miner address guard is off"
        );
    }
    Ok(assets)
}

/// Refuses a plain-HTTP API URL whose host is, or resolves to, a public address: the executor's key
/// and every claimed task's secret seed would cross the internet in clear (docs/executor.md §3).
/// Loopback and private addresses (a compose service name such as `http://api:8000`) stay allowed;
/// nothing is connected to before this check.
pub fn check_api_url(api_url: &str, allow_insecure: bool) -> Result<(), Failure> {
    let url = url::Url::parse(api_url)
        .map_err(|e| Failure::runtime(format!("invalid API URL {api_url}: {e}")))?;
    if url.scheme() != "http" || allow_insecure {
        return Ok(());
    }
    let host = url.host_str().unwrap_or_default().trim_matches(['[', ']']);
    let port = url.port_or_known_default().unwrap_or(80);
    let addresses: Vec<std::net::IpAddr> = match host.parse() {
        Ok(ip) => vec![ip],
        Err(_) => std::net::ToSocketAddrs::to_socket_addrs(&(host, port))
            .map(|a| a.map(|s| s.ip()).collect())
            .unwrap_or_default(),
    };
    match addresses.into_iter().find(|ip| executor::guard::public(*ip)) {
        Some(ip) => Err(Failure::runtime(format!(
            "refusing to send the executor key over plain HTTP to a public address ({host} is {ip}): \
             use https://, or --allow-insecure-api (KINITRO_EXECUTOR_ALLOW_INSECURE_API=true)"
        ))),
        None => Ok(()),
    }
}

/// Runs the remote executor until SIGINT/SIGTERM.
pub fn execute(
    args: ExecutorArgs,
    level: Option<LogLevel>,
    format: Option<LogFormat>,
) -> CommandResult {
    let env = Env::from_process(&["KINITRO_EXECUTOR_"]);
    let config = ExecutorConfig::resolve(&args.flags, &env)?;
    check_api_url(&config.api_url, config.allow_insecure_api)?;
    init_logging(level, format, Some(&env))?;
    // The container modes check scenes and rendering inside their containers.
    let assets = match config.eval_mode {
        EvalMode::Native => Some(check_simulation(&config)?),
        EvalMode::Docker | EvalMode::Basilica => None,
    };
    actix_web::rt::System::new().block_on(async move {
        let metrics = Arc::new(crate::metrics::Metrics::new());
        if let Some(addr) = &config.metrics_addr {
            super::scheduler::serve_metrics(addr, metrics.clone())?;
        }
        let pools = Arc::new(match (assets, config.eval_mode) {
            (Some(assets), _) => Evaluator::InProcess(Pools::start(&config, assets, Some(metrics))),
            (None, EvalMode::Basilica) => Evaluator::Basilica(
                BasilicaEvaluator::start(&config).await.map_err(Failure::runtime)?,
            ),
            (None, _) => Evaluator::Docker(
                DockerEvaluator::start(&config, Some(metrics)).await.map_err(Failure::runtime)?,
            ),
        });
        tracing::info!(event = "executor_started", id = %config.executor_id, mode = "remote", eval_mode = ?config.eval_mode, pools = config.pools,
            slots = pools.slots(), env_ids = ?executor::served_tasks(&config).iter().map(|t| t.env_id()).collect::<Vec<_>>(),
            shard_index = config.shard_index, shard_count = config.shard_count, api = %config.api_url, "executor started");
        let sink = crate::verify::spot::Sink::Api { base: config.api_url.clone(), key: config.api_key.clone() };
        let spotter = crate::verify::spot::start_if_enabled(&config, &config.executor_id, sink)
            .await
            .map_err(Failure::runtime)?;
        executor::remote::run(config, pools, spotter, super::scheduler::shutdown_signal()).await.map_err(Failure::runtime)
    })
}
