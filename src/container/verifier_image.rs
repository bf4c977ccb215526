//! The verifier image (verification.md §2.3), built with no registry like every other image here
//! ([`super::image`]): `FROM scratch` over a root assembled from this machine's Python 3 — the
//! interpreter (with the libraries `ldd` finds), its standard library (without its tests, IDLE,
//! Tk and `ensurepip`) and its extension modules (with their libraries) — plus a site-packages
//! folder that `pip` fills at build time with NumPy, pydantic 2 and the operator's extra packages
//! (`kinitro env build verifier --python-packages "P …"`), and the sandbox's entry point
//! (deploy/verifier/sandbox.py). Nothing is fetched when the image runs.
//!
//! Wheels are downloaded into a cache (`$XDG_CACHE_HOME/kinitro/verifier/wheels`) and installed
//! from it with `--no-index`, so a rebuild works offline once the wheels are there. Only binary
//! wheels for the host interpreter's version and the host's glibc are accepted.

use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::Digest;

use super::image::{RootFs, FAMILY_LABEL, LIB_DIR, USER_ID, VERSION_LABEL};

/// The sandbox's entry point, compiled into this binary so an image carries the version of the
/// command that built it.
pub const SANDBOX_PY: &str = include_str!("../../deploy/verifier/sandbox.py");
/// Where the entry point lives in the image.
pub const SANDBOX_PATH: &str = "/usr/local/lib/kinitro/sandbox.py";
/// The verifier's family name (tags and the `io.kinitro.family` label).
pub const FAMILY: &str = "verifier";
/// The packages every verifier image has (the miner template's `rl_interface.py` imports both).
pub const BASE_PACKAGES: [&str; 2] = ["numpy", "pydantic>=2,<3"];
/// The interpreter the image is made of.
const HOST_PYTHON: &str = "/usr/bin/python3";
/// Top-level folders of the standard library left out of the image.
const SKIPPED_STDLIB: [&str; 8] = [
    "test",
    "idlelib",
    "tkinter",
    "turtledemo",
    "ensurepip",
    "site-packages",
    "dist-packages",
    "__pycache__",
];

/// What the host interpreter says about itself.
#[derive(Debug, serde::Deserialize)]
struct HostPython {
    /// `3.11`.
    version: String,
    /// The interpreter's real path (no symbolic link).
    executable: String,
    /// The standard library's folder.
    stdlib: String,
    /// The extension modules' folder (`…/lib-dynload`), empty when there is none.
    dynload: String,
    /// The first site-packages folder it searches, even with `-I`.
    site: String,
    /// `("glibc", "2.36")`.
    libc: (String, String),
    /// `x86_64`.
    machine: String,
}

