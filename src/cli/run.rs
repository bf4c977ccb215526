//! `kinitro run`: everything in one process (docs/configuration.md §3.4).
//!
//! The API, the scheduler (miners file or chain) and the local executor (docs/executor.md §4) on
//! the given database or on the managed local PostgreSQL. `--demo` also starts three reference
//! miners on loopback (uid 0 expert, 1 random, 2 zero), writes the miners file naming them, and
//! evaluates them.

use clap::Args;

use super::progress::Progress;
use super::{init_logging, CommandResult, Failure};
use crate::api::{self, AppState};
use std::sync::Arc;

use crate::config::miner::{MinerConfig, PolicyKind};
use crate::config::run::{RunConfig, RunFlags};
use crate::config::{Env, LogFormat, LogLevel};
use crate::db::{self, managed};
use crate::executor::basilica::BasilicaEvaluator;
use crate::executor::docker::DockerEvaluator;
use crate::executor::local::LocalQueue;
use crate::executor::{Evaluator, Pools};

/// `kinitro run` options.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Run flags.
    #[command(flatten)]
    pub flags: RunFlags,
}

/// Starts the database (managed or given), then the services, until SIGINT/SIGTERM.
pub fn execute(args: RunArgs, level: Option<LogLevel>, format: Option<LogFormat>) -> CommandResult {
    let mut config = RunConfig::resolve(&args.flags)?;
    // The demo (loopback only, issue 23 item 10) accepts any key; everything else needs a long one.
    if config.demo {
        config.api.check_keys(1)?;
    } else {
        config.api.check_auth()?;
    }
    init_logging(level, format, Some(&Env::from_process(&["KINITRO_RUN_"])))?;
    super::api::log_auth_mode(&config.api);
    let native = config.executor.eval_mode == crate::config::executor::EvalMode::Native;
    let assets = if config.executor.pools > 0 && native {
        Some(super::executor::check_simulation(&config.executor)?)
    } else {
        None
    };
    actix_web::rt::System::new().block_on(async move {
        // The logs say each stage; on a terminal a spinner shows it too, until the API listens.
        let startup = Progress::spinner("starting", false);
        let _miners = if config.demo { Some(start_demo_miners(&mut config)?) } else { None };
        let mut cluster = None;
        let url = match &config.database_url {
            Some(url) => url.clone(),
            None => {
                let opts = managed::ClusterOptions {
                    data_dir: config.data_dir.clone(),
                    tcp_port: config.pg_port,
                };
                tracing::info!(data_dir = %config.data_dir.display(), "starting the managed PostgreSQL");
                startup.message("starting the managed PostgreSQL");
                let started = tokio::task::spawn_blocking(move || managed::ManagedPostgres::start(&opts))
                    .await
                    .map_err(Failure::runtime)??;
                let url = started.url().clone();
                cluster = Some(started);
                url
            }
        };
        let served = serve(&config, &url, assets, startup).await;
        if let Some(mut c) = cluster {
            tracing::info!("stopping the managed PostgreSQL");
            tokio::task::spawn_blocking(move || c.stop()).await.map_err(Failure::runtime)?;
        }
        served
    })
}

/// The demo's reference miners: (uid, policy, repo).
const DEMO_MINERS: [(u16, PolicyKind, &str, &str); 3] = [
    (
        0,
        PolicyKind::Expert,
        "demo/expert",
        "5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQY",
    ),
    (
        1,
        PolicyKind::Random,
        "demo/random",
        "5FHneW46xGXgs5mUiveU4sbTyGBzmstUspZC92UhjJM694ty",
    ),
    (
        2,
        PolicyKind::Zero,
        "demo/zero",
        "5FLSigC9HGRKVhB9FiEo4Y3koPsNmBmLJbpXg2mp1hXcS59Y",
    ),
];

