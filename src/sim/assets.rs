//! MetaWorld's scene files and their compilation (docs/environments.md §1–2).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use kinitro_actors::envs::REGISTRY;
use mujoco_rs::prelude::MjModel;

/// The set-up script, named in errors by its repository path.
pub const SETUP_SCRIPT: &str = "deploy/setup.sh";

/// The distinct scene files of the registry (seven: two drawer tasks share one).
pub fn scene_files() -> Vec<&'static str> {
    let mut files: Vec<&'static str> = REGISTRY.iter().map(|r| r.2).collect();
    files.dedup();
    files
}

/// Checks that every scene file exists under `dir`.
pub fn check(dir: &Path) -> Result<(), String> {
    if scene_files().iter().all(|f| dir.join(f).is_file()) {
        Ok(())
    } else {
        Err(format!(
            "MetaWorld assets not found at {}: run {SETUP_SCRIPT} or set KINITRO_METAWORLD_ASSETS_DIR",
            dir.display()
        ))
    }
}

/// Sizes of a compiled scene.
#[derive(Debug, Clone)]
pub struct SceneInfo {
    /// Scene file relative to the assets directory.
    pub file: &'static str,
    /// Position coordinates.
    pub nq: i32,
    /// Degrees of freedom.
    pub nv: i32,
    /// Bodies.
    pub nbody: i32,
    /// Mocap bodies.
    pub nmocap: i32,
    /// Time to load and compile.
    pub compile: Duration,
}

/// Loads and compiles one scene.
pub fn load(dir: &Path, file: &str) -> Result<MjModel, String> {
    let path: PathBuf = dir.join(file);
    MjModel::from_xml(&path).map_err(|e| format!("cannot compile {}: {e}", path.display()))
}

/// Loads and compiles every scene, with sizes and timings.
pub fn compile_all(dir: &Path) -> Result<Vec<SceneInfo>, String> {
    check(dir)?;
    scene_files()
        .into_iter()
        .map(|file| {
            let start = Instant::now();
            let m = load(dir, file)?;
            let f = m.ffi();
            Ok(SceneInfo {
                file,
                nq: f.nq as i32,
                nv: f.nv as i32,
                nbody: f.nbody as i32,
                nmocap: f.nmocap as i32,
                compile: start.elapsed(),
            })
        })
        .collect()
}
