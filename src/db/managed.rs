//! The managed local PostgreSQL of `kinitro run` without a database URL (docs/database.md §8), also
//! used by the test harness to start throwaway servers.
//!
//! The server listens on a Unix socket inside its data directory (plus, optionally, one loopback TCP
//! port), every login uses a generated password, and it runs as the `postgres` system user when this
//! process is root (PostgreSQL refuses to run as root).

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::{chown, Pid, User};

use super::connect::DbError;
use crate::config::{running_as_root, DatabaseUrl};

/// Longest Unix socket path the kernel accepts.
const MAX_SOCKET_PATH: usize = 107;
/// How long to wait for the server to accept connections.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Where the PostgreSQL server programs are.
#[derive(Debug, Clone)]
pub struct ServerBinaries {
    /// `initdb`.
    pub initdb: PathBuf,
    /// `postgres`.
    pub postgres: PathBuf,
    /// `pg_isready`.
    pub pg_isready: PathBuf,
}

impl ServerBinaries {
    /// From `PATH`, else from the highest-versioned `/usr/lib/postgresql/<v>/bin`.
    pub fn locate() -> Result<Self, DbError> {
        let in_dir = |dir: &Path| -> Option<Self> {
            let b = Self {
                initdb: dir.join("initdb"),
                postgres: dir.join("postgres"),
                pg_isready: dir.join("pg_isready"),
            };
            (b.initdb.is_file() && b.postgres.is_file() && b.pg_isready.is_file()).then_some(b)
        };
        let from_path = std::env::var_os("PATH")
            .into_iter()
            .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
            .find_map(|d| in_dir(&d));
        let from_debian = || {
            let mut versions: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
                .ok()?
                .filter_map(|e| {
                    let e = e.ok()?;
                    let v = e.file_name().to_str()?.parse::<u32>().ok()?;
                    Some((v, e.path().join("bin")))
                })
                .collect();
            versions.sort();
            versions.into_iter().rev().find_map(|(_, d)| in_dir(&d))
        };
        from_path.or_else(from_debian).ok_or_else(|| {
            DbError::Other(
                "PostgreSQL server binaries (initdb, postgres, pg_isready) not found".into(),
            )
        })
    }
}

/// Options of one managed cluster.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// `<data_dir>`; the cluster lives in `<data_dir>/postgres`.
    pub data_dir: PathBuf,
    /// Also listen on `127.0.0.1:<port>`.
    pub tcp_port: Option<u16>,
}

/// A running managed cluster; stopped (fast shutdown) on [`ManagedPostgres::stop`] or drop.
#[derive(Debug)]
pub struct ManagedPostgres {
    dir: PathBuf,
    url: DatabaseUrl,
    /// `None` when an already-running server of this directory was adopted.
    child: Option<Child>,
}

/// The system user the server runs as when this process is root.
fn server_user() -> Result<Option<User>, DbError> {
    if !running_as_root() {
        return Ok(None);
    }
    match User::from_name("postgres") {
        Ok(Some(u)) => Ok(Some(u)),
        _ => Err(DbError::Other(
            "cannot run PostgreSQL as root: create a 'postgres' user or pass --database-url".into(),
        )),
    }
}

fn io_err(what: &str, path: &Path, e: std::io::Error) -> DbError {
    DbError::Other(format!("{what} {}: {e}", path.display()))
}

/// Writes `contents` to a new file of mode 0600.
fn write_private(path: &Path, contents: &str) -> Result<(), DbError> {
    let _ = fs::remove_file(path);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| io_err("cannot write", path, e))?;
    f.write_all(contents.as_bytes())
        .map_err(|e| io_err("cannot write", path, e))
}

fn as_user(cmd: &mut Command, user: &Option<User>) {
    if let Some(u) = user {
        cmd.uid(u.uid.as_raw()).gid(u.gid.as_raw());
    }
}

