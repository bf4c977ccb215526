//! Building the project's images with no registry (docs/containers.md §1).
//!
//! Nothing is pulled: the image is `FROM scratch` over a root filesystem assembled from what the
//! build machine has — the `kinitro` binary itself (the very binary that runs `kinitro env build`,
//! so an image always carries the code of the command that built it), the shared libraries it and
//! Mesa's software EGL renderer load (found with `ldd` and `ldconfig -p`), the MuJoCo library, the
//! family's scene files, CA certificates and a passwd file naming the non-root user. The build
//! context is one tar stream made here and sent to the engine's `POST /build`; the engine's own
//! layer cache makes an unchanged rebuild quick.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use bollard::query_parameters::{
    BuildImageOptionsBuilder, PushImageOptionsBuilder, TagImageOptionsBuilder,
};
use futures_util::StreamExt;

use super::Engine;

/// The uid and gid the containers run as.
pub const USER_ID: u32 = 10001;
/// Where the binary lives in the image (its `$ORIGIN/../lib/kinitro` rpath finds MuJoCo).
pub(super) const BINARY: &str = "usr/local/bin/kinitro";
/// Where MuJoCo's library lives in the image.
const MUJOCO_DIR: &str = "usr/local/lib/kinitro";
/// Where every other shared library lives in the image (Mesa's compiled-in driver directory is
/// `<this>/dri`).
pub(super) const LIB_DIR: &str = "usr/lib/x86_64-linux-gnu";
/// Where MetaWorld's scene files live in the image.
pub const ASSETS_DIR: &str = "/usr/local/share/kinitro/metaworld/assets";
/// The label affinetes reads to choose its protocol.
pub const AFFINETES_LABEL: (&str, &str) = ("affinetes.env.type", "function_based");
/// The label naming the kinitro version an image was built from.
pub const VERSION_LABEL: &str = "org.opencontainers.image.version";
/// The label naming the image's environment family.
pub const FAMILY_LABEL: &str = "io.kinitro.family";

/// The image families of this build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// The eight MetaWorld tasks.
    Metaworld,
}

impl Family {
    /// The family's name in tags, labels and the executor's image map.
    pub fn name(self) -> &'static str {
        match self {
            Family::Metaworld => "metaworld",
        }
    }

    /// The default tag, `kinitro/<family>:v1`.
    pub fn default_tag(self) -> String {
        format!("kinitro/{}:v1", self.name())
    }
}

/// Which image a build makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// An environment family's image (`kinitro env serve`).
    Env(Family),
    /// The service image of the compose stacks: `kinitro` plus the PostgreSQL server programs of
    /// `kinitro run`'s managed database (docs/deployment.md §1).
    Runtime,
    /// PostgreSQL alone, with a first-start entrypoint (docs/deployment.md §1).
    Postgres,
    /// The verification sandbox: Python with NumPy and pydantic (docs/verification.md §2).
    Verifier,
}

/// What one build needs.
#[derive(Debug, Clone)]
pub struct BuildRequest {
    /// The image.
    pub kind: Kind,
    /// The image tag.
    pub tag: String,
    /// Ignore the engine's layer cache.
    pub no_cache: bool,
    /// The binary to put in the image (normally the running one).
    pub binary: PathBuf,
    /// The family's scene files on this machine.
    pub assets: PathBuf,
    /// The verifier image's extra PyPI packages.
    pub python_packages: Vec<String>,
}

/// One entry of the image's root filesystem.
enum Entry {
    /// A host file copied in.
    File { src: PathBuf, mode: u32 },
    /// A second name for a file already in the image (Mesa's drivers are one file under many names).
    HardLink { target: String, mode: u32 },
    /// A file made here.
    Data { bytes: Vec<u8>, mode: u32 },
    /// A directory.
    Dir { mode: u32 },
}

/// The root filesystem: image path (relative, no leading `/`) → entry.
#[derive(Default)]
pub(super) struct RootFs {
    entries: BTreeMap<String, Entry>,
    /// (device, inode) of each host file already in, so a second name becomes a hard link.
    seen: HashMap<(u64, u64), String>,
    /// Directories owned by a non-root uid (path, uid, mode): the engine's `COPY` makes everything
    /// root's, so these travel in a tar that `ADD` unpacks with its owners (a named volume mounted
    /// there starts out with the same owner).
    owned: Vec<(String, u32, u32)>,
}

impl RootFs {
    /// A file made here.
    pub(super) fn add_data(&mut self, dest: &str, text: &str, mode: u32) {
        self.entries.insert(
            dest.to_string(),
            Entry::Data {
                bytes: text.as_bytes().to_vec(),
                mode,
            },
        );
    }

