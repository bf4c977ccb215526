//! The compose stacks on the real Docker engine (docs/deployment.md): the images built offline by
//! `kinitro image build` (what deploy/build-images.sh runs), `docker-compose.backend.yml` with the
//! reference miners as services completing cycles and serving weights, a backup restored into a new
//! volume, the faults of docs/deployment.md §4 injected across containers, and
//! `docker-compose.single.yml` completing a cycle with `kinitro run`.
//!
//! Each stack is its own compose project (a private bridge network, its own volumes) on a free
//! loopback port, removed with its volumes when the test ends. The stacks run one at a time (two
//! cores in CI). The images are built from this very build's binary.

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use common::{free_port, http_get, kinitro, skip, stderr, stdout};

const RUNTIME_IMAGE: &str = "kinitro-test/runtime:stack";
const POSTGRES_IMAGE: &str = "kinitro-test/postgres:stack";
const KEY: &str = "stack-test-key-0123456789abcdef0123456789";

/// One stack at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Whether the engine and docker-compose answer; otherwise skips (a failure under CI).
fn engine_ready() -> bool {
    let ok = |cmd: &mut Command| cmd.output().is_ok_and(|o| o.status.success());
    if !ok(Command::new("docker").args(["version"])) {
        skip("no Docker engine");
        return false;
    }
    if !ok(Command::new("docker-compose").arg("version")) {
        skip("docker-compose is not installed (deploy/setup.sh)");
        return false;
    }
    true
}

fn run(program: &str, args: &[&str]) -> (bool, String) {
    let o = Command::new(program)
        .args(args)
        .output()
        .expect("run a tool");
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).trim().to_string() + &String::from_utf8_lossy(&o.stderr),
    )
}

/// Builds both images once per test binary, as deploy/build-images.sh does.
fn images() {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let started = Instant::now();
        let id = |image: &str| run("docker", &["image", "inspect", "-f", "{{.Id}}", image]).1;
        let previous = [id(RUNTIME_IMAGE), id(POSTGRES_IMAGE)];
        let o = kinitro(
            &[
                "image",
                "build",
                "all",
                "--runtime-tag",
                RUNTIME_IMAGE,
                "--postgres-tag",
                POSTGRES_IMAGE,
            ],
            &[],
        );
        assert!(
            o.status.success(),
            "image build failed: {}{}",
            stdout(&o),
            stderr(&o)
        );
        for image in [RUNTIME_IMAGE, POSTGRES_IMAGE] {
            assert!(
                stdout(&o).contains(&format!("built {image}")),
                "{}",
                stdout(&o)
            );
            // Non-root, and no secret in any layer: the history names no key or password.
            let (_, user) = run(
                "docker",
                &["image", "inspect", "-f", "{{.Config.User}}", image],
            );
            assert!(
                !user.is_empty() && !user.starts_with("0") && user != "root",
                "{image} runs as {user}"
            );
            let (_, history) = run("docker", &["history", "--no-trunc", image]);
            assert!(
                !history.contains("PASSWORD=") && !history.contains(KEY),
                "{history}"
            );
        }
        let (_, health) = run(
            "docker",
            &[
                "image",
                "inspect",
                "-f",
                "{{json .Config.Healthcheck.Test}}",
                RUNTIME_IMAGE,
            ],
        );
        assert!(health.contains(r#""kinitro","healthcheck""#), "{health}");
        // The images of an earlier build of the tests are dangling now: keep the disk from filling up.
        for (old, image) in previous.iter().zip([RUNTIME_IMAGE, POSTGRES_IMAGE]) {
            if old.starts_with("sha256:") && *old != id(image) {
                let _ = run("docker", &["rmi", old.trim()]);
            }
        }
        eprintln!("images built in {:.0} s", started.elapsed().as_secs_f64());
    });
}

/// A compose project in a temporary copy of deploy/, removed (containers, network, volumes) on drop.
struct Stack {
    dir: tempfile::TempDir,
    project: String,
    files: Vec<String>,
    port: u16,
}

