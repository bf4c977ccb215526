//! Points → softmax weights → u16 pairs (docs/scoring.md §7).

use super::{ScoringError, U16Weights};

/// Refuses a temperature that is not finite and strictly positive.
pub fn check_temperature(temperature: f64) -> Result<(), ScoringError> {
    if temperature.is_finite() && temperature > 0.0 {
        Ok(())
    } else {
        Err(ScoringError::InvalidTemperature)
    }
}

/// Softmax of `points` with temperature τ; uniform when every point is exactly 0.0.
/// Sums run in input order.
pub fn softmax(points: &[f64], temperature: f64) -> Result<Vec<f64>, ScoringError> {
    check_temperature(temperature)?;
    if points.is_empty() {
        return Ok(Vec::new());
    }
    if points.iter().all(|&p| p == 0.0) {
        let uniform = 1.0 / points.len() as f64;
        return Ok(vec![uniform; points.len()]);
    }
    let max = points.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let exps: Vec<f64> = points
        .iter()
        .map(|&p| ((p - max) / temperature).exp())
        .collect();
    let mut sum = 0.0;
    for e in &exps {
        sum += e;
    }
    Ok(exps.into_iter().map(|e| e / sum).collect())
}

/// Normalises `weights` (sum in input order) and truncates to u16, pairs sorted by uid.
pub fn to_u16(uids: &[u32], weights: &[f64]) -> U16Weights {
    if weights.is_empty() {
        return U16Weights::default();
    }
    let mut sum = 0.0;
    for w in weights {
        sum += w;
    }
    let n = weights.len() as f64;
    let mut pairs: Vec<(u32, u16)> = uids
        .iter()
        .zip(weights)
        .map(|(&uid, &w)| {
            let normalised = if sum <= 0.0 { 1.0 / n } else { w / sum };
            (uid, (normalised * 65535.0).floor() as u16)
        })
        .collect();
    pairs.sort_by_key(|&(uid, _)| uid);
    U16Weights {
        uids: pairs.iter().map(|p| p.0).collect(),
        values: pairs.iter().map(|p| p.1).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conformance_table_11_6() {
        let w = softmax(&[10.0, 5.0, 3.0], 1.0).unwrap();
        assert_eq!(
            w,
            vec![
                0.9924082466500291,
                0.006686794167383234,
                0.0009049591825877397
            ]
        );
        assert_eq!(to_u16(&[0, 1, 2], &w).values, vec![65037, 438, 59]);
    }

    #[test]
    fn temperature_and_edge_cases() {
        assert_eq!(softmax(&[1.0], 0.0), Err(ScoringError::InvalidTemperature));
        assert_eq!(softmax(&[], -1.0), Err(ScoringError::InvalidTemperature));
        assert_eq!(
            softmax(&[1.0], f64::NAN),
            Err(ScoringError::InvalidTemperature)
        );
        assert_eq!(softmax(&[], 1.0).unwrap(), Vec::<f64>::new());
        assert_eq!(softmax(&[0.0, 0.0, 0.0, 0.0], 1.0).unwrap(), vec![0.25; 4]);
        let w = softmax(&[4.0, 4.0, 0.0], 1.0).unwrap();
        assert_eq!(w[0].to_bits(), w[1].to_bits());
        assert_eq!(to_u16(&[], &[]), U16Weights::default());
        // Sorted by uid even when the input is not.
        let u = to_u16(&[7, 2], &[0.25, 0.75]);
        assert_eq!(u.uids, vec![2, 7]);
        assert_eq!(u.values, vec![49151, 16383]);
    }
}
