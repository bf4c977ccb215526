//! Issue 28's rendering figures: milliseconds per step for both cameras, the per-frame path
//! (`render::Cameras`, one read-back per frame) against the batched path (`batch::BatchCameras`,
//! one read-back per pass), with K episodes per worker.
//!
//! For each K in `BENCH_K` (default `1 8 32 128`), K pick-place episodes (distinct seeds) take
//! `BENCH_STEPS` (default 40) steps each, interleaved as an episode worker runs them; every step of
//! every episode renders both cameras. The per-frame path renders each episode's step on its own;
//! the batched path renders the K episodes' step in passes of up to the worker's batch (16) — what
//! the worker does when K episodes are in flight. The two paths alternate (A B A B,
//! `BENCH_ROUNDS`, default 2) so the VM's drift hits both; the table gives each path's mean over the
//! rounds and the spread.
//!
//! Run: `./deploy/setup.sh && cargo bench --bench rendering`. `LP_NUM_THREADS` and other Mesa
//! variables apply as usual; on a machine with a GPU, EGL picks it first.

use std::time::Instant;

use kinitro::sim::batch::BatchCameras;
use kinitro::sim::env::Env;
use kinitro::sim::mj::Sim;
use kinitro::sim::render::Cameras;
use kinitro::sim::task::Task;
use kinitro::sim::{assets, render};

/// The episode worker's largest batch with images on.
const WORKER_BATCH: usize = kinitro::executor::worker::BATCH_JOBS[1];

fn var(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

/// Wall milliseconds per step (both cameras) of one path over K interleaved episodes.
fn run(envs: &mut [Env], steps: usize, render: &mut dyn FnMut(&mut [Env])) -> f64 {
    for (i, e) in envs.iter_mut().enumerate() {
        e.reset(1000 + i as u64).expect("reset");
    }
    let mut rendering = 0.0;
    for t in 0..steps {
        let x = t as f32 * 0.1;
        for e in envs.iter_mut() {
            e.step([x.sin(), x.cos(), 0.5 * x.sin(), -1.0])
                .expect("step");
        }
        let start = Instant::now();
        render(envs);
        rendering += start.elapsed().as_secs_f64();
    }
    rendering * 1e3 / (steps * envs.len()) as f64
}

fn main() {
    let ks: Vec<usize> = var("BENCH_K", "1 8 32 128")
        .split_whitespace()
        .map(|k| k.parse().expect("BENCH_K: numbers"))
        .collect();
    let steps: usize = var("BENCH_STEPS", "40").parse().expect("BENCH_STEPS");
    let rounds: usize = var("BENCH_ROUNDS", "2").parse().expect("BENCH_ROUNDS");
    let dir = kinitro::config::metaworld_assets_dir().expect("assets dir");
    let task = Task::PickPlace;
    let model = assets::load(&dir, task.scene_file()).expect("run deploy/setup.sh");
    let (mut per_frame, mut batched) = match (Cameras::new(&model), BatchCameras::new(&model)) {
        (Ok(a), Ok(b)) => (a, b),
        (a, b) => {
            eprintln!(
                "no EGL device: rendering bench skipped ({:?} / {:?})",
                a.err(),
                b.err()
            );
            return;
        }
    };
    println!("rendering bench: {task:?}, {steps} steps per episode, {rounds} A/B rounds");
    println!(
        "{:>5} {:>16} {:>16} {:>8}",
        "K", "per-frame ms", "batched ms", "ratio"
    );
    for k in ks {
        let mut envs: Vec<Env> = (0..k)
            .map(|_| Env::new(task, &model).expect("env"))
            .collect();
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            a.push(run(&mut envs, steps, &mut |envs| {
                for e in envs.iter_mut() {
                    std::hint::black_box(per_frame.render(e.sim()).expect("render"));
                }
            }));
            b.push(run(&mut envs, steps, &mut |envs| {
                for batch in envs.chunks_mut(WORKER_BATCH) {
                    let mut sims: Vec<&mut Sim> = batch.iter_mut().map(Env::sim).collect();
                    std::hint::black_box(batched.render(&mut sims).expect("render"));
                }
            }));
        }
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        let spread = |v: &[f64]| {
            let lo = v.iter().cloned().fold(f64::INFINITY, f64::min);
            let hi = v.iter().cloned().fold(0.0, f64::max);
            format!("{lo:.2}–{hi:.2}")
        };
        println!(
            "{k:>5} {:>6.2} ({:>9}) {:>6.2} ({:>9}) {:>7.2}×",
            mean(&a),
            spread(&a),
            mean(&b),
            spread(&b),
            mean(&a) / mean(&b)
        );
    }
    println!(
        "(ms per step = wall time of both {}×{} cameras, per episode step)",
        render::SIZE,
        render::SIZE
    );
}
