//! Link-time set-up of the MuJoCo library (environments.md 2): mujoco-rs links libmujoco dynamically
//! and sets no rpath, so the binary and the tests get two: `$ORIGIN/../lib/kinitro` (an installed
//! `<prefix>/bin/kinitro` with `<prefix>/lib/kinitro/`, as the Dockerfile lays it out) and the
//! build tree's `third_party/mujoco/lib` (so `cargo run` and `cargo test` work without installing).

fn main() {
    let lib = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("third_party/mujoco/lib");
    println!("cargo:rustc-link-arg=-Wl,-rpath,$ORIGIN/../lib/kinitro");
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
    println!("cargo:rerun-if-changed=build.rs");
}
