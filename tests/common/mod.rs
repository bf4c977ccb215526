//! Test harness: one throwaway PostgreSQL per test binary, on a free loopback port, started on first
//! use and stopped (its directory removed) when the test binary exits. Each test takes a fresh
//! database in it, so tests run in parallel without seeing each other.
#![allow(dead_code)]

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
