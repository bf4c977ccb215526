//! ε-Pareto frontier (docs/scoring.md §3). Stored and returned for display; never feeds the
//! weights.

use super::MinerRates;

/// Lower clamp of ε.
pub const EPSILON_MIN: f64 = 0.01;
/// Upper clamp of ε, also the value for `n ≤ 1`.
pub const EPSILON_MAX: f64 = 0.20;

/// `compute_epsilon` on plain f64 values: clamp(2·σ/√n) with the population standard deviation.
pub fn compute_epsilon(values: &[f64], n: i64) -> f64 {
    if n <= 1 {
        return EPSILON_MAX;
    }
    let count = values.len().max(1) as f64;
    let mut sum = 0.0;
    for v in values {
        sum += v;
    }
    let mean = sum / count;
    let mut sq = 0.0;
    for v in values {
        sq += (v - mean) * (v - mean);
    }
    clamp_epsilon((sq / count).sqrt(), n)
}

/// `compute_epsilon` on one f32 frontier column: the moments in f32, then σ widened to f64.
pub fn compute_epsilon_f32(values: &[f32], n: i64) -> f64 {
    if n <= 1 {
        return EPSILON_MAX;
    }
    let count = values.len().max(1) as f32;
    let mut sum = 0.0_f32;
    for v in values {
        sum += v;
    }
    let mean = sum / count;
    let mut sq = 0.0_f32;
    for v in values {
        let d = v - mean;
        sq += d * d;
    }
    clamp_epsilon(f64::from((sq / count).sqrt()), n)
}

fn clamp_epsilon(sigma: f64, n: i64) -> f64 {
    (2.0 * sigma / (n as f64).sqrt()).clamp(EPSILON_MIN, EPSILON_MAX)
}

/// Whether `a` ε-dominates `b`: never worse by more than ε anywhere, better by more than ε somewhere.
pub fn dominates<A: Copy + Into<f64>>(a: &[A], b: &[A], eps: &[f64]) -> bool {
    let mut strictly_better = false;
    for ((&a, &b), &e) in a.iter().zip(b).zip(eps) {
        let (a, b) = (a.into(), b.into());
        if a < b - e {
            return false;
        }
        if a > b + e {
            strictly_better = true;
        }
    }
    strictly_better
}

/// The frontier's rate matrix (single precision as upstream keeps it; absent pairs are 0.0) and
/// its per-env ε.
fn matrix(env_count: usize, miners: &[MinerRates], n: i64) -> (Vec<Vec<f32>>, Vec<f64>) {
    let rows: Vec<Vec<f32>> = miners
        .iter()
        .map(|m| m.rates.iter().map(|s| s.unwrap_or(0.0) as f32).collect())
        .collect();
    let eps: Vec<f64> = (0..env_count)
        .map(|e| {
            let column: Vec<f32> = rows.iter().map(|r| r[e]).collect();
            compute_epsilon_f32(&column, n)
        })
        .collect();
    (rows, eps)
}

/// Who ε-dominates the miner at index `me`, and where: for each dominating miner (input order), its
/// uid and the env positions where it is better by more than ε — the frontier's own rule, for
/// explaining to a miner why it is not on the frontier.
pub fn dominators(
    env_count: usize,
    miners: &[MinerRates],
    n: i64,
    me: usize,
) -> Vec<(u32, Vec<usize>)> {
    let (rows, eps) = matrix(env_count, miners, n);
    (0..rows.len())
        .filter(|&j| j != me && dominates(&rows[j], &rows[me], &eps))
        .map(|j| {
            let better = (0..env_count)
                .filter(|&e| f64::from(rows[j][e]) > f64::from(rows[me][e]) + eps[e])
                .collect();
            (miners[j].uid, better)
        })
        .collect()
}

