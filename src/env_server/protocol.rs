//! The wire types of the environment server protocol (docs/containers.md §2): affinetes'
//! "function_based" protocol, spoken by `kinitro env serve` and by the docker-mode executor. Each
//! body is defined here once; the server and the client both use these types.

use kinitro_actors::scoring::aggregate::FailureKind;
use kinitro_actors::tasks::TaskResult;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The environment id `evaluate` runs when the caller names none (upstream's default).
pub const DEFAULT_ENV_ID: &str = "metaworld/pick-place-v3";

/// `POST /call`: a method name with positional and keyword arguments.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CallRequest {
    /// `evaluate` or `list_environments`.
    pub method: String,
    /// Positional arguments (no method of ours takes any; accepted and ignored).
    #[serde(default)]
    pub args: Vec<Value>,
    /// Keyword arguments.
    #[serde(default)]
    pub kwargs: Map<String, Value>,
}

/// Whether a call ran to an answer (`success`) or was abandoned (`failed`, the server's timeout).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CallStatus {
    /// The method answered; `result` holds its value.
    Success,
    /// The call was abandoned; `result.error` says why.
    Failed,
}

/// The answer to `POST /call`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CallResponse {
    /// Outcome of the call.
    pub status: CallStatus,
    /// The method's value (an [`EvalResult`] for `evaluate`).
    pub result: Value,
    /// Always `null` (affinetes' field, kept for its clients).
    pub error: Option<String>,
}

/// The keyword arguments of `evaluate` (names and defaults as upstream's `Actor.evaluate`; unknown
/// ones are ignored).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EvaluateArgs {
    /// Labels the episode; the default seed.
    pub task_id: i64,
    /// The miner's endpoint.
    pub base_url: String,
    /// Public seed sent to the miner; defaults to `task_id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<i64>,
    /// A label for logs only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Environment id.
    #[serde(default = "default_env_id")]
    pub env_id: String,
    /// Steps per episode.
    #[serde(default = "default_max_timesteps")]
    pub max_timesteps: u32,
    /// `/act` round-trip budget, seconds.
    #[serde(default = "default_action_timeout")]
    pub action_timeout: f64,
    /// Camera images in observations (must match the server's setting).
    #[serde(default = "default_true")]
    pub use_images: bool,
    /// The whole episode's budget, seconds; the call is abandoned 10 s after it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<f64>,
    /// Our addition: the secret simulation seed; when absent the public seed seeds the simulator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sim_seed: Option<u64>,
    /// Our addition: the task's id, sent to the miner as the episode's id and logged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_uuid: Option<String>,
}

fn default_env_id() -> String {
    DEFAULT_ENV_ID.into()
}
fn default_max_timesteps() -> u32 {
    500
}
fn default_action_timeout() -> f64 {
    0.5
}
fn default_true() -> bool {
    true
}

impl EvaluateArgs {
    /// The public seed: `seed`, else `task_id`.
    pub fn public_seed(&self) -> i64 {
        self.seed.unwrap_or(self.task_id)
    }

    /// The episode budget, seconds (upstream's default 300).
    pub fn budget(&self) -> f64 {
        self.timeout.unwrap_or(300.0)
    }
}

/// The numbers of an episode beside the score, as upstream reports them (and ours, which affinetes
/// passes through).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EvalExtra {
    /// Echo of `task_id`.
    pub task_id: i64,
    /// The public seed used.
    pub seed: i64,
    /// Environment id.
    pub env_id: String,
    /// Steps executed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timesteps: Option<u32>,
    /// Steps executed, on a failed episode (upstream's name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timesteps_completed: Option<u32>,
    /// Episode return.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_reward: Option<f64>,
    /// Mean `/act` round trip, seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mean_action_time: Option<f64>,
    /// Slowest `/act` round trip, seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_action_time: Option<f64>,
    /// Echo of `model`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Echo of `base_url`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
}

/// The value of `evaluate`: upstream's result shape plus our `failure_kind`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalResult {
    /// `robotics:<env id>`.
    pub task_name: String,
    /// 1.0 on success, else 0.0.
    pub score: f64,
    /// Success latched over the episode.
    pub success: bool,
    /// The error string of a failed episode (docs/miner-protocol.md §6).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Our addition: who is to blame for the error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_kind: Option<FailureKind>,
    /// Wall time of the episode, seconds.
    pub time_taken: f64,
    /// The episode's numbers.
    pub extra: EvalExtra,
}

impl EvalResult {
    /// An episode's result in the protocol's shape. A success carries `timesteps` and the echoes of
    /// `model` and `base_url`; a failure carries `timesteps_completed` and, beside it, every number
    /// the episode reached (docs/containers.md §2).
    pub fn from_task_result(args: &EvaluateArgs, r: &TaskResult, time_taken: f64) -> Self {
        let failed = r.error.is_some();
        let extra = EvalExtra {
            task_id: args.task_id,
            seed: args.public_seed(),
            env_id: args.env_id.clone(),
            timesteps: Some(r.timesteps),
            timesteps_completed: failed.then_some(r.timesteps),
            total_reward: Some(r.total_reward),
            mean_action_time: r.action_time_mean,
            max_action_time: r.action_time_max,
            model: (!failed).then(|| args.model.clone()).flatten(),
            base_url: (!failed).then(|| args.base_url.clone()),
        };
        Self {
            task_name: format!("robotics:{}", args.env_id),
            score: r.score,
            success: r.success,
            error: r.error.clone(),
            failure_kind: r.error.as_ref().and(r.failure_kind),
            time_taken,
            extra,
        }
    }