/// Starts the demo miners on free loopback ports and points the scheduler at a miners file
/// naming them (written into the data directory).
fn start_demo_miners(config: &mut RunConfig) -> Result<Vec<actix_web::dev::ServerHandle>, Failure> {
    let mut handles = Vec::new();
    let mut file = String::from("# Written by kinitro run --demo: the local reference miners.\n");
    for (uid, policy, repo, hotkey) in DEMO_MINERS {
        let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).map_err(Failure::runtime)?;
        let port = listener.local_addr().map_err(Failure::runtime)?.port();
        let miner = MinerConfig {
            host: "127.0.0.1".into(),
            port,
            policy,
            seed: u64::from(uid),
            delay_ms: 0,
        };
        let server = crate::miner::server::serve_on(&miner, listener).map_err(Failure::runtime)?;
        handles.push(server.handle());
        actix_web::rt::spawn(server);
        file += &format!(
            "\n[[miners]]\nuid = {uid}\nhotkey = \"{hotkey}\"\nendpoint = \"http://127.0.0.1:{port}\"\ncommit_block = {}\nrepo = \"{repo}\"\n",
            100 + u64::from(uid)
        );
        println!("demo miner uid {uid} ({repo}) on http://127.0.0.1:{port}");
    }
    std::fs::create_dir_all(&config.data_dir).map_err(Failure::runtime)?;
    let path = config.data_dir.join("demo-miners.toml");
    std::fs::write(&path, file)
        .map_err(|e| Failure::runtime(format!("cannot write {}: {e}", path.display())))?;
    config.scheduler.miners_file = Some(path);
    Ok(handles)
}

async fn serve(
    config: &RunConfig,
    url: &crate::config::DatabaseUrl,
    assets: Option<std::path::PathBuf>,
    startup: Progress,
) -> CommandResult {
    startup.message("applying migrations");
    let applied = db::prepare(url).await?;
    tracing::info!(applied, database = %url.target(), "database ready");
    let pool = db::pool(url, config.api.db_pool_size)?;
    // One registry for every part of the process (docs/api.md §4.12).
    let metrics = std::sync::Arc::new(crate::metrics::Metrics::new());
    let public_pool = db::public_pool(url, crate::api::PUBLIC_POOL_SIZE)?;
    let state = AppState::new(&config.api, pool.clone(), public_pool, metrics.clone());
    let cache = state.weights_cache.clone();
    startup.message("starting the scheduler");
    let scheduler = super::scheduler::prepare(config.scheduler.clone(), url)
        .await?
        .on_new_weights(std::sync::Arc::new(move || *cache.lock().unwrap() = None))
        .with_metrics(metrics.clone());
    let scheduler = scheduler.start();
    let (queue, work_available) = (scheduler.queue.clone(), scheduler.work_available.clone());
    let scheduler = actix_web::rt::spawn(scheduler.wait(super::scheduler::shutdown_signal()));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let executor_id = format!("local-{}", hex::encode(rand::random::<[u8; 4]>()));
    startup.message("starting the local executor");
    let evaluator = match assets {
        Some(assets) => Some(Evaluator::InProcess(Pools::start(
            &config.executor,
            assets,
            Some(metrics.clone()),
        ))),
        None if config.executor.pools > 0 => {
            let mut executor = config.executor.clone();
            executor.executor_id = executor_id.clone();
            Some(match executor.eval_mode {
                crate::config::executor::EvalMode::Basilica => Evaluator::Basilica(
                    BasilicaEvaluator::start(&executor)
                        .await
                        .map_err(Failure::runtime)?,
                ),
                _ => Evaluator::Docker(
                    DockerEvaluator::start(&executor, Some(metrics.clone()))
                        .await
                        .map_err(Failure::runtime)?,
                ),
            })
        }
        None => None,
    };
    let spotter = match &evaluator {
        Some(_) => crate::verify::spot::start_if_enabled(
            &config.executor,
            &executor_id,
            crate::verify::spot::Sink::Database(pool.clone(), metrics.clone()),
        )
        .await
        .map_err(Failure::runtime)?,
        None => None,
    };
    let local = evaluator.map(|evaluator| {
        let queue = LocalQueue {
            spotter,
            executor_id,
            pools: Arc::new(evaluator),
            queue,
            work_available,
            filter: kinitro_actors::ports::TaskFilter {
                env_ids: config.executor.env_ids.clone(),
                shard: (config.executor.shard_count > 1).then_some((
                    config.executor.shard_index as i32,
                    config.executor.shard_count as i32,
                )),
            },
            poll_interval: std::time::Duration::from_secs_f64(
                config.executor.poll_interval.0.clamp(0.05, 5.0),
            ),
        };
        actix_web::rt::spawn(queue.run(stop_rx))
    });
    if local.is_none() {
        tracing::info!(
            "KINITRO_EXECUTOR_POOLS=0: no local executor; tasks wait for remote executors"
        );
    }
    let server = api::serve(&config.api, state).map_err(|e| {
        Failure::runtime(format!(
            "cannot bind {}:{}: {e}",
            config.api.host, config.api.port
        ))
    })?;
    let handle = server.handle();
    startup.finish();
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
    let _ = stop_tx.send(true);
    if let Some(local) = local {
        let _ = local.await;
    }
    handle.stop(true).await;
    let _ = server.await;
    outcome.map_err(Failure::runtime)
}
