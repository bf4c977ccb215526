//! `kinitro api` settings (docs/configuration.md §2.2, prefix `KINITRO_API_`).

use clap::Args;

use super::{cpu_count, ConfigError, DatabaseUrl, Env, Seconds};

/// Command-line flags of `kinitro api` (and the API part of `kinitro run`).
#[derive(Debug, Clone, Default, Args)]
pub struct ApiFlags {
    /// Bind address [env: KINITRO_API_HOST, default 0.0.0.0]
    #[arg(long)]
    pub host: Option<String>,
    /// Port [env: KINITRO_API_PORT, default 8000]
    #[arg(long)]
    pub port: Option<u16>,
    /// Disable task-endpoint authentication [env: KINITRO_API_AUTH_DISABLED]
    #[arg(long)]
    pub no_auth: bool,
}

/// Default of `KINITRO_API_PUBLIC_READS_PER_SECOND`: far above what dashboards and people need
/// (the answers change at most every 2 s), far below what a flood would take from the claims.
pub const DEFAULT_PUBLIC_READS_PER_SECOND: u32 = 1000;

/// Resolved API settings.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// Bind address.
    pub host: String,
    /// Port.
    pub port: u16,
    /// Database (none only inside `kinitro run` before the managed cluster is up).
    pub database_url: Option<DatabaseUrl>,
    /// Bearer keys accepted on the task endpoints (several for rotation), each good for any executor id.
    pub api_keys: Vec<String>,
    /// Per-executor keys (docs/api.md §2): each good only for executor ids starting with its prefix.
    pub executor_keys: Vec<ExecutorKey>,
    /// Task endpoints open without a key.
    pub auth_disabled: bool,
    /// Assigned tasks older than this are re-queued by the API's reaper.
    pub task_stale_threshold: Seconds,
    /// Request body limit in bytes.
    pub max_body_bytes: usize,
    /// actix-web workers.
    pub workers: usize,
    /// Connection pool size.
    pub db_pool_size: usize,
    /// Public reads each process lets start per second (0: unpaced; docs/api.md §1.3).
    pub public_reads_per_second: u32,
}

