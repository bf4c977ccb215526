//! `kinitro executor` settings (docs/configuration.md §2.4, prefix `KINITRO_EXECUTOR_`).

use std::collections::BTreeMap;
use std::path::PathBuf;

use clap::Args;

use super::{parse_list_flag, xdg_dir, ConfigError, Env, List, Seconds, SettingValue, StringMap};

/// How episodes are run (docs/containers.md §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum EvalMode {
    /// In-process MuJoCo.
    Native,
    /// In environment containers on the Docker hosts of `KINITRO_EXECUTOR_EVAL_HOSTS`.
    Docker,
    /// In one Basilica deployment per family (`BASILICA_API_URL`, `BASILICA_API_TOKEN`).
    Basilica,
}

/// How evaluation containers reach miners (docs/containers.md §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EvalNetwork {
    /// The user-defined bridge `kinitro-eval`; miners are reached through the host's NAT.
    Bridge,
    /// The host's network (miners on the host's loopback, as in demos and tests).
    Host,
}

impl SettingValue for EvalNetwork {
    const EXPECTED: &'static str = "bridge or host";
    fn parse_setting(raw: &str) -> Option<Self> {
        match raw.trim().to_ascii_lowercase().as_str() {
            "bridge" => Some(Self::Bridge),
            "host" => Some(Self::Host),
            _ => None,
        }
    }
}

impl SettingValue for EvalMode {
    const EXPECTED: &'static str = "native, docker or basilica";
    fn parse_setting(raw: &str) -> Option<Self> {
        match raw.trim().to_ascii_lowercase().as_str() {
            "native" => Some(Self::Native),
            "docker" => Some(Self::Docker),
            "basilica" => Some(Self::Basilica),
            _ => None,
        }
    }
}

fn parse_images_flag(raw: &str) -> Result<BTreeMap<String, String>, String> {
    StringMap::parse_setting(raw)
        .map(|m| m.0)
        .ok_or_else(|| "expected a JSON object of strings".into())
}

fn parse_executor_id(raw: &str) -> Result<String, String> {
    if (1..=64).contains(&raw.chars().count()) {
        Ok(raw.to_string())
    } else {
        Err("must be 1 to 64 characters".into())
    }
}

/// Command-line flags of `kinitro executor` (pools and K are shared with `kinitro run`).
#[derive(Debug, Clone, Default, Args)]
pub struct ExecutorFlags {
    /// API base URL [env: KINITRO_EXECUTOR_API_URL, default http://localhost:8000]
    #[arg(long)]
    pub api_url: Option<String>,
    /// Executor id, 1–64 characters [env: KINITRO_EXECUTOR_EXECUTOR_ID, default executor-<8 hex>]
    #[arg(long, value_parser = parse_executor_id)]
    pub executor_id: Option<String>,
    /// Max tasks per fetch, 1–100 [env: KINITRO_EXECUTOR_BATCH_SIZE, default 10]
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub batch_size: Option<u32>,
    /// Pause after a short fetch, seconds [env: KINITRO_EXECUTOR_POLL_INTERVAL_SECONDS, default 5]
    #[arg(long, value_parser = super::parse_seconds_flag)]
    pub poll_interval: Option<f64>,
    /// Docker mode: one image for every family, overriding the map [env: KINITRO_EXECUTOR_EVAL_IMAGE]
    #[arg(long)]
    pub eval_image: Option<String>,
    /// Docker mode: family → image, JSON [env: KINITRO_EXECUTOR_EVAL_IMAGES]
    #[arg(long, value_parser = parse_images_flag)]
    pub eval_images: Option<BTreeMap<String, String>>,
    /// native, docker or basilica [env: KINITRO_EXECUTOR_EVAL_MODE, default native]
    #[arg(long, value_enum)]
    pub eval_mode: Option<EvalMode>,
    /// Docker mode: GPUs for evaluation containers [env: KINITRO_EXECUTOR_EVAL_GPU]
    #[arg(long)]
    pub eval_gpu: bool,
    /// Docker mode: refuse images of another kinitro version [env: KINITRO_EXECUTOR_STRICT_IMAGE_VERSION]
    #[arg(long)]
    pub strict_image_version: bool,
    /// Allow a plain-HTTP API URL on a public address [env: KINITRO_EXECUTOR_ALLOW_INSECURE_API]
    #[arg(long)]
    pub allow_insecure_api: bool,
    /// Env ids served [env: KINITRO_EXECUTOR_ENV_IDS, default all registered]
    #[arg(long, value_parser = parse_list_flag)]
    pub env_ids: Option<List>,
    /// Shard of miner_uid % count [env: KINITRO_EXECUTOR_SHARD_INDEX, default 0]
    #[arg(long)]
    pub shard_index: Option<u32>,
    /// Number of shards [env: KINITRO_EXECUTOR_SHARD_COUNT, default 1]
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub shard_count: Option<u32>,
    /// Pool flags shared with `kinitro run`.
    #[command(flatten)]
    pub pools: PoolFlags,
}

