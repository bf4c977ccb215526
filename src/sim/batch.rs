//! The batched renderer (docs/rendering.md §4): the observations of many episodes of one task,
//! both cameras each, in one pass with one read-back.
//!
//! Every frame is drawn exactly as the per-frame path draws it — MuJoCo's own `mjr_render` into
//! the same 84×84 offscreen framebuffer at the origin, with the same model settings — and then
//! copied, byte for byte (`glBlitFramebuffer`, nearest, same size), into its own tile of an atlas
//! (the context's pbuffer). After the pass the atlas is read back once and the tiles are cut out.
//! So the pixels cannot differ from the per-frame path; what a pass saves is the per-frame
//! read-back, which makes the driver finish all work in flight and wait for it: a pipeline stall
//! on a GPU, little on Mesa's llvmpipe, where the copy waits for the frame as well
//! (docs/rendering.md §5).

use mujoco_rs::mujoco_c::mjr_blitBuffer;
use mujoco_rs::prelude::MjModel;
use mujoco_rs::wrappers::mj_rendering::{MjrContext, MjrRectangle};
use mujoco_rs::wrappers::mj_visualization::{MjvCamera, MjvOption, MjvPerturb, MjvScene};

use super::egl::Headless;
use super::mj::{Obj, Sim};
use super::render::{Image, CAMERAS, SIZE};

/// Atlas columns (tiles of `SIZE × SIZE`).
const COLUMNS: usize = 8;
/// Most episodes per pass: two tiles each fill an 8 × 8 atlas of 672 × 672 pixels.
pub const PASS_EPISODES: usize = 32;
/// Atlas rows.
const ROWS: usize = PASS_EPISODES * CAMERAS.len() / COLUMNS;
/// Extra scene geoms beyond the model's own, as many as the per-frame path (mujoco-rs' renderer)
/// allows.
const EXTRA_GEOMS: usize = 100;

/// A batched renderer for one task's scene and its two cameras.
pub struct BatchCameras {
    // Field order is drop order: MuJoCo's GL objects go while the context still exists.
    context: MjrContext,
    scene: MjvScene,
    gl: Headless,
    option: MjvOption,
    cameras: [MjvCamera; 2],
    atlas: Vec<u8>,
}

impl BatchCameras {
    /// A renderer for `model`'s scene, with the same model settings as the per-frame path
    /// ([`super::render::Cameras`]): shadows and multisampling off, an 84 × 84 offscreen buffer.
    pub fn new(model: &MjModel) -> Result<Self, String> {
        let tuned = super::render::tuned_model(model);
        let camera = |name| {
            tuned
                .name_to_id(Obj::mjOBJ_CAMERA, name)
                .map(MjvCamera::new_fixed)
                .ok_or("the scene lacks the corner / corner2 cameras")
        };
        let cameras = [camera(CAMERAS[0])?, camera(CAMERAS[1])?];
        let gl = Headless::new((COLUMNS * SIZE) as u32, (ROWS * SIZE) as u32)
            .map_err(|e| format!("cannot create the EGL context: {e}"))?;
        // SAFETY: `gl` was just made current on this thread, and stays with this value.
        let mut context = unsafe { MjrContext::new(&tuned) };
        if context.ffi().windowAvailable == 0 || context.ffi().offFBO == 0 {
            return Err("the EGL context has no pbuffer or no offscreen framebuffer".into());
        }
        context.offscreen();
        let scene = MjvScene::new(&tuned, tuned.ffi().ngeom as usize + EXTRA_GEOMS);
        Ok(Self {
            context,
            scene,
            gl,
            option: MjvOption::default(),
            cameras,
            atlas: vec![0; COLUMNS * SIZE * ROWS * SIZE * 3],
        })
    }

    /// Renders both cameras of every simulator's current data, in passes of up to
    /// [`PASS_EPISODES`]; the images come back in the simulators' order.
    pub fn render(&mut self, sims: &mut [&mut Sim]) -> Result<Vec<[Image; 2]>, String> {
        self.gl.make_current()?;
        let mut out = Vec::with_capacity(sims.len());
        for pass in sims.chunks_mut(PASS_EPISODES) {
            self.draw_pass(pass)?;
            self.read_pass(pass.len(), &mut out)?;
        }
        Ok(out)
    }

    /// Renders both cameras of one simulator's current data (a pass of one).
    pub fn render_one(&mut self, sim: &mut Sim) -> Result<[Image; 2], String> {
        let mut images = self.render(&mut [sim])?;
        images
            .pop()
            .ok_or_else(|| "the pass returned no images".into())
    }

    /// Draws every frame of a pass at the origin of the offscreen buffer and copies it to its
    /// tile of the atlas.
    fn draw_pass(&mut self, pass: &mut [&mut Sim]) -> Result<(), String> {
        let frame = MjrRectangle::new(0, 0, SIZE as i32, SIZE as i32);
        for (episode, sim) in pass.iter_mut().enumerate() {
            let data = sim.data();
            if !self.scene.is_compatible_with_model(data.model()) {
                return Err("the episode's model does not match the renderer's scene".into());
            }
            for (camera_index, camera) in self.cameras.iter_mut().enumerate() {
                self.scene
                    .update(data, &self.option, &MjvPerturb::default(), camera);
                self.scene.render(&frame, &self.context);
                let tile = episode * CAMERAS.len() + camera_index;
                // SAFETY: the context is current and owns both framebuffers; the rectangles lie
                // inside them.
                unsafe { mjr_blitBuffer(frame, tile_rect(tile), 1, 0, self.context.ffi()) };
            }
        }
        Ok(())
    }

    /// Reads the atlas rows a pass used and appends its images, each in the per-frame path's
    /// row order.
    fn read_pass(&mut self, episodes: usize, out: &mut Vec<[Image; 2]>) -> Result<(), String> {
        let rows = (episodes * CAMERAS.len()).div_ceil(COLUMNS);
        let used = MjrRectangle::new(0, 0, (COLUMNS * SIZE) as i32, (rows * SIZE) as i32);
        self.context.window();
        let read = self.context.read_pixels(Some(&mut self.atlas), None, &used);
        self.context.offscreen();
        read.map_err(|e| format!("cannot read the atlas: {e}"))?;
        let stride = COLUMNS * SIZE * 3;
        let cut = |tile: usize| {
            let rect = tile_rect(tile);
            let (x, y) = (rect.left as usize * 3, rect.bottom as usize);
            let mut image = Vec::with_capacity(SIZE * SIZE * 3);
            for row in y..y + SIZE {
                image.extend_from_slice(&self.atlas[row * stride + x..row * stride + x + SIZE * 3]);
            }
            image
        };
        for episode in 0..episodes {
            let first = episode * CAMERAS.len();
            out.push([cut(first), cut(first + 1)]);
        }
        Ok(())
    }
}

impl Drop for BatchCameras {
    fn drop(&mut self) {
        // MuJoCo frees its GL objects when the context drops: it must be current.
        let _ = self.gl.make_current();
    }
}

/// Tile `index`'s rectangle in the atlas, row-major from the bottom left.
fn tile_rect(index: usize) -> MjrRectangle {
    let (column, row) = (index % COLUMNS, index / COLUMNS);
    MjrRectangle::new(
        (column * SIZE) as i32,
        (row * SIZE) as i32,
        SIZE as i32,
        SIZE as i32,
    )
}
