//! A pool's episode worker (docs/executor.md §2): one OS thread doing all MuJoCo stepping,
//! rendering and observation encoding of the pool's episodes.
//!
//! It takes half of the jobs queued as one batch: the physics of each in arrival order, then all
//! the batch's observations, the images of each env id's in one rendering pass. It keeps one scene
//! per env id (a compiled model shared by that env id's environments), idle environments for
//! reuse, the environment of each episode in flight, and one batched renderer per env id, all
//! created lazily.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::mpsc;
use std::time::Instant;

use base64::Engine;
use serde_json::json;
use tokio::sync::oneshot;

use crate::sim::batch::BatchCameras;
use crate::sim::env::{Env, Scene, STATE_LEN};
use crate::sim::render;
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
    cameras: HashMap<Task, BatchCameras>,
}

/// Most jobs taken into one batch, without and with images. A batch is half of the jobs queued
/// (at least one, at most this): the other half keeps the worker busy while the miners answer the
/// batch, so it does not wait for them as it would if it took every episode at once. Without
/// images a step takes a fraction of a millisecond, and answering a batch at once wakes the
/// pool's arbiter once per batch rather than once per step (fewer context switches, each of which
/// evicts MuJoCo's data from the caches). With images a batch's observations are rendered in one
/// pass per env id (docs/rendering.md §4).
pub const BATCH_JOBS: [usize; 2] = [8, 16];

/// An answer and where it goes.
type Answered = (oneshot::Sender<Answer>, Answer);

/// A reset or step whose physics is done and whose observation is still to be built.
struct Observing {
    reply: oneshot::Sender<Answer>,
    id: u64,
    env: Env,
    state: [f64; STATE_LEN],
    reward: f64,
    success: bool,
    physics_s: f64,
    /// A reset's environment goes back to the idle set if its observation fails.
    is_reset: bool,
}

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
            let cap = BATCH_JOBS[usize::from(options.images)];
            let mut queued = VecDeque::new();
            loop {
                if queued.is_empty() {
                    match rx.recv() {
                        Ok(job) => queued.push_back(job),
                        Err(_) => break,
                    }
                }
                queued.extend(rx.try_iter());
                // Half of what is queued: the other half keeps the worker busy while the miners
                // answer this batch.
                let n = queued.len().div_ceil(2).min(cap);
                let batch: Vec<Job> = queued.drain(..n).collect();
                for (reply, answer) in w.handle_batch(batch) {
                    let _ = reply.send(answer);
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
            BatchCameras::new(&model)
                .and_then(|mut cams| cams.render_one(e.sim()))
                .map_err(|e| {
                    format!("offscreen rendering unavailable: {e} (set KINITRO_EXECUTOR_USE_IMAGES=false to run without images)")
                })?;
        }
    }
    Ok(())
}

