//! Upstream's comparison of local and remote actions (docs/verification.md §2.5, executor.md §11):
//! flatten each action to float32, score each sample, average, and pass when the mean is at least
//! 1 − tolerance.
//!
//! The arithmetic follows NumPy 2 (NEP 50) on float32 arrays: `np.allclose`, the relative error and
//! its mean are computed in float32, the mean with NumPy's pairwise summation, so the scores equal
//! upstream's up to the last bit of `exp`, whose float32 SIMD implementation in NumPy varies with the
//! CPU.

use serde_json::Value;

/// `atol` of upstream's `np.allclose`.
const ATOL: f32 = 1e-6;
/// The guard of upstream's relative error denominator.
const REL_EPS: f32 = 1e-8;

/// An action's `continuous` channels sorted by key, concatenated and cast to float32, as upstream's
/// `Action.model_validate(a).continuous_array()`; `None` if it does not validate as an `Action`.
///
/// Validation follows upstream's `Action` model (members `continuous`, `discrete`, `extra` only;
/// `continuous` an object of number arrays, `discrete` an object of integers, `extra` an object) and
/// docs/miner-protocol.md §4 (a missing or `null` member is its default, so no `continuous` gives an
/// empty vector).
pub fn flatten_action(action: &Value) -> Option<Vec<f32>> {
    let obj = action.as_object()?;
    if obj
        .keys()
        .any(|k| !matches!(k.as_str(), "continuous" | "discrete" | "extra"))
    {
        return None;
    }
    match obj.get("discrete") {
        None | Some(Value::Null) => {}
        Some(Value::Object(m)) if m.values().all(is_integer) => {}
        Some(_) => return None,
    }
    match obj.get("extra") {
        None | Some(Value::Null) | Some(Value::Object(_)) => {}
        Some(_) => return None,
    }
    let channels = match obj.get("continuous") {
        None | Some(Value::Null) => return Some(Vec::new()),
        Some(Value::Object(m)) => m,
        Some(_) => return None,
    };
    let mut keys: Vec<&String> = channels.keys().collect();
    keys.sort();
    let mut out = Vec::new();
    for key in keys {
        for x in channels[key].as_array()? {
            out.push(x.as_f64()? as f32);
        }
    }
    Some(out)
}

/// A JSON integer, or a float with no fractional part (pydantic's lax `int`).
fn is_integer(v: &Value) -> bool {
    v.is_i64() || v.is_u64() || v.as_f64().is_some_and(|x| x.fract() == 0.0)
}

/// Upstream's match score of one sample: 0 if the lengths differ, 1 if
/// `np.allclose(local, remote, rtol=tolerance, atol=1e-6)` (`|l − r| ≤ atol + rtol·|r|`, so remote
/// is the reference; two empty vectors match), else `exp(−mean(|l − r| / (|l| + 1e-8)) / tolerance)`.
pub fn sample_match(local: &[f32], remote: &[f32], tolerance: f64) -> f64 {
    if local.len() != remote.len() {
        return 0.0;
    }
    // NEP 50: the Python-float tolerances are cast to float32 and the arithmetic stays in float32.
    let rtol = tolerance as f32;
    let close = local
        .iter()
        .zip(remote)
        .all(|(&l, &r)| ((l - r).abs() <= ATOL + rtol * r.abs() && r.is_finite()) || l == r);
    if close {
        return 1.0;
    }
    f64::from(mismatch_exponent(local, remote, rtol).exp())
}

/// `−mean(|l − r| / (|l| + 1e-8)) / rtol` in float32, as NumPy computes it.
fn mismatch_exponent(local: &[f32], remote: &[f32], rtol: f32) -> f32 {
    let rel: Vec<f32> = local
        .iter()
        .zip(remote)
        .map(|(&l, &r)| (l - r).abs() / (l.abs() + REL_EPS))
        .collect();
    // The float32 sum divided by the count (in float64, then rounded to float32, as np.mean does).
    let mean = (f64::from(pairwise_sum_f32(&rel)) / rel.len() as f64) as f32;
    -mean / rtol
}

