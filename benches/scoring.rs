//! Scoring cost for M ∈ {16, 64, 256, 1024} miners and E ∈ {3, 6, 9, 12} envs (issue: scoring engine).
//!
//! `score/…` is the whole pipeline of docs/scoring.md §3–7 (frontier, thresholds, subset winners,
//! points, softmax, u16). `reference/…` is the literal upstream all-pairs subset formulation on the
//! same input, the baseline, measured where it finishes in reasonable time (M·M·E·2^E ≤ ~3·10^8).
//! Targets: 256 × 9 under 5 ms, 1024 × 12 under 1 s, on one core.
//!
//! Run: `cargo bench --bench scoring` (add `-- score/256x9` to pick one case).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use kinitro_actors::scoring::demo::generated_rates;
use kinitro_actors::scoring::{reference, score, thresholds, MinerRates, ScoringParams};
use std::hint::black_box;
use std::time::Duration;

/// Generated rates with realistic ties: blocks in a few groups, some absent pairs.
fn field(miners: usize, envs: usize) -> Vec<MinerRates> {
    let mut ms = generated_rates(miners, envs, 42);
    for (i, m) in ms.iter_mut().enumerate() {
        if i % 7 == 0 {
            m.block = Some(1000);
        }
        if i % 11 == 0 {
            m.rates[i % envs] = None;
        }
    }
    ms
}

fn bench(c: &mut Criterion) {
    let params = ScoringParams::default();
    let mut group = c.benchmark_group("score");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2));
    for m in [16usize, 64, 256, 1024] {
        for e in [3usize, 6, 9, 12] {
            let ms = field(m, e);
            group.bench_function(BenchmarkId::from_parameter(format!("{m}x{e}")), |b| {
                b.iter(|| score(e, black_box(&ms), &params).unwrap())
            });
        }
    }
    group.finish();

    let mut group = c.benchmark_group("reference");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(100))
        .measurement_time(Duration::from_secs(2));
    for m in [16usize, 64, 256] {
        for e in [3usize, 6, 9] {
            if m * m * e * (1 << e) > 300_000_000 {
                continue;
            }
            let ms = field(m, e);
            let t = thresholds::threshold_matrix(&ms, &params);
            group.bench_function(BenchmarkId::from_parameter(format!("{m}x{e}")), |b| {
                b.iter(|| reference::subset_winners(e, black_box(&ms), &t))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
