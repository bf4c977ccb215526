//! Subset winners with first-commit priority (docs/scoring.md §5) and linear points
//! (docs/scoring.md §6).
//!
//! The upstream formulation compares every pair of miners for every subset: O(2^E · M² · E). This
//! module decides all subsets at once with the same comparisons, reorganised:
//!
//! * `beat(x, y)` is the bit mask of envs where `S[x][e] > T'[y][e]` (the comparison of
//!   docs/scoring.md §5, with absent scores as 0.0 and absent thresholds as 0.02). "x beats y on Σ"
//!   ⇔ Σ ⊆ `beat(x, y)`.
//! * Candidate `c` (in `(block, uid)` order) survives Σ ⇔
//!   (A) `c` beats every miner with a strictly smaller block on Σ — Σ ⊆ `reach(c)`, the AND of those
//!   masks; and (B) no other miner with a block ≥ `c`'s beats `c` on Σ — Σ is not below any
//!   `beat(o, c)`, tested with the down-closure of those masks as a 2^E bitset.
//! * The winner of Σ is the first candidate that survives it, so candidates are visited in order and
//!   each subset is settled once.
//!
//! Cost: O(M² · E) comparisons plus O(M · E · 2^E / 64) word operations, instead of O(2^E · M² · E).
//! [`super::reference`] keeps the literal formulation; the tests compare both on random inputs.

use super::thresholds::ABSENT_THRESHOLD;
use super::MinerRates;

/// Env positions of a subset mask, ascending.
pub fn mask_positions(mask: u32) -> Vec<usize> {
    (0..32).filter(|b| mask & (1 << b) != 0).collect()
}

/// Every non-empty subset of `env_count` envs as a bit mask, in the order of docs/scoring.md §6:
/// size ascending, then lexicographic by env position (the order of Python's
/// `itertools.combinations`).
pub fn subsets_in_order(env_count: usize) -> Vec<u32> {
    let mut out = Vec::with_capacity((1usize << env_count).saturating_sub(1));
    for k in 1..=env_count {
        let mut idx: Vec<usize> = (0..k).collect();
        loop {
            out.push(idx.iter().fold(0u32, |m, &i| m | (1 << i)));
            // Advance to the next combination in lexicographic order.
            let Some(pos) = (0..k).rev().find(|&i| idx[i] != i + env_count - k) else {
                break;
            };
            idx[pos] += 1;
            for j in pos + 1..k {
                idx[j] = idx[j - 1] + 1;
            }
        }
    }
    out
}

/// Scores and thresholds laid out flat for the comparisons (absent → 0.0 and 0.02).
struct Table {
    envs: usize,
    score: Vec<f64>,
    thr: Vec<f64>,
}

impl Table {
    fn new(env_count: usize, miners: &[MinerRates], thresholds: &[Vec<Option<f64>>]) -> Self {
        let mut score = Vec::with_capacity(miners.len() * env_count);
        let mut thr = Vec::with_capacity(miners.len() * env_count);
        for (m, t) in miners.iter().zip(thresholds) {
            score.extend(m.rates.iter().map(|s| s.unwrap_or(0.0)));
            thr.extend(t.iter().map(|t| t.unwrap_or(ABSENT_THRESHOLD)));
        }
        Self {
            envs: env_count,
            score,
            thr,
        }
    }

    /// Envs where miner `x`'s score strictly exceeds miner `y`'s threshold.
    fn beat(&self, x: usize, y: usize) -> u32 {
        let s = &self.score[x * self.envs..(x + 1) * self.envs];
        let t = &self.thr[y * self.envs..(y + 1) * self.envs];
        s.iter()
            .zip(t)
            .enumerate()
            .fold(0, |m, (e, (s, t))| m | (u32::from(s > t) << e))
    }
}

/// A set of env subsets as a bitset indexed by mask.
struct SubsetSet {
    words: Vec<u64>,
}

/// For bit i < 6: the positions inside a word whose index has bit i set.
const HIGH_HALF: [u64; 6] = [
    0xAAAA_AAAA_AAAA_AAAA,
    0xCCCC_CCCC_CCCC_CCCC,
    0xF0F0_F0F0_F0F0_F0F0,
    0xFF00_FF00_FF00_FF00,
    0xFFFF_0000_FFFF_0000,
    0xFFFF_FFFF_0000_0000,
];

impl SubsetSet {
    fn empty(env_count: usize) -> Self {
        Self {
            words: vec![0; (1usize << env_count).div_ceil(64)],
        }
    }

    fn clear(&mut self) {
        self.words.fill(0);
    }

    fn insert(&mut self, mask: u32) {
        self.words[mask as usize / 64] |= 1 << (mask % 64);
    }

    fn remove(&mut self, mask: u32) {
        self.words[mask as usize / 64] &= !(1 << (mask % 64));
    }

    fn contains(&self, mask: u32) -> bool {
        self.words[mask as usize / 64] & (1 << (mask % 64)) != 0
    }