impl ApiConfig {
    /// Merges flags, the environment and defaults; the database URL is resolved by the caller
    /// (docs/configuration.md §1.1 differs between `kinitro api` and `kinitro run`).
    pub fn resolve(
        flags: &ApiFlags,
        database_url: Option<DatabaseUrl>,
        workers_flag: Option<usize>,
        env: &Env,
    ) -> Result<Self, ConfigError> {
        let keys = env
            .secret(
                "API_KEY",
                |_| true,
                "one key or several separated by commas",
            )?
            .map(|raw| {
                raw.split(',')
                    .map(str::trim)
                    .filter(|k| !k.is_empty())
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default();
        let executor_keys = env
            .secret(
                "EXECUTOR_KEYS",
                |raw| ExecutorKey::parse_list(raw).is_some(),
                "comma-separated pairs of an executor-id prefix, a colon and a key",
            )?
            .and_then(|raw| ExecutorKey::parse_list(&raw))
            .unwrap_or_default();
        let positive = |v: &usize| *v >= 1;
        Ok(Self {
            host: flags
                .host
                .clone()
                .map_or_else(|| env.get("HOST"), |h| Ok(Some(h)))?
                .unwrap_or_else(|| "0.0.0.0".into()),
            port: flags
                .port
                .map_or_else(|| env.get("PORT"), |p| Ok(Some(p)))?
                .unwrap_or(8000),
            database_url,
            api_keys: keys,
            executor_keys,
            auth_disabled: flags.no_auth || env.get("AUTH_DISABLED")?.unwrap_or(false),
            task_stale_threshold: env
                .get("TASK_STALE_THRESHOLD_SECONDS")?
                .unwrap_or(Seconds(300.0)),
            max_body_bytes: env
                .get_checked("MAX_BODY_BYTES", positive, "a positive integer")?
                .unwrap_or(2_097_152),
            workers: match workers_flag {
                Some(w) => w,
                None => env
                    .get_checked("WORKERS", positive, "a positive integer")?
                    .unwrap_or_else(cpu_count),
            },
            db_pool_size: env
                .get_checked("DB_POOL_SIZE", positive, "a positive integer")?
                .unwrap_or(10),
            public_reads_per_second: env
                .get("PUBLIC_READS_PER_SECOND")?
                .unwrap_or(DEFAULT_PUBLIC_READS_PER_SECOND),
        })
    }

    /// The API refuses to start without a key, or with a key shorter than [`MIN_API_KEY_CHARS`],
    /// unless authentication is disabled (docs/api.md §2).
    pub fn check_auth(&self) -> Result<(), ConfigError> {
        self.check_keys(MIN_API_KEY_CHARS)
    }

    /// [`Self::check_auth`] with another minimum length (`kinitro run --demo` accepts any key).
    pub fn check_keys(&self, min_chars: usize) -> Result<(), ConfigError> {
        if self.auth_disabled {
            return Ok(());
        }
        if self.api_keys.is_empty() && self.executor_keys.is_empty() {
            return Err(ConfigError::Invalid(
                "KINITRO_API_API_KEY is not set; set it or start with --no-auth".into(),
            ));
        }
        let executor_keys: Vec<&String> = self.executor_keys.iter().map(|k| &k.key).collect();
        check_lengths("KINITRO_API_API_KEY", self.api_keys.iter(), min_chars)?;
        check_lengths(
            "KINITRO_API_EXECUTOR_KEYS",
            executor_keys.into_iter(),
            min_chars,
        )
    }
}

/// Refuses keys shorter than `min_chars`, naming which one without echoing it.
fn check_lengths<'a>(
    var: &str,
    keys: impl ExactSizeIterator<Item = &'a String>,
    min_chars: usize,
) -> Result<(), ConfigError> {
    let n = keys.len();
    let mut keys = keys;
    match keys.position(|k| k.chars().count() < min_chars) {
        Some(i) => Err(ConfigError::Invalid(format!(
            "{var}: {} is shorter than {min_chars} characters; use a random key \
             (`kinitro crypto generate-api-key`, or `openssl rand -hex 32`) or start with --no-auth",
            if n == 1 {
                "the key".to_string()
            } else {
                format!("key {} of {n}", i + 1)
            }
        ))),
        None => Ok(()),
    }
}

/// A key bound to the executor ids that start with `prefix` (issue 23 item 5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecutorKey {
    /// The executor-id prefix this key may act as.
    pub prefix: String,
    /// The bearer key.
    pub key: String,
}

impl ExecutorKey {
    /// Parses `prefix:key[,prefix:key…]` (the prefix ends at the first colon); `None` when a pair is
    /// malformed.
    pub fn parse_list(raw: &str) -> Option<Vec<Self>> {
        raw.split(',')
            .map(str::trim)
            .filter(|pair| !pair.is_empty())
            .map(|pair| {
                let (prefix, key) = pair.split_once(':')?;
                let (prefix, key) = (prefix.trim(), key.trim());
                (!prefix.is_empty() && !key.is_empty()).then(|| Self {
                    prefix: prefix.into(),
                    key: key.into(),
                })
            })
            .collect()
    }
}

