//! The one place that touches MuJoCo's raw arrays: a model shared by the simulations of one thread,
//! each simulation's data, and typed, bounds-checked views of the few fields the environments read
//! and write (docs/environments.md §3–5).
//!
//! Why a shared model: a compiled MetaWorld scene is about 20 MB (meshes and textures), so a copy
//! per episode slot costs gigabytes and tens of milliseconds each. The simulations of one thread
//! share one model per scene instead, and each environment writes its own overlay values into the
//! shared arrays before each of its MuJoCo calls (`Env` in env.rs).

use std::cell::{RefCell, RefMut};
use std::rc::Rc;

use mujoco_rs::mujoco_c::{mjModel, mjNEQDATA, mjtNum};
use mujoco_rs::prelude::{MjData, MjModel, MjtObjBase};

/// Object kinds looked up by name.
pub use mujoco_rs::prelude::MjtObjBase as Obj;

/// A compiled model shared by the simulations of one thread, with the lock that keeps its overlay
/// arrays written by one simulation at a time.
#[derive(Clone)]
pub struct SharedModel {
    model: Rc<MjModel>,
    writing: Rc<RefCell<()>>,
}

impl SharedModel {
    /// Shares `model`.
    pub fn new(model: MjModel) -> Self {
        Self {
            model: Rc::new(model),
            writing: Rc::default(),
        }
    }

    /// The model.
    pub fn model(&self) -> &MjModel {
        &self.model
    }
}

/// One simulation's data on a shared model.
pub struct Sim {
    data: MjData<Rc<MjModel>>,
    writing: Rc<RefCell<()>>,
}

/// Reads `N` consecutive numbers of row `row` of a raw MuJoCo array of `rows` rows.
///
/// # Safety
/// `ptr` must point to at least `rows * N` numbers.
unsafe fn row<const N: usize>(ptr: *const mjtNum, rows: i64, row: usize) -> [f64; N] {
    assert!((row as i64) < rows, "row {row} out of {rows}");
    let mut out = [0.0; N];
    out.copy_from_slice(unsafe { std::slice::from_raw_parts(ptr.add(row * N), N) });
    out
}

/// A mutable slice over a whole raw MuJoCo array.
///
/// # Safety
/// `ptr` must point to `len` numbers that nothing else reads or writes during `'a`.
unsafe fn slice_mut<'a>(ptr: *mut mjtNum, len: i64) -> &'a mut [f64] {
    unsafe { std::slice::from_raw_parts_mut(ptr, len as usize) }
}

/// The overlay arrays of a raw model.
///
/// # Safety
/// Nothing else may read or write these arrays of `m` while the views live.
unsafe fn arrays<'a>(m: &mjModel) -> ModelArrays<'a> {
    // SAFETY: each pointer holds the number of values given (MuJoCo's layout).
    unsafe {
        ModelArrays {
            body_pos: slice_mut(m.body_pos, m.nbody * 3),
            site_pos: slice_mut(m.site_pos, m.nsite * 3),
            geom_friction: slice_mut(m.geom_friction, m.ngeom * 3),
            dof_damping: slice_mut(m.dof_damping, m.nv),
            eq_data: slice_mut(m.eq_data, m.neq * mjNEQDATA as i64),
            _writing: None,
        }
    }
}

/// The overlay arrays of a model not yet shared.
pub fn model_arrays(model: &mut MjModel) -> ModelArrays<'_> {
    // SAFETY: the model is borrowed mutably for the views' lifetime.
    unsafe { arrays(model.ffi()) }
}

impl Sim {
    /// Fresh data on a shared model.
    pub fn new(shared: &SharedModel) -> Self {
        Self {
            data: MjData::new(Rc::clone(&shared.model)),
            writing: Rc::clone(&shared.writing),
        }
    }

    /// The model.
    pub fn model(&self) -> &MjModel {
        self.data.model()
    }

    /// The data, for MuJoCo calls (step, forward, rendering).
    pub fn data(&mut self) -> &mut MjData<Rc<MjModel>> {
        &mut self.data
    }

