//! The verification settings of an executor and of `kinitro verify` (docs/verification.md §6):
//! `KINITRO_EXECUTOR_VERIFICATION_*`, plus the Hub's own `HF_ENDPOINT` and `HF_TOKEN`.

use std::path::PathBuf;

use super::{ConfigError, Env, Seconds, SettingValue};
use crate::verify::hub::{gb_to_bytes, DEFAULT_ENDPOINT};
use crate::verify::samples::SampleSource;

/// The verification sandbox image `kinitro env build verifier` tags by default.
pub const DEFAULT_IMAGE: &str = "kinitro/verifier:v1";

impl SettingValue for SampleSource {
    const EXPECTED: &'static str = "upstream or realistic";
    fn parse_setting(raw: &str) -> Option<Self> {
        raw.trim().parse().ok()
    }
}

/// Everything one verification needs to know, and when an executor starts one.
#[derive(Debug, Clone)]
pub struct VerificationConfig {
    /// Verify at all (executors only; `kinitro verify` always does).
    pub enabled: bool,
    /// Probability that a task of a not-yet-verified (uid, revision) pair starts a verification.
    pub rate: f64,
    /// Relative tolerance of the action comparison; passing needs a mean match ≥ 1 − tolerance.
    pub tolerance: f64,
    /// Observations per verification.
    pub samples: u32,
    /// Where the observations come from.
    pub samples_from: SampleSource,
    /// Largest repository accepted, by listing and by download.
    pub max_repo_size_gb: f64,
    /// The sandbox image.
    pub image: String,
    /// Where snapshots are kept.
    pub cache_dir: PathBuf,
    /// Largest total size of the snapshot cache (least recently used removed beyond it).
    pub cache_max_gb: f64,
    /// Wall time of one sandbox run.
    pub timeout: Seconds,
    /// Admit a loopback Hub and loopback redirects (tests only).
    pub allow_private_hub: bool,
    /// The Hub (`HF_ENDPOINT`).
    pub hf_endpoint: String,
    /// The Hub token (`HF_TOKEN`), sent as a bearer token when set.
    pub hf_token: Option<String>,
}

/// `$XDG_CACHE_HOME/kinitro/verification` (an absolute `XDG_CACHE_HOME` only), else
/// `~/.cache/kinitro/verification`: never a shared temporary folder another user could prepare.
fn default_cache_dir() -> PathBuf {
    super::xdg_dir("XDG_CACHE_HOME", ".cache").join("kinitro/verification")
}

impl VerificationConfig {
    /// Reads the `VERIFICATION_*` fields of `env` (the executor's prefix) and `HF_*` of `hub`.
    pub fn resolve(env: &Env, hub: &Env) -> Result<Self, ConfigError> {
        let positive = |v: &f64| *v > 0.0;
        Ok(Self {
            enabled: env.get("VERIFICATION_ENABLED")?.unwrap_or(false),
            rate: env
                .get_checked(
                    "VERIFICATION_RATE",
                    |v: &f64| (0.0..=1.0).contains(v),
                    "a number between 0.0 and 1.0",
                )?
                .unwrap_or(0.05),
            // At 1 or more every comparison would pass.
            tolerance: env
                .get_checked(
                    "VERIFICATION_TOLERANCE",
                    |v: &f64| (0.0..1.0).contains(v),
                    "a number ≥ 0 and < 1",
                )?
                .unwrap_or(0.001),
            samples: env
                .get_checked(
                    "VERIFICATION_SAMPLES",
                    |v: &u32| (1..=20).contains(v),
                    "an integer between 1 and 20",
                )?
                .unwrap_or(5),
            samples_from: env
                .get("VERIFICATION_SAMPLES_FROM")?
                .unwrap_or(SampleSource::Upstream),
            max_repo_size_gb: env
                .get_checked(
                    "VERIFICATION_MAX_REPO_SIZE_GB",
                    |v: &f64| (0.1..=50.0).contains(v),
                    "a number between 0.1 and 50",
                )?
                .unwrap_or(5.0),
            image: env
                .get("VERIFICATION_IMAGE")?
                .unwrap_or_else(|| DEFAULT_IMAGE.to_string()),
            cache_dir: env
                .get("VERIFICATION_CACHE_DIR")?
                .unwrap_or_else(default_cache_dir),
            cache_max_gb: env
                .get_checked("VERIFICATION_CACHE_MAX_GB", positive, "a number > 0")?
                .unwrap_or(20.0),
            timeout: env
                .get_checked(
                    "VERIFICATION_TIMEOUT",
                    |s: &Seconds| s.0 > 0.0,
                    "a positive number of seconds",
                )?
                .unwrap_or(Seconds(120.0)),
            allow_private_hub: env.get("VERIFICATION_ALLOW_PRIVATE_HUB")?.unwrap_or(false),
            hf_endpoint: hub
                .get::<String>("ENDPOINT")?
                .filter(|e| !e.trim().is_empty())
                .unwrap_or_else(|| DEFAULT_ENDPOINT.to_string())
                .trim_end_matches('/')
                .to_string(),
            hf_token: hub.secret("TOKEN", |t| !t.is_empty(), "a token")?,
        })
    }

    /// [`Self::max_repo_size_gb`] in bytes (GiB, as upstream counts).
    pub fn max_repo_bytes(&self) -> u64 {
        gb_to_bytes(self.max_repo_size_gb)
    }

    /// [`Self::cache_max_gb`] in bytes.
    pub fn cache_max_bytes(&self) -> u64 {
        gb_to_bytes(self.cache_max_gb)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> (Env, Env) {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        (
            Env::from_pairs(&["KINITRO_EXECUTOR_"], pairs.clone()),
            Env::from_pairs(&["HF_"], pairs),
        )
    }

    #[test]
    fn defaults_follow_the_guide() {
        let (e, h) = env(&[]);
        let c = VerificationConfig::resolve(&e, &h).unwrap();
        assert!(!c.enabled);
        assert_eq!((c.rate, c.tolerance, c.samples), (0.05, 0.001, 5));
        assert_eq!(c.image, DEFAULT_IMAGE);
        assert_eq!(c.hf_endpoint, DEFAULT_ENDPOINT);
        assert_eq!(c.samples_from, SampleSource::Upstream);
        assert_eq!(c.timeout.0, 120.0);
        assert_eq!(c.max_repo_bytes(), 5 * 1024 * 1024 * 1024);
    }

    #[test]
    fn bad_values_are_named() {
        let (e, h) = env(&[("KINITRO_EXECUTOR_VERIFICATION_SAMPLES_FROM", "replay")]);
        let err = VerificationConfig::resolve(&e, &h).unwrap_err().to_string();
        assert!(
            err.contains("KINITRO_EXECUTOR_VERIFICATION_SAMPLES_FROM"),
            "{err}"
        );
        let (e, h) = env(&[("HF_ENDPOINT", "http://127.0.0.1:9/"), ("HF_TOKEN", "hf_x")]);
        let c = VerificationConfig::resolve(&e, &h).unwrap();
        assert_eq!(c.hf_endpoint, "http://127.0.0.1:9");
        assert_eq!(c.hf_token.as_deref(), Some("hf_x"));
    }
}