/// The shortest API key the API accepts (issue 23 item 7): `kinitro crypto generate-api-key` makes 64
/// hex characters (256 bits).
pub const MIN_API_KEY_CHARS: usize = 32;

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Env {
        Env::from_pairs(
            &["KINITRO_API_"],
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        )
    }

    #[test]
    fn executor_keys_are_prefix_key_pairs_and_obey_the_length_rule() {
        let long = "k".repeat(40);
        let raw = format!("gpu-a:{long}, gpu-b:{long}:with-colon");
        let c = ApiConfig::resolve(
            &ApiFlags::default(),
            None,
            None,
            &env(&[("KINITRO_API_EXECUTOR_KEYS", &raw)]),
        )
        .unwrap();
        assert_eq!(c.executor_keys.len(), 2);
        assert_eq!(c.executor_keys[1].prefix, "gpu-b");
        assert_eq!(c.executor_keys[1].key, format!("{long}:with-colon"));
        assert!(c.check_auth().is_ok(), "executor keys alone enable the API");
        for bad in ["no-colon", ":key-without-prefix", "prefix:"] {
            let err = ApiConfig::resolve(
                &ApiFlags::default(),
                None,
                None,
                &env(&[("KINITRO_API_EXECUTOR_KEYS", bad)]),
            )
            .unwrap_err()
            .to_string();
            assert!(err.contains("KINITRO_API_EXECUTOR_KEYS"), "{err}");
            assert!(!err.contains(bad), "the value is never echoed: {err}");
        }
        let short = ApiConfig::resolve(
            &ApiFlags::default(),
            None,
            None,
            &env(&[("KINITRO_API_EXECUTOR_KEYS", "gpu-a:short")]),
        )
        .unwrap();
        let err = short.check_auth().unwrap_err().to_string();
        assert!(
            err.contains("KINITRO_API_EXECUTOR_KEYS: the key is shorter"),
            "{err}"
        );
    }

    #[test]
    fn flag_beats_variable_beats_default() {
        let e = env(&[
            ("KINITRO_API_PORT", "9000"),
            ("KINITRO_API_HOST", "10.0.0.1"),
        ]);
        let flags = ApiFlags {
            port: Some(7000),
            ..Default::default()
        };
        let c = ApiConfig::resolve(&flags, None, None, &e).unwrap();
        assert_eq!((c.port, c.host.as_str()), (7000, "10.0.0.1"));
        let c = ApiConfig::resolve(&ApiFlags::default(), None, None, &env(&[])).unwrap();
        assert_eq!(
            (c.port, c.host.as_str(), c.max_body_bytes, c.db_pool_size),
            (8000, "0.0.0.0", 2_097_152, 10)
        );
    }

    #[test]
    fn keys_rotation_and_auth_rule() {
        let (a, b) = ("a".repeat(32), "b".repeat(40));
        let c = ApiConfig::resolve(
            &ApiFlags::default(),
            None,
            None,
            &env(&[("KINITRO_API_API_KEY", &format!("{a}, {b},"))]),
        )
        .unwrap();
        assert_eq!(c.api_keys, vec![a.clone(), b]);
        assert!(c.check_auth().is_ok());
        let c = ApiConfig::resolve(&ApiFlags::default(), None, None, &env(&[])).unwrap();
        assert!(c.check_auth().is_err());
        let c = ApiConfig::resolve(
            &ApiFlags::default(),
            None,
            None,
            &env(&[("KINITRO_API_AUTH_DISABLED", "yes")]),
        )
        .unwrap();
        assert!(c.check_auth().is_ok());
    }

    #[test]
    fn short_keys_are_refused_unless_auth_is_off() {
        let resolve = |pairs: &[(&str, &str)]| {
            ApiConfig::resolve(&ApiFlags::default(), None, None, &env(pairs)).unwrap()
        };
        let short = "x".repeat(MIN_API_KEY_CHARS - 1);
        let err = resolve(&[("KINITRO_API_API_KEY", &short)])
            .check_auth()
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "KINITRO_API_API_KEY: the key is shorter than 32 characters; use a random key \
             (`kinitro crypto generate-api-key`, or `openssl rand -hex 32`) or start with --no-auth"
        );
        let long = "y".repeat(MIN_API_KEY_CHARS);
        let err = resolve(&[("KINITRO_API_API_KEY", &format!("{long},{short}"))])
            .check_auth()
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("KINITRO_API_API_KEY: key 2 of 2 is shorter"),
            "{err}"
        );
        assert!(!err.contains(&short));
        assert!(resolve(&[("KINITRO_API_API_KEY", &long)])
            .check_auth()
            .is_ok());
        let off = resolve(&[
            ("KINITRO_API_API_KEY", "s3cret"),
            ("KINITRO_API_AUTH_DISABLED", "true"),
        ]);
        assert!(off.check_auth().is_ok());
        assert!(resolve(&[("KINITRO_API_API_KEY", "s3cret")])
            .check_keys(1)
            .is_ok());
    }
}
