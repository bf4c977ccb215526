//! The scheduler on a throwaway PostgreSQL, with the real API as the executors' interface: a full
//! cycle, the singleton lock, a kill and restart mid-cycle, a cycle timeout, stale reassignment,
//! no evaluable miners, graceful shutdown and a lost lock.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{fresh_database, http, ApiProcess};
use diesel::sql_types::{BigInt, Integer, Nullable, Text};
use diesel::QueryableByName;
use diesel_async::{RunQueryDsl, SimpleAsyncConnection};
use kinitro::config::DatabaseUrl;
use serde_json::{json, Value};

const UUID: &str = "95edf2b6-e18b-400a-8398-5573df10e5e4";

/// uid 0 and 1 are active (a file endpoint and a plain commitment), uid 2 is invalid (JSON),
/// uid 3 inactive (encrypted, no key), uid 4 inactive (no... not allowed in a file: an injected id).
fn miners_file(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("miners.toml");
    std::fs::write(
        &path,
        format!(
            r#"
[[miners]]
uid = 0
hotkey = "hk-expert"
endpoint = "http://127.0.0.1:9/"
commit_block = 1000
repo = "demo/expert"

[[miners]]
uid = 1
hotkey = "hk-plain"
commitment = "user/policy:abc123de:{UUID}"
commit_block = 1100

[[miners]]
uid = 2
hotkey = "hk-json"
commitment = '{{"x": 1}}'
commit_block = 1200

[[miners]]
uid = 3
hotkey = "hk-enc"
commitment = "user/secret:abc123de:e:HGp!~HduhsuIe(H-;p6WI8p5(qK-Rt>1EK;%@$%*k~V~h;;rWk94{{9o(eaud^s%Z@F`z+Nq;6@CsMMP+"
commit_block = 1300

[[miners]]
uid = 4
hotkey = "hk-evil"
commitment = "user/evil:abc123de:evil.com/x"
commit_block = 1400
"#
        ),
    )
    .unwrap();
    path
}

struct Sched {
    child: Child,
    log: std::path::PathBuf,
}

