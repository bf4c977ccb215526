//! scoring.md 11.5: subset winners, points, weights and u16 values of the upstream unit tests.

use kinitro_actors::scoring::{score, MinerRates, ScoringParams};

fn miner(uid: u32, block: u64, a: f64, b: f64) -> MinerRates {
    MinerRates {
        uid,
        block: Some(block),
        rates: vec![Some(a), Some(b)],
    }
}

/// Runs the pipeline on two envs and checks winners of (a), (b), (a,b), points, weights, u16.
fn check(miners: &[MinerRates], winners: [u32; 3], points: &[f64], weights: &[f64], u16s: &[u16]) {
    let out = score(2, miners, &ScoringParams::default()).unwrap();
    let got: Vec<Option<u32>> = out.subset_winners.iter().map(|w| w.winner).collect();
    assert_eq!(got, winners.map(Some).to_vec());
    assert_eq!(
        out.subset_winners
            .iter()
            .map(|w| w.envs.clone())
            .collect::<Vec<_>>(),
        vec![vec![0], vec![1], vec![0, 1]]
    );
    assert_eq!(out.points, points);
    assert_eq!(out.weights, weights);
    assert_eq!(out.weights_u16.values, u16s);
}

const CLEAR: [f64; 2] = [0.9820137900379085, 0.017986209962091555];
const SPLIT: [f64; 2] = [0.8807970779778823, 0.11920292202211755];

#[test]
fn clear_winner_gets_all_points() {
    check(
        &[miner(0, 1000, 0.9, 0.9), miner(1, 1000, 0.5, 0.5)],
        [0, 0, 0],
        &[4.0, 0.0],
        &CLEAR,
        &[64356, 1178],
    );
}

#[test]
fn specialists_split_points() {
    check(
        &[miner(0, 1000, 0.9, 0.3), miner(1, 1000, 0.3, 0.9)],
        [0, 1, 0],
        &[3.0, 1.0],
        &SPLIT,
        &[57723, 7811],
    );
}

#[test]
fn sybil_resistance() {
    check(
        &[miner(0, 1000, 0.8, 0.8)],
        [0, 0, 0],
        &[4.0],
        &[1.0],
        &[65535],
    );
    let copies: Vec<MinerRates> = (0..5).map(|u| miner(u, 1000, 0.8, 0.8)).collect();
    let small = 0.01706538516035712;
    check(
        &copies,
        [0, 0, 0],
        &[4.0, 0.0, 0.0, 0.0, 0.0],
        &[0.9317384593585714, small, small, small, small],
        &[61061, 1118, 1118, 1118, 1118],
    );
}

#[test]
fn earlier_miner_wins_tie_and_copy_attack_fails() {
    check(
        &[miner(0, 1000, 0.8, 0.8), miner(1, 2000, 0.8, 0.8)],
        [0, 0, 0],
        &[4.0, 0.0],
        &CLEAR,
        &[64356, 1178],
    );
}

#[test]
fn later_miner_wins_if_it_beats_the_threshold() {
    let rev = [CLEAR[1], CLEAR[0]];
    check(
        &[miner(0, 1000, 0.7, 0.7), miner(1, 2000, 0.9, 0.9)],
        [1, 1, 1],
        &[0.0, 4.0],
        &rev,
        &[1178, 64356],
    );
    check(
        &[miner(0, 1000, 0.7, 0.7), miner(1, 2000, 0.85, 0.85)],
        [1, 1, 1],
        &[0.0, 4.0],
        &rev,
        &[1178, 64356],
    );
}

#[test]
fn trade_off_earlier_or_lower_uid_wins_by_default() {
    check(
        &[miner(0, 1000, 0.9, 0.5), miner(1, 2000, 0.5, 0.9)],
        [0, 1, 0],
        &[3.0, 1.0],
        &SPLIT,
        &[57723, 7811],
    );
    check(
        &[miner(0, 1000, 0.9, 0.5), miner(1, 1000, 0.5, 0.9)],
        [0, 1, 0],
        &[3.0, 1.0],
        &SPLIT,
        &[57723, 7811],
    );
}

#[test]
fn unknown_block_sorts_last_and_empty_inputs() {
    let late = MinerRates {
        uid: 0,
        block: None,
        rates: vec![Some(0.8), Some(0.8)],
    };
    let out = score(
        2,
        &[late, miner(1, 5000, 0.8, 0.8)],
        &ScoringParams::default(),
    )
    .unwrap();
    assert_eq!(out.points, vec![0.0, 4.0]);

    let none = score(2, &[], &ScoringParams::default()).unwrap();
    assert!(none.points.is_empty() && none.pareto_frontier.is_empty());
    assert!(none.subset_winners.iter().all(|w| w.winner.is_none()));
    assert_eq!(none.subset_winners.len(), 3);

    let no_envs = score(
        0,
        &[
            MinerRates {
                uid: 4,
                block: Some(1),
                rates: vec![],
            },
            MinerRates {
                uid: 2,
                block: None,
                rates: vec![],
            },
        ],
        &ScoringParams::default(),
    )
    .unwrap();
    assert!(no_envs.subset_winners.is_empty());
    assert_eq!(no_envs.points, vec![0.0, 0.0]);
    assert_eq!(no_envs.weights, vec![0.5, 0.5]);
}

#[test]
fn a_subset_can_have_no_winner() {
    // 2 beats 0 on both envs but not 1 on env a; 1 fails to beat 0 on env b: nobody survives (a, b).
    let miners = [
        miner(0, 1000, 0.5, 0.5),
        miner(1, 1500, 0.9, 0.1),
        miner(2, 2000, 0.9, 0.9),
    ];
    let out = score(2, &miners, &ScoringParams::default()).unwrap();
    let winners: Vec<Option<u32>> = out.subset_winners.iter().map(|w| w.winner).collect();
    assert_eq!(winners, vec![Some(1), Some(2), None]);
    assert_eq!(out.points, vec![0.0, 1.0, 1.0]);
}

#[test]
fn refuses_bad_parameters() {
    let p = ScoringParams {
        temperature: 0.0,
        ..Default::default()
    };
    assert!(score(1, &[], &p).is_err());
    assert!(score(17, &[], &ScoringParams::default()).is_err());
    let short = MinerRates {
        uid: 0,
        block: None,
        rates: vec![],
    };
    assert!(score(1, &[short], &ScoringParams::default()).is_err());
}
