//! `kinitro healthcheck [--url URL]` (docs/configuration.md §3.10): for container HEALTHCHECKs.

use std::time::Duration;

use clap::Args;

use super::{CommandResult, Failure};

/// `kinitro healthcheck` options.
#[derive(Debug, Args)]
pub struct HealthcheckArgs {
    /// URL to probe
    #[arg(long, default_value = "http://127.0.0.1:8000/health")]
    pub url: String,
}

/// Sends GET and succeeds on HTTP 200 within 3 s.
pub fn execute(args: HealthcheckArgs) -> CommandResult {
    actix_web::rt::System::new().block_on(async move {
        let client = awc::Client::builder()
            .timeout(Duration::from_secs(3))
            .finish();
        let response = client
            .get(&args.url)
            .send()
            .await
            .map_err(|e| Failure::runtime(format!("{}: {e}", args.url)))?;
        if response.status() == awc::http::StatusCode::OK {
            Ok(())
        } else {
            Err(Failure::runtime(format!(
                "{}: HTTP {}",
                args.url,
                response.status()
            )))
        }
    })
}
