//! Aggregation of finished episodes into success rates per (miner, env) (docs/scoring.md §2).

use std::collections::BTreeMap;

/// Who is to blame for an episode that ended in an error (docs/database.md §4.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FailureKind {
    /// The miner misbehaved: a counted episode with value 0.
    Miner,
    /// The executor or simulator failed: not counted against the miner.
    Infrastructure,
}

/// One finished task's result, as far as scoring cares.
#[derive(Debug, Clone, PartialEq)]
pub struct EpisodeOutcome {
    /// Miner evaluated.
    pub miner_uid: u32,
    /// Environment id.
    pub env_id: String,
    /// `result.success` (missing → false).
    pub success: bool,
    /// `result.failure_kind` as stored (explicit or derived).
    pub failure_kind: Option<FailureKind>,
    /// `result.total_reward` (missing → 0.0).
    pub total_reward: f64,
}

/// Per-(miner, env) statistics, the rows of `miner_scores`.
#[derive(Debug, Clone, PartialEq)]
pub struct PairStats {
    /// Miner uid.
    pub uid: u32,
    /// Environment id.
    pub env_id: String,
    /// Successes over counted episodes, one f64 division of two counts.
    pub success_rate: f64,
    /// Mean total reward over counted episodes.
    pub mean_reward: f64,
    /// Counted episodes without a miner fault.
    pub episodes_completed: u32,
    /// Counted episodes ended by a miner fault.
    pub episodes_failed: u32,
    /// Infrastructure failures, not counted.
    pub episodes_excluded: u32,
}

#[derive(Default)]
struct Tally {
    successes: u64,
    counted: u64,
    reward_sum: f64,
    completed: u32,
    failed: u32,
    excluded: u32,
}

/// Aggregates outcomes into pair statistics ordered by (uid, env_id). Pairs with only excluded
/// episodes are returned with `success_rate` 0.0 but must not enter `S`: see [`PairStats::counted`].
pub fn aggregate(outcomes: &[EpisodeOutcome]) -> Vec<PairStats> {
    let mut tallies: BTreeMap<(u32, &str), Tally> = BTreeMap::new();
    for o in outcomes {
        let t = tallies.entry((o.miner_uid, o.env_id.as_str())).or_default();
        match o.failure_kind {
            Some(FailureKind::Infrastructure) => t.excluded += 1,
            kind => {
                t.counted += 1;
                t.successes += u64::from(o.success);
                t.reward_sum += o.total_reward;
                if kind == Some(FailureKind::Miner) {
                    t.failed += 1;
                } else {
                    t.completed += 1;
                }
            }
        }
    }
    tallies
        .into_iter()
        .map(|((uid, env), t)| PairStats {
            uid,
            env_id: env.to_string(),
            success_rate: if t.counted == 0 {
                0.0
            } else {
                t.successes as f64 / t.counted as f64
            },
            mean_reward: if t.counted == 0 {
                0.0
            } else {
                t.reward_sum / t.counted as f64
            },
            episodes_completed: t.completed,
            episodes_failed: t.failed,
            episodes_excluded: t.excluded,
        })
        .collect()
}

impl PairStats {
    /// Whether the pair has at least one counted episode (only those enter `S`).
    pub fn counted(&self) -> bool {
        self.episodes_completed + self.episodes_failed > 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn out(uid: u32, env: &str, success: bool, kind: Option<FailureKind>) -> EpisodeOutcome {
        EpisodeOutcome {
            miner_uid: uid,
            env_id: env.into(),
            success,
            failure_kind: kind,
            total_reward: if success { 10.0 } else { 1.0 },
        }
    }

    #[test]
    fn counts_rates_and_exclusions() {
        let rows = aggregate(&[
            out(1, "a", true, None),
            out(1, "a", false, None),
            out(1, "a", false, Some(FailureKind::Miner)),
            out(1, "a", false, Some(FailureKind::Infrastructure)),
            out(0, "b", false, Some(FailureKind::Infrastructure)),
        ]);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].uid, 0);
        assert!(!rows[0].counted());
        let a = &rows[1];
        assert_eq!(a.success_rate, 1.0 / 3.0);
        assert_eq!(a.mean_reward, 4.0);
        assert_eq!(
            (a.episodes_completed, a.episodes_failed, a.episodes_excluded),
            (2, 1, 1)
        );
    }
}
