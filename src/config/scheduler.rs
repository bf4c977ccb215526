//! `kinitro scheduler` settings (docs/configuration.md §2.3, prefix `KINITRO_SCHEDULER_`).

use kinitro_actors::ports::VerificationPolicy;
use std::path::PathBuf;

use clap::Args;

use super::{parse_list_flag, ConfigError, DatabaseUrl, Env, List, Seconds};

/// Command-line flags shared by `kinitro scheduler` and `kinitro run`.
#[derive(Debug, Clone, Default, Args)]
pub struct SchedulerFlags {
    /// Chain name (finney, test, local) or ws(s):// URL [env: KINITRO_SCHEDULER_NETWORK, default finney]
    #[arg(long)]
    pub network: Option<String>,
    /// Subnet uid [env: KINITRO_SCHEDULER_NETUID, default 1]
    #[arg(long)]
    pub netuid: Option<u16>,
    /// Seconds between the end of a cycle and the start of the next [env: KINITRO_SCHEDULER_EVAL_INTERVAL_SECONDS, default 3600]
    #[arg(long)]
    pub eval_interval: Option<u64>,
    /// Episodes per (miner, env) [env: KINITRO_SCHEDULER_EPISODES_PER_ENV, default 50]
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub episodes_per_env: Option<u32>,
    /// Environment families to evaluate [env: KINITRO_SCHEDULER_ENV_FAMILIES, default all]
    #[arg(long, value_parser = parse_list_flag)]
    pub env_families: Option<List>,
    /// Explicit env ids; wins over families [env: KINITRO_SCHEDULER_ENV_IDS, default all]
    #[arg(long, value_parser = parse_list_flag)]
    pub env_ids: Option<List>,
    /// Read miners from this TOML/JSON file instead of the chain [env: KINITRO_SCHEDULER_MINERS_FILE]
    #[arg(long)]
    pub miners_file: Option<PathBuf>,
}

/// Resolved scheduler settings.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// Database URL.
    pub database_url: Option<DatabaseUrl>,
    /// Chain name or URL.
    pub network: String,
    /// Subnet uid.
    pub netuid: u16,
    /// Whether the netuid came from the default (a warning is logged).
    pub netuid_defaulted: bool,
    /// Pause between cycles, seconds.
    pub eval_interval_seconds: u64,
    /// Episodes per (miner, env).
    pub episodes_per_env: u32,
    /// Softmax temperature.
    pub pareto_temperature: f64,
    /// Threshold z-score.
    pub threshold_z_score: f64,
    /// Threshold gap floor.
    pub threshold_min_gap: f64,
    /// Threshold gap cap.
    pub threshold_max_gap: f64,
    /// Stale threshold of the scheduler's reaper.
    pub task_stale_threshold: Seconds,
    /// Claims per task before it fails.
    pub task_max_attempts: u32,
    /// Maximum wait for a cycle's tasks.
    pub cycle_timeout: Seconds,
    /// Wait-loop period.
    pub poll_interval: Seconds,
    /// Heartbeat period, whole seconds (stored in `scheduler_state`).
    pub heartbeat_interval_seconds: u32,
    /// Per chain operation.
    pub chain_timeout: Seconds,
    /// Family filter.
    pub env_families: Option<Vec<String>>,
    /// Explicit env list.
    pub env_ids: Option<Vec<String>>,
    /// Miners file instead of the chain.
    pub miners_file: Option<PathBuf>,
    /// X25519 private key, 64 hex characters (secret).
    pub backend_private_key: Option<String>,
    /// File holding that key.
    pub backend_private_key_file: Option<PathBuf>,
    /// HMAC key of the tasks' `sim_seed` (secret; decoded from hex).
    pub seed_secret: Option<Vec<u8>>,
    /// Connection pool size.
    pub db_pool_size: usize,
    /// `host:port` of a standalone `/metrics`.
    pub metrics_addr: Option<String>,
    /// What failed verifications change: `log` (default) or `exclude` for
    /// `VERIFICATION_EXCLUDE_CYCLES` cycles (docs/verification.md §4).
    pub verification_policy: VerificationPolicy,
}

fn is_hex_key(raw: &str) -> bool {
    raw.len() == 64 && hex::decode(raw).is_ok()
}

fn is_seed_secret(raw: &str) -> bool {
    raw.len() >= 64 && hex::decode(raw).is_ok()
}

