//! One MetaWorld environment (docs/environments.md §3–8): runtime edits, the per-episode overlay,
//! the reset sequence, the step, the 39-number state and the proprio reading.
//!
//! The environments of one thread share a [`Scene`] per task (one model, see mj.rs), each with its
//! own data. An environment writes its whole overlay into the shared model, always from the
//! scene's pristine values, at every reset, before every step and before rendering
//! (docs/environments.md §7.3), so neither another environment on the scene nor an earlier episode
//! is visible to it.

use std::cell::RefCell;
use std::rc::Rc;

use mujoco_rs::prelude::{MjModel, MjtState};

use super::mj::{self, Obj, SharedModel, Sim, EQ_DATA_WIDTH};
use super::reward::{self, EpisodeConstants, Frame};
use super::rng::EpisodeDraw;
use super::task::{clip3, Task, HAND_BOUNDS, MOCAP_BOUNDS};

/// Steps per episode (MetaWorld's own limit).
pub const MAX_STEPS: u32 = 500;
/// Length of the privileged state.
pub const STATE_LEN: usize = 39;
/// Physics steps per environment step.
const FRAME_SKIP: usize = 5;
/// Hand reset iterations.
const HAND_RESET_STEPS: usize = 50;
/// The mocap orientation written every step (w, x, y, z).
const MOCAP_QUAT: [f64; 4] = [1.0, 0.0, 1.0, 0.0];

/// A failure of the simulator itself (an infrastructure failure, never the miner's).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct SimError(pub String);

/// The miner-facing proprioception (docs/miner-protocol.md §3).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Proprio {
    /// Hand body world position.
    pub ee_pos: [f64; 3],
    /// Hand orientation, x, y, z, w.
    pub ee_quat: [f64; 4],
    /// Hand linear velocity, world axes.
    pub ee_vel_lin: [f64; 3],
    /// Hand angular velocity, world axes.
    pub ee_vel_ang: [f64; 3],
    /// Finger opening in [0, 1], 1 = open.
    pub gripper: [f64; 1],
}

/// The result of one step.
#[derive(Debug, Clone, PartialEq)]
pub struct StepOutcome {
    /// Reward in [0, 10].
    pub reward: f64,
    /// Success at this step.
    pub success: bool,
    /// The episode reached its last step.
    pub truncated: bool,
}

/// Where the object slots of the state come from.
#[derive(Debug, Clone, Copy)]
enum ObjectSource {
    /// Body `obj`, orientation from geom `objGeom`.
    Puck { body: usize, geom: usize },
    /// Geom `handle`.
    DoorHandle { geom: usize },
    /// Body `drawer_link` (+ offset), stored quaternion (open) or zeros (close).
    Drawer { body: usize, closing: bool },
    /// Body `button` + (0, 0, 0.193), stored quaternion.
    Button { body: usize },
    /// Site `pegGrasp`.
    Peg { site: usize },
}

/// Named things an environment reads, resolved once per model.
#[derive(Debug, Clone)]
struct Ids {
    hand: usize,
    rightclaw: usize,
    leftclaw: usize,
    leftpad: usize,
    rightpad: usize,
    right_ee: usize,
    left_ee: usize,
    goal_site: Option<usize>,
    object: ObjectSource,
    /// qpos / dof address of the object joint (free joint or hinge / slide).
    object_qpos: usize,
    object_dof: usize,
    /// The body the placement moves before the hand reset (door, drawer, box).
    placed_body: Option<usize>,
    /// Peg-insert: `pegHead` and the four collision-box corner sites; button: `hole`, `buttonStart`.
    extra_sites: Vec<usize>,
}

