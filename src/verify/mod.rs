//! Verification (docs/verification.md): spot-checks that a miner's endpoint serves the policy of
//! the HuggingFace revision it committed.
//!
//! One verification: draw the sample observations ([`samples`], NumPy's generator reproduced in
//! [`numpy`]); check the repository's size and download its snapshot ([`hub`]); run the committed
//! `policy.py` on the samples in a sandbox container ([`sandbox`]) — the executor itself never
//! loads a miner file; ask the endpoint for the same samples ([`endpoint`]); compare the actions as
//! upstream does ([`compare`]). [`spot`] decides when an executor verifies and reports the outcome.

pub mod compare;
pub mod endpoint;
pub mod hub;
pub mod numpy;
pub mod samples;
pub mod sandbox;
pub mod spot;

use std::time::Duration;

use crate::config::verification::VerificationConfig;
use crate::container::Engine;
use crate::wire::{VerificationOutcome, VerificationReport, VerificationSamples};
use samples::SampleSource;

/// The miner deployment one verification checks.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Target {
    /// Miner uid (enters the upstream sample seed).
    pub uid: u16,
    /// Miner hotkey.
    pub hotkey: String,
    /// HuggingFace repo, `owner/name`.
    pub repo: String,
    /// The committed revision.
    pub revision: String,
    /// The endpoint serving the policy.
    pub endpoint: String,
}

/// Runs verifications with one configuration on one Docker engine.
#[derive(Clone)]
pub struct Verifier {
    config: VerificationConfig,
    engine: Engine,
    allow_private_endpoints: bool,
}

impl Verifier {
    /// Connects to the local Docker engine (`DOCKER_HOST`) and checks that the sandbox image is
    /// there; verification cannot run without either, so both are start-up errors.
    pub async fn connect(
        config: VerificationConfig,
        allow_private_endpoints: bool,
    ) -> Result<Self, String> {
        let engine = crate::container::connect("localhost", 120)
            .await
            .map_err(|e| {
                format!("verification needs a Docker engine (set DOCKER_HOST to reach one): {e}")
            })?;
        if let Err(e) = engine.docker.inspect_image(&config.image).await {
            return Err(format!(
                "the verification image {} is not on {} ({e}): build it with `kinitro env build verifier{}`",
                config.image,
                engine.uri,
                if config.image == crate::config::verification::DEFAULT_IMAGE {
                    String::new()
                } else {
                    format!(" --tag {}", config.image)
                }
            ));
        }
        let left = sandbox::remove_leftovers(
            &engine,
            Duration::from_secs_f64(config.timeout.0) + Duration::from_secs(600),
        )
        .await;
        if left > 0 {
            tracing::info!(removed = left, "removed leftover verification sandboxes");
        }
        Ok(Self {
            config,
            engine,
            allow_private_endpoints,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &VerificationConfig {
        &self.config
    }

    /// One verification of `target`, never failing: every problem is an outcome. Runs on an actix
    /// system (the Hub and endpoint clients are awc's).
    pub async fn verify(&self, target: &Target, executor_id: &str) -> VerificationReport {
        let c = &self.config;
        let seed = match c.samples_from {
            SampleSource::Upstream => samples::test_seed(target.uid, &target.revision),
            SampleSource::Realistic => samples::fresh_seed(),
        };
        let drawn = samples::draw(c.samples_from, seed, c.samples as usize);
        let observations: Vec<serde_json::Value> = drawn.iter().map(|s| s.observation()).collect();
        let mut report = VerificationReport {
            executor_id: executor_id.to_string(),
            uid: i64::from(target.uid),
            hotkey: target.hotkey.clone(),
            repo: target.repo.clone(),
            revision: target.revision.clone(),
            endpoint: target.endpoint.clone(),
            outcome: VerificationOutcome::Unverifiable,
            match_score: None,
            samples: VerificationSamples {
                source: c.samples_from.to_string(),
                seed,
                count: c.samples,
                scores: Vec::new(),
            },
            error: None,
        };
        let fail = |mut report: VerificationReport, outcome, error: String| {
            report.outcome = outcome;
            report.error = Some(error);
            report
        };
        let hub = hub::HubConfig {
            endpoint: c.hf_endpoint.clone(),
            token: c.hf_token.clone(),
            allow_private: c.allow_private_hub,
            max_repo_bytes: c.max_repo_bytes(),
            max_files: hub::DEFAULT_MAX_FILES,
            cache_dir: c.cache_dir.clone(),
            cache_max_bytes: c.cache_max_bytes(),
        };
        let snapshot = match hub::snapshot(&hub, &target.repo, &target.revision).await {
            Ok(dir) => dir,
            Err(hub::HubError::Invalid(e)) => return fail(report, VerificationOutcome::Invalid, e),
            Err(hub::HubError::Unverifiable(e)) => {
                return fail(report, VerificationOutcome::Unverifiable, e)
            }
        };
        // Upstream seeds sample i's global generators with test_seed + i.
        let seeds: Vec<u64> = (0..drawn.len() as u64).map(|i| seed + i).collect();
        let limits = sandbox::SandboxLimits {
            timeout: Duration::from_secs_f64(c.timeout.0),
            ..Default::default()
        };
        let (local, errors) = match sandbox::run(
            &self.engine,
            &c.image,
            &snapshot,
            &seeds,
            &observations,
            &limits,
        )
        .await
        {
            sandbox::SandboxOutcome::Actions(actions, errors) => (actions, errors),
            sandbox::SandboxOutcome::Invalid(e) => {
                return fail(report, VerificationOutcome::Invalid, e)
            }
            sandbox::SandboxOutcome::Unverifiable(e) => {
                return fail(report, VerificationOutcome::Unverifiable, e)
            }
        };
        if local.iter().all(Option::is_none) {
            let first = errors.into_iter().flatten().next();
            return fail(
                report,
                VerificationOutcome::Invalid,
                format!(
                    "the policy raised on every sample: {}",
                    first.unwrap_or_else(|| "no action".into())
                ),
            );
        }
        let remote = match endpoint::ask(
            &target.endpoint,
            &observations,
            self.allow_private_endpoints,
        )
        .await
        {
            Ok(answers) if answers.iter().any(Result::is_ok) => answers,
            Ok(answers) => {
                let first = answers.into_iter().find_map(Result::err);
                return fail(
                    report,
                    VerificationOutcome::Invalid,
                    format!(
                        "the endpoint does not answer /act: {}",
                        first.unwrap_or_default()
                    ),
                );
            }
            Err(e) => {
                return fail(
                    report,
                    VerificationOutcome::Invalid,
                    format!("the endpoint does not answer: {e}"),
                )
            }
        };
        let scores: Vec<f64> = local
            .iter()
            .zip(&remote)
            .map(|(l, r)| match (l, r) {
                (Some(l), Ok(r)) => compare::sample_match(l, r, c.tolerance),
                _ => 0.0,
            })
            .collect();
        let mean = compare::overall(&scores);
        report.samples.scores = scores;
        report.match_score = Some(mean);
        if compare::passes(mean, c.tolerance) {
            report.outcome = VerificationOutcome::Passed;
        } else {
            report.outcome = VerificationOutcome::Mismatch;
            report.error = Some(format!(
                "the endpoint's actions differ from the committed policy's (match {mean:.4})"
            ));
        }
        report
    }
}
