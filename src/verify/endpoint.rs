//! Asking the miner's endpoint for the sample actions (docs/verification.md §2 step 5): a
//! `/reset` that looks like any episode's, then one `/act` per sample, each within 10 s. The calls
//! go through the executor's own miner client ([`crate::executor::miner`]): the same address
//! guard, headers (a fresh `X-Kinitro-Episode`), body caps and connection handling as an episode,
//! so the endpoint cannot tell a spot-check from an episode by how it is asked. The endpoint is not
//! seeded (a real episode is not either), which is why stochastic policies cannot pass.

use rand::Rng;

use super::compare::flatten_action;
use crate::executor::miner::{MinerCalls, MinerClient};
use crate::executor::worker::reset_body;
use crate::sim::task::Task;

/// Budget of each call, seconds.
const CALL_TIMEOUT: f64 = 10.0;
/// Largest `/act` reply read (the executor's default `KINITRO_EXECUTOR_MAX_RESPONSE_BYTES`).
const REPLY_LIMIT: usize = 1024 * 1024;

/// What the endpoint answered for each sample: the flattened action, or why there is none.
pub type Answers = Vec<Result<Vec<f32>, String>>;

/// Resets an episode on `endpoint` and asks it for an action per observation. `Err` when the
/// endpoint is refused, cannot be reached or fails the reset; per-sample failures are in the
/// answers. Runs on an actix arbiter (the miner client is not `Send`).
pub async fn ask(
    endpoint: &str,
    observations: &[serde_json::Value],
    allow_private: bool,
) -> Result<Answers, String> {
    crate::executor::guard::check_endpoint(endpoint, allow_private).await?;
    let client = MinerClient::new(allow_private);
    let episode = uuid::Uuid::new_v4().to_string();
    let mut calls = MinerCalls::new(&client, endpoint, &episode)?;
    let (task, seed) = {
        let mut rng = rand::rng();
        (
            Task::ALL[rng.random_range(0..Task::ALL.len())],
            rng.random_range(0..i64::from(i32::MAX)),
        )
    };
    calls.reset(reset_body(task, seed), CALL_TIMEOUT).await?;
    let mut answers = Vec::with_capacity(observations.len());
    for (t, obs) in observations.iter().enumerate() {
        let body = serde_json::to_vec(&serde_json::json!({ "obs": obs }))
            .unwrap_or_default()
            .into();
        let answer = calls
            .act_value(body, CALL_TIMEOUT, REPLY_LIMIT, t as u32)
            .await
            .and_then(|(action, _)| {
                flatten_action(&action).ok_or_else(|| {
                    format!("the action at step {t} has no numeric continuous channels")
                })
            });
        answers.push(answer);
    }
    Ok(answers)
}