impl Ids {
    fn resolve(sim: &Sim, task: Task) -> Result<Self, String> {
        let body = |n: &str| sim.id(Obj::mjOBJ_BODY, n);
        let site = |n: &str| sim.id(Obj::mjOBJ_SITE, n);
        let geom = |n: &str| sim.id(Obj::mjOBJ_GEOM, n);
        let (object, (object_qpos, object_dof), placed_body, extra_sites) = match task {
            Task::Reach | Task::Push | Task::PickPlace => (
                ObjectSource::Puck {
                    body: body("obj")?,
                    geom: geom("objGeom")?,
                },
                sim.joint_addr("objjoint")?,
                None,
                vec![],
            ),
            Task::DoorOpen => (
                ObjectSource::DoorHandle {
                    geom: geom("handle")?,
                },
                sim.joint_addr("doorjoint")?,
                Some(body("door")?),
                vec![],
            ),
            Task::DrawerOpen | Task::DrawerClose => (
                ObjectSource::Drawer {
                    body: body("drawer_link")?,
                    closing: task == Task::DrawerClose,
                },
                sim.joint_addr("goal_slidey")?,
                Some(body("drawer")?),
                vec![],
            ),
            Task::ButtonPress => (
                ObjectSource::Button {
                    body: body("button")?,
                },
                sim.joint_addr("btnbox_joint")?,
                Some(body("box")?),
                vec![site("hole")?, site("buttonStart")?],
            ),
            Task::PegInsert => (
                ObjectSource::Peg {
                    site: site("pegGrasp")?,
                },
                sim.body_joint_addr(body("peg")?)?,
                Some(body("box")?),
                vec![
                    site("pegHead")?,
                    site("bottom_right_corner_collision_box_1")?,
                    site("top_left_corner_collision_box_1")?,
                    site("bottom_right_corner_collision_box_2")?,
                    site("top_left_corner_collision_box_2")?,
                ],
            ),
        };
        Ok(Self {
            hand: body("hand")?,
            rightclaw: body("rightclaw")?,
            leftclaw: body("leftclaw")?,
            leftpad: body("leftpad")?,
            rightpad: body("rightpad")?,
            right_ee: site("rightEndEffector")?,
            left_ee: site("leftEndEffector")?,
            goal_site: if task == Task::ButtonPress {
                None
            } else {
                Some(site("goal")?)
            },
            object,
            object_qpos,
            object_dof,
            placed_body,
            extra_sites,
        })
    }
}

/// A task's compiled scene with the runtime edits of docs/environments.md §3, shared by the
/// environments of one thread, and the pristine values of what an episode overlays.
pub struct Scene {
    shared: SharedModel,
    geom_friction: Vec<f64>,
    dof_damping: Vec<f64>,
    /// The hand reset's result, once computed by one of the scene's environments, for tasks where it
    /// does not depend on the episode: an executor's K environments of a task then each skip it
    /// from their first episode on, as a lone environment does from its second.
    hand_cache: RefCell<Option<HandResetCache>>,
}

impl Scene {
    /// Edits and shares a compiled scene.
    pub fn new(mut model: MjModel) -> Result<Rc<Self>, SimError> {
        let arrays = mj::model_arrays(&mut model);
        if arrays.eq_data.len() < EQ_DATA_WIDTH {
            return Err(SimError("the scene has no mocap weld".into()));
        }
        // The mocap weld as MetaWorld writes it: 11 values; entry 11 (new in 3.17) stays compiled.
        arrays.eq_data[..11]
            .copy_from_slice(&[0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 5.0]);
        let (geom_friction, dof_damping) =
            (arrays.geom_friction.to_vec(), arrays.dof_damping.to_vec());
        drop(arrays);
        // MuJoCo marks the bounding volumes each collision pass visits, for drawing them, and first
        // clears that mark array: one byte per volume of every mesh, 134 KB for pick-place, six times
        // an environment step. Nothing here draws volumes, and with an executor's interleaved
        // episodes that clearing pushed the other episodes' data out of the cache (physics is
        // unchanged: the flag is read by the collision pass only to write the marks).
        // SAFETY: a plain integer of the model's visual options, written before the model is shared.
        unsafe { model.ffi_mut() }.vis.global.bvactive = 0;
        Ok(Rc::new(Self {
            shared: SharedModel::new(model),
            geom_friction,
            dof_damping,
            hand_cache: RefCell::new(None),
        }))
    }

    /// The edited model (for the renderer).
    pub fn model(&self) -> &MjModel {
        self.shared.model()
    }
}

/// The hand reset's result for tasks where it does not depend on the episode.
#[derive(Debug, Clone)]
struct HandResetCache {
    state: Box<[f64]>,
    init_tcp: [f64; 3],
    obj_z: f64,
}

/// One MetaWorld environment: its data on a shared scene, and the current episode.
pub struct Env {
    task: Task,
    sim: Sim,
    ids: Ids,
    scene: Rc<Scene>,
    /// The friction and damping scales in force (nominal during the reset's settling).
    scales: (f64, f64),
    draw: EpisodeDraw,
    consts: EpisodeConstants,
    prev: [f64; 18],
    steps: u32,
    started: bool,
}

const INTEGRATION: u32 = MjtState::mjSTATE_INTEGRATION as u32;

