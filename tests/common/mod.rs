//! Test harness: one throwaway PostgreSQL per test binary, on a free loopback port, started on first
//! use and stopped (its directory removed) when the test binary exits. Each test takes a fresh
//! database in it, so tests run in parallel without seeing each other.
#![allow(dead_code)]

pub mod fake_hub;
pub mod task_pool;

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

use kinitro::config::DatabaseUrl;
use kinitro::db::managed::{ClusterOptions, ManagedPostgres};

struct Harness {
    cluster: Mutex<Option<ManagedPostgres>>,
    root: PathBuf,
    template: DatabaseUrl,
}

static HARNESS: OnceLock<Harness> = OnceLock::new();
static NEXT_DB: AtomicUsize = AtomicUsize::new(0);

extern "C" fn stop_cluster() {
    if let Some(h) = HARNESS.get() {
        if let Some(mut c) = h.cluster.lock().ok().and_then(|mut g| g.take()) {
            c.stop();
        }
        let _ = std::fs::remove_dir_all(&h.root);
    }
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn harness() -> &'static Harness {
    HARNESS.get_or_init(|| {
        let root = std::env::temp_dir().join(format!(
            "kinitro-test-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        let cluster = ManagedPostgres::start(&ClusterOptions {
            data_dir: root.clone(),
            tcp_port: Some(free_port()),
        })
        .expect("start the throwaway PostgreSQL (is the server installed? run deploy/setup.sh)");
        let template = cluster.tcp_url("postgres").unwrap();
        // SAFETY: registering a plain extern "C" function with no captured state.
        unsafe { nix::libc::atexit(stop_cluster) };
        Harness {
            cluster: Mutex::new(Some(cluster)),
            root,
            template,
        }
    })
}

/// A URL (loopback TCP) of a database that does not exist yet, on the test cluster.
pub fn unused_database_url() -> DatabaseUrl {
    let h = harness();
    let name = format!(
        "t{}_{}",
        std::process::id(),
        NEXT_DB.fetch_add(1, Ordering::SeqCst)
    );
    DatabaseUrl::parse(
        &h.template
            .as_str()
            .replace("/postgres", &format!("/{name}")),
    )
    .unwrap()
}

/// A fresh database with the schema applied.
pub async fn fresh_database() -> DatabaseUrl {
    let url = unused_database_url();
    kinitro::db::prepare(&url)
        .await
        .expect("prepare test database");
    url
}

/// Runs the `kinitro` binary with `args` and extra environment variables.
pub fn kinitro(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kinitro"));
    cmd.args(args).env("KINITRO_LOG_FORMAT", "text");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run kinitro")
}

/// stdout of an output as text.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// stderr of an output as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A plain HTTP/1.1 GET on loopback; returns (status, body).
pub fn http_get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = String::new();
    s.read_to_string(&mut raw)?;
    let status = raw.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = raw
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    Ok((status, body))
}

/// Polls `path` until it answers 200 or `secs` pass.
pub fn wait_http_ok(port: u16, path: &str, secs: u64) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while std::time::Instant::now() < deadline {
        if matches!(http_get(port, path), Ok((200, _))) {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    false
}

/// A response of [`http`].
#[derive(Debug)]
pub struct Resp {
    /// Status code.
    pub status: u16,
    /// Raw header block.
    pub headers: String,
    /// Body text.
    pub body: String,
}

impl Resp {
    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// One HTTP/1.1 request on loopback (`Connection: close`, body as JSON unless a content type is given).
pub fn http(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> Resp {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if let Some(b) = body {
        if !headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
        {
            req.push_str("Content-Type: application/json\r\n");
        }
        req.push_str(&format!("Content-Length: {}\r\n", b.len()));
    }
    req.push_str("\r\n");
    if let Some(b) = body {
        req.push_str(b);
    }
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let status = head.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    Resp {
        status,
        headers: head.to_string(),
        body,
    }
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        s = &rest[n + 2..];
    }
    out
}

/// A running `kinitro api` process, killed on drop.
pub struct ApiProcess {
    /// Its port.
    pub port: u16,
    child: std::process::Child,
}

impl ApiProcess {
    /// Starts `kinitro api` on `url` with `env`, waiting until /v1/status answers.
    pub fn start(url: &DatabaseUrl, env: &[(&str, &str)]) -> Self {
        Self::start_on(url, env, free_port())
    }

    /// As [`ApiProcess::start`], on a given port (to restart an API where clients expect it).
    #[allow(dead_code)]
    pub fn start_on(url: &DatabaseUrl, env: &[(&str, &str)], port: u16) -> Self {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_kinitro"));
        cmd.args([
            "api",
            "--database-url",
            url.as_str(),
            "--port",
            &port.to_string(),
            "--workers",
            "2",
        ])
        .env("KINITRO_LOG_FORMAT", "text")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().unwrap();
        let me = Self { port, child };
        assert!(
            wait_http_ok(port, "/health", 30),
            "kinitro api did not start"
        );
        me
    }
}

impl Drop for ApiProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether this run is CI (`CI` set, and not `false`, `0` or empty): there every tool and fixture a
/// test needs is installed (`.ci/run` runs deploy/setup.sh), so nothing may skip.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !matches!(v.trim(), "" | "0" | "false"))
}

/// Skips the calling test's check, said aloud; under CI ([`in_ci`]) fails the test instead, so a
/// missing tool can never pass as a silent skip.
#[track_caller]
pub fn skip(reason: &str) {
    assert!(!in_ci(), "cannot skip in CI: {reason}");
    eprintln!("SKIPPED: {reason}");
}