/// Asks `python` for its paths (run with `-I`, as the image runs it).
fn host_python(python: &Path) -> Result<HostPython, String> {
    const QUERY: &str = "import json, os, platform, site, sys, sysconfig\n\
        dyn = next((p for p in sys.path if p.endswith('lib-dynload')), '')\n\
        print(json.dumps({'version': '%d.%d' % sys.version_info[:2], \
        'executable': os.path.realpath(sys.executable), 'stdlib': sysconfig.get_path('stdlib'), \
        'dynload': dyn, 'site': site.getsitepackages()[0], 'libc': platform.libc_ver(), \
        'machine': platform.machine()}))";
    let out = Command::new(python)
        .args(["-I", "-c", QUERY])
        .output()
        .map_err(|e| {
            format!(
                "the verifier image is made of this machine's Python 3 ({}), which cannot run: {e} \
                 (install it: apt-get install python3 python3-pip)",
                python.display()
            )
        })?;
    if !out.status.success() {
        return Err(format!(
            "{} failed: {}",
            python.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let info: HostPython = serde_json::from_slice(&out.stdout)
        .map_err(|e| format!("unexpected answer of {}: {e}", python.display()))?;
    if info.machine != "x86_64" {
        return Err(format!(
            "the verifier image is built for x86_64 only (this Python is {})",
            info.machine
        ));
    }
    if info.libc.0 != "glibc" {
        return Err(format!(
            "{} is not linked against glibc ({:?}); manylinux wheels need glibc",
            python.display(),
            info.libc
        ));
    }
    Ok(info)
}

/// An image path (relative, no leading `/`) for a host path.
fn rel(path: &Path) -> String {
    path.to_string_lossy().trim_start_matches('/').to_string()
}

/// `$XDG_CACHE_HOME/kinitro/verifier`, else `~/.cache/kinitro/verifier`.
fn cache_dir() -> PathBuf {
    crate::config::xdg_dir("XDG_CACHE_HOME", ".cache").join("kinitro/verifier")
}

/// The pip options that pick wheels for the image's interpreter and glibc, whichever Python runs
/// pip: binary wheels only, `cp3XY`, `manylinux_2_17` … `manylinux_2_<host>` on x86_64.
fn target_options(info: &HostPython) -> Result<Vec<String>, String> {
    let nodot = info.version.replace('.', "");
    let minor: u32 = info
        .libc
        .1
        .split('.')
        .nth(1)
        .and_then(|m| m.parse().ok())
        .ok_or_else(|| format!("unexpected glibc version {:?}", info.libc.1))?;
    let mut options = vec![
        "--only-binary=:all:".to_string(),
        "--python-version".into(),
        info.version.clone(),
        "--implementation".into(),
        "cp".into(),
        "--abi".into(),
        format!("cp{nodot}"),
        "--abi".into(),
        "abi3".into(),
        "--abi".into(),
        "none".into(),
    ];
    for m in (17..=minor.max(17)).rev() {
        options.push("--platform".into());
        options.push(format!("manylinux_2_{m}_x86_64"));
    }
    for legacy in ["manylinux2014_x86_64", "linux_x86_64"] {
        options.push("--platform".into());
        options.push(legacy.into());
    }
    Ok(options)
}

/// A Python that has pip: the image's own interpreter, else `python3` on `PATH` (the target
/// options make either fetch wheels for the image's interpreter).
fn pip_runner(own: &Path) -> Result<PathBuf, String> {
    for candidate in [own.to_path_buf(), PathBuf::from("python3")] {
        let ok = Command::new(&candidate)
            .args(["-m", "pip", "--version"])
            .output()
            .is_ok_and(|o| o.status.success());
        if ok {
            return Ok(candidate);
        }
    }
    Err(format!(
        "no pip for building the verifier image: neither {} nor python3 on PATH has it \
         (apt-get install python3-pip)",
        own.display()
    ))
}

/// The last lines of a failed command's output.
fn output_tail(out: &std::process::Output) -> String {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(8)..].join("\n")
}

/// Installs `packages` into a fresh folder under the cache and returns it: wheels are downloaded
/// into the wheel cache first (skipped with a note when the index cannot be reached), then
/// installed from that cache alone.
fn install_packages(info: &HostPython, packages: &[String]) -> Result<PathBuf, String> {
    if let Some(bad) = packages
        .iter()
        .find(|p| p.trim().is_empty() || p.starts_with('-'))
    {
        return Err(format!(
            "invalid Python package '{bad}' (expected a requirement such as numpy or torch==2.5.1)"
        ));
    }
    let pip = pip_runner(Path::new(&info.executable))?;
    let options = target_options(info)?;
    let cache = cache_dir();
    let wheels = cache.join(format!("wheels/cp{}", info.version.replace('.', "")));
    std::fs::create_dir_all(&wheels).map_err(|e| format!("{}: {e}", wheels.display()))?;
    let mut key = sha2::Sha256::new();
    key.update(info.executable.as_bytes());
    for p in packages {
        key.update(b"\0");
        key.update(p.as_bytes());
    }
    let site = cache.join(format!("site-{}", &hex::encode(key.finalize())[..16]));
    if site.exists() {
        std::fs::remove_dir_all(&site).map_err(|e| format!("{}: {e}", site.display()))?;
    }
    std::fs::create_dir_all(&site).map_err(|e| format!("{}: {e}", site.display()))?;

    let download = Command::new(&pip)
        .args([
            "-m",
            "pip",
            "download",
            "--disable-pip-version-check",
            "--quiet",
        ])
        .arg("--dest")
        .arg(&wheels)
        .args(&options)
        .args(packages)
        .output()
        .map_err(|e| format!("cannot run pip: {e}"))?;
    let download_note = (!download.status.success()).then(|| output_tail(&download));
    let install = Command::new(&pip)
        .args([
            "-m",
            "pip",
            "install",
            "--disable-pip-version-check",
            "--quiet",
            "--no-index",
            "--no-compile",
            "--no-warn-script-location",
        ])
        .arg("--find-links")
        .arg(&wheels)
        .arg("--target")
        .arg(&site)
        .args(&options)
        .args(packages)
        .output()
        .map_err(|e| format!("cannot run pip: {e}"))?;
    if !install.status.success() {
        let mut message = format!(
            "cannot install {} for the verifier image: {}",
            packages.join(" "),
            output_tail(&install)
        );
        if let Some(note) = download_note {
            message.push_str(&format!("\n(downloading the wheels failed: {note})"));
        }
        return Err(message);
    }
    if let Some(note) = download_note {
        tracing::warn!(%note, "the wheel download failed; the verifier image was built from the wheel cache");
    }
    Ok(site)
}

/// Adds the files of `src` (a host folder) as `dest`, recursively, leaving out `__pycache__`,
/// pip's `bin` scripts and symbolic links that lead outside `root`; shared objects get their
/// libraries, and with `optional_modules` a module whose libraries are missing here is left out
/// (with a warning) instead of failing the build.
fn add_python_tree(
    fs: &mut RootFs,
    dest: &str,
    src: &Path,
    root: &Path,
    skip_top: &[String],
    optional_modules: bool,
) -> Result<(), String> {
    let entries = std::fs::read_dir(src).map_err(|e| format!("{}: {e}", src.display()))?;
    let mut items: Vec<_> = entries
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: {e}", src.display()))?;
    items.sort_by_key(|e| e.file_name());
    for item in items {
        let name = item.file_name().to_string_lossy().into_owned();
        let path = item.path();
        if name == "__pycache__" || skip_top.contains(&name) {
            continue;
        }
        let kind = item.file_type().map_err(|e| e.to_string())?;
        if kind.is_symlink() {
            // Only links to files inside the tree (Debian links `sitecustomize.py` to /etc).
            let root = std::fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
            match std::fs::canonicalize(&path) {
                Ok(target) if target.starts_with(&root) && target.is_file() => {}
                _ => continue,
            }
        }
        let target = format!("{dest}/{name}");
        if path.is_dir() {
            if kind.is_symlink() {
                continue;
            }
            add_python_tree(fs, &target, &path, root, &[], optional_modules)?;
        } else if path.is_file() {
            let shared = name.ends_with(".so") || name.contains(".so.");
            if shared && optional_modules {
                if let Err(e) = fs.add_libraries(vec![path.clone()]) {
                    tracing::warn!(module = %path.display(), error = %e, "left out of the verifier image");
                    continue;
                }
            } else if shared {
                fs.add_libraries(vec![path.clone()])?;
            }
            fs.add_file(&target, &path, 0o644)?;
        }
    }
    Ok(())
}

/// The verifier image's root and Dockerfile: this machine's Python 3 with NumPy, pydantic 2 and
/// `packages`, and the sandbox's entry point, running as [`USER_ID`] without a shell.
pub(super) fn verifier(packages: &[String]) -> Result<(RootFs, String), String> {
    let info = host_python(Path::new(HOST_PYTHON))?;
    let mut wanted: Vec<String> = BASE_PACKAGES.iter().map(|p| p.to_string()).collect();
    wanted.extend(packages.iter().map(|p| p.trim().to_string()));
    let site = install_packages(&info, &wanted)?;

    let mut fs = RootFs::default();
    let exe = PathBuf::from(&info.executable);
    let exe_dest = rel(&exe);
    fs.add_program(&exe_dest, &exe, 0o755)?;
    if exe_dest != "usr/bin/python3" {
        fs.add_file("usr/bin/python3", &exe, 0o755)?;
    }

    let stdlib = PathBuf::from(&info.stdlib);
    let dynload = PathBuf::from(&info.dynload);
    let mut skip: Vec<String> = SKIPPED_STDLIB.iter().map(|s| s.to_string()).collect();
    // The static library and build files (`config-3.11-x86_64-linux-gnu`), Debian's link to /etc.
    skip.extend(
        std::fs::read_dir(&stdlib)
            .map_err(|e| format!("{}: {e}", stdlib.display()))?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("config-") || n == "sitecustomize.py"),
    );
    // The extension modules are walked on their own, below.
    if let Ok(inner) = dynload.strip_prefix(&stdlib) {
        if let Some(first) = inner.components().next() {
            skip.push(first.as_os_str().to_string_lossy().into_owned());
        }
    }
    add_python_tree(&mut fs, &rel(&stdlib), &stdlib, &stdlib, &skip, false)?;
    if !info.dynload.is_empty() {
        // The C test modules are of no use to a policy.
        let tests: Vec<String> = std::fs::read_dir(&dynload)
            .map_err(|e| format!("{}: {e}", dynload.display()))?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("_test") || n.starts_with("xx"))
            .collect();
        add_python_tree(&mut fs, &rel(&dynload), &dynload, &dynload, &tests, true)?;
    }

    add_python_tree(
        &mut fs,
        &rel(Path::new(&info.site)),
        &site,
        &site,
        &["bin".to_string()],
        false,
    )?;

    fs.add_data(SANDBOX_PATH.trim_start_matches('/'), SANDBOX_PY, 0o644);
    fs.add_user("kinitro", USER_ID, "/tmp");
    fs.add_owned_dir("tmp", 0, 0o1777);

    let version = env!("CARGO_PKG_VERSION");
    // `-I`: no PYTHON* variables, no user site, no script folder on sys.path (the interpreter's
    // own site-packages, where the packages are, is still searched); `-B`: no bytecode written.
    let dockerfile = format!(
        r#"FROM scratch
COPY rootfs/ /
ADD owned.tar /
ENV LD_LIBRARY_PATH=/{LIB_DIR} HOME=/tmp LANG=C.UTF-8 \
    OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
LABEL {FAMILY_LABEL}={FAMILY} {VERSION_LABEL}={version} org.opencontainers.image.title=kinitro-verifier
USER {USER_ID}:{USER_ID}
WORKDIR /tmp
ENTRYPOINT ["/{exe_dest}", "-I", "-B", "{SANDBOX_PATH}"]
"#
    );
    Ok((fs, dockerfile))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_entry_point_is_the_sandbox_script() {
        assert!(SANDBOX_PY.contains("def main()"));
        assert!(SANDBOX_PY.contains("\"status\": \"ok\""));
    }

    #[test]
    fn wheels_match_the_interpreter_and_glibc() {
        let info = HostPython {
            version: "3.11".into(),
            executable: "/usr/bin/python3.11".into(),
            stdlib: "/usr/lib/python3.11".into(),
            dynload: "/usr/lib/python3.11/lib-dynload".into(),
            site: "/usr/local/lib/python3.11/dist-packages".into(),
            libc: ("glibc".into(), "2.36".into()),
            machine: "x86_64".into(),
        };
        let o = target_options(&info).unwrap().join(" ");
        assert!(o.contains("--only-binary=:all:") && o.contains("--abi cp311"));
        assert!(o.contains("manylinux_2_36_x86_64") && o.contains("manylinux_2_17_x86_64"));
        assert!(o.contains("--python-version 3.11"));
    }
}