impl ManagedPostgres {
    /// Initialises the cluster if needed, starts the server and waits until it accepts connections.
    /// Blocking: call it from a blocking thread in async code.
    pub fn start(opts: &ClusterOptions) -> Result<Self, DbError> {
        let bins = ServerBinaries::locate()?;
        let user = server_user()?;
        let data_dir = std::path::absolute(&opts.data_dir)
            .map_err(|e| io_err("bad data directory", &opts.data_dir, e))?;
        let dir = data_dir.join("postgres");
        let port = opts.tcp_port.unwrap_or(5432);
        let socket = dir.join(format!(".s.PGSQL.{port}"));
        if socket.as_os_str().len() > MAX_SOCKET_PATH {
            return Err(DbError::Other(format!(
                "the PostgreSQL socket path {} is longer than {MAX_SOCKET_PATH} bytes: choose a shorter --data-dir",
                socket.display()
            )));
        }
        fs::create_dir_all(&data_dir).map_err(|e| io_err("cannot create", &data_dir, e))?;
        // The postgres user must be able to reach its directory below ours.
        if user.is_some() {
            let _ = fs::set_permissions(&data_dir, fs::Permissions::from_mode(0o755));
        }
        if !dir.join("PG_VERSION").is_file() {
            Self::init(&bins, &user, &data_dir, &dir)?;
        }
        let password = fs::read_to_string(dir.join("password"))
            .map_err(|e| io_err("cannot read", &dir.join("password"), e))?;
        let mut url = format!(
            "postgresql://kinitro:{}@/kinitro?host={}",
            password.trim(),
            dir.display()
        );
        if let Some(p) = opts.tcp_port {
            url.push_str(&format!("&port={p}"));
        }
        write_private(&dir.join("url"), &url)?;
        let url = DatabaseUrl::parse(&url).map_err(DbError::Other)?;

        let socket_dir = dir.clone();
        let ready = |b: &ServerBinaries| {
            Command::new(&b.pg_isready)
                .arg("-q")
                .arg("-h")
                .arg(&socket_dir)
                .arg("-p")
                .arg(port.to_string())
                .status()
                .is_ok_and(|s| s.success())
        };
        if ready(&bins) {
            tracing::warn!(dir = %dir.display(), "adopting an already running managed PostgreSQL");
            return Ok(Self {
                dir,
                url,
                child: None,
            });
        }
        let mut cmd = Command::new(&bins.postgres);
        cmd.arg("-D")
            .arg(&dir)
            .arg("-k")
            .arg(&dir)
            .arg("-p")
            .arg(port.to_string());
        match opts.tcp_port {
            Some(_) => cmd.args(["-c", "listen_addresses=127.0.0.1"]),
            None => cmd.args(["-c", "listen_addresses="]),
        };
        let log = fs::File::create(data_dir.join("postgres.log"))
            .map_err(|e| io_err("cannot create", &data_dir.join("postgres.log"), e))?;
        if let Some(u) = &user {
            let _ = chown(&data_dir.join("postgres.log"), Some(u.uid), Some(u.gid));
        }
        cmd.stdin(Stdio::null())
            .stdout(
                log.try_clone()
                    .map_err(|e| io_err("cannot open", &dir, e))?,
            )
            .stderr(log)
            // Own process group: a Ctrl-C in the terminal reaches us, and we shut it down in order.
            .process_group(0);
        as_user(&mut cmd, &user);
        let child = cmd
            .spawn()
            .map_err(|e| io_err("cannot start", &bins.postgres, e))?;
        let mut me = Self {
            dir,
            url,
            child: Some(child),
        };
        let deadline = Instant::now() + READY_TIMEOUT;
        while !ready(&bins) {
            if let Some(Ok(Some(status))) = me.child.as_mut().map(|c| c.try_wait()) {
                me.child = None;
                return Err(DbError::Other(format!(
                    "managed PostgreSQL exited ({status}) during start-up; see {}",
                    data_dir.join("postgres.log").display()
                )));
            }
            if Instant::now() > deadline {
                me.stop();
                return Err(DbError::Other(format!(
                    "managed PostgreSQL did not become ready within {}s; see {}",
                    READY_TIMEOUT.as_secs(),
                    data_dir.join("postgres.log").display()
                )));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(me)
    }

    fn init(
        bins: &ServerBinaries,
        user: &Option<User>,
        data_dir: &Path,
        dir: &Path,
    ) -> Result<(), DbError> {
        let password = hex::encode(rand::random::<[u8; 32]>());
        let pwfile = data_dir.join(format!(".pwfile-{}", std::process::id()));
        write_private(&pwfile, &password)?;
        fs::create_dir_all(dir).map_err(|e| io_err("cannot create", dir, e))?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
            .map_err(|e| io_err("cannot set permissions of", dir, e))?;
        if let Some(u) = user {
            for p in [dir, pwfile.as_path()] {
                chown(p, Some(u.uid), Some(u.gid))
                    .map_err(|e| io_err("cannot chown", p, e.into()))?;
            }
        }
        let mut cmd = Command::new(&bins.initdb);
        cmd.arg("-D")
            .arg(dir)
            .args([
                "-U",
                "kinitro",
                "-A",
                "scram-sha-256",
                "-E",
                "UTF8",
                "--locale=C",
            ])
            .arg(format!("--pwfile={}", pwfile.display()))
            .stdin(Stdio::null());
        as_user(&mut cmd, user);
        let out = cmd.output();
        let _ = fs::remove_file(&pwfile);
        let out = out.map_err(|e| io_err("cannot run", &bins.initdb, e))?;
        if !out.status.success() {
            return Err(DbError::Other(format!(
                "initdb failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        write_private(&dir.join("password"), &password)
    }

    /// The connection URL of the `kinitro` database (socket, plus port when one was given).
    pub fn url(&self) -> &DatabaseUrl {
        &self.url
    }

    /// A URL for `database` over loopback TCP (clusters started with a `tcp_port` only).
    pub fn tcp_url(&self, database: &str) -> Option<DatabaseUrl> {
        let port = self.url.pg_config().get_ports().first().copied()?;
        let password = fs::read_to_string(self.dir.join("password")).ok()?;
        DatabaseUrl::parse(&format!(
            "postgresql://kinitro:{}@127.0.0.1:{port}/{database}",
            password.trim()
        ))
        .ok()
    }

    /// Fast shutdown, waiting for the server to exit. A no-op for an adopted server.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGINT);
            let _ = child.wait();
        }
    }
}

impl Drop for ManagedPostgres {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Reads the URL a running managed cluster of `<data_dir>` wrote (`kinitro db --data-dir`).
pub fn url_of(data_dir: &Path) -> Result<DatabaseUrl, DbError> {
    let path = data_dir.join("postgres").join("url");
    let raw = fs::read_to_string(&path).map_err(|e| {
        DbError::Other(format!(
            "cannot read {}: {e} (has `kinitro run --data-dir {}` started the managed cluster?)",
            path.display(),
            data_dir.display()
        ))
    })?;
    DatabaseUrl::parse(raw.trim()).map_err(DbError::Other)
}