impl Sched {
    fn start(
        url: &DatabaseUrl,
        file: &std::path::Path,
        dir: &std::path::Path,
        env: &[(&str, &str)],
    ) -> Self {
        let log = dir.join(format!("scheduler-{}.log", rand::random::<u32>()));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_kinitro"));
        cmd.args([
            "scheduler",
            "--database-url",
            url.as_str(),
            "--miners-file",
            file.to_str().unwrap(),
        ])
        .args([
            "--episodes-per-env",
            "2",
            "--env-ids",
            "metaworld/reach-v3,metaworld/push-v3",
            "--eval-interval",
            "3600",
        ])
        .env("KINITRO_LOG_FORMAT", "json")
        .env("KINITRO_SCHEDULER_POLL_INTERVAL_SECONDS", "0.2")
        .env("KINITRO_SCHEDULER_HEARTBEAT_INTERVAL_SECONDS", "1")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
        for (k, v) in env {
            cmd.env(k, v);
        }
        Self {
            child: cmd.spawn().unwrap(),
            log,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), sig).unwrap();
    }

    fn wait(&mut self, secs: u64) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < deadline {
            if let Some(s) = self.child.try_wait().unwrap() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for Sched {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(QueryableByName, Debug)]
struct Cycle {
    #[diesel(sql_type = Text)]
    status: String,
    #[diesel(sql_type = Nullable<Text>)]
    error_message: Option<String>,
    #[diesel(sql_type = Nullable<Integer>)]
    n_miners: Option<i32>,
    #[diesel(sql_type = BigInt)]
    block_number: i64,
}

async fn cycles(url: &DatabaseUrl) -> Vec<Cycle> {
    let mut c = kinitro::db::connect(url).await.unwrap();
    diesel::sql_query(
        "SELECT status, error_message, n_miners, block_number FROM evaluation_cycles ORDER BY id",
    )
    .load(&mut c)
    .await
    .unwrap()
}

async fn wait_for<F: Fn(&[Cycle]) -> bool>(url: &DatabaseUrl, secs: u64, f: F) -> Vec<Cycle> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let c = cycles(url).await;
        if f(&c) {
            return c;
        }
        assert!(Instant::now() < deadline, "timed out; cycles: {c:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Executes every claimable task through the API: uid 0 succeeds, others fail as ordinary episodes.
fn execute_all(api: &ApiProcess, executor: &str) -> usize {
    let mut done = 0;
    loop {
        let r = http(
            api.port,
            "POST",
            "/v1/tasks/fetch",
            &[],
            Some(&json!({"executor_id": executor, "batch_size": 100}).to_string()),
        );
        let tasks = r.json()["tasks"].as_array().unwrap().clone();
        if tasks.is_empty() {
            return done;
        }
        let results: Vec<Value> = tasks
            .iter()
            .map(|t| {
                let ok = t["miner_uid"] == 0;
                json!({"task_uuid": t["task_uuid"], "success": ok, "total_reward": if ok { 10.0 } else { 1.0 }, "timesteps": 100})
            })
            .collect();
        let r = http(
            api.port,
            "POST",
            "/v1/tasks/submit",
            &[],
            Some(&json!({"executor_id": executor, "results": results}).to_string()),
        );
        assert_eq!(
            r.json()["accepted"].as_u64().unwrap() as usize,
            tasks.len(),
            "{}",
            r.body
        );
        done += tasks.len();
    }
}

fn open_api(url: &DatabaseUrl) -> ApiProcess {
    ApiProcess::start(url, &[("KINITRO_API_AUTH_DISABLED", "true")])
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_cycle_scores_and_stores_weights() {
    let dir = tempfile::tempdir().unwrap();
    let url = fresh_database().await;
    let file = miners_file(dir.path());
    let mut s = Sched::start(&url, &file, dir.path(), &[]);
    let api = open_api(&url);
    wait_for(&url, 30, |c| c.iter().any(|c| c.status == "running")).await;

    // The snapshot: every entry, classified.
    let m = http(api.port, "GET", "/v1/miners", &[], None).json();
    let status: Vec<(i64, String, Value)> = m["miners"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| {
            (
                x["uid"].as_i64().unwrap(),
                x["status"].as_str().unwrap().to_string(),
                x["status_reason"].clone(),
            )
        })
        .collect();
    assert_eq!(
        status,
        vec![
            (0, "active".into(), Value::Null),
            (1, "active".into(), Value::Null),
            (
                2,
                "invalid_commitment".into(),
                json!("JSON commitments are not supported")
            ),
            (
                3,
                "inactive".into(),
                json!("encrypted commitment but no backend private key configured")
            ),
            (
                4,
                "invalid_commitment".into(),
                json!("deployment id is neither a UUID nor a DNS label")
            ),
        ]
    );
    assert_eq!(m["miners"][0]["endpoint"], "http://127.0.0.1:9");
    assert_eq!(
        m["miners"][1]["endpoint"],
        format!("https://{UUID}.deployments.basilica.ai")
    );
    assert_eq!(m["miners"][0]["repo"], "demo/expert");

    // Tasks: 2 active miners × 2 envs × 2 episodes, in uid → env → episode order, with both seeds.
    #[derive(QueryableByName)]
    struct T {
        #[diesel(sql_type = Text)]
        task_uuid: String,
        #[diesel(sql_type = Integer)]
        miner_uid: i32,
        #[diesel(sql_type = Text)]
        env_id: String,
        #[diesel(sql_type = Integer)]
        seed: i32,
        #[diesel(sql_type = BigInt)]
        sim_seed: i64,
    }
    let mut c = kinitro::db::connect(&url).await.unwrap();
    let tasks: Vec<T> = diesel::sql_query(
        "SELECT task_uuid, miner_uid, env_id, seed, sim_seed FROM task_pool ORDER BY id",
    )
    .load(&mut c)
    .await
    .unwrap();
    let order: Vec<(i32, &str)> = tasks
        .iter()
        .map(|t| (t.miner_uid, t.env_id.as_str()))
        .collect();
    assert_eq!(
        order,
        vec![
            (0, "metaworld/reach-v3"),
            (0, "metaworld/reach-v3"),
            (0, "metaworld/push-v3"),
            (0, "metaworld/push-v3"),
            (1, "metaworld/reach-v3"),
            (1, "metaworld/reach-v3"),
            (1, "metaworld/push-v3"),
            (1, "metaworld/push-v3")
        ]
    );
    #[derive(QueryableByName)]
    struct Secret {
        #[diesel(sql_type = diesel::sql_types::Bytea)]
        seed_secret: Vec<u8>,
    }
    let secret: Secret = diesel::sql_query("SELECT seed_secret FROM scheduler_secret")
        .get_result(&mut c)
        .await
        .unwrap();
    assert_eq!(secret.seed_secret.len(), 32);
    for t in &tasks {
        assert_eq!(t.seed, kinitro_actors::seeds::task_seed(&t.task_uuid));
        assert_eq!(
            t.sim_seed as u64,
            kinitro_actors::seeds::sim_seed(&secret.seed_secret, &t.task_uuid)
        );
    }
    assert!(!http(api.port, "GET", "/v1/tasks/stats", &[], None)
        .body
        .contains("sim_seed"));

    let status = http(api.port, "GET", "/v1/status", &[], None).json();
    assert_eq!(
        (status["status"].as_str(), status["is_evaluating"].as_bool()),
        (Some("running"), Some(true))
    );
    assert_eq!(
        status["environments_enabled"],
        json!(["metaworld/reach-v3", "metaworld/push-v3"])
    );

    assert_eq!(execute_all(&api, "exec-1"), 8);
    let done = wait_for(&url, 30, |c| c.iter().any(|c| c.status == "completed")).await;
    assert_eq!(done[0].n_miners, Some(2));
    let w = http(api.port, "GET", "/v1/weights/latest", &[], None).json();
    assert_eq!(
        w["weights"],
        json!({"0": 0.9820137900379085, "1": 0.017986209962091555}),
        "the successful miner wins every subset"
    );
    assert_eq!(
        w["weights_u16"],
        json!({"uids": [0, 1], "values": [64356, 1178]})
    );
    assert_eq!(w["block"].as_i64(), Some(done[0].block_number));
    let sc = http(api.port, "GET", "/v1/scores/latest", &[], None).json();
    assert_eq!(
        sc["scores"],
        json!({"0": {"metaworld/reach-v3": 1.0, "metaworld/push-v3": 1.0}, "1": {"metaworld/reach-v3": 0.0, "metaworld/push-v3": 0.0}})
    );
    assert_eq!(sc["pareto_frontier"], json!([0]));
    assert_eq!(sc["details"][0]["mean_reward"], 10.0);
    assert_eq!(sc["details"][0]["episodes_completed"], 2);
    assert_eq!(sc["details"][0]["hotkey"], "hk-expert");
    let log = s.log();
    for event in [
        "scheduler_started",
        "cycle_started",
        "tasks_created",
        "cycle_completed",
    ] {
        assert!(
            log.contains(&format!("\"event\":\"{event}\"")),
            "missing {event} in\n{log}"
        );
    }
    assert!(
        !log.contains(&format!("{}", tasks[0].sim_seed)),
        "sim_seed never appears in logs"
    );

    // A second scheduler on the same database refuses to start.
    let mut twin = Sched::start(&url, &file, dir.path(), &[]);
    let code = twin.wait(20).and_then(|s| s.code());
    assert_eq!(code, Some(1), "{}", twin.log());
    assert!(
        twin.log()
            .contains("another scheduler is already running against this database"),
        "{}",
        twin.log()
    );

    // Graceful stop between cycles: exit 0, heartbeat says no next cycle.
    s.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(s.wait(20).and_then(|s| s.code()), Some(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn killed_mid_cycle_then_restarted_runs_nothing_twice() {
    let dir = tempfile::tempdir().unwrap();
    let url = fresh_database().await;
    let file = miners_file(dir.path());
    let s = Sched::start(&url, &file, dir.path(), &[]);
    let api = open_api(&url);
    wait_for(&url, 30, |c| c.iter().any(|c| c.status == "running")).await;
    // Half the work is claimed by an executor when the scheduler dies.
    let claimed = http(
        api.port,
        "POST",
        "/v1/tasks/fetch",
        &[],
        Some(r#"{"executor_id": "exec-a", "batch_size": 4}"#),
    )
    .json();
    assert_eq!(claimed["tasks"].as_array().unwrap().len(), 4);
    drop(s); // SIGKILL
    let mut s2 = Sched::start(&url, &file, dir.path(), &[]);
    let c = wait_for(&url, 30, |c| c.len() == 2 && c[1].status == "running").await;
    assert_eq!(c[0].status, "failed");
    assert_eq!(
        c[0].error_message.as_deref(),
        Some("Cancelled on scheduler restart (cycle isolation)")
    );
    assert!(
        c[1].block_number > c[0].block_number,
        "blocks strictly increase"
    );
    // The old claim's late result is refused; nothing of the old cycle is claimable.
    let late = json!({"executor_id": "exec-a", "results": [{"task_uuid": claimed["tasks"][0]["task_uuid"], "success": true}]});
    let r = http(
        api.port,
        "POST",
        "/v1/tasks/submit",
        &[],
        Some(&late.to_string()),
    )
    .json();
    assert!(
        r["errors"][0]
            .as_str()
            .unwrap()
            .ends_with("cycle cancelled"),
        "{r}"
    );
    assert_eq!(execute_all(&api, "exec-b"), 8, "only the new cycle's tasks");
    let c = wait_for(&url, 30, |c| c.len() == 2 && c[1].status == "completed").await;
    assert_eq!(c[1].n_miners, Some(2));
    s2.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(s2.wait(20).and_then(|s| s.code()), Some(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn timeouts_stale_tasks_shutdown_and_empty_registries() {
    let dir = tempfile::tempdir().unwrap();
    // Cycle timeout: nobody executes; the cycle fails and its tasks are cancelled.
    let url = fresh_database().await;
    let file = miners_file(dir.path());
    let _s = Sched::start(
        &url,
        &file,
        dir.path(),
        &[("KINITRO_SCHEDULER_CYCLE_TIMEOUT_SECONDS", "1")],
    );
    let c = wait_for(&url, 30, |c| {
        c.first().is_some_and(|c| c.status == "failed")
    })
    .await;
    assert_eq!(
        c[0].error_message.as_deref(),
        Some("Cycle timed out waiting for tasks")
    );
    let mut conn = kinitro::db::connect(&url).await.unwrap();
    #[derive(QueryableByName)]
    struct R {
        #[diesel(sql_type = Text)]
        r: String,
    }
    let rows: Vec<R> = diesel::sql_query(
        "SELECT DISTINCT status || ' ' || (result->>'error') AS r FROM task_pool",
    )
    .load(&mut conn)
    .await
    .unwrap();
    assert_eq!(
        rows.into_iter().map(|r| r.r).collect::<Vec<_>>(),
        vec!["cancelled Cycle cancelled: Cycle timed out waiting for tasks"]
    );
    let w = common::ApiProcess::start(&url, &[("KINITRO_API_AUTH_DISABLED", "1")]);
    assert_eq!(
        http(w.port, "GET", "/v1/weights/latest", &[], None).status,
        404,
        "a failed cycle writes no weights"
    );

    // Stale reassignment by the scheduler's reaper, then graceful shutdown mid-cycle.
    let url = fresh_database().await;
    let metrics_port = common::free_port();
    let metrics_addr = format!("127.0.0.1:{metrics_port}");
    let mut s = Sched::start(
        &url,
        &file,
        dir.path(),
        &[
            ("KINITRO_SCHEDULER_TASK_STALE_THRESHOLD_SECONDS", "1"),
            ("KINITRO_SCHEDULER_METRICS_ADDR", &metrics_addr),
        ],
    );
    let api = open_api(&url);
    wait_for(&url, 30, |c| c.iter().any(|c| c.status == "running")).await;
    let first = http(
        api.port,
        "POST",
        "/v1/tasks/fetch",
        &[],
        Some(r#"{"executor_id": "slow", "batch_size": 8}"#),
    )
    .json();
    assert_eq!(first["tasks"].as_array().unwrap().len(), 8);
    let deadline = Instant::now() + Duration::from_secs(20);
    let again = loop {
        let r = http(
            api.port,
            "POST",
            "/v1/tasks/fetch",
            &[],
            Some(r#"{"executor_id": "fast", "batch_size": 8}"#),
        )
        .json();
        if !r["tasks"].as_array().unwrap().is_empty() {
            break r;
        }
        assert!(
            Instant::now() < deadline,
            "stale tasks were never re-queued"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(again["tasks"][0]["attempts"], 2);
    assert!(s.log().contains("\"event\":\"stale_tasks_reaped\""));
    let m = http(metrics_port, "GET", "/metrics", &[], None);
    assert!(
        m.body
            .contains("kinitro_task_events_total{event=\"reaped\"} 8"),
        "{}",
        m.body
    );
    s.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(s.wait(20).and_then(|s| s.code()), Some(0));
    let c = cycles(&url).await;
    assert_eq!(
        (c[0].status.as_str(), c[0].error_message.as_deref()),
        ("failed", Some("Cancelled on scheduler shutdown"))
    );

    // No evaluable miner: the cycle fails at once and the weights stay.
    let url = fresh_database().await;
    let none = dir.path().join("none.json");
    std::fs::write(&none, r#"{"miners": [{"uid": 7, "hotkey": "hk", "commitment": "{\"t\":\"pk\",\"k\":\"00\"}", "commit_block": 1}]}"#).unwrap();
    let _s = Sched::start(&url, &none, dir.path(), &[]);
    let c = wait_for(&url, 30, |c| !c.is_empty()).await;
    assert_eq!(
        (
            c[0].status.as_str(),
            c[0].error_message.as_deref(),
            c[0].n_miners
        ),
        ("failed", Some("no evaluable miners"), Some(0))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn encrypted_commitments_are_decrypted_with_the_backend_key() {
    // The committed Python vector: its backend key decrypts uid 3's blob to the UUID.
    let v: Value = serde_json::from_str(include_str!("fixtures/crypto_vector.json")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let url = fresh_database().await;
    let file = miners_file(dir.path());
    let key = v["backend_private_key"].as_str().unwrap();
    let _s = Sched::start(
        &url,
        &file,
        dir.path(),
        &[("KINITRO_SCHEDULER_BACKEND_PRIVATE_KEY", key)],
    );
    let api = open_api(&url);
    wait_for(&url, 30, |c| c.iter().any(|c| c.status == "running")).await;
    let m = http(api.port, "GET", "/v1/miners", &[], None).json();
    let enc = &m["miners"][3];
    assert_eq!(
        (enc["status"].as_str(), enc["encrypted"].as_bool()),
        (Some("active"), Some(true))
    );
    assert_eq!(
        enc["endpoint"],
        Value::Null,
        "a decrypted endpoint is never shown"
    );
    let mut c = kinitro::db::connect(&url).await.unwrap();
    #[derive(QueryableByName)]
    struct E {
        #[diesel(sql_type = Text)]
        miner_endpoint: String,
    }
    let e: E =
        diesel::sql_query("SELECT DISTINCT miner_endpoint FROM task_pool WHERE miner_uid = 3")
            .get_result(&mut c)
            .await
            .unwrap();
    assert_eq!(
        e.miner_endpoint,
        format!(
            "https://{}.deployments.basilica.ai",
            v["deployment_id"].as_str().unwrap()
        )
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lost_lock_stops_the_scheduler() {
    let dir = tempfile::tempdir().unwrap();
    let url = fresh_database().await;
    let file = miners_file(dir.path());
    let mut s = Sched::start(&url, &file, dir.path(), &[]);
    wait_for(&url, 30, |c| c.iter().any(|c| c.status == "running")).await;
    let mut c = kinitro::db::connect(&url).await.unwrap();
    // Only this test's database: the cluster is shared by the tests running in parallel.
    c.batch_execute(
        "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND granted \
         AND pid <> pg_backend_pid() AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
    )
        .await
        .unwrap();
    assert_eq!(s.wait(20).and_then(|s| s.code()), Some(1));
    assert!(
        s.log()
            .contains("lost the scheduler lock (database connection dropped)"),
        "{}",
        s.log()
    );
    // It wrote nothing more: the cycle is left running for the next start-up's cleanup.
    assert_eq!(cycles(&url).await[0].status, "running");
}
