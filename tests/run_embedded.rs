//! `kinitro run` without a database URL: the managed PostgreSQL is created, reused across restarts,
//! reachable by `kinitro db --data-dir`, and stopped on exit; the API answers on it.

mod common;

use std::process::{Child, Command, Stdio};

use common::{free_port, http_get, kinitro, stderr, stdout, wait_http_ok};
use diesel_async::SimpleAsyncConnection;

fn start_run(data_dir: &str, port: u16) -> Child {
    Command::new(env!("CARGO_BIN_EXE_kinitro"))
        .args([
            "run",
            "--no-auth",
            "--data-dir",
            data_dir,
            "--port",
            &port.to_string(),
        ])
        .env("KINITRO_LOG_FORMAT", "text")
        // The scheduler reads the chain when no miners file is given: a closed loopback port here.
        .env("KINITRO_SCHEDULER_NETWORK", "ws://127.0.0.1:1")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn stop(mut child: Child) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "kinitro run exited with {status}");
}

#[tokio::test(flavor = "multi_thread")]
async fn managed_cluster_lifecycle() {
    let tmp = tempfile::Builder::new()
        .prefix("kinitro-run-")
        .tempdir_in("/tmp")
        .unwrap();
    let data_dir = tmp.path().to_str().unwrap().to_string();
    let port = free_port();

    let run = start_run(&data_dir, port);
    assert!(
        wait_http_ok(port, "/health", 60),
        "API did not become healthy"
    );
    let (status, body) = http_get(port, "/health").unwrap();
    assert_eq!(status, 200);
    let health: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["status"], "healthy");
    assert_eq!(health["version"], env!("CARGO_PKG_VERSION"));
    let (status, body) = http_get(port, "/v1/weights/latest").unwrap();
    assert_eq!(
        (status, body.as_str()),
        (404, r#"{"detail":"No weights available yet"}"#)
    );
    let (status, body) = http_get(port, "/no/such/route").unwrap();
    assert_eq!((status, body.as_str()), (404, r#"{"detail":"Not Found"}"#));
    let (status, body) = http_get(port, "/v1/weights/abc").unwrap();
    assert_eq!(status, 422);
    assert_eq!(
        body,
        r#"{"detail":"block: 'abc' is not a non-negative integer"}"#
    );

    // The URL file is private; `kinitro db --data-dir` reaches the cluster through it.
    let url_file = tmp.path().join("postgres/url");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&url_file).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    let url = kinitro::db::managed::url_of(tmp.path()).unwrap();
    let mut conn = kinitro::db::connect(&url).await.unwrap();
    conn.batch_execute(
        "INSERT INTO evaluation_cycles (block_number, status, n_miners, n_environments, \
           duration_seconds, env_ids, episodes_per_env, registry_source) \
         VALUES (777, 'completed', 1, 1, 12.5, '[\"metaworld/reach-v3\"]', 2, 'file'); \
         INSERT INTO computed_weights (cycle_id, block_number, weights_json, weights_u16_json) \
         VALUES (1, 777, '{\"3\": 1.0}', '{\"uids\": [3], \"values\": [65535]}');",
    )
    .await
    .unwrap();
    drop(conn);
    let o = kinitro(&["db", "--data-dir", &data_dir, "status"], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("latest weights: block 777 miners 1"),
        "{}",
        stdout(&o)
    );

    let o = kinitro(
        &[
            "healthcheck",
            "--url",
            &format!("http://127.0.0.1:{port}/health"),
        ],
        &[],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    stop(run);

    // Stopped: the socket is gone, so the API and the cluster are down.
    assert!(http_get(port, "/health").is_err());
    let o = kinitro(&["db", "--data-dir", &data_dir, "status"], &[]);
    assert_eq!(o.status.code(), Some(1));
    let o = kinitro(
        &[
            "healthcheck",
            "--url",
            &format!("http://127.0.0.1:{port}/health"),
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(1));

    // Restart: the same cluster, with its data.
    let run = start_run(&data_dir, port);
    assert!(wait_http_ok(port, "/health", 60));
    let (status, body) = http_get(port, "/v1/weights/latest").unwrap();
    assert_eq!(status, 200, "{body}");
    let w: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(w["block"], 777);
    assert_eq!(w["block_number"], 777);
    assert_eq!(w["weights"], serde_json::json!({"3": 1.0}));
    assert_eq!(w["metadata"]["evaluation_duration_seconds"], 12.5);
    assert!(w["created_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(w["created_at"], w["timestamp"]);
    let (status, _) = http_get(port, "/v1/weights/777").unwrap();
    assert_eq!(status, 200);
    let (status, body) = http_get(port, "/v1/weights/778").unwrap();
    assert_eq!(
        (status, body.as_str()),
        (404, r#"{"detail":"No weights found for block 778"}"#)
    );
    stop(run);
}

#[test]
fn demo_completes_a_cycle_in_which_the_expert_earns_the_most() {
    let tmp = tempfile::Builder::new()
        .prefix("kinitro-demo-")
        .tempdir_in("/tmp")
        .unwrap();
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_kinitro"))
        .args([
            "run",
            "--demo",
            "--data-dir",
            tmp.path().to_str().unwrap(),
            "--port",
            &port.to_string(),
        ])
        .env("KINITRO_LOG_FORMAT", "text")
        .env("KINITRO_SCHEDULER_EPISODES_PER_ENV", "1")
        .env("KINITRO_EXECUTOR_MAX_TIMESTEPS", "150")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(
        wait_http_ok(port, "/health", 60),
        "API did not become healthy"
    );
    let start = std::time::Instant::now();
    let weights = loop {
        let (status, body) = http_get(port, "/v1/weights/latest").unwrap();
        if status == 200 {
            break serde_json::from_str::<serde_json::Value>(&body).unwrap();
        }
        assert!(
            start.elapsed().as_secs() < 180,
            "no weights after 180 s: {body}"
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    };
    let w = |uid: &str| weights["weights"][uid].as_f64().unwrap();
    assert!(
        w("0") > w("1") && w("0") > w("2"),
        "expert (uid 0) must earn the most: {weights}"
    );
    let (_, miners) = http_get(port, "/v1/miners").unwrap();
    for repo in ["demo/expert", "demo/random", "demo/zero"] {
        assert!(
            miners.contains(repo),
            "{repo} missing from /v1/miners: {miners}"
        );
    }
    // The dashboard works from the demo: its pages show the demo's miners (docs/dashboard.md).
    let (status, board) = http_get(port, "/leaderboard").unwrap();
    assert_eq!(status, 200, "{board}");
    for (uid, repo) in [(0, "demo/expert"), (1, "demo/random"), (2, "demo/zero")] {
        assert!(
            board.contains(&format!("id=\"miner-{uid}\"")),
            "uid {uid} row: {board}"
        );
        assert!(board.contains(repo), "{repo} on the leaderboard");
    }
    for path in ["/", "/miners/0", "/pareto", "/weights"] {
        let (status, page) = http_get(port, path).unwrap();
        assert_eq!(status, 200, "{path}: {page}");
        assert!(page.starts_with("<!doctype html>"), "{path}");
    }
    let mut child = child;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let mut out = String::new();
    std::io::Read::read_to_string(child.stdout.as_mut().unwrap(), &mut out).unwrap();
    assert!(child.wait().unwrap().success());
    assert!(
        out.contains("demo miner uid 0 (demo/expert)") && out.contains("/v1/weights/latest"),
        "{out}"
    );
}