impl Stack {
    /// Copies deploy/'s compose files, writes `.env` and `database.env` and the test's `overlay`
    /// (short cycles), and names the project uniquely.
    fn new(files: &[&str], overlay: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let deploy = dir.path().join("deploy");
        std::fs::create_dir_all(&deploy).unwrap();
        for f in [
            "docker-compose.backend.yml",
            "docker-compose.single.yml",
            "docker-compose.miners.yml",
            "miners.compose.toml",
            "prometheus.yml",
        ] {
            std::fs::copy(repo().join("deploy").join(f), deploy.join(f)).unwrap();
        }
        let port = free_port();
        std::fs::write(
            deploy.join(".env"),
            format!(
                "KINITRO_API_KEY={KEY}\nNETUID=1\nNETWORK=finney\nEVAL_INTERVAL=3\nEPISODES_PER_ENV=6\n\
                 KINITRO_IMAGE={RUNTIME_IMAGE}\nPOSTGRES_IMAGE={POSTGRES_IMAGE}\nAPI_PORT={port}\n"
            ),
        )
        .unwrap();
        let example = std::fs::read_to_string(repo().join("deploy/database.env.example")).unwrap();
        std::fs::write(
            deploy.join("database.env"),
            example.replace("change-me", "stack-test-password-5d1c"),
        )
        .unwrap();
        std::fs::write(deploy.join("docker-compose.test.yml"), overlay).unwrap();
        let mut files: Vec<String> = files.iter().map(|f| f.to_string()).collect();
        files.push("docker-compose.test.yml".into());
        let project = format!("kst{}x{}", std::process::id(), rand::random::<u16>());
        Self {
            dir,
            project,
            files,
            port,
        }
    }

    fn compose(&self, args: &[&str]) -> (bool, String) {
        let deploy = self.dir.path().join("deploy");
        let mut cmd = Command::new("docker-compose");
        cmd.current_dir(&deploy).arg("-p").arg(&self.project);
        for f in &self.files {
            cmd.arg("-f").arg(deploy.join(f));
        }
        let o = cmd.args(args).output().expect("docker-compose");
        (
            o.status.success(),
            String::from_utf8_lossy(&o.stdout).trim().to_string()
                + &String::from_utf8_lossy(&o.stderr),
        )
    }

    #[track_caller]
    fn compose_ok(&self, args: &[&str]) -> String {
        let (ok, out) = self.compose(args);
        assert!(ok, "docker-compose {args:?}: {out}");
        out
    }

    /// The container id of `service` (its first replica).
    fn container(&self, service: &str) -> String {
        let out = self.compose_ok(&["ps", "-q", service]);
        out.lines().next().unwrap_or_default().trim().to_string()
    }

    /// One SQL statement through `psql` in the postgres container; rows as `a|b` lines.
    fn sql(&self, sql: &str) -> Result<String, String> {
        let (ok, out) = self.compose(&[
            "exec", "-T", "postgres", "psql", "-U", "kinitro", "-d", "kinitro", "-At", "-c", sql,
        ]);
        if ok {
            Ok(out.trim().to_string())
        } else {
            Err(out)
        }
    }