impl Env {
    /// An environment on a scene of its own: a copy of `model` (the compiled scene of `task`).
    pub fn new(task: Task, model: &MjModel) -> Result<Self, SimError> {
        Self::on_scene(task, Scene::new(model.clone())?)
    }

    /// An environment on a shared scene of `task`.
    pub fn on_scene(task: Task, scene: Rc<Scene>) -> Result<Self, SimError> {
        let sim = Sim::new(&scene.shared);
        let ids = Ids::resolve(&sim, task).map_err(SimError)?;
        Ok(Self {
            task,
            sim,
            ids,
            scene,
            scales: (1.0, 1.0),
            draw: EpisodeDraw::nominal(vec![]),
            consts: EpisodeConstants::default(),
            prev: [0.0; 18],
            steps: 0,
            started: false,
        })
    }

    /// The task.
    pub fn task(&self) -> Task {
        self.task
    }

    /// The draws of the current episode.
    pub fn draw(&self) -> &EpisodeDraw {
        &self.draw
    }

    /// Steps taken in the current episode.
    pub fn steps(&self) -> u32 {
        self.steps
    }

    /// The simulator, for rendering the current episode, with this episode's overlay in the
    /// shared model (docs/environments.md §7.3).
    pub fn sim(&mut self) -> &mut Sim {
        self.apply_overlay();
        &mut self.sim
    }

    /// Starts an episode from a sim seed; returns the unclipped reset state.
    pub fn reset(&mut self, sim_seed: u64) -> Result<[f64; STATE_LEN], SimError> {
        self.reset_with(EpisodeDraw::new(self.task, sim_seed))
    }

    /// Starts an episode with explicit draws (recorded placements, nominal physics).
    pub fn reset_with(&mut self, draw: EpisodeDraw) -> Result<[f64; STATE_LEN], SimError> {
        let (lo, _) = self.task.placement_ranges();
        if draw.placement.len() != lo.len() {
            return Err(SimError(format!(
                "placement of {} needs {} numbers, got {}",
                self.task.env_id(),
                lo.len(),
                draw.placement.len()
            )));
        }
        self.draw = draw;
        // Step 1: the placement overlay, goal site included, with nominal physics.
        self.consts.target = self.placement_target(None);
        self.write_overlay(1.0, 1.0);
        let hand_init = self.task.hand_init();
        let cacheable = self.task.hand_reset_cacheable();
        let cached = match self.scene.hand_cache.borrow().as_ref() {
            Some(cache) if cacheable => {
                self.sim
                    .data()
                    .set_state(&cache.state, INTEGRATION)
                    .map_err(|e| SimError(e.to_string()))?;
                Some((cache.init_tcp, cache.obj_z))
            }
            _ => None,
        };
        let (init_tcp, settled_obj_z) = match cached {
            Some(cached) => cached,
            None => {
                self.sim.data().reset();
                self.hand_reset(hand_init);
                let init_tcp = self.tcp();
                let obj_z = match self.ids.object {
                    ObjectSource::Puck { body, .. } => self.sim.xpos(body)[2],
                    _ => 0.0,
                };
                if cacheable {
                    *self.scene.hand_cache.borrow_mut() = Some(HandResetCache {
                        state: self.sim.data().state(INTEGRATION),
                        init_tcp,
                        obj_z,
                    });
                }
                (init_tcp, obj_z)
            }
        };
        self.consts = EpisodeConstants {
            init_tcp,
            hand_init,
            target: self.placement_target(Some(settled_obj_z)),
            ..Default::default()
        };
        self.place(settled_obj_z);
        let cur = self.current();
        self.prev = cur;
        self.steps = 0;
        self.started = true;
        self.write_overlay(self.draw.friction_scale, self.draw.damping_scale);
        let state = self.assemble(&cur, &cur, self.consts.target);
        if !state.iter().all(|v| v.is_finite()) || !self.sim.state_is_finite() {
            return Err(SimError("non-finite value after reset".into()));
        }
        Ok(state)
    }

    /// Sets the physics scales in force and writes the overlay.
    fn write_overlay(&mut self, friction_scale: f64, damping_scale: f64) {
        self.scales = (friction_scale, damping_scale);
        self.apply_overlay();
    }