/// Flags sizing the local ExecutorPools.
#[derive(Debug, Clone, Default, Args)]
pub struct PoolFlags {
    /// ExecutorPools (0 in `kinitro run` disables the local executor) [env: KINITRO_EXECUTOR_POOLS, default CPUs]
    #[arg(long)]
    pub pools: Option<usize>,
    /// Episodes in flight per pool (K) [env: KINITRO_EXECUTOR_EPISODES_PER_POOL, default 8]
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub episodes_per_pool: Option<u32>,
}

/// Resolved executor settings.
#[derive(Debug, Clone)]
pub struct ExecutorConfig {
    /// API base URL without a trailing `/`.
    pub api_url: String,
    /// Bearer key (secret).
    pub api_key: Option<String>,
    /// Executor id.
    pub executor_id: String,
    /// Tasks per fetch.
    pub batch_size: u32,
    /// Pause after a short fetch.
    pub poll_interval: Seconds,
    /// Evaluation mode.
    pub eval_mode: EvalMode,
    /// Env filter sent with every fetch.
    pub env_ids: Option<Vec<String>>,
    /// Shard index.
    pub shard_index: u32,
    /// Shard count.
    pub shard_count: u32,
    /// ExecutorPools.
    pub pools: usize,
    /// Episodes in flight per pool.
    pub episodes_per_pool: u32,
    /// Steps per episode.
    pub max_timesteps: u32,
    /// Per `/act` round trip.
    pub action_timeout: Seconds,
    /// Per `/reset` round trip.
    pub reset_timeout: Seconds,
    /// Per episode.
    pub eval_timeout: Seconds,
    /// Send camera images.
    pub use_images: bool,
    /// Add `extra.state` to observations.
    pub privileged_state: bool,
    /// Allow loopback/private miner endpoints.
    pub allow_private_endpoints: bool,
    /// `/act` response cap.
    pub max_response_bytes: usize,
    /// Undelivered results; `None` disables spooling.
    pub spool_dir: Option<PathBuf>,
    /// Time for in-flight episodes at shutdown.
    pub shutdown_grace: Seconds,
    /// `host:port` of a standalone `/metrics`.
    pub metrics_addr: Option<String>,
    /// Docker mode: one image for every family, only when set explicitly.
    pub eval_image: Option<String>,
    /// Docker mode: family → image.
    pub eval_images: BTreeMap<String, String>,
    /// Docker mode: memory limit per container.
    pub eval_mem_limit: String,
    /// Docker mode: CPUs per container (`None`: all).
    pub eval_cpus: Option<f64>,
    /// Docker mode: engine addresses.
    pub eval_hosts: Vec<String>,
    /// Docker mode: GPUs.
    pub eval_gpu: bool,
    /// Docker mode: pools per container (`None`: its CPU limit, else the host's CPUs).
    pub eval_pools: Option<usize>,
    /// Docker mode: episodes per pool inside a container.
    pub eval_episodes_per_pool: u32,
    /// Docker mode: containers per family and host.
    pub eval_replicas: u32,
    /// Docker mode: container networking.
    pub eval_network: EvalNetwork,
    /// Docker mode: time for a container to become healthy.
    pub eval_start_timeout: Seconds,
    /// Docker mode: refuse an image of another version instead of warning.
    pub strict_image_version: bool,
    /// Allow `http://` to an API on a public address (the key and the sim seeds then cross in clear).
    pub allow_insecure_api: bool,
    /// Verification of miners' deployments (docs/verification.md).
    pub verification: super::verification::VerificationConfig,
}

