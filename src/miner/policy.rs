//! Reference policies (miner-protocol.md 8).

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Value};

use crate::config::miner::PolicyKind;

/// Why a policy cannot answer an observation (the server turns it into an HTTP error).
#[derive(Debug, Clone, PartialEq)]
pub enum PolicyError {
    /// 422: the observation lacks what the policy needs.
    Unprocessable(String),
    /// 501: the policy is not in this build.
    NotImplemented(String),
}

/// A policy: one action per observation; `random` keeps one server-wide generator.
pub struct Policy {
    kind: PolicyKind,
    rng: ChaCha8Rng,
}

/// The action JSON of miner-protocol.md 4 for a twist and a gripper command.
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

    /// The action for one observation.
    pub fn act(&mut self, obs: &Value) -> Result<Value, PolicyError> {
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
                let state = obs.pointer("/extra/state").and_then(Value::as_array);
                if state.is_none_or(|s| s.len() != 39) {
                    return Err(PolicyError::Unprocessable(
                        "expert policy needs obs.extra.state; enable KINITRO_EXECUTOR_PRIVILEGED_STATE".into(),
                    ));
                }
                Err(PolicyError::NotImplemented(
                    "the scripted expert policies are not available yet in this build".into(),
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_and_random_actions() {
        let obs = json!({});
        assert_eq!(
            Policy::new(PolicyKind::Zero, 0).act(&obs).unwrap(),
            action([0.0; 6], 0.0)
        );
        let mut a = Policy::new(PolicyKind::Random, 7);
        let mut b = Policy::new(PolicyKind::Random, 7);
        for _ in 0..100 {
            let x = a.act(&obs).unwrap();
            assert_eq!(x, b.act(&obs).unwrap(), "same seed, same sequence");
            let t = x["continuous"]["ee_twist"].as_array().unwrap();
            assert!(t[..3].iter().all(|v| v.as_f64().unwrap().abs() <= 1.0));
            assert!(t[3..].iter().all(|v| v.as_f64() == Some(0.0)));
            let g = x["continuous"]["gripper"][0].as_f64().unwrap();
            assert!((0.0..=1.0).contains(&g));
        }
        assert_ne!(
            Policy::new(PolicyKind::Random, 1).act(&obs),
            Policy::new(PolicyKind::Random, 2).act(&obs)
        );
    }
}