    /// Writes this environment's overlay into the shared model, always from pristine values: the
    /// physics scales in force, the episode's placement and the goal site.
    fn apply_overlay(&mut self) {
        let (task, ids, scene, v) = (self.task, &self.ids, &self.scene, &self.draw.placement);
        let ((friction_scale, damping_scale), goal) = (self.scales, self.consts.target);
        let arrays = self.sim.overlay_mut();
        for (out, p) in arrays.geom_friction.iter_mut().zip(&scene.geom_friction) {
            *out = p * friction_scale;
        }
        for (out, p) in arrays.dof_damping.iter_mut().zip(&scene.dof_damping) {
            *out = p * damping_scale;
        }
        // This episode's goal from reset step 1 on, so every image shows it (sites never touch
        // the physics).
        if let Some(s) = ids.goal_site {
            arrays.site_pos[3 * s..3 * s + 3].copy_from_slice(&goal);
        }
        if let Some(b) = ids.placed_body {
            let pos = match task {
                Task::PegInsert => [v[3], v[4], v[5]],
                _ => [v[0], v[1], v[2]],
            };
            arrays.body_pos[3 * b..3 * b + 3].copy_from_slice(&pos);
        }
    }

    fn hand_reset(&mut self, hand_init: [f64; 3]) {
        for _ in 0..HAND_RESET_STEPS {
            self.sim.mocap_pos_mut().copy_from_slice(&hand_init);
            self.sim.mocap_quat_mut().copy_from_slice(&MOCAP_QUAT);
            self.sim.ctrl_mut().copy_from_slice(&[-1.0, 1.0]);
            let data = self.sim.data();
            for _ in 0..FRAME_SKIP {
                data.step();
            }
            data.rne_post_constraint();
        }
    }

    /// MetaWorld's `_set_obj_xyz`: free-joint position, zero velocity, then `mj_forward`.
    fn set_object_position(&mut self, pos: [f64; 3]) {
        let (q, d) = (self.ids.object_qpos, self.ids.object_dof);
        self.sim.qpos_mut()[q..q + 3].copy_from_slice(&pos);
        self.sim.qvel_mut()[d..d + 6].fill(0.0);
        self.sim.data().forward();
    }

    /// The episode's goal (docs/environments.md §8.0, §8.9), from the placement alone but for push,
    /// whose height is the object's settled height (the placement's own goal height until it is
    /// known), and button-press, whose target the tail reads from the scene.
    fn placement_target(&self, settled_obj_z: Option<f64>) -> [f64; 3] {
        let v = &self.draw.placement;
        match self.task {
            Task::Reach | Task::PickPlace => [v[3], v[4], v[5]],
            Task::Push => [v[3], v[4], settled_obj_z.unwrap_or(v[5])],
            Task::DoorOpen => [v[0] - 0.3, v[1] - 0.45, v[2]],
            Task::DrawerOpen => [v[0], v[1] - 0.36, v[2] + 0.09],
            Task::DrawerClose => [v[0], v[1] - 0.16, v[2] + 0.09],
            Task::ButtonPress => [0.0; 3],
            Task::PegInsert => [v[3] + 0.03, v[4], v[5] + 0.13],
        }
    }

    /// The task's placement tail (docs/environments.md §8.0), after `consts.target` is set. The
    /// goal site is written first, so the tail's `mj_forward` already places it.
    fn place(&mut self, settled_obj_z: f64) {
        self.apply_overlay();
        let v = self.draw.placement.clone();
        let v3 = |i: usize| [v[i], v[i + 1], v[i + 2]];
        match self.task {
            Task::Reach | Task::PickPlace => {
                self.consts.obj_init = v3(0);
                self.set_object_position(v3(0));
            }
            Task::Push => {
                self.consts.obj_init = [v[0], v[1], settled_obj_z];
                self.set_object_position(self.consts.obj_init);
            }
            Task::DoorOpen => {
                let (q, d) = (self.ids.object_qpos, self.ids.object_dof);
                self.sim.qpos_mut()[q] = 0.0;
                self.sim.qvel_mut()[d] = 0.0;
                self.sim.data().forward();
            }
            Task::DrawerOpen => {}
            Task::DrawerClose => {
                let q = self.ids.object_qpos;
                self.sim.qpos_mut()[q] = -0.15;
                self.sim.data().forward();
                let obj = self.current();
                self.consts.obj_init = [obj[4], obj[5], obj[6]];
            }
            Task::ButtonPress => {
                self.sim.data().forward();
                let (hole, start) = (self.ids.extra_sites[0], self.ids.extra_sites[1]);
                let target = self.sim.site_xpos(hole);
                self.consts.target = target;
                self.consts.press_init = (target[2] - self.sim.site_xpos(start)[2]).abs();
            }
            Task::PegInsert => {
                self.consts.obj_init = v3(0);
                self.consts.head_init = self.sim.site_xpos(self.ids.extra_sites[0]);
                self.set_object_position(v3(0));
            }
        }
    }