    /// The id of a named object, or an error naming it.
    pub fn id(&self, kind: MjtObjBase, name: &str) -> Result<usize, String> {
        self.model()
            .name_to_id(kind, name)
            .ok_or_else(|| format!("the scene has no {kind:?} named '{name}'"))
    }

    /// The first qpos address and first dof address of a body's first joint.
    pub fn body_joint_addr(&self, body: usize) -> Result<(usize, usize), String> {
        let m = self.model().ffi();
        assert!((body as i64) < m.nbody);
        // SAFETY: body < nbody; the joint id is checked against njnt before indexing.
        unsafe {
            let jnt = *m.body_jntadr.add(body);
            if jnt < 0 || jnt as i64 >= m.njnt {
                return Err(format!("body {body} has no joint"));
            }
            Ok((
                *m.jnt_qposadr.add(jnt as usize) as usize,
                *m.jnt_dofadr.add(jnt as usize) as usize,
            ))
        }
    }

    /// The qpos and dof addresses of a named joint.
    pub fn joint_addr(&self, name: &str) -> Result<(usize, usize), String> {
        let j = self.id(MjtObjBase::mjOBJ_JOINT, name)?;
        let m = self.model().ffi();
        // SAFETY: j < njnt (name lookup).
        unsafe {
            Ok((
                *m.jnt_qposadr.add(j) as usize,
                *m.jnt_dofadr.add(j) as usize,
            ))
        }
    }

    /// World position of a body.
    pub fn xpos(&self, body: usize) -> [f64; 3] {
        // SAFETY: xpos holds nbody × 3 numbers.
        unsafe { row(self.data.ffi().xpos, self.model().ffi().nbody, body) }
    }

    /// World orientation of a body (w, x, y, z).
    pub fn xquat(&self, body: usize) -> [f64; 4] {
        // SAFETY: xquat holds nbody × 4 numbers.
        unsafe { row(self.data.ffi().xquat, self.model().ffi().nbody, body) }
    }

    /// World position of a geom.
    pub fn geom_xpos(&self, geom: usize) -> [f64; 3] {
        // SAFETY: geom_xpos holds ngeom × 3 numbers.
        unsafe { row(self.data.ffi().geom_xpos, self.model().ffi().ngeom, geom) }
    }

    /// World rotation matrix of a geom (row-major).
    pub fn geom_xmat(&self, geom: usize) -> [f64; 9] {
        // SAFETY: geom_xmat holds ngeom × 9 numbers.
        unsafe { row(self.data.ffi().geom_xmat, self.model().ffi().ngeom, geom) }
    }

    /// World position of a site.
    pub fn site_xpos(&self, site: usize) -> [f64; 3] {
        // SAFETY: site_xpos holds nsite × 3 numbers.
        unsafe { row(self.data.ffi().site_xpos, self.model().ffi().nsite, site) }
    }

    /// World rotation matrix of a site (row-major).
    pub fn site_xmat(&self, site: usize) -> [f64; 9] {
        // SAFETY: site_xmat holds nsite × 9 numbers.
        unsafe { row(self.data.ffi().site_xmat, self.model().ffi().nsite, site) }
    }

    /// World position and rotation matrix (row-major) of a camera, and its vertical field of view.
    pub fn camera(&self, cam: usize) -> ([f64; 3], [f64; 9], f64) {
        let (d, m) = (self.data.ffi(), self.model().ffi());
        let n = m.ncam;
        // SAFETY: cam_xpos / cam_xmat / cam_fovy hold ncam × 3 / 9 / 1 numbers.
        unsafe {
            (
                row(d.cam_xpos, n, cam),
                row(d.cam_xmat, n, cam),
                row::<1>(m.cam_fovy, n, cam)[0],
            )
        }
    }

    /// Body velocity (angular, linear) at the body frame origin, world-aligned axes.
    pub fn body_velocity(&self, body: usize) -> [f64; 6] {
        self.data
            .object_velocity(MjtObjBase::mjOBJ_BODY, body, false)
    }

    /// Joint positions.
    pub fn qpos(&self) -> &[f64] {
        let n = self.model().ffi().nq;
        // SAFETY: qpos holds nq numbers.
        unsafe { std::slice::from_raw_parts(self.data.ffi().qpos, n as usize) }
    }

