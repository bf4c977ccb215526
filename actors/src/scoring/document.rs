//! The JSON document of `kinitro scoring compute` (docs/scoring.md §10): strict parsing with errors
//! that name the offending field, and the output document.

use std::collections::{BTreeMap, HashSet};

use serde::Serialize;
use serde_json::{Map, Value};

use super::{score, MinerRates, ScoringOutcome, ScoringParams, U16Weights, MAX_ENVS};

/// A parsed, validated input document.
#[derive(Debug, Clone, PartialEq)]
pub struct ScoringDocument {
    /// Env ids in order.
    pub envs: Vec<String>,
    /// Parameters.
    pub params: ScoringParams,
    /// Miners in input order, rates indexed by env position.
    pub miners: Vec<MinerRates>,
}

/// One subset's winner in the output.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SubsetWinnerOut {
    /// Env ids in env-list order.
    pub envs: Vec<String>,
    /// Winner uid or null.
    pub winner: Option<u32>,
}

/// The output document; uid maps are emitted in ascending numeric order.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScoringReport {
    /// Points per uid.
    pub points: BTreeMap<u32, f64>,
    /// Weights per uid.
    pub weights: BTreeMap<u32, f64>,
    /// u16 pairs.
    pub weights_u16: U16Weights,
    /// Frontier uids ascending.
    pub pareto_frontier: Vec<u32>,
    /// Every subset in enumeration order.
    pub subset_winners: Vec<SubsetWinnerOut>,
}

const TOP_FIELDS: [&str; 7] = [
    "envs",
    "episodes_per_env",
    "temperature",
    "threshold_z",
    "threshold_min_gap",
    "threshold_max_gap",
    "miners",
];
const MINER_FIELDS: [&str; 3] = ["uid", "block", "scores"];

fn reject_unknown(obj: &Map<String, Value>, known: &[&str], path: &str) -> Result<(), String> {
    match obj.keys().find(|k| !known.contains(&k.as_str())) {
        Some(k) if path.is_empty() => Err(format!("unknown field '{k}'")),
        Some(k) => Err(format!("{path}: unknown field '{k}'")),
        None => Ok(()),
    }
}

fn finite(obj: &Map<String, Value>, field: &str, default: f64) -> Result<f64, String> {
    match obj.get(field) {
        None => Ok(default),
        Some(v) => v
            .as_f64()
            .filter(|x| x.is_finite())
            .ok_or_else(|| format!("{field}: expected a finite number")),
    }
}

impl ScoringDocument {
    /// Parses and validates the text of a document.
    pub fn parse(text: &str) -> Result<Self, String> {
        let value: Value = serde_json::from_str(text).map_err(|e| {
            format!(
                "invalid JSON at line {} column {}: {}",
                e.line(),
                e.column(),
                strip_position(&e.to_string())
            )
        })?;
        let Value::Object(top) = value else {
            return Err("the document must be a JSON object".into());
        };
        reject_unknown(&top, &TOP_FIELDS, "")?;

        let envs = match top.get("envs") {
            None => return Err("envs: missing field".into()),
            Some(Value::Array(items)) => {
                let mut seen = HashSet::new();
                let mut envs = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    let name = item
                        .as_str()
                        .filter(|s| !s.is_empty())
                        .ok_or_else(|| format!("envs[{i}]: expected a non-empty string"))?;
                    if !seen.insert(name) {
                        return Err(format!("envs[{i}]: duplicate env '{name}'"));
                    }
                    envs.push(name.to_string());
                }
                envs
            }
            Some(_) => return Err("envs: expected an array of strings".into()),
        };
        if envs.len() > MAX_ENVS {
            return Err(format!(
                "envs: at most {MAX_ENVS} environments are supported (got {})",
                envs.len()
            ));
        }
        let episodes_per_env = match top.get("episodes_per_env") {
            None => 50,
            Some(v) => v
                .as_i64()
                .ok_or_else(|| "episodes_per_env: expected an integer".to_string())?,
        };
        let temperature = finite(&top, "temperature", 1.0)?;
        if temperature <= 0.0 {
            return Err("temperature must be > 0".into());
        }
        let params = ScoringParams {
            episodes_per_env,
            temperature,
            threshold_z: finite(&top, "threshold_z", 1.5)?,
            threshold_min_gap: finite(&top, "threshold_min_gap", 0.02)?,
            threshold_max_gap: finite(&top, "threshold_max_gap", 0.10)?,
        };
        let miners = match top.get("miners") {
            None => return Err("miners: missing field".into()),
            Some(Value::Array(items)) => parse_miners(items, &envs)?,
            Some(_) => return Err("miners: expected an array".into()),
        };
        Ok(Self {
            envs,
            params,
            miners,
        })
    }

    /// Runs the scoring and shapes the output document.
    pub fn compute(&self) -> Result<ScoringReport, String> {
        let outcome =
            score(self.envs.len(), &self.miners, &self.params).map_err(|e| e.to_string())?;
        Ok(report(&self.envs, &outcome))
    }
}

