//! Command groups whose services are partly built: the executor (configuration only), the
//! environments (list and scene compilation) and the reference miner. Their flags and configuration are already parsed and validated, so scripts and
//! env files can be checked now; running them says plainly that the service is not in this build.

use clap::{Args, Subcommand};

use super::{CommandResult, Failure};
use crate::config::executor::{ExecutorConfig, ExecutorFlags};
use crate::config::miner::{MinerConfig, MinerFlags};
use crate::config::Env;

fn not_available(what: &str) -> Failure {
    Failure::runtime(format!("{what} is not available yet in this build"))
}

/// `kinitro executor` options.
#[derive(Debug, Args)]
pub struct ExecutorArgs {
    /// Executor flags.
    #[command(flatten)]
    pub flags: ExecutorFlags,
}

/// Validates the executor configuration, then reports that the service is not built yet.
pub fn executor(args: ExecutorArgs) -> CommandResult {
    let config = ExecutorConfig::resolve(&args.flags, &Env::from_process(&["KINITRO_EXECUTOR_"]))?;
    if config.eval_mode == crate::config::executor::EvalMode::Docker {
        return Err(Failure::runtime(
            "--eval-mode docker needs the docker evaluation mode, which is not in this build; use native",
        ));
    }
    Err(not_available("the executor service (kinitro executor)"))
}

/// `kinitro miner` commands.
#[derive(Debug, Subcommand)]
pub enum MinerCommand {
    /// Serve a reference policy over the miner protocol
    Serve(MinerFlags),
}

/// Runs the reference miner until SIGINT/SIGTERM.
pub fn miner(
    cmd: MinerCommand,
    level: Option<crate::config::LogLevel>,
    format: Option<crate::config::LogFormat>,
) -> CommandResult {
    let MinerCommand::Serve(flags) = cmd;
    let env = Env::from_process(&["KINITRO_MINER_"]);
    let config = MinerConfig::resolve(&flags, &env)?;
    super::init_logging(level, format, Some(&env))?;
    actix_web::rt::System::new().block_on(async move {
        let server = crate::miner::server::serve(&config)
            .map_err(|e| Failure::runtime(format!("cannot bind {}:{}: {e}", config.host, config.port)))?;
        tracing::info!(host = %config.host, port = config.port, policy = ?config.policy, "reference miner listening");
        server.await.map_err(Failure::runtime)
    })
}
