//! `kinitro run` settings (docs/configuration.md §2.5 and §1.2): the three services' settings read
//! with the `KINITRO_RUN_` prefix first, plus the managed database and the demo switch.

use std::path::PathBuf;

use clap::Args;

use super::api::{ApiConfig, ApiFlags};
use super::executor::{ExecutorConfig, ExecutorFlags, PoolFlags};
use super::scheduler::{SchedulerConfig, SchedulerFlags};
use super::{default_data_dir, resolve_database_url, ConfigError, DatabaseUrl, Env};

/// Flags of `kinitro run`.
#[derive(Debug, Clone, Default, Args)]
pub struct RunFlags {
    /// PostgreSQL URL; unset → the managed local PostgreSQL [env: KINITRO_RUN_DATABASE_URL]
    #[arg(long, value_parser = DatabaseUrl::parse)]
    pub database_url: Option<DatabaseUrl>,
    /// Managed PostgreSQL and other local state [env: KINITRO_RUN_DATA_DIR]
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Also let the managed PostgreSQL listen on this loopback TCP port [env: KINITRO_RUN_PG_PORT]
    #[arg(long)]
    pub pg_port: Option<u16>,
    /// API flags.
    #[command(flatten)]
    pub api: ApiFlags,
    /// Scheduler flags.
    #[command(flatten)]
    pub scheduler: SchedulerFlags,
    /// Pool flags.
    #[command(flatten)]
    pub pools: PoolFlags,
    /// Start local reference miners (expert, random, zero) and evaluate them
    #[arg(long)]
    pub demo: bool,
    /// native (in-process), docker (environment containers) or basilica [env: KINITRO_EXECUTOR_EVAL_MODE, default native]
    #[arg(long, value_enum)]
    pub eval_mode: Option<super::executor::EvalMode>,
}

/// Resolved settings of the all-in-one process.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// External database; `None` starts the managed cluster.
    pub database_url: Option<DatabaseUrl>,
    /// Data directory of the managed cluster.
    pub data_dir: PathBuf,
    /// Optional loopback TCP port of the managed cluster.
    pub pg_port: Option<u16>,
    /// Demo mode.
    pub demo: bool,
    /// The API part.
    pub api: ApiConfig,
    /// The scheduler part.
    pub scheduler: SchedulerConfig,
    /// The local executor part.
    pub executor: ExecutorConfig,
}

impl RunConfig {
    /// Merges flags and environment: flag > `KINITRO_RUN_X` > `KINITRO_<SERVICE>_X` > generic > default.
    pub fn resolve(flags: &RunFlags) -> Result<Self, ConfigError> {
        Self::resolve_from(flags, &Env::from_process)
    }

    /// The same with the environment taken from `env` (prefixes → layers), for tests.
    pub fn resolve_from(
        flags: &RunFlags,
        env: &dyn Fn(&[&str]) -> Env,
    ) -> Result<Self, ConfigError> {
        let run_env = env(&["KINITRO_RUN_"]);
        let database_url = resolve_database_url(flags.database_url.clone(), &run_env, None)?;
        let api = ApiConfig::resolve(
            &flags.api,
            database_url.clone(),
            None,
            &env(&["KINITRO_RUN_", "KINITRO_API_"]),
        )?;
        let scheduler = SchedulerConfig::resolve(
            &flags.scheduler,
            database_url.clone(),
            None,
            &env(&["KINITRO_RUN_", "KINITRO_SCHEDULER_"]),
        )?;
        let executor_flags = ExecutorFlags {
            pools: flags.pools.clone(),
            eval_mode: flags.eval_mode,
            ..Default::default()
        };
        let executor = ExecutorConfig::resolve(
            &executor_flags,
            &env(&["KINITRO_RUN_", "KINITRO_EXECUTOR_"]),
        )?;
        let mut config = Self {
            database_url,
            data_dir: match &flags.data_dir {
                Some(d) => d.clone(),
                None => run_env.get("DATA_DIR")?.unwrap_or_else(default_data_dir),
            },
            pg_port: match flags.pg_port {
                Some(p) => Some(p),
                None => run_env.get("PG_PORT")?,
            },
            demo: flags.demo,
            api,
            scheduler,
            executor,
        };
        if config.demo {
            config.apply_demo_defaults(flags, env)?;
        }
        Ok(config)
    }

