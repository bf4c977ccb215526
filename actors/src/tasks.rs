//! Task results and the submission decision (docs/database.md §4.2–4.4), as pure functions so that
//! the API's handlers and the local task queue apply exactly the same rules.

use serde_json::{json, Value};

use crate::scoring::aggregate::FailureKind;
use crate::states::TaskStatus;

/// Longest `error` text stored (longer ones are truncated).
pub const MAX_ERROR_CHARS: usize = 4096;

/// One episode result as an executor reports it (docs/api.md §4.10 `TaskResult`).
#[derive(Debug, Clone, PartialEq)]
pub struct TaskResult {
    /// Task.
    pub task_uuid: String,
    /// Success latched over the episode.
    pub success: bool,
    /// 1.0 on success by convention.
    pub score: f64,
    /// Episode return.
    pub total_reward: f64,
    /// Steps executed.
    pub timesteps: u32,
    /// Error text.
    pub error: Option<String>,
    /// Blame: explicit, or derived once by [`TaskResult::settled`] where a submitted result enters
    /// (docs/database.md §4.3).
    pub failure_kind: Option<FailureKind>,
    /// Mean `/act` round trip, seconds.
    pub action_time_mean: Option<f64>,
    /// Slowest `/act` round trip, seconds.
    pub action_time_max: Option<f64>,
    /// Later phase, stored.
    pub verification_passed: Option<bool>,
    /// Later phase, stored.
    pub verification_score: Option<f64>,
}

impl TaskResult {
    /// The explicit failure kind, else the one derived from `success` and `error`
    /// (docs/database.md §4.3).
    pub fn effective_failure_kind(&self) -> Option<FailureKind> {
        if self.success {
            return None;
        }
        if self.failure_kind.is_some() {
            return self.failure_kind;
        }
        match self.error.as_deref() {
            None | Some("") => None,
            Some(e) if e.starts_with("Miner ") => Some(FailureKind::Miner),
            Some(_) => Some(FailureKind::Infrastructure),
        }
    }

    /// The result with its blame settled: `failure_kind` becomes [`Self::effective_failure_kind`].
    /// Applied once, where a submitted result becomes this type (the API's submit handler and the
    /// local task queue); the rules after it read `failure_kind` only.
    pub fn settled(mut self) -> Self {
        self.failure_kind = self.effective_failure_kind();
        self
    }

    fn error_text(&self) -> Option<String> {
        self.error.as_ref().map(|e| truncate(e))
    }
}

/// Truncates to [`MAX_ERROR_CHARS`] characters.
pub fn truncate(s: &str) -> String {
    s.chars().take(MAX_ERROR_CHARS).collect()
}

/// The state of a task row, as far as a submission cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskState {
    /// Lifecycle state.
    pub status: TaskStatus,
    /// Current or last claimant.
    pub assigned_to: Option<String>,
    /// Claims so far.
    pub attempts: i32,
    /// Claims allowed.
    pub max_attempts: i32,
    /// Idempotency: last accepted submitter.
    pub last_submitted_by: Option<String>,
    /// Idempotency: `attempts` at that submission.
    pub last_submitted_attempt: Option<i32>,
}

/// What to do with one submitted result.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Already applied: change nothing.
    Duplicate,
    /// Refused with this message.
    Rejected(String),
    /// Apply: new status, `result` JSON, whether `completed_at` is set, whether it was re-queued.
    Apply {
        /// New status.
        status: TaskStatus,
        /// The `result` column.
        result: Value,
        /// Terminal (sets `completed_at`) or re-queued (clears `assigned_at`).
        terminal: bool,
    },
}

/// The submission decision of docs/database.md §4.4 for an executor `executor` and an existing row;
/// `r` is [settled](TaskResult::settled).
pub fn decide(row: &TaskState, executor: &str, uuid: &str, r: &TaskResult) -> Decision {
    let not_assigned = || {
        Decision::Rejected(format!(
            "Task {uuid}: not found or not assigned to executor"
        ))
    };
    if row.last_submitted_by.as_deref() == Some(executor)
        && row.last_submitted_attempt == Some(row.attempts)
    {
        return Decision::Duplicate;
    }
    if row.status == TaskStatus::Cancelled {
        return Decision::Rejected(format!("Task {uuid}: cycle cancelled"));
    }
    let holds = row.assigned_to.as_deref() == Some(executor);
    if !holds || !row.status.is_open() {
        return not_assigned();
    }
    match r.failure_kind {
        Some(FailureKind::Infrastructure) => {
            let last_error = r.error_text().unwrap_or_default();
            if row.attempts < row.max_attempts {
                Decision::Apply {
                    status: TaskStatus::Pending,
                    result: json!({"requeued": true, "failure_kind": "infrastructure", "last_error": last_error,
                                   "executor_id": executor, "attempt": row.attempts}),
                    terminal: false,
                }
            } else {
                Decision::Apply {
                    status: TaskStatus::Failed,
                    result: max_attempts_result(&last_error),
                    terminal: true,
                }
            }
        }
        kind => Decision::Apply {
            status: if r.success {
                TaskStatus::Completed
            } else {
                TaskStatus::Failed
            },
            result: json!({
                "success": r.success, "score": r.score, "total_reward": r.total_reward,
                "timesteps": r.timesteps, "error": r.error_text(), "failure_kind": kind,
                "executor_id": executor, "attempt": row.attempts,
                "action_time_mean": r.action_time_mean, "action_time_max": r.action_time_max,
                "verification_passed": r.verification_passed, "verification_score": r.verification_score,
            }),
            terminal: true,
        },
    }
}