    /// The passwd and group files naming root and `name` as `uid` (home `home`, no login shell).
    pub(super) fn add_user(&mut self, name: &str, uid: u32, home: &str) {
        self.add_data(
            "etc/passwd",
            &format!("root:x:0:0:root:/root:/usr/sbin/nologin\n{name}:x:{uid}:{uid}:{name}:{home}:/usr/sbin/nologin\n"),
            0o644,
        );
        self.add_data("etc/group", &format!("root:x:0:\n{name}:x:{uid}:\n"), 0o644);
    }

    /// A directory owned by `uid` (and the group of the same id).
    pub(super) fn add_owned_dir(&mut self, dest: &str, uid: u32, mode: u32) {
        self.owned.push((dest.to_string(), uid, mode));
    }

    /// A host file, with every library it loads (`ldd`, transitively) under the library directory.
    pub(super) fn add_program(&mut self, dest: &str, src: &Path, mode: u32) -> Result<(), String> {
        self.add_file(dest, src, mode)?;
        self.add_libraries(vec![src.to_path_buf()])
    }

    /// The libraries `roots` load, transitively, under the library directory (the loader at its
    /// fixed path, MuJoCo beside the binary's rpath).
    pub(super) fn add_libraries(&mut self, roots: Vec<PathBuf>) -> Result<(), String> {
        let mut pending = roots;
        let mut done = std::collections::HashSet::new();
        while let Some(file) = pending.pop() {
            if !done.insert(file.clone()) {
                continue;
            }
            for (name, path) in ldd(&file)? {
                let dest = if name == LOADER || name.ends_with(&format!("/{LOADER}")) {
                    format!("lib64/{LOADER}")
                } else if name.starts_with("libmujoco") {
                    format!("{MUJOCO_DIR}/{name}")
                } else {
                    format!("{LIB_DIR}/{name}")
                };
                if !self.entries.contains_key(&dest) {
                    self.add_file(&dest, &path, 0o755)?;
                }
                pending.push(path);
            }
        }
        Ok(())
    }

    pub(super) fn add_file(&mut self, dest: &str, src: &Path, mode: u32) -> Result<(), String> {
        let meta = std::fs::metadata(src).map_err(|e| format!("{}: {e}", src.display()))?;
        let key = (meta.dev(), meta.ino());
        let entry = match self.seen.get(&key) {
            Some(first) if first != dest => Entry::HardLink {
                target: first.clone(),
                mode,
            },
            _ => {
                self.seen.insert(key, dest.to_string());
                Entry::File {
                    src: src.to_path_buf(),
                    mode,
                }
            }
        };
        self.entries.insert(dest.to_string(), entry);
        Ok(())
    }

    /// A host directory tree; a symbolic link to a directory is left out (a tree may link to itself).
    pub(super) fn add_tree(&mut self, dest: &str, src: &Path) -> Result<(), String> {
        self.entries
            .insert(dest.to_string(), Entry::Dir { mode: 0o755 });
        let dir = std::fs::read_dir(src).map_err(|e| format!("{}: {e}", src.display()))?;
        for item in dir {
            let item = item.map_err(|e| e.to_string())?;
            let path = item.path();
            let name = format!("{dest}/{}", item.file_name().to_string_lossy());
            let link = item.file_type().map_err(|e| e.to_string())?.is_symlink();
            if path.is_dir() && link {
                continue;
            }
            if path.is_dir() {
                self.add_tree(&name, &path)?;
            } else {
                self.add_file(&name, &path, 0o644)?;
            }
        }
        Ok(())
    }