    /// Joint positions, mutable.
    pub fn qpos_mut(&mut self) -> &mut [f64] {
        let n = self.model().ffi().nq;
        // SAFETY: qpos holds nq numbers; `self` is borrowed mutably.
        unsafe { slice_mut(self.data.ffi_mut().qpos, n) }
    }

    /// Joint velocities, mutable.
    pub fn qvel_mut(&mut self) -> &mut [f64] {
        let n = self.model().ffi().nv;
        // SAFETY: qvel holds nv numbers.
        unsafe { slice_mut(self.data.ffi_mut().qvel, n) }
    }

    /// Position of the (single) mocap body, mutable.
    pub fn mocap_pos_mut(&mut self) -> &mut [f64] {
        assert!(self.model().ffi().nmocap >= 1);
        // SAFETY: nmocap ≥ 1, so mocap_pos holds at least 3 numbers.
        unsafe { slice_mut(self.data.ffi_mut().mocap_pos, 3) }
    }

    /// Orientation of the (single) mocap body, mutable.
    pub fn mocap_quat_mut(&mut self) -> &mut [f64] {
        assert!(self.model().ffi().nmocap >= 1);
        // SAFETY: nmocap ≥ 1, so mocap_quat holds at least 4 numbers.
        unsafe { slice_mut(self.data.ffi_mut().mocap_quat, 4) }
    }

    /// Actuator controls, mutable.
    pub fn ctrl_mut(&mut self) -> &mut [f64] {
        let n = self.model().ffi().nu;
        // SAFETY: ctrl holds nu numbers.
        unsafe { slice_mut(self.data.ffi_mut().ctrl, n) }
    }

    /// Every number of the data MuJoCo may have turned non-finite in a step (qpos, qvel, qacc).
    pub fn state_is_finite(&self) -> bool {
        let (d, m) = (self.data.ffi(), self.model().ffi());
        // SAFETY: qpos holds nq numbers, qvel and qacc nv numbers.
        unsafe {
            [(d.qpos, m.nq), (d.qvel, m.nv), (d.qacc, m.nv)]
                .iter()
                .all(|(p, n)| {
                    std::slice::from_raw_parts(*p, *n as usize)
                        .iter()
                        .all(|v| v.is_finite())
                })
        }
    }

    /// The model arrays an episode overlays (docs/environments.md §7.3), mutable. They belong to
    /// the shared model: what is written here is seen by every simulation on it until overwritten.
    ///
    /// No MuJoCo call on any simulation of this model may run while the views live.
    ///
    /// # Panics
    /// While another simulation on the same model holds its overlay views.
    pub fn overlay_mut(&mut self) -> ModelArrays<'_> {
        let guard = self
            .writing
            .try_borrow_mut()
            .expect("one overlay writer at a time per shared model");
        // SAFETY: only values are written, never sizes or addresses, so the data stays valid; the
        // arrays are C memory no Rust reference covers, the model never leaves this thread (`Rc`),
        // and the guard keeps a second writer out. MuJoCo reads them inside the MuJoCo calls of
        // any simulation on the model; the environments make none while they hold the views.
        let mut views = unsafe { arrays(self.data.model().ffi()) };
        views._writing = Some(guard);
        views
    }
}

/// Mutable views of the model arrays the environments edit.
pub struct ModelArrays<'a> {
    /// Body positions relative to the parent, nbody × 3.
    pub body_pos: &'a mut [f64],
    /// Site positions relative to the body, nsite × 3.
    pub site_pos: &'a mut [f64],
    /// Geom friction coefficients, ngeom × 3.
    pub geom_friction: &'a mut [f64],
    /// Dof damping, nv.
    pub dof_damping: &'a mut [f64],
    /// Equality constraint data, neq × mjNEQDATA (12 in MuJoCo 3.17).
    pub eq_data: &'a mut [f64],
    /// The shared model's write lock, held while the views live.
    _writing: Option<RefMut<'a, ()>>,
}

/// Numbers per equality constraint in this MuJoCo (12 in 3.17; 11 in 3.3).
pub const EQ_DATA_WIDTH: usize = mjNEQDATA as usize;
