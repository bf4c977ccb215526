//! Scoring: from episode results to weights (docs/scoring.md).
//!
//! Pure functions over plain data. The pipeline is
//! `aggregate` → success rates `S` → ε-Pareto frontier (informational) and first-commit
//! thresholds → subset winners → linear points → softmax weights → u16 pairs.
//!
//! Every arithmetic step follows the upstream Python implementation operation for operation, so the
//! results are bit-identical; [`reference`] keeps the literal all-pairs formulation as the oracle that
//! the fast subset algorithm of [`subsets`] is tested against.

pub mod aggregate;
pub mod demo;
pub mod document;
pub mod pareto;
pub mod reference;
pub mod subsets;
pub mod thresholds;
pub mod weights;

use thiserror::Error;

/// Commit block used for a miner whose commit block is unknown (docs/scoring.md §8): "very late".
pub const UNKNOWN_BLOCK: u64 = 1 << 32;

/// The most environments the exact subset enumeration supports (2^16 − 1 subsets).
pub const MAX_ENVS: usize = 16;

/// Parameters of one scoring run (defaults: docs/scoring.md §10.1).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScoringParams {
    /// Episodes per (miner, env): `n` of the thresholds and of ε.
    pub episodes_per_env: i64,
    /// Softmax temperature τ, must be finite and > 0.
    pub temperature: f64,
    /// z-score of the first-commit threshold.
    pub threshold_z: f64,
    /// Lower bound of the threshold gap.
    pub threshold_min_gap: f64,
    /// Upper bound of the threshold gap.
    pub threshold_max_gap: f64,
}

impl Default for ScoringParams {
    fn default() -> Self {
        Self {
            episodes_per_env: 50,
            temperature: 1.0,
            threshold_z: 1.5,
            threshold_min_gap: 0.02,
            threshold_max_gap: 0.10,
        }
    }
}

/// One miner's success rates, indexed by environment position (`None` = absent pair).
#[derive(Debug, Clone, PartialEq)]
pub struct MinerRates {
    /// Miner uid (0…65535).
    pub uid: u32,
    /// Commit block; `None` sorts as [`UNKNOWN_BLOCK`].
    pub block: Option<u64>,
    /// `S[u][e]` per env position of the run's env list.
    pub rates: Vec<Option<f64>>,
}

impl MinerRates {
    /// The commit block used for ordering: the known block or [`UNKNOWN_BLOCK`].
    pub fn effective_block(&self) -> u64 {
        self.block.unwrap_or(UNKNOWN_BLOCK)
    }
}

/// The winner of one env subset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubsetWinner {
    /// Env positions of the subset, ascending (i.e. in env-list order).
    pub envs: Vec<usize>,
    /// Uid of the winner, `None` when every candidate was disqualified.
    pub winner: Option<u32>,
}

/// Stored u16 weights: parallel arrays sorted by ascending uid (docs/scoring.md §7.2).
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct U16Weights {
    /// Uids, ascending.
    pub uids: Vec<u32>,
    /// Truncated weights, `values[i]` belongs to `uids[i]`.
    pub values: Vec<u16>,
}

/// Everything one scoring run produces. Per-miner vectors follow the input order of the miners.
#[derive(Debug, Clone, PartialEq)]
pub struct ScoringOutcome {
    /// Uids in input order; `points[i]` and `weights[i]` belong to `uids[i]`.
    pub uids: Vec<u32>,
    /// Linear subset points per miner.
    pub points: Vec<f64>,
    /// Softmax weights per miner.
    pub weights: Vec<f64>,
    /// u16 conversion of the weights.
    pub weights_u16: U16Weights,
    /// Uids on the ε-Pareto frontier, ascending.
    pub pareto_frontier: Vec<u32>,
    /// One entry per non-empty subset, in enumeration order (k ascending, then lexicographic).
    pub subset_winners: Vec<SubsetWinner>,
}

/// Why a scoring run was refused.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum ScoringError {
    /// τ ≤ 0 or not finite.
    #[error("temperature must be > 0")]
    InvalidTemperature,
    /// More environments than the exact enumeration supports.
    #[error("at most {MAX_ENVS} environments are supported (got {0})")]
    TooManyEnvs(usize),
    /// A miner's rate vector does not have one slot per env.
    #[error("miner {uid} has {got} rate slots for {expected} environments")]
    RateShape {
        /// The miner.
        uid: u32,
        /// Its slot count.
        got: usize,
        /// The env count.
        expected: usize,
    },
}

/// Runs sections 3–7 of docs/scoring.md on success rates over `env_count` environments.
pub fn score(
    env_count: usize,
    miners: &[MinerRates],
    params: &ScoringParams,
) -> Result<ScoringOutcome, ScoringError> {
    weights::check_temperature(params.temperature)?;
    if env_count > MAX_ENVS {
        return Err(ScoringError::TooManyEnvs(env_count));
    }
    if let Some(m) = miners.iter().find(|m| m.rates.len() != env_count) {
        return Err(ScoringError::RateShape {
            uid: m.uid,
            got: m.rates.len(),
            expected: env_count,
        });
    }
    let pareto_frontier = pareto::frontier(env_count, miners, params.episodes_per_env);
    let thresholds = thresholds::threshold_matrix(miners, params);
    let winners = subsets::subset_winners(env_count, miners, &thresholds);
    let points = subsets::linear_points(miners, &winners);
    let weights = weights::softmax(&points, params.temperature)?;
    let uids: Vec<u32> = miners.iter().map(|m| m.uid).collect();
    let weights_u16 = weights::to_u16(&uids, &weights);
    let subset_winners = winners
        .into_iter()
        .map(|(mask, winner)| SubsetWinner {
            envs: subsets::mask_positions(mask),
            winner: winner.map(|i| miners[i].uid),
        })
        .collect();
    Ok(ScoringOutcome {
        uids,
        points,
        weights,
        weights_u16,
        pareto_frontier,
        subset_winners,
    })
}