    /// Polls `check` every half second until it holds or `secs` pass; panics with `what` and the logs.
    #[track_caller]
    fn wait(&self, secs: u64, what: &str, mut check: impl FnMut() -> bool) -> Duration {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(secs) {
            if check() {
                return start.elapsed();
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        let (_, logs) = self.compose(&["logs", "--no-color", "--tail", "40"]);
        panic!("not within {secs} s: {what}\n{logs}");
    }

    fn get(&self, path: &str) -> Option<(u16, String)> {
        http_get(self.port, path).ok()
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let (_, logs) = self.compose(&["logs", "--no-color", "--tail", "60"]);
            eprintln!("--- logs of {} ---\n{logs}", self.project);
        }
        let _ = self.compose(&["down", "-v", "--remove-orphans", "-t", "5"]);
    }
}

/// What the tests shorten: one env, short episodes, quick polls; the miners answer after 20 ms so
/// that a cycle (18 episodes, two at a time) lasts about 20 s, long enough to inject a fault into.
const BACKEND_OVERLAY: &str = r#"
services:
  miner-expert:
    environment:
      KINITRO_MINER_DELAY_MS: "20"
  miner-random:
    environment:
      KINITRO_MINER_DELAY_MS: "20"
  miner-zero:
    environment:
      KINITRO_MINER_DELAY_MS: "20"
  scheduler:
    environment:
      KINITRO_SCHEDULER_ENV_IDS: metaworld/reach-v3
      KINITRO_SCHEDULER_POLL_INTERVAL_SECONDS: "1"
      KINITRO_SCHEDULER_TASK_STALE_THRESHOLD_SECONDS: "20"
  executor:
    environment:
      KINITRO_EXECUTOR_USE_IMAGES: "false"
      KINITRO_EXECUTOR_MAX_TIMESTEPS: "100"
      KINITRO_EXECUTOR_POOLS: "1"
      KINITRO_EXECUTOR_EPISODES_PER_POOL: "2"
      KINITRO_EXECUTOR_POLL_INTERVAL_SECONDS: "0.5"
  # Started only by the sharding fault (an explicitly named service's profile is enabled).
  executor-shard0: &shard
    image: ${KINITRO_IMAGE}
    profiles: ["shards"]
    command: kinitro executor --api-url http://api:8000 --executor-id shard-0 --shard-index 0 --shard-count 2
    environment: &shard_env
      KINITRO_EXECUTOR_API_KEY: ${KINITRO_API_KEY}
      KINITRO_EXECUTOR_ALLOW_PRIVATE_ENDPOINTS: "true"
      KINITRO_EXECUTOR_PRIVILEGED_STATE: "true"
      KINITRO_EXECUTOR_USE_IMAGES: "false"
      KINITRO_EXECUTOR_MAX_TIMESTEPS: "100"
      KINITRO_EXECUTOR_POOLS: "1"
      KINITRO_EXECUTOR_EPISODES_PER_POOL: "2"
      KINITRO_EXECUTOR_POLL_INTERVAL_SECONDS: "0.5"
    healthcheck:
      disable: true
    restart: always
  executor-shard1:
    <<: *shard
    command: kinitro executor --api-url http://api:8000 --executor-id shard-1 --shard-index 1 --shard-count 2
"#;

/// The expert policy (uid 0) has the largest weight.
#[track_caller]
fn assert_expert_leads(w: &serde_json::Value) {
    let get = |uid: &str| w["weights"][uid].as_f64().unwrap_or(0.0);
    assert!(
        get("0") > get("1") && get("0") > get("2"),
        "the expert leads: {w}"
    );
}

/// Weights body without the fields that differ between processes (none should).
fn weights(stack: &Stack) -> Option<serde_json::Value> {
    match stack.get("/v1/weights/latest") {
        Some((200, body)) => serde_json::from_str(&body).ok(),
        _ => None,
    }
}

#[test]
fn the_backend_stack_completes_cycles_restores_a_backup_and_survives_faults() {
    if !engine_ready() {
        return;
    }
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    images();
    let stack = Stack::new(
        &["docker-compose.backend.yml", "docker-compose.miners.yml"],
        BACKEND_OVERLAY,
    );
    let started = Instant::now();
    stack.compose_ok(&["up", "-d"]);
    // A cycle completes and the API serves its weights, the expert (uid 0) ahead.
    stack.wait(240, "a completed cycle with weights", || {
        weights(&stack).is_some()
    });
    eprintln!(
        "first cycle with weights after {:.0} s",
        started.elapsed().as_secs_f64()
    );
    assert_expert_leads(&weights(&stack).unwrap());
    let (status, health) = stack.get("/health").unwrap();
    assert_eq!(status, 200, "{health}");
    stack.wait(60, "the api container healthy", || {
        run(
            "docker",
            &[
                "inspect",
                "-f",
                "{{.State.Health.Status}}",
                &stack.container("api"),
            ],
        )
        .1 == "healthy"
    });

    backup_and_restore(&stack);

    // One after another on the same stack, each bounded by its waits.
    let reports = vec![
        pause_postgres(&stack),
        kill_api(&stack),
        disconnect_executor(&stack),
        kill_scheduler(&stack),
        kill_one_of_two_executors(&stack),
        kill_and_restart_a_shard(&stack),
    ];
    eprintln!(
        "| fault | duration | tasks lost | duplicates | time to recover |\n|---|---|---|---|---|"
    );
    for r in &reports {
        eprintln!(
            "| {} | {:.0} s | {} | {} | {:.0} s |",
            r.fault,
            r.duration.as_secs_f64(),
            r.lost,
            r.duplicates,
            r.recover.as_secs_f64()
        );
    }
    for r in &reports {
        assert_eq!(
            (r.lost, r.duplicates),
            (0, 0),
            "{}: tasks lost, duplicates",
            r.fault
        );
    }
}

/// One fault's outcome (docs/deployment.md §4).
struct Report {
    fault: &'static str,
    duration: Duration,
    lost: i64,
    duplicates: i64,
    recover: Duration,
}

/// The running cycle once it is mid-batch: some of its tasks done, at least `left` not yet.
fn mid_cycle(stack: &Stack, left: i64) -> i64 {
    let mut id = 0;
    stack.wait(240, "a cycle in the middle of its batch", || {
        let row = stack.sql(
            "SELECT c.id, count(*) FILTER (WHERE t.status IN ('completed','failed')), \
             count(*) FILTER (WHERE t.status IN ('pending','assigned')) \
             FROM evaluation_cycles c JOIN task_pool t ON t.cycle_id = c.id \
             WHERE c.status = 'running' GROUP BY c.id ORDER BY c.id DESC LIMIT 1",
        );
        let Ok(row) = row else { return false };
        let f: Vec<i64> = row.split('|').filter_map(|x| x.parse().ok()).collect();
        if f.len() == 3 && f[1] >= 1 && f[2] >= left {
            id = f[0];
            true
        } else {
            false
        }
    });
    id
}

/// Waits for cycle `id` to end; returns (status, tasks lost, results counted twice).
fn outcome(stack: &Stack, id: i64, secs: u64) -> (String, i64, i64) {
    let status = || {
        stack
            .sql(&format!(
                "SELECT status FROM evaluation_cycles WHERE id = {id}"
            ))
            .unwrap_or_default()
    };
    stack.wait(secs, &format!("cycle {id} ends"), || {
        matches!(status().as_str(), "completed" | "failed")
    });
    let lost: i64 = stack
        .sql(&format!(
            "SELECT count(*) FROM task_pool WHERE cycle_id = {id} AND (status NOT IN ('completed','failed') \
             OR result->>'error' = 'max attempts exceeded')"
        ))
        .unwrap()
        .parse()
        .unwrap();
    let duplicates: i64 = stack
        .sql(&format!(
            "SELECT coalesce(sum(episodes_completed + episodes_failed + episodes_excluded), 0) \
             - (SELECT count(*) FROM task_pool WHERE cycle_id = {id}) FROM miner_scores WHERE cycle_id = {id}"
        ))
        .unwrap()
        .parse()
        .unwrap();
    (status(), lost, duplicates.max(0))
}

/// `docker pause` of PostgreSQL for 15 s during claims and submits: the API answers 503 meanwhile,
/// then the cycle completes with nothing lost.
fn pause_postgres(stack: &Stack) -> Report {
    let id = mid_cycle(stack, 4);
    let pg = stack.container("postgres");
    let started = Instant::now();
    assert!(run("docker", &["pause", &pg]).0);
    let mut saw_503 = false;
    while started.elapsed() < Duration::from_secs(15) {
        if let Some((code, _)) = stack.get("/v1/tasks/stats") {
            saw_503 |= code == 503;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(run("docker", &["unpause", &pg]).0);
    let duration = started.elapsed();
    let resumed = Instant::now();
    let (status, lost, duplicates) = outcome(stack, id, 240);
    assert_eq!(status, "completed", "cycle {id} after the pause");
    assert!(
        saw_503,
        "the API answered 503 while the database was paused"
    );
    Report {
        fault: "docker pause postgres",
        duration,
        lost,
        duplicates,
        recover: resumed.elapsed(),
    }
}

/// `docker kill -s KILL` of the API during submits, then its restart.
fn kill_api(stack: &Stack) -> Report {
    let id = mid_cycle(stack, 4);
    let started = Instant::now();
    assert!(run("docker", &["kill", "-s", "KILL", &stack.container("api")]).0);
    std::thread::sleep(Duration::from_secs(3));
    stack.compose_ok(&["up", "-d", "--no-deps", "api"]);
    let duration = started.elapsed();
    let resumed = Instant::now();
    let (status, lost, duplicates) = outcome(stack, id, 240);
    assert_eq!(status, "completed", "cycle {id} after the API's kill");
    Report {
        fault: "docker kill -s KILL api",
        duration,
        lost,
        duplicates,
        recover: resumed.elapsed(),
    }
}

/// `docker network disconnect` of the executor during a batch, reconnected after 20 s: its spool
/// keeps the results it could not submit.
fn disconnect_executor(stack: &Stack) -> Report {
    let id = mid_cycle(stack, 4);
    let network = format!("{}_default", stack.project);
    let executor = stack.container("executor");
    let started = Instant::now();
    let (ok, out) = run("docker", &["network", "disconnect", &network, &executor]);
    assert!(ok, "{out}");
    std::thread::sleep(Duration::from_secs(20));
    let (ok, out) = run("docker", &["network", "connect", &network, &executor]);
    assert!(ok, "{out}");
    let duration = started.elapsed();
    let resumed = Instant::now();
    let (status, lost, duplicates) = outcome(stack, id, 240);
    assert_eq!(status, "completed", "cycle {id} after the disconnect");
    Report {
        fault: "network disconnect executor",
        duration,
        lost,
        duplicates,
        recover: resumed.elapsed(),
    }
}

/// `docker kill` of the scheduler mid-cycle, then its restart: the interrupted cycle is failed (its
/// tasks cancelled) and the next one completes, so the advisory lock was released.
fn kill_scheduler(stack: &Stack) -> Report {
    let id = mid_cycle(stack, 4);
    let started = Instant::now();
    assert!(run("docker", &["kill", &stack.container("scheduler")]).0);
    std::thread::sleep(Duration::from_secs(2));
    stack.compose_ok(&["up", "-d", "--no-deps", "scheduler"]);
    let duration = started.elapsed();
    let resumed = Instant::now();
    let (status, _, _) = outcome(stack, id, 120);
    assert_eq!(status, "failed", "the interrupted cycle {id}");
    let open: i64 = stack
        .sql(&format!(
            "SELECT count(*) FROM task_pool WHERE cycle_id = {id} AND status IN ('pending','assigned')"
        ))
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(open, 0, "the interrupted cycle's tasks are cancelled");
    let next = mid_cycle(stack, 0).max(id + 1);
    let (status, lost, duplicates) = outcome(stack, next, 240);
    assert_eq!(status, "completed", "the cycle after the restart");
    Report {
        fault: "docker kill scheduler",
        duration,
        lost,
        duplicates,
        recover: resumed.elapsed(),
    }
}

/// The executor id a container's executor logged at start-up.
fn executor_id(container: &str) -> String {
    let (_, logs) = run("docker", &["logs", container]);
    logs.lines()
        .filter(|l| l.contains("executor_started"))
        .find_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).ok()?;
            v["id"].as_str().map(String::from)
        })
        .unwrap_or_else(|| panic!("no executor_started line in the logs of {container}"))
}