    /// The tar stream of the build context: `Dockerfile`, `rootfs/…`, `owned.tar` (the owned
    /// directories) and the binary beside them (its own layer, so a rebuild with a new binary reuses
    /// the libraries' layer).
    pub(super) fn context(
        &self,
        dockerfile: &str,
        binary: Option<&Path>,
    ) -> Result<Vec<u8>, String> {
        let mut tar = tar::Builder::new(Vec::new());
        let io = |e: std::io::Error| format!("cannot write the build context: {e}");
        let header = |size: u64, mode: u32, kind: tar::EntryType| {
            let mut h = tar::Header::new_gnu();
            h.set_size(size);
            h.set_mode(mode);
            h.set_entry_type(kind);
            h.set_mtime(0);
            h
        };
        let mut h = header(dockerfile.len() as u64, 0o644, tar::EntryType::Regular);
        tar.append_data(&mut h, "Dockerfile", dockerfile.as_bytes())
            .map_err(io)?;
        if let Some(binary) = binary {
            let file =
                std::fs::File::open(binary).map_err(|e| format!("{}: {e}", binary.display()))?;
            let mut h = header(
                file.metadata().map_err(io)?.len(),
                0o755,
                tar::EntryType::Regular,
            );
            tar.append_data(&mut h, "kinitro", file).map_err(io)?;
        }
        let mut owned = tar::Builder::new(Vec::new());
        for (dir, uid, mode) in &self.owned {
            let mut h = header(0, *mode, tar::EntryType::Directory);
            h.set_uid(u64::from(*uid));
            h.set_gid(u64::from(*uid));
            owned
                .append_data(&mut h, format!("{dir}/"), std::io::empty())
                .map_err(io)?;
        }
        let owned = owned.into_inner().map_err(io)?;
        // Only images with owned directories have one (an empty tar would be copied, not unpacked).
        if !self.owned.is_empty() {
            let mut h = header(owned.len() as u64, 0o644, tar::EntryType::Regular);
            tar.append_data(&mut h, "owned.tar", owned.as_slice())
                .map_err(io)?;
        }
        // Parent directories first (BTreeMap order puts "a" before "a/b").
        let mut dirs: std::collections::BTreeSet<String> = Default::default();
        for path in self.entries.keys() {
            let mut p = Path::new(path).parent();
            while let Some(d) = p.filter(|d| !d.as_os_str().is_empty()) {
                dirs.insert(d.to_string_lossy().into_owned());
                p = d.parent();
            }
        }
        for d in &dirs {
            if !self.entries.contains_key(d) {
                let mut h = header(0, 0o755, tar::EntryType::Directory);
                tar.append_data(&mut h, format!("rootfs/{d}/"), std::io::empty())
                    .map_err(io)?;
            }
        }
        // Hard links last: their targets must already be in the stream.
        let (links, others): (Vec<_>, Vec<_>) = self
            .entries
            .iter()
            .partition(|(_, e)| matches!(e, Entry::HardLink { .. }));
        for (path, entry) in others.into_iter().chain(links) {
            let name = format!("rootfs/{path}");
            match entry {
                Entry::Dir { mode } => {
                    let mut h = header(0, *mode, tar::EntryType::Directory);
                    tar.append_data(&mut h, format!("{name}/"), std::io::empty())
                        .map_err(io)?;
                }
                Entry::Data { bytes, mode } => {
                    let mut h = header(bytes.len() as u64, *mode, tar::EntryType::Regular);
                    tar.append_data(&mut h, &name, bytes.as_slice())
                        .map_err(io)?;
                }
                Entry::File { src, mode } => {
                    let file =
                        std::fs::File::open(src).map_err(|e| format!("{}: {e}", src.display()))?;
                    let size = file.metadata().map_err(io)?.len();
                    let mut h = header(size, *mode, tar::EntryType::Regular);
                    tar.append_data(&mut h, &name, file).map_err(io)?;
                }
                // The engine applies a link's own header mode to the shared file.
                Entry::HardLink { target, mode } => {
                    let mut h = header(0, *mode, tar::EntryType::Link);
                    tar.append_link(&mut h, &name, format!("rootfs/{target}"))
                        .map_err(io)?;
                }
            }
        }
        tar.into_inner().map_err(io)
    }
}

/// The libraries `ldd` lists for `file`: (name as linked, path on this machine).
fn ldd(file: &Path) -> Result<Vec<(String, PathBuf)>, String> {
    let out = Command::new("ldd")
        .arg(file)
        .output()
        .map_err(|e| format!("cannot run ldd: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut libs = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.contains("not found") {
            return Err(format!("{}: {line}", file.display()));
        }
        let path = match line.split_once(" => ") {
            Some((_, rest)) => rest.split(" (").next().unwrap_or_default(),
            None => line.split(" (").next().unwrap_or_default(),
        };
        if path.starts_with('/') {
            let name = Path::new(path)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let name = match line.split_once(" => ") {
                Some((soname, _)) => soname.trim().to_string(),
                None => name,
            };
            libs.push((name, PathBuf::from(path)));
        }
    }
    Ok(libs)
}

