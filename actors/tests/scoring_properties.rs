//! Property tests of the scoring invariants (issue: scoring engine), and the fast subset algorithm
//! against the literal upstream formulation.

use kinitro_actors::scoring::{reference, score, subsets, thresholds, MinerRates, ScoringParams};
use proptest::prelude::*;

/// Rates on the k/50 grid (ties are common, as in real cycles), some pairs absent.
fn rate() -> impl Strategy<Value = Option<f64>> {
    prop_oneof![1 => Just(None), 8 => (0u32..=50).prop_map(|k| Some(f64::from(k) / 50.0))]
}

/// Blocks from a small set so that equal blocks and unknown blocks both occur.
fn block() -> impl Strategy<Value = Option<u64>> {
    prop_oneof![1 => Just(None), 6 => (0u64..4).prop_map(|b| Some(1000 + 100 * b))]
}

fn miners(max_miners: usize, envs: usize) -> impl Strategy<Value = Vec<MinerRates>> {
    prop::collection::vec(
        (block(), prop::collection::vec(rate(), envs)),
        0..=max_miners,
    )
    .prop_map(|rows| {
        rows.into_iter()
            .enumerate()
            .map(|(i, (block, rates))| MinerRates {
                uid: (i * 7 % 101) as u32,
                block,
                rates,
            })
            .collect()
    })
}

fn case() -> impl Strategy<Value = (usize, Vec<MinerRates>)> {
    (0usize..=5).prop_flat_map(|e| (Just(e), miners(9, e)))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn fast_winners_equal_reference((envs, ms) in case()) {
        let t = thresholds::threshold_matrix(&ms, &ScoringParams::default());
        prop_assert_eq!(
            subsets::subset_winners(envs, &ms, &t),
            reference::subset_winners(envs, &ms, &t)
        );
    }

    #[test]
    fn weights_sum_to_one((envs, ms) in case(), tau in 0.05f64..20.0) {
        prop_assume!(!ms.is_empty());
        let p = ScoringParams { temperature: tau, ..Default::default() };
        let out = score(envs, &ms, &p).unwrap();
        let sum: f64 = out.weights.iter().sum();
        prop_assert!((sum - 1.0).abs() <= 1e-12, "sum {}", sum);
    }

    #[test]
    fn a_later_copy_never_earns_more((envs, ms) in case(), pick in any::<prop::sample::Index>()) {
        prop_assume!(!ms.is_empty());
        let orig = pick.get(&ms).clone();
        let mut with_copy = ms.clone();
        let copy_uid = 60_000;
        with_copy.push(MinerRates {
            uid: copy_uid,
            block: Some(orig.effective_block() + 1),
            rates: orig.rates.clone(),
        });
        let out = score(envs, &with_copy, &ScoringParams::default()).unwrap();
        let at = |uid: u32| out.uids.iter().position(|&u| u == uid).unwrap();
        prop_assert!(out.points[at(copy_uid)] <= out.points[at(orig.uid)]);
        prop_assert!(out.weights[at(copy_uid)] <= out.weights[at(orig.uid)]);
    }

    #[test]
    fn miner_order_does_not_matter((envs, ms) in case(), shuffle_seed in any::<u64>()) {
        let mut shuffled = ms.clone();
        // Deterministic Fisher–Yates from the seed.
        let mut s = shuffle_seed | 1;
        for i in (1..shuffled.len()).rev() {
            s ^= s << 13; s ^= s >> 7; s ^= s << 17;
            shuffled.swap(i, (s % (i as u64 + 1)) as usize);
        }
        let a = score(envs, &ms, &ScoringParams::default()).unwrap();
        let b = score(envs, &shuffled, &ScoringParams::default()).unwrap();
        prop_assert_eq!(&a.subset_winners, &b.subset_winners);
        prop_assert_eq!(&a.pareto_frontier, &b.pareto_frontier);
        prop_assert_eq!(&a.weights_u16.uids, &b.weights_u16.uids);
        for (i, uid) in a.uids.iter().enumerate() {
            let j = b.uids.iter().position(|u| u == uid).unwrap();
            prop_assert_eq!(a.points[i], b.points[j]);
            prop_assert!((a.weights[i] - b.weights[j]).abs() <= 4.0 * f64::EPSILON);
        }
        for (x, y) in a.weights_u16.values.iter().zip(&b.weights_u16.values) {
            prop_assert!(x.abs_diff(*y) <= 1);
        }
    }

    #[test]
    fn an_all_zero_env_changes_no_other_winner((envs, ms) in (0usize..=4).prop_flat_map(|e| (Just(e), miners(8, e)))) {
        let before = score(envs, &ms, &ScoringParams::default()).unwrap();
        let widened: Vec<MinerRates> = ms.iter().map(|m| {
            let mut m = m.clone();
            m.rates.push(Some(0.0));
            m
        }).collect();
        let after = score(envs + 1, &widened, &ScoringParams::default()).unwrap();
        for w in &before.subset_winners {
            let same = after.subset_winners.iter().find(|x| x.envs == w.envs).unwrap();
            prop_assert_eq!(same.winner, w.winner, "subset {:?}", w.envs);
        }
    }
}

#[test]
fn fast_winners_equal_reference_on_larger_fields() {
    use kinitro_actors::scoring::demo::generated_rates;
    for (m, e, seed) in [(40, 7, 1), (64, 6, 2), (30, 9, 3), (3, 12, 4)] {
        let mut ms = generated_rates(m, e, seed);
        // Equal and unknown blocks too.
        for (i, x) in ms.iter_mut().enumerate() {
            x.block = match i % 5 {
                0 => None,
                1 | 2 => Some(1000),
                _ => x.block,
            };
        }
        let t = thresholds::threshold_matrix(&ms, &ScoringParams::default());
        assert_eq!(
            subsets::subset_winners(e, &ms, &t),
            reference::subset_winners(e, &ms, &t)
        );
    }
}
