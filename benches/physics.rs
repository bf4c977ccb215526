//! The physics baseline of issue 5: the bare loop an environment step is measured against —
//! 5 × mj_step + mj_rnePostConstraint + mj_forward on MetaWorld's pick-place scene.
//!
//! Run: `./deploy/setup.sh && cargo bench --bench physics`.

use criterion::{criterion_group, criterion_main, Criterion};
use std::time::Duration;

fn bench(c: &mut Criterion) {
    let dir = kinitro::config::metaworld_assets_dir().expect("assets dir");
    let mut group = c.benchmark_group("physics");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(3));
    for (name, file) in [
        ("pick-place", "sawyer_xyz/sawyer_pick_place_v3.xml"),
        ("reach", "sawyer_xyz/sawyer_reach_v3.xml"),
    ] {
        let model = kinitro::sim::assets::load(&dir, file).expect("run deploy/setup.sh");
        let mut data = model.make_data();
        group.bench_function(format!("bare_step/{name}"), |b| {
            b.iter(|| {
                for _ in 0..5 {
                    data.step();
                }
                data.rne_post_constraint();
                data.forward();
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