impl SchedulerConfig {
    /// Merges flags, the environment and defaults (the database URL is resolved by the caller).
    pub fn resolve(
        flags: &SchedulerFlags,
        database_url: Option<DatabaseUrl>,
        key_file_flag: Option<PathBuf>,
        env: &Env,
    ) -> Result<Self, ConfigError> {
        let netuid_env: Option<u16> = env.get("NETUID")?;
        let netuid = flags.netuid.or(netuid_env);
        let positive_f = |v: &f64| *v > 0.0;
        let at_least_one = |v: &u32| *v >= 1;
        let heartbeat = env.get_checked(
            "HEARTBEAT_INTERVAL_SECONDS",
            |v: &u32| *v >= 1,
            "a positive integer",
        )?;
        // Checked whatever the policy, so a bad value is found before it is needed.
        let exclude_cycles = env
            .get_checked(
                "VERIFICATION_EXCLUDE_CYCLES",
                at_least_one,
                "a positive integer",
            )?
            .unwrap_or(3);
        let config = Self {
            database_url,
            network: match &flags.network {
                Some(n) => n.clone(),
                None => env.get("NETWORK")?.unwrap_or_else(|| "finney".into()),
            },
            netuid: netuid.unwrap_or(1),
            netuid_defaulted: netuid.is_none(),
            eval_interval_seconds: match flags.eval_interval {
                Some(v) => v,
                None => env.get("EVAL_INTERVAL_SECONDS")?.unwrap_or(3600),
            },
            episodes_per_env: match flags.episodes_per_env {
                Some(v) => v,
                None => env
                    .get_checked("EPISODES_PER_ENV", at_least_one, "a positive integer")?
                    .unwrap_or(50),
            },
            pareto_temperature: env
                .get_checked("PARETO_TEMPERATURE", positive_f, "a number > 0")?
                .unwrap_or(1.0),
            threshold_z_score: env.get("THRESHOLD_Z_SCORE")?.unwrap_or(1.5),
            threshold_min_gap: env.get("THRESHOLD_MIN_GAP")?.unwrap_or(0.02),
            threshold_max_gap: env.get("THRESHOLD_MAX_GAP")?.unwrap_or(0.10),
            task_stale_threshold: env
                .get("TASK_STALE_THRESHOLD_SECONDS")?
                .unwrap_or(Seconds(300.0)),
            task_max_attempts: env
                .get_checked("TASK_MAX_ATTEMPTS", at_least_one, "a positive integer")?
                .unwrap_or(3),
            cycle_timeout: env.get("CYCLE_TIMEOUT_SECONDS")?.unwrap_or(Seconds(7200.0)),
            poll_interval: env.get("POLL_INTERVAL_SECONDS")?.unwrap_or(Seconds(10.0)),
            heartbeat_interval_seconds: heartbeat.unwrap_or(30),
            chain_timeout: env.get("CHAIN_TIMEOUT_SECONDS")?.unwrap_or(Seconds(30.0)),
            env_families: match &flags.env_families {
                Some(v) => Some(v.0.clone()),
                None => env.get::<List>("ENV_FAMILIES")?.map(|l| l.0),
            },
            env_ids: match &flags.env_ids {
                Some(v) => Some(v.0.clone()),
                None => env.get::<List>("ENV_IDS")?.map(|l| l.0),
            },
            miners_file: match &flags.miners_file {
                Some(p) => Some(p.clone()),
                None => env.get("MINERS_FILE")?,
            },
            backend_private_key: env.secret(
                "BACKEND_PRIVATE_KEY",
                is_hex_key,
                "64 hexadecimal characters",
            )?,
            backend_private_key_file: match key_file_flag {
                Some(p) => Some(p),
                None => env.get("BACKEND_PRIVATE_KEY_FILE")?,
            },
            seed_secret: env
                .secret(
                    "SEED_SECRET",
                    is_seed_secret,
                    "at least 64 hexadecimal characters (32 bytes)",
                )?
                .map(|h| hex::decode(h).expect("checked")),
            db_pool_size: env
                .get_checked("DB_POOL_SIZE", |v: &usize| *v >= 1, "a positive integer")?
                .unwrap_or(4),
            metrics_addr: env.get("METRICS_ADDR")?,
            verification_policy: match env.get::<String>("VERIFICATION_POLICY")?.as_deref() {
                None | Some("log") => VerificationPolicy::Log,
                Some("exclude") => VerificationPolicy::Exclude {
                    cycles: exclude_cycles,
                },
                Some(other) => {
                    return Err(ConfigError::Invalid(format!(
                        "{} must be log or exclude, not {other:?}",
                        env.name("VERIFICATION_POLICY")
                    )))
                }
            },
        };
        if config.poll_interval.0 <= 0.0 {
            return Err(ConfigError::Invalid(format!(
                "{} must be greater than 0",
                env.name("POLL_INTERVAL_SECONDS")
            )));
        }
        Ok(config)
    }
}
