//! The WeightsActor: scores a finished cycle (docs/scoring.md), stores scores, weights and frontier
//! with the cycle's completion, and keeps the latest weights it stored.

use std::collections::BTreeMap;
use std::rc::Rc;

use actix::prelude::*;
use serde_json::json;

use crate::messages::{ComputeWeights, GetLatestWeights, LatestWeights, WeightsSummary};
use crate::ports::{CycleRecord, Store};
use crate::registry::ClassifiedMiner;
use crate::scoring::aggregate::{aggregate, PairStats};
use crate::scoring::{score, MinerRates, ScoringOutcome, ScoringParams};

/// Scoring and the latest weights.
pub struct WeightsActor {
    store: Rc<dyn Store>,
    env_ids: Vec<String>,
    params: ScoringParams,
    latest: Option<LatestWeights>,
    on_new_weights: Option<Box<dyn Fn()>>,
}

impl WeightsActor {
    /// Scores over `env_ids` (in this order) with `params`, storing through `store`.
    pub fn new(store: Rc<dyn Store>, env_ids: Vec<String>, params: ScoringParams) -> Self {
        Self {
            store,
            env_ids,
            params,
            latest: None,
            on_new_weights: None,
        }
    }

    /// Calls `f` after each stored set of weights (the API's cache in `kinitro run`).
    pub fn on_new_weights(mut self, f: Box<dyn Fn()>) -> Self {
        self.on_new_weights = Some(f);
        self
    }
}

impl Actor for WeightsActor {
    type Context = Context<Self>;
}

/// The rate matrix of docs/scoring.md §2: one row per miner with a counted pair, env slots in list
/// order.
fn rates(env_ids: &[String], stats: &[PairStats], miners: &[ClassifiedMiner]) -> Vec<MinerRates> {
    let commit_block: BTreeMap<u32, Option<u64>> = miners
        .iter()
        .map(|m| (u32::from(m.entry.uid), m.entry.commit_block))
        .collect();
    let mut rows: BTreeMap<u32, Vec<Option<f64>>> = BTreeMap::new();
    for s in stats {
        let row = rows
            .entry(s.uid)
            .or_insert_with(|| vec![None; env_ids.len()]);
        if let Some(i) = env_ids.iter().position(|e| *e == s.env_id) {
            row[i] = Some(s.success_rate);
        }
    }
    rows.into_iter()
        .map(|(uid, rates)| MinerRates {
            uid,
            block: commit_block.get(&uid).copied().flatten(),
            rates,
        })
        .collect()
}

fn record(
    cycle_id: i32,
    block: i64,
    stats: Vec<PairStats>,
    miners: &[ClassifiedMiner],
    outcome: &ScoringOutcome,
) -> CycleRecord {
    let weights: BTreeMap<String, f64> = outcome
        .uids
        .iter()
        .zip(&outcome.weights)
        .map(|(u, w)| (u.to_string(), *w))
        .collect();
    CycleRecord {
        cycle_id,
        block,
        scores: stats,
        hotkeys: miners
            .iter()
            .map(|m| (u32::from(m.entry.uid), m.entry.hotkey.clone()))
            .collect(),
        weights: json!(weights),
        weights_u16: json!(outcome.weights_u16),
        frontier: outcome.pareto_frontier.clone(),
    }
}

impl Handler<ComputeWeights> for WeightsActor {
    type Result = ResponseActFuture<Self, Result<WeightsSummary, String>>;

    fn handle(&mut self, msg: ComputeWeights, _: &mut Context<Self>) -> Self::Result {
        let store = self.store.clone();
        let env_ids = self.env_ids.clone();
        let params = self.params;
        let work = async move {
            let outcomes = store
                .outcomes(msg.cycle_id)
                .await
                .map_err(|e| e.to_string())?;
            let stats: Vec<PairStats> = aggregate(&outcomes)
                .into_iter()
                .filter(PairStats::counted)
                .collect();
            if stats.is_empty() {
                return Err("no countable results".to_string());
            }
            let input = rates(&env_ids, &stats, &msg.miners);
            let outcome = score(env_ids.len(), &input, &params)
                .map_err(|e| format!("scoring failed: {e}"))?;
            let rec = record(msg.cycle_id, msg.block, stats, &msg.miners, &outcome);
            store.complete_cycle(rec).await.map_err(|e| e.to_string())?;
            Ok((msg.cycle_id, msg.block, outcome))
        };
        Box::pin(work.into_actor(self).map(|done, act, _| {
            let (cycle_id, block, outcome) = done?;
            let mut top: Vec<(u32, f64)> = outcome
                .uids
                .iter()
                .copied()
                .zip(outcome.weights.iter().copied())
                .collect();
            let mut weights = top.clone();
            weights.sort_by_key(|w| w.0);
            top.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            top.truncate(5);
            act.latest = Some(LatestWeights {
                cycle_id,
                block,
                weights,
                weights_u16: outcome
                    .weights_u16
                    .uids
                    .iter()
                    .copied()
                    .zip(outcome.weights_u16.values.iter().copied())
                    .collect(),
            });
            if let Some(f) = &act.on_new_weights {
                f();
            }
            Ok(WeightsSummary {
                miners_scored: outcome.uids.len(),
                frontier: outcome.pareto_frontier.len(),
                top,
            })
        }))
    }
}

impl Handler<GetLatestWeights> for WeightsActor {
    type Result = Option<LatestWeights>;

    fn handle(&mut self, _: GetLatestWeights, _: &mut Context<Self>) -> Self::Result {
        self.latest.clone()
    }
}
