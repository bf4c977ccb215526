//! A pool's episode worker (docs/executor.md §2): one OS thread doing all MuJoCo stepping,
//! rendering and observation encoding of the pool's episodes, one job at a time in arrival order.
//!
//! It keeps one scene per env id (a compiled model shared by that env id's environments), idle
//! environments for reuse, the environment of each episode in flight, and one renderer per env id,
//! all created lazily.

use std::collections::HashMap;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::mpsc;
use std::time::Instant;

use base64::Engine;
use serde_json::json;
use tokio::sync::oneshot;

use crate::sim::env::{Env, Scene, STATE_LEN};
use crate::sim::render::{self, Cameras};
use crate::sim::task::Task;
use crate::sim::{assets, env};

/// What the episode's observations carry.
#[derive(Debug, Clone, Copy)]
pub struct ObsOptions {
    /// Render the two cameras.
    pub images: bool,
    /// Add `extra.state`.
    pub privileged_state: bool,
}

/// A worker's answer to a reset or a step.
#[derive(Debug)]
pub struct SimAnswer {
    /// Step reward (0 for a reset).
    pub reward: f64,
    /// Step success.
    pub success: bool,
    /// The `/act` request body for the next observation (`{"obs": …}`), unless not wanted.
    pub body: Option<bytes::Bytes>,
    /// Seconds of physics, rendering and encoding.
    pub timings: [f64; 3],
}

/// A failure of the simulator or renderer: `Simulator error: …` / `Render error: …`.
pub type SimFailure = String;

/// The worker's answer to a reset or a step.
pub type Answer = Result<SimAnswer, SimFailure>;

/// A job for the worker.
pub enum Job {
    /// Start episode `id` of `task` with `sim_seed`.
    Reset {
        /// Episode id.
        id: u64,
        /// Task.
        task: Task,
        /// Secret simulation seed.
        sim_seed: u64,
        /// Answer.
        reply: oneshot::Sender<Answer>,
    },
    /// Step episode `id`.
    Step {
        /// Episode id.
        id: u64,
        /// Native action.
        action: [f32; 4],
        /// Build the next observation.
        observe: bool,
        /// Answer.
        reply: oneshot::Sender<Answer>,
    },
    /// Episode `id` is over: its environment goes back to the idle set.
    End {
        /// Episode id.
        id: u64,
    },
}

/// The worker's state, living on its thread.
struct Worker {
    assets: PathBuf,
    options: ObsOptions,
    scenes: HashMap<Task, Rc<Scene>>,
    idle: HashMap<Task, Vec<Env>>,
    running: HashMap<u64, Env>,
    cameras: HashMap<Task, Cameras>,
}

/// Most answers held back while further steps are queued (images off).
const HELD_ANSWERS: usize = 8;

/// An answer and where it goes.
type Answered = (oneshot::Sender<Answer>, Answer);

/// Starts a worker thread; jobs go into the returned sender. The thread ends when every sender is
/// dropped.
pub fn spawn(assets: PathBuf, options: ObsOptions, name: String) -> mpsc::Sender<Job> {
    let (tx, rx) = mpsc::channel::<Job>();
    std::thread::Builder::new()
        .name(name)
        .spawn(move || {
            let mut w = Worker {
                assets,
                options,
                scenes: HashMap::new(),
                idle: HashMap::new(),
                running: HashMap::new(),
                cameras: HashMap::new(),
            };
            // Without images a step takes a fraction of a millisecond: its answer waits while
            // further steps are queued (up to HELD_ANSWERS), so the pool's arbiter is woken once
            // per batch rather than once per step: a third fewer context switches, each of which
            // evicts MuJoCo's data from the caches. Answers never wait for a reset or a render.
            let hold = if options.images { 1 } else { HELD_ANSWERS };
            let mut held = Vec::with_capacity(hold);
            let mut next = rx.recv().ok();
            while let Some(job) = next.take() {
                held.extend(w.handle(job));
                next = rx.try_recv().ok();
                let cheap_next = matches!(next, Some(Job::Step { .. } | Job::End { .. }));
                if !cheap_next || held.len() >= hold {
                    for (reply, answer) in held.drain(..) {
                        let _ = reply.send(answer);
                    }
                }
                if next.is_none() {
                    next = rx.recv().ok();
                }
            }
        })
        .expect("cannot start an episode worker thread");
    tx
}

