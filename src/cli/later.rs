//! Command groups whose services later issues build (scheduler, executor, environments, reference
//! miner, crypto). Their flags and configuration are already parsed and validated, so scripts and
//! env files can be checked now; running them says plainly that the service is not in this build.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::{CommandResult, Failure};
use crate::config::executor::{ExecutorConfig, ExecutorFlags};
use crate::config::miner::{MinerConfig, MinerFlags};
use crate::config::scheduler::{SchedulerConfig, SchedulerFlags};
use crate::config::{resolve_database_url, DatabaseUrl, Env, DEFAULT_DATABASE_URL};

fn not_available(what: &str) -> Failure {
    Failure::runtime(format!("{what} is not available yet in this build"))
}

/// `kinitro scheduler` options.
#[derive(Debug, Args)]
pub struct SchedulerArgs {
    /// PostgreSQL URL [env: KINITRO_SCHEDULER_DATABASE_URL]
    #[arg(long, value_parser = DatabaseUrl::parse)]
    pub database_url: Option<DatabaseUrl>,
    /// File holding the X25519 private key [env: KINITRO_SCHEDULER_BACKEND_PRIVATE_KEY_FILE]
    #[arg(long)]
    pub backend_private_key_file: Option<PathBuf>,
    /// Scheduler flags.
    #[command(flatten)]
    pub flags: SchedulerFlags,
}

/// `kinitro executor` options.
#[derive(Debug, Args)]
pub struct ExecutorArgs {
    /// Executor flags.
    #[command(flatten)]
    pub flags: ExecutorFlags,
}

/// Validates the scheduler configuration, then reports that the service is not built yet.
pub fn scheduler(args: SchedulerArgs) -> CommandResult {
    let env = Env::from_process(&["KINITRO_SCHEDULER_"]);
    let url = resolve_database_url(args.database_url, &env, Some(DEFAULT_DATABASE_URL))?;
    SchedulerConfig::resolve(&args.flags, url, args.backend_private_key_file, &env)?;
    Err(not_available("the scheduler service (kinitro scheduler)"))
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

/// Options shared by the key commands.
#[derive(Debug, Args)]
pub struct KeyArgs {
    /// Private key, 64 hex characters
    #[arg(short = 'k', long)]
    pub private_key: Option<String>,
    /// File holding the private key
    #[arg(short = 'f', long)]
    pub private_key_file: Option<PathBuf>,
}

/// `kinitro crypto` commands (chain.md 10).
#[derive(Debug, Subcommand)]
pub enum CryptoCommand {
    /// Generate an X25519 key pair
    GenerateKeypair {
        /// Output directory
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// Key name
        #[arg(short, long)]
        name: Option<String>,
        /// Overwrite existing files
        #[arg(short, long)]
        force: bool,
    },
    /// Print the public key of a private key
    ShowPublicKey(KeyArgs),
    /// Encrypt a deployment id for a backend public key
    Encrypt {
        /// Backend public key, 64 hex characters
        #[arg(short, long)]
        public_key: String,
        /// Deployment id
        #[arg(short, long)]
        deployment_id: String,
    },
    /// Decrypt an encrypted commitment
    Decrypt {
        /// Key options.
        #[command(flatten)]
        key: KeyArgs,
        /// The commitment or its encrypted part
        #[arg(long)]
        commitment: String,
    },
    /// Round-trip a deployment id through encryption
    TestEncryption(KeyArgs),
    /// Build a commitment string
    MakeCommitment {
        /// HuggingFace repo
        #[arg(long)]
        repo: String,
        /// Revision
        #[arg(long)]
        revision: String,
        /// Deployment id
        #[arg(short, long)]
        deployment_id: String,
        /// Encrypt the deployment id
        #[arg(long)]
        encrypt: bool,
        /// Backend public key (with --encrypt)
        #[arg(short, long)]
        public_key: Option<String>,
    },
    /// Publish the backend public key on chain
    PublishPublicKey(KeyArgs),
    /// Fetch a backend's public key from chain
    FetchPublicKey {
        /// Backend hotkey
        #[arg(short, long)]
        backend_hotkey: String,
        /// Network
        #[arg(long)]
        network: Option<String>,
        /// Subnet uid
        #[arg(long)]
        netuid: Option<u16>,
    },
}

/// Reports that the crypto commands are not built yet.
pub fn crypto(_cmd: CryptoCommand) -> CommandResult {
    Err(not_available("the commitment crypto (kinitro crypto)"))
}
