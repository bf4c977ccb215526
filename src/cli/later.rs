//! Command groups whose services are partly built: the executor (configuration only), the
//! environments (list and scene compilation) and the reference miner. Their flags and configuration are already parsed and validated, so scripts and
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

/// `env list` works now; `build` and `test` need the simulation (`--push` and other families are
/// usage errors as environments.md 11 says).
pub fn env(cmd: EnvCommand) -> CommandResult {
    match cmd {
        EnvCommand::List { json } => {
            let assets = crate::config::metaworld_assets_dir()?;
            let rows: Vec<serde_json::Value> = kinitro_actors::envs::REGISTRY
                .iter()
                .map(|(id, task, scene)| {
                    serde_json::json!({
                        "env_id": id, "family": kinitro_actors::envs::family(id), "task": task,
                        "scene_file": scene, "assets_present": assets.join(scene).is_file(),
                    })
                })
                .collect();
            if json {
                println!("{}", serde_json::Value::Array(rows));
            } else {
                println!("{:<28} {:<10} {:<24} {:<44} assets", "env id", "family", "task", "scene file");
                for r in &rows {
                    let s = |k: &str| r[k].as_str().unwrap_or_default().to_string();
                    let present = if r["assets_present"] == true { "present" } else { "missing" };
                    println!("{:<28} {:<10} {:<24} {:<44} {present}", s("env_id"), s("family"), s("task"), s("scene_file"));
                }
                println!("assets directory: {}", assets.display());
            }
            Ok(())
        }
        EnvCommand::Build { push: true, .. } => Err(Failure::usage(
            "building container images needs the docker evaluation mode, which is not in this build",
        )),
        EnvCommand::Build { family, .. } if family != "metaworld" => {
            Err(Failure::usage(format!("family '{family}' is not available in this build")))
        }
        EnvCommand::Build { assets_dir, tag, .. } => {
            if let Some(tag) = tag {
                eprintln!("--tag {tag} ignored: MetaWorld runs in-process in this build (no container image)");
            }
            let dir = match assets_dir {
                Some(d) => std::path::absolute(&d).unwrap_or(d),
                None => crate::config::metaworld_assets_dir()?,
            };
            let scenes = crate::sim::assets::compile_all(&dir).map_err(Failure::runtime)?;
            println!("assets: {}", dir.display());
            for s in &scenes {
                println!(
                    "{:<44} nq {:>3} nv {:>3} bodies {:>3} mocap {} compiled in {:.1} ms",
                    s.file, s.nq, s.nv, s.nbody, s.nmocap, s.compile.as_secs_f64() * 1e3
                );
            }
            Err(not_available("the MetaWorld environments (reset, step and render checks of kinitro env build)"))
        }
        _ => Err(not_available("the MetaWorld simulation (kinitro env build|test)")),
    }
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
