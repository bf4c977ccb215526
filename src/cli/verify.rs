//! `kinitro verify` (docs/verification.md §1): one verification by hand, with the executor's
//! verification settings (`KINITRO_EXECUTOR_VERIFICATION_*`, `HF_ENDPOINT`, `HF_TOKEN`).
//!
//! Exit status: 0 `passed`, 4 `mismatch`, 5 `invalid`, 3 `unverifiable`, 1 a failure of the command
//! itself (no Docker engine, the report could not be stored), 2 usage.

use clap::Args;

use super::{init_logging, CommandResult, Failure};
use crate::config::executor::{ExecutorConfig, ExecutorFlags};
use crate::config::{Env, LogFormat, LogLevel};
use crate::verify::{spot, Target, Verifier};
use crate::wire::VerificationOutcome;

/// `kinitro verify` options.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// HuggingFace repo (`owner/name`)
    #[arg(long)]
    pub repo: String,
    /// The committed revision
    #[arg(long)]
    pub revision: String,
    /// The miner's endpoint
    #[arg(long)]
    pub endpoint: String,
    /// Miner uid (enters the upstream sample seed)
    #[arg(long, default_value_t = 0)]
    pub uid: u16,
    /// Miner hotkey (recorded with --store)
    #[arg(long, default_value = "manual")]
    pub hotkey: String,
    /// Samples (default KINITRO_EXECUTOR_VERIFICATION_SAMPLES, 5)
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=20))]
    pub samples: Option<u32>,
    /// Print the report as JSON
    #[arg(long)]
    pub json: bool,
    /// Record the report through the API (KINITRO_EXECUTOR_API_URL, KINITRO_EXECUTOR_API_KEY,
    /// KINITRO_EXECUTOR_EXECUTOR_ID)
    #[arg(long)]
    pub store: bool,
}

/// The exit status of an outcome.
pub fn exit_code(outcome: VerificationOutcome) -> u8 {
    match outcome {
        VerificationOutcome::Passed => 0,
        VerificationOutcome::Unverifiable => 3,
        VerificationOutcome::Mismatch => 4,
        VerificationOutcome::Invalid => 5,
    }
}

/// Runs one verification and prints its report.
pub fn execute(
    args: VerifyArgs,
    level: Option<LogLevel>,
    format: Option<LogFormat>,
) -> CommandResult {
    let env = Env::from_process(&["KINITRO_EXECUTOR_"]);
    init_logging(
        level.or(Some(LogLevel::Warn)),
        format.or(Some(LogFormat::Text)),
        Some(&env),
    )?;
    // The executor's own settings, read once; only the default id differs from an executor's.
    let flags = ExecutorFlags {
        executor_id: env
            .get::<String>("EXECUTOR_ID")?
            .is_none()
            .then(|| "kinitro-verify".to_string()),
        ..ExecutorFlags::default()
    };
    let executor = ExecutorConfig::resolve(&flags, &env)?;
    if args.store {
        super::executor::check_api_url(&executor.api_url, executor.allow_insecure_api)?;
    }
    let mut config = executor.verification;
    if let Some(n) = args.samples {
        config.samples = n;
    }
    let (api_url, api_key, executor_id) =
        (executor.api_url, executor.api_key, executor.executor_id);
    let target = Target {
        uid: args.uid,
        hotkey: args.hotkey.clone(),
        repo: args.repo.clone(),
        revision: args.revision.clone(),
        endpoint: args.endpoint.clone(),
    };
    let report = actix_web::rt::System::new().block_on(async {
        let verifier = Verifier::connect(config, executor.allow_private_endpoints)
            .await
            .map_err(Failure::runtime)?;
        let report = verifier.verify(&target, &executor_id).await;
        let stored = match args.store {
            true => Some(spot::post_report(&api_url, api_key.as_deref(), &report).await),
            false => None,
        };
        Ok::<_, Failure>((report, stored))
    })?;
    let (report, stored) = report;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        );
    } else {
        println!("outcome: {}", report.outcome.as_str());
        if let Some(m) = report.match_score {
            println!("match: {m:.4}");
        }
        println!(
            "samples: {} ({}, seed {})",
            report.samples.count, report.samples.source, report.samples.seed
        );
        if let Some(e) = &report.error {
            println!("error: {e}");
        }
    }
    if let Some(Err(e)) = stored {
        return Err(Failure::runtime(format!("cannot store the report: {e}")));
    }
    match exit_code(report.outcome) {
        0 => Ok(()),
        code => Err(Failure {
            code,
            message: format!("verification {}", report.outcome.as_str()),
        }),
    }
}