/// Task uuids of cycle `id` assigned to `executor` now.
fn assigned_to(stack: &Stack, id: i64, executor: &str) -> Vec<String> {
    stack
        .sql(&format!(
            "SELECT task_uuid FROM task_pool WHERE cycle_id = {id} AND status = 'assigned' \
             AND assigned_to = '{executor}'"
        ))
        .unwrap()
        .lines()
        .map(String::from)
        .collect()
}

/// Two unsharded executors, one killed with SIGKILL mid-batch and left dead: the stale reaper
/// re-queues the tasks it held and the other completes them.
fn kill_one_of_two_executors(stack: &Stack) -> Report {
    stack.compose_ok(&["up", "-d", "--no-deps", "--scale", "executor=2", "executor"]);
    let containers: Vec<String> = stack
        .compose_ok(&["ps", "-q", "executor"])
        .lines()
        .map(|l| l.trim().to_string())
        .collect();
    assert_eq!(containers.len(), 2, "{containers:?}");
    let (mut id, mut victim) = (0, String::new());
    stack.wait(240, "an executor holding tasks mid-cycle", || {
        id = mid_cycle(stack, 2);
        for c in &containers {
            if !assigned_to(stack, id, &executor_id(c)).is_empty() {
                victim = c.clone();
                return true;
            }
        }
        false
    });
    let victim_id = executor_id(&victim);
    let started = Instant::now();
    // No restart: `docker update` first, so the restart policy does not bring it back.
    assert!(run("docker", &["update", "--restart", "no", &victim]).0);
    assert!(run("docker", &["kill", "-s", "KILL", &victim]).0);
    // What it held when it died (it may have submitted some between the choice and the kill).
    let held = assigned_to(stack, id, &victim_id);
    assert!(!held.is_empty(), "the killed executor held tasks");
    let duration = started.elapsed();
    let (status, lost, duplicates) = outcome(stack, id, 300);
    assert_eq!(status, "completed", "cycle {id} after an executor's kill");
    for task in &held {
        let by = stack
            .sql(&format!(
                "SELECT status || ' ' || coalesce(last_submitted_by, '') FROM task_pool WHERE task_uuid = '{task}'"
            ))
            .unwrap();
        assert!(
            !by.ends_with(&victim_id) && !by.starts_with("cancelled"),
            "task {task} of the killed executor: {by}"
        );
    }
    stack.compose_ok(&["rm", "-f", "-s", "executor"]);
    Report {
        fault: "SIGKILL one of two executors",
        duration,
        lost,
        duplicates,
        recover: started.elapsed(),
    }
}

