//! Generated success rates for `kinitro scoring demo` (docs/scoring.md §10.3).

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::MinerRates;

/// Miners `0…miners-1` with block `1000 + 100·uid` and rates `k/50`, `k` uniform in 0…50, drawn from
/// one ChaCha8 stream seeded with `seed`, miner by miner, env by env.
pub fn generated_rates(miners: usize, envs: usize, seed: u64) -> Vec<MinerRates> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..miners as u32)
        .map(|uid| MinerRates {
            uid,
            block: Some(1000 + 100 * u64::from(uid)),
            rates: (0..envs)
                .map(|_| Some(f64::from(rng.next_u32() % 51) / 50.0))
                .collect(),
        })
        .collect()
}

/// Env names of the demo: `e1…eE`.
pub fn env_names(envs: usize) -> Vec<String> {
    (1..=envs).map(|i| format!("e{i}")).collect()
}

/// The demo's table for people: one row per miner (uid, block, rates, points, weight, `*` on the
/// frontier), then one line per subset winner.
pub fn render(envs: &[String], miners: &[MinerRates], outcome: &super::ScoringOutcome) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = write!(out, "{:>5} {:>6}", "uid", "block");
    for e in envs {
        let _ = write!(out, " {e:>5}");
    }
    let _ = writeln!(out, " {:>7} {:>10}  frontier", "points", "weight");
    for (i, m) in miners.iter().enumerate() {
        let _ = write!(out, "{:>5} {:>6}", m.uid, m.effective_block());
        for r in &m.rates {
            let _ = write!(out, " {:>5.2}", r.unwrap_or(0.0));
        }
        let mark = if outcome.pareto_frontier.contains(&m.uid) {
            "*"
        } else {
            ""
        };
        let _ = writeln!(
            out,
            " {:>7.1} {:>10.6}  {mark}",
            outcome.points[i], outcome.weights[i]
        );
    }
    let _ = writeln!(out, "\nsubset winners:");
    for w in &outcome.subset_winners {
        let names: Vec<&str> = w.envs.iter().map(|&i| envs[i].as_str()).collect();
        let winner = w
            .winner
            .map_or_else(|| "none".to_string(), |u| u.to_string());
        let _ = writeln!(out, "{}: {winner}", names.join("+"));
    }
    out
}