/// Where `ldconfig -p` finds a library by its name.
fn find_library(name: &str) -> Result<PathBuf, String> {
    let out = Command::new("ldconfig")
        .arg("-p")
        .output()
        .or_else(|_| Command::new("/sbin/ldconfig").arg("-p").output())
        .map_err(|e| format!("cannot run ldconfig: {e}"))?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.trim_start().starts_with(&format!("{name} ")) && l.contains("x86-64"))
        .find_map(|l| l.split(" => ").nth(1).map(|p| PathBuf::from(p.trim())))
        .ok_or_else(|| {
            format!("{name} is not installed (the image needs Mesa's EGL: libegl1 libegl-mesa0 libgl1-mesa-dri; deploy/setup.sh installs them)")
        })
}

/// The dynamic loader named by `ldd` (always linked under its absolute path).
const LOADER: &str = "ld-linux-x86-64.so.2";

/// The root filesystem of everything that runs `kinitro`: the binary's libraries, Mesa's software
/// EGL (glvnd, Mesa's vendor library, its driver), MuJoCo, CA certificates, a passwd file naming
/// the non-root user and the family's scene files. The binary itself is not in it (see
/// [`RootFs::context`]).
pub(super) fn kinitro_root(binary: &Path, assets: &Path) -> Result<RootFs, String> {
    let mut fs = RootFs::default();
    let egl = find_library("libEGL.so.1")?;
    let mesa = find_library("libEGL_mesa.so.0")?;
    let dri = mesa
        .parent()
        .map(|d| d.join("dri"))
        .ok_or("no directory for Mesa's drivers")?;
    let mut roots = vec![binary.to_path_buf(), egl, mesa];
    for driver in ["swrast_dri.so", "kms_swrast_dri.so"] {
        let path = dri.join(driver);
        if path.is_file() {
            fs.add_file(&format!("{LIB_DIR}/dri/{driver}"), &path, 0o644)?;
            roots.push(path);
        }
    }
    if !fs.entries.keys().any(|k| k.ends_with("swrast_dri.so")) {
        return Err(format!(
            "Mesa's software driver is missing in {} (install libgl1-mesa-dri)",
            dri.display()
        ));
    }
    for name in ["libEGL.so.1", "libEGL_mesa.so.0", "libGLdispatch.so.0"] {
        let path = find_library(name)?;
        fs.add_file(&format!("{LIB_DIR}/{name}"), &path, 0o644)?;
    }
    fs.add_libraries(roots)?;
    let vendor = Path::new("/usr/share/glvnd/egl_vendor.d/50_mesa.json");
    if vendor.is_file() {
        fs.add_file("usr/share/glvnd/egl_vendor.d/50_mesa.json", vendor, 0o644)?;
    }
    let certs = Path::new("/etc/ssl/certs/ca-certificates.crt");
    if certs.is_file() {
        fs.add_file("etc/ssl/certs/ca-certificates.crt", certs, 0o644)?;
    }
    fs.add_user("kinitro", USER_ID, "/tmp");
    fs.entries.insert("tmp".into(), Entry::Dir { mode: 0o1777 });
    fs.add_tree(ASSETS_DIR.trim_start_matches('/'), assets)?;
    Ok(fs)
}

/// The root filesystem and Dockerfile of `request`'s image.
fn recipe(request: &BuildRequest) -> Result<(RootFs, String), String> {
    match request.kind {
        Kind::Env(family) => Ok((
            kinitro_root(&request.binary, &request.assets)?,
            dockerfile(family),
        )),
        Kind::Runtime => super::service_image::runtime(&request.binary, &request.assets),
        Kind::Postgres => super::service_image::postgres(),
        Kind::Verifier => super::verifier_image::verifier(&request.python_packages),
    }
}

/// The Dockerfile over the assembled root.
fn dockerfile(family: Family) -> String {
    let version = env!("CARGO_PKG_VERSION");
    format!(
        r#"FROM scratch
COPY rootfs/ /
COPY kinitro /{BINARY}
ENV PATH=/usr/local/bin:/usr/bin:/bin \
    LD_LIBRARY_PATH=/{LIB_DIR} \
    KINITRO_METAWORLD_ASSETS_DIR={ASSETS_DIR} \
    HOME=/tmp XDG_DATA_HOME=/tmp XDG_STATE_HOME=/tmp XDG_CACHE_HOME=/tmp \
    LP_NUM_THREADS=1 \
    KINITRO_LOG_FORMAT=json
LABEL {}={} {VERSION_LABEL}={version} {FAMILY_LABEL}={}
USER {USER_ID}:{USER_ID}
WORKDIR /tmp
EXPOSE 8000
HEALTHCHECK --interval=5s --timeout=5s --start-period=120s --retries=3 CMD ["kinitro", "env", "healthcheck"]
CMD ["kinitro", "env", "serve"]
"#,
        AFFINETES_LABEL.0,
        AFFINETES_LABEL.1,
        family.name()
    )
}