/// Executors sharded 0/2 and 1/2 (tasks by `miner_uid % 2`), shard 1 killed with SIGKILL mid-batch:
/// nobody takes its tasks while it is down; after its restart its shard completes.
fn kill_and_restart_a_shard(stack: &Stack) -> Report {
    stack.compose_ok(&[
        "up",
        "-d",
        "--no-deps",
        "executor-shard0",
        "executor-shard1",
    ]);
    let shard1 = stack.container("executor-shard1");
    let open_shard1 = |id: i64| -> i64 {
        stack
            .sql(&format!(
                "SELECT count(*) FROM task_pool WHERE cycle_id = {id} AND miner_uid % 2 = 1 \
                 AND status IN ('pending','assigned')"
            ))
            .unwrap()
            .parse()
            .unwrap()
    };
    let mut id = 0;
    stack.wait(240, "shard 1 mid-batch", || {
        id = mid_cycle(stack, 2);
        open_shard1(id) >= 2
    });
    let started = Instant::now();
    assert!(run("docker", &["update", "--restart", "no", &shard1]).0);
    assert!(run("docker", &["kill", "-s", "KILL", &shard1]).0);
    let open = open_shard1(id);
    std::thread::sleep(Duration::from_secs(10));
    let taken: i64 = stack
        .sql(&format!(
            "SELECT count(*) FROM task_pool WHERE cycle_id = {id} AND miner_uid % 2 = 1 \
             AND (assigned_to = 'shard-0' OR last_submitted_by = 'shard-0')"
        ))
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(taken, 0, "shard 0 took shard 1's tasks");
    assert_eq!(open_shard1(id), open, "shard 1's tasks wait for it");
    stack.compose_ok(&["up", "-d", "--no-deps", "executor-shard1"]);
    let duration = started.elapsed();
    let resumed = Instant::now();
    let (status, lost, duplicates) = outcome(stack, id, 300);
    assert_eq!(status, "completed", "cycle {id} after shard 1's restart");
    let by_shard1: i64 = stack
        .sql(&format!(
            "SELECT count(*) FROM task_pool WHERE cycle_id = {id} AND miner_uid % 2 = 1 \
             AND last_submitted_by IS DISTINCT FROM 'shard-1'"
        ))
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(by_shard1, 0, "every shard-1 task submitted by shard 1");
    Report {
        fault: "SIGKILL shard 1/2, restarted",
        duration,
        lost,
        duplicates,
        recover: resumed.elapsed(),
    }
}

