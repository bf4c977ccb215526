//! Simulation (spec: environments.md): MetaWorld's scenes on MuJoCo 3.17 through mujoco-rs. This
//! build loads and compiles the scenes; the environments themselves (runtime edits, reset, step,
//! observations, rendering) are not in it yet.

pub mod assets;