impl Worker {
    /// Does a batch of jobs in arrival order: the physics of each, then the observations of all
    /// (one rendering pass per task), and returns the answers to send.
    fn handle_batch(&mut self, jobs: Vec<Job>) -> Vec<Answered> {
        let mut answered = Vec::with_capacity(jobs.len());
        let mut observing = Vec::with_capacity(jobs.len());
        for job in jobs {
            match job {
                Job::Reset {
                    id,
                    task,
                    sim_seed,
                    reply,
                } => match self.reset(id, task, sim_seed, reply) {
                    Ok(o) => observing.push(o),
                    Err(a) => answered.push(a),
                },
                Job::Step {
                    id,
                    action,
                    observe,
                    reply,
                } => match self.step(id, action, observe, reply) {
                    Ok(o) => observing.push(o),
                    Err(a) => answered.push(a),
                },
                Job::End { id } => {
                    if let Some(e) = self.running.remove(&id) {
                        self.idle.entry(e.task()).or_default().push(e);
                    }
                }
            }
        }
        answered.extend(self.observe_all(observing));
        answered
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

    /// A reset's physics; its observation follows in [`Self::observe_all`].
    fn reset(
        &mut self,
        id: u64,
        task: Task,
        sim_seed: u64,
        reply: oneshot::Sender<Answer>,
    ) -> Result<Observing, Answered> {
        let mut env = match self.env_for(task) {
            Ok(e) => e,
            Err(err) => return Err((reply, Err(err))),
        };
        let t = Instant::now();
        let reset = env.reset(sim_seed);
        let physics_s = t.elapsed().as_secs_f64();
        match reset {
            Ok(state) => Ok(Observing {
                reply,
                id,
                env,
                state,
                reward: 0.0,
                success: false,
                physics_s,
                is_reset: true,
            }),
            Err(err) => {
                self.idle.entry(task).or_default().push(env);
                Err((reply, Err(format!("Simulator error: {err}"))))
            }
        }
    }

    /// A step's physics; answered at once unless it wants an observation.
    fn step(
        &mut self,
        id: u64,
        action: [f32; 4],
        observe: bool,
        reply: oneshot::Sender<Answer>,
    ) -> Result<Observing, Answered> {
        let Some(mut env) = self.running.remove(&id) else {
            return Err((
                reply,
                Err(format!("Executor error: episode {id} is not running")),
            ));
        };
        let t = Instant::now();
        let stepped = env.step(action);
        let physics_s = t.elapsed().as_secs_f64();
        match stepped {
            Ok((state, outcome)) if observe => Ok(Observing {
                reply,
                id,
                env,
                state,
                reward: outcome.reward,
                success: outcome.success,
                physics_s,
                is_reset: false,
            }),
            stepped => {
                self.running.insert(id, env);
                let answer = stepped
                    .map(|(_, outcome)| SimAnswer {
                        reward: outcome.reward,
                        success: outcome.success,
                        body: None,
                        timings: [physics_s, 0.0, 0.0],
                    })
                    .map_err(|err| format!("Simulator error: {err}"));
                Err((reply, answer))
            }
        }
    }

    /// Builds the observations of a batch — with images, each task's in one rendering pass, its
    /// time shared equally — and answers them.
    fn observe_all(&mut self, mut observing: Vec<Observing>) -> Vec<Answered> {
        let mut images: Vec<Result<Option<[render::Image; 2]>, SimFailure>> =
            observing.iter().map(|_| Ok(None)).collect();
        let mut render_s = vec![0.0; observing.len()];
        if self.options.images {
            // The batch's observations by env id, in order of first appearance.
            let mut groups: Vec<(Task, Vec<usize>)> = Vec::new();
            for (i, o) in observing.iter().enumerate() {
                match groups.iter_mut().find(|(task, _)| *task == o.env.task()) {
                    Some((_, members)) => members.push(i),
                    None => groups.push((o.env.task(), vec![i])),
                }
            }
            for (task, members) in groups {
                let t = Instant::now();
                let rendered = self.render_pass(task, &mut observing, &members);
                let share = t.elapsed().as_secs_f64() / members.len() as f64;
                match rendered {
                    Ok(pass) => {
                        for (&i, pair) in members.iter().zip(pass) {
                            images[i] = Ok(Some(pair));
                            render_s[i] = share;
                        }
                    }
                    Err(err) => {
                        for &i in &members {
                            images[i] = Err(err.clone());
                        }
                    }
                }
            }
        }
        observing
            .into_iter()
            .zip(images.into_iter().zip(render_s))
            .map(|(o, (images, render_s))| {
                let t = Instant::now();
                let body = images.and_then(|images| {
                    let privileged = self.options.privileged_state.then_some(&o.state[..]);
                    encode_observation(&o.env.proprio(), images.as_ref(), privileged)
                });
                let encode_s = t.elapsed().as_secs_f64();
                let answer = match body {
                    Ok(body) => {
                        self.running.insert(o.id, o.env);
                        Ok(SimAnswer {
                            reward: o.reward,
                            success: o.success,
                            body: Some(body.into()),
                            timings: [o.physics_s, render_s, encode_s],
                        })
                    }
                    Err(err) => {
                        if o.is_reset {
                            self.idle.entry(o.env.task()).or_default().push(o.env);
                        } else {
                            self.running.insert(o.id, o.env);
                        }
                        Err(err)
                    }
                };
                (o.reply, answer)
            })
            .collect()
    }

    /// Renders the observations `members` of `observing` (all of `task`) in one pass.
    fn render_pass(
        &mut self,
        task: Task,
        observing: &mut [Observing],
        members: &[usize],
    ) -> Result<Vec<[render::Image; 2]>, SimFailure> {
        if !self.cameras.contains_key(&task) {
            let scene = self
                .scenes
                .get(&task)
                .ok_or("Render error: scene not loaded")?;
            let cams =
                BatchCameras::new(scene.model()).map_err(|err| format!("Render error: {err}"))?;
            self.cameras.insert(task, cams);
        }
        let cams = self.cameras.get_mut(&task).expect("inserted above");
        let mut sims: Vec<&mut crate::sim::mj::Sim> = observing
            .iter_mut()
            .enumerate()
            .filter(|(i, _)| members.contains(i))
            .map(|(_, o)| o.env.sim())
            .collect();
        cams.render(&mut sims)
            .map_err(|err| format!("Render error: {err}"))
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
