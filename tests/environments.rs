//! Fidelity of the MetaWorld environments (docs/environments.md §7–10, docs/miner-protocol.md §8.1)
//! on the real scenes and real MuJoCo: policy success rates, the recorded pick-place episode,
//! determinism, the overlay, the cached hand reset, the generator, and rendered images.

use std::sync::OnceLock;

use kinitro::config::miner::PolicyKind;
use kinitro::miner::policy::Policy;
use kinitro::sim::action::Action;
use kinitro::sim::batch::BatchCameras;
use kinitro::sim::env::{Env, Scene, SimError};
use kinitro::sim::mj::Sim;
use kinitro::sim::rng::{EpisodeDraw, SimRng};
use kinitro::sim::rollout::run_episode;
use kinitro::sim::task::Task;
use kinitro::sim::{assets, render};
use mujoco_rs::prelude::MjModel;
use serde_json::Value;

fn models() -> &'static Vec<MjModel> {
    static MODELS: OnceLock<Vec<MjModel>> = OnceLock::new();
    MODELS.get_or_init(|| {
        let dir = kinitro::config::metaworld_assets_dir().unwrap();
        Task::ALL
            .iter()
            .map(|t| assets::load(&dir, t.scene_file()).expect("run deploy/setup.sh"))
            .collect()
    })
}

fn env(task: Task) -> Env {
    Env::new(task, &models()[task as usize]).unwrap()
}

