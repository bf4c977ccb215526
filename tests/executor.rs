//! The remote executor end to end on loopback (docs/executor.md, docs/miner-protocol.md): a real
//! PostgreSQL, the real API, real `kinitro miner serve` processes, misbehaving miners, a
//! FastAPI/pydantic miner, a killed executor and an API restart.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::task_pool::{add_tasks, miner, rows, wait_terminal, Proc};
use common::{free_port, fresh_database, wait_http_ok, ApiProcess};
use diesel::QueryableByName;
use diesel_async::RunQueryDsl;
use serde_json::Value;

/// At least 32 characters: the API refuses shorter keys.
const KEY: &str = "executor-test-key-0123456789abcdef0123";

fn executor(api_port: u16, id: &str, spool: &std::path::Path, max_steps: &str) -> Proc {
    executor_with(api_port, id, spool, max_steps, &[])
}

fn executor_with(
    api_port: u16,
    id: &str,
    spool: &std::path::Path,
    max_steps: &str,
    env: &[(&str, &str)],
) -> Proc {
    let child = Command::new(env!("CARGO_BIN_EXE_kinitro"))
        .args([
            "executor",
            "--api-url",
            &format!("http://127.0.0.1:{api_port}"),
            "--executor-id",
            id,
        ])
        .env("KINITRO_EXECUTOR_API_KEY", KEY)
        .env("KINITRO_EXECUTOR_ALLOW_PRIVATE_ENDPOINTS", "true")
        .env("KINITRO_EXECUTOR_PRIVILEGED_STATE", "true")
        .env("KINITRO_EXECUTOR_USE_IMAGES", "false")
        .env("KINITRO_EXECUTOR_MAX_TIMESTEPS", max_steps)
        .env("KINITRO_EXECUTOR_POOLS", "2")
        .env("KINITRO_EXECUTOR_EPISODES_PER_POOL", "8")
        .env("KINITRO_EXECUTOR_POLL_INTERVAL_SECONDS", "0.2")
        .env("KINITRO_EXECUTOR_SPOOL_DIR", spool)
        .env("KINITRO_LOG_FORMAT", "text")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    Proc(child)
}

/// The first `/act` body the `record` miner received.
static RECORDED_ACT: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);

/// A hand-written HTTP server for miners that break the protocol; the first path segment picks
/// the behaviour (`/slow/act`, `/garbage/act`, …; `/record/act` keeps the first body it receives and
/// answers a valid action). Every answer closes its connection.
fn bad_miners() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || serve_bad(stream));
        }
    });
    base
}

