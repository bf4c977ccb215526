//! `kinitro env serve` settings (docs/containers.md §2, prefix `KINITRO_ENV_`): where the
//! environment server listens, its token, its pools, and the episode settings it shares with the
//! executor (`KINITRO_EXECUTOR_*`, passed into the container by the docker-mode executor).

use clap::Args;

use super::executor::{ExecutorConfig, ExecutorFlags};
use super::{ConfigError, Env};
use crate::container::tls::ContainerTls;

/// Flags of `kinitro env serve`.
#[derive(Debug, Clone, Default, Args)]
pub struct EnvServeFlags {
    /// Bind address [default 0.0.0.0]
    #[arg(long)]
    pub host: Option<String>,
    /// Port [env: AFFINETES_PORT, default 8000]
    #[arg(long)]
    pub port: Option<u16>,
}

/// Resolved environment-server settings.
#[derive(Debug, Clone)]
pub struct EnvServeConfig {
    /// Bind address.
    pub host: String,
    /// Port.
    pub port: u16,
    /// Bearer token every route but `/health` requires (secret); `None` leaves the server open.
    pub token: Option<String>,
    /// Certificate and key (PEM) to serve TLS with (secret); `None` serves plain HTTP.
    pub tls: Option<ContainerTls>,
    /// Episode settings, with `pools` and `episodes_per_pool` taken from `KINITRO_ENV_SERVE_*`.
    pub executor: ExecutorConfig,
}

/// The server's TLS material from `KINITRO_ENV_TLS_CERT` and `KINITRO_ENV_TLS_KEY` (both or neither).
pub fn tls_material(env: &Env) -> Result<Option<ContainerTls>, ConfigError> {
    let cert = env.secret("TLS_CERT", |t| !t.is_empty(), "a PEM certificate")?;
    let key = env.secret("TLS_KEY", |t| !t.is_empty(), "a PEM private key")?;
    match (cert, key) {
        (Some(cert_pem), Some(key_pem)) => Ok(Some(ContainerTls { cert_pem, key_pem })),
        (None, None) => Ok(None),
        _ => Err(ConfigError::Invalid(format!(
            "{} and {} must be set together",
            env.name("TLS_CERT"),
            env.name("TLS_KEY")
        ))),
    }
}

/// The port the server listens on and its health check probes: `AFFINETES_PORT`, else 8000.
/// Read directly (not through [`Env`]): the name is affinetes', not one of our prefixed settings.
pub fn affinetes_port() -> Result<u16, ConfigError> {
    match std::env::var("AFFINETES_PORT") {
        Err(_) => Ok(8000),
        Ok(raw) => raw.trim().parse().map_err(|_| ConfigError::InvalidValue {
            var: "AFFINETES_PORT".into(),
            shown: format!(": '{raw}'"),
            expected: "a port number",
        }),
    }
}

impl EnvServeConfig {
    /// Merges flags, `KINITRO_ENV_*`, `KINITRO_EXECUTOR_*` and defaults.
    pub fn resolve(
        flags: &EnvServeFlags,
        env: &Env,
        executor_env: &Env,
    ) -> Result<Self, ConfigError> {
        let mut executor = ExecutorConfig::resolve(&ExecutorFlags::default(), executor_env)?;
        executor.pools = env
            .get("SERVE_POOLS")?
            .unwrap_or_else(super::cpu_count)
            .max(1);
        executor.episodes_per_pool = env
            .get_checked(
                "SERVE_EPISODES_PER_POOL",
                |v: &u32| *v >= 1,
                "a positive integer",
            )?
            .unwrap_or(8);
        Ok(Self {
            host: flags.host.clone().unwrap_or_else(|| "0.0.0.0".into()),
            port: match flags.port {
                Some(p) => p,
                None => affinetes_port()?,
            },
            token: env.secret("TOKEN", |t| !t.is_empty(), "a non-empty token")?,
            tls: tls_material(env)?,
            executor,
        })
    }
}
