//! Configuration of every service (docs/configuration.md).
//!
//! Precedence: a flag given on the command line > environment variable > default. Flags are clap
//! options without defaults (`Option<T>`), the environment is read through [`Env`] (envy), and each
//! service's `resolve` merges the two and applies the defaults. An invalid flag is a clap usage error
//! (exit 2); an invalid variable is a [`ConfigError`] naming it (exit 1).

pub mod api;
pub mod db_tls;
pub mod env_serve;
pub mod executor;
pub mod miner;
pub mod run;
pub mod scheduler;
pub mod source;
pub mod verification;

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

pub use source::{record_variables, ConfigError, Env, List, Seconds, SettingValue, StringMap};

/// Default database URL of `api`, `scheduler` and `db` (docs/configuration.md §1.1).
pub const DEFAULT_DATABASE_URL: &str = "postgresql://postgres:postgres@localhost:5432/kinitro";

/// A validated PostgreSQL URL, normalised to the `postgresql://` scheme.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    /// Accepts `postgresql://`, `postgres://` and `postgresql+asyncpg://` (rewritten).
    pub fn parse(raw: &str) -> Result<Self, String> {
        let raw = raw.trim();
        let url = if let Some(rest) = raw.strip_prefix("postgresql+asyncpg://") {
            format!("postgresql://{rest}")
        } else if raw.starts_with("postgresql://") || raw.starts_with("postgres://") {
            raw.to_string()
        } else {
            return Err("invalid database URL: expected postgresql://…".into());
        };
        let (driver, _) = db_tls::split(&url)?;
        tokio_postgres::Config::from_str(&driver)
            .map_err(|e| format!("invalid database URL: {e}"))?;
        Ok(Self(url))
    }

    /// The URL text (contains the password: never log it).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The connection settings, with the driver's TLS mode set from [`Self::tls`]: the driver
    /// negotiates TLS, and `crate::db::tls` verifies the server as the mode says. Unix sockets
    /// never use TLS, whatever the mode (as with libpq; docs/database.md §1.1).
    pub fn pg_config(&self) -> tokio_postgres::Config {
        use tokio_postgres::config::{Host, SslMode as Driver};
        let (driver, tls) = db_tls::split(&self.0).expect("validated at parse time");
        let mut config =
            tokio_postgres::Config::from_str(&driver).expect("validated at parse time");
        let local = config.get_hostaddrs().is_empty()
            && config
                .get_hosts()
                .iter()
                .all(|h| matches!(h, Host::Unix(_)))
            && !config.get_hosts().is_empty();
        config.ssl_mode(match tls.mode {
            _ if local => Driver::Disable,
            db_tls::SslMode::Disable => Driver::Disable,
            db_tls::SslMode::Prefer => Driver::Prefer,
            _ => Driver::Require,
        });
        config
    }

    /// The URL's TLS settings (`sslmode`, `sslrootcert`).
    pub fn tls(&self) -> db_tls::DbTls {
        db_tls::split(&self.0).expect("validated at parse time").1
    }

    /// Name of the target database (default: the user name, as libpq does).
    pub fn database(&self) -> String {
        let c = self.pg_config();
        c.get_dbname()
            .or(c.get_user())
            .unwrap_or("postgres")
            .to_string()
    }

    /// Where the server is, for error messages: `host:port` or the socket directory and port.
    pub fn target(&self) -> String {
        let c = self.pg_config();
        let port = c.get_ports().first().copied().unwrap_or(5432);
        match c.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(h)) => format!("{h}:{port}"),
            Some(tokio_postgres::config::Host::Unix(p)) => {
                format!("{}/.s.PGSQL.{port}", p.display())
            }
            None => format!("localhost:{port}"),
        }
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The password stays out of debug output and logs.
        write!(f, "DatabaseUrl({} / {})", self.target(), self.database())
    }
}

impl SettingValue for DatabaseUrl {
    const EXPECTED: &'static str = "a postgresql:// URL";
    fn parse_setting(raw: &str) -> Option<Self> {
        Self::parse(raw).ok()
    }
}