/// pg_dump of the running stack, a new empty volume, pg_restore: the API serves the same weights.
fn backup_and_restore(stack: &Stack) {
    let started = Instant::now();
    // The scheduler stops first so that the weights cannot change between the dump and the check.
    stack.compose_ok(&["stop", "-t", "10", "scheduler", "executor"]);
    let before = weights(stack).expect("weights before the backup");
    let dump = stack.dir.path().join("kinitro.dump");
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "docker exec {} pg_dump -U kinitro -Fc kinitro > {}",
            stack.container("postgres"),
            dump.display()
        ))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "pg_dump: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(std::fs::metadata(&dump).unwrap().len() > 1000);
    // Lose the database: containers and volume.
    stack.compose_ok(&["stop", "-t", "10", "api", "postgres"]);
    stack.compose_ok(&["rm", "-f", "api", "postgres"]);
    let volume = format!("{}_postgres_data", stack.project);
    let (ok, out) = run("docker", &["volume", "rm", &volume]);
    assert!(ok, "{out}");
    stack.compose_ok(&["up", "-d", "postgres"]);
    stack.wait(60, "the new database", || stack.sql("SELECT 1").is_ok());
    assert!(
        stack.sql("SELECT count(*) FROM computed_weights").is_err(),
        "the volume is new"
    );
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "docker exec -i {} pg_restore -U kinitro -d kinitro --no-owner < {}",
            stack.container("postgres"),
            dump.display()
        ))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "pg_restore: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    stack.compose_ok(&["up", "-d", "--no-deps", "api"]);
    stack.wait(60, "the API on the restored database", || {
        weights(stack).is_some()
    });
    assert_eq!(
        weights(stack).unwrap(),
        before,
        "the same weights after the restore"
    );
    eprintln!(
        "backup and restore: {:.0} s",
        started.elapsed().as_secs_f64()
    );
    stack.compose_ok(&["up", "-d"]);
}

