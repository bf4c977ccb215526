//! A headless OpenGL context on EGL for the batched renderer (docs/rendering.md §4).
//!
//! Its default framebuffer is a pbuffer of the atlas's size with 8-bit RGB: the batched renderer
//! copies each finished frame into its own tile of it and reads the whole atlas back once. The
//! context uses the compatibility profile MuJoCo's fixed-function renderer needs, like mujoco-rs'
//! own renderer, and opens on the first EGL device that gives one (a GPU, else Mesa's llvmpipe).

use std::num::NonZeroU32;

use glutin::api::egl::context::PossiblyCurrentContext;
use glutin::api::egl::device::Device;
use glutin::api::egl::display::Display;
use glutin::api::egl::surface::Surface;
use glutin::config::{ColorBufferType, ConfigSurfaceTypes, ConfigTemplateBuilder};
use glutin::context::{ContextApi, ContextAttributesBuilder, GlProfile, Version};
use glutin::prelude::{GlConfig, GlDisplay, NotCurrentGlContext, PossiblyCurrentGlContext};
use glutin::surface::{PbufferSurface, SurfaceAttributesBuilder};

/// An OpenGL context current on the thread that made it, drawing into a pbuffer.
pub struct Headless {
    context: PossiblyCurrentContext,
    surface: Surface<PbufferSurface>,
}

impl Headless {
    /// A context whose pbuffer is `width × height` pixels of 8-bit RGB, made current.
    pub fn new(width: u32, height: u32) -> Result<Self, String> {
        let (Some(w), Some(h)) = (NonZeroU32::new(width), NonZeroU32::new(height)) else {
            return Err("an empty pbuffer".into());
        };
        let devices = Device::query_devices().map_err(|e| format!("EGL: {e}"))?;
        let mut last = String::from("no EGL device");
        for device in devices {
            match Self::on_device(&device, w, h) {
                Ok(gl) => return Ok(gl),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    fn on_device(device: &Device, width: NonZeroU32, height: NonZeroU32) -> Result<Self, String> {
        // SAFETY: the device comes from EGL's own device list.
        let display = unsafe { Display::with_device(device, None) }.map_err(|e| e.to_string())?;
        let template = ConfigTemplateBuilder::new()
            .with_surface_type(ConfigSurfaceTypes::PBUFFER)
            .with_buffer_type(ColorBufferType::Rgb {
                r_size: 8,
                g_size: 8,
                b_size: 8,
            })
            .with_alpha_size(0)
            .with_depth_size(24)
            .with_stencil_size(8)
            .build();
        // SAFETY: a valid display and template.
        let config = unsafe { display.find_configs(template) }
            .map_err(|e| e.to_string())?
            // The atlas must hold the frames' bytes exactly: 8 bits per channel, no fewer.
            .find(|c| {
                matches!(
                    c.color_buffer_type(),
                    Some(ColorBufferType::Rgb {
                        r_size: 8,
                        g_size: 8,
                        b_size: 8
                    })
                )
            })
            .ok_or("no EGL configuration with 8-bit RGB pbuffers")?;
        let attributes = ContextAttributesBuilder::new()
            .with_profile(GlProfile::Compatibility)
            .with_context_api(ContextApi::OpenGl(Some(Version::new(2, 0))))
            .build(None);
        // SAFETY: display and config are valid, and the attributes ask for a compatible profile.
        let context =
            unsafe { display.create_context(&config, &attributes) }.map_err(|e| e.to_string())?;
        let surface_attributes =
            SurfaceAttributesBuilder::<PbufferSurface>::new().build(width, height);
        // SAFETY: display and config are valid; the size is not zero.
        let surface = unsafe { display.create_pbuffer_surface(&config, &surface_attributes) }
            .map_err(|e| e.to_string())?;
        let context = context.make_current(&surface).map_err(|e| e.to_string())?;
        Ok(Self { context, surface })
    }

    /// Makes the context current on this thread (a thread may hold one context per scene).
    pub fn make_current(&self) -> Result<(), String> {
        self.context
            .make_current(&self.surface)
            .map_err(|e| format!("cannot make the EGL context current: {e}"))
    }
}
