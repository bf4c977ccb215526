//! Asking the miner's endpoint for the sample actions (docs/verification.md §2 step 4): a
//! `/reset` that looks like any episode's, then one `/act` per sample, each within 10 s, through
//! the executor's address guard and with capped bodies. The endpoint is not seeded (a real episode
//! is not either), which is why stochastic policies cannot pass.

use std::time::Duration;

use rand::Rng;
use serde_json::{json, Value};

use super::compare::flatten_action;
use crate::executor::miner::GuardedResolver;
use crate::sim::task::Task;

/// Budget of each call.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest reply read.
const REPLY_LIMIT: usize = 1024 * 1024;

/// What the endpoint answered for each sample: the flattened action, or why there is none.
pub type Answers = Vec<Result<Vec<f32>, String>>;

/// An awc client for miner endpoints: the guard refuses non-public addresses unless
/// `allow_private` (local miners, tests).
fn client(allow_private: bool) -> awc::Client {
    let resolver = if allow_private {
        actix_tls::connect::Resolver::default()
    } else {
        actix_tls::connect::Resolver::custom(GuardedResolver)
    };
    awc::Client::builder()
        .connector(
            awc::Connector::new()
                .connector(actix_tls::connect::Connector::new(resolver).service())
                .timeout(crate::executor::miner::CONNECT_TIMEOUT),
        )
        .disable_redirects()
        .timeout(CALL_TIMEOUT)
        .finish()
}

/// Posts `body` to `url`; the reply's JSON.
async fn post(client: &awc::Client, url: &str, body: &Value) -> Result<Value, String> {
    let mut res = client
        .post(url)
        .send_json(body)
        .await
        .map_err(|e| format!("POST {url}: {e}"))?;
    if !res.status().is_success() {
        return Err(format!("POST {url}: HTTP {}", res.status().as_u16()));
    }
    let bytes = res
        .body()
        .limit(REPLY_LIMIT)
        .await
        .map_err(|e| format!("POST {url}: {e}"))?;
    serde_json::from_slice(&bytes).map_err(|e| format!("POST {url}: not JSON: {e}"))
}

/// Resets an episode on `endpoint` and asks it for an action per observation. `Err` when the
/// endpoint cannot be reached or refuses the reset; per-sample failures are in the answers.
pub async fn ask(
    endpoint: &str,
    observations: &[Value],
    allow_private: bool,
) -> Result<Answers, String> {
    crate::executor::guard::check_endpoint(endpoint, allow_private).await?;
    let client = client(allow_private);
    let base = endpoint.trim_end_matches('/');
    let (task, seed) = {
        let mut rng = rand::rng();
        (
            Task::ALL[rng.random_range(0..Task::ALL.len())],
            rng.random_range(0..i64::from(i32::MAX)),
        )
    };
    let reset = json!({ "task_config": crate::sim::env::task_config(task, seed) });
    post(&client, &format!("{base}/reset"), &reset).await?;
    let mut answers = Vec::with_capacity(observations.len());
    for obs in observations {
        let answer = post(&client, &format!("{base}/act"), &json!({ "obs": obs }))
            .await
            .and_then(|reply| {
                flatten_action(&reply["action"])
                    .ok_or_else(|| "the reply has no action with continuous channels".to_string())
            });
        answers.push(answer);
    }
    Ok(answers)
}
