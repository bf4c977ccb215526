//! Link-time set-up of the MuJoCo library (docs/environments.md §2): mujoco-rs links libmujoco
//! dynamically and sets no rpath, so the binary and the tests get two: `$ORIGIN/../lib/kinitro` (an
//! installed `<prefix>/bin/kinitro` with `<prefix>/lib/kinitro/`, as the Dockerfile lays it out)
//! and the build tree's `third_party/mujoco/lib` (so `cargo run` and `cargo test` work without
//! installing).
//!
//! The build-tree path comes from `MUJOCO_DYNAMIC_LINK_DIR` (absolute, set by `.cargo/config.toml`)
//! and is watched, so a clone at another path that shares the target directory relinks with its
//! own path instead of inheriting the first clone's.

fn main() {
    let lib = std::env::var("MUJOCO_DYNAMIC_LINK_DIR")
        .unwrap_or_else(|_| format!("{}/third_party/mujoco/lib", env!("CARGO_MANIFEST_DIR")));
    println!("cargo:rustc-link-arg=-Wl,-rpath,$ORIGIN/../lib/kinitro");
    println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
    println!("cargo:rerun-if-env-changed=MUJOCO_DYNAMIC_LINK_DIR");
    println!("cargo:rerun-if-changed=build.rs");
}
