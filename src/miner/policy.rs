//! Reference policies (docs/miner-protocol.md §8).

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Value};

use crate::config::miner::PolicyKind;
use crate::sim::expert;
use crate::sim::task::Task;

/// Why a policy cannot answer an observation (the server turns it into an HTTP error).
#[derive(Debug, Clone, PartialEq)]
pub enum PolicyError {
    /// 422: the observation (or the episode's reset) lacks what the policy needs.
    Unprocessable(String),
}

/// A policy: one action per observation; `random` keeps one server-wide generator.
pub struct Policy {
    kind: PolicyKind,
    rng: ChaCha8Rng,
}

/// The action JSON of docs/miner-protocol.md §4 for a twist and a gripper command.
pub fn action(ee_twist: [f64; 6], gripper: f64) -> Value {
    json!({"continuous": {"ee_twist": ee_twist, "gripper": [gripper]}, "discrete": {}, "extra": {}})
}

impl Policy {
    /// A policy of `kind`; `seed` seeds the random policy's ChaCha8 generator.
    pub fn new(kind: PolicyKind, seed: u64) -> Self {
        Self {
            kind,
            rng: ChaCha8Rng::seed_from_u64(seed),
        }
    }

    /// The action for one observation of an episode of `task` (from its `/reset`); `state` is
    /// the privileged state when the executor sends it.
    pub fn act(&mut self, task: Option<Task>, state: Option<&[f64]>) -> Result<Value, PolicyError> {
        match self.kind {
            PolicyKind::Zero => Ok(action([0.0; 6], 0.0)),
            PolicyKind::Random => {
                let mut twist = [0.0; 6];
                for v in twist.iter_mut().take(3) {
                    *v = self.rng.random_range(-1.0..=1.0);
                }
                Ok(action(twist, self.rng.random_range(0.0..=1.0)))
            }
            PolicyKind::Expert => {
                let state = state.filter(|s| s.len() == 39).ok_or_else(|| {
                    PolicyError::Unprocessable(
                        "expert policy needs obs.extra.state; enable KINITRO_EXECUTOR_PRIVILEGED_STATE".into(),
                    )
                })?;
                let task = task.ok_or_else(|| {
                    PolicyError::Unprocessable(
                        "expert policy needs a /reset whose task_config names a MetaWorld env_id"
                            .into(),
                    )
                })?;
                let (twist, gripper) = expert::command(task, state).twist_and_gripper();
                Ok(action(twist, gripper))
            }
        }
    }
}

/// The privileged state in an observation's `extra` (`obs.extra.state`), when present and numeric.
pub fn privileged_state(extra: &Value) -> Option<Vec<f64>> {
    extra
        .get("state")?
        .as_array()?
        .iter()
        .map(Value::as_f64)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_and_random_actions() {
        assert_eq!(
            Policy::new(PolicyKind::Zero, 0).act(None, None).unwrap(),
            action([0.0; 6], 0.0)
        );
        let mut a = Policy::new(PolicyKind::Random, 7);
        let mut b = Policy::new(PolicyKind::Random, 7);
        for _ in 0..100 {
            let x = a.act(None, None).unwrap();
            assert_eq!(x, b.act(None, None).unwrap(), "same seed, same sequence");
            let t = x["continuous"]["ee_twist"].as_array().unwrap();
            assert!(t[..3].iter().all(|v| v.as_f64().unwrap().abs() <= 1.0));
            assert!(t[3..].iter().all(|v| v.as_f64() == Some(0.0)));
            let g = x["continuous"]["gripper"][0].as_f64().unwrap();
            assert!((0.0..=1.0).contains(&g));
        }
        let mut e = Policy::new(PolicyKind::Expert, 0);
        assert!(
            matches!(e.act(Some(Task::Reach), None), Err(PolicyError::Unprocessable(m)) if m.contains("obs.extra.state"))
        );
        assert!(matches!(
            e.act(None, Some(&[0.0; 39])),
            Err(PolicyError::Unprocessable(_))
        ));
        let mut s = [0.0; 39];
        s[36..].copy_from_slice(&[0.1, 0.8, 0.2]);
        let a = e.act(Some(Task::Reach), Some(&s)).unwrap();
        assert_eq!(
            a["continuous"]["ee_twist"],
            json!([0.5, 4.0, 1.0, 0.0, 0.0, 0.0])
        );
        assert_ne!(
            Policy::new(PolicyKind::Random, 1).act(None, None),
            Policy::new(PolicyKind::Random, 2).act(None, None)
        );
    }
}