    /// A failed result that never reached the miner (an invalid env id, say).
    pub fn error(args: &EvaluateArgs, error: String, kind: FailureKind) -> Self {
        Self {
            task_name: format!("robotics:{}", args.env_id),
            score: 0.0,
            success: false,
            error: Some(error),
            failure_kind: Some(kind),
            time_taken: 0.0,
            extra: EvalExtra {
                task_id: args.task_id,
                seed: args.public_seed(),
                env_id: args.env_id.clone(),
                timesteps_completed: Some(0),
                ..EvalExtra::default()
            },
        }
    }

    /// The task result an executor reports for this answer (docs/containers.md §3, result mapping).
    /// A missing `failure_kind` stays missing: the `Miner ` prefix rule decides it downstream.
    pub fn into_task_result(self, task_uuid: String) -> TaskResult {
        TaskResult {
            task_uuid,
            success: self.success,
            score: self.score,
            total_reward: self.extra.total_reward.unwrap_or(0.0),
            timesteps: self
                .extra
                .timesteps
                .or(self.extra.timesteps_completed)
                .unwrap_or(0),
            error: self.error,
            failure_kind: self.failure_kind,
            action_time_mean: self.extra.mean_action_time,
            action_time_max: self.extra.max_action_time,
            verification_passed: None,
            verification_score: None,
        }
    }
}

/// The `usage` member of `GET /methods`: how many evaluations the server runs at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Evaluations run at once (pools × episodes per pool).
    pub slots: usize,
    /// Episode pools.
    pub pools: usize,
    /// Episodes in flight per pool.
    pub episodes_per_pool: usize,
    /// Evaluations running now.
    pub in_flight: usize,
}

/// One entry of `GET /methods`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MethodInfo {
    /// Method name.
    pub name: String,
    /// Python-style signature, for people.
    pub signature: String,
    /// Always `Actor`.
    pub source: String,
    /// `POST /<name>`.
    pub endpoint: String,
}

/// The answer to `GET /methods`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Methods {
    /// The callable methods.
    pub methods: Vec<MethodInfo>,
    /// The server's capacity.
    pub usage: Usage,
}

/// The body of every error answer (`{"detail": …}`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Detail {
    /// What went wrong.
    pub detail: String,
}

/// The error string of an env id of another family (upstream's wording).
pub fn invalid_env_id(env_id: &str) -> String {
    format!("Invalid env_id for MetaWorld container: {env_id}. Must start with 'metaworld/'")
}

/// The error of the server's own timeout (`status: failed`).
pub fn timeout_error(budget: f64) -> String {
    format!("Task execution exceeded timeout of {budget}s (+10s grace)")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn args() -> EvaluateArgs {
        serde_json::from_value(json!({"task_id": 7, "base_url": "http://m", "model": "miner-3"}))
            .unwrap()
    }

    #[test]
    fn evaluate_defaults_follow_upstream() {
        let a = args();
        assert_eq!(a.env_id, DEFAULT_ENV_ID);
        assert_eq!(
            (a.max_timesteps, a.action_timeout, a.use_images),
            (500, 0.5, true)
        );
        assert_eq!((a.public_seed(), a.budget(), a.sim_seed), (7, 300.0, None));
        let bad = serde_json::from_value::<EvaluateArgs>(json!({"task_id": "x", "base_url": "u"}));
        assert!(bad.is_err(), "a task_id that is not an integer is refused");
    }

    #[test]
    fn results_map_both_ways() {
        let r = TaskResult {
            task_uuid: "t".into(),
            success: false,
            score: 0.0,
            total_reward: 12.5,
            timesteps: 40,
            error: Some("Miner timeout at step 40".into()),
            failure_kind: Some(FailureKind::Miner),
            action_time_mean: Some(0.01),
            action_time_max: Some(0.02),
            verification_passed: None,
            verification_score: None,
        };
        let wire = EvalResult::from_task_result(&args(), &r, 1.5);
        let v = serde_json::to_value(&wire).unwrap();
        assert_eq!(v["failure_kind"], "miner");
        assert_eq!(v["extra"]["timesteps_completed"], 40);
        assert!(
            v["extra"].get("model").is_none(),
            "a failure carries no echo"
        );
        let back: EvalResult = serde_json::from_value(v).unwrap();
        assert_eq!(back.into_task_result("t".into()), r);
        // Upstream's failure shape (no timesteps, no failure_kind) maps by the fallback rules.
        let upstream: EvalResult = serde_json::from_value(json!({"task_name": "robotics:x",
            "score": 0.0, "success": false, "error": "boom", "time_taken": 1.0,
            "extra": {"task_id": 1, "seed": 1, "env_id": "x", "timesteps_completed": 3}}))
        .unwrap();
        let t = upstream.into_task_result("u".into());
        assert_eq!(
            (t.timesteps, t.total_reward, t.failure_kind),
            (3, 0.0, None)
        );
    }
}