/// Uids of the miners no other miner ε-dominates, ascending.
pub fn frontier(env_count: usize, miners: &[MinerRates], n: i64) -> Vec<u32> {
    let (rows, eps) = matrix(env_count, miners, n);
    let mut out: Vec<u32> = (0..rows.len())
        .filter(|&i| !(0..rows.len()).any(|j| j != i && dominates(&rows[j], &rows[i], &eps)))
        .map(|i| miners[i].uid)
        .collect();
    out.sort_unstable();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn miner(uid: u32, rates: &[f64]) -> MinerRates {
        MinerRates {
            uid,
            block: Some(1000),
            rates: rates.iter().map(|&r| Some(r)).collect(),
        }
    }

    #[test]
    fn conformance_table_11_1() {
        let eps = [0.05; 3];
        let dom = |a: &[f64], b: &[f64]| dominates(a, b, &eps);
        assert!(dom(&[0.9, 0.8, 0.85], &[0.7, 0.6, 0.65]));
        assert!(!dom(&[0.7, 0.6, 0.65], &[0.9, 0.8, 0.85]));
        assert!(!dom(&[0.8, 0.7, 0.75], &[0.8, 0.7, 0.75]));
        assert!(!dom(&[0.9, 0.5], &[0.5, 0.9]));
        assert!(!dom(&[0.5, 0.9], &[0.9, 0.5]));
        assert!(!dom(&[0.82, 0.72], &[0.80, 0.70]));
        assert!(!dominates::<f64>(&[], &[], &[]));
    }

    #[test]
    fn dominators_name_the_envs_won_by_more_than_epsilon() {
        let miners = [
            miner(1, &[0.9, 0.8, 0.5]),
            miner(2, &[0.5, 0.5, 0.5]),
            miner(3, &[0.1, 0.9, 0.5]),
        ];
        let who = dominators(3, &miners, 50, 1);
        assert_eq!(who, vec![(1, vec![0, 1])]);
        assert!(dominators(3, &miners, 50, 0).is_empty());
        assert_eq!(frontier(3, &miners, 50), vec![1, 3]);
    }

    #[test]
    fn conformance_table_11_2() {
        assert_eq!(compute_epsilon(&[0.5, 0.5, 0.5, 0.5], 50), 0.01);
        assert_eq!(compute_epsilon(&[0.1, 0.9, 0.2, 0.8], 50), 0.1);
        assert_eq!(
            compute_epsilon(&[0.6, 0.7, 0.65, 0.75], 10),
            0.035355339059327376
        );
        assert_eq!(
            compute_epsilon(&[0.6, 0.7, 0.65, 0.75], 100),
            0.011180339887498949
        );
        assert_eq!(compute_epsilon(&[0.1, 0.9], 1), 0.20);
        assert_eq!(compute_epsilon(&[0.1, 0.9], -3), 0.20);
    }

    #[test]
    fn conformance_table_11_3() {
        assert_eq!(frontier(2, &[miner(0, &[0.8, 0.7])], 50), vec![0]);
        let three = [
            miner(0, &[0.9, 0.9]),
            miner(1, &[0.5, 0.5]),
            miner(2, &[0.6, 0.6]),
        ];
        assert_eq!(frontier(2, &three, 50), vec![0]);
        let col: Vec<f32> = vec![0.9, 0.5, 0.6];
        assert!((compute_epsilon_f32(&col, 50) - 0.048074).abs() < 1e-6);
        let split = [miner(0, &[0.9, 0.5]), miner(1, &[0.5, 0.9])];
        assert_eq!(frontier(2, &split, 50), vec![0, 1]);
        let copies = [miner(0, &[0.8, 0.8]), miner(1, &[0.8, 0.8])];
        assert_eq!(frontier(2, &copies, 50), vec![0, 1]);
        // No envs: nobody dominates anybody.
        let bare = [miner(3, &[]), miner(1, &[])];
        assert_eq!(frontier(0, &bare, 50), vec![1, 3]);
    }
}
