//! The command line (clap): one module per command group (docs/configuration.md §3).
//!
//! Exit status: 0 success, 1 runtime or start-up failure, 2 usage error.

pub mod api;
pub mod crypto;
pub mod db;
pub mod env;
pub mod executor;
pub mod healthcheck;
pub mod image;
pub mod miner;
pub mod progress;
pub mod run;
pub mod scheduler;
pub mod scoring;
pub mod verify;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{ConfigError, Env, LogFormat, LogLevel};

/// kinitro — evaluation backend: chain, cycles, MuJoCo episodes, scoring, weights API.
#[derive(Debug, Parser)]
#[command(name = "kinitro", version, about, propagate_version = true)]
pub struct Cli {
    /// Log level: trace, debug, info, warning, error [default: the service's *_LOG_LEVEL, else INFO]
    #[arg(long, global = true, value_parser = clap::value_parser!(LogLevel))]
    pub log_level: Option<LogLevel>,
    /// Log format [env: KINITRO_LOG_FORMAT, default json]
    #[arg(long, global = true, value_enum)]
    pub log_format: Option<LogFormat>,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

impl clap::builder::ValueParserFactory for LogLevel {
    type Parser = fn(&str) -> Result<LogLevel, String>;
    fn value_parser() -> Self::Parser {
        |s| s.parse()
    }
}

/// Command groups.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// HTTP API only (stateless; any number behind a load balancer)
    Api(api::ApiArgs),
    /// Scheduler only: miners, cycles, scoring, weights
    Scheduler(scheduler::SchedulerArgs),
    /// Remote executor: fetches tasks from the API and runs episodes
    Executor(executor::ExecutorArgs),
    /// API + scheduler + local executor in one process
    Run(run::RunArgs),
    /// Database administration
    Db(db::DbArgs),
    /// Environments: list, build (container image), serve, test
    #[command(subcommand)]
    Env(env::EnvCommand),
    /// The compose stacks' images: build (no registry needed)
    #[command(subcommand)]
    Image(image::ImageCommand),
    /// Reference miner
    #[command(subcommand)]
    Miner(miner::MinerCommand),
    /// Keys and commitments
    #[command(subcommand)]
    Crypto(crypto::CryptoCommand),
    /// Scoring on a JSON document or on generated data
    #[command(subcommand)]
    Scoring(scoring::ScoringCommand),
    /// Probe an API's /health (exit 0 on HTTP 200 within 3 s)
    Healthcheck(healthcheck::HealthcheckArgs),
    /// Verify by hand that a miner's endpoint serves its committed HuggingFace revision
    Verify(verify::VerifyArgs),
}

/// A failure with its exit status and one-line message.
#[derive(Debug)]
pub struct Failure {
    /// Exit status (1 runtime/start-up, 2 usage).
    pub code: u8,
    /// What to print on stderr.
    pub message: String,
}

impl Failure {
    /// A runtime or start-up failure (exit 1).
    pub fn runtime(message: impl std::fmt::Display) -> Self {
        Self {
            code: 1,
            message: message.to_string(),
        }
    }

    /// A usage error (exit 2).
    pub fn usage(message: impl std::fmt::Display) -> Self {
        Self {
            code: 2,
            message: message.to_string(),
        }
    }
}

impl From<ConfigError> for Failure {
    fn from(e: ConfigError) -> Self {
        Self::runtime(e)
    }
}

impl From<crate::db::DbError> for Failure {
    fn from(e: crate::db::DbError) -> Self {
        Self::runtime(e)
    }
}

/// The result of a command.
pub type CommandResult = Result<(), Failure>;

/// Installs logging from the global flags, a service log-level variable, then the default.
pub fn init_logging(
    cli_level: Option<LogLevel>,
    cli_format: Option<LogFormat>,
    level_env: Option<&Env>,
) -> CommandResult {
    let level = match (cli_level, level_env) {
        (Some(l), _) => l,
        (None, Some(env)) => crate::config::log_level(env)?.unwrap_or(LogLevel::Info),
        (None, None) => LogLevel::Info,
    };
    let format = match cli_format {
        Some(f) => f,
        None => crate::config::generic_env()
            .get::<LogFormat>("LOG_FORMAT")?
            .unwrap_or(LogFormat::Json),
    };
    crate::logging::init(level, format);
    if let Ok(gl) = std::env::var("MUJOCO_GL") {
        if !gl.eq_ignore_ascii_case("egl") {
            tracing::warn!(value = %gl, "MUJOCO_GL is ignored: rendering always uses EGL");
        }
    }
    Ok(())
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Api(args) => api::execute(args, cli.log_level, cli.log_format),
        Command::Run(args) => run::execute(args, cli.log_level, cli.log_format),
        Command::Db(args) => db::execute(args, cli.log_level, cli.log_format),
        Command::Scoring(cmd) => scoring::execute(cmd),
        Command::Healthcheck(args) => healthcheck::execute(args),
        Command::Scheduler(args) => scheduler::execute(args, cli.log_level, cli.log_format),
        Command::Executor(args) => executor::execute(args, cli.log_level, cli.log_format),
        Command::Env(cmd) => env::env(cmd, cli.log_level, cli.log_format),
        Command::Image(cmd) => image::execute(cmd),
        Command::Miner(cmd) => miner::miner(cmd, cli.log_level, cli.log_format),
        Command::Crypto(cmd) => crypto::execute(cmd),
        Command::Verify(args) => verify::execute(args, cli.log_level, cli.log_format),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("error: {}", f.message);
            ExitCode::from(f.code)
        }
    }
}

/// A multi-threaded tokio runtime for the commands that are not actix services.
pub fn tokio_runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Failure::runtime(format!("cannot start the async runtime: {e}")))
}