    /// Adds every subset of every member (a zeta transform over the env bits in `bits`).
    fn close_downwards(&mut self, bits: u32) {
        for i in mask_positions(bits) {
            if i < 6 {
                let shift = 1 << i;
                for w in &mut self.words {
                    *w |= (*w & HIGH_HALF[i]) >> shift;
                }
            } else {
                let stride = 1 << (i - 6);
                for j in 0..self.words.len() {
                    if j & stride != 0 {
                        self.words[j ^ stride] |= self.words[j];
                    }
                }
            }
        }
    }
}

/// Non-empty submasks of `mask`.
fn submasks(mask: u32) -> impl Iterator<Item = u32> {
    let mut next = Some(mask);
    std::iter::from_fn(move || {
        let cur = next.filter(|&m| m != 0)?;
        next = Some((cur - 1) & mask);
        Some(cur)
    })
}

/// The winner (index into `miners`) of every non-empty subset, in [`subsets_in_order`] order.
pub fn subset_winners(
    env_count: usize,
    miners: &[MinerRates],
    thresholds: &[Vec<Option<f64>>],
) -> Vec<(u32, Option<usize>)> {
    let order = subsets_in_order(env_count);
    let mut winner_of: Vec<Option<usize>> = vec![None; 1 << env_count];
    match miners.len() {
        0 => {}
        1 => winner_of.fill(Some(0)),
        _ => decide_all(env_count, miners, thresholds, &mut winner_of),
    }
    order
        .into_iter()
        .map(|m| (m, winner_of[m as usize]))
        .collect()
}

fn decide_all(
    env_count: usize,
    miners: &[MinerRates],
    thresholds: &[Vec<Option<f64>>],
    winner_of: &mut [Option<usize>],
) {
    let table = Table::new(env_count, miners, thresholds);
    let full: u32 = (1u32 << env_count) - 1;
    let mut candidates: Vec<usize> = (0..miners.len()).collect();
    candidates.sort_by_key(|&i| (miners[i].effective_block(), miners[i].uid));
    let block = |i: usize| miners[i].effective_block();

    let mut unresolved = SubsetSet::empty(env_count);
    submasks(full).for_each(|m| unresolved.insert(m));
    let mut left = full as usize;
    let mut beaten = SubsetSet::empty(env_count);

    for (rank, &c) in candidates.iter().enumerate() {
        if left == 0 {
            break;
        }
        // (A): the subsets on which c beats every strictly earlier miner.
        let mut reach = full;
        for &o in &candidates[..rank] {
            if block(o) >= block(c) {
                break;
            }
            reach &= table.beat(c, o);
            if reach == 0 {
                break;
            }
        }
        if !submasks(reach).any(|m| unresolved.contains(m)) {
            continue;
        }
        // (B): the subsets on which some same-or-later miner beats c.
        beaten.clear();
        for &o in &candidates {
            if o != c && block(o) >= block(c) {
                let m = table.beat(o, c) & reach;
                if m != 0 {
                    beaten.insert(m);
                }
            }
        }
        beaten.close_downwards(reach);
        for m in submasks(reach) {
            if unresolved.contains(m) && !beaten.contains(m) {
                winner_of[m as usize] = Some(c);
                unresolved.remove(m);
                left -= 1;
            }
        }
    }
}

/// Linear points: each subset's winner earns the subset's size (docs/scoring.md §6).
pub fn linear_points(miners: &[MinerRates], winners: &[(u32, Option<usize>)]) -> Vec<f64> {
    let mut points = vec![0.0; miners.len()];
    for &(mask, winner) in winners {
        if let Some(w) = winner {
            points[w] += f64::from(mask.count_ones());
        }
    }
    points
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enumeration_order_matches_itertools_combinations() {
        assert_eq!(subsets_in_order(0), Vec::<u32>::new());
        assert_eq!(
            subsets_in_order(3),
            vec![0b001, 0b010, 0b100, 0b011, 0b101, 0b110, 0b111]
        );
        assert_eq!(subsets_in_order(12).len(), 4095);
        let four = subsets_in_order(4);
        let pairs: Vec<Vec<usize>> = four[4..10].iter().map(|&m| mask_positions(m)).collect();
        assert_eq!(
            pairs,
            vec![
                vec![0, 1],
                vec![0, 2],
                vec![0, 3],
                vec![1, 2],
                vec![1, 3],
                vec![2, 3]
            ]
        );
    }

    #[test]
    fn down_closure_reaches_every_subset() {
        for envs in [3usize, 7, 10] {
            let mut s = SubsetSet::empty(envs);
            let member = 0b101_0101_0101u32 & ((1 << envs) - 1);
            s.insert(member);
            s.close_downwards((1 << envs) - 1);
            for m in 0..(1u32 << envs) {
                assert_eq!(s.contains(m), m & !member == 0, "envs={envs} m={m:b}");
            }
        }
    }
}
