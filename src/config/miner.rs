//! `kinitro miner serve` settings (docs/configuration.md §2.6, prefix `KINITRO_MINER_`).

use clap::{Args, ValueEnum};

use super::{ConfigError, Env, SettingValue};

/// Reference policies (docs/miner-protocol.md §8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PolicyKind {
    /// Uniform random actions from a seeded generator.
    Random,
    /// All-zero actions.
    Zero,
    /// Scripted expert reading the privileged state.
    Expert,
}

impl SettingValue for PolicyKind {
    const EXPECTED: &'static str = "random, zero or expert";
    fn parse_setting(raw: &str) -> Option<Self> {
        PolicyKind::from_str(raw.trim(), true).ok()
    }
}

/// Flags of `kinitro miner serve`.
#[derive(Debug, Clone, Default, Args)]
pub struct MinerFlags {
    /// Bind address [env: KINITRO_MINER_HOST, default 127.0.0.1]
    #[arg(long)]
    pub host: Option<String>,
    /// Port [env: KINITRO_MINER_PORT, default 8001]
    #[arg(long)]
    pub port: Option<u16>,
    /// Policy [env: KINITRO_MINER_POLICY, default random]
    #[arg(long, value_enum)]
    pub policy: Option<PolicyKind>,
    /// Seed of the random policy [env: KINITRO_MINER_SEED, default 0]
    #[arg(long)]
    pub seed: Option<u64>,
    /// Milliseconds slept before each /act reply [env: KINITRO_MINER_DELAY_MS, default 0]
    #[arg(long)]
    pub delay_ms: Option<u64>,
}

/// Resolved reference-miner settings.
#[derive(Debug, Clone)]
pub struct MinerConfig {
    /// Bind address.
    pub host: String,
    /// Port.
    pub port: u16,
    /// Policy.
    pub policy: PolicyKind,
    /// Random seed.
    pub seed: u64,
    /// Artificial latency per `/act`.
    pub delay_ms: u64,
}

impl MinerConfig {
    /// Merges flags, the environment and defaults.
    pub fn resolve(flags: &MinerFlags, env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            host: match &flags.host {
                Some(h) => h.clone(),
                None => env.get("HOST")?.unwrap_or_else(|| "127.0.0.1".into()),
            },
            port: match flags.port {
                Some(p) => p,
                None => env.get("PORT")?.unwrap_or(8001),
            },
            policy: match flags.policy {
                Some(p) => p,
                None => env.get("POLICY")?.unwrap_or(PolicyKind::Random),
            },
            seed: match flags.seed {
                Some(s) => s,
                None => env.get("SEED")?.unwrap_or(0),
            },
            delay_ms: match flags.delay_ms {
                Some(d) => d,
                None => env.get("DELAY_MS")?.unwrap_or(0),
            },
        })
    }
}