    fn tcp(&self) -> [f64; 3] {
        let (r, l) = (
            self.sim.site_xpos(self.ids.right_ee),
            self.sim.site_xpos(self.ids.left_ee),
        );
        std::array::from_fn(|i| (r[i] + l[i]) / 2.0)
    }

    /// The 18 "current" numbers of the state (unclipped).
    fn current(&self) -> [f64; 18] {
        let s = &self.sim;
        let mut cur = [0.0; 18];
        cur[0..3].copy_from_slice(&s.xpos(self.ids.hand));
        let (r, l) = (s.xpos(self.ids.rightclaw), s.xpos(self.ids.leftclaw));
        let gap = ((r[0] - l[0]).powi(2) + (r[1] - l[1]).powi(2) + (r[2] - l[2]).powi(2)).sqrt();
        cur[3] = (gap / 0.1).clamp(0.0, 1.0);
        let (pos, quat): ([f64; 3], [f64; 4]) = match self.ids.object {
            ObjectSource::Puck { body, geom } => (s.xpos(body), quat_from_mat(&s.geom_xmat(geom))),
            ObjectSource::DoorHandle { geom } => {
                (s.geom_xpos(geom), quat_from_mat(&s.geom_xmat(geom)))
            }
            ObjectSource::Drawer { body, closing } => {
                let p = s.xpos(body);
                if closing {
                    ([p[0], p[1] - 0.16, p[2] + 0.05], [0.0; 4])
                } else {
                    ([p[0], p[1] - 0.16, p[2]], s.xquat(body))
                }
            }
            ObjectSource::Button { body } => {
                let p = s.xpos(body);
                ([p[0], p[1], p[2] + 0.193], s.xquat(body))
            }
            ObjectSource::Peg { site } => (s.site_xpos(site), quat_from_mat(&s.site_xmat(site))),
        };
        cur[4..7].copy_from_slice(&pos);
        cur[7..11].copy_from_slice(&quat);
        cur
    }

    fn assemble(&self, cur: &[f64; 18], prev: &[f64; 18], goal: [f64; 3]) -> [f64; STATE_LEN] {
        let mut s = [0.0; STATE_LEN];
        s[..18].copy_from_slice(cur);
        s[18..36].copy_from_slice(prev);
        s[36..].copy_from_slice(&goal);
        s
    }

    /// One environment step with a native action `[dx, dy, dz, g]` (docs/environments.md §4.2);
    /// returns the clipped state and the outcome.
    pub fn step(&mut self, action: [f32; 4]) -> Result<([f64; STATE_LEN], StepOutcome), SimError> {
        if !self.started {
            return Err(SimError("step before reset".into()));
        }
        if self.steps >= MAX_STEPS {
            return Err(SimError(format!(
                "step after the episode's {MAX_STEPS} steps"
            )));
        }
        self.apply_overlay();
        let a = action.map(|x| if x.is_nan() { 0.0 } else { x.clamp(-1.0, 1.0) });
        let mocap = self.sim.mocap_pos_mut();
        for i in 0..3 {
            mocap[i] =
                (mocap[i] + f64::from(a[i] * 0.01f32)).clamp(MOCAP_BOUNDS.0[i], MOCAP_BOUNDS.1[i]);
        }
        self.sim.mocap_quat_mut().copy_from_slice(&MOCAP_QUAT);
        let g = f64::from(a[3]);
        self.sim.ctrl_mut().copy_from_slice(&[g, -g]);
        let data = self.sim.data();
        for _ in 0..FRAME_SKIP {
            data.step();
        }
        data.rne_post_constraint();
        self.steps += 1;
        let truncated = self.steps == MAX_STEPS;
        self.sim.data().forward();
        if !self.sim.state_is_finite() {
            return Err(SimError(format!(
                "non-finite simulator state at step {}",
                self.steps - 1
            )));
        }
        let cur = self.current();
        let mut state = self.assemble(&cur, &self.prev, self.consts.target);
        self.prev = cur;
        for base in [0, 18] {
            let hand = clip3(
                [state[base], state[base + 1], state[base + 2]],
                &HAND_BOUNDS,
            );
            state[base..base + 3].copy_from_slice(&hand);
            state[base + 3] = state[base + 3].clamp(-1.0, 1.0);
        }
        let goal = clip3(self.consts.target, &self.task.goal_bounds());
        state[36..].copy_from_slice(&goal);
        let frame = self.frame(&state, g);
        let (reward, success) = reward::evaluate(self.task, &frame, &self.consts)
            .map_err(|e| SimError(format!("reward of step {}: {}", self.steps - 1, e.0)))?;
        if !state.iter().all(|v| v.is_finite()) || !reward.is_finite() {
            return Err(SimError(format!(
                "non-finite observation at step {}",
                self.steps - 1
            )));
        }
        Ok((
            state,
            StepOutcome {
                reward,
                success,
                truncated,
            },
        ))
    }

