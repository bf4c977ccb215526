//! `kinitro miner serve`: the reference policy server (docs/miner-protocol.md §8).

use clap::Subcommand;

use super::{CommandResult, Failure};
use crate::config::miner::{MinerConfig, MinerFlags};
use crate::config::Env;

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
