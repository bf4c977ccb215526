//! The literal upstream formulation of the subset winner: every candidate against every other miner,
//! subset by subset. Kept as the oracle of [`super::subsets`] and as the benchmark baseline.

use super::subsets::{mask_positions, subsets_in_order};
use super::thresholds::ABSENT_THRESHOLD;
use super::MinerRates;

/// Winner (index into `miners`) of one subset, decided exactly as docs/scoring.md §5 words it.
pub fn subset_winner(
    miners: &[MinerRates],
    thresholds: &[Vec<Option<f64>>],
    subset: &[usize],
) -> Option<usize> {
    if miners.len() < 2 {
        return if miners.len() == 1 { Some(0) } else { None };
    }
    let mut order: Vec<usize> = (0..miners.len()).collect();
    order.sort_by_key(|&i| (miners[i].effective_block(), miners[i].uid));
    let score = |u: usize, e: usize| miners[u].rates[e].unwrap_or(0.0);
    let threshold = |u: usize, e: usize| {
        thresholds[u][e].unwrap_or_else(|| match miners[u].rates[e] {
            Some(s) => s + 0.02,
            None => ABSENT_THRESHOLD,
        })
    };
    'candidates: for &c in &order {
        for &o in &order {
            if o == c {
                continue;
            }
            let c_is_earlier = miners[c].effective_block() <= miners[o].effective_block();
            let (earlier, later) = if c_is_earlier { (c, o) } else { (o, c) };
            let wins = subset
                .iter()
                .filter(|&&e| score(later, e) > threshold(earlier, e))
                .count();
            let disqualified = if c_is_earlier {
                wins == subset.len()
            } else {
                wins < subset.len()
            };
            if disqualified {
                continue 'candidates;
            }
        }
        return Some(c);
    }
    None
}

/// Winners of every subset in the order of docs/scoring.md §6, each decided by [`subset_winner`].
pub fn subset_winners(
    env_count: usize,
    miners: &[MinerRates],
    thresholds: &[Vec<Option<f64>>],
) -> Vec<(u32, Option<usize>)> {
    subsets_in_order(env_count)
        .into_iter()
        .map(|m| (m, subset_winner(miners, thresholds, &mask_positions(m))))
        .collect()
}