/// The `result` of a task given up after too many attempts (docs/database.md §2.4).
pub fn max_attempts_result(last_error: &str) -> Value {
    json!({"success": false, "score": 0.0, "total_reward": 0.0, "timesteps": 0,
           "error": "max attempts exceeded", "failure_kind": "infrastructure", "last_error": last_error})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(status: TaskStatus, to: Option<&str>, attempts: i32) -> TaskState {
        TaskState {
            status,
            assigned_to: to.map(String::from),
            attempts,
            max_attempts: 3,
            last_submitted_by: None,
            last_submitted_attempt: None,
        }
    }

    fn result(success: bool, error: Option<&str>, kind: Option<FailureKind>) -> TaskResult {
        TaskResult {
            task_uuid: "u".into(),
            success,
            score: if success { 1.0 } else { 0.0 },
            total_reward: 1.5,
            timesteps: 10,
            error: error.map(String::from),
            failure_kind: kind,
            action_time_mean: None,
            action_time_max: None,
            verification_passed: None,
            verification_score: None,
        }
        .settled()
    }

    #[test]
    fn derives_failure_kind() {
        assert_eq!(result(true, Some("x"), None).effective_failure_kind(), None);
        assert_eq!(result(false, Some(""), None).effective_failure_kind(), None);
        assert_eq!(
            result(false, Some("Miner timeout"), None).effective_failure_kind(),
            Some(FailureKind::Miner)
        );
        assert_eq!(
            result(false, Some("sim crashed"), None).effective_failure_kind(),
            Some(FailureKind::Infrastructure)
        );
    }

    #[test]
    fn transitions() {
        let ok = result(true, None, None);
        match decide(&row(TaskStatus::Assigned, Some("x"), 1), "x", "u", &ok) {
            Decision::Apply {
                status,
                terminal,
                result,
            } => {
                assert_eq!((status, terminal), (TaskStatus::Completed, true));
                assert_eq!(result["attempt"], 1);
            }
            d => panic!("{d:?}"),
        }
        assert_eq!(
            decide(&row(TaskStatus::Assigned, Some("y"), 1), "x", "u", &ok),
            Decision::Rejected("Task u: not found or not assigned to executor".into())
        );
        assert_eq!(
            decide(&row(TaskStatus::Cancelled, Some("x"), 1), "x", "u", &ok),
            Decision::Rejected("Task u: cycle cancelled".into())
        );
        let mut done = row(TaskStatus::Completed, Some("x"), 1);
        done.last_submitted_by = Some("x".into());
        done.last_submitted_attempt = Some(1);
        assert_eq!(decide(&done, "x", "u", &ok), Decision::Duplicate);
        // A late result after a stale re-queue, not yet re-claimed, is still accepted.
        assert!(matches!(
            decide(&row(TaskStatus::Pending, Some("x"), 1), "x", "u", &ok),
            Decision::Apply { .. }
        ));
        let infra = result(false, Some("simulator exploded"), None);
        match decide(&row(TaskStatus::Assigned, Some("x"), 1), "x", "u", &infra) {
            Decision::Apply {
                status,
                terminal,
                result,
            } => {
                assert_eq!((status, terminal), (TaskStatus::Pending, false));
                assert_eq!(result["requeued"], true);
            }
            d => panic!("{d:?}"),
        }
        match decide(&row(TaskStatus::Assigned, Some("x"), 3), "x", "u", &infra) {
            Decision::Apply { status, result, .. } => {
                assert_eq!(status, TaskStatus::Failed);
                assert_eq!(result["error"], "max attempts exceeded");
                assert_eq!(result["last_error"], "simulator exploded");
            }
            d => panic!("{d:?}"),
        }
        let long = result(false, Some(&"Miner ".repeat(1000)), None);
        match decide(&row(TaskStatus::Assigned, Some("x"), 1), "x", "u", &long) {
            Decision::Apply { result, status, .. } => {
                assert_eq!(status, TaskStatus::Failed);
                assert_eq!(
                    result["error"].as_str().unwrap().chars().count(),
                    MAX_ERROR_CHARS
                );
                assert_eq!(result["failure_kind"], "miner");
            }
            d => panic!("{d:?}"),
        }
    }
}