/// What a finished build reports.
#[derive(Debug, Clone)]
pub struct Built {
    /// The image id.
    pub id: String,
    /// Its size in bytes.
    pub size: i64,
}

/// Builds `request`'s image on `engine`; `progress` receives the engine's output lines.
pub async fn build(
    engine: &Engine,
    request: &BuildRequest,
    mut progress: impl FnMut(&str),
) -> Result<Built, String> {
    let request_owned = request.clone();
    let context = tokio::task::spawn_blocking(move || {
        let (root, dockerfile) = recipe(&request_owned)?;
        let binary = (!matches!(request_owned.kind, Kind::Postgres | Kind::Verifier))
            .then_some(&request_owned.binary);
        root.context(&dockerfile, binary.map(PathBuf::as_path))
    })
    .await
    .map_err(|e| e.to_string())??;
    progress(&format!(
        "build context: {:.1} MB",
        context.len() as f64 / 1e6
    ));
    let options = BuildImageOptionsBuilder::default()
        .dockerfile("Dockerfile")
        .t(&request.tag)
        .nocache(request.no_cache)
        .rm(true)
        .forcerm(true)
        .pull("false")
        .build();
    let mut stream =
        engine
            .docker
            .build_image(options, None, Some(bollard::body_full(context.into())));
    while let Some(item) = stream.next().await {
        let info = item.map_err(|e| format!("image build failed: {e}"))?;
        if let Some(detail) = info.error_detail.and_then(|d| d.message) {
            return Err(format!("image build failed: {detail}"));
        }
        if let Some(line) = info.stream {
            let line = line.trim_end();
            if !line.is_empty() {
                progress(line);
            }
        }
    }
    let inspect = engine
        .docker
        .inspect_image(&request.tag)
        .await
        .map_err(|e| format!("the built image {} cannot be inspected: {e}", request.tag))?;
    Ok(Built {
        id: inspect.id.unwrap_or_default(),
        size: inspect.size.unwrap_or_default(),
    })
}

/// Splits `repo[:tag]` (a registry host may carry a port: `host:5000/repo:tag`).
pub fn split_tag(image: &str) -> (&str, &str) {
    match image.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => (repo, tag),
        _ => (image, "latest"),
    }
}

/// Pushes `tag` (re-tagged under `registry` first when one is given); fails with the engine's
/// message when no registry answers.
pub async fn push(engine: &Engine, tag: &str, registry: Option<&str>) -> Result<String, String> {
    let (repo, version) = split_tag(tag);
    let target_repo = match registry {
        Some(r) => {
            let target = format!("{}/{repo}", r.trim_end_matches('/'));
            let options = TagImageOptionsBuilder::default()
                .repo(&target)
                .tag(version)
                .build();
            engine
                .docker
                .tag_image(tag, Some(options))
                .await
                .map_err(|e| format!("cannot tag {tag} as {target}:{version}: {e}"))?;
            target
        }
        None => repo.to_string(),
    };
    let options = PushImageOptionsBuilder::default().tag(version).build();
    let mut stream = engine.docker.push_image(&target_repo, Some(options), None);
    while let Some(item) = stream.next().await {
        let info = item.map_err(|e| format!("push of {target_repo}:{version} failed: {e}"))?;
        if let Some(message) = info.error_detail.and_then(|d| d.message) {
            return Err(format!("push of {target_repo}:{version} failed: {message}"));
        }
    }
    Ok(format!("{target_repo}:{version}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_split_at_the_last_colon_outside_the_registry() {
        assert_eq!(
            split_tag("kinitro/metaworld:v1"),
            ("kinitro/metaworld", "v1")
        );
        assert_eq!(
            split_tag("127.0.0.1:5000/k/m:v2"),
            ("127.0.0.1:5000/k/m", "v2")
        );
        assert_eq!(
            split_tag("127.0.0.1:5000/k/m"),
            ("127.0.0.1:5000/k/m", "latest")
        );
    }

    #[test]
    fn the_dockerfile_pulls_nothing_and_runs_unprivileged() {
        let d = dockerfile(Family::Metaworld);
        assert!(d.starts_with("FROM scratch\n"));
        assert!(d.contains("USER 10001:10001") && d.contains("affinetes.env.type=function_based"));
        assert!(d.contains(r#"CMD ["kinitro", "env", "serve"]"#));
    }
}
