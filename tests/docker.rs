//! Container evaluation on the real Docker engine (docs/containers.md): the environment image built
//! offline and run hardened, the environment server's protocol, and `kinitro executor --eval-mode
//! docker` against a real PostgreSQL, the real API and real reference miners — including a killed
//! container, a missing image and an unreachable engine.
//!
//! Every test builds (once per binary; the engine's cache makes it quick) the image
//! `kinitro-test/metaworld:v1` from this very build's binary.

mod common;

use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::task_pool::{add_tasks, miner, rows, wait_terminal, Proc};
use common::{free_port, fresh_database, http, kinitro, stderr, stdout, wait_http_ok, ApiProcess};
use serde_json::{json, Value};

const IMAGE: &str = "kinitro-test/metaworld:v1";
const KEY: &str = "docker-test-key-0123456789abcdef0123";

/// Builds the test image once per test binary.
fn image() -> &'static str {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let (_, previous) = docker(&["image", "inspect", "-f", "{{.Id}}", IMAGE]);
        let o = kinitro(
            &["env", "build", "metaworld", "--no-render", "--tag", IMAGE],
            &[],
        );
        assert!(
            o.status.success(),
            "image build failed: {}{}",
            stdout(&o),
            stderr(&o)
        );
        assert!(
            stdout(&o).contains(&format!("built {IMAGE}")),
            "{}",
            stdout(&o)
        );
        // The image of an earlier build of the tests is dangling now: keep the disk from filling up.
        let (_, current) = docker(&["image", "inspect", "-f", "{{.Id}}", IMAGE]);
        if previous.starts_with("sha256:") && previous != current {
            let _ = docker(&["rmi", previous.trim()]);
        }
    });
    IMAGE
}

fn docker(args: &[&str]) -> (bool, String) {
    let o = Command::new("docker")
        .args(args)
        .output()
        .expect("docker CLI");
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).trim().to_string() + &String::from_utf8_lossy(&o.stderr),
    )
}

