//! Simulation (docs/environments.md): MetaWorld's eight tasks on MuJoCo 3.17 through mujoco-rs —
//! scene assets, the environments, the miner's action, the scripted experts.

pub mod action;
pub mod assets;
pub mod batch;
pub mod egl;
pub mod env;
pub mod expert;
pub mod mj;
pub mod render;
pub mod reward;
pub mod rng;
pub mod rollout;
pub mod task;
