//! Command groups whose services later issues build (executor, environments, reference miner). Their flags and configuration are already parsed and validated, so scripts and
//! env files can be checked now; running them says plainly that the service is not in this build.

use std::path::PathBuf;

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

/// `kinitro env` commands (environments.md 11).
#[derive(Debug, Subcommand)]
pub enum EnvCommand {
    /// List the registered environments
    List {
        /// JSON output
        #[arg(long)]
        json: bool,
    },
    /// Check the assets of an environment family (MetaWorld runs in-process)
    Build {
        /// Family, e.g. metaworld
        family: String,
        /// MetaWorld scene files
        #[arg(long)]
        assets_dir: Option<PathBuf>,
        /// Skip the rendering check
        #[arg(long)]
        no_render: bool,
        /// Accepted and ignored (no container image is built)
        #[arg(long)]
        tag: Option<String>,
        /// Needs the docker evaluation mode (not in this build)
        #[arg(long)]
        push: bool,
    },
    /// Run episodes of one environment with a reference policy
    Test {
        /// Environment id, e.g. metaworld/pick-place-v3
        env_id: String,
        /// Episodes
        #[arg(long)]
        episodes: Option<u32>,
        /// First seed
        #[arg(long)]
        seed: Option<u64>,
        /// Steps per episode
        #[arg(long)]
        max_steps: Option<u32>,
        /// Policy
        #[arg(long, value_enum)]
        policy: Option<crate::config::miner::PolicyKind>,
        /// No camera images
        #[arg(long)]
        no_images: bool,
        /// Write episode records here
        #[arg(long)]
        record_dir: Option<PathBuf>,
        /// Save camera images with the records
        #[arg(long)]
        save_images: bool,
        /// JSON output
        #[arg(long)]
        json: bool,
    },
}

/// Reports that the environments are not built yet (`--push` is a usage error as config.md 3.6 says).
pub fn env(cmd: EnvCommand) -> CommandResult {
    if let EnvCommand::Build { push: true, .. } = cmd {
        return Err(Failure::usage(
            "building container images needs the docker evaluation mode, which is not in this build",
        ));
    }
    if let EnvCommand::Build { family, .. } = &cmd {
        if family != "metaworld" {
            return Err(Failure::runtime(format!(
                "environment family '{family}' is not in this build (available: metaworld)"
            )));
        }
    }
    Err(not_available("the MetaWorld simulation (kinitro env)"))
}

/// `kinitro miner` commands.
#[derive(Debug, Subcommand)]
pub enum MinerCommand {
    /// Serve a reference policy over the miner protocol
    Serve(MinerFlags),
}

/// Validates the miner configuration, then reports that the server is not built yet.
pub fn miner(cmd: MinerCommand) -> CommandResult {
    let MinerCommand::Serve(flags) = cmd;
    MinerConfig::resolve(&flags, &Env::from_process(&["KINITRO_MINER_"]))?;
    Err(not_available("the reference miner (kinitro miner serve)"))
}