fn parse_miners(items: &[Value], envs: &[String]) -> Result<Vec<MinerRates>, String> {
    let mut uids = HashSet::new();
    let mut miners = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let path = format!("miners[{i}]");
        let Value::Object(m) = item else {
            return Err(format!("{path}: expected an object"));
        };
        reject_unknown(m, &MINER_FIELDS, &path)?;
        let uid = match m.get("uid") {
            None => return Err(format!("{path}.uid: missing field")),
            Some(v) => v
                .as_u64()
                .filter(|u| *u <= 65535)
                .ok_or_else(|| format!("{path}.uid: expected an integer between 0 and 65535"))?
                as u32,
        };
        if !uids.insert(uid) {
            return Err(format!("{path}.uid: duplicate uid {uid}"));
        }
        let block =
            match m.get("block") {
                None | Some(Value::Null) => None,
                Some(v) => Some(v.as_u64().ok_or_else(|| {
                    format!("{path}.block: expected a non-negative integer or null")
                })?),
            };
        let mut rates = vec![None; envs.len()];
        match m.get("scores") {
            None => return Err(format!("{path}.scores: missing field")),
            Some(Value::Object(scores)) => {
                for (env, v) in scores {
                    let pos = envs.iter().position(|e| e == env).ok_or_else(|| {
                        format!("{path}.scores: unknown env '{env}' (not in envs)")
                    })?;
                    let x = v
                        .as_f64()
                        .filter(|x| x.is_finite())
                        .ok_or_else(|| format!("{path}.scores.{env}: expected a finite number"))?;
                    if !(0.0..=1.0).contains(&x) {
                        return Err(format!("{path}.scores.{env}: {v} is outside [0, 1]"));
                    }
                    rates[pos] = Some(x);
                }
            }
            Some(_) => return Err(format!("{path}.scores: expected an object env → number")),
        }
        miners.push(MinerRates { uid, block, rates });
    }
    Ok(miners)
}

/// serde_json appends " at line L column C"; the message already says where.
fn strip_position(msg: &str) -> &str {
    msg.rfind(" at line ").map_or(msg, |i| &msg[..i])
}