fn fixture(name: &str) -> Value {
    let path = format!(
        "{}/tests/fixtures/metaworld/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// Success rate of a reference policy over sim seeds `0..n`, through the policy's JSON action.
fn success_rate(task: Task, kind: PolicyKind, n: u64) -> f64 {
    let mut e = env(task);
    let mut policy = Policy::new(kind, 7);
    let successes = (0..n)
        .filter(|seed| {
            run_episode(&mut e, *seed, 500, |_, state| {
                let a = policy
                    .act(Some(task), Some(state))
                    .map_err(|e| SimError(format!("{e:?}")))?;
                Ok(Action::from_json(&a).map_err(SimError)?.native())
            })
            .unwrap()
            .success
        })
        .count();
    successes as f64 / n as f64
}

macro_rules! rates {
    ($($name:ident: $task:expr, expert >= $bar:expr, random <= $rbar:expr;)*) => {$(
        #[test]
        fn $name() {
            let task = $task;
            let expert = success_rate(task, PolicyKind::Expert, 100);
            assert!(expert >= $bar, "{task:?}: expert success {expert} below {}", $bar);
            let random = success_rate(task, PolicyKind::Random, 100);
            assert!(random <= $rbar, "{task:?}: random success {random} above {}", $rbar);
            let zero = success_rate(task, PolicyKind::Zero, 100);
            assert!(zero <= 0.05, "{task:?}: zero-policy success {zero}");
        }
    )*};
}

rates! {
    reach_rates: Task::Reach, expert >= 0.95, random <= 0.05;
    push_rates: Task::Push, expert >= 0.95, random <= 0.05;
    pick_place_rates: Task::PickPlace, expert >= 0.95, random <= 0.05;
    door_open_rates: Task::DoorOpen, expert >= 0.90, random <= 0.05;
    drawer_open_rates: Task::DrawerOpen, expert >= 0.95, random <= 0.05;
    drawer_close_rates: Task::DrawerClose, expert >= 0.95, random <= 0.40;
    button_press_rates: Task::ButtonPress, expert >= 0.95, random <= 0.05;
    peg_insert_rates: Task::PegInsert, expert >= 0.70, random <= 0.05;
}

#[test]
fn golden_pick_place_replay() {
    let g = fixture("golden_pick_place_v3_mt1seed0_task0_expert.json");
    let nums = |v: &Value| -> Vec<f64> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect()
    };
    let mut e = env(Task::PickPlace);
    let reset = e
        .reset_with(EpisodeDraw::nominal(nums(&g["rand_vec"])))
        .unwrap();
    let expected = nums(&g["reset_obs"]);
    for i in (0..7).chain(36..39) {
        assert!(
            (reset[i] - expected[i]).abs() < 1e-3,
            "reset slot {i}: {} vs {}",
            reset[i],
            expected[i]
        );
    }
    let recorded_first = g["success"]
        .as_array()
        .unwrap()
        .iter()
        .position(|s| s.as_f64() == Some(1.0))
        .unwrap()
        + 1;
    let mut first = None;
    for (step, a) in g["actions"].as_array().unwrap().iter().enumerate() {
        let a = nums(a);
        let (_, outcome) = e
            .step([a[0] as f32, a[1] as f32, a[2] as f32, a[3] as f32])
            .unwrap();
        if outcome.success && first.is_none() {
            first = Some(step + 1);
        }
        assert_eq!(outcome.truncated, step == 499);
    }
    let first = first.expect("the replay never succeeds");
    assert!(
        first.abs_diff(recorded_first) <= 3,
        "first success at step {first}, recorded {recorded_first}"
    );
    assert!(
        e.step([0.0; 4]).is_err(),
        "stepping after 500 steps is an error"
    );
}

/// A whole episode's states with a fixed action pattern.
fn trajectory(e: &mut Env, sim_seed: u64) -> Vec<[f64; 39]> {
    let mut out = vec![e.reset(sim_seed).unwrap()];
    for i in 0..60 {
        let t = i as f32 / 30.0 - 1.0;
        out.push(e.step([t, -t, 0.5 * t, t]).unwrap().0);
    }
    out
}

#[test]
fn same_sim_seed_is_bit_identical_and_episodes_never_leak() {
    for task in Task::ALL {
        let mut e = env(task);
        let a = trajectory(&mut e, 11);
        let b = trajectory(&mut e, 12);
        let a_again = trajectory(&mut e, 11);
        assert_eq!(
            a, a_again,
            "{task:?}: an episode depends on the one before it"
        );
        assert_ne!(
            a[0][36..],
            b[0][36..],
            "{task:?}: different sim seeds, same goal"
        );
        let fresh = trajectory(&mut env(task), 11);
        assert_eq!(a, fresh, "{task:?}: a reused env differs from a fresh one");
        assert_ne!(e.draw().friction_scale, 1.0);
    }
}

#[test]
fn cached_hand_reset_matches_a_fresh_one() {
    for task in [Task::Reach, Task::Push, Task::PickPlace] {
        for seed in [3, 4, 5] {
            let mut warm = env(task);
            warm.reset(99).unwrap(); // fills the cache
            let cached = trajectory(&mut warm, seed);
            let fresh = trajectory(&mut env(task), seed);
            assert_eq!(cached, fresh, "{task:?} seed {seed}");
            // The cache belongs to the scene: an environment whose sibling filled it.
            let scene = Scene::new(models()[task as usize].clone()).unwrap();
            let mut sibling = Env::on_scene(task, scene.clone()).unwrap();
            sibling.reset(99).unwrap();
            let mut newcomer = Env::on_scene(task, scene).unwrap();
            assert_eq!(
                trajectory(&mut newcomer, seed),
                fresh,
                "{task:?} seed {seed}"
            );
        }
    }
}

/// The overlay values the model of `e` holds now.
fn overlay(e: &mut Env) -> Vec<Vec<f64>> {
    let a = e.sim().overlay_mut();
    [
        a.body_pos,
        a.site_pos,
        a.geom_friction,
        a.dof_damping,
        a.eq_data,
    ]
    .map(|v| v.to_vec())
    .to_vec()
}

#[test]
fn environments_sharing_a_scene_match_environments_alone() {
    for task in Task::ALL {
        let scene = Scene::new(models()[task as usize].clone()).unwrap();
        let mut shared: Vec<Env> = (0..3)
            .map(|_| Env::on_scene(task, scene.clone()).unwrap())
            .collect();
        let mut alone: Vec<Env> = (0..3).map(|_| env(task)).collect();
        for (i, (s, a)) in shared.iter_mut().zip(&mut alone).enumerate() {
            assert_eq!(s.reset(20 + i as u64), a.reset(20 + i as u64), "{task:?}");
        }
        // Steps taken in turns, and one environment starting a new episode in the middle.
        for t in 0..40 {
            for (i, (s, a)) in shared.iter_mut().zip(&mut alone).enumerate() {
                if t == 20 && i == 1 {
                    assert_eq!(s.reset(30), a.reset(30), "{task:?} new episode");
                }
                let x = (t as f32 / 20.0 - 1.0) * if i == 2 { -1.0 } else { 1.0 };
                let action = [x, 0.5 - x, 0.3 * x, x];
                assert_eq!(
                    s.step(action).unwrap(),
                    a.step(action).unwrap(),
                    "{task:?} env {i} step {t}"
                );
                assert_eq!(overlay(s), overlay(a), "{task:?} env {i} step {t}: overlay");
            }
        }
        assert_ne!(
            shared[0].draw().friction_scale,
            shared[1].draw().friction_scale
        );
    }
}

#[test]
fn collision_passes_leave_the_bounding_volume_marks_alone() {
    // MuJoCo clears and sets one mark per bounding volume on each collision pass, for drawing them:
    // 134 KB per pass for pick-place, six passes a step. The scenes turn that off; the recorded
    // replay above shows the physics is unchanged.
    let mut e = env(Task::PickPlace);
    trajectory(&mut e, 7);
    let sim = e.sim();
    let volumes = sim.model().ffi().nbvh as usize;
    // SAFETY: bvh_active holds nbvh bytes.
    let marks = unsafe { std::slice::from_raw_parts(sim.data().ffi().bvh_active, volumes) };
    assert!(volumes > 100_000, "{volumes} bounding volumes");
    assert_eq!(marks.iter().filter(|&&marked| marked).count(), 0);
}

#[test]
fn the_reset_image_shows_this_episode_s_goal() {
    for task in [Task::Reach, Task::PickPlace, Task::DrawerOpen] {
        let model = &models()[task as usize];
        let mut cams = render::Cameras::new(model).expect("EGL renderer");
        let mut reused = env(task);
        trajectory(&mut reused, 40);
        reused.reset(41).unwrap();
        let mut fresh = env(task);
        fresh.reset(41).unwrap();
        assert!(
            cams.render(reused.sim()).unwrap() == cams.render(fresh.sim()).unwrap(),
            "{task:?}: the reset image shows the previous episode's goal"
        );
    }
}

#[test]
fn placement_is_applied_to_the_scene() {
    for seed in 0..5 {
        let mut e = env(Task::PickPlace);
        let s = e.reset(seed).unwrap();
        let v = &EpisodeDraw::new(Task::PickPlace, seed).placement;
        assert!(
            (s[4] - v[0]).abs() < 1e-9 && (s[5] - v[1]).abs() < 1e-9,
            "object at its drawn place"
        );
        assert_eq!(s[36..], v[3..], "goal slots are the drawn goal");
        let mut d = env(Task::DoorOpen);
        let s = d.reset(seed).unwrap();
        let v = &EpisodeDraw::new(Task::DoorOpen, seed).placement;
        assert!((s[36] - (v[0] - 0.3)).abs() < 1e-12 && (s[37] - (v[1] - 0.45)).abs() < 1e-12);
    }
}

#[test]
fn malformed_native_actions_never_corrupt_the_state() {
    let mut e = env(Task::Push);
    e.reset(1).unwrap();
    for a in [
        [f32::NAN, 0.0, 0.0, 0.0],
        [f32::INFINITY, f32::NEG_INFINITY, 1e30, -1e30],
        [0.0; 4],
    ] {
        let (s, outcome) = e.step(a).unwrap();
        assert!(s.iter().all(|v| v.is_finite()) && outcome.reward.is_finite());
        assert!(
            s[0].abs() <= 0.525 && s[1] >= 0.348,
            "hand stays in its box"
        );
    }
}

#[test]
fn mt1_task_vectors_are_reproduced() {
    let vecs = fixture("mt1_seed0_task_rand_vecs.json");
    for (name, task) in [
        ("reach-v3", Task::Reach),
        ("push-v3", Task::Push),
        ("pick-place-v3", Task::PickPlace),
    ] {
        let mut rng = SimRng::from_genrand(0);
        for (i, expected) in vecs[name].as_array().unwrap().iter().enumerate() {
            rng.placement(task);
            let v = rng.placement(task);
            let expected: Vec<f64> = expected
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect();
            // Bit-identical in most vectors; some differ in the last bit (≤ 3e-17), where NumPy's
            // compiled arithmetic rounds differently. A wrong stream or order is off by far more.
            for (a, b) in v.iter().zip(&expected) {
                assert!(
                    (a - b).abs() <= 1e-16,
                    "{name} vector {i}: {v:?} vs {expected:?}"
                );
            }
        }
    }
}

#[test]
fn rendered_images_are_upright_and_per_episode() {
    let model = &models()[Task::Reach as usize];
    let mut cams = render::Cameras::new(model).expect("EGL renderer");
    let mut e = env(Task::Reach);
    e.reset(5).unwrap();
    let [corner, corner2] = cams.render(e.sim()).unwrap();
    let n = render::SIZE * render::SIZE * 3;
    assert_eq!((corner.len(), corner2.len()), (n, n));
    let distinct: std::collections::HashSet<&[u8]> = corner.chunks(3).collect();
    assert!(
        distinct.len() > 50,
        "image is blank ({} colours)",
        distinct.len()
    );
    assert_ne!(corner, corner2);

    // The red goal sphere appears where the camera projection puts it, rows flipped.
    let sim = e.sim();
    let goal = sim.site_xpos(sim.id(kinitro::sim::mj::Obj::mjOBJ_SITE, "goal").unwrap());
    let cam_id = sim
        .id(kinitro::sim::mj::Obj::mjOBJ_CAMERA, "corner")
        .unwrap();
    let (pos, r, fovy) = sim.camera(cam_id);
    let d = [goal[0] - pos[0], goal[1] - pos[1], goal[2] - pos[2]];
    let c: Vec<f64> = (0..3)
        .map(|j| (0..3).map(|i| r[3 * i + j] * d[i]).sum())
        .collect();
    let h = render::SIZE as f64;
    let f = (h / 2.0) / (fovy.to_radians() / 2.0).tan();
    let (u, v) = (h / 2.0 + f * c[0] / -c[2], h / 2.0 - f * c[1] / -c[2]);
    // Hide the goal (sites never touch the physics) and see which pixels change.
    let goal_site = sim.id(kinitro::sim::mj::Obj::mjOBJ_SITE, "goal").unwrap();
    sim.overlay_mut().site_pos[3 * goal_site + 2] = -5.0;
    sim.data().forward();
    let [hidden, _] = cams.render(e.sim()).unwrap();
    let changed: Vec<(f64, f64)> = corner
        .chunks(3)
        .zip(hidden.chunks(3))
        .enumerate()
        .filter(|(_, (a, b))| a != b)
        .map(|(i, _)| ((i / render::SIZE) as f64, (i % render::SIZE) as f64))
        .collect();
    assert!(!changed.is_empty(), "the goal is not visible");
    let row = changed.iter().map(|p| p.0).sum::<f64>() / changed.len() as f64;
    let col = changed.iter().map(|p| p.1).sum::<f64>() / changed.len() as f64;
    assert!(
        (row - (h - 1.0 - v)).abs() <= 2.0,
        "goal at row {row}, expected {}",
        h - 1.0 - v
    );
    assert!((col - u).abs() <= 2.0, "goal at column {col}, expected {u}");

    // Another sim seed moves the goal: the image differs.
    e.reset(6).unwrap();
    let [other, _] = cams.render(e.sim()).unwrap();
    assert_ne!(corner, other);
}

/// Steps an environment with a deterministic, varied action so the arm and objects move.
fn wander(e: &mut Env, steps: usize, phase: f32) {
    for t in 0..steps {
        let x = t as f32 * 0.15 + phase;
        e.step([x.sin(), (1.3 * x).cos(), (0.7 * x).sin(), (2.0 * x).cos()])
            .unwrap();
    }
}

/// The images of `envs`' current data from the batched path (one call) and the per-frame path.
fn both_paths(
    envs: &mut [Env],
    per_frame: &mut render::Cameras,
    batched: &mut BatchCameras,
) -> (Vec<[render::Image; 2]>, Vec<[render::Image; 2]>) {
    let expected = envs
        .iter_mut()
        .map(|e| per_frame.render(e.sim()).unwrap())
        .collect();
    let mut sims: Vec<&mut Sim> = envs.iter_mut().map(Env::sim).collect();
    (batched.render(&mut sims).unwrap(), expected)
}

#[test]
fn batched_images_are_byte_identical_to_per_frame_images() {
    for task in Task::ALL {
        let model = &models()[task as usize];
        let mut per_frame = render::Cameras::new(model).expect("EGL renderer");
        let mut batched = BatchCameras::new(model).expect("EGL renderer");
        // Episodes of several seeds, at different steps, interleaved in one pass.
        let mut envs: Vec<Env> = (0..4u64)
            .map(|i| {
                let mut e = env(task);
                e.reset(300 + i).unwrap();
                e
            })
            .collect();
        for round in 0..3 {
            for (i, e) in envs.iter_mut().enumerate() {
                wander(e, 5 + 9 * i + round, i as f32);
            }
            let (got, expected) = both_paths(&mut envs, &mut per_frame, &mut batched);
            assert_eq!(got.len(), expected.len());
            for (i, (got, expected)) in got.iter().zip(&expected).enumerate() {
                for camera in 0..2 {
                    let differing = got[camera]
                        .iter()
                        .zip(&expected[camera])
                        .filter(|(a, b)| a != b)
                        .count();
                    assert_eq!(
                        differing,
                        0,
                        "{task:?} round {round} episode {i} camera {}: {differing} bytes differ",
                        render::CAMERAS[camera]
                    );
                }
            }
        }
    }
}

#[test]
fn a_batch_larger_than_one_pass_keeps_every_episode_s_images_in_order() {
    let task = Task::PickPlace;
    let model = &models()[task as usize];
    let mut per_frame = render::Cameras::new(model).expect("EGL renderer");
    let mut batched = BatchCameras::new(model).expect("EGL renderer");
    let n = kinitro::sim::batch::PASS_EPISODES + 3;
    let mut envs: Vec<Env> = (0..n as u64)
        .map(|i| {
            let mut e = env(task);
            e.reset(500 + i).unwrap();
            wander(&mut e, (i % 7) as usize, i as f32);
            e
        })
        .collect();
    let (got, expected) = both_paths(&mut envs, &mut per_frame, &mut batched);
    assert!(
        got == expected,
        "a multi-pass batch differs from per-frame images"
    );
    // Distinct seeds give distinct goals: the images are not all one picture.
    assert_ne!(got[0], got[n - 1]);
}

/// The camera images of an `/act` body, decoded.
fn body_images(body: &[u8]) -> [Vec<u8>; 2] {
    use base64::Engine;
    let v: Value = serde_json::from_slice(body).unwrap();
    render::CAMERAS.map(|name| {
        let data = v["obs"]["rgb"][name]["data"].as_str().unwrap();
        base64::engine::general_purpose::STANDARD
            .decode(data)
            .unwrap()
    })
}

#[test]
fn an_episode_worker_s_batches_give_each_episode_its_own_images() {
    use kinitro::executor::worker::{self, Job, ObsOptions};
    use tokio::sync::oneshot;
    let dir = kinitro::config::metaworld_assets_dir().unwrap();
    let options = ObsOptions {
        images: true,
        privileged_state: false,
    };
    let jobs = worker::spawn(dir, options, "test-worker".into());
    // Episodes of two tasks, all queued at once: the worker takes them in batches.
    let episodes: Vec<(u64, Task)> = (0..6u64)
        .map(|i| (i, [Task::Reach, Task::PickPlace][i as usize % 2]))
        .collect();
    let mut references: Vec<(Env, render::Cameras)> = episodes
        .iter()
        .map(|&(i, task)| {
            let mut e = env(task);
            e.reset(70 + i).unwrap();
            (e, render::Cameras::new(&models()[task as usize]).unwrap())
        })
        .collect();
    let answers: Vec<_> = episodes
        .iter()
        .map(|&(id, task)| {
            let (reply, answer) = oneshot::channel();
            jobs.send(Job::Reset {
                id,
                task,
                sim_seed: 70 + id,
                reply,
            })
            .unwrap();
            answer
        })
        .collect();
    for (step, answers) in [answers]
        .into_iter()
        .chain((1..3).map(|step| {
            episodes
                .iter()
                .map(|&(id, _)| {
                    let (reply, answer) = oneshot::channel();
                    let action = [0.3 * step as f32, -0.2, 0.1 * id as f32, 1.0];
                    jobs.send(Job::Step {
                        id,
                        action,
                        observe: true,
                        reply,
                    })
                    .unwrap();
                    answer
                })
                .collect::<Vec<_>>()
        }))
        .enumerate()
    {
        for ((id, _), answer) in episodes.iter().zip(answers) {
            let answer = answer.blocking_recv().unwrap().unwrap();
            let (e, cams) = &mut references[*id as usize];
            if step > 0 {
                e.step([0.3 * step as f32, -0.2, 0.1 * *id as f32, 1.0])
                    .unwrap();
            }
            let expected = cams.render(e.sim()).unwrap();
            let got = body_images(&answer.body.unwrap());
            assert!(
                got == expected,
                "episode {id} step {step}: the worker's images are not this episode's"
            );
        }
    }
}