/// Compiles the scenes of `tasks` and, with images, renders one probe frame per scene (start-up
/// checks of docs/executor.md §3.1); runs on the calling thread.
pub fn probe(assets: &std::path::Path, tasks: &[Task], images: bool) -> Result<(), String> {
    for task in tasks {
        let model = assets::load(assets, task.scene_file())?;
        let mut e = Env::new(*task, &model).map_err(|e| e.0)?;
        e.reset(0).map_err(|e| e.0)?;
        if images {
            Cameras::new(&model)
                .and_then(|mut cams| cams.render(e.sim()))
                .map_err(|e| {
                    format!("offscreen rendering unavailable: {e} (set KINITRO_EXECUTOR_USE_IMAGES=false to run without images)")
                })?;
        }
    }
    Ok(())
}

impl Worker {
    /// Does one job; returns the answer to send, if the job has one.
    fn handle(&mut self, job: Job) -> Option<Answered> {
        match job {
            Job::Reset {
                id,
                task,
                sim_seed,
                reply,
            } => Some((reply, self.reset(id, task, sim_seed))),
            Job::Step {
                id,
                action,
                observe,
                reply,
            } => Some((reply, self.step(id, action, observe))),
            Job::End { id } => {
                if let Some(e) = self.running.remove(&id) {
                    self.idle.entry(e.task()).or_default().push(e);
                }
                None
            }
        }
    }

    fn env_for(&mut self, task: Task) -> Result<Env, SimFailure> {
        if let Some(e) = self.idle.get_mut(&task).and_then(Vec::pop) {
            return Ok(e);
        }
        let scene = match self.scenes.get(&task) {
            Some(scene) => scene.clone(),
            None => {
                let model = assets::load(&self.assets, task.scene_file())
                    .map_err(|e| format!("Simulator error: {e}"))?;
                let scene = Scene::new(model).map_err(|e| format!("Simulator error: {e}"))?;
                self.scenes.insert(task, scene.clone());
                scene
            }
        };
        Env::on_scene(task, scene).map_err(|e| format!("Simulator error: {e}"))
    }

    fn reset(&mut self, id: u64, task: Task, sim_seed: u64) -> Answer {
        let mut e = self.env_for(task)?;
        let t = Instant::now();
        let reset = e.reset(sim_seed);
        let physics = t.elapsed().as_secs_f64();
        let state = match reset {
            Ok(s) => s,
            Err(err) => {
                self.idle.entry(task).or_default().push(e);
                return Err(format!("Simulator error: {err}"));
            }
        };
        let (body, render_s, encode_s) = match self.observe(&mut e, &state) {
            Ok(v) => v,
            Err(err) => {
                self.idle.entry(task).or_default().push(e);
                return Err(err);
            }
        };
        self.running.insert(id, e);
        Ok(SimAnswer {
            reward: 0.0,
            success: false,
            body: Some(body),
            timings: [physics, render_s, encode_s],
        })
    }

    fn step(&mut self, id: u64, action: [f32; 4], observe: bool) -> Answer {
        let mut e = self
            .running
            .remove(&id)
            .ok_or_else(|| format!("Executor error: episode {id} is not running"))?;
        let t = Instant::now();
        let stepped = e.step(action);
        let physics = t.elapsed().as_secs_f64();
        let result = match stepped {
            Err(err) => Err(format!("Simulator error: {err}")),
            Ok((state, outcome)) => {
                let observed = if observe {
                    self.observe(&mut e, &state).map(Some)
                } else {
                    Ok(None)
                };
                observed.map(|o| {
                    let (body, render_s, encode_s) =
                        o.map_or((None, 0.0, 0.0), |(b, r, c)| (Some(b), r, c));
                    SimAnswer {
                        reward: outcome.reward,
                        success: outcome.success,
                        body,
                        timings: [physics, render_s, encode_s],
                    }
                })
            }
        };
        self.running.insert(id, e);
        result
    }