    fn frame(&self, state: &[f64; STATE_LEN], grip: f64) -> Frame {
        let s = &self.sim;
        let mut f = Frame {
            state: state.to_vec(),
            tcp: self.tcp(),
            leftpad: s.xpos(self.ids.leftpad),
            rightpad: s.xpos(self.ids.rightpad),
            grip,
            ..Default::default()
        };
        match self.task {
            Task::DoorOpen => f.door_angle = s.qpos()[self.ids.object_qpos],
            Task::PegInsert => {
                let e = &self.ids.extra_sites;
                f.peg_head = s.site_xpos(e[0]);
                f.box_corners = std::array::from_fn(|i| s.site_xpos(e[i + 1]));
            }
            _ => {}
        }
        f
    }

    /// The proprioception of the current data (docs/miner-protocol.md §3).
    pub fn proprio(&self) -> Proprio {
        let s = &self.sim;
        let q = s.xquat(self.ids.hand);
        let v = s.body_velocity(self.ids.hand);
        let opening = self.current()[3];
        Proprio {
            ee_pos: s.xpos(self.ids.hand),
            ee_quat: [q[1], q[2], q[3], q[0]],
            ee_vel_lin: [v[3], v[4], v[5]],
            ee_vel_ang: [v[0], v[1], v[2]],
            gripper: [opening],
        }
    }

    /// The task configuration sent to miners (docs/miner-protocol.md §2.1), with the public seed.
    pub fn task_config(&self, seed: i64) -> serde_json::Value {
        task_config(self.task, seed)
    }
}

/// The task configuration sent to miners (docs/miner-protocol.md §2.1), with the public seed.
pub fn task_config(task: Task, seed: i64) -> serde_json::Value {
    let id = task.env_id();
    serde_json::json!({
        "env_id": id, "env_name": kinitro_actors::envs::family(id),
        "task_name": kinitro_actors::envs::REGISTRY[task as usize].1, "seed": seed, "task_id": seed,
    })
}

/// Quaternion (x, y, z, w) of a row-major rotation matrix by the Markley method as SciPy does it.
pub fn quat_from_mat(m: &[f64; 9]) -> [f64; 4] {
    let at = |r: usize, c: usize| m[3 * r + c];
    let trace = at(0, 0) + at(1, 1) + at(2, 2);
    let cands = [at(0, 0), at(1, 1), at(2, 2), trace];
    let mut best = 0;
    for (i, v) in cands.iter().enumerate() {
        if *v > cands[best] {
            best = i;
        }
    }
    let mut q = [0.0; 4];
    if best < 3 {
        let (i, j, k) = (best, (best + 1) % 3, (best + 2) % 3);
        q[i] = 1.0 - trace + 2.0 * at(i, i);
        q[j] = at(j, i) + at(i, j);
        q[k] = at(k, i) + at(i, k);
        q[3] = at(k, j) - at(j, k);
    } else {
        q = [
            at(2, 1) - at(1, 2),
            at(0, 2) - at(2, 0),
            at(1, 0) - at(0, 1),
            1.0 + trace,
        ];
    }
    let n = q.iter().map(|v| v * v).sum::<f64>().sqrt();
    q.map(|v| v / n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markley_identity_and_rotations() {
        assert_eq!(
            quat_from_mat(&[1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]),
            [0.0, 0.0, 0.0, 1.0]
        );
        // 90° about z: x → y.
        let q = quat_from_mat(&[0.0, -1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0]);
        let h = std::f64::consts::FRAC_1_SQRT_2;
        assert!(
            q.iter()
                .zip([0.0, 0.0, h, h])
                .all(|(a, b)| (a - b).abs() < 1e-12),
            "{q:?}"
        );
        // 180° about x: the M00 branch.
        let q = quat_from_mat(&[1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, -1.0]);
        assert_eq!(q, [1.0, 0.0, 0.0, 0.0]);
    }
}