/// Resolves a service's database URL: flag > service variable > `KINITRO_DATABASE_URL` > default.
pub fn resolve_database_url(
    flag: Option<DatabaseUrl>,
    service: &Env,
    default: Option<&str>,
) -> Result<Option<DatabaseUrl>, ConfigError> {
    if flag.is_some() {
        return Ok(flag);
    }
    let check = |raw: &str| DatabaseUrl::parse(raw).is_ok();
    let expected = "a postgresql:// URL";
    let from_env = match service.secret("DATABASE_URL", check, expected)? {
        Some(v) => Some(v),
        None => generic_env().secret("DATABASE_URL", check, expected)?,
    };
    Ok(from_env
        .as_deref()
        .or(default)
        .map(|u| DatabaseUrl::parse(u).expect("checked above")))
}

/// The generic `KINITRO_` variables (database URL fallback, log format, assets directory).
pub fn generic_env() -> Env {
    Env::from_process(&["KINITRO_"])
}

/// Log verbosity (docs/configuration.md §1: trace, debug, info, warning/warn, error; any case).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    /// Everything.
    Trace,
    /// Diagnostics.
    Debug,
    /// The default.
    Info,
    /// Problems that do not stop the service.
    Warn,
    /// Failures only.
    Error,
}

impl LogLevel {
    /// The tracing filter directive.
    pub fn directive(self) -> &'static str {
        match self {
            Self::Trace => "trace",
            Self::Debug => "debug",
            Self::Info => "info",
            Self::Warn => "warn",
            Self::Error => "error",
        }
    }
}

impl FromStr for LogLevel {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "trace" => Ok(Self::Trace),
            "debug" => Ok(Self::Debug),
            "info" => Ok(Self::Info),
            "warn" | "warning" => Ok(Self::Warn),
            "error" => Ok(Self::Error),
            _ => Err("expected trace, debug, info, warning or error".into()),
        }
    }
}

