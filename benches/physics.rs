//! Issue 5's speed targets, each next to its baseline in the same run:
//! - `physics/bare_step/*`: 5 × mj_step + mj_rnePostConstraint + mj_forward on the scene (baseline);
//!   `physics/env_step/*`: the environment's whole step (action, physics, state, reward, success).
//! - `render/bare/*`: a bare mujoco-rs render loop of both cameras at 84×84, shadows and MSAA off;
//!   `render/cameras/*`: the environment's camera pair (same settings, plus the row flip).
//! - `reset/*`: one environment reset per task (reach, push and pick-place use the cached hand reset).
//! - `interleaved/*`: the environment step of pick-place when 1, 64 or 128 environments take turns,
//!   one step each, as the episodes of an executor's pools do (the cost of their data leaving the
//!   cache).
//!
//! Run: `./deploy/setup.sh && cargo bench --bench physics`.

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use kinitro::sim::env::{Env, Scene};
use kinitro::sim::task::Task;
use kinitro::sim::{assets, render};
use mujoco_rs::renderer::MjRenderer;
use mujoco_rs::wrappers::mj_visualization::MjvCamera;

fn model(task: Task) -> mujoco_rs::prelude::MjModel {
    let dir = kinitro::config::metaworld_assets_dir().expect("assets dir");
    assets::load(&dir, task.scene_file()).expect("run deploy/setup.sh")
}

/// A moving hand with a toggling gripper, so contacts and the weld are exercised.
fn action(i: u64) -> [f32; 4] {
    let t = (i % 100) as f32 / 50.0 - 1.0;
    [
        0.3 * t,
        -0.3 * t,
        0.2,
        if i % 200 < 100 { 1.0 } else { -1.0 },
    ]
}

/// Steps of an episode in these benches, as in the executor bench's episodes.
const EPISODE_STEPS: u32 = 100;

/// Time of `iters` environment steps, the environments taking turns one step each; resets (when an
/// episode of [`EPISODE_STEPS`] is over, with a new seed) are not timed: they are measured by
/// `reset/*`.
fn timed_steps(envs: &mut [Env], iters: u64) -> Duration {
    let n = envs.len() as u64;
    let mut spent = Duration::ZERO;
    for i in 0..iters {
        let env = &mut envs[(i % n) as usize];
        if env.steps() == EPISODE_STEPS {
            env.reset(i).unwrap();
        }
        let t = Instant::now();
        let out = env.step(action(i / n)).unwrap();
        spent += t.elapsed();
        std::hint::black_box(out);
    }
    spent
}

fn physics(c: &mut Criterion) {
    let mut group = c.benchmark_group("physics");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(3));
    for task in [Task::PickPlace, Task::Reach, Task::Push] {
        let name = task.env_id().trim_start_matches("metaworld/");
        let m = model(task);
        let mut env = Env::new(task, &m).unwrap();
        env.reset(1).unwrap();
        // The bare loop runs on the environment's own (edited) model and state.
        let mut bare = Env::new(task, &m).unwrap();
        bare.reset(1).unwrap();
        group.bench_function(format!("bare_step/{name}"), |b| {
            b.iter(|| {
                let data = bare.sim().data();
                for _ in 0..5 {
                    data.step();
                }
                data.rne_post_constraint();
                data.forward();
            })
        });
        group.bench_function(format!("env_step/{name}"), |b| {
            b.iter_custom(|iters| timed_steps(std::slice::from_mut(&mut env), iters))
        });
    }
    group.finish();
}

fn interleaved(c: &mut Criterion) {
    let mut group = c.benchmark_group("interleaved");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(3));
    let task = Task::PickPlace;
    // As on an episode worker: the environments share one scene.
    let scene = Scene::new(model(task)).unwrap();
    for n in [1usize, 64, 128] {
        let mut envs: Vec<Env> = (0..n)
            .map(|i| {
                let mut e = Env::on_scene(task, scene.clone()).unwrap();
                e.reset(i as u64).unwrap();
                e
            })
            .collect();
        group.bench_function(format!("pick-place/{n}"), |b| {
            b.iter_custom(|iters| timed_steps(&mut envs, iters))
        });
    }
    group.finish();
}

fn rendering(c: &mut Criterion) {
    let mut group = c.benchmark_group("render");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(5));
    let task = Task::PickPlace;
    let m = model(task);
    let mut env = Env::new(task, &m).unwrap();
    env.reset(1).unwrap();
    let Ok(mut cams) = render::Cameras::new(&m) else {
        eprintln!(
            "no EGL device: render benches skipped ({:?})",
            render::Cameras::new(&m).err()
        );
        return;
    };
    // Bare loop: the same settings applied by hand, both cameras, no flip.
    let mut tuned = m.clone();
    // SAFETY: visual settings of a private copy.
    let vis = unsafe { &mut tuned.ffi_mut().vis };
    vis.quality.shadowsize = 0;
    vis.quality.offsamples = 0;
    vis.global.offwidth = 84;
    vis.global.offheight = 84;
    let ids = render::CAMERAS.map(|c| {
        tuned
            .name_to_id(mujoco_rs::prelude::MjtObjBase::mjOBJ_CAMERA, c)
            .unwrap()
    });
    let mut bare = MjRenderer::builder()
        .width(84)
        .height(84)
        .build(&tuned)
        .unwrap();
    group.bench_function("bare/pick-place", |b| {
        b.iter(|| {
            for id in ids {
                bare.set_camera(MjvCamera::new_fixed(id));
                bare.sync_data(env.sim().data()).unwrap();
                bare.render().unwrap();
                std::hint::black_box(bare.rgb_flat());
            }
        })
    });
    group.bench_function("cameras/pick-place", |b| {
        b.iter(|| std::hint::black_box(cams.render(env.sim()).unwrap()))
    });
    group.finish();
}

fn resets(c: &mut Criterion) {
    let mut group = c.benchmark_group("reset");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(2));
    for task in Task::ALL {
        let m = model(task);
        let mut env = Env::new(task, &m).unwrap();
        env.reset(0).unwrap();
        let mut seed = 0;
        group.bench_function(task.env_id().trim_start_matches("metaworld/"), |b| {
            b.iter(|| {
                seed += 1;
                env.reset(seed).unwrap()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, physics, interleaved, rendering, resets);
criterion_main!(benches);