fn serve_bad(mut s: std::net::TcpStream) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 65536];
    let (head, body_len) = loop {
        let Ok(n) = s.read(&mut chunk) else { return };
        if n == 0 {
            return;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_string();
            let len = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                })
                .unwrap_or(0);
            break (head, end + 4 + len);
        }
    };
    while buf.len() < body_len {
        let Ok(n) = s.read(&mut chunk) else { return };
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
    let kind = path
        .trim_start_matches('/')
        .split('/')
        .next()
        .unwrap_or("")
        .to_string();
    let is_reset = path.ends_with("/reset");
    let ok = |s: &mut std::net::TcpStream, body: &str| {
        let _ = write!(s, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
    };
    if is_reset && kind != "redirect" {
        return ok(&mut s, r#"{"status":"ok"}"#);
    }
    match kind.as_str() {
        "record" => {
            let body = String::from_utf8_lossy(&buf[head.len() + 4..body_len.min(buf.len())]);
            let body = body.to_string();
            RECORDED_ACT.lock().unwrap().get_or_insert(body);
            ok(&mut s, r#"{"action":{"continuous":{"ee_twist":[0,0,0]}}}"#);
        }
        "redirect" => {
            let _ = write!(s, "HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:1/\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        }
        "slow" => {
            std::thread::sleep(Duration::from_millis(1500));
            ok(&mut s, r#"{"action":{}}"#);
        }
        "valid" => ok(&mut s, r#"{"action":{"continuous":{"ee_twist":[0,0,0]}}}"#),
        "garbage" => ok(&mut s, "this is not json"),
        "nan" => ok(
            &mut s,
            r#"{"action":{"continuous":{"ee_twist":[NaN,0,0]}}}"#,
        ),
        "noaction" => ok(&mut s, r#"{"status":"thinking"}"#),
        "badaction" => ok(
            &mut s,
            r#"{"action":{"continuous":{"ee_twist":[0,0,0,0,0,0,0]}}}"#,
        ),
        "huge" => ok(
            &mut s,
            &format!(
                r#"{{"action":{{}},"pad":"{}"}}"#,
                "x".repeat(2 * 1024 * 1024)
            ),
        ),
        "error" => {
            let body = r#"{"detail":"policy crashed"}"#;
            let _ = write!(s, "HTTP/1.1 500 Internal Server Error\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
        }
        _ => {} // "disconnect": close without an answer
    }
}

#[actix_web::test]
async fn reference_and_misbehaving_miners_are_scored_with_the_right_errors() {
    let url = fresh_database().await;
    let (_expert, expert) = miner("expert", 0);
    let (_random, random) = miner("random", 0);
    let bad = bad_miners();
    let uuid = |i: usize| format!("00000000-0000-4000-8000-{i:012}");
    let mut tasks = vec![];
    // Four identical expert episodes (same sim seed) among others: interleaving changes nothing.
    for i in 0..4 {
        tasks.push((uuid(i), expert.clone(), "metaworld/reach-v3", 42));
    }
    tasks.push((uuid(4), random.clone(), "metaworld/reach-v3", 43));
    let broken = [
        ("slow", "Miner action timeout at step 0"),
        ("garbage", "Miner action failed at step 0: response is not valid JSON"),
        ("nan", "Miner action failed at step 0: response is not valid JSON"),
        ("noaction", "Miner returned no action at step 0"),
        ("badaction", "Miner action failed at step 0: invalid action: continuous.ee_twist must have 3 to 6 numbers, got 7"),
        ("huge", "Miner action failed at step 0: response too large (limit 1048576 bytes)"),
        ("error", "Miner action failed at step 0: HTTP 500: {\"detail\":\"policy crashed\"}"),
        ("redirect", "Miner reset failed: redirect not allowed (HTTP 302)"),
        ("disconnect", "Miner action failed at step 0: connection error"),
    ];
    for (i, (kind, _)) in broken.iter().enumerate() {
        tasks.push((
            uuid(10 + i),
            format!("{bad}/{kind}"),
            "metaworld/reach-v3",
            44,
        ));
    }
    tasks.push((
        uuid(30),
        "http://127.0.0.1:1".into(),
        "metaworld/reach-v3",
        45,
    ));
    tasks.push((uuid(31), format!("{bad}/record"), "metaworld/reach-v3", 46));
    let refs: Vec<(&str, &str, &str, i64)> = tasks
        .iter()
        .map(|(u, e, env, s)| (u.as_str(), e.as_str(), *env, *s))
        .collect();
    add_tasks(&url, &refs).await;
    let api = ApiProcess::start(&url, &[("KINITRO_API_API_KEY", KEY)]);
    let spool = tempfile::tempdir().unwrap();
    let metrics_port = free_port();
    let metrics_addr = format!("127.0.0.1:{metrics_port}");
    let _ex = executor_with(
        api.port,
        "ex-a",
        spool.path(),
        "150",
        &[("KINITRO_EXECUTOR_METRICS_ADDR", &metrics_addr)],
    );
    let rows = wait_terminal(&url, 120).await;
    let by_uuid = |u: &str| rows.iter().find(|r| r.task_uuid == u).unwrap();

    let expert_results: Vec<Value> = (0..4).map(|i| by_uuid(&uuid(i)).result()).collect();
    for r in &expert_results {
        assert_eq!(r["success"], true, "expert episode: {r}");
        assert_eq!(r["timesteps"], 150);
        assert!(r["action_time_mean"].as_f64().unwrap() > 0.0);
    }
    assert!(
        expert_results
            .iter()
            .all(|r| r["total_reward"] == expert_results[0]["total_reward"]),
        "same sim seed, different returns when interleaved: {expert_results:?}"
    );
    let r = by_uuid(&uuid(4)).result();
    assert_eq!(
        (r["success"].as_bool(), r["timesteps"].as_u64()),
        (Some(false), Some(150)),
        "random: {r}"
    );
    for (i, (kind, error)) in broken.iter().enumerate() {
        let row = by_uuid(&uuid(10 + i));
        let r = row.result();
        let got = r["error"].as_str().unwrap_or_default();
        assert!(
            got.starts_with(error),
            "{kind}: got {got:?}, expected {error:?}"
        );
        assert_eq!(
            (row.status.as_str(), r["failure_kind"].as_str()),
            ("failed", Some("miner")),
            "{kind}: {r}"
        );
    }
    // The observation's members (and proprio's keys) come in the order of
    // docs/miner-protocol.md §3.
    let r = by_uuid(&uuid(31)).result();
    assert_eq!(
        (r["success"].as_bool(), r["error"].as_str()),
        (Some(false), None),
        "{r}"
    );
    let body = RECORDED_ACT
        .lock()
        .unwrap()
        .clone()
        .expect("the record miner got an /act");
    let at = |key: &str| {
        body.find(&format!("\"{key}\""))
            .unwrap_or_else(|| panic!("{key} missing in {body}"))
    };
    let order = [
        "obs",
        "rgb",
        "depth",
        "proprio",
        "ee_pos",
        "ee_quat",
        "ee_vel_lin",
        "ee_vel_ang",
        "gripper",
        "cam_intrinsics",
        "cam_extrinsics",
        "extra",
        "state",
    ];
    for pair in order.windows(2) {
        assert!(
            at(pair[0]) < at(pair[1]),
            "{} before {} in {body}",
            pair[0],
            pair[1]
        );
    }
    assert!(
        body.starts_with(r#"{"obs":{"rgb":{},"depth":{},"proprio":{"ee_pos":["#),
        "{body}"
    );
    let r = by_uuid(&uuid(30)).result();
    assert!(
        r["error"]
            .as_str()
            .unwrap()
            .starts_with("Miner reset failed: connection error"),
        "{r}"
    );

    // The executor's own metrics (docs/api.md §4.12).
    let (status, text) = common::http_get(metrics_port, "/metrics").unwrap();
    assert_eq!(status, 200);
    let value = |prefix: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{prefix} missing:\n{text}"))
    };
    assert!(value("kinitro_episodes_total{outcome=\"success\"}") >= 4.0);
    assert!(value("kinitro_episodes_total{outcome=\"miner_error\"}") >= 10.0);
    let steps = 4.0 * 150.0;
    assert!(
        value("kinitro_miner_action_latency_seconds_count{env=\"metaworld/reach-v3\"}") >= steps
    );
    assert!(value("kinitro_sim_step_seconds_count{env=\"metaworld/reach-v3\"}") >= steps);
    assert!(value("kinitro_obs_encode_seconds_count") >= steps);
    assert!(value("kinitro_miner_reset_latency_seconds_count") >= 4.0);
    assert_eq!(value("kinitro_episodes_in_flight"), 0.0);
}

#[actix_web::test]
async fn a_killed_executor_and_an_api_restart_lose_nothing() {
    let url = fresh_database().await;
    let (_expert, expert) = miner("expert", 0);
    let uuids: Vec<String> = (0..24)
        .map(|i| format!("10000000-0000-4000-8000-{i:012}"))
        .collect();
    let tasks: Vec<(&str, &str, &str, i64)> = uuids
        .iter()
        .enumerate()
        .map(|(i, u)| (u.as_str(), expert.as_str(), "metaworld/push-v3", i as i64))
        .collect();
    add_tasks(&url, &tasks).await;
    let api_port = free_port();
    let api = ApiProcess::start_on(&url, &[("KINITRO_API_API_KEY", KEY)], api_port);
    let spool = tempfile::tempdir().unwrap();

    // Executor A claims a batch and is killed mid-episode.
    let mut a = executor(api_port, "ex-killed", spool.path(), "500");
    let start = Instant::now();
    while !rows(&url).await.iter().any(|r| r.status == "assigned") {
        assert!(start.elapsed().as_secs() < 60, "executor A never claimed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    a.0.kill().unwrap();
    let _ = a.0.wait();
    let orphaned = rows(&url)
        .await
        .iter()
        .filter(|r| r.status == "assigned")
        .count();
    assert!(orphaned > 0);
    // The stale reaper returns its tasks to the pool.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let mut conn = kinitro::db::connect(&url).await.unwrap();
    kinitro::db::tasks::reap_stale(&mut conn, 1.0)
        .await
        .unwrap();

    // Executor B runs everything, while the API goes away and comes back.
    let _b = executor(api_port, "ex-b", spool.path(), "500");
    while rows(&url).await.iter().all(|r| r.status != "completed") {
        assert!(
            start.elapsed().as_secs() < 120,
            "executor B completes nothing"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(api);
    tokio::time::sleep(Duration::from_secs(3)).await;
    // The API is killed while executor B may be fetching: a claim committed just before the kill
    // reaches nobody, and only the stale reaper (every 30 s) returns it to the pool
    // (docs/executor.md §3.2). The default threshold of 300 s would outlast the wait below; no
    // episode here runs for 60 s.
    let _api = ApiProcess::start_on(
        &url,
        &[
            ("KINITRO_API_API_KEY", KEY),
            ("KINITRO_API_TASK_STALE_THRESHOLD_SECONDS", "60"),
        ],
        api_port,
    );
    let rows = wait_terminal(&url, 240).await;
    for r in &rows {
        let v = r.result();
        assert_eq!(
            (r.status.as_str(), v["success"].as_bool()),
            ("completed", Some(true)),
            "{}: {v}",
            r.task_uuid
        );
    }
    let mut conn = kinitro::db::connect(&url).await.unwrap();
    #[derive(QueryableByName)]
    struct N {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let n: Vec<N> = diesel::sql_query("SELECT count(*) AS n FROM task_pool WHERE attempts > 2")
        .load(&mut conn)
        .await
        .unwrap();
    assert_eq!(n[0].n, 0, "no task ran more than twice");
}

/// A miner written as upstream miners are (FastAPI + pydantic models of Observation and Action,
/// tests/fixtures/fastapi_miner/miner.py, in the environment deploy/setup.sh creates) works unchanged:
/// its strict models accept the observations with images, and its 3-number `ee_twist` solves reach.
#[actix_web::test]
async fn a_fastapi_pydantic_miner_works_unchanged() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = root.join("third_party/python-miner/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run ./deploy/setup.sh",
        python.display()
    );
    let port = free_port();
    let _miner = Proc(
        Command::new(&python)
            .args([
                "-m",
                "uvicorn",
                "miner:app",
                "--log-level",
                "warning",
                "--port",
            ])
            .arg(port.to_string())
            .arg("--app-dir")
            .arg(root.join("tests/fixtures/fastapi_miner"))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    assert!(
        wait_http_ok(port, "/health", 60),
        "the FastAPI miner did not start"
    );
    let url = fresh_database().await;
    let endpoint = format!("http://127.0.0.1:{port}");
    let uuid = |i: usize| format!("00000000-0000-4000-8000-{i:012}");
    let tasks: Vec<(String, i64)> = (0..2).map(|i| (uuid(i), 100 + i as i64)).collect();
    let refs: Vec<(&str, &str, &str, i64)> = tasks
        .iter()
        .map(|(u, s)| (u.as_str(), endpoint.as_str(), "metaworld/reach-v3", *s))
        .collect();
    add_tasks(&url, &refs).await;
    let api = ApiProcess::start(&url, &[("KINITRO_API_API_KEY", KEY)]);
    let spool = tempfile::tempdir().unwrap();
    let _ex = executor_with(
        api.port,
        "ex-py",
        spool.path(),
        "100",
        &[("KINITRO_EXECUTOR_USE_IMAGES", "true")],
    );
    let rows = wait_terminal(&url, 180).await;
    for row in &rows {
        let r = row.result();
        assert_eq!(r["success"], true, "FastAPI miner episode: {r}");
        assert_eq!(r["timesteps"], 100);
    }
    let (status, body) = common::http_get(port, "/stats").unwrap();
    assert_eq!(status, 200);
    let stats: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(stats["resets"], 2, "{stats}");
    assert_eq!(stats["acts"], 200, "{stats}");
    assert_eq!(stats["images"], 400, "both cameras on every step: {stats}");
    let episodes: Vec<&str> = stats["episodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(episodes, [uuid(0), uuid(1)], "X-Kinitro-Episode headers");
}

/// How long the stalling miner leaves its accept queue full after an answer: its client's next SYN
/// is dropped meanwhile, and the kernel sends it again 1 s after the first.
const STALL: Duration = Duration::from_millis(500);

/// A miner that answers every request at once, valid actions with `Connection: close`, but stalls
/// every new connection (docs/executor.md §5.3): its listening socket has a backlog of 0 and it
/// keeps the one queued place taken by a connection of its own, so a client's SYN is dropped until
/// that connection is taken out, [`STALL`] after each answer.
fn stalling_miner() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    // Listening again only changes the backlog (Linux): a full queue holds one connection.
    nix::sys::socket::listen(&listener, nix::sys::socket::Backlog::new(0).unwrap()).unwrap();
    let addr = listener.local_addr().unwrap();
    let base = format!("http://{addr}/valid");
    std::thread::spawn(move || {
        // Our own queued connections, by their port, kept open until taken out of the queue.
        let mut own = std::collections::HashMap::new();
        let fill = |own: &mut std::collections::HashMap<u16, std::net::TcpStream>| {
            if let Ok(s) = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5)) {
                own.insert(s.local_addr().unwrap().port(), s);
            }
        };
        fill(&mut own);
        loop {
            std::thread::sleep(STALL);
            let stream = loop {
                let Ok((s, peer)) = listener.accept() else {
                    return;
                };
                if own.remove(&peer.port()).is_none() {
                    break s;
                }
            };
            // The queue is full again before the answer, so the next connection stalls too.
            fill(&mut own);
            serve_bad(stream);
        }
    });
    base
}

/// A miner that closes every connection and stalls each new one spends the episode budget outside
/// its round trips: the time to reach its server is its own, so the exhausted budget is its failure
/// and the episode is not re-run as an infrastructure one (docs/executor.md §5.3).
#[actix_web::test]
async fn a_miner_stalling_every_new_connection_exhausts_the_budget_as_its_own_failure() {
    let url = fresh_database().await;
    let miner = stalling_miner();
    let uuid = "20000000-0000-4000-8000-000000000000";
    add_tasks(&url, &[(uuid, miner.as_str(), "metaworld/reach-v3", 47)]).await;
    let api = ApiProcess::start(&url, &[("KINITRO_API_API_KEY", KEY)]);
    let spool = tempfile::tempdir().unwrap();
    // About 1 s per step (the SYN's retransmission), a 6 s budget: the budget runs out long before
    // the 100 steps, with a few milliseconds of round trips.
    let _ex = executor_with(
        api.port,
        "ex-stall",
        spool.path(),
        "100",
        &[("KINITRO_EXECUTOR_EVAL_TIMEOUT", "6")],
    );
    let rows = wait_terminal(&url, 90).await;
    let r = rows[0].result();
    let error = r["error"].as_str().unwrap_or_default();
    assert!(
        error.starts_with("Miner too slow: episode budget of 6s exhausted at step "),
        "{} {r}",
        rows[0].status
    );
    assert_eq!(
        (rows[0].status.as_str(), r["failure_kind"].as_str()),
        ("failed", Some("miner")),
        "{r}"
    );
    assert!(r["timesteps"].as_u64().unwrap() < 100, "{r}");
}