fn random_executor_id() -> String {
    format!("executor-{:08x}", rand::random::<u32>())
}

impl ExecutorConfig {
    /// Merges flags, the environment and defaults, then checks the combined rules.
    pub fn resolve(flags: &ExecutorFlags, env: &Env) -> Result<Self, ConfigError> {
        let pick = |flag: Option<u32>, field: &str, default: u32| -> Result<u32, ConfigError> {
            Ok(match flag {
                Some(v) => v,
                None => env.get(field)?.unwrap_or(default),
            })
        };
        let shard_count = match flags.shard_count {
            Some(v) => v,
            None => env
                .get_checked("SHARD_COUNT", |v: &u32| *v >= 1, "a positive integer")?
                .unwrap_or(1),
        };
        let shard_index = pick(flags.shard_index, "SHARD_INDEX", 0)?;
        let spool_dir = match env.get::<String>("SPOOL_DIR")? {
            Some(s) if s.is_empty() => None,
            Some(s) => Some(PathBuf::from(s)),
            None => Some(xdg_dir("XDG_STATE_HOME", ".local/state").join("kinitro/spool")),
        };
        let mem_limit = match env.get::<String>("EVAL_MEM_LIMIT")? {
            Some(v) => Some(v),
            None => Env::from_process(&["KINITRO_BACKEND_"]).get("EVAL_MEM_LIMIT")?,
        };
        let config = Self {
            api_url: match &flags.api_url {
                Some(u) => u.clone(),
                None => env
                    .get("API_URL")?
                    .unwrap_or_else(|| "http://localhost:8000".into()),
            }
            .trim_end_matches('/')
            .to_string(),
            api_key: env.secret("API_KEY", |_| true, "text")?,
            executor_id: match &flags.executor_id {
                Some(id) => id.clone(),
                None => env
                    .get_checked(
                        "EXECUTOR_ID",
                        |s: &String| (1..=64).contains(&s.chars().count()),
                        "1 to 64 characters",
                    )?
                    .unwrap_or_else(random_executor_id),
            },
            batch_size: match flags.batch_size {
                Some(v) => v,
                None => env
                    .get_checked(
                        "BATCH_SIZE",
                        |v: &u32| (1..=100).contains(v),
                        "an integer between 1 and 100",
                    )?
                    .unwrap_or(10),
            },
            poll_interval: match flags.poll_interval {
                Some(v) => Seconds(v),
                None => env.get("POLL_INTERVAL_SECONDS")?.unwrap_or(Seconds(5.0)),
            },
            eval_mode: match flags.eval_mode {
                Some(m) => m,
                None => env.get("EVAL_MODE")?.unwrap_or(EvalMode::Native),
            },
            env_ids: match &flags.env_ids {
                Some(v) => Some(v.0.clone()),
                None => env.get::<List>("ENV_IDS")?.map(|l| l.0),
            },
            shard_index,
            shard_count,
            pools: match flags.pools.pools {
                Some(v) => v,
                None => env.get("POOLS")?.unwrap_or_else(super::cpu_count),
            },
            episodes_per_pool: match flags.pools.episodes_per_pool {
                Some(v) => v,
                None => env
                    .get_checked("EPISODES_PER_POOL", |v: &u32| *v >= 1, "a positive integer")?
                    .unwrap_or(8),
            },
            max_timesteps: env
                .get_checked(
                    "MAX_TIMESTEPS",
                    |v: &u32| (1..=500).contains(v),
                    "an integer between 1 and 500",
                )?
                .unwrap_or(500),
            action_timeout: positive_seconds(env, "ACTION_TIMEOUT", 0.5)?,
            reset_timeout: positive_seconds(env, "RESET_TIMEOUT", 5.0)?,
            eval_timeout: positive_seconds(env, "EVAL_TIMEOUT", 300.0)?,
            use_images: env.get("USE_IMAGES")?.unwrap_or(true),
            privileged_state: env.get("PRIVILEGED_STATE")?.unwrap_or(false),
            allow_private_endpoints: env.get("ALLOW_PRIVATE_ENDPOINTS")?.unwrap_or(false),
            max_response_bytes: env
                .get_checked(
                    "MAX_RESPONSE_BYTES",
                    |v: &usize| *v >= 1,
                    "a positive integer",
                )?
                .unwrap_or(1_048_576),
            spool_dir,
            shutdown_grace: env.get("SHUTDOWN_GRACE_SECONDS")?.unwrap_or(Seconds(30.0)),
            metrics_addr: env.get("METRICS_ADDR")?,
            eval_image: match &flags.eval_image {
                Some(i) => Some(i.clone()),
                None => env.get("EVAL_IMAGE")?,
            },
            eval_images: match &flags.eval_images {
                Some(m) => m.clone(),
                None => env
                    .get::<StringMap>("EVAL_IMAGES")?
                    .map(|m| m.0)
                    .unwrap_or_else(|| {
                        BTreeMap::from([(
                            "metaworld".to_string(),
                            "kinitro/metaworld:v1".to_string(),
                        )])
                    }),
            },
            eval_mem_limit: mem_limit.unwrap_or_else(|| "8g".into()),
            eval_cpus: env.get_checked("EVAL_CPUS", |v: &f64| *v > 0.0, "a positive number")?,
            eval_pools: env.get_checked("EVAL_POOLS", |v: &usize| *v >= 1, "a positive integer")?,
            eval_episodes_per_pool: env
                .get_checked(
                    "EVAL_EPISODES_PER_POOL",
                    |v: &u32| *v >= 1,
                    "a positive integer",
                )?
                .unwrap_or(8),
            eval_replicas: env
                .get_checked("EVAL_REPLICAS", |v: &u32| *v >= 1, "a positive integer")?
                .unwrap_or(1),
            eval_network: env.get("EVAL_NETWORK")?.unwrap_or(EvalNetwork::Bridge),
            eval_start_timeout: positive_seconds(env, "EVAL_START_TIMEOUT", 120.0)?,
            strict_image_version: flags.strict_image_version
                || env.get("STRICT_IMAGE_VERSION")?.unwrap_or(false),
            allow_insecure_api: flags.allow_insecure_api
                || env.get("ALLOW_INSECURE_API")?.unwrap_or(false),
            eval_hosts: env
                .get::<List>("EVAL_HOSTS")?
                .map_or_else(|| vec!["localhost".into()], |l| l.0),
            eval_gpu: flags.eval_gpu || env.get("EVAL_GPU")?.unwrap_or(false),
            verification: super::verification::VerificationConfig::resolve(
                env,
                &Env::from_process(&["HF_"]),
            )?,
        };
        if config.shard_index >= config.shard_count {
            let source = |flag: bool, field: &str, name: &str| {
                if flag {
                    name.to_string()
                } else {
                    env.name(field)
                }
            };
            return Err(ConfigError::Invalid(format!(
                "shard index {} ({}) must be smaller than shard count {} ({})",
                config.shard_index,
                source(flags.shard_index.is_some(), "SHARD_INDEX", "--shard-index"),
                config.shard_count,
                source(flags.shard_count.is_some(), "SHARD_COUNT", "--shard-count"),
            )));
        }
        Ok(config)
    }
}

fn positive_seconds(env: &Env, field: &str, default: f64) -> Result<Seconds, ConfigError> {
    Ok(env
        .get_checked(
            field,
            |s: &Seconds| s.0 > 0.0,
            "a positive number of seconds",
        )?
        .unwrap_or(Seconds(default)))
}