/// The mean of the per-sample scores as `np.mean` computes it (pairwise summation); 0 for none.
pub fn overall(scores: &[f64]) -> f64 {
    if scores.is_empty() {
        return 0.0;
    }
    pairwise_sum_f64(scores) / scores.len() as f64
}

/// Upstream's verdict: the mean match is at least 1 − tolerance.
pub fn passes(mean: f64, tolerance: f64) -> bool {
    mean >= 1.0 - tolerance
}

/// NumPy's pairwise summation (`@TYPE@_pairwise_sum` in loops_utils.h.src): a plain loop below 8
/// elements, eight accumulators up to 128, halves (cut at a multiple of 8) above.
macro_rules! pairwise_sum {
    ($name:ident, $t:ty) => {
        fn $name(a: &[$t]) -> $t {
            let n = a.len();
            if n < 8 {
                let mut res: $t = 0.0;
                for &x in a {
                    res += x;
                }
                res
            } else if n <= 128 {
                let mut r: [$t; 8] = [a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7]];
                let whole = n - n % 8;
                let mut i = 8;
                while i < whole {
                    for (j, acc) in r.iter_mut().enumerate() {
                        *acc += a[i + j];
                    }
                    i += 8;
                }
                let mut res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
                for &x in &a[whole..] {
                    res += x;
                }
                res
            } else {
                let mut n2 = n / 2;
                n2 -= n2 % 8;
                $name(&a[..n2]) + $name(&a[n2..])
            }
        }
    };
}

pairwise_sum!(pairwise_sum_f32, f32);
pairwise_sum!(pairwise_sum_f64, f64);

#[cfg(test)]
mod tests {
    use super::super::numpy::test_vectors::{f64_of, f64s, fixture};
    use super::*;
    use serde_json::json;

    fn f32s(v: &Value) -> Vec<f32> {
        f64s(v)
            .into_iter()
            .map(|x| {
                let y = x as f32;
                assert_eq!(f64::from(y), x, "fixture value is not a float32");
                y
            })
            .collect()
    }

    #[test]
    fn compare_cases_match_numpy() {
        let doc = fixture();
        let cases = doc["compare"].as_array().unwrap();
        assert!(cases.len() >= 30);
        let mut exponents = 0;
        for case in cases {
            let note = case["note"].as_str().unwrap();
            let local = f32s(&case["local"]);
            let remote = f32s(&case["remote"]);
            let tolerance = f64_of(&case["tolerance"]);
            let expected = f64_of(&case["expected"]);
            let got = sample_match(&local, &remote, tolerance);
            if let Some(arg) = case.get("exp_arg") {
                let arg = f64_of(arg) as f32;
                assert_eq!(
                    mismatch_exponent(&local, &remote, tolerance as f32),
                    arg,
                    "{note}"
                );
                exponents += 1;
            }
            if expected == 0.0 || expected == 1.0 {
                assert_eq!(got, expected, "{note}");
            } else {
                // The exponent is exact (above); NumPy's SIMD float32 exp is not correctly rounded
                // and may differ from libm's by an ulp.
                let ulps =
                    ((got as f32).to_bits() as i64 - (expected as f32).to_bits() as i64).abs();
                assert!(ulps <= 2, "{note}: got {got}, numpy {expected}");
                assert!(got < 1.0 && got > 0.0, "{note}");
            }
        }
        assert!(exponents >= 20);
    }

    #[test]
    fn overall_matches_numpy_mean_exactly() {
        let doc = fixture();
        for case in doc["overall"].as_array().unwrap() {
            let scores = f64s(&case["scores"]);
            assert_eq!(
                overall(&scores),
                f64_of(&case["expected"]),
                "n = {}",
                scores.len()
            );
        }
        assert_eq!(overall(&[]), 0.0);
    }