#[test]
fn the_single_stack_completes_a_cycle_with_kinitro_run() {
    if !engine_ready() {
        return;
    }
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    images();
    let overlay = format!(
        r#"
x-miner: &miner
  image: {RUNTIME_IMAGE}
  environment:
    KINITRO_MINER_HOST: 0.0.0.0
    KINITRO_MINER_PORT: "8000"
services:
  miner-expert:
    <<: *miner
    command: kinitro miner serve --policy expert
  miner-zero:
    <<: *miner
    command: kinitro miner serve --policy zero
  kinitro:
    volumes:
      - ./miners.single.toml:/etc/kinitro/miners.toml:ro
    environment:
      KINITRO_SCHEDULER_MINERS_FILE: /etc/kinitro/miners.toml
      KINITRO_SCHEDULER_ENV_IDS: metaworld/reach-v3
      KINITRO_SCHEDULER_POLL_INTERVAL_SECONDS: "1"
      KINITRO_EXECUTOR_ALLOW_PRIVATE_ENDPOINTS: "true"
      KINITRO_EXECUTOR_PRIVILEGED_STATE: "true"
      KINITRO_EXECUTOR_USE_IMAGES: "false"
      KINITRO_EXECUTOR_MAX_TIMESTEPS: "100"
      KINITRO_EXECUTOR_POOLS: "1"
"#
    );
    let stack = Stack::new(&["docker-compose.single.yml"], &overlay);
    let miners = std::fs::read_to_string(repo().join("deploy/miners.compose.toml")).unwrap();
    // The expert and the zero policy of the backend's miners file.
    let two: String = miners
        .split("[[miners]]")
        .filter(|m| !m.contains("miner-random"))
        .collect::<Vec<_>>()
        .join("[[miners]]");
    std::fs::write(stack.dir.path().join("deploy/miners.single.toml"), two).unwrap();
    let started = Instant::now();
    stack.compose_ok(&["up", "-d"]);
    stack.wait(240, "kinitro run: a completed cycle with weights", || {
        weights(&stack).is_some()
    });
    assert_expert_leads(&weights(&stack).unwrap());
    eprintln!(
        "single stack: weights after {:.0} s",
        started.elapsed().as_secs_f64()
    );
}