    /// `--demo` (docs/configuration.md §3.4): short cycles of 2 episodes on the first three envs,
    /// no images, the privileged state for the expert, loopback miners allowed, no API key
    /// needed when none is configured, and the API on 127.0.0.1 (auth may be off) — each only where
    /// the operator did not set it.
    fn apply_demo_defaults(
        &mut self,
        flags: &RunFlags,
        env: &dyn Fn(&[&str]) -> Env,
    ) -> Result<(), ConfigError> {
        let api_env = env(&["KINITRO_RUN_", "KINITRO_API_"]);
        let scheduler_env = env(&["KINITRO_RUN_", "KINITRO_SCHEDULER_"]);
        let executor_env = env(&["KINITRO_RUN_", "KINITRO_EXECUTOR_"]);
        let unset = |env: &Env, name: &str| -> Result<bool, ConfigError> {
            Ok(env.get::<String>(name)?.is_none())
        };
        if flags.scheduler.episodes_per_env.is_none() && unset(&scheduler_env, "EPISODES_PER_ENV")?
        {
            self.scheduler.episodes_per_env = 2;
        }
        if flags.scheduler.eval_interval.is_none()
            && unset(&scheduler_env, "EVAL_INTERVAL_SECONDS")?
        {
            self.scheduler.eval_interval_seconds = 300;
        }
        if self.scheduler.env_ids.is_none() && self.scheduler.env_families.is_none() {
            self.scheduler.env_ids = Some(
                kinitro_actors::envs::ENV_IDS[..3]
                    .iter()
                    .map(|s| s.to_string())
                    .collect(),
            );
        }
        if unset(&executor_env, "USE_IMAGES")? {
            self.executor.use_images = false;
        }
        self.executor.privileged_state = true;
        self.executor.allow_private_endpoints = true;
        // The demo miners listen on the host's loopback: containers must share its network.
        if unset(&executor_env, "EVAL_NETWORK")? {
            self.executor.eval_network = super::executor::EvalNetwork::Host;
        }
        if self.api.api_keys.is_empty() {
            self.api.auth_disabled = true;
        }
        // Issue 23 item 10: a demo (often without auth) is not served to the network by default.
        if flags.api.host.is_none() && unset(&api_env, "HOST")? {
            self.api.host = "127.0.0.1".into();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(flags: &RunFlags, pairs: &[(&str, &str)]) -> RunConfig {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        RunConfig::resolve_from(flags, &|prefixes| {
            Env::from_pairs(prefixes, pairs.iter().cloned())
        })
        .unwrap()
    }

    #[test]
    fn the_demo_binds_loopback_unless_the_operator_sets_a_host() {
        let demo = RunFlags {
            demo: true,
            ..Default::default()
        };
        let c = resolve(&demo, &[]);
        assert_eq!(c.api.host, "127.0.0.1");
        assert!(c.api.auth_disabled);
        for var in ["KINITRO_API_HOST", "KINITRO_RUN_HOST"] {
            assert_eq!(
                resolve(&demo, &[(var, "0.0.0.0")]).api.host,
                "0.0.0.0",
                "{var}"
            );
        }
        let flagged = RunFlags {
            demo: true,
            api: ApiFlags {
                host: Some("::".into()),
                ..Default::default()
            },
            ..Default::default()
        };
        assert_eq!(resolve(&flagged, &[]).api.host, "::");
        // Without --demo the default is unchanged.
        assert_eq!(resolve(&RunFlags::default(), &[]).api.host, "0.0.0.0");
    }
}
