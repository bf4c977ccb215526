//! The miner's Action (docs/miner-protocol.md §4): strict validation of the JSON, and the mapping
//! to MetaWorld's native `[dx, dy, dz, g]` (docs/environments.md §4.1).

use serde_json::{Map, Value};

/// Most keys in `continuous` or `discrete`.
const MAX_KEYS: usize = 64;
/// Most numbers in one `continuous` array.
const MAX_NUMBERS: usize = 1024;

/// A validated action: the two channels MetaWorld reads (missing ones are their defaults).
#[derive(Debug, Clone, PartialEq)]
pub struct Action {
    /// Linear x, y, z (angular components are accepted and ignored).
    pub linear: [f64; 3],
    /// The first gripper number (0 = open, 1 = close), before clipping.
    pub gripper: f64,
}

fn object<'a>(v: &'a Value, name: &str) -> Result<Option<&'a Map<String, Value>>, String> {
    match v {
        Value::Null => Ok(None),
        Value::Object(m) => Ok(Some(m)),
        _ => Err(format!("{name} must be an object")),
    }
}

impl Action {
    /// Validates the `action` member of a miner's reply; the error is the `<detail>` of
    /// `invalid action: <detail>`.
    pub fn from_json(v: &Value) -> Result<Action, String> {
        let top = object(v, "action")?.ok_or("action must be an object")?;
        let mut continuous = None;
        for (key, value) in top {
            match key.as_str() {
                "continuous" => continuous = object(value, "continuous")?,
                "discrete" => {
                    if let Some(d) = object(value, "discrete")? {
                        if d.len() > MAX_KEYS {
                            return Err(format!("discrete has more than {MAX_KEYS} keys"));
                        }
                        for (k, n) in d {
                            if !(n.is_i64() || n.is_u64() && n.as_i64().is_some()) {
                                return Err(format!("discrete.{k} must be a 64-bit integer"));
                            }
                        }
                    }
                }
                "extra" => {
                    object(value, "extra")?;
                }
                other => return Err(format!("unknown member '{other}'")),
            }
        }
        let mut action = Action {
            linear: [0.0; 3],
            gripper: 0.0,
        };
        let Some(continuous) = continuous else {
            return Ok(action);
        };
        if continuous.len() > MAX_KEYS {
            return Err(format!("continuous has more than {MAX_KEYS} keys"));
        }
        for (key, value) in continuous {
            let numbers = match value {
                Value::Array(a) => a
                    .iter()
                    .map(|n| {
                        n.as_f64()
                            .ok_or_else(|| format!("continuous.{key} must hold numbers"))
                    })
                    .collect::<Result<Vec<f64>, String>>()?,
                _ => return Err(format!("continuous.{key} must be an array of numbers")),
            };
            if numbers.len() > MAX_NUMBERS {
                return Err(format!(
                    "continuous.{key} has more than {MAX_NUMBERS} numbers"
                ));
            }
            match key.as_str() {
                "ee_twist" => {
                    if !(3..=6).contains(&numbers.len()) {
                        return Err(format!(
                            "continuous.ee_twist must have 3 to 6 numbers, got {}",
                            numbers.len()
                        ));
                    }
                    action.linear.copy_from_slice(&numbers[..3]);
                }
                "gripper" => {
                    action.gripper = *numbers.first().ok_or_else(|| {
                        "continuous.gripper must have at least 1 number, got 0".to_string()
                    })?;
                }
                _ => {}
            }
        }
        Ok(action)
    }

    /// MetaWorld's native command: clipped linear twist, gripper 1 → +1 (close), 0 → −1 (open).
    pub fn native(&self) -> [f32; 4] {
        let l = self.linear.map(|x| x.clamp(-1.0, 1.0) as f32);
        [
            l[0],
            l[1],
            l[2],
            (2.0 * self.gripper.clamp(0.0, 1.0) - 1.0) as f32,
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn err(v: Value) -> String {
        Action::from_json(&v).unwrap_err()
    }

    #[test]
    fn defaults_lengths_and_clipping() {
        let a = Action::from_json(&json!({})).unwrap();
        assert_eq!(a.native(), [0.0, 0.0, 0.0, -1.0]);
        let a = Action::from_json(
            &json!({"continuous": {"ee_twist": [2, -3, 0.5], "gripper": [7, 0]}}),
        )
        .unwrap();
        assert_eq!(a.native(), [1.0, -1.0, 0.5, 1.0]);
        let a = Action::from_json(&json!({"continuous": null, "discrete": null, "extra": null}))
            .unwrap();
        assert_eq!(a.linear, [0.0; 3]);
        assert!(Action::from_json(
            &json!({"continuous": {"ee_twist": [0, 0, 0, 1, 2, 3], "other": [1]},
            "discrete": {"mode": 3}, "extra": {"x": [1]}})
        )
        .is_ok());
    }

    #[test]
    fn strict_errors() {
        assert_eq!(
            err(json!({"continuous": {"ee_twist": [0, 0, 0, 0, 0, 0, 0]}})),
            "continuous.ee_twist must have 3 to 6 numbers, got 7"
        );
        assert_eq!(
            err(json!({"continuous": {"gripper": []}})),
            "continuous.gripper must have at least 1 number, got 0"
        );
        assert_eq!(err(json!({"foo": 1})), "unknown member 'foo'");
        assert_eq!(
            err(json!({"continuous": 3})),
            "continuous must be an object"
        );
        assert_eq!(err(json!([1])), "action must be an object");
        assert!(err(json!({"continuous": {"ee_twist": ["a", 0, 0]}})).contains("numbers"));
        assert!(err(json!({"discrete": {"k": 1.5}})).contains("integer"));
        let many: Map<String, Value> = (0..65).map(|i| (format!("k{i}"), json!([0]))).collect();
        assert!(err(json!({"continuous": many})).contains("more than 64"));
    }
}