/// The docker-mode settings every executor here runs with (host networking: the miners listen on
/// this machine's loopback).
fn docker_env(image: &str) -> Vec<(String, String)> {
    [
        ("KINITRO_EXECUTOR_EVAL_MODE", "docker".to_string()),
        ("KINITRO_EXECUTOR_EVAL_NETWORK", "host".into()),
        (
            "KINITRO_EXECUTOR_EVAL_IMAGES",
            json!({ "metaworld": image }).to_string(),
        ),
        ("KINITRO_EXECUTOR_EVAL_POOLS", "1".into()),
        ("KINITRO_EXECUTOR_EVAL_EPISODES_PER_POOL", "4".into()),
        ("KINITRO_EXECUTOR_EVAL_MEM_LIMIT", "2g".into()),
        ("KINITRO_EXECUTOR_EVAL_START_TIMEOUT", "90".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

fn executor(api_port: u16, id: &str, spool: &std::path::Path, env: &[(String, String)]) -> Proc {
    let child = Command::new(env!("CARGO_BIN_EXE_kinitro"))
        .args([
            "executor",
            "--api-url",
            &format!("http://127.0.0.1:{api_port}"),
        ])
        .args(["--executor-id", id])
        .env("KINITRO_EXECUTOR_API_KEY", KEY)
        .env("KINITRO_EXECUTOR_ALLOW_PRIVATE_ENDPOINTS", "true")
        .env("KINITRO_EXECUTOR_PRIVILEGED_STATE", "true")
        .env("KINITRO_EXECUTOR_USE_IMAGES", "false")
        .env("KINITRO_EXECUTOR_MAX_TIMESTEPS", "120")
        .env("KINITRO_EXECUTOR_POOLS", "1")
        .env("KINITRO_EXECUTOR_EPISODES_PER_POOL", "4")
        .env("KINITRO_EXECUTOR_POLL_INTERVAL_SECONDS", "0.2")
        .env("KINITRO_EXECUTOR_SPOOL_DIR", spool)
        .env("KINITRO_LOG_FORMAT", "text")
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    Proc(child)
}

fn uuid(i: usize) -> String {
    format!("00000000-0000-4000-8000-{i:012}")
}

/// Containers of an executor id: (name, id) of each, running or not.
fn containers_of(executor_id: &str) -> Vec<(String, String)> {
    let (_, out) = docker(&[
        "ps",
        "-a",
        "--filter",
        &format!("label=io.kinitro.executor={executor_id}"),
        "--format",
        "{{.Names}} {{.ID}}",
    ]);
    out.lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(n, i)| (n.to_string(), i.to_string()))
        .collect()
}

#[test]
fn the_image_builds_offline_and_serves_the_protocol_hardened() {
    let image = image();
    let (ok, inspect) = docker(&["image", "inspect", image]);
    assert!(ok, "{inspect}");
    let inspect: Value = serde_json::from_str(&inspect).unwrap();
    let config = &inspect[0]["Config"];
    assert_eq!(config["Labels"]["affinetes.env.type"], "function_based");
    assert_eq!(config["Labels"]["io.kinitro.family"], "metaworld");
    assert_eq!(
        config["Labels"]["org.opencontainers.image.version"],
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(config["User"], "10001:10001");
    assert_eq!(config["Cmd"], json!(["kinitro", "env", "serve"]));
    assert_eq!(
        config["Healthcheck"]["Test"],
        json!(["CMD", "kinitro", "env", "healthcheck"])
    );
    let env = config["Env"].to_string().to_ascii_uppercase();
    for secret in ["API_KEY", "DATABASE_URL", "TOKEN", "PASSWORD"] {
        assert!(
            !env.contains(secret),
            "the image's environment names {secret}: {env}"
        );
    }
    // Layers of the image: only the scratch root, nothing pulled.
    let size = inspect[0]["Size"].as_f64().unwrap();
    assert!(
        size > 1e8,
        "an image of {size} bytes cannot hold MuJoCo and Mesa"
    );

    let (_miner, endpoint) = miner("expert", 0);
    let port = free_port();
    let name = format!("kinitro-test-serve-{port}");
    let (ok, out) = docker(&[
        "run",
        "-d",
        "--name",
        &name,
        "--read-only",
        "--tmpfs",
        "/tmp",
        "--cap-drop",
        "ALL",
        "--security-opt",
        "no-new-privileges",
        "--user",
        "10001:10001",
        "--network",
        "host",
        "-e",
        &format!("AFFINETES_PORT={port}"),
        "-e",
        "KINITRO_ENV_SERVE_POOLS=1",
        "-e",
        "KINITRO_ENV_TOKEN=s3cret-token",
        "-e",
        "KINITRO_EXECUTOR_ALLOW_PRIVATE_ENDPOINTS=true",
        "-e",
        "KINITRO_EXECUTOR_PRIVILEGED_STATE=true",
        image,
    ]);
    struct Cleanup(String);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = docker(&["rm", "-f", &self.0]);
        }
    }
    let _cleanup = Cleanup(name.clone());
    assert!(ok, "{out}");
    let started = Instant::now();
    assert!(
        wait_http_ok(port, "/health", 90),
        "the container never served /health"
    );
    eprintln!(
        "start to /health 200: {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let auth = [("authorization", "Bearer s3cret-token")];

    // The token guards everything but /health.
    assert_eq!(http(port, "GET", "/methods", &[], None).status, 401);
    let wrong = http(
        port,
        "POST",
        "/call",
        &[("authorization", "Bearer nope")],
        Some(r#"{"method":"list_environments"}"#),
    );
    assert_eq!(wrong.status, 401, "{}", wrong.body);
    let methods = http(port, "GET", "/methods", &auth, None);
    assert_eq!(methods.status, 200);
    assert_eq!(
        methods.json()["usage"]["slots"],
        8,
        "1 pool × 8 episodes: {}",
        methods.body
    );
    let envs = http(
        port,
        "POST",
        "/call",
        &auth,
        Some(r#"{"method":"list_environments"}"#),
    );
    assert_eq!(
        envs.json()["result"].as_array().unwrap().len(),
        8,
        "{}",
        envs.body
    );

    // Malformed bodies and unknown methods are clear errors.
    let bad = http(port, "POST", "/call", &auth, Some("{not json"));
    assert_eq!(bad.status, 422, "{}", bad.body);
    assert!(bad.json()["detail"]
        .as_str()
        .unwrap()
        .contains("malformed JSON"));
    let wrong_type = http(
        port,
        "POST",
        "/call",
        &auth,
        Some(r#"{"method":"evaluate","kwargs":{"task_id":"seven","base_url":"x"}}"#),
    );
    assert_eq!(wrong_type.status, 422, "{}", wrong_type.body);
    let unknown = http(port, "POST", "/call", &auth, Some(r#"{"method":"train"}"#));
    assert_eq!(
        (unknown.status, unknown.json()["detail"].clone()),
        (404, json!("Method not found: train"))
    );
    let other = http(
        port,
        "POST",
        "/evaluate",
        &auth,
        Some(r#"{"task_id":1,"base_url":"http://x","env_id":"genesis/x","use_images":true}"#),
    );
    assert_eq!(other.status, 200, "{}", other.body);
    assert!(other.json()["error"]
        .as_str()
        .unwrap()
        .starts_with("Invalid env_id for MetaWorld container: genesis/x"));

    // An episode with images, in upstream's result shape.
    let call = json!({"method": "evaluate", "kwargs": {"task_id": 11, "base_url": endpoint,
        "env_id": "metaworld/reach-v3", "max_timesteps": 120, "sim_seed": 5, "model": "miner-0"}});
    let r = http(port, "POST", "/call", &auth, Some(&call.to_string()));
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_eq!(v["status"], "success", "{v}");
    let result = &v["result"];
    assert_eq!(result["task_name"], "robotics:metaworld/reach-v3");
    assert_eq!(
        (result["success"].clone(), result["score"].clone()),
        (json!(true), json!(1.0)),
        "{result}"
    );
    assert_eq!(result["extra"]["timesteps"], 120);
    assert_eq!(result["extra"]["model"], "miner-0");
    assert!(result["extra"]["total_reward"].as_f64().unwrap() > 0.0);

    // The same episode in-process gives the same numbers (same env, sim seed and miner).
    let o = kinitro(
        &[
            "env",
            "test",
            "metaworld/reach-v3",
            "--episodes",
            "1",
            "--seed",
            "5",
            "--max-steps",
            "120",
            "--policy",
            "expert",
            "--json",
        ],
        &[],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let local: Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    let (a, b) = (
        local["mean_return"].as_f64().unwrap(),
        result["extra"]["total_reward"].as_f64().unwrap(),
    );
    assert!(
        (a - b).abs() < 1e-6 * a.abs().max(1.0),
        "in-process {a} vs container {b}"
    );

    // Docker's own health check (the image's HEALTHCHECK) turns healthy.
    let start = Instant::now();
    loop {
        let (_, health) = docker(&["inspect", "-f", "{{.State.Health.Status}}", &name]);
        if health.trim() == "healthy" {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "health: {health}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[actix_web::test]
async fn docker_mode_gives_the_in_process_results_and_cleans_up() {
    let image = image();
    let (_expert, expert) = miner("expert", 0);
    let (_zero, zero) = miner("zero", 0);
    let mut tasks = Vec::new();
    for (i, env) in [
        "metaworld/reach-v3",
        "metaworld/push-v3",
        "metaworld/drawer-close-v3",
    ]
    .iter()
    .enumerate()
    {
        tasks.push((uuid(i), expert.clone(), *env, 40 + i as i64));
        tasks.push((uuid(10 + i), zero.clone(), *env, 40 + i as i64));
    }
    tasks.push((
        uuid(20),
        "http://127.0.0.1:1".into(),
        "metaworld/reach-v3",
        50,
    ));

    let mut results: Vec<Vec<Value>> = Vec::new();
    for mode in ["docker", "native"] {
        let url = fresh_database().await;
        add_tasks(&url, &tasks).await;
        let api = ApiProcess::start(&url, &[("KINITRO_API_API_KEY", KEY)]);
        let spool = tempfile::tempdir().unwrap();
        let id = format!("ex-{mode}-{}", free_port());
        let env = if mode == "docker" {
            docker_env(image)
        } else {
            Vec::new()
        };
        let mut ex = executor(api.port, &id, spool.path(), &env);
        let rows = wait_terminal(&url, 240).await;
        assert!(
            rows.iter()
                .all(|r| r.status == "completed" || r.status == "failed"),
            "{mode}: {rows:?}"
        );
        if mode == "docker" {
            assert_eq!(
                containers_of(&id).len(),
                1,
                "one container per family and host"
            );
        }
        assert!(ex.terminate(60), "{mode} executor did not stop cleanly");
        assert!(
            containers_of(&id).is_empty(),
            "containers left behind: {:?}",
            containers_of(&id)
        );
        results.push(
            rows.iter()
                .map(|r| json!({"status": r.status, "result": r.result()}))
                .collect(),
        );
    }
    // Field by field, except wall-clock figures.
    assert_eq!(results[0].len(), tasks.len());
    for (d, n) in results[0].iter().zip(&results[1]) {
        assert_eq!(d["status"], n["status"], "docker {d} vs native {n}");
        for field in [
            "task_uuid",
            "success",
            "score",
            "total_reward",
            "timesteps",
            "error",
            "failure_kind",
        ] {
            assert_eq!(
                d["result"][field], n["result"][field],
                "{field}: docker {d} vs native {n}"
            );
        }
    }
    let outcome = |i: usize| results[0][i]["result"]["success"].clone();
    assert_eq!(
        (outcome(0), outcome(1)),
        (json!(true), json!(false)),
        "expert wins, zero fails: {:?}",
        results[0]
    );
    let refused = &results[0][6]["result"];
    assert_eq!(
        refused["failure_kind"], "miner",
        "an unreachable miner is the miner's failure: {refused}"
    );
}

#[actix_web::test]
async fn a_killed_container_s_episodes_are_rerun_and_it_is_recreated() {
    let image = image();
    let (_slow, slow) = miner("expert", 15);
    let tasks: Vec<_> = (0..8)
        .map(|i| (uuid(i), slow.clone(), "metaworld/reach-v3", 60 + i as i64))
        .collect();
    let url = fresh_database().await;
    add_tasks(&url, &tasks).await;
    let api = ApiProcess::start(&url, &[("KINITRO_API_API_KEY", KEY)]);
    let spool = tempfile::tempdir().unwrap();
    let id = format!("ex-kill-{}", free_port());
    let metrics_port = free_port();
    let mut env = docker_env(image);
    env.push((
        "KINITRO_EXECUTOR_METRICS_ADDR".into(),
        format!("127.0.0.1:{metrics_port}"),
    ));
    let _ex = executor(api.port, &id, spool.path(), &env);
    // Wait for episodes to run in the container, then kill it.
    let start = Instant::now();
    let before = loop {
        let running = rows(&url)
            .await
            .iter()
            .filter(|r| r.status == "assigned")
            .count();
        let c = containers_of(&id);
        if running > 0 && !c.is_empty() {
            break c;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "no episode started"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (ok, out) = docker(&["kill", &before[0].1]);
    assert!(ok, "{out}");
    let rows = wait_terminal(&url, 240).await;
    for r in &rows {
        assert_eq!(
            r.status, "completed",
            "a killed episode is re-run to completion: {r:?}"
        );
        assert_eq!(r.result()["success"], true, "{r:?}");
    }
    // Each task has exactly one result, and the container was replaced by a new one.
    let distinct: std::collections::HashSet<&str> =
        rows.iter().map(|r| r.task_uuid.as_str()).collect();
    assert_eq!((rows.len(), distinct.len()), (8, 8));
    let metrics = http(metrics_port, "GET", "/metrics", &[], None).body;
    assert!(
        metrics.contains(r#"kinitro_eval_container_restarts_total{host="0",family="metaworld"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics
            .contains(r#"kinitro_eval_containers{host="0",family="metaworld",state="healthy"} 1"#),
        "{metrics}"
    );
    let after = containers_of(&id);
    assert_eq!(after.len(), 1, "{after:?}");
    assert_eq!(after[0].0, before[0].0, "the same name");
    assert_ne!(after[0].1, before[0].1, "a new container");
}

#[test]
fn a_missing_image_and_an_unreachable_engine_are_clear_errors() {
    let spool = tempfile::tempdir().unwrap();
    let base = [
        ("KINITRO_EXECUTOR_API_KEY", KEY),
        ("KINITRO_EXECUTOR_SPOOL_DIR", spool.path().to_str().unwrap()),
        ("KINITRO_EXECUTOR_EVAL_MODE", "docker"),
        ("KINITRO_LOG_FORMAT", "text"),
    ];
    let missing = [
        base.as_slice(),
        &[(
            "KINITRO_EXECUTOR_EVAL_IMAGES",
            r#"{"metaworld": "kinitro-test/absent:v0"}"#,
        )],
    ]
    .concat();
    let o = kinitro(&["executor", "--api-url", "http://127.0.0.1:1"], &missing);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(
        e.contains("kinitro-test/absent:v0") && e.contains("kinitro env build"),
        "{e}"
    );

    let unreachable = [
        base.as_slice(),
        &[("KINITRO_EXECUTOR_EVAL_HOSTS", r#"["tcp://127.0.0.1:1"]"#)],
    ]
    .concat();
    let o = kinitro(
        &["executor", "--api-url", "http://127.0.0.1:1"],
        &unreachable,
    );
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("Docker engine not reachable at tcp://127.0.0.1:1"),
        "{}",
        stderr(&o)
    );

    let o = kinitro(
        &["env", "build", "metaworld", "--no-render"],
        &[("DOCKER_HOST", "tcp://127.0.0.1:1")],
    );
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("Docker engine not reachable at tcp://127.0.0.1:1"),
        "{}",
        stderr(&o)
    );

    let o = kinitro(&["env", "build", "genesis"], &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("family 'genesis' has no image in this build"),
        "{}",
        stderr(&o)
    );
}

#[actix_web::test]
async fn gpu_requests_and_hardening_are_in_the_created_container() {
    let image = image();
    let mut config = kinitro::config::executor::ExecutorConfig::resolve(
        &Default::default(),
        &kinitro::config::Env::from_pairs(&["KINITRO_EXECUTOR_"], Vec::new()),
    )
    .unwrap();
    config.eval_gpu = true;
    config.api_key = Some(KEY.into());
    let spec = kinitro::container::eval::EvalContainer {
        name: format!("kinitro-test-gpu-{}", free_port()),
        image: image.into(),
        executor_id: "ex-gpu".into(),
        host: 0,
        family: "metaworld".into(),
        token: "t0ken".into(),
        port: 8000,
        publish: false,
        pools: 1,
        tls: None,
    };
    let engine = kinitro::container::connect("localhost", 60).await.unwrap();
    let body = kinitro::container::eval::create_body(&config, &spec).unwrap();
    let options = bollard::query_parameters::CreateContainerOptionsBuilder::default()
        .name(&spec.name)
        .build();
    // The bridge network must exist for the create to be accepted.
    let _ = docker(&["network", "create", "kinitro-eval"]);
    engine
        .docker
        .create_container(Some(options), body)
        .await
        .unwrap();
    let (ok, out) = docker(&["inspect", &spec.name]);
    let _ = docker(&["rm", "-f", &spec.name]);
    assert!(ok, "{out}");
    let c: Value = serde_json::from_str(&out).unwrap();
    let host = &c[0]["HostConfig"];
    assert_eq!(host["DeviceRequests"][0]["Count"], -1, "{host}");
    assert_eq!(host["DeviceRequests"][0]["Capabilities"], json!([["gpu"]]));
    assert_eq!(host["ReadonlyRootfs"], true);
    assert_eq!(host["CapDrop"], json!(["ALL"]));
    assert_eq!(host["SecurityOpt"], json!(["no-new-privileges"]));
    assert_eq!(host["PidsLimit"], 4096);
    assert_eq!(host["Memory"], 8i64 << 30);
    assert_eq!(host["RestartPolicy"]["Name"], "unless-stopped");
    assert_eq!(c[0]["Config"]["User"], "10001:10001");
    let env = c[0]["Config"]["Env"].to_string();
    assert!(env.contains("KINITRO_ENV_TOKEN=t0ken"), "{env}");
    assert!(
        !env.contains(KEY) && !env.contains("DATABASE_URL"),
        "executor secrets leaked: {env}"
    );
}

#[test]
fn run_demo_in_docker_mode_completes_a_cycle_the_expert_wins() {
    let image = image();
    let tmp = tempfile::Builder::new()
        .prefix("kinitro-demo-docker-")
        .tempdir_in("/tmp")
        .unwrap();
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_kinitro"))
        .args([
            "run",
            "--demo",
            "--eval-mode",
            "docker",
            "--data-dir",
            tmp.path().to_str().unwrap(),
        ])
        .args(["--port", &port.to_string()])
        .env("KINITRO_LOG_FORMAT", "text")
        .env("KINITRO_SCHEDULER_EPISODES_PER_ENV", "1")
        .env("KINITRO_EXECUTOR_MAX_TIMESTEPS", "120")
        .env("KINITRO_EXECUTOR_POOLS", "1")
        .env(
            "KINITRO_EXECUTOR_EVAL_IMAGES",
            json!({ "metaworld": image }).to_string(),
        )
        .env("KINITRO_EXECUTOR_EVAL_POOLS", "1")
        .env("KINITRO_EXECUTOR_EVAL_EPISODES_PER_POOL", "4")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut child = Proc(child);
    assert!(
        wait_http_ok(port, "/health", 120),
        "API did not become healthy"
    );
    let start = Instant::now();
    let weights = loop {
        let r = http(port, "GET", "/v1/weights/latest", &[], None);
        if r.status == 200 {
            break r.json();
        }
        assert!(
            start.elapsed().as_secs() < 240,
            "no weights after 240 s: {}",
            r.body
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    let w = |uid: &str| weights["weights"][uid].as_f64().unwrap();
    assert!(
        w("0") > w("1") && w("0") > w("2"),
        "expert (uid 0) must earn the most: {weights}"
    );
    let local: Vec<_> = containers_of_prefix("local-");
    assert_eq!(
        local.len(),
        1,
        "one container for the local executor: {local:?}"
    );
    assert!(child.terminate(90), "kinitro run did not stop cleanly");
    let left = containers_of_prefix("local-");
    assert!(
        left.iter().all(|c| !local.contains(c)),
        "containers left behind: {left:?}"
    );
}

/// Evaluation containers whose executor id starts with `prefix`.
fn containers_of_prefix(prefix: &str) -> Vec<String> {
    let (_, out) = docker(&[
        "ps",
        "-a",
        "--filter",
        "label=io.kinitro.executor",
        "--format",
        "{{.Names}}",
    ]);
    out.lines()
        .filter(|n| n.starts_with(&format!("kinitro-eval-{prefix}")))
        .map(str::to_string)
        .collect()
}

/// A background process of a test, killed on drop.
fn spawn(program: &str, args: &[&str]) -> Proc {
    Proc(
        Command::new(program)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{program}: {e} (deploy/setup.sh installs it)")),
    )
}

/// A second Docker host: a `tcp://` address forwarding to this machine's engine.
fn forwarder(port: u16) -> Proc {
    let p = spawn(
        "socat",
        &[
            &format!("TCP-LISTEN:{port},bind=127.0.0.1,fork,reuseaddr"),
            "UNIX-CONNECT:/var/run/docker.sock",
        ],
    );
    wait_listening(port);
    p
}

/// Waits (10 s at most) until something accepts connections on loopback port `port`.
fn wait_listening(port: u16) {
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "nothing listens on {port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn logs_mention(container: &str, text: &str) -> bool {
    let o = Command::new("docker")
        .args(["logs", container])
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout).contains(text)
        || String::from_utf8_lossy(&o.stderr).contains(text)
}

#[actix_web::test]
async fn two_hosts_share_the_work_and_a_lost_host_is_retried() {
    let image = image();
    let (_slow, slow) = miner("expert", 10);
    let tasks: Vec<_> = (0..12)
        .map(|i| (uuid(i), slow.clone(), "metaworld/reach-v3", 80 + i as i64))
        .collect();
    let url = fresh_database().await;
    add_tasks(&url, &tasks).await;
    let api = ApiProcess::start(&url, &[("KINITRO_API_API_KEY", KEY)]);
    let spool = tempfile::tempdir().unwrap();
    let tcp_port = free_port();
    let mut second = forwarder(tcp_port);
    let id = format!("ex-hosts-{tcp_port}");
    let mut env = docker_env(image);
    env.push((
        "KINITRO_EXECUTOR_EVAL_HOSTS".into(),
        json!(["localhost", format!("tcp://127.0.0.1:{tcp_port}")]).to_string(),
    ));
    env.push(("KINITRO_EXECUTOR_BATCH_SIZE".into(), "4".into()));
    let _ex = executor(api.port, &id, spool.path(), &env);
    let h0 = format!("kinitro-eval-{id}-h0-metaworld-0");
    let h1 = format!("kinitro-eval-{id}-h1-metaworld-0");

    // Both hosts run episodes; then host 2 is cut off (forwarder stopped, container killed).
    let start = Instant::now();
    while !(logs_mention(&h0, "episode finished") && logs_mention(&h1, "episode finished")) {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "both hosts must receive episodes"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // The container on the tcp:// engine serves TLS with its own certificate; the local one does not.
    let env_of = |c: &str| docker(&["inspect", "-f", "{{json .Config.Env}}", c]).1;
    assert!(
        env_of(&h1).contains("KINITRO_ENV_TLS_CERT=-----BEGIN CERTIFICATE"),
        "{}",
        env_of(&h1)
    );
    assert!(!env_of(&h0).contains("KINITRO_ENV_TLS_CERT"));
    drop(second);
    let (ok, out) = docker(&["kill", &h1]);
    assert!(ok, "{out}");
    let rows = wait_terminal(&url, 240).await;
    for r in &rows {
        assert_eq!(
            r.status, "completed",
            "every episode completes on host 1: {r:?}"
        );
    }
    let distinct: std::collections::HashSet<&str> =
        rows.iter().map(|r| r.task_uuid.as_str()).collect();
    assert_eq!(
        (rows.len(), distinct.len()),
        (12, 12),
        "no lost or duplicated result"
    );

    // Host 2 comes back: it is retried (every 30 s) and its container recreated.
    second = forwarder(tcp_port);
    let start = Instant::now();
    loop {
        let (_, running) = docker(&["inspect", "-f", "{{.State.Running}}", &h1]);
        if running.trim() == "true" && containers_of(&id).len() == 2 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "host 2 was not used again: {running}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    drop(second);
}

#[test]
fn push_goes_to_a_registry_on_loopback_and_fails_clearly_without_one() {
    let image = image();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = dir.path().join("registry.yml");
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    let _registry = spawn("docker-registry", &["serve", config.to_str().unwrap()]);
    assert!(wait_http_ok(port, "/v2/", 30), "the registry did not start");
    let registry = format!("127.0.0.1:{port}");
    let o = kinitro(
        &[
            "env",
            "build",
            "metaworld",
            "--no-render",
            "--tag",
            image,
            "--push",
            "--registry",
            &registry,
        ],
        &[],
    );
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert!(
        stdout(&o).contains(&format!("pushed {registry}/{image}")),
        "{}",
        stdout(&o)
    );
    let tags = http(
        port,
        "GET",
        "/v2/kinitro-test/metaworld/tags/list",
        &[],
        None,
    );
    assert_eq!(tags.json()["tags"], json!(["v1"]), "{}", tags.body);
    let _ = docker(&["rmi", &format!("{registry}/{image}")]);

    let nowhere = format!("127.0.0.1:{}", free_port());
    let o = kinitro(
        &[
            "env",
            "build",
            "metaworld",
            "--no-render",
            "--tag",
            image,
            "--push",
            "--registry",
            &nowhere,
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    assert!(
        stderr(&o).contains(&format!(
            "push of {nowhere}/kinitro-test/metaworld:v1 failed"
        )),
        "{}",
        stderr(&o)
    );
    let _ = docker(&["rmi", &format!("{nowhere}/{image}")]);
}

/// A local fake of Basilica's deployments API: each deployment is a real `kinitro env serve`
/// process, reached through the fake (`/d/<name>/…`), so the fake sees every call; `fail` makes
/// every deployment end in state `Failed`.
struct FakeBasilica {
    port: u16,
    events: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    server: actix_web::dev::ServerHandle,
}

#[derive(Default)]
struct FakeState {
    events: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    servers: std::sync::Mutex<std::collections::HashMap<String, (Proc, u16, u32)>>,
    fail: bool,
}

impl FakeBasilica {
    fn start(fail: bool) -> Self {
        use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
        // Held from here to the server, so a parallel test cannot take the port in between.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = web::Data::new(FakeState {
            fail,
            ..Default::default()
        });
        let events = state.events.clone();
        let authorized = |req: &HttpRequest| {
            req.headers()
                .get("authorization")
                .and_then(|h| h.to_str().ok())
                == Some("Bearer fake-token")
        };
        let server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .route("/deployments", web::post().to(move |s: web::Data<FakeState>, req: HttpRequest, body: web::Json<Value>| async move {
                    if !authorized(&req) {
                        return HttpResponse::Unauthorized().finish();
                    }
                    let name = body["instance_name"].as_str().unwrap().to_string();
                    s.events.lock().unwrap().push(format!("create {name}"));
                    let serve_port = free_port();
                    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kinitro"));
                    cmd.args(["env", "serve", "--host", "127.0.0.1", "--port", &serve_port.to_string()]);
                    for (k, v) in body["env"].as_object().unwrap() {
                        cmd.env(k, v.as_str().unwrap());
                    }
                    let child = cmd.stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
                    s.servers.lock().unwrap().insert(name, (Proc(child), serve_port, 0));
                    HttpResponse::Created().json(json!({"instance_name": body["instance_name"]}))
                }))
                .route("/deployments/{name}", web::get().to(move |s: web::Data<FakeState>, req: HttpRequest, name: web::Path<String>| async move {
                    if !authorized(&req) {
                        return HttpResponse::Unauthorized().finish();
                    }
                    s.events.lock().unwrap().push(format!("poll {name}"));
                    let mut servers = s.servers.lock().unwrap();
                    let Some(entry) = servers.get_mut(name.as_str()) else {
                        return HttpResponse::NotFound().finish();
                    };
                    entry.2 += 1;
                    let port = req.app_config().local_addr().port();
                    HttpResponse::Ok().json(match (s.fail, entry.2) {
                        (true, _) => json!({"state": "Failed", "phase": "failed", "replicas": {"ready": 0, "desired": 1}}),
                        (false, 1) => json!({"state": "Pending", "replicas": {"ready": 0, "desired": 1}}),
                        (false, _) => json!({"state": "Running", "replicas": {"ready": 1, "desired": 1},
                            "url": format!("http://127.0.0.1:{port}/d/{name}")}),
                    })
                }))
                .route("/deployments/{name}", web::delete().to(move |s: web::Data<FakeState>, req: HttpRequest, name: web::Path<String>| async move {
                    if !authorized(&req) {
                        return HttpResponse::Unauthorized().finish();
                    }
                    s.events.lock().unwrap().push(format!("delete {name}"));
                    match s.servers.lock().unwrap().remove(name.as_str()) {
                        Some(_) => HttpResponse::Ok().finish(),
                        None => HttpResponse::NotFound().finish(),
                    }
                }))
                .route("/d/{name}/{tail:.*}", web::route().to(move |s: web::Data<FakeState>, req: HttpRequest, path: web::Path<(String, String)>, body: web::Bytes| async move {
                    let (name, tail) = path.into_inner();
                    let port = s.servers.lock().unwrap().get(&name).map(|e| e.1);
                    let Some(port) = port else { return HttpResponse::NotFound().finish() };
                    if tail == "call" {
                        s.events.lock().unwrap().push(format!("call {name}"));
                    }
                    let auth = req.headers().get("authorization").and_then(|h| h.to_str().ok()).unwrap_or("").to_string();
                    let method = req.method().as_str().to_string();
                    let body = String::from_utf8_lossy(&body).into_owned();
                    let answer = tokio::task::spawn_blocking(move || {
                        http(port, &method, &format!("/{tail}"), &[("authorization", &auth)], (!body.is_empty()).then_some(&body))
                    })
                    .await
                    .unwrap();
                    HttpResponse::build(actix_web::http::StatusCode::from_u16(answer.status).unwrap())
                        .content_type("application/json")
                        .body(answer.body)
                }))
        })
        .workers(1)
        .listen(listener)
        .unwrap()
        .run();
        let handle = server.handle();
        actix_web::rt::spawn(server);
        Self {
            port,
            events,
            server: handle,
        }
    }

    fn events(&self) -> Vec<String> {
        self.events.lock().unwrap().clone()
    }
}

fn basilica_env(fake: &FakeBasilica, image: &str) -> Vec<(String, String)> {
    vec![
        ("KINITRO_EXECUTOR_EVAL_MODE".into(), "basilica".into()),
        (
            "BASILICA_API_URL".into(),
            format!("http://127.0.0.1:{}", fake.port),
        ),
        ("BASILICA_API_TOKEN".into(), "fake-token".into()),
        (
            "KINITRO_EXECUTOR_EVAL_IMAGES".into(),
            json!({ "metaworld": image }).to_string(),
        ),
        ("KINITRO_EXECUTOR_EVAL_POOLS".into(), "1".into()),
        ("KINITRO_EXECUTOR_EVAL_EPISODES_PER_POOL".into(), "4".into()),
        ("KINITRO_EXECUTOR_EVAL_START_TIMEOUT".into(), "60".into()),
    ]
}

#[actix_web::test]
async fn basilica_mode_creates_polls_calls_and_deletes_its_deployment() {
    let fake = FakeBasilica::start(false);
    let (_expert, expert) = miner("expert", 0);
    let tasks: Vec<_> = (0..4)
        .map(|i| (uuid(i), expert.clone(), "metaworld/reach-v3", 90 + i as i64))
        .collect();
    let url = fresh_database().await;
    add_tasks(&url, &tasks).await;
    let api = ApiProcess::start(&url, &[("KINITRO_API_API_KEY", KEY)]);
    let spool = tempfile::tempdir().unwrap();
    let mut ex = executor(
        api.port,
        "Ex-Basilica",
        spool.path(),
        &basilica_env(&fake, "kinitro-test/none:v1"),
    );
    let rows = wait_terminal(&url, 120).await;
    for r in &rows {
        assert_eq!(
            (r.status.as_str(), r.result()["success"].clone()),
            ("completed", json!(true)),
            "{r:?}"
        );
    }
    assert!(ex.terminate(60), "the executor did not stop cleanly");
    let name = "kinitro-ex-basilica-metaworld";
    let events = fake.events();
    let first = |e: &str| events.iter().position(|x| x == &format!("{e} {name}"));
    let (create, poll, call, delete) = (
        first("create"),
        first("poll"),
        first("call"),
        events.iter().rposition(|x| x == &format!("delete {name}")),
    );
    assert!(
        create.is_some() && poll.is_some() && call.is_some() && delete.is_some(),
        "{events:?}"
    );
    assert!(
        create < poll && poll < call && call < delete,
        "create → poll → calls → delete: {events:?}"
    );
    assert_eq!(
        events.iter().filter(|e| e.starts_with("call")).count(),
        4,
        "{events:?}"
    );
    fake.server.stop(false).await;
}

#[actix_web::test]
async fn a_failed_basilica_deployment_is_a_clear_start_up_error() {
    let fake = FakeBasilica::start(true);
    let spool = tempfile::tempdir().unwrap();
    let mut env = basilica_env(&fake, "kinitro-test/none:v1");
    env.push((
        "KINITRO_EXECUTOR_SPOOL_DIR".into(),
        spool.path().to_str().unwrap().into(),
    ));
    env.push(("KINITRO_EXECUTOR_API_KEY".into(), KEY.into()));
    // The fake answers on this test's runtime: the command runs on another thread.
    let o = tokio::task::spawn_blocking(move || {
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        kinitro(
            &[
                "executor",
                "--api-url",
                "http://127.0.0.1:1",
                "--executor-id",
                "ex-fail",
            ],
            &env,
        )
    })
    .await
    .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("Basilica deployment kinitro-ex-fail-metaworld failed"),
        "{}",
        stderr(&o)
    );
    let events = fake.events();
    assert_eq!(
        events.iter().filter(|e| e.starts_with("create")).count(),
        1,
        "{events:?}"
    );
    assert_eq!(
        events.last().map(String::as_str),
        Some("delete kinitro-ex-fail-metaworld"),
        "{events:?}"
    );
    let o = kinitro(
        &[
            "executor",
            "--api-url",
            "http://127.0.0.1:1",
            "--eval-mode",
            "basilica",
        ],
        &[("KINITRO_EXECUTOR_SPOOL_DIR", "")],
    );
    assert!(stderr(&o).contains("BASILICA_API_TOKEN"), "{}", stderr(&o));
    fake.server.stop(false).await;
}

/// Makes a CA, an engine certificate for 127.0.0.1 and a client certificate with openssl, in the
/// file names the Docker CLI uses (`ca.pem`, `cert.pem`, `key.pem` for the client).
fn engine_certificates(dir: &std::path::Path) {
    let script = r#"set -e
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=test-ca -keyout ca-key.pem -out ca.pem 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj /CN=127.0.0.1 -keyout server-key.pem -out server.csr 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' > server.ext
openssl x509 -req -in server.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial -days 2 -extfile server.ext -out server.pem 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj /CN=client -keyout key.pem -out client.csr 2>/dev/null
printf 'extendedKeyUsage=clientAuth\n' > client.ext
openssl x509 -req -in client.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial -days 2 -extfile client.ext -out cert.pem 2>/dev/null
"#;
    let o = Command::new("sh")
        .args(["-c", script])
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

#[actix_web::test]
async fn a_tls_engine_is_reached_with_the_docker_cli_s_certificates() {
    let image = image();
    let certs = tempfile::tempdir().unwrap();
    engine_certificates(certs.path());
    let port = free_port();
    let d = certs.path().display();
    let _engine = spawn(
        "socat",
        &[
            // The executor verifies the engine against ca.pem. socat 1.7.4 cannot ask for the
            // client's certificate here (its OpenSSL server fails rustls' handshake with "session
            // id context uninitialized"), so client authentication is left to real engines.
            &format!("OPENSSL-LISTEN:{port},bind=127.0.0.1,fork,reuseaddr,cert={d}/server.pem,key={d}/server-key.pem,verify=0"),
            "UNIX-CONNECT:/var/run/docker.sock",
        ],
    );
    wait_listening(port);
    let (_expert, expert) = miner("expert", 0);
    let tasks: Vec<_> = (0..2)
        .map(|i| (uuid(i), expert.clone(), "metaworld/reach-v3", 70 + i as i64))
        .collect();
    let url = fresh_database().await;
    add_tasks(&url, &tasks).await;
    let api = ApiProcess::start(&url, &[("KINITRO_API_API_KEY", KEY)]);
    let spool = tempfile::tempdir().unwrap();
    let mut env = docker_env(image);
    env.push((
        "KINITRO_EXECUTOR_EVAL_HOSTS".into(),
        json!([format!("tcp://127.0.0.1:{port}")]).to_string(),
    ));
    env.push(("DOCKER_TLS_VERIFY".into(), "1".into()));
    env.push(("DOCKER_CERT_PATH".into(), d.to_string()));
    let id = format!("ex-tls-{port}");
    let mut ex = executor(api.port, &id, spool.path(), &env);
    let rows = wait_terminal(&url, 120).await;
    for r in &rows {
        assert_eq!(
            (r.status.as_str(), r.result()["success"].clone()),
            ("completed", json!(true)),
            "{r:?}"
        );
    }
    assert!(ex.terminate(60));
    assert!(
        containers_of(&id).is_empty(),
        "removed through the TLS engine too"
    );

    // Without TLS the engine does not answer: a clear start-up error.
    let hosts = json!([format!("tcp://127.0.0.1:{port}")]).to_string();
    let spool_dir = spool.path().to_str().unwrap().to_string();
    let o = tokio::task::spawn_blocking(move || {
        kinitro(
            &[
                "executor",
                "--api-url",
                "http://127.0.0.1:1",
                "--eval-mode",
                "docker",
            ],
            &[
                ("KINITRO_EXECUTOR_EVAL_HOSTS", hosts.as_str()),
                ("KINITRO_EXECUTOR_SPOOL_DIR", spool_dir.as_str()),
            ],
        )
    })
    .await
    .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains(&format!(
            "Docker engine not reachable at tcp://127.0.0.1:{port}"
        )),
        "{}",
        stderr(&o)
    );
}

#[actix_web::test]
async fn bridge_networking_reaches_the_container_and_the_miner_through_the_network() {
    let image = image();
    // The network the executor would create; made first here to learn the host's address on it.
    let _ = docker(&["network", "create", "kinitro-eval"]);
    let (_, gateway) = docker(&[
        "network",
        "inspect",
        "kinitro-eval",
        "-f",
        "{{(index .IPAM.Config 0).Gateway}}",
    ]);
    let gateway = gateway.trim().to_string();
    assert!(gateway.parse::<std::net::Ipv4Addr>().is_ok(), "{gateway}");
    let port = free_port();
    let _miner = Proc(
        Command::new(env!("CARGO_BIN_EXE_kinitro"))
            .args([
                "miner",
                "serve",
                "--policy",
                "expert",
                "--host",
                "0.0.0.0",
                "--port",
                &port.to_string(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    assert!(wait_http_ok(port, "/health", 30));
    let endpoint = format!("http://{gateway}:{port}");
    let tasks: Vec<_> = (0..2)
        .map(|i| {
            (
                uuid(i),
                endpoint.clone(),
                "metaworld/reach-v3",
                30 + i as i64,
            )
        })
        .collect();
    let url = fresh_database().await;
    add_tasks(&url, &tasks).await;
    let api = ApiProcess::start(&url, &[("KINITRO_API_API_KEY", KEY)]);
    let spool = tempfile::tempdir().unwrap();
    let mut env = docker_env(image);
    env.retain(|(k, _)| k != "KINITRO_EXECUTOR_EVAL_NETWORK"); // the default: bridge
    let id = format!("ex-bridge-{port}");
    let mut ex = executor(api.port, &id, spool.path(), &env);
    let rows = wait_terminal(&url, 120).await;
    for r in &rows {
        assert_eq!(
            (r.status.as_str(), r.result()["success"].clone()),
            ("completed", json!(true)),
            "{r:?}"
        );
    }
    let (_, network) = docker(&[
        "inspect",
        "-f",
        "{{.HostConfig.NetworkMode}}",
        &format!("kinitro-eval-{id}-h0-metaworld-0"),
    ]);
    assert_eq!(network.trim(), "kinitro-eval");
    assert!(ex.terminate(60));
}
