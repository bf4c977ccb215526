//! The miners' two 84×84 cameras (docs/environments.md §6), rendered headless through mujoco-rs'
//! EGL renderer with shadows and multisampling off.
//!
//! A renderer holds an OpenGL context current on its thread, so it lives on the thread that
//! created it (the episode worker) and is bound to one scene; the episode's own data (with its
//! model overlay) is what gets drawn.

use mujoco_rs::prelude::MjModel;
use mujoco_rs::renderer::MjRenderer;
use mujoco_rs::wrappers::mj_visualization::MjvCamera;

use super::mj::{Obj, Sim};

/// Image height and width.
pub const SIZE: usize = 84;
/// The cameras sent to miners, in order.
pub const CAMERAS: [&str; 2] = ["corner", "corner2"];

/// One RGB image, `SIZE × SIZE × 3` bytes, row 0 = top of the upright image.
pub type Image = Vec<u8>;

/// A copy of `model` with shadows and multisampling off and an offscreen buffer of exactly
/// 84×84: the settings that make software GL fast, shared by both renderers.
pub fn tuned_model(model: &MjModel) -> MjModel {
    let mut tuned = model.clone();
    // SAFETY: only visual settings of a private copy change.
    let vis = unsafe { &mut tuned.ffi_mut().vis };
    vis.quality.shadowsize = 0;
    vis.quality.offsamples = 0;
    vis.global.offwidth = SIZE as i32;
    vis.global.offheight = SIZE as i32;
    tuned
}

/// A renderer for one scene and its two cameras.
pub struct Cameras {
    renderer: MjRenderer,
    ids: [usize; 2],
}

impl Cameras {
    /// A renderer for `model`'s scene: a copy of the model with shadows and multisampling off and
    /// an offscreen buffer of exactly 84×84 (the settings that make software GL fast).
    pub fn new(model: &MjModel) -> Result<Self, String> {
        let tuned = tuned_model(model);
        let ids = [
            tuned.name_to_id(Obj::mjOBJ_CAMERA, CAMERAS[0]),
            tuned.name_to_id(Obj::mjOBJ_CAMERA, CAMERAS[1]),
        ];
        let [Some(a), Some(b)] = ids else {
            return Err("the scene lacks the corner / corner2 cameras".into());
        };
        let renderer = MjRenderer::builder()
            .width(SIZE as u32)
            .height(SIZE as u32)
            .build(&tuned)
            .map_err(|e| format!("cannot create the EGL renderer: {e}"))?;
        Ok(Self {
            renderer,
            ids: [a, b],
        })
    }

    /// Renders both cameras from the simulator's current data.
    pub fn render(&mut self, sim: &mut Sim) -> Result<[Image; 2], String> {
        let mut out: [Image; 2] = Default::default();
        for (slot, id) in out.iter_mut().zip(self.ids) {
            self.renderer.set_camera(MjvCamera::new_fixed(id));
            self.renderer
                .sync_data(sim.data())
                .map_err(|e| e.to_string())?;
            self.renderer.render().map_err(|e| e.to_string())?;
            let rgb = self.renderer.rgb_flat().ok_or("RGB rendering is off")?;
            // mujoco-rs returns the conventional top-row-first image; MetaWorld's corner cameras
            // are upside down in it, and the upright image is its vertical flip.
            let row = SIZE * 3;
            slot.reserve_exact(rgb.len());
            for r in (0..SIZE).rev() {
                slot.extend_from_slice(&rgb[r * row..(r + 1) * row]);
            }
        }
        Ok(out)
    }
}