impl SettingValue for LogLevel {
    const EXPECTED: &'static str = "trace, debug, info, warning or error";
    fn parse_setting(raw: &str) -> Option<Self> {
        raw.parse().ok()
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One JSON object per line (default; pipe into `jq`).
    Json,
    /// Human-readable lines.
    Text,
}

impl SettingValue for LogFormat {
    const EXPECTED: &'static str = "json or text";
    fn parse_setting(raw: &str) -> Option<Self> {
        match raw.trim().to_ascii_lowercase().as_str() {
            "json" => Some(Self::Json),
            "text" => Some(Self::Text),
            _ => None,
        }
    }
}

/// The MetaWorld assets directory (docs/configuration.md §2.1): `KINITRO_METAWORLD_ASSETS_DIR` made
/// absolute, else `<default data dir>/metaworld/assets` (`--data-dir` does not move it).
pub fn metaworld_assets_dir() -> Result<PathBuf, ConfigError> {
    let dir = generic_env()
        .get::<PathBuf>("METAWORLD_ASSETS_DIR")?
        .unwrap_or_else(|| default_data_dir().join("metaworld/assets"));
    Ok(std::path::absolute(&dir).unwrap_or(dir))
}

/// The service's log level variable (`<PREFIX>LOG_LEVEL`), if set.
pub fn log_level(env: &Env) -> Result<Option<LogLevel>, ConfigError> {
    env.get("LOG_LEVEL")
}

/// `KINITRO_LOG_FORMAT`, if set.
pub fn log_format() -> Result<Option<LogFormat>, ConfigError> {
    generic_env().get("LOG_FORMAT")
}

/// Every environment variable the configuration code reads, found by resolving every service's
/// configuration with recording on (documentation and example files are tested against it).
pub fn known_variables() -> std::collections::BTreeSet<String> {
    record_variables(|| {
        let _ = run::RunConfig::resolve(&run::RunFlags::default());
        for prefix in [
            "KINITRO_API_",
            "KINITRO_SCHEDULER_",
            "KINITRO_EXECUTOR_",
            "KINITRO_MINER_",
            "KINITRO_RUN_",
        ] {
            let _ = log_level(&Env::from_process(&[prefix]));
        }
        for prefix in ["KINITRO_API_", "KINITRO_SCHEDULER_"] {
            let _ = resolve_database_url(None, &Env::from_process(&[prefix]), None);
        }
        let _ = api::ApiConfig::resolve(
            &api::ApiFlags::default(),
            None,
            None,
            &Env::from_process(&["KINITRO_API_"]),
        );
        let _ = scheduler::SchedulerConfig::resolve(
            &scheduler::SchedulerFlags::default(),
            None,
            None,
            &Env::from_process(&["KINITRO_SCHEDULER_"]),
        );
        let _ = executor::ExecutorConfig::resolve(
            &executor::ExecutorFlags::default(),
            &Env::from_process(&["KINITRO_EXECUTOR_"]),
        );
        let _ = env_serve::EnvServeConfig::resolve(
            &env_serve::EnvServeFlags::default(),
            &Env::from_process(&["KINITRO_ENV_"]),
            &Env::from_process(&["KINITRO_EXECUTOR_"]),
        );
        let _ = miner::MinerConfig::resolve(
            &miner::MinerFlags::default(),
            &Env::from_process(&["KINITRO_MINER_"]),
        );
        let _ = log_format();
        let _ = metaworld_assets_dir();
    })
}

/// Number of CPUs, the default of the worker and pool counts.
pub fn cpu_count() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// clap value parser for list flags (JSON array or comma-separated). It yields the [`List`] newtype:
/// clap would take a plain `Vec` for a multi-value option.
pub fn parse_list_flag(raw: &str) -> Result<List, String> {
    source::parse_list(raw)
        .map(List)
        .ok_or_else(|| "expected a JSON array of strings or a comma-separated list".into())
}

/// clap value parser for a non-negative number of seconds.
pub fn parse_seconds_flag(raw: &str) -> Result<f64, String> {
    Seconds::parse_setting(raw)
        .map(|s| s.0)
        .ok_or_else(|| "expected a non-negative number of seconds".into())
}

/// `$HOME`, or `/` when unset.
fn home() -> PathBuf {
    std::env::var_os("HOME").map_or_else(|| PathBuf::from("/"), PathBuf::from)
}

/// An XDG base directory: the variable when set and absolute, otherwise `$HOME/<fallback>`.
pub fn xdg_dir(var: &str, fallback: &str) -> PathBuf {
    std::env::var_os(var)
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .unwrap_or_else(|| home().join(fallback))
}

/// Whether the process runs as root.
pub fn running_as_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Default data directory of `kinitro run` (docs/configuration.md §2.5): `/var/lib/kinitro` as
/// root, else `$XDG_DATA_HOME/kinitro`.
pub fn default_data_dir() -> PathBuf {
    if running_as_root() {
        PathBuf::from("/var/lib/kinitro")
    } else {
        xdg_dir("XDG_DATA_HOME", ".local/share").join("kinitro")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_url_schemes() {
        let u = DatabaseUrl::parse("postgresql+asyncpg://k:pw@db.example:6543/kin").unwrap();
        assert_eq!(u.as_str(), "postgresql://k:pw@db.example:6543/kin");
        assert_eq!(u.target(), "db.example:6543");
        assert_eq!(u.database(), "kin");
        assert!(!format!("{u:?}").contains("pw"));
        assert!(DatabaseUrl::parse("postgres://localhost/x").is_ok());
        assert_eq!(
            DatabaseUrl::parse("mysql://localhost/x").unwrap_err(),
            "invalid database URL: expected postgresql://…"
        );
        let sock =
            DatabaseUrl::parse("postgresql://kinitro:pw@/kinitro?host=/var/lib/kinitro/postgres")
                .unwrap();
        assert_eq!(sock.target(), "/var/lib/kinitro/postgres/.s.PGSQL.5432");
    }

    #[test]
    fn log_levels() {
        assert_eq!("WARNING".parse::<LogLevel>(), Ok(LogLevel::Warn));
        assert_eq!("Debug".parse::<LogLevel>(), Ok(LogLevel::Debug));
        assert!("loud".parse::<LogLevel>().is_err());
    }
}
