//! First-commit thresholds (docs/scoring.md §4).

use super::{MinerRates, ScoringParams};

/// Threshold a later miner must strictly exceed to beat a score `score` measured over `n` episodes.
pub fn threshold(score: f64, n: i64, z: f64, min_gap: f64, max_gap: f64) -> f64 {
    let gap = if n <= 0 {
        max_gap
    } else {
        // The clamp of p only guards the standard error; the threshold adds to the raw score.
        let p = 0.99_f64.min(0.01_f64.max(score));
        let se = (p * (1.0 - p) / n as f64).sqrt();
        (z * se).max(min_gap).min(max_gap)
    };
    (score + gap).min(1.0)
}

/// `T[u][e]` for every present pair, `None` for absent ones; rows follow the miners' order.
pub fn threshold_matrix(miners: &[MinerRates], params: &ScoringParams) -> Vec<Vec<Option<f64>>> {
    miners
        .iter()
        .map(|m| {
            m.rates
                .iter()
                .map(|s| {
                    s.map(|s| {
                        threshold(
                            s,
                            params.episodes_per_env,
                            params.threshold_z,
                            params.threshold_min_gap,
                            params.threshold_max_gap,
                        )
                    })
                })
                .collect()
        })
        .collect()
}

/// Threshold used when comparing against an absent pair: the (absent, hence 0.0) score plus 0.02.
pub const ABSENT_THRESHOLD: f64 = 0.0 + 0.02;

#[cfg(test)]
mod tests {
    use super::*;

    fn t(p: f64, n: i64) -> f64 {
        threshold(p, n, 1.5, 0.02, 0.10)
    }

    #[test]
    fn conformance_table_11_4() {
        assert_eq!(t(0.5, 100), 0.575);
        assert_eq!(t(0.5, 50), 0.6);
        assert_eq!(t(0.5, 500), 0.5335410196624969);
        assert_eq!(t(0.5, 10000), 0.52);
        assert_eq!(t(0.5, 5), 0.6);
        assert_eq!(t(0.8, 50), 0.8848528137423858);
        assert_eq!(t(0.7, 50), 0.7972111104761179);
        assert_eq!(t(0.6, 50), 0.7);
        assert_eq!(t(0.9, 50), 0.9636396103067892);
    }

    #[test]
    fn gap_rules() {
        // n ≤ 0 selects the max gap.
        assert_eq!(t(0.3, 0), 0.4);
        // Saturation at 1.0 from about 0.957.
        assert_eq!(t(0.96, 50), 1.0);
        assert!(t(0.95, 50) < 1.0);
        // With n = 50 the gap equals the cap on [1/3, 2/3] and the floor never binds.
        for k in 0..=50 {
            let p = k as f64 / 50.0;
            let gap = t(p, 50) - p;
            if (1.0 / 3.0..=2.0 / 3.0).contains(&p) {
                assert!((gap - 0.10).abs() < 1e-12, "p={p} gap={gap}");
            }
            if t(p, 50) < 1.0 {
                assert!(gap > 0.021, "p={p} gap={gap}");
            }
        }
    }
}