    #[test]
    fn match_edge_cases() {
        assert_eq!(sample_match(&[], &[], 1e-3), 1.0);
        assert_eq!(sample_match(&[1.0], &[], 1e-3), 0.0);
        assert_eq!(sample_match(&[0.5, 0.5], &[0.5, 0.5], 0.0), 1.0);
        // Infinities are close only when equal; NaN never is.
        assert_eq!(sample_match(&[f32::INFINITY], &[f32::INFINITY], 1e-3), 1.0);
        assert!(sample_match(&[f32::NAN], &[f32::NAN], 1e-3).is_nan());
        // A far-off answer decays to zero.
        assert_eq!(sample_match(&[1.0, 1.0], &[-1.0, -1.0], 1e-3), 0.0);
        // Slightly off: between 0 and 1, lower for bigger errors.
        let a = sample_match(&[1.0, 1.0], &[1.002, 1.0], 1e-3);
        let b = sample_match(&[1.0, 1.0], &[1.004, 1.0], 1e-3);
        assert!(0.0 < b && b < a && a < 1.0, "{a} {b}");
    }

    #[test]
    fn verdict() {
        assert!(passes(1.0, 1e-3));
        assert!(passes(0.999, 1e-3));
        assert!(!passes(0.998, 1e-3));
        assert!(!passes(f64::NAN, 1e-3));
        let mean = overall(&[1.0, 1.0, 1.0, 1.0, 0.996]);
        assert!(passes(mean, 1e-3));
        assert!(!passes(overall(&[1.0, 0.0, 1.0, 1.0, 1.0]), 1e-3));
    }

    #[test]
    fn flatten_sorts_channels_and_casts() {
        let action = json!({"continuous": {"gripper": [1.0], "ee_twist": [0.1, -0.2, 0.3]}});
        assert_eq!(flatten_action(&action), Some(vec![0.1f32, -0.2, 0.3, 1.0]));
        let action = json!({
            "continuous": {"b": [1, 2], "a": [], "c": [1e300]},
            "discrete": {"nav": 3, "k": 2.0},
            "extra": {"anything": [null]}
        });
        assert_eq!(flatten_action(&action), Some(vec![1.0, 2.0, f32::INFINITY]));
        assert_eq!(flatten_action(&json!({})), Some(vec![]));
        assert_eq!(flatten_action(&json!({"continuous": null})), Some(vec![]));
        assert_eq!(
            flatten_action(&json!({"continuous": {"x": [0.1]}, "discrete": null, "extra": null})),
            Some(vec![0.1])
        );
    }

    #[test]
    fn flatten_rejects_what_upstream_rejects() {
        for bad in [
            json!(null),
            json!([0.1, 0.2]),
            json!("action"),
            json!({"continuous": [0.1]}),
            json!({"continuous": {"x": 0.1}}),
            json!({"continuous": {"x": [0.1, "0.2"]}}),
            json!({"continuous": {"x": [null]}}),
            json!({"continuous": {"x": [[0.1]]}}),
            json!({"continuous": {}, "foo": 1}),
            json!({"discrete": {"nav": 0.5}}),
            json!({"discrete": [1]}),
            json!({"extra": 3}),
        ] {
            assert_eq!(flatten_action(&bad), None, "{bad}");
        }
    }

    #[test]
    fn pairwise_sums_follow_numpy_blocks() {
        let a: Vec<f64> = (0..300).map(|i| f64::from(i) * 0.1).collect();
        for n in [0, 1, 7, 8, 9, 15, 16, 128, 129, 300] {
            let exact: f64 = a[..n].iter().sum();
            assert!((pairwise_sum_f64(&a[..n]) - exact).abs() < 1e-9, "n = {n}");
        }
        assert_eq!(pairwise_sum_f32(&[]), 0.0);
    }
}