    /// The `/act` body for the environment's current data: `(body, render s, encode s)`.
    fn observe(
        &mut self,
        e: &mut Env,
        state: &[f64; STATE_LEN],
    ) -> Result<(bytes::Bytes, f64, f64), SimFailure> {
        let t = Instant::now();
        let images = if self.options.images {
            let task = e.task();
            if !self.cameras.contains_key(&task) {
                let scene = self
                    .scenes
                    .get(&task)
                    .ok_or("Render error: scene not loaded")?;
                let cams =
                    Cameras::new(scene.model()).map_err(|err| format!("Render error: {err}"))?;
                self.cameras.insert(task, cams);
            }
            let cams = self.cameras.get_mut(&task).expect("inserted above");
            let images = cams
                .render(e.sim())
                .map_err(|err| format!("Render error: {err}"))?;
            Some(images)
        } else {
            None
        };
        let render_s = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let privileged = self.options.privileged_state.then_some(&state[..]);
        let body = encode_observation(&e.proprio(), images.as_ref(), privileged)?;
        Ok((body.into(), render_s, t.elapsed().as_secs_f64()))
    }
}

/// The `/act` body of one observation (docs/miner-protocol.md §2.2, §3): proprio, the camera images
/// if rendered (base64), and the privileged state if enabled; `Executor error: …` if it cannot be
/// written. `kinitro env test` times the same encoding for the executor bench's baseline.
pub fn encode_observation(
    proprio: &env::Proprio,
    images: Option<&[render::Image; 2]>,
    state: Option<&[f64]>,
) -> Result<Vec<u8>, SimFailure> {
    let rgb: Vec<(&'static str, EncodedImage)> = images
        .into_iter()
        .flat_map(|images| render::CAMERAS.iter().zip(images))
        .map(|(name, image)| {
            let image = EncodedImage {
                data: base64::engine::general_purpose::STANDARD.encode(image),
                shape: [render::SIZE, render::SIZE, 3],
                dtype: "uint8",
            };
            (*name, image)
        })
        .collect();
    let body = ActBody {
        obs: Observation {
            rgb: Members(&rgb),
            depth: Empty {},
            proprio,
            cam_intrinsics: Empty {},
            cam_extrinsics: Empty {},
            extra: Extra { state },
        },
    };
    serde_json::to_vec(&body).map_err(|err| format!("Executor error: {err}"))
}

/// The `/act` body (docs/miner-protocol.md §2.2, §3): typed, so the six observation members are
/// written in the documented order (and proprio's keys in [`env::Proprio`]'s field order) without
/// building a map.
#[derive(serde::Serialize)]
struct ActBody<'a> {
    obs: Observation<'a>,
}

#[derive(serde::Serialize)]
struct Observation<'a> {
    rgb: Members<'a, EncodedImage>,
    depth: Empty,
    proprio: &'a env::Proprio,
    cam_intrinsics: Empty,
    cam_extrinsics: Empty,
    extra: Extra<'a>,
}

/// An empty JSON object.
#[derive(serde::Serialize)]
struct Empty {}

/// `extra`: `{}` or `{"state": [39 floats]}`.
#[derive(serde::Serialize)]
struct Extra<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    state: Option<&'a [f64]>,
}

#[derive(serde::Serialize)]
struct EncodedImage {
    data: String,
    shape: [usize; 3],
    dtype: &'static str,
}

/// A JSON object with these members, in this order.
struct Members<'a, T>(&'a [(&'static str, T)]);

impl<T: serde::Serialize> serde::Serialize for Members<'_, T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter().map(|(k, v)| (k, v)))
    }
}

/// The task configuration of an episode (`/reset` body member).
pub fn reset_body(task: Task, seed: i64) -> bytes::Bytes {
    serde_json::to_vec(&json!({ "task_config": env::task_config(task, seed) }))
        .unwrap_or_default()
        .into()
}