/// Shapes a scoring outcome as the output document of docs/scoring.md §10.2.
pub fn report(envs: &[String], outcome: &ScoringOutcome) -> ScoringReport {
    ScoringReport {
        points: outcome
            .uids
            .iter()
            .copied()
            .zip(outcome.points.iter().copied())
            .collect(),
        weights: outcome
            .uids
            .iter()
            .copied()
            .zip(outcome.weights.iter().copied())
            .collect(),
        weights_u16: outcome.weights_u16.clone(),
        pareto_frontier: outcome.pareto_frontier.clone(),
        subset_winners: outcome
            .subset_winners
            .iter()
            .map(|w| SubsetWinnerOut {
                envs: w.envs.iter().map(|&i| envs[i].clone()).collect(),
                winner: w.winner,
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(doc: &str) -> String {
        ScoringDocument::parse(doc).unwrap_err()
    }

    #[test]
    fn spec_example_output() {
        let doc = r#"{"envs": ["a", "b"], "episodes_per_env": 50, "temperature": 1.0,
            "threshold_z": 1.5, "threshold_min_gap": 0.02, "threshold_max_gap": 0.10,
            "miners": [{"uid": 0, "block": 1000, "scores": {"a": 0.9, "b": 0.3}},
                       {"uid": 1, "block": 1000, "scores": {"a": 0.3, "b": 0.9}}]}"#;
        let out = serde_json::to_string(&ScoringDocument::parse(doc).unwrap().compute().unwrap())
            .unwrap();
        assert_eq!(
            out,
            r#"{"points":{"0":3.0,"1":1.0},"weights":{"0":0.8807970779778823,"1":0.11920292202211755},"weights_u16":{"uids":[0,1],"values":[57723,7811]},"pareto_frontier":[0,1],"subset_winners":[{"envs":["a"],"winner":0},{"envs":["b"],"winner":1},{"envs":["a","b"],"winner":0}]}"#
        );
    }

    #[test]
    fn errors_name_the_field() {
        assert_eq!(
            err(
                r#"{"envs":["a","b"],"miners":[{"uid":0,"scores":{}},{"uid":1,"scores":{"c":0.5}}]}"#
            ),
            "miners[1].scores: unknown env 'c' (not in envs)"
        );
        assert_eq!(
            err(r#"{"envs":[],"temperature":0,"miners":[]}"#),
            "temperature must be > 0"
        );
        assert_eq!(
            err(
                r#"{"envs":[],"miners":[{"uid":5,"scores":{}},{"uid":6,"scores":{}},{"uid":5,"scores":{}}]}"#
            ),
            "miners[2].uid: duplicate uid 5"
        );
        assert_eq!(
            err(r#"{"envs":["a"],"miners":[{"uid":0,"scores":{"a":1.2}}]}"#),
            "miners[0].scores.a: 1.2 is outside [0, 1]"
        );
        let many: Vec<String> = (0..17).map(|i| format!("\"e{i}\"")).collect();
        assert_eq!(
            err(&format!(r#"{{"envs":[{}],"miners":[]}}"#, many.join(","))),
            "envs: at most 16 environments are supported (got 17)"
        );
        assert!(err("{\n\"envs\": [\n  \"a\",,\n").starts_with("invalid JSON at line 3 column 7: "));
        assert_eq!(err(r#"{"envs":[]}"#), "miners: missing field");
        assert_eq!(err(r#"{"miners":[]}"#), "envs: missing field");
        assert_eq!(err(r#"{"envs":[],"miners":[],"x":1}"#), "unknown field 'x'");
        assert_eq!(
            err(r#"{"envs":[],"miners":[{"uid":1,"scores":{},"y":2}]}"#),
            "miners[0]: unknown field 'y'"
        );
        assert_eq!(
            err(r#"{"envs":[],"miners":[{"scores":{}}]}"#),
            "miners[0].uid: missing field"
        );
        assert_eq!(
            err(r#"{"envs":[],"miners":[{"uid":1}]}"#),
            "miners[0].scores: missing field"
        );
        assert_eq!(
            err(r#"{"envs":["a","a"],"miners":[]}"#),
            "envs[1]: duplicate env 'a'"
        );
    }

    #[test]
    fn empty_inputs() {
        let r = ScoringDocument::parse(r#"{"envs":["a"],"miners":[]}"#)
            .unwrap()
            .compute()
            .unwrap();
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["points"], serde_json::json!({}));
        assert_eq!(
            v["subset_winners"],
            serde_json::json!([{"envs":["a"],"winner":null}])
        );
        let r = ScoringDocument::parse(
            r#"{"envs":[],"miners":[{"uid":3,"block":null,"scores":{}},{"uid":1,"scores":{}}]}"#,
        )
        .unwrap()
        .compute()
        .unwrap();
        assert!(r.subset_winners.is_empty());
        assert_eq!(
            r.weights.values().copied().collect::<Vec<_>>(),
            vec![0.5, 0.5]
        );
    }
}
